"""Quality checks for generated paraphrases, the model's own yes/no judgement, and statistics of a paraphrase file.

A generated paraphrase is kept only if it passes every enabled check; each failed check is reported by name:

* ``empty`` (always on): nothing left after taking the generation's first line;
* ``question``: it keeps the original's form (:func:`same_form`): a question stays a question (ends with ``?`` and
  has a question word or starts with an auxiliary verb: "French language" is not one), a cloze keeps one ``[MASK]``;
* ``type``: it asks for the same kind of answer (:func:`same_type`: who, where, when, quantity, why, how, what,
  yes/no; "which city" / "in what year" ask where / when, and a plain what-question agrees with a kind it names a
  noun of): "in what year did jane mansfield die?" does not ask "where did jane mansfield die?";
* ``length``: its word count is within ``[min_length_ratio, max_length_ratio]`` times the original's (and at
  least 2 words): rambling 30-token generations and one-word fragments fail;
* ``content``: it keeps at least ``min_content`` of the original's content lemmas (:func:`content_lemmas`: spaCy
  lemmas of the words that are not stop words, numbers or kind / slot nouns) and every one of its names
  (:func:`is_name`: rarer than :data:`NAME_LOG_PROB`); a lemma is kept up to a shared stem (:func:`lemma_kept`);
* ``numbers``: it names the same numbers (a year, a count);
* ``new``: it adds at most ``max_new`` content lemmas the original does not have (:func:`content_new`);
* ``copy`` (always on): it is the original again up to case, punctuation and spacing;
* ``duplicate`` (always on, applied by the caller): it repeats a paraphrase already kept for the question;
* ``judge`` (optional, :class:`EquivalenceJudge`): the model itself, asked whether the two questions ask for the
  same information, must prefer ``yes`` over ``no`` by ``margin`` nats. Only candidates that pass the text
  checks are judged.

Lemmas come from the same blank-English spaCy pipeline as the lemma-match metric, word frequencies from
spacy-lookups-data (no model download). The defaults were chosen on the labelled benchmark of
tests/fixtures/paraphrase_benchmark/ (scripts/paraphrase_checks_eval.py; README).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections import Counter
from dataclasses import dataclass

import torch

from selfens_pl.data.prompts import PromptTemplate, PromptTokenizer
from selfens_pl.engine.batches import prompt_batch
from selfens_pl.errors import UserError
from selfens_pl.jsonl import read_objects
from selfens_pl.scoring.metrics import _get_nlp

#: Text checks that can be switched on or off (``--checks``), in the order they are reported.
TEXT_CHECKS = ("question", "type", "length", "content", "numbers", "new")
#: Every failure name a record can carry (``empty``, ``copy`` and ``duplicate`` are always on).
FAILURES = ("empty",) + TEXT_CHECKS + ("copy", "duplicate", "judge")

QUESTION_WORDS = frozenset("what which who whom whose where when why how".split())
AUXILIARIES = frozenset("is are was were am do does did can could will would shall should may might must has have "
                        "had".split())
_WORD = re.compile(r"\[mask\]|[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"^\d+(?:st|nd|rd|th|s)?$")
MASK = "[mask]"
#: Nouns that name a kind of answer: a what/which question naming one of them may be asked with that kind's
#: question word ("what is X's birthplace?" / "where was X born?", "which actress ..." / "who ...").
KIND_NOUNS: dict[str, frozenset[str]] = {
    "where": frozenset("city cities country countries state states place places town towns continent region county "
                       "province island location nation area capital birthplace hometown homeland village district "
                       "territory headquarters".split()),
    "when": frozenset("year years date time day month century decade era period season".split()),
    "who": frozenset("person persons man men woman women actor actress actors author writer inventor creator founder "
                     "president leader king queen player singer artist wife husband son daughter father mother "
                     "brother sister coach director owner member child children parents boyfriend girlfriend "
                     "character".split()),
    "quantity": frozenset("number population amount size height length distance weight percentage".split()),
}
#: Nouns that say only the kind of answer or hold its slot ("what city ...", "the name of ...", "what kind of ..."):
#: ``content`` leaves them to ``type`` ("what city is the capital ..." / "what is the capital ...").
SLOT_NOUNS = frozenset("name names kind kinds type types sort thing things one city cities country countries state "
                       "states place places town towns location nation area region year years date time day month "
                       "person persons man men woman women".split())
QUANTITY_WORDS = frozenset("many much old long tall big large far high deep".split())
#: Endings that extend a lemma of fewer than 4 letters into a related word (``win`` -> ``winner``).
SHORT_SUFFIXES = frozenset("s es r er ers ner n an ian i ese ish".split())
#: A content word rarer than this (natural log of its frequency in spaCy's English lexeme table, about 1 in 1.2
#: million words; or absent from it) is taken for a name: ``content`` wants every one of them kept. WebQuestions'
#: entities sit below it (ethiopia -17.1, bieber -14.4, poland -14.7), the words paraphrases reword above it
#: (currency -10.9, invented -11.3, birthplace -14.8 is the rare exception, and it is added, not lost).
NAME_LOG_PROB = -14.0


def words(text: str) -> list[str]:
    """Lower-cased words (letters/digits, with an inner apostrophe; ``[MASK]`` as one word): what length and copy
    compare."""
    return _WORD.findall(text.lower())


def is_question(text: str) -> bool:
    """Ends with ``?`` and has a question word anywhere, or starts with an auxiliary verb."""
    tokens = words(text)
    if not text.rstrip().endswith("?") or not tokens:
        return False
    return tokens[0] in AUXILIARIES or any(t in QUESTION_WORDS for t in tokens)


def is_cloze(text: str) -> bool:
    """A fill-in-the-blank statement (MyriadLAMA's form): it holds ``[MASK]``, the answer's place."""
    return MASK in text.lower()


def same_form(original: str, candidate: str) -> bool:
    """The candidate asks in the original's form: a cloze keeps exactly one ``[MASK]`` (as a statement or a
    question), a question stays a question (:func:`is_question`), anything else is unconstrained."""
    if is_cloze(original):
        return candidate.lower().count(MASK) == 1
    if original.rstrip().endswith("?"):
        return is_question(candidate)
    return True


def answer_type(text: str) -> str:
    """The kind of answer a question asks for, from its first question word: ``who`` (who/whom/whose), ``where``,
    ``when``, ``quantity`` (how many/much/old/...), ``why``, ``how``; a what/which directly followed (within two
    words) by a noun of a kind (:data:`KIND_NOUNS`: "which city", "in what year", "which actress") asks for that
    kind, any other ``what``; no question word: ``yes/no``."""
    tokens = words(text)
    for i, token in enumerate(tokens):
        if token in ("who", "whom", "whose"):
            return "who"
        if token in ("where", "when", "why"):
            return token
        if token == "how":
            return "quantity" if tokens[i + 1:i + 2] and tokens[i + 1] in QUANTITY_WORDS else "how"
        if token in ("what", "which"):
            after = set(tokens[i + 1:i + 3])
            return next((kind for kind, nouns in KIND_NOUNS.items() if after & nouns), "what")
    return "yes/no"


def noun_kinds(text: str) -> set[str]:
    """The kinds whose nouns (:data:`KIND_NOUNS`, possessive or not) the text names anywhere."""
    tokens = {t.removesuffix("'s") for t in words(text)}
    return {kind for kind, nouns in KIND_NOUNS.items() if tokens & nouns}


def same_type(original: str, candidate: str) -> bool:
    """Both ask for the same kind of answer (:func:`answer_type`), or one is a plain what-question that names a noun
    of the other's kind ("what is X's birthplace?" / "where was X born?", "what is the capital of X?" / "which city
    is X's capital?"). Otherwise who / where / when / quantity / why / how / what / yes-no never agree ("in what year
    ...?" is not "what language ...?"). A cloze is not checked (its ``[MASK]`` is the answer's place)."""
    if is_cloze(original):
        return True
    a, b = answer_type(original), answer_type(candidate)
    if a == b:
        return True
    if a == "what":
        return b in noun_kinds(original)
    if b == "what":
        return a in noun_kinds(candidate)
    return False


