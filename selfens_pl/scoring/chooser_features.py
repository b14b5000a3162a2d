"""The learned chooser's features (:mod:`selfens_pl.scoring.chooser`): the standard set and a richer one.

:func:`candidate_features` gives the standard set (:data:`FEATURES`, :data:`DEMO_FEATURES` with demonstration
answers; described in :mod:`selfens_pl.scoring.chooser`). :func:`rich_features` gives :data:`RICH_FEATURES`
(:data:`RICH_DEMO_FEATURES`; ``RerankHead(chooser_features="rich")``), a superset with what re-rankers of
open-domain QA answers use (evidence aggregation over candidates, Wang et al. 2018; agreement with retrieved
neighbours, as kNN-LM): for each candidate ``c`` of a group of ``N = K x M`` members (block-major) with sequence
log-probabilities ``s[m][c]`` over ``C`` candidates and ``L_c`` tokens,

* the standard features (the same numbers, first, in the same order);
* scores against the group: the worst member's score (``min``), each of mixture / mean per token / max minus the
  group's best of it (0 for the leader, negative otherwise: a pointwise model sees where ``c`` stands among the
  group's candidates, what a listwise ranker would see) and the mean per token's margin over the best other;
* ranks that do not depend on ``N``: the best and worst rank any member gives ``c`` (0 = top, raw, not divided by
  ``C - 1``), the share of members ranking it in their top 3, its place under mixture and under mean per token
  among the group's candidates, and ``C`` itself;
* provenance: whether some member decoded it (``produced``; else it is a demonstration's answer only);
* answer type: the question's wh-word (who, where, when, what, which, how many/much, other: one-hot, from the
  group's first paraphrase) and the candidate's form (first letter capitalised, every word capitalised, has a digit,
  a year, words, characters), with the products a linear model cannot form itself (who/where/which x capitalised,
  when x year, how many x digit);
* with demonstration answers, the demonstrations by similarity rank (``demo_answers`` nearest first, as
  :func:`~selfens_pl.engine.members.demo_answers` gives them with ``demo_selection: similar``): their vote and
  nearest agreeing one (as the standard demo set), how many of the nearest 1, 3, 5 and 10 agree with ``c`` (lemma
  rule), whether the very nearest does, how much the question shares with the demonstration questions whose answer
  agrees with ``c`` (the largest word overlap, Jaccard over content words: a demonstration that asks nearly the same
  question is worth copying) and with the nearest demonstration's question (the same for every candidate: how near
  the neighbours are at all).

Every feature is a float; none depends on the fact's answers. Both functions are pure Python.
"""

from __future__ import annotations

import math
import re

from selfens_pl.errors import InternalError
from selfens_pl.scoring.agreement import Lemmas

FEATURES: tuple[str, ...] = (
    "support_members", "support_paraphrases", "support_blocks", "from_origin",
    "mixture", "max", "mean", "mean_token", "origin_score", "mixture_margin",
    "mean_rank", "first_rank_share", "tokens", "demo_answer",
)
DEMO_FEATURES: tuple[str, ...] = FEATURES + ("demo_share", "demo_nearest")


def _mixture(column: list[float]) -> float:
    top = max(column)
    return top + math.log(sum(math.exp(v - top) for v in column) / len(column))


def _places(values: list[float]) -> list[float]:
    """Each value's rank among ``values`` (0 = highest; ties: the lower index first)."""
    places = [0.0] * len(values)
    for position, i in enumerate(sorted(range(len(values)), key=lambda i: (-values[i], i))):
        places[i] = float(position)
    return places


