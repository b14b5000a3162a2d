"""What the decoder takes and gives: a batch of prompts to encode (:class:`PrefillBatch`), prompts already encoded
(:class:`EncodedPrompts`), one answer (:class:`Generation`) and the work done (:class:`DecodeStats`).

Plain data, apart from the decoder (:mod:`selfens_pl.engine.decoding`, which re-exports them), so heads, the sweep and tests
can build and read them without the decoding loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from selfens_pl.engine.kv_cache import StaticKVCache


@dataclass
class PrefillBatch:
    """Everything the prefill needs, already padded on the left.

    Attributes:
        input_ids: ``[r, s]`` token ids (padding = any id, masked out).
        pad_mask: ``[r, p + s]`` 1 for real tokens (the shared prefix's ``p`` columns included), 0 for padding.
        position_ids: ``[r, s]`` positions of the prompt tokens.
        next_position: ``[r]`` position of the first generated token.
        gather: ``[r, k]`` indices in ``s`` whose logits feed the first generated token.
        attention_mask: ``None`` (causal + ``pad_mask``), a ``[r, 1, s, p + s]`` bool mask, or a ``BlockMask``.
        rows_per_group: ``n``; rows ``g*n .. g*n+n-1`` form group ``g``.
        weights: ``[g, n*k]`` fusion weights for the first token, ``None`` for unweighted rules.
        step_weights: ``[g, n]`` fusion weights for later tokens.
        valid: ``[g, n*k]`` bool, False where a ragged group was padded (first token); ``None``: all real.
        step_valid: ``[g, n]`` the same for later tokens.
        prefix_ids: ``[p]`` tokens every row starts with, encoded once and shared through the KV cache; then
            ``input_ids`` holds only what follows it and ``position_ids`` count from ``p``. Or ``[P, p]``: ``P``
            distinct prefixes (few-shot blocks, :mod:`selfens_pl.data.demos`), left-padded, each encoded once and copied
            to the rows that start with it (``prefix_rows``); a row's positions then count from its own prefix's
            length and ``pad_mask``'s first ``p`` columns are its prefix's ``prefix_mask``.
        prefix_mask: ``[P, p]`` 1 for the real tokens of each of several prefixes (``None`` with one prefix).
        prefix_rows: ``[r]`` the prefix (row of ``prefix_ids``) each row starts with (``None`` with one prefix).
        flex_compile: with a ``BlockMask``: run ``flex_attention`` compiled (True) or eager (False), the head's own
            setting (FlexFusion's ``compile``), handed to every layer's attention in this prefill; ``None``: no say
            (the attention's default, compiled).
    """

    input_ids: torch.Tensor
    pad_mask: torch.Tensor
    position_ids: torch.Tensor
    next_position: torch.Tensor
    gather: torch.Tensor
    attention_mask: object = None
    rows_per_group: int = 1
    weights: torch.Tensor | None = None
    step_weights: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    step_valid: torch.Tensor | None = None
    prefix_ids: torch.Tensor | None = None
    prefix_mask: torch.Tensor | None = None
    prefix_rows: torch.Tensor | None = None
    flex_compile: bool | None = None
    #: Prompts already encoded (:meth:`GreedyDecoder.encode`): the prefill copies row ``rows_from[i]`` of their
    #: cache and logits into row ``i`` instead of running the model (``input_ids`` is then ``[r, 0]``).
    source: EncodedPrompts | None = None
    rows_from: torch.Tensor | None = None

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix_ids is None else int(self.prefix_ids.shape[-1])

    @property
    def rows(self) -> int:
        return int(self.pad_mask.shape[0])


@dataclass
class EncodedPrompts:
    """Prompts encoded once (:meth:`GreedyDecoder.encode`), to decode or score from as often as needed: every
    fused rule, every subset of a group's members and every candidate answer reuses the same prefill.

    Attributes:
        cache: keys/values of the ``u`` prompts, ``width`` columns (the prompt only).
        logits: ``[u, V]`` float32 next-token logits at each prompt's last token.
        pad_mask: ``[u, width]`` 1 for real prompt columns (shared prefixes included).
        next_position: ``[u]`` position of each prompt's first generated token.
    """

    cache: StaticKVCache
    logits: torch.Tensor
    pad_mask: torch.Tensor
    next_position: torch.Tensor

    @property
    def width(self) -> int:
        return int(self.pad_mask.shape[1])

    def batch(self, rows_from: torch.Tensor, rows_per_group: int = 1) -> PrefillBatch:
        """A batch whose row ``i`` continues encoded prompt ``rows_from[i]`` (repeats allowed): decoding it runs no
        prefill."""
        return PrefillBatch(
            input_ids=rows_from.new_zeros((len(rows_from), 0)), pad_mask=self.pad_mask[rows_from],
            position_ids=rows_from.new_zeros((len(rows_from), 0)), next_position=self.next_position[rows_from],
            gather=rows_from.new_zeros((len(rows_from), 1)), rows_per_group=rows_per_group, source=self,
            rows_from=rows_from)


@dataclass
class DecodeStats:
    """Work done, for tests and benchmarks: a prompt token counted twice means it was recomputed."""

    forward_calls: int = 0
    tokens_fed: int = 0
    prompt_tokens: int = 0


@dataclass
class Generation:
    """One answer: its tokens, their text, and each token's log-probability under the fused distribution."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    #: ``logprobs[i]``: log-probability of ``token_ids[i]`` under the (fused) distribution it was picked from.
    logprobs: list[float] = field(default_factory=list)
    #: Why it ended: ``"eos"`` (the EOS token, not kept in ``token_ids``), ``"stop"`` (the stop string, kept: it is
    #: inside the last token) or ``None`` (``max_new_tokens``).
    end: str | None = None
    #: The EOS token id that ended it (``end == "eos"``).
    eos_token: int | None = None

    @property
    def continuation(self) -> list[int]:
        """The answer's tokens through its end: ``token_ids``, plus the EOS token when EOS ended it (what answer-level
        rescoring scores: the answer and that it stops there)."""
        return self.token_ids + ([self.eos_token] if self.end == "eos" else [])

    @property
    def prediction(self) -> str:
        """The answer: the first line of the generation, stripped."""
        return self.text.strip().split("\n")[0].strip()

    @property
    def mean_prob(self) -> float | None:
        """Mean token probability of the answer (``None`` for an empty answer): a confidence that costs nothing."""
        return sum(math.exp(lp) for lp in self.logprobs) / len(self.logprobs) if self.logprobs else None
