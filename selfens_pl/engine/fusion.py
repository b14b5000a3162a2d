"""Fusion rules: how the next-token distributions of a group's paraphrases become one.

Contract shared by every rule (LogitFusion at every step, FlexFusion for its first token, the fine-tuning loss):

* input ``logits [g, n, V]``: float32 next-token logits of the ``n`` rows of each of ``g`` groups;
* ``weights [g, n]`` (or ``None``): per-row weights: the ``weighted_*`` rules' per-paraphrase confidences; for
  ``avg``, ``prob_avg`` and ``entropy_weighted``, when given, each row's weight in the rule (the original
  question's share, :mod:`selfens_pl.data.origin_share`; ``None``: every row equal, the rule as written below);
  ``max`` takes none;
* ``valid [g, n]`` bool (or ``None`` = all rows real): ragged groups are padded to ``n`` rows and the padding rows
  never count, whatever they hold;
* ``prior [g, n, V]`` or ``[g, 1, V]`` (or ``None``): content-free log-probabilities for contextual calibration
  (below);
* output ``[g, V]`` **log-scores**: the fused distribution is ``softmax(scores)``, so ``argmax`` is the fused token
  and ``scores[token] - logsumexp(scores)`` its log-probability (the record's confidence). Scores need not be
  normalised: ``avg`` returns mean logits, a product of experts up to a constant.

Rules (``l_i`` = row i's logits, ``p_i = softmax(l_i)``, sums over the group's real rows, ``m`` of them):

* ``avg``: ``mean_i l_i`` (a product of experts, the reference code's default);
* ``max``: ``log max_i p_i`` (``softmax`` renormalises);
* ``weighted_avg``: ``sum_i w_i / sum_j w_j * l_i`` (``w``: sampled confidences, ``python -m selfens_pl confidence``);
* ``weighted_max``: ``l_k`` of the most confident real row ``k`` (first one on ties);
* ``prob_avg``: ``log(1/m sum_i p_i)``: a mixture of the paraphrases' distributions. Unlike ``avg`` one paraphrase
  that rules a token out (``p_i ~ 0``) cannot veto it;
* ``entropy_weighted``: ``sum_i a_i log p_i`` with ``a = softmax_i(-H(p_i))``, the entropy ``H`` in nats of each
  real row's own distribution at this step: a weighted product of experts in which a peaked (certain) paraphrase
  counts more, re-weighted at every step; a confidence that costs nothing, unlike the sampled ``weighted_*``.

Row weights ``w_i`` (mean 1 over the real rows) enter ``avg`` as ``sum_i w_i l_i / sum_i w_i``, ``prob_avg`` as the
mixture ``log(sum_i w_i p_i / sum_i w_i)`` and ``entropy_weighted`` as ``a ~ w_i exp(-H(p_i))``; all rows equal
weights are the unweighted rule.

Contextual calibration (Zhao et al., 2021), usable with every rule: ``prior`` holds each paraphrase's content-free
log-probabilities ``log q_i`` (its prompt with the question's content replaced by a placeholder, see
:mod:`selfens_pl.data.content_free`) and the rule runs on ``l_i - log q_i``. Since ``softmax(l_i - log q_i)`` is
``p_i / q_i`` renormalised, each paraphrase's distribution is divided by what its template alone predicts. Dividing
by the full ``q`` would also inflate every token the content-free prompt happens to rule out (``q ~ 1e-9``), so the
prior is floored first: ``q'_i = max(q_i, floor * max_t q_i)`` (``prior_floor``; the heads use 0.1). Calibration
then discounts only the tokens the template itself favours and treats all others alike. ``prior_floor = 0`` is
Zhao et al.'s division, ``1`` no calibration. A prior of zeros (or any constant) leaves every rule exactly as it is,
whatever the floor (tested).

Rules are plain tensor code (no host sync, no data-dependent Python), so they run inside a compiled decode step.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from selfens_pl.errors import InternalError, UserError

FusionMethod = Literal["avg", "max", "weighted_avg", "weighted_max", "prob_avg", "entropy_weighted"]
RULES: tuple[str, ...] = ("avg", "max", "weighted_avg", "weighted_max", "prob_avg", "entropy_weighted")
WEIGHTED: tuple[str, ...] = ("weighted_avg", "weighted_max")
#: Rules that take row weights (the original question's share) besides their own definition.
ROW_WEIGHTED: tuple[str, ...] = ("avg", "prob_avg", "entropy_weighted")


def rule_key(rule: str, share: float | str | None) -> str:
    """The name the sweep's engine decodes a rule under: ``avg``, ``avg@0.5`` weighing the original question with
    share 0.5, or ``avg@auto`` with each group's share resolved from its paraphrases
    (:mod:`selfens_pl.data.origin_share`)."""
    if share is None:
        return rule
    return f"{rule}@{share}" if isinstance(share, str) else f"{rule}@{share:g}"


def split_rule_key(key: str) -> tuple[str, float | str | None]:
    """``(rule, share)`` of a :func:`rule_key`."""
    rule, _, share = key.partition("@")
    return check_method(rule, "engine rule"), (share if share == "auto" else float(share)) if share else None


def check_method(method: str, flag: str = "--model.head.init_args.method") -> str:
    """``method`` if it names a rule, else one ``ValueError`` naming ``flag`` and the choices."""
    if method not in RULES:
        raise UserError(f"{flag}={method!r}: choose one of {', '.join(RULES)}")
    return method


def check_prior_floor(floor: float, flag: str = "--model.head.init_args.prior_floor") -> float:
    """``floor`` if it lies in ``[0, 1]`` (0: Zhao et al.'s plain division, 1: no calibration), else a ValueError."""
    if not 0.0 <= floor <= 1.0:
        raise UserError(f"{flag}={floor!r}: must lie in [0, 1] (0: divide by the whole content-free "
                         "distribution, 1: no calibration)")
    return float(floor)


def _valid_float(logits: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``[g, n, 1]`` 1.0 for real rows, 0.0 for padding."""
    if valid is None:
        return logits.new_ones(logits.shape[:2])[..., None]
    return valid.to(logits.dtype)[..., None]


def _rule(logits: torch.Tensor, method: str, weights: torch.Tensor | None, real: torch.Tensor) -> torch.Tensor:
    """One rule on ``logits [g, n, V]`` with ``real [g, n, 1]`` (1.0 real row, 0.0 padding) -> ``[g, V]``."""
    if weights is not None and method in ROW_WEIGHTED:
        return _row_weighted(logits, method, weights, real)
    if method == "avg":
        return (logits * real).sum(dim=1) / real.sum(dim=1)
    if method == "max":
        return (logits.softmax(dim=-1) * real).amax(dim=1).log()
    if method == "prob_avg":
        logp = logits.log_softmax(dim=-1).masked_fill(real == 0, float("-inf"))  # padding adds no probability
        return torch.logsumexp(logp, dim=1) - real.sum(dim=1).log()
    if method == "entropy_weighted":
        logp = logits.log_softmax(dim=-1)
        entropy = torch.special.entr(logp.exp()).sum(dim=-1)  # [g, n] nats; entr(0) = 0, no 0 * -inf
        certainty = (-entropy).masked_fill(real[..., 0] == 0, float("-inf"))
        a = certainty.softmax(dim=1)  # [g, n], 0 for padding rows
        return (a[..., None] * logp.masked_fill(real == 0, 0.0)).sum(dim=1)
    if weights is None:
        raise InternalError(f"method={method} needs per-paraphrase confidences (weights) and none were given")
    if weights.shape != logits.shape[:2]:
        raise InternalError(f"weights {tuple(weights.shape)} do not match logits {tuple(logits.shape[:2])}")
    w = weights.to(logits.dtype) * real[..., 0]  # padding rows weigh nothing
    if method == "weighted_avg":
        return ((w / w.sum(dim=1, keepdim=True))[..., None] * logits).sum(dim=1)
    # weighted_max: padding rows get -1 so a real row (confidence >= 0) always wins
    best = torch.where(real[..., 0] > 0, w, torch.full_like(w, -1.0)).argmax(dim=1)  # [g]
    return logits[torch.arange(logits.shape[0], device=logits.device), best]


def _row_weighted(logits: torch.Tensor, method: str, weights: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``avg`` / ``prob_avg`` / ``entropy_weighted`` with row weights ``weights [g, n]`` (padding rows weigh 0)."""
    if weights.shape != logits.shape[:2]:
        raise InternalError(f"row weights {tuple(weights.shape)} do not match logits {tuple(logits.shape[:2])}")
    w = weights.to(logits.dtype)[..., None] * real  # [g, n, 1]
    if method == "avg":
        return (logits * w).sum(dim=1) / w.sum(dim=1)
    logp = logits.log_softmax(dim=-1)
    if method == "prob_avg":
        return torch.logsumexp(logp + w.log(), dim=1) - w.sum(dim=1).log()  # log 0 = -inf: padding adds nothing
    entropy = torch.special.entr(logp.exp()).sum(dim=-1)  # [g, n]
    a = (w[..., 0].log() - entropy).softmax(dim=1)  # a_i ~ w_i exp(-H_i); 0 for padding rows
    return (a[..., None] * logp.masked_fill(real == 0, 0.0)).sum(dim=1)


def fuse_logits(logits: torch.Tensor, method: str, weights: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, prior: torch.Tensor | None = None,
                prior_floor: float = 0.0) -> torch.Tensor:
    """Combine ``logits [g, n, V]`` into ``[g, V]`` log-scores (see the module docstring).

    ``prior [g, n | 1, V]``: content-free log-probabilities (one row per paraphrase, or one shared by the group),
    floored at ``log(prior_floor) + max``; the rule then runs on ``logits - prior``.
    """
    check_method(method)
    if valid is not None and valid.shape != logits.shape[:2]:
        raise InternalError(f"valid {tuple(valid.shape)} does not match logits {tuple(logits.shape[:2])}")
    real = _valid_float(logits, valid)  # [g, n, 1]
    if prior is None:
        return _rule(logits, method, weights, real)
    if prior.dim() != 3 or prior.shape[0] != logits.shape[0] or prior.shape[1] not in (1, logits.shape[1]) \
            or prior.shape[2] != logits.shape[2]:
        raise InternalError(f"prior {tuple(prior.shape)} does not match logits {tuple(logits.shape)}")
    if prior_floor > 0:
        prior = torch.maximum(prior, prior.amax(dim=-1, keepdim=True) + math.log(prior_floor))
    return _rule(logits - prior, method, weights, real)


def no_fusion(logits: torch.Tensor, weights: torch.Tensor | None = None,
              valid: torch.Tensor | None = None) -> torch.Tensor:
    """``[g, 1, V] -> [g, V]``: each group has exactly one row (origin, per_prompt, FlexFusion after the first token)."""
    if logits.shape[1] != 1:
        raise InternalError(f"no_fusion expects one row per group, got {logits.shape[1]}")
    return logits[:, 0]


def token_logprob(scores: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability ``[g]`` of ``tokens [g]`` under the fused distribution ``softmax(scores [g, V])``."""
    return scores.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(scores, dim=-1)