def candidate_features(predictions: list[str], candidates: list[str], table: list[list[float]], lengths: list[int],
                       k: int, demo_answers: list[str] = (), lemmas: Lemmas | None = None,
                       demo_features: bool = False) -> list[list[float]]:
    """``[C][F]`` features of each candidate (module docstring): :data:`FEATURES`, or :data:`DEMO_FEATURES` with
    ``demo_features``.

    Args:
        predictions: ``[N]`` every member's own answer, block-major (member ``m`` = paraphrase ``m % k``, block
            ``m // k``).
        candidates: ``[C]`` the distinct candidate answers.
        table: ``[N][C]`` sequence log-probability of candidate ``c`` under member ``m``.
        lengths: ``[C]`` tokens scored per candidate.
        k: paraphrases per block.
        demo_answers: answers of the demonstrations the group was asked with (any block), block order.
        demo_features: also the demonstrations' vote and nearest agreeing demonstration.
    """
    n, c = len(predictions), len(candidates)
    if n == 0 or n % k or len(table) != n or any(len(row) != c for row in table) or len(lengths) != c:
        raise InternalError(f"candidate_features: {n} members, k={k}, a {len(table)}-row table and {len(lengths)} "
                            f"lengths for {c} candidates do not fit together")
    lemmas = lemmas or Lemmas()
    m = n // k
    columns = [[table[j][i] for j in range(n)] for i in range(c)]
    mixtures = [_mixture(col) for col in columns]
    ranks = [[p / (c - 1) if c > 1 else 0.0 for p in _places(row)] for row in table]  # [N][C], 0 best .. 1
    out = []
    for i, cand in enumerate(candidates):
        agree = [lemmas.agree(cand, p) for p in predictions]
        shown = [lemmas.agree(cand, a) for a in demo_answers]
        col = columns[i]
        others = [mx for o, mx in enumerate(mixtures) if o != i]
        row = [
            sum(agree) / n,
            sum(any(agree[b * k + p] for b in range(m)) for p in range(k)) / k,
            sum(any(agree[b * k + p] for p in range(k)) for b in range(m)) / m,
            float(predictions[0] == cand),
            mixtures[i], max(col), sum(col) / n, sum(col) / n / lengths[i], col[0],
            mixtures[i] - max(others) if others else 0.0,
            sum(ranks[j][i] for j in range(n)) / n,
            sum(ranks[j][i] == 0.0 for j in range(n)) / n,
            float(lengths[i]),
            float(any(shown)),
        ]
        if demo_features:
            d = len(demo_answers)
            row += [sum(shown) / d if d else 0.0, 1.0 - shown.index(True) / d if any(shown) else 0.0]
        out.append(row)
    return out


WH_WORDS: tuple[str, ...] = ("who", "where", "when", "what", "which", "how_many")
NEAREST: tuple[int, ...] = (1, 3, 5, 10)

_EXTRA = ("min", "mixture_gap", "mean_token_gap", "max_gap", "mean_token_margin",
          "best_rank", "worst_rank", "top3_share", "mixture_place", "mean_token_place", "candidates", "produced",
          *(f"q_{w}" for w in WH_WORDS), "q_other",
          "capitalised", "title_case", "has_digit", "year", "words", "chars",
          "who_capitalised", "where_capitalised", "which_capitalised", "when_year", "how_many_digit")
_DEMO_EXTRA = ("demo_share", "demo_nearest", *(f"nearest{n}_agree" for n in NEAREST), "nearest_is_first",
               "agree_overlap", "nearest_overlap")

RICH_FEATURES: tuple[str, ...] = FEATURES + _EXTRA
RICH_DEMO_FEATURES: tuple[str, ...] = RICH_FEATURES + _DEMO_EXTRA

_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_FUNCTION_WORDS = frozenset("a an the of in on at to for from by with and or is are was were be been do does did "
                            "what who whom whose where when which why how many much s".split())


def content_words(text: str) -> frozenset[str]:
    """The lower-cased words of ``text`` without function and question words."""
    return frozenset(w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _FUNCTION_WORDS)