def content_lemmas(text: str) -> list[str]:
    """Lemmas of ``text``'s content words, in order, without repeats: not stop words, punctuation, numbers,
    ``[MASK]``, or the nouns of :data:`SLOT_NOUNS` (``type`` checks those)."""
    return list(_content_lemmas(text))


@functools.lru_cache(maxsize=4096)
def _content_lemmas(text: str) -> tuple[str, ...]:
    """:func:`content_lemmas`, kept: ``content`` and ``new`` read both texts' lemmas, and one original is checked
    against every candidate sampled for it, so each text goes through spaCy once."""
    seen: list[str] = []
    for tok in _get_nlp()(text.lower().replace(MASK, " ")):
        if tok.is_stop or tok.is_punct or tok.is_space or tok.like_num or tok.lower_ in SLOT_NOUNS:
            continue
        lemma = tok.lemma_.lower().strip("'")
        if lemma and any(c.isalpha() for c in lemma) and lemma not in SLOT_NOUNS and lemma not in seen:
            seen.append(lemma)
    return tuple(seen)


def numbers(text: str) -> set[str]:
    """The numbers a text names ("2010", "1990s", "4th"): a changed year or count asks something else."""
    return {t for t in words(text) if _NUMBER.match(t)}


def lemma_kept(lemma: str, candidates: list[str]) -> bool:
    """``lemma`` is among ``candidates``, or the two share a stem: a common start of at least 4 letters that
    leaves at most 2 letters of the shorter word (``jamaica`` / ``jamaicans``, ``italy`` / ``italians``, ``china`` /
    ``chinese``, ``invent`` / ``inventor``), or the shorter (< 4 letters) extended by a derivational ending (``win``
    / ``winner``, not ``art`` / ``arthur``)."""
    for other in candidates:
        if other == lemma:
            return True
        short, long_ = sorted((lemma, other), key=len)
        common = len(os.path.commonprefix([short, long_]))
        if common >= 4 and common >= len(short) - 2:
            return True
        if len(short) < 4 and long_.startswith(short) and long_[len(short):] in SHORT_SUFFIXES:
            return True
    return False


