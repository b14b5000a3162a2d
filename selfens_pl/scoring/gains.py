"""The gains every comparison reports, computed one way for ``report`` and ``sweep``: a run against origin and
against the mean single paraphrase, each with a paired bootstrap interval (:mod:`selfens_pl.scoring.stats`).

Both baselines come from prediction records, per fact:

* *origin*: the correctness of an origin run, or else of paraphrase 0 with the standard few-shot block of a
  per_prompt run;
* *mean single paraphrase* at K: the mean correctness of a per_prompt run's paraphrases ``< K`` (all of them for
  ``K = None``), each asked alone with the standard few-shot block.

The sweep's accuracy table adds, from the same per_prompt records, the *mean single member* (paraphrases ``< K``
with blocks ``< M``) and the *oracle* (any of those members right).

A third comparison, where control runs are given (:mod:`selfens_pl.heads.controls`: the kNN single prompt, the
copied answer, self-consistency): a run against the *strongest control*, the control run with the highest accuracy
among those it is compared with (:func:`strongest`; the sweep takes the controls at the run's own ``(K, M)``,
``report`` every control run it is given).
"""

from __future__ import annotations

from selfens_pl.errors import InternalError
from selfens_pl.scoring.stats import Gain, aligned, paired_bootstrap, per_fact


class Baselines:
    """Per-fact baselines from a run's records: ``origin_records`` (an origin run's) and ``per_prompt_records``
    (a per_prompt run's, one record per member); either may be ``None`` (then what needs it is ``None``)."""

    def __init__(self, origin_records: list[dict] | None = None, per_prompt_records: list[dict] | None = None):
        self.per_prompt = per_prompt_records
        if origin_records is not None:
            self.origin = per_fact(origin_records)
        elif per_prompt_records is not None:
            self.origin = per_fact(per_prompt_records, paraphrase_index=0, block_index=0)
        else:
            self.origin = None
        #: Paraphrases the per_prompt run answered (0 without one).
        self.answered = 1 + max((int(r["paraphrase_index"]) for r in per_prompt_records or ()
                                 if r.get("paraphrase_index") is not None), default=-1)
        self._singles: dict[int | None, dict[str, float]] = {}

    def single(self, k: int | None = None) -> dict[str, float] | None:
        """The mean single paraphrase at ``k`` (``None``: over every paraphrase answered); ``None`` without a
        per_prompt run or when it answered fewer than ``k`` paraphrases."""
        if self.per_prompt is None or (k is not None and k > self.answered):
            return None
        if k not in self._singles:  # a sweep or report asks for the same K once per method
            self._singles[k] = per_fact(self.per_prompt, block_index=0, max_index=k)
        return self._singles[k]

    def member(self, k: int, m: int) -> dict[str, float]:
        """The mean single member: paraphrases ``< k`` with few-shot blocks ``< m``."""
        return per_fact(self._members(), max_index=k, max_block=m)

    def oracle(self, k: int, m: int) -> dict[str, float]:
        """1.0 where any member (paraphrase ``< k``, block ``< m``) is right, else 0.0."""
        return {i: float(v > 0) for i, v in self.member(k, m).items()}

    def _members(self) -> list[dict]:
        if self.per_prompt is None:
            raise InternalError("Baselines.member/oracle need the per_prompt run's records")
        return self.per_prompt


def gain_over(own: dict[str, float], base: dict[str, float], resamples: int, seed: int,
              names: tuple[str, str] = ("the run", "the baseline")) -> tuple[Gain, int]:
    """The gain of per-fact scores ``own`` over ``base`` on the facts both answered (paired bootstrap, the same
    resamples for every run on those facts) and how many facts that is; one UserError naming ``names`` when they
    share none."""
    ids, a, b = aligned(own, base, names)
    return paired_bootstrap(a, b, resamples, seed), len(ids)


def strongest(controls: list[tuple[str, dict[str, float]]]) -> tuple[str, dict[str, float]] | None:
    """The ``(name, per-fact scores)`` of the control with the highest accuracy (mean score over its facts) among
    ``controls``, ties to the first given (callers list the cheaper first); ``None`` when there is none."""
    best = None
    for name, scores in controls:
        if scores and (best is None or sum(scores.values()) / len(scores) > best[2]):
            best = (name, scores, sum(scores.values()) / len(scores))
    return None if best is None else (best[0], best[1])
