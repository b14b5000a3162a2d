"""Cross-validated choices of a chooser (:mod:`selfens_pl.scoring.chooser`) and what its confidence buys.

Used by ``python -m selfens_pl chooser`` (its table) and ``scripts/chooser_variants.py`` (every variant): for
facts ``ids`` with candidates' features ``feats [g][C_g][F]`` and labels ``[g][C_g]``, each fact is chosen by the
chooser fit on the other folds (:func:`~selfens_pl.scoring.chooser.fold_choosers`, folds by a hash of the fact id),
with that chooser's calibrated confidence; :func:`accuracy_at_coverage` is the accuracy of the most confident share.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfens_pl.scoring.chooser import FEATURES, fold_choosers, fold_of
from selfens_pl.scoring.rescoring import best


@dataclass
class Choices:
    """Per fact (in ``ids`` order): ``index`` of the chosen candidate (``None``: no candidate), whether it is
    ``right``, and the chooser's calibrated ``confidence`` (``None`` without a calibration or a candidate)."""

    ids: list[str]
    index: list[int | None]
    right: list[bool]
    confidence: list[float | None]

    def per_fact(self) -> dict[str, float]:
        return {i: float(r) for i, r in zip(self.ids, self.right)}

    @property
    def accuracy(self) -> float:
        return sum(self.right) / len(self.right)


def cross_validated_choices(ids: list[str], feats: list[list[list[float]]], labels: list[list[bool]],
                            folds: int = 5, features: tuple[str, ...] = FEATURES, model_type: str | None = None,
                            c: float = 1.0) -> Choices:
    """Each fact's choice by the chooser fit (and calibrated) on the other ``folds`` folds only."""
    choosers = fold_choosers(ids, feats, labels, folds, c, features, model_type)
    index, right, confidence = [], [], []
    for i, own, lab in zip(ids, feats, labels):
        if not own:
            index.append(None), right.append(False), confidence.append(None)
            continue
        chooser = choosers[fold_of(i, folds)]
        scores = chooser.scores(own)
        index.append(best(scores))
        right.append(bool(lab[index[-1]]))
        confidence.append(chooser.confidence(scores))
    return Choices(list(ids), index, right, confidence)


def accuracy_at_coverage(right: list[bool], confidence: list[float | None], coverage: float = 0.5) -> float | None:
    """Accuracy of the ``coverage`` share of facts with the highest confidence (at least one; ties in fact order;
    a fact without a confidence ranks last); ``None`` when no fact has one."""
    if not right or all(v is None for v in confidence):
        return None
    order = sorted(range(len(right)), key=lambda g: (confidence[g] is None, -(confidence[g] or 0.0), g))
    kept = order[:max(1, round(coverage * len(right)))]
    return sum(right[g] for g in kept) / len(kept)