@functools.lru_cache(maxsize=1)
def _lexeme_log_probs():
    from spacy.lookups import load_lookups

    return load_lookups("en", ["lexeme_prob"]).get_table("lexeme_prob")


def is_name(lemma: str) -> bool:
    """A content lemma rare enough to be a name (:data:`NAME_LOG_PROB`): losing one changes the question's
    entity ("who is the prime minister of brazil?" for "... of ethiopia?")."""
    return _lexeme_log_probs().get(lemma, NAME_LOG_PROB - 1) < NAME_LOG_PROB


def names_lost(original: str, candidate: str) -> list[str]:
    """The original's names (:func:`is_name`) that the candidate does not keep (up to a shared stem)."""
    have = content_lemmas(candidate)
    return [lemma for lemma in content_lemmas(original) if is_name(lemma) and not lemma_kept(lemma, have)]


def content_kept(original: str, candidate: str) -> float:
    """Share of ``original``'s content lemmas that ``candidate`` keeps (1.0 when the original has none)."""
    need = content_lemmas(original)
    if not need:
        return 1.0
    have = content_lemmas(candidate)
    return sum(lemma_kept(lemma, have) for lemma in need) / len(need)


def content_new(original: str, candidate: str) -> int:
    """How many of ``candidate``'s content lemmas the original does not have (up to a shared stem)."""
    have = content_lemmas(original)
    return sum(not lemma_kept(lemma, have) for lemma in content_lemmas(candidate))


def copy_key(text: str) -> str:
    """What ``copy`` and ``duplicate`` compare: the words, case, punctuation and spacing ignored."""
    return " ".join(words(text))


@dataclass
class CheckSettings:
    """Which text checks run, and their thresholds (every field is a ``paraphrase`` flag of the same name)."""

    checks: tuple[str, ...] = TEXT_CHECKS
    min_content: float = 0.5
    max_new: int = 1
    min_length_ratio: float = 0.5
    max_length_ratio: float = 2.0

    def __post_init__(self):
        self.checks = tuple(self.checks)
        unknown = [c for c in self.checks if c not in TEXT_CHECKS]
        if unknown:
            raise UserError(f"--checks={list(self.checks)}: unknown check(s) {unknown}; choose from "
                             f"{list(TEXT_CHECKS)} (or [] for none)")
        if not 0 <= self.min_content <= 1:
            raise UserError(f"--min_content must be in [0, 1], got {self.min_content}")
        if self.max_new < 0:
            raise UserError(f"--max_new must be >= 0, got {self.max_new}")
        if not 0 < self.min_length_ratio <= 1 <= self.max_length_ratio:
            raise UserError(f"--min_length_ratio must be in (0, 1] and --max_length_ratio >= 1, got "
                             f"{self.min_length_ratio} and {self.max_length_ratio}")


