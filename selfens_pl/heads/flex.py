"""``FlexFusion``: attention-level self-ensemble. All paraphrases of a group in ONE sequence, one prefill, one
cached decode stream.

Layouts (segments in sequence order):

* ``concat``: N full prompts ``[prefix + Q_0] [prefix + Q_1] ...`` (the reference code's WebQA format);
* ``shared_prefix``: ``[prefix] [Q_0] [Q_1] ...``: instruction + few-shot encoded once.

The mask (:mod:`selfens_pl.engine.attention`) keeps paraphrases isolated during the prefill; generated tokens attend to
everything, which is where the paraphrases fuse. With ``positions="aligned"`` every paraphrase restarts right after
the shared prefix (at 0 in ``concat``), so each one is encoded exactly as if it were asked alone; generated tokens
continue after the longest one. ``"sequential"`` (the reference code's) numbers the whole sequence 0..L-1.

The first token comes from the final-token logits of every paraphrase, fused with a LogitFusion rule
(``first_token="fused"``), or from the last paraphrase alone (``"last_segment"``, the reference code's behaviour). With
``calibration=subject|question`` the fused first token is calibrated (:mod:`selfens_pl.engine.fusion`): the content-free
prompts (:mod:`selfens_pl.data.content_free`) are prefilled once as independent rows beside the batch (one per paraphrase
for ``subject``, one per group for ``question``; no decoding; each encoded as if asked alone, whatever
``positions``), and their final-token log-probabilities are subtracted from the paraphrases' final-token logits.
Later tokens come from the one fused sequence, uncalibrated.

Few-shot blocks (``--data.demo_blocks M``, :mod:`selfens_pl.data.demos`): the sequence holds one segment per *member*
(paraphrase x block, block-major, ``K x M``). ``concat``: segment ``j`` is member ``j``'s full prompt (its block's
prefix + its question). ``shared_prefix``: ``[prefix_0] [Q_0 .. Q_{K-1}] [prefix_1] [Q_0 .. Q_{K-1}] ...``, each
block's prefix once, followed by its questions; the mask's block ids (:mod:`selfens_pl.engine.attention`) let a question see
its own block's prefix only and a block's prefix see only itself, so with ``aligned`` positions (each prefix from 0,
its questions right after it) every member is encoded exactly as if asked alone with its block. The first token fuses
the final-token logits of all ``K x M`` members (``last_segment``: the last member's). With ``--model.share_prefix``
block 0's prefix is still encoded once per batch through the KV cache (the blocks ``1..M-1`` are the group's own and
stay in its row); its cached keys carry block 0, so only block 0's questions and generated tokens see them.
Calibration and the ``weighted_*`` rules are defined for block 0 only: with blocks they raise, naming the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from selfens_pl.data.content_free import CALIBRATIONS, Calibration, content_free_prompts
from selfens_pl.data.demos import num_blocks
from selfens_pl.data.group import Group
from selfens_pl.engine.attention import FLEX_BLOCK, GENERATED, PAD, PREFIX, block_mask, dense_mask
from selfens_pl.engine.batches import check_context, prompt_batch, stop_at_end_of_turn
from selfens_pl.engine.decoding import EncodedPrompts, PrefillBatch, pad_token_id
from selfens_pl.engine.fusion import RULES, WEIGHTED, FusionMethod, check_prior_floor, fuse_logits, no_fusion
from selfens_pl.engine.members import group_valid
from selfens_pl.errors import UserError
from selfens_pl.heads.base import FusionHead, confidence_weights
from selfens_pl.heads.logit import check_no_blocks, padded


@dataclass
class FusedLayout:
    """One group as one sequence: token ids, segment ids, block ids and positions (all length ``L``), the segment
    ends ``[K * M]`` (one per member, block-major) and the position of the first generated token."""

    tokens: list[int]
    segments: list[int]
    positions: list[int]
    ends: list[int]
    next_position: int
    blocks: list[int]


def build_layout(prompts, paraphrases: list[str], layout: str, positions: str,
                 group: Group | None = None) -> FusedLayout:
    """Lay out one group segment by segment with exact offsets (never decode and re-tokenise).

    ``group``: whose few-shot blocks (``group["blocks"]``) the ``paraphrases`` are also asked with; ``None`` or a
    group without blocks: block 0 only. Member ``j = b * K + i`` (paraphrase ``i``, block ``b``) is segment ``j``.
    """
    tokens, segments, blocks, pos, ends = [], [], [], [], []
    k = len(paraphrases)
    next_position = 0
    for b in range(num_blocks(group) if group is not None else 1):
        block_prompts = prompts.for_block(group, b)
        prefix = block_prompts.prefix_ids
        if layout == "shared_prefix":
            start = len(tokens) if positions == "sequential" else 0
            tokens += prefix
            segments += [PREFIX] * len(prefix)
            blocks += [b] * len(prefix)
            pos += list(range(start, start + len(prefix)))
        for i, paraphrase in enumerate(paraphrases):
            seg = block_prompts.question_ids(paraphrase)
            if layout == "concat":
                seg = prefix + seg
            start = len(prefix) if layout == "shared_prefix" else 0
            if positions == "sequential":
                start = len(tokens)
            tokens += seg
            segments += [b * k + i] * len(seg)
            blocks += [b] * len(seg)
            pos += list(range(start, start + len(seg)))
            ends.append(len(tokens) - 1)
            next_position = max(next_position, pos[-1] + 1)
    if positions == "sequential":
        next_position = len(tokens)
    return FusedLayout(tokens, segments, pos, ends, next_position, blocks)


class FlexFusion(FusionHead):
    """Attention-level fusion with a FlexAttention block mask (``flex``) or the same mask dense through SDPA."""

    training_loss = "flex"

    def __init__(
        self,
        layout: Literal["concat", "shared_prefix"] = "concat",
        positions: Literal["aligned", "sequential"] = "aligned",
        first_token: Literal["fused", "last_segment"] = "fused",
        fusion: FusionMethod = "avg",
        backend: Literal["auto", "flex", "dense"] = "auto",
        compile: bool = True,
        calibration: Calibration = "none",
        prior_floor: float = 0.1,
        agreement: bool = False,
    ):
        """
        Args:
            layout: ``concat`` (N full prompts) or ``shared_prefix`` (instruction + few-shot once, then N questions).
            positions: ``aligned`` (each paraphrase positioned as if alone) or ``sequential`` (the reference code's).
            first_token: ``fused`` (combine every paraphrase's final-token logits) or ``last_segment`` (the reference code's).
            fusion: LogitFusion rule for the fused first token (``weighted_*`` read the groups' confidences).
            backend: ``flex`` (BlockMask + flex_attention), ``dense`` (bool mask + SDPA), ``auto`` (flex on CUDA,
                dense elsewhere). A backend that cannot run raises; there is no silent fallback.
            compile: compile ``flex_attention`` (needed for speed; eager flex is the slow exact reference). This
                head's own setting: it travels with each batch it builds (``PrefillBatch.flex_compile``).
            calibration: calibrate the fused first token: ``none``, ``subject`` (MyriadLAMA: the fact's subject
                replaced by ``N/A`` in each paraphrase) or ``question`` (the question replaced by ``N/A``); needs
                ``first_token=fused``. Costs one prefill of the content-free rows per batch.
            prior_floor: with calibration, content-free probabilities below this share of their top one count as
                that floor (0: plain division; 1: no calibration).
            agreement: also answer every paraphrase on its own (a per_prompt pass: its cost) to fill each record's
                ``agreement``.
        """
        super().__init__()
        choices = {"layout": (layout, ("concat", "shared_prefix")), "positions": (positions, ("aligned", "sequential")),
                   "first_token": (first_token, ("fused", "last_segment")), "backend": (backend, ("auto", "flex", "dense")),
                   "fusion": (fusion, RULES), "calibration": (calibration, CALIBRATIONS)}
        for flag, (value, allowed_values) in choices.items():
            if value not in allowed_values:
                raise UserError(f"--model.head.init_args.{flag}={value!r}: choose one of {', '.join(allowed_values)}")
        self.layout, self.positions, self.first_token = layout, positions, first_token
        self.fusion, self.backend, self.compile = fusion, backend, compile
        if calibration != "none" and first_token != "fused":
            raise UserError(f"--model.head.init_args.calibration={calibration!r} calibrates the fused first token: "
                             f"it needs first_token=fused, not {first_token!r}")
        self.calibration, self.prior_floor = calibration, check_prior_floor(prior_floor)
        self.agreement = agreement

    def resolve_backend(self, device: torch.device) -> str:
        if self.backend == "auto":
            return "flex" if device.type == "cuda" else "dense"
        return self.backend

    def build_batch(self, decoder, prompts, groups) -> PrefillBatch:
        """Lay out every group, left-pad to one length (a multiple of the flex block for ``flex``), build the mask.

        With ``shared_prefix`` and a decoder that shares prefixes, the prefix (block 0's) is encoded once for the
        whole batch (its KV cache copied to every row) and the rows hold only what follows it; the mask then covers
        ``[g, 1, s, p + s]``: queries are the row tokens, keys the prefix and the row tokens. ``gather [g, k]``: each
        group's member ends (``k`` = the most members of a group; ragged groups repeat their last end, masked by
        ``valid``). Block ids enter the mask only where a ``shared_prefix`` group has extra blocks.
        """
        device = decoder.device
        backend = self.resolve_backend(device)
        stop_at_end_of_turn(decoder, prompts)
        layouts = [build_layout(prompts, g["paraphrases"], self.layout, self.positions, g) for g in groups]
        for group, lay in zip(groups, layouts):
            check_context(decoder, lay.next_position, group["id"], what="fused sequence (highest position)")
        p = len(prompts.prefix_ids) if self.layout == "shared_prefix" and decoder.share_prefix else 0
        width = max(len(lay.tokens) - p for lay in layouts)
        if backend == "flex":  # bucket lengths so compiled kernels are reused across batches
            width = -(-width // FLEX_BLOCK) * FLEX_BLOCK
        g = len(groups)
        pad = pad_token_id(decoder.tokenizer)
        input_ids = torch.full((g, width), pad, dtype=torch.long)
        segments = torch.full((g, width), PAD, dtype=torch.long)
        blocks = torch.zeros((g, width), dtype=torch.long)
        positions = torch.zeros((g, width), dtype=torch.long)
        k = max(len(lay.ends) for lay in layouts)  # ragged groups: repeat the last end, masked out by ``valid``
        gather = torch.zeros((g, k), dtype=torch.long)
        for row, lay in enumerate(layouts):
            off = width - (len(lay.tokens) - p)
            input_ids[row, off:] = torch.tensor(lay.tokens[p:])
            segments[row, off:] = torch.tensor(lay.segments[p:])
            blocks[row, off:] = torch.tensor(lay.blocks[p:])
            positions[row, off:] = torch.tensor(lay.positions[p:])
            ends = lay.ends + lay.ends[-1:] * (k - len(lay.ends))
            gather[row] = torch.tensor(ends) - p + off
        # key-side segment ids: the shared prefix (in the cache) followed by the rows
        keys = torch.cat([torch.full((g, p), PREFIX, dtype=torch.long), segments], dim=1).to(device)
        key_blocks = None  # the cached prefix is block 0's
        if self.layout == "shared_prefix" and any(num_blocks(group) > 1 for group in groups):
            key_blocks = torch.cat([torch.zeros((g, p), dtype=torch.long), blocks], dim=1).to(device)
        if backend == "flex":
            mask = block_mask(keys, compile_mask=device.type == "cuda", q_offset=p, block_ids=key_blocks)
        else:
            mask = dense_mask(keys, key_blocks)[:, :, p:]
        batch = PrefillBatch(
            input_ids=input_ids.to(device),
            pad_mask=(keys != PAD).long(),
            position_ids=positions.to(device),
            next_position=torch.tensor([lay.next_position for lay in layouts], device=device),
            gather=gather.to(device),
            attention_mask=mask,
            rows_per_group=1,
            prefix_ids=torch.tensor(prompts.prefix_ids, dtype=torch.long, device=device) if p else None,
            flex_compile=self.compile if backend == "flex" else None,
        )
        if any(len(lay.ends) < k for lay in layouts):
            batch.valid = group_valid([len(lay.ends) for lay in layouts], k, device)
        if self.fusion in WEIGHTED and self.first_token == "fused":
            batch.weights = confidence_weights(groups, self.fusion, device, k)
        return batch

    def fuse_first(self, logits: torch.Tensor, weights: torch.Tensor | None = None,
                   valid: torch.Tensor | None = None, prior: torch.Tensor | None = None) -> torch.Tensor:
        """``logits [g, N, V]`` at each member's final token -> ``[g, V]`` log-scores. With ragged groups the
        last slot of a short group repeats its last member, so ``last_segment`` reads the right one.
        ``prior [g, N | 1, V]``: content-free log-probabilities (calibration)."""
        if self.first_token == "last_segment":
            return logits[:, -1]
        return fuse_logits(logits, self.fusion, weights, valid, prior, self.prior_floor)

    def content_free_prior(self, decoder, prompts, groups: list[Group], k: int) -> torch.Tensor:
        """``[g, k | 1, V]`` final-token log-probabilities of the groups' content-free prompts, from one prefill of
        independent rows (no decoding). ``k``: paraphrase slots per group (``subject``: one prompt per slot)."""
        m = k if self.calibration == "subject" else 1
        items = [(g, p) for g in groups for p in padded(content_free_prompts(g, self.calibration), m)]
        logits = decoder.prefill(prompt_batch(decoder, prompts, items))  # [g * m, 1, V]
        return logits.reshape(len(groups), m, -1).log_softmax(dim=-1)

    @property
    def method(self) -> str:  # type: ignore[override]
        name = f"flex_{self.layout}"
        return name if self.calibration == "none" else f"{name}_calibrated"

    @property
    def label(self) -> str:  # type: ignore[override]
        """The method, plus the first-token rule when it is not avg (the sweep's run name)."""
        return self.method if self.fusion == "avg" else \
            self.method.replace(f"flex_{self.layout}", f"flex_{self.layout}_{self.fusion}")

    def decoded_rows(self, members: int) -> int:
        return 1  # every member in one fused sequence

    def fused_batch(self, decoder, prompts, groups: list[Group]):
        """``(batch, fuse_first)``: the groups' fused sequences (:meth:`build_batch`) and the first-token rule over
        their members' final-token logits, calibrated when asked (one prefill of the content-free rows)."""
        self.check_groups(groups)
        check_no_blocks(self, groups)
        batch = self.build_batch(decoder, prompts, groups)
        if self.calibration == "none":
            return batch, self.fuse_first
        prior = self.content_free_prior(decoder, prompts, groups, batch.gather.shape[1])

        def fuse_first(logits, weights=None, valid=None):
            return self.fuse_first(logits, weights, valid, prior)

        return batch, fuse_first

    def generate(self, decoder, prompts, groups: list[Group]):
        batch, fuse_first = self.fused_batch(decoder, prompts, groups)
        gens = decoder.decode_n_tokens(batch, fuse_first, no_fusion)
        records = [self.record(g, gen, None, list(g["paraphrases"])) for g, gen in zip(groups, gens)]
        return self.add_agreement(decoder, prompts, groups, records)

    @torch.inference_mode()
    def encode_fused(self, decoder, prompts, groups: list[Group]) -> EncodedPrompts:
        """The groups' fused sequences prefilled once (one row each), kept to score or decode from: the row's
        ``logits [V]`` are the fused first-token log-scores (:meth:`fuse_first`), so decoding the row with no fusion
        is :meth:`generate`'s answer, and scoring a continuation after it (``score_continuations``) reads its first
        token under the fused distribution and every later one from the one sequence, attending to every member and
        to its own earlier tokens as a generated token does."""
        batch, fuse_first = self.fused_batch(decoder, prompts, groups)
        cache = decoder.new_cache(batch.rows, batch.pad_mask.shape[1])
        logits = decoder.prefill(batch, cache)  # [g, k, V] at every member's final token
        first = fuse_first(logits, batch.weights, batch.valid)  # [g, V] fused log-scores
        return EncodedPrompts(cache, first.float(), batch.pad_mask, batch.next_position)

    def score_options(self, decoder, prompts, groups: list[Group],
                      continuations: list[list[list[int]]]) -> list[list[list[float]]]:
        """``[g][O][L_o]``: the log-probability of each token of group g's continuation ``continuations[g][o]``
        (token ids) after its fused sequence, teacher forced (:meth:`encode_fused`: one prefill per batch; the
        options of a group packed after it, each positioned where a generated answer starts). Scoring
        :meth:`generate`'s own answer gives its token log-probabilities."""
        encoded = self.encode_fused(decoder, prompts, groups)
        return decoder.score_continuations(encoded, list(range(len(groups))), continuations)

def mask_for_picture(prompts, paraphrases: list[str], layout: str, positions: str, generated: int = 3,
                     group: Group | None = None):
    """The dense mask of one group (asked with ``group``'s few-shot blocks, if any) plus ``generated`` decoded
    tokens, for drawing. Returns ``(mask [L, L], layout)``."""
    lay = build_layout(prompts, paraphrases, layout, positions, group)
    segments = torch.tensor(lay.segments + [GENERATED] * generated)[None]
    blocks = torch.tensor(lay.blocks + [0] * generated)[None] if max(lay.blocks) > 0 else None
    return dense_mask(segments, blocks)[0, 0], lay
