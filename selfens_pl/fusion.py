"""Fusion rules: how the next-token distributions of a group's paraphrases become one.

Contract shared by every rule (LogitFusion at every step, FlexFusion for its first token, the fine-tuning loss):

* input ``logits [g, n, V]``: float32 next-token logits of the ``n`` rows of each of ``g`` groups;
* ``weights [g, n]`` (or ``None``): per-paraphrase confidences, read by the ``weighted_*`` rules only;
* ``valid [g, n]`` bool (or ``None`` = all rows real): ragged groups are padded to ``n`` rows and the padding rows
  never count, whatever they hold;
* output ``[g, V]`` **log-scores**: the fused distribution is ``softmax(scores)``, so ``argmax`` is the fused token
  and ``scores[token] - logsumexp(scores)`` its log-probability (the record's confidence). Scores need not be
  normalised: ``avg`` returns mean logits, a product of experts up to a constant.

Rules (the seed's semantics):

* ``avg``: mean of the raw logits over the group's real rows;
* ``max``: max over real rows of the softmax probabilities (log of it; ``softmax`` renormalises);
* ``weighted_avg``: ``sum_i w_i / sum_j w_j * logits_i`` over real rows;
* ``weighted_max``: the logits of the most confident real row (first one on ties).

Rules are plain tensor code (no host sync, no data-dependent Python), so they run inside a compiled decode step.
"""

from __future__ import annotations

from typing import Literal

import torch

FusionMethod = Literal["avg", "max", "weighted_avg", "weighted_max"]
RULES: tuple[str, ...] = ("avg", "max", "weighted_avg", "weighted_max")
WEIGHTED: tuple[str, ...] = ("weighted_avg", "weighted_max")


def check_method(method: str, flag: str = "--model.head.init_args.method") -> str:
    """``method`` if it names a rule, else one ``ValueError`` naming ``flag`` and the choices."""
    if method not in RULES:
        raise ValueError(f"{flag}={method!r}: choose one of {', '.join(RULES)}")
    return method


def _valid_float(logits: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``[g, n, 1]`` 1.0 for real rows, 0.0 for padding."""
    if valid is None:
        return logits.new_ones(logits.shape[:2])[..., None]
    return valid.to(logits.dtype)[..., None]


def fuse_logits(logits: torch.Tensor, method: str, weights: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> torch.Tensor:
    """Combine ``logits [g, n, V]`` into ``[g, V]`` log-scores (see the module docstring)."""
    check_method(method)
    if valid is not None and valid.shape != logits.shape[:2]:
        raise ValueError(f"valid {tuple(valid.shape)} does not match logits {tuple(logits.shape[:2])}")
    real = _valid_float(logits, valid)  # [g, n, 1]
    if method == "avg":
        return (logits * real).sum(dim=1) / real.sum(dim=1)
    if method == "max":
        return (logits.softmax(dim=-1) * real).amax(dim=1).log()
    if weights is None:
        raise ValueError(f"method={method} needs per-paraphrase confidences (weights) and none were given")
    if weights.shape != logits.shape[:2]:
        raise ValueError(f"weights {tuple(weights.shape)} do not match logits {tuple(logits.shape[:2])}")
    w = weights.to(logits.dtype) * real[..., 0]  # padding rows weigh nothing
    if method == "weighted_avg":
        return ((w / w.sum(dim=1, keepdim=True))[..., None] * logits).sum(dim=1)
    # weighted_max: padding rows get -1 so a real row (confidence >= 0) always wins
    best = torch.where(real[..., 0] > 0, w, torch.full_like(w, -1.0)).argmax(dim=1)  # [g]
    return logits[torch.arange(logits.shape[0], device=logits.device), best]


def check_weights(weights: torch.Tensor, method: str) -> None:
    """Host-side check before decoding (not inside the compiled step): ``weighted_avg`` needs a positive sum."""
    if method == "weighted_avg" and (weights.sum(dim=1) <= 0).any():
        raise ValueError("method=weighted_avg: a group's confidences sum to 0; weights cannot be normalised")


def no_fusion(logits: torch.Tensor, weights: torch.Tensor | None = None,
              valid: torch.Tensor | None = None) -> torch.Tensor:
    """``[g, 1, V] -> [g, V]``: each group has exactly one row (origin, per_prompt, FlexFusion after the first token)."""
    if logits.shape[1] != 1:
        raise ValueError(f"no_fusion expects one row per group, got {logits.shape[1]}")
    return logits[:, 0]


def token_logprob(scores: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability ``[g]`` of ``tokens [g]`` under the fused distribution ``softmax(scores [g, V])``."""
    return scores.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(scores, dim=-1)