def text_failures(original: str, candidate: str, settings: CheckSettings) -> list[str]:
    """Names of the checks ``candidate`` fails as a paraphrase of ``original`` (empty list: it passes).

    An empty candidate fails ``empty`` only; otherwise every enabled check is evaluated, so a record lists all
    the reasons, not just the first.
    """
    if not candidate.strip():
        return ["empty"]
    failed = []
    on = set(settings.checks)
    if "question" in on and not same_form(original, candidate):
        failed.append("question")
    if "type" in on and not same_type(original, candidate):
        failed.append("type")
    if "length" in on:
        n, m = len(words(candidate)), max(1, len(words(original)))
        if n < max(2, math.floor(settings.min_length_ratio * m)) or n > math.ceil(settings.max_length_ratio * m):
            failed.append("length")
    if "content" in on and (content_kept(original, candidate) < settings.min_content - 1e-9
                            or names_lost(original, candidate)):
        failed.append("content")
    if "numbers" in on and numbers(candidate) != numbers(original):
        failed.append("numbers")
    if "new" in on and content_new(original, candidate) > settings.max_new:
        failed.append("new")
    if copy_key(candidate) == copy_key(original):
        failed.append("copy")
    return failed


# -- the model's own judgement ------------------------------------------------------------------------------------
JUDGE_INSTRUCTION = ("Decide whether the two questions ask for exactly the same information, so that they have "
                     "the same answer. Answer yes or no.")

#: Worked examples, two of each verdict (the paraphrase tool's own examples and swapped pairs of them).
JUDGE_FEW_SHOT: list[dict[str, str]] = [
    {"question": 'Question 1: "who wrote the novel pride and prejudice?" Question 2: "which author is responsible '
                 'for writing pride and prejudice?"', "answer": "yes"},
    {"question": 'Question 1: "what currency is used in japan?" Question 2: "what language is spoken in japan?"',
     "answer": "no"},
    {"question": 'Question 1: "where was albert einstein born?" Question 2: "in which city did albert einstein '
                 'come into the world?"', "answer": "yes"},
    {"question": 'Question 1: "when did the titanic sink?" Question 2: "who built the titanic?"', "answer": "no"},
]


def judge_question(original: str, candidate: str) -> str:
    """The judge's question for one pair, in the format of :data:`JUDGE_FEW_SHOT`."""
    return f'Question 1: "{original}" Question 2: "{candidate}"'


class EquivalenceJudge:
    """The model's own verdict on ``(original, paraphrase)`` pairs: ``log p(yes) - log p(no)`` for the first
    answer token after a yes/no prompt (:data:`JUDGE_INSTRUCTION` + :data:`JUDGE_FEW_SHOT`), from one prefill.

    ``yes`` and ``no`` each sum the probability of the first token of ``" yes"``, ``"yes"``, ``" Yes"``, ``"Yes"``
    (likewise for no), leaving out a first token the two words share. A pair passes when its score is
    ``>= margin``.
    """

    def __init__(self, decoder, margin: float = 0.0, batch_size: int = 32):
        self.decoder = decoder
        self.margin = float(margin)
        self.batch_size = int(batch_size)
        self.prompts = PromptTokenizer(decoder.tokenizer, PromptTemplate(JUDGE_INSTRUCTION, JUDGE_FEW_SHOT))
        yes, no = self._first_tokens("yes"), self._first_tokens("no")
        # a first token both words can start with (a bare space in a small vocabulary) says nothing: left out
        self.yes, self.no = sorted(yes - no), sorted(no - yes)
        if not self.yes or not self.no:
            raise UserError("--judge: this tokenizer gives 'yes' and 'no' no first token of their own; the judge "
                             "cannot tell them apart with this model")

    def _first_tokens(self, word: str) -> set[int]:
        ids = set()
        for variant in (f" {word}", word, f" {word.capitalize()}", word.capitalize()):
            tokens = self.decoder.tokenizer(variant, add_special_tokens=False)["input_ids"]
            if tokens:
                ids.add(int(tokens[0]))
        return ids

    @torch.inference_mode()
    def scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        """``log p(yes) - log p(no)`` per ``(original, candidate)`` pair, in batches of ``batch_size``."""
        out: list[float] = []
        for first in range(0, len(pairs), self.batch_size):
            chunk = pairs[first:first + self.batch_size]
            items = [({"id": f"judge pair {first + i}"}, judge_question(o, c)) for i, (o, c) in enumerate(chunk)]
            batch = prompt_batch(self.decoder, self.prompts, items)
            logits = self.decoder.prefill(batch)[:, -1].float()  # [r, V]; a cache sized for these prompts
            logp = torch.log_softmax(logits, dim=-1)
            yes = torch.logsumexp(logp[:, self.yes], dim=-1)
            no = torch.logsumexp(logp[:, self.no], dim=-1)
            out += (yes - no).tolist()
        return out


