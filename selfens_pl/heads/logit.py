"""``LogitFusion``: decode all paraphrases of a group together and fuse their next-token distributions.

Rules (the seed's semantics), on ``logits [g, n, V]`` and confidences ``w [g, n]``:

* ``avg``: mean of the raw logits over the ``n`` paraphrases;
* ``max``: max over paraphrases of the softmax probabilities;
* ``weighted_avg``: ``sum_i w_i / sum_j w_j * logits_i``;
* ``weighted_max``: the logits of the most confident paraphrase (first one on ties).

The fused token is fed to every row of the group, so each paraphrase continues the same answer.
"""

from __future__ import annotations

from typing import Literal

import torch

from selfens_pl.heads.base import FusionHead, confidence_weights, prompt_batch

FusionMethod = Literal["avg", "max", "weighted_avg", "weighted_max"]
WEIGHTED = ("weighted_avg", "weighted_max")


def fuse_logits(logits: torch.Tensor, method: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Combine ``logits [g, n, V]`` into ``[g, V]`` scores whose argmax is the fused token."""
    if method == "avg":
        return logits.mean(dim=1)
    if method == "max":
        return logits.softmax(dim=-1).amax(dim=1)
    if method not in WEIGHTED:
        raise ValueError(f"--model.head.init_args.method={method!r}: choose avg, max, weighted_avg, weighted_max")
    if weights is None:
        raise ValueError(f"method={method} needs per-paraphrase confidences (weights) and none were given")
    if weights.shape != logits.shape[:2]:
        raise ValueError(f"weights {tuple(weights.shape)} do not match logits {tuple(logits.shape[:2])}")
    if method == "weighted_avg":
        total = weights.sum(dim=1, keepdim=True)
        if (total <= 0).any():
            raise ValueError("method=weighted_avg: a group's confidences sum to 0; weights cannot be normalised")
        return ((weights / total)[..., None] * logits).sum(dim=1)
    best = weights.argmax(dim=1)  # [g]
    return logits[torch.arange(logits.shape[0], device=logits.device), best]


class LogitFusion(FusionHead):
    """All ``n`` paraphrases of each group decode as ``n`` cached rows; each step's logits are fused per group."""

    needs_equal_groups = True

    def __init__(self, method: FusionMethod = "avg"):
        super().__init__()
        if method not in ("avg", "max", *WEIGHTED):
            raise ValueError(f"--model.head.init_args.method={method!r}: choose avg, max, weighted_avg, weighted_max")
        self.fusion = method

    @property
    def method(self) -> str:  # type: ignore[override]
        return self.fusion

    def fuse(self, logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return fuse_logits(logits, self.fusion, weights)

    def generate(self, decoder, prompts, groups):
        self.check_groups(groups)
        n = len(groups[0]["paraphrases"])
        batch = prompt_batch(decoder, prompts, [(g, p) for g in groups for p in g["paraphrases"]], n)
        if self.fusion in WEIGHTED:
            batch.weights = batch.step_weights = confidence_weights(groups, self.fusion, decoder.device)
        gens = decoder.decode_n_tokens(batch, self.fuse, self.fuse)
        return [self.record(g, gen, None, list(g["paraphrases"])) for g, gen in zip(groups, gens)]
