"""Content-free prompts for contextual calibration (Zhao et al., 2021): a paraphrase with its content replaced.

A calibrated fusion rule (:mod:`selfens_pl.engine.fusion`) divides each paraphrase's next-token distribution by what the
same prompt predicts with the question's *content* replaced by :data:`PLACEHOLDER`, so the answer a template (or the
few-shot block) favours on its own loses its edge: with the standard MyriadLAMA 5-shot block, ``"Emanuel Wirth
became known as a [MASK] player."`` leans to "saxophone", the answer of the few-shot example with that template, and
so does its content-free twin ``"N/A became known as a [MASK] player."``.

Two ways to make the content-free prompt (``calibration`` of LogitFusion / FlexFusion):

* ``subject`` (MyriadLAMA): every whole-word occurrence of the fact's subject in a paraphrase becomes ``N/A``; one
  content-free prompt per paraphrase, since each template has its own bias. The subject is the hub rows'
  ``sub_ent`` when the data comes from hub rows, or, for a file already grouped by fact (whose records drop it),
  :func:`recover_subject` over ALL the fact's paraphrases (manual and automatic, not only the ones asked). A fact
  whose subject cannot be recovered, or a paraphrase that does not contain it, is an error naming the record
  (:func:`content_free_prompts`); nothing falls back silently; ``question`` works for every record.
* ``question`` (WebQuestions, or any data): the whole question becomes ``N/A`` (Zhao et al.'s content-free input);
  the same prompt for every paraphrase, so one content-free row per group.
"""

from __future__ import annotations

import re
from typing import Literal

from selfens_pl.errors import InternalError, UserError

PLACEHOLDER = "N/A"
MASK = "[MASK]"
Calibration = Literal["none", "subject", "question"]
CALIBRATIONS: tuple[str, ...] = ("none", "subject", "question")


def check_calibration(value: str, flag: str = "--model.head.init_args.calibration") -> str:
    if value not in CALIBRATIONS:
        raise UserError(f"{flag}={value!r}: choose one of {', '.join(CALIBRATIONS)}")
    return value


def _whole(text: str) -> re.Pattern:
    """``text`` as a whole-word pattern: not glued to a letter or digit on either side."""
    return re.compile(r"(?<!\w)" + re.escape(text) + r"(?!\w)")


def _has_content_word(text: str) -> bool:
    from spacy.lang.en.stop_words import STOP_WORDS

    return any(w.lower() not in STOP_WORDS for w in re.findall(r"\w+", text))


def recover_subject(paraphrases: list[str]) -> str | None:
    """The longest text common to every paraphrase of a fact: its subject, or ``None`` when there is none.

    Candidates are substrings of the shortest paraphrase that start and end on a non-space character, hold at
    least one word that is not an English stop word (spaCy's list: "is", "of the" are no subject), do not overlap
    ``[MASK]``, and occur as whole words in every paraphrase (so "diploma" is not taken from "diplomatic"). ``None`` when fewer than two distinct paraphrases are given (one sentence is common
    to itself) or no candidate exists. With few paraphrases a relation word shared by all of them can win (e.g.
    "continent" in every template of a "located on the continent" fact): more paraphrases, fewer such errors.
    """
    texts = list(dict.fromkeys(p.strip() for p in paraphrases if p.strip()))
    if len(texts) < 2:
        return None
    shortest = min(texts, key=len)
    others = [t for t in texts if t is not shortest]
    pieces = shortest.split(MASK)
    best = None
    for piece in pieces:
        n = len(piece)
        for length in range(n, len(best or ""), -1):  # longest first; stop at the best length found so far
            found = None
            for start in range(0, n - length + 1):
                cand = piece[start:start + length]
                if cand != cand.strip() or not _has_content_word(cand):
                    continue
                pattern = _whole(cand)
                if pattern.search(shortest) and all(pattern.search(t) for t in others):
                    found = cand
                    break
            if found:
                best = found
                break
    return best


def content_free_prompts(group: dict, mode: str) -> list[str]:
    """Content-free paraphrases of ``group``: one per paraphrase (``subject``) or one for the group (``question``).

    Raises a ValueError naming the record when ``subject`` cannot be applied (no subject, or a paraphrase without it).
    """
    if mode == "question":
        return [PLACEHOLDER]
    if mode != "subject":
        raise InternalError(f"content-free prompts: unknown calibration {mode!r}")
    subject = group.get("subject")
    if not subject:
        raise UserError(
            f"record {group.get('id')!r}: calibration=subject needs the fact's subject, and it has none (the "
            "MyriadLAMA loader recovers it as the longest text common to a fact's paraphrases and found none; data "
            "that is not MyriadLAMA carries none): use calibration=question (the whole question replaced by "
            f"{PLACEHOLDER!r}) or drop the record")
    pattern = _whole(subject)
    out = []
    for i, paraphrase in enumerate(group["paraphrases"]):
        if not pattern.search(paraphrase):
            raise UserError(f"record {group.get('id')!r}: paraphrase {i} ({paraphrase!r}) does not contain the "
                             f"subject {subject!r}; calibration=subject cannot make its content-free prompt")
        out.append(pattern.sub(PLACEHOLDER, paraphrase))
    return out
