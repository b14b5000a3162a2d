"""Answer-correctness metrics for open-domain QA predictions.

Two families are provided:

* The *lemma-match* rule used by the Self-Ensemble paper (Xu et al. 2025): a prediction is correct when
  the lemmatised gold answer appears contiguously inside the lemmatised
  prediction (optionally also the other way round).  Exposed as the plain
  functions :func:`normalize_lemmas` / :func:`is_match` and as the
  DDP-aware :class:`LemmaMatchAccuracy` metric.
* SQuAD exact match and token F1, exactly as ``torchmetrics.text.SQuAD``
  defines them, in :class:`SquadScores` (which takes plain string lists
  instead of SQuAD-formatted dicts).
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

# Reuse torchmetrics' own SQuAD scoring helpers (private, but pinned by our
# torchmetrics version) so our numbers cannot drift from the reference metric.
from torchmetrics.functional.text.squad import (
    _compute_exact_match_score,
    _compute_f1_score,
    _metric_max_over_ground_truths,
)

from selfens_pl.errors import InternalError

__all__ = ["normalize_lemmas", "is_match", "LemmaMatchAccuracy", "SquadScores"]

# Building a spaCy pipeline (and loading the lookup tables) takes ~1 s, so it
# is created once, on first use, and shared by every caller in the process.
_NLP: Any = None
_NLP_LOCK = threading.Lock()


def _get_nlp() -> Any:
    """Return the shared blank-English pipeline with a lookup lemmatiser."""
    global _NLP
    if _NLP is None:
        with _NLP_LOCK:
            # Re-check under the lock so two threads never both build it.
            if _NLP is None:
                import spacy  # imported lazily: only lemma matching needs it

                nlp = spacy.blank("en")
                # "lookup" mode needs no POS tagger (no model download); the
                # tables come from the installed spacy-lookups-data package.
                nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
                nlp.initialize()
                _NLP = nlp
    return _NLP


def normalize_lemmas(text: str) -> list[str]:
    """Lowercase and lemmatise ``text``, dropping punctuation/whitespace tokens.

    Args:
        text: Any string (prediction or gold alias).

    Returns:
        The sequence of lowercase lemmas, e.g. ``"The cats ran!"`` ->
        ``["the", "cat", "run"]``.  Articles are deliberately kept.
    """
    # Lowercase first: the English lookup table is keyed on lowercase forms.
    doc = _get_nlp()(text.lower())
    return [tok.lemma_.lower() for tok in doc if not (tok.is_punct or tok.is_space)]


def _contains(haystack: list[str], needle: list[str]) -> bool:
    """True if ``needle`` (non-empty) occurs contiguously inside ``haystack``."""
    n = len(needle)
    if n == 0 or n > len(haystack):
        return False
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def is_match(prediction: str, answers: list[str], bidirectional: bool = False) -> bool:
    """Seed lemma-match rule: is ``prediction`` correct for any gold alias?

    Correct when, for some alias, the alias' lemma sequence occurs contiguously
    in the prediction's lemma sequence.  With ``bidirectional=True`` it is also
    correct when the prediction's lemma sequence occurs contiguously in the
    alias' (so a short answer like "Obama" matches gold "Barack Obama").

    An empty prediction (no lemmas after normalisation) is never correct, and
    aliases that normalise to nothing are skipped, since an empty sequence
    would otherwise be "contained" in everything.

    Raises:
        InternalError: if ``answers`` is empty (callers check each record's answers first).
    """
    if len(answers) == 0:
        raise InternalError("is_match: no gold answers given")
    pred = normalize_lemmas(prediction)
    if not pred:
        return False
    for alias in answers:
        gold = normalize_lemmas(alias)
        if not gold:
            continue
        if _contains(pred, gold) or (bidirectional and _contains(gold, pred)):
            return True
    return False


class LemmaMatchAccuracy(Metric):
    """Fraction of predictions judged correct by :func:`is_match`.

    States ``correct`` and ``total`` are summed across processes, so the
    metric is exact under DDP.  ``compute()`` returns ``nan`` (not 0) when no
    record has been seen, so an empty evaluation is never mistaken for a
    genuine 0 % score.

    Args:
        bidirectional: forwarded to :func:`is_match`.
        **kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor

    def __init__(self, bidirectional: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bidirectional = bidirectional
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def match(self, prediction: str, answers: list[str]) -> bool:
        """Per-record verdict with this metric's options (does not update state)."""
        return is_match(prediction, answers, bidirectional=self.bidirectional)

    def update(self, predictions: list[str], answers: list[list[str]], verdicts: list[bool] | None = None) -> None:
        """Accumulate a batch; ``answers[i]`` holds the gold aliases of record ``i``. ``verdicts [i]``: record
        ``i``'s verdict taken elsewhere (a multiple-choice record is right by its chosen index,
        :func:`selfens_pl.scoring.choice.score_choice`), else :meth:`match` decides."""
        if len(predictions) != len(answers) or (verdicts is not None and len(verdicts) != len(predictions)):
            raise InternalError(
                f"predictions and answers differ in length: {len(predictions)} vs {len(answers)}"
            )
        if verdicts is None:
            verdicts = [self.match(p, a) for p, a in zip(predictions, answers)]
        self.correct += sum(bool(v) for v in verdicts)
        self.total += len(predictions)

    def compute(self) -> Tensor:
        """Return ``correct / total`` as a float tensor, or ``nan`` if total is 0."""
        if self.total.item() == 0:
            return torch.tensor(float("nan"))
        return self.correct.float() / self.total.float()


class SquadScores(Metric):
    """SQuAD exact match and F1 (percent), identical to ``torchmetrics.text.SQuAD``.

    Uses torchmetrics' own normalisation (lowercase, strip punctuation and
    articles, collapse whitespace) and takes the max over gold aliases per
    record.  Unlike ``torchmetrics.text.SQuAD`` it accepts plain lists, and its
    states are named sums (``exact_match``, ``f1``, ``total``) that sync
    under DDP.  ``compute()`` returns ``nan`` scores when no record was seen.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    exact_match: Tensor
    f1: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("exact_match", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("f1", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: list[str], answers: list[list[str]]) -> None:
        """Accumulate a batch; ``answers[i]`` holds the gold aliases of record ``i``.

        Raises:
            InternalError: on length mismatch or a record with no gold aliases
                (max over an empty alias list is undefined).
        """
        if len(predictions) != len(answers):
            raise InternalError(
                f"predictions and answers differ in length: {len(predictions)} vs {len(answers)}"
            )
        for i, (pred, golds) in enumerate(zip(predictions, answers)):
            if len(golds) == 0:
                raise InternalError(f"SquadScores: record {i} of the batch has no gold answers")
            em = _metric_max_over_ground_truths(_compute_exact_match_score, pred, list(golds))
            f1 = _metric_max_over_ground_truths(_compute_f1_score, pred, list(golds))
            self.exact_match += em.float()
            self.f1 += f1.float()
        self.total += len(predictions)

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"exact_match": ..., "f1": ...}`` in percent (0-100)."""
        if self.total.item() == 0:
            nan = torch.tensor(float("nan"))
            return {"exact_match": nan, "f1": nan.clone()}
        total = self.total.float()
        return {
            "exact_match": 100.0 * self.exact_match / total,
            "f1": 100.0 * self.f1 / total,
        }
