"""Greedy decoding with a KV cache, batched, with a fusion rule applied to each step's logits.

gpt-fast's shape: :meth:`GreedyDecoder.prefill` encodes the prompts once, :meth:`decode_one_token` feeds one token
per row against the cache, :meth:`decode_n_tokens` loops until every group stopped. A *group* is what produces one
answer: ``n`` rows (one per paraphrase) for logit fusion, one row for ``origin``/``per_prompt``/flex. The fusion
rule maps the logits of a group's rows to one distribution; the chosen token is fed to every row of the group.
Finished groups are dropped from the batch and the cache, so a long answer does not keep short ones computing.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

from selfens_pl.fusion import no_fusion, token_logprob  # noqa: F401  (no_fusion: re-exported for heads and tests)

#: ``fuse(logits [g, n, V], weights [g, n] | None, valid [g, n] | None) -> [g, V]`` log-scores
#: (:mod:`selfens_pl.fusion`).
FuseFn = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]


@dataclass
class PrefillBatch:
    """Everything the prefill needs, already padded on the left.

    Attributes:
        input_ids: ``[r, s]`` token ids (padding = any id, masked out).
        pad_mask: ``[r, s]`` 1 for real tokens, 0 for padding; generated tokens are appended to it.
        position_ids: ``[r, s]`` positions of the prompt tokens.
        next_position: ``[r]`` position of the first generated token.
        gather: ``[r, k]`` indices in ``s`` whose logits feed the first generated token.
        attention_mask: ``None`` (causal + ``pad_mask``), a ``[r, 1, s, s]`` bool mask, or a ``BlockMask``.
        rows_per_group: ``n``; rows ``g*n .. g*n+n-1`` form group ``g``.
        weights: ``[g, n*k]`` fusion weights for the first token, ``None`` for unweighted rules.
        step_weights: ``[g, n]`` fusion weights for later tokens.
        valid: ``[g, n*k]`` bool, False where a ragged group was padded (first token); ``None``: all real.
        step_valid: ``[g, n]`` the same for later tokens.
        prefix_ids: ``[p]`` tokens every row starts with, encoded once and shared through the KV cache; then
            ``input_ids`` holds only what follows it, ``position_ids`` count from ``p`` and ``pad_mask`` is
            ``[r, p + s]`` (prefix columns included).
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

    @property
    def mean_prob(self) -> float | None:
        """Mean token probability of the answer (``None`` for an empty answer): a confidence that costs nothing."""
        import math

        return sum(math.exp(lp) for lp in self.logprobs) / len(self.logprobs) if self.logprobs else None

    @property
    def prediction(self) -> str:
        """The answer: the first line of the generation, stripped."""
        return self.text.strip().split("\n")[0].strip()


def decoder_stack(model):
    """The transformer body of a causal LM (embeddings + layers + final norm), without the LM head."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model.base_model


def lm_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """``hidden [..., d]`` -> float32 logits ``[..., V]``: the LM head and the model's final logit soft-capping
    (e.g. Gemma 2), as the model's own forward applies them."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def gathered_logits(model, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``hidden [r, s, d]`` at ``index [r, k]`` -> logits ``[r, k, V]``: only where needed, never the whole prompt."""
    return lm_logits(model, torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[-1])))


