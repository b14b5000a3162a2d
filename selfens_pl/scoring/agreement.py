"""Agreement between answers under the package's lemma rule, for votes and per-answer confidences.

Two answers *agree* when the lemma sequence of one appears contiguously in the other's (spaCy lookup lemmas, as
:func:`selfens_pl.scoring.metrics.is_match` scores predictions; here in both directions, because neither answer is the
gold one): ``is_match(a, [b], bidirectional=True)``. So "Paris" agrees with "Paris, France" and with "paris"; an
empty answer agrees with nothing. The relation is symmetric but not transitive ("Paris" and "France" both agree
with "Paris, France", not with each other), so a vote counts, for each candidate answer, the answers that agree
with *it* (:func:`support`), rather than forming clusters.
"""

from __future__ import annotations

import math

from selfens_pl.errors import InternalError
from selfens_pl.scoring.metrics import _contains, normalize_lemmas


class Lemmas:
    """Lemma sequences of answers, each computed once (a vote compares every pair)."""

    def __init__(self):
        self._cache: dict[str, tuple[str, ...]] = {}

    def __call__(self, text: str) -> tuple[str, ...]:
        if text not in self._cache:
            self._cache[text] = tuple(normalize_lemmas(text))
        return self._cache[text]

    def agree(self, a: str, b: str) -> bool:
        """``is_match(a, [b], bidirectional=True)``: one answer's lemmas inside the other's; empty never agrees."""
        la, lb = list(self(a)), list(self(b))
        if not la or not lb:
            return False
        return _contains(la, lb) or _contains(lb, la)


def support(answers: list[str], lemmas: Lemmas | None = None) -> list[int]:
    """``[n]``: for each answer, how many of ``answers`` (itself included, when not empty) agree with it."""
    lemmas = lemmas or Lemmas()
    return [sum(lemmas.agree(a, b) for b in answers) for a in answers]


def agreement_share(answer: str, answers: list[str], lemmas: Lemmas | None = None) -> float:
    """Share of ``answers`` (each paraphrase's own answer) that agree with ``answer`` (0.0 for an empty answer)."""
    if not answers:
        raise InternalError("agreement_share needs at least one paraphrase answer")
    lemmas = lemmas or Lemmas()
    return sum(lemmas.agree(answer, b) for b in answers) / len(answers)


def mean_logprob(logprobs: list[float]) -> float:
    """Mean token log-probability of an answer; ``-inf`` for an empty one (it never wins a tie)."""
    return sum(logprobs) / len(logprobs) if logprobs else -math.inf


def weighted_support(texts: list[str], answers: list[str], weights: list[float],
                     lemmas: Lemmas | None = None) -> list[float]:
    """``[t]``: for each of ``texts``, the summed weight of the ``answers`` that agree with it (``weights[j]`` for
    answer j; :func:`support` with equal weights when ``texts`` are the answers)."""
    lemmas = lemmas or Lemmas()
    return [sum(w for b, w in zip(answers, weights) if lemmas.agree(a, b)) for a in texts]


def vote(answers: list[str], logprobs: list[list[float]], lemmas: Lemmas | None = None,
         weights: list[float] | None = None) -> tuple[int, float]:
    """``(index, support)`` of the answer most of ``answers`` agree with (``weights``: each answer's vote weighs
    ``weights[j]``, :func:`weighted_support`; ``None``: one each); ties go to the highest mean token
    log-probability (``logprobs[i]``: answer i's token log-probabilities), then to the lowest index."""
    if not answers or len(answers) != len(logprobs) or (weights is not None and len(weights) != len(answers)):
        raise InternalError(f"vote needs one list of log-probabilities (and one weight, if any) per answer "
                            f"({len(answers)} answers, {len(logprobs)} lists, "
                            f"{None if weights is None else len(weights)} weights)")
    counts = support(answers, lemmas) if weights is None else weighted_support(answers, answers, weights, lemmas)
    best = max(range(len(answers)), key=lambda i: (counts[i], mean_logprob(logprobs[i]), -i))
    return best, counts[best]
