"""The self-ensemble attention mask (one definition, two backends) and the attention function that runs it.

Every token carries a *segment id*:

* ``PREFIX`` (-1): a shared prefix (instruction + few-shot), seen by every later token of its block;
* ``0 .. N-1``: paraphrase (member) ``i``, a segment isolated from the others;
* ``GENERATED``: tokens produced by decoding, which see everything before them (this is the fusion);
* ``PAD`` (-2): left padding, seen by nobody.

With few-shot blocks (:mod:`selfens_pl.data.demos`) every token also carries a *block id*: ``b`` for block ``b``'s
prefix and for the question segments asked with block ``b``; generated tokens and padding carry any block (they
never read it). Without block ids every token is in block 0.

``allowed(q, k)`` = ``k <= q`` and ``k`` is not padding and (``q`` is generated, or ``k`` is in ``q``'s block and
(``k`` is prefix or in ``q``'s segment)); a padding query sees only itself so that no row of the mask is fully
blocked (a fully blocked row makes softmax produce NaN). So block ``b``'s prefix sees only itself (causally), a
question of block ``b`` sees that prefix and its own earlier tokens, and generated tokens see every block. Without
block ids (every token in block 0) the rule is the one-prefix rule: ``k`` is prefix, or same segment, or ``q`` is
generated.

The ``flex`` backend turns this rule into a ``BlockMask`` (``create_block_mask``) for ``flex_attention``; the
``dense`` backend materialises the same rule as a ``[b, 1, s, s]`` boolean tensor for SDPA. The registered
attention implementation :data:`ATTN_IMPLEMENTATION` sends a ``BlockMask`` to FlexAttention and anything else
(4-D bool masks, the 2-D padding masks of ordinary decoding) to SDPA, so one loaded model serves all heads.
"""

from __future__ import annotations

import torch

from selfens_pl.errors import UserError

PREFIX = -1
PAD = -2
GENERATED = 1 << 20

ATTN_IMPLEMENTATION = "selfens"
FLEX_BLOCK = 128  # FlexAttention's block size; flex prefill lengths are bucketed to multiples of it


def allowed(seg_q: torch.Tensor, seg_k: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor,
            block_q: torch.Tensor | None = None, block_k: torch.Tensor | None = None) -> torch.Tensor:
    """The mask rule on broadcastable tensors of segment ids, positions in the sequence and (optionally) block ids
    (``None``: every token in block 0)."""
    own = (seg_k == PREFIX) | (seg_k == seg_q)
    if block_q is not None:
        own = own & (block_k == block_q)
    visible = own | (seg_q == GENERATED)
    real = (kv_idx <= q_idx) & (seg_k != PAD) & visible
    return real | ((seg_q == PAD) & (q_idx == kv_idx))


def dense_mask(segment_ids: torch.Tensor, block_ids: torch.Tensor | None = None) -> torch.Tensor:
    """``segment_ids [b, s]`` (and ``block_ids [b, s]``, or None) -> boolean mask ``[b, 1, s, s]`` (True = may
    attend)."""
    s = segment_ids.shape[1]
    idx = torch.arange(s, device=segment_ids.device)
    seg_q = segment_ids[:, :, None]
    seg_k = segment_ids[:, None, :]
    blocks = (None, None) if block_ids is None else (block_ids[:, :, None], block_ids[:, None, :])
    return allowed(seg_q, seg_k, idx[:, None], idx[None, :], *blocks)[:, None]


def block_mask(segment_ids: torch.Tensor, compile_mask: bool = False, q_offset: int = 0,
               block_ids: torch.Tensor | None = None):
    """``segment_ids [b, s]`` (and ``block_ids [b, s]``, or None) -> a FlexAttention ``BlockMask`` over
    ``[b, heads (broadcast), s - q_offset, s]``.

    ``q_offset``: the first ``q_offset`` keys are already in the KV cache (a shared prefix) and are not queries.
    Built once per batch and reused by every layer of the prefill. ``compile_mask`` builds it with one compiled
    ``create_block_mask`` per process (:meth:`FlexSettings.mask_builder`), reused by every batch: only a new bucketed
    shape compiles anew, and after the second one dynamo keeps a dynamic-shape version.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    b, s = segment_ids.shape

    # Two closures, not one that branches on ``block_ids is None``: with that one, compiled flex_attention on CPU
    # (torch 2.13 inductor) failed to compile its kernel (CppCompileError) even without blocks; the one-block
    # closure stays the one it always was.
    def mask_mod(batch, head, q_idx, kv_idx):
        q = q_idx + q_offset
        return allowed(segment_ids[batch, q], segment_ids[batch, kv_idx], q, kv_idx)

    def block_mask_mod(batch, head, q_idx, kv_idx):
        q = q_idx + q_offset
        return allowed(segment_ids[batch, q], segment_ids[batch, kv_idx], q, kv_idx, block_ids[batch, q],
                       block_ids[batch, kv_idx])

    build = FlexSettings.mask_builder() if compile_mask else create_block_mask
    return build(mask_mod if block_ids is None else block_mask_mod, b, None, s - q_offset, s,
                 device=segment_ids.device)


class FlexSettings:
    """The compiled ``flex_attention`` and mask builder, each compiled once per process. Whether a call runs compiled
    or eager (the exact reference, slow) is the caller's (FlexFusion's ``compile``), never process state."""

    _compiled = None
    _mask_builder = None

    @classmethod
    def function(cls, compile: bool = True):
        from torch.nn.attention.flex_attention import flex_attention

        if not compile:
            return flex_attention
        if cls._compiled is None:
            # Compiled once per process; lengths are bucketed (FLEX_BLOCK) so few shapes exist, and from the second
            # shape on dynamo compiles one dynamic-shape kernel that every later shape reuses.
            cls._compiled = torch.compile(flex_attention)
        return cls._compiled

    @classmethod
    def mask_builder(cls):
        """``create_block_mask`` compiled once per process (not once per call, as its ``_compile`` flag did)."""
        from torch.nn.attention.flex_attention import create_block_mask

        if cls._mask_builder is None:
            cls._mask_builder = torch.compile(create_block_mask)
        return cls._mask_builder


def selfens_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention for ``query [b, hq, q, d]``, ``key/value [b, hkv, k, d]`` -> ``([b, q, hq, d], None)``.
    ``flex_compile`` (from the model call's keyword arguments): a BlockMask runs compiled flex (default) or eager."""
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    flex_compile = kwargs.pop("flex_compile", True)
    if not isinstance(attention_mask, BlockMask):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if dropout:
        raise UserError("the flex backend runs inference only: attention dropout must be 0")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # expand GQA heads explicitly: flex's enable_gqa wants power-of-two head counts on some kernels
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    out = FlexSettings.function(flex_compile)(query, key, value, block_mask=attention_mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def register_attention() -> None:
    """Register :data:`ATTN_IMPLEMENTATION` with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, selfens_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