def _cache_kwarg(model) -> str:
    """transformers 5.24 renamed ``past_key_values`` to ``cache``; support both."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class GreedyDecoder:
    """Greedy decoding for a Hugging Face causal LM (``[r, s]`` in, one ``Generation`` per group out)."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 20, stop: str | None = "\n", share_prefix: bool = True):
        if max_new_tokens < 1:
            raise ValueError(f"--model.max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.stop = stop or None
        #: Encode the instruction + few-shot prefix once per batch and share its KV cache across rows.
        self.share_prefix = share_prefix
        self.base = decoder_stack(model)
        self.lm_head = model.get_output_embeddings()
        self.cache_kw = _cache_kwarg(self.base)
        self.eos_ids = self._eos_ids()
        self.stats = DecodeStats()

    def _eos_ids(self) -> set[int]:
        ids = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config, self.tokenizer):
            eos = getattr(source, "eos_token_id", None)
            ids.update([eos] if isinstance(eos, int) else (eos or []))
        return ids

    @property
    def device(self) -> torch.device:
        # Where the prompts go: the input embedding's device. Under --model.device_map it may differ from the LM
        # head's, whose weight may even sit on the meta device between calls (offloaded).
        from selfens_pl.parallel import execution_device

        return execution_device(self.model.get_input_embeddings())

    @property
    def context_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        self.stats.forward_calls += 1
        self.stats.tokens_fed += input_ids.numel()
        out = self.base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=True, **{self.cache_kw: cache})
        return out.last_hidden_state

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    @torch.inference_mode()
    def prefill(self, batch: PrefillBatch, cache) -> torch.Tensor:
        """Encode the prompts once. Returns logits ``[r, k, V]`` at ``batch.gather``."""
        mask = batch.pad_mask if batch.attention_mask is None else batch.attention_mask
        self.stats.prompt_tokens += int(batch.pad_mask.sum())
        if batch.prefix_ids is not None:  # one row of prefix, then every row continues from a copy of its cache
            p = batch.prefix_ids.shape[0]
            self._forward(batch.prefix_ids[None], None, torch.arange(p, device=self.device)[None], cache)
            cache.batch_repeat_interleave(batch.input_ids.shape[0])
            self.stats.prompt_tokens -= (batch.input_ids.shape[0] - 1) * p
        hidden = self._forward(batch.input_ids, mask, batch.position_ids, cache)
        return gathered_logits(self.model, hidden, batch.gather)

    @torch.inference_mode()
    def decode_one_token(self, cache, tokens: torch.Tensor, positions: torch.Tensor, pad_mask: torch.Tensor):
        """Feed ``tokens [r]`` at ``positions [r]`` (``pad_mask [r, past+1]``). Returns logits ``[r, V]``."""
        hidden = self._forward(tokens[:, None], pad_mask, positions[:, None], cache)
        return lm_logits(self.model, hidden[:, -1])

    def _stopped(self, gen: Generation, token: int, logprob: float) -> bool:
        if token in self.eos_ids:
            return True
        gen.token_ids.append(token)
        gen.logprobs.append(logprob)
        gen.text = self.tokenizer.decode(gen.token_ids, skip_special_tokens=True)
        # A stop string only counts once the answer has started: a leading newline is not an empty answer.
        return self.stop is not None and self.stop in gen.text.lstrip()

    @torch.inference_mode()
    def decode_n_tokens(self, batch: PrefillBatch, fuse_first: FuseFn, fuse_step: FuseFn) -> list[Generation]:
        """Prefill, then greedy decoding until every group hit EOS, the stop string or ``max_new_tokens``."""
        n = batch.rows_per_group
        rows = batch.input_ids.shape[0]
        if rows % n:
            raise ValueError(f"{rows} rows do not split into groups of {n}")
        groups = rows // n
        cache = self.new_cache()
        logits = self.prefill(batch, cache)  # [r, k, V]
        fused = fuse_first(logits.reshape(groups, -1, logits.shape[-1]), batch.weights, batch.valid)  # [g, V]
        gens = [Generation() for _ in range(groups)]
        active = torch.arange(groups, device=self.device)  # original index of each live group
        pad_mask, positions = batch.pad_mask, batch.next_position
        step_weights, step_valid = batch.step_weights, batch.step_valid
        for step in range(self.max_new_tokens):
            tokens = fused.argmax(-1)  # [g_live]
            logprobs = token_logprob(fused, tokens).tolist()
            keep = [i for i, t in enumerate(tokens.tolist())
                    if not self._stopped(gens[int(active[i])], t, logprobs[i])]
            if not keep or step == self.max_new_tokens - 1:
                break
            if len(keep) < len(active):  # drop finished groups from every per-row tensor and the cache
                live = torch.tensor(keep, device=self.device)
                row_idx = (live[:, None] * n + torch.arange(n, device=self.device)).reshape(-1)
                cache.batch_select_indices(row_idx)
                active, tokens = active[live], tokens[live]
                pad_mask, positions = pad_mask[row_idx], positions[row_idx]
                step_weights = None if step_weights is None else step_weights[live]
                step_valid = None if step_valid is None else step_valid[live]
            pad_mask = torch.cat([pad_mask, pad_mask.new_ones(pad_mask.shape[0], 1)], dim=1)
            step_logits = self.decode_one_token(cache, tokens.repeat_interleave(n), positions, pad_mask)
            positions = positions + 1
            fused = fuse_step(step_logits.reshape(len(active), n, -1), step_weights, step_valid)
        return gens


def left_pad(sequences: list[list[int]], pad_id: int, device, multiple_of: int = 1):
    """Left-pad token lists. Returns ``input_ids [r, s]`` and ``pad_mask [r, s]`` (s rounded up to a multiple)."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("cannot pad an empty token sequence")
    width = max(len(s) for s in sequences)
    width = -(-width // multiple_of) * multiple_of
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[i, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0