class ParaphraseChecker:
    """``checker(pairs) -> failures``: the text checks of ``settings`` on every ``(original, candidate)`` pair,
    then the judge (when given) on the pairs that passed them, in one batch."""

    def __init__(self, settings: CheckSettings | None = None, judge: EquivalenceJudge | None = None):
        self.settings = settings or CheckSettings()
        self.judge = judge

    def __call__(self, pairs: list[tuple[str, str]]) -> list[list[str]]:
        failures = [text_failures(o, c, self.settings) for o, c in pairs]
        if self.judge is not None:
            passed = [i for i, f in enumerate(failures) if not f]
            if passed:
                scores = self.judge.scores([pairs[i] for i in passed])
                for i, score in zip(passed, scores):
                    if score < self.judge.margin:
                        failures[i].append("judge")
        return failures


# -- statistics of a paraphrase file ------------------------------------------------------------------------------
def paraphrase_statistics(records: list[dict]) -> dict:
    """Counts over ``paraphrase`` records (``{paraphrases: [original, kept..], rejected: [{failed}], short}``).

    Returns ``{questions, kept, mean_kept, sizes: {kept per question: questions}, short, candidates, rejected,
    acceptance, failed: {check: candidates that failed it}, paraphrasers}``; a candidate that failed two checks
    counts under both. ``acceptance`` is kept / candidates sampled.
    """
    kept = [len(r.get("paraphrases") or []) - 1 for r in records]
    rejected = [x for r in records for x in (r.get("rejected") or [])]
    failed = Counter(name for x in rejected for name in x.get("failed", []))
    candidates = sum(kept) + len(rejected)
    return {
        "questions": len(records),
        "kept": sum(kept),
        "mean_kept": sum(kept) / len(records) if records else None,
        "sizes": dict(sorted(Counter(kept).items())),
        "short": sum(bool(r.get("short")) for r in records),
        "candidates": candidates,
        "rejected": len(rejected),
        "acceptance": sum(kept) / candidates if candidates else None,
        "failed": {name: failed[name] for name in FAILURES if failed[name]},
        "paraphrasers": sorted({str(r.get("paraphraser")) for r in records if r.get("paraphraser")}),
    }


def file_statistics(path, ids=None) -> dict | None:
    """:func:`paraphrase_statistics` of the ``paraphrase`` records of the JSONL file ``path`` whose id is in ``ids``
    (all when ``None``).

    ``None`` is decided from the records, never from a failure: a file whose records carry no ``rejected`` field
    (or that holds none) was not written by ``paraphrase`` and has no such statistics. A file that cannot be read
    raises (``OSError``; a bad line is the :mod:`selfens_pl.jsonl` policy's error naming file and line), and so
    does a file that mixes the two kinds of record: the caller's summary never loses the statistics silently."""
    lines = read_objects(path)
    written = [number for number, rec in lines if "rejected" in rec]
    if not written:
        return None
    if len(written) < len(lines):
        number = next(number for number, rec in lines if "rejected" not in rec)
        raise UserError(f"{path}: line {number}: a record without 'rejected' in a file that paraphrase wrote "
                        f"(line {written[0]} has it); the file mixes two kinds of record")
    records = [rec for _, rec in lines]
    return paraphrase_statistics([r for r in records if ids is None or str(r.get("id")) in ids])


def format_statistics(stats: dict) -> str:
    """One line: questions, kept (mean per question), short groups, acceptance, rejections by check."""
    if not stats["questions"]:
        return "no records"
    failed = ", ".join(f"{name} {count}" for name, count in stats["failed"].items()) or "none"
    sizes = ", ".join(f"{k}: {v}" for k, v in stats["sizes"].items())
    acceptance = "–" if stats["acceptance"] is None else f"{100 * stats['acceptance']:.1f}%"
    return (f"{stats['questions']} questions, {stats['kept']} paraphrases kept ({stats['mean_kept']:.2f} per "
            f"question; questions by paraphrases kept: {sizes}), {stats['short']} short; {stats['candidates']} "
            f"candidates, acceptance {acceptance}; rejections by check: {failed}")