def overlap(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard overlap of two word sets (0 when both are empty)."""
    return len(a & b) / len(a | b) if a or b else 0.0


def wh_word(question: str) -> str:
    """The question's wh-word among :data:`WH_WORDS` (``how much`` counts as ``how_many``), else ``other``: the
    first one that occurs as a word (a cloze query has none)."""
    words = re.findall(r"[a-z]+", question.lower())
    for i, w in enumerate(words):
        if w == "how" and i + 1 < len(words) and words[i + 1] in ("many", "much"):
            return "how_many"
        if w in WH_WORDS:
            return w
    return "other"


def form_features(question_word: str, answer: str) -> list[float]:
    """The answer-type block of :data:`RICH_FEATURES` (``q_*`` one-hot .. ``how_many_digit``)."""
    words = answer.split()
    capital = float(bool(answer) and answer[0].isupper())
    title = float(bool(words) and all(w[0].isupper() or not w[0].isalpha() for w in words))
    digit = float(any(ch.isdigit() for ch in answer))
    year = float(bool(_YEAR.search(answer)))
    wh = [float(question_word == w) for w in WH_WORDS] + [float(question_word == "other")]
    return wh + [capital, title, digit, year, float(len(words)), float(len(answer)),
                 float(question_word == "who") * capital, float(question_word == "where") * capital,
                 float(question_word == "which") * capital, float(question_word == "when") * year,
                 float(question_word == "how_many") * digit]


def rich_features(question: str, predictions: list[str], candidates: list[str], produced: list[bool],
                  table: list[list[float]], lengths: list[int], k: int, demo_answers: list[str] = (),
                  lemmas: Lemmas | None = None, demo_features: bool = False,
                  standard: list[list[float]] | None = None, demo_questions: list[str] = ()) -> list[list[float]]:
    """``[C][F]``: :data:`RICH_FEATURES` of each candidate (:data:`RICH_DEMO_FEATURES` with ``demo_features``).

    Args:
        question: the group's question (its first paraphrase), for the wh-word.
        predictions: ``[N]`` every member's own answer, block-major.
        candidates: ``[C]`` the distinct candidate answers; ``produced [C]``: whether a member decoded it.
        table: ``[N][C]`` sequence log-probability of candidate ``c`` under member ``m``.
        lengths: ``[C]`` tokens scored per candidate.
        k: paraphrases per block.
        demo_answers: ``[D]`` the demonstrations' answers, nearest first.
        standard: ``[C][14]`` the standard features of the same candidates, if already computed.
        demo_questions: ``[D]`` the demonstrations' questions (with ``demo_features``; one per answer).
    """
    n, c = len(predictions), len(candidates)
    if len(produced) != c or (demo_features and len(demo_questions) != len(demo_answers)):
        raise InternalError(f"rich_features: {len(produced)} provenance flags for {c} candidates, "
                            f"{len(demo_questions)} demonstration questions for {len(demo_answers)} answers")
    lemmas = lemmas or Lemmas()
    base = standard if standard is not None else candidate_features(predictions, candidates, table, lengths, k,
                                                                   demo_answers, lemmas)
    columns = [[table[j][i] for j in range(n)] for i in range(c)]
    mixtures = [_mixture(col) for col in columns]
    per_token = [sum(col) / n / lengths[i] for i, col in enumerate(columns)]
    maxima = [max(col) for col in columns]
    member_ranks = [_places(row) for row in table]  # [N][C]
    mixture_place, token_place = _places(mixtures), _places(per_token)
    question_word = wh_word(question)
    d = len(demo_answers)
    asked = content_words(question)
    near = [overlap(asked, content_words(q)) for q in demo_questions] if demo_features else []
    out = []
    for i, cand in enumerate(candidates):
        ranks = [member_ranks[j][i] for j in range(n)]
        other_tokens = [v for o, v in enumerate(per_token) if o != i]
        row = list(base[i]) + [
            min(columns[i]),
            mixtures[i] - max(mixtures), per_token[i] - max(per_token), maxima[i] - max(maxima),
            per_token[i] - max(other_tokens) if other_tokens else 0.0,
            min(ranks), max(ranks), sum(r < 3 for r in ranks) / n,
            mixture_place[i], token_place[i], float(c), float(produced[i]),
            *form_features(question_word, cand),
        ]
        if demo_features:
            shown = [lemmas.agree(cand, a) for a in demo_answers]
            row += [sum(shown) / d if d else 0.0, 1.0 - shown.index(True) / d if any(shown) else 0.0,
                    *(float(sum(shown[:k])) for k in NEAREST), float(bool(shown) and shown[0]),
                    max((v for v, agrees in zip(near, shown) if agrees), default=0.0), near[0] if near else 0.0]
        out.append(row)
    return out
