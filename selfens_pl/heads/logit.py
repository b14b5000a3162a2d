"""``LogitFusion``: decode all paraphrases of a group together and fuse their next-token distributions.

The rules (``avg``, ``max``, ``weighted_avg``, ``weighted_max``) live in :mod:`selfens_pl.fusion`. The fused token is
fed to every row of the group, so each paraphrase continues the same answer. Groups may differ in size: each is
padded to the largest group of the batch with copies of its first paraphrase, which the rule ignores (``valid``).
"""

from __future__ import annotations

import torch

from selfens_pl.fusion import WEIGHTED, FusionMethod, check_method, fuse_logits
from selfens_pl.heads.base import FusionHead, confidence_weights, prompt_batch


class LogitFusion(FusionHead):
    """All paraphrases of each group decode as cached rows; each step's logits are fused per group."""

    def __init__(self, method: FusionMethod = "avg"):
        super().__init__()
        self.fusion = check_method(method)

    @property
    def method(self) -> str:  # type: ignore[override]
        return self.fusion

    def fuse(self, logits: torch.Tensor, weights: torch.Tensor | None = None,
             valid: torch.Tensor | None = None) -> torch.Tensor:
        return fuse_logits(logits, self.fusion, weights, valid)

    def generate(self, decoder, prompts, groups):
        self.check_groups(groups)
        n = max(len(g["paraphrases"]) for g in groups)
        items = [(g, p) for g in groups for p in padded(g["paraphrases"], n)]
        batch = prompt_batch(decoder, prompts, items, n)
        if any(len(g["paraphrases"]) < n for g in groups):
            batch.valid = batch.step_valid = group_valid(groups, n, decoder.device)
        if self.fusion in WEIGHTED:
            batch.weights = batch.step_weights = confidence_weights(groups, self.fusion, decoder.device, n)
        gens = decoder.decode_n_tokens(batch, self.fuse, self.fuse)
        return [self.record(g, gen, None, list(g["paraphrases"])) for g, gen in zip(groups, gens)]


def padded(paraphrases: list[str], n: int) -> list[str]:
    """``paraphrases`` followed by copies of the first one up to ``n`` rows (the copies are masked out)."""
    return list(paraphrases) + [paraphrases[0]] * (n - len(paraphrases))


def group_valid(groups: list[dict], n: int, device) -> torch.Tensor:
    """``[g, n]`` True for each group's real paraphrases, False for its padding rows."""
    sizes = torch.tensor([len(g["paraphrases"]) for g in groups], device=device)
    return torch.arange(n, device=device)[None, :] < sizes[:, None]
