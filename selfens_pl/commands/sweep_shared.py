"""Several LogitFusion heads answered from ONE encoding of the rows (the sweep's way to afford every rule at every K).

Every LogitFusion rule reads the same rows at the same K: the group's K paraphrase prompts (plus, for calibrated
rules, their content-free prompts). Encoding those rows once per rule would repeat the costliest part of the work
(the prefill: ~19 question tokens per row against ~3 answer tokens). Here each distinct row of a fact is encoded
once, its KV cache is copied to one group per head, and the groups decode together; each group is fused with its
own head's rule. The answers are the heads' own (tested token for token against ``head.generate`` in
tests/test_sweep.py).

How it fits the decoder without changing it:

* :class:`SharedRowsDecoder` is a :class:`~selfens_pl.decoding.GreedyDecoder` whose ``prefill`` encodes
  ``batch.encoded`` (the distinct rows) and then copies cache and logits to the batch's rows
  (``batch.rows_from [r]``: the encoded row each batch row continues from), as ``prefill`` already does for the
  shared instruction prefix. Every other batch passes through unchanged, so the heads run on it as on the plain
  decoder.
* the fuse function fuses every group with every head's rule and keeps, per group, its own head's scores; the head
  of each group rides in ``weights`` / ``step_weights`` (``[g, 1]``), which the decoder keeps aligned with the
  groups still decoding. Pure tensor code.

Only LogitFusion heads with unweighted rules share rows (weighted rules read per-paraphrase confidences from the
same ``weights``); other heads run on their own.
"""

from __future__ import annotations

import torch

from selfens_pl.content_free import content_free_prompts
from selfens_pl.decoding import GreedyDecoder, PrefillBatch
from selfens_pl.fusion import WEIGHTED, fuse_logits
from selfens_pl.heads import LogitFusion
from selfens_pl.heads.base import prompt_batch


class SharedRowsDecoder(GreedyDecoder):
    """A GreedyDecoder whose prefill encodes each distinct row once when the batch says which rows repeat."""

    @torch.inference_mode()
    def prefill(self, batch: PrefillBatch, cache=None) -> torch.Tensor:
        rows_from = getattr(batch, "rows_from", None)
        if rows_from is None:
            return super().prefill(batch, cache)
        logits = super().prefill(batch.encoded, cache)  # [u, k, V], written into the cache's first u rows
        # each batch row continues from its encoded row (the cache's rows past the batch, a compiled bucket's
        # padding, repeat the first one)
        extra = cache.rows - len(rows_from)
        cache.copy_rows(cache, torch.cat([rows_from, rows_from[:1].expand(extra)]) if extra else rows_from)
        return logits[rows_from]


def shares_rows(head) -> bool:
    """Whether ``head`` can decode from shared rows (an unweighted LogitFusion rule, calibrated or not)."""
    return type(head) is LogitFusion and head.fusion not in WEIGHTED


class SharedLayout:
    """The rows of one fact at K: ``[K paraphrases] [K subject content-free, if a head needs them] [1 question
    content-free, if a head needs it]``, the same for every group, so every group has ``rows`` rows."""

    def __init__(self, heads: list[LogitFusion], k: int):
        self.heads, self.k = heads, k
        modes = {h.calibration for h in heads}
        self.subject = slice(k, 2 * k) if "subject" in modes else None
        start = 2 * k if self.subject else k
        self.question = slice(start, start + 1) if "question" in modes else None
        self.rows = start + (1 if self.question else 0)

    def prompts_of(self, group: dict) -> list[str]:
        rows = list(group["paraphrases"][: self.k])
        if self.subject:
            rows += content_free_prompts(dict(group, paraphrases=rows), "subject")
        if self.question:
            rows += content_free_prompts(group, "question")
        return rows

    def fuse(self, logits: torch.Tensor, weights: torch.Tensor | None = None,
             valid: torch.Tensor | None = None) -> torch.Tensor:
        """``logits [g, rows, V]``, ``weights [g, 1]`` (each group's head index) -> ``[g, V]``."""
        k = self.k
        scores = []
        for head in self.heads:
            if head.calibration == "none":
                scores.append(fuse_logits(logits[:, :k], head.fusion))
            else:
                free = self.subject if head.calibration == "subject" else self.question
                prior = logits[:, free].log_softmax(dim=-1)
                scores.append(fuse_logits(logits[:, :k], head.fusion, prior=prior, prior_floor=head.prior_floor))
        stacked = torch.stack(scores, dim=1)  # [g, H, V]
        index = weights[:, :1].long()[..., None].expand(-1, 1, stacked.shape[-1])  # [g, 1, V]
        return stacked.gather(1, index)[:, 0]


def shared_generate(decoder: SharedRowsDecoder, prompts, heads: list[LogitFusion], groups: list[dict],
                    k: int) -> list[list[dict]]:
    """Every head's records for ``groups`` cut to ``k`` paraphrases: ``[head][group]``, each as ``head.generate``
    writes it (``agreement`` not filled)."""
    if not isinstance(decoder, SharedRowsDecoder):
        raise TypeError("shared_generate needs a SharedRowsDecoder")
    for g in groups:
        if len(g["paraphrases"]) < k:
            raise ValueError(f"record {g['id']!r} has {len(g['paraphrases'])} paraphrases, fewer than K={k}")
    layout = SharedLayout(heads, k)
    items = [(g, p) for g in groups for p in layout.prompts_of(g)]
    encoded = prompt_batch(decoder, prompts, items)  # one row per distinct prompt
    n_heads, rows = len(heads), layout.rows
    device = decoder.device
    # group (fact f, head h) = index f * H + h; its rows continue from the fact's encoded rows f * rows + j
    rows_from = (torch.arange(len(groups), device=device)[:, None, None] * rows
                 + torch.arange(rows, device=device)[None, None, :]).expand(-1, n_heads, -1).reshape(-1)
    batch = PrefillBatch(
        input_ids=encoded.input_ids[rows_from], pad_mask=encoded.pad_mask[rows_from],
        position_ids=encoded.position_ids[rows_from], next_position=encoded.next_position[rows_from],
        gather=encoded.gather[rows_from], rows_per_group=rows, prefix_ids=encoded.prefix_ids)
    batch.rows_from, batch.encoded = rows_from, encoded
    head_index = torch.arange(n_heads, device=device, dtype=torch.float32).repeat(len(groups))[:, None]
    batch.weights = batch.step_weights = head_index
    gens = decoder.decode_n_tokens(batch, layout.fuse, layout.fuse)
    out: list[list[dict]] = [[] for _ in heads]
    for f, group in enumerate(groups):
        cut = dict(group, paraphrases=group["paraphrases"][:k])
        for h, head in enumerate(heads):
            out[h].append(head.record(cut, gens[f * n_heads + h], None, list(cut["paraphrases"])))
    return out
