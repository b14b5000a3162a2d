"""Greedy decoding with a static KV cache, batched, a fusion rule applied to each step's logits.

gpt-fast's shape: :meth:`GreedyDecoder.prefill` encodes the prompts once into a :class:`StaticKVCache`,
:meth:`GreedyDecoder.decode_one_token` feeds one token per row against it, :meth:`GreedyDecoder.decode_n_tokens`
loops until every group stopped. A *group* is what produces one answer: ``n`` rows (one per paraphrase) for logit
fusion, one row for ``origin``/``per_prompt``/flex. The fusion rule maps the logits of a group's rows to one
distribution (:mod:`selfens_pl.engine.fusion`); the chosen token is fed to every row of the group.

Shapes stay fixed while a batch decodes: the cache holds ``prompt width + max_new_tokens`` key positions, each
step writes one column and reads the whole cache under a ``[rows, 1, 1, length]`` mask, and a finished group stays
in the batch. With ``compile`` on, the step (model forward + LM head) and the fusion + argmax are compiled with
``torch.compile`` (CUDA graphs on CUDA), only token ids and their log-probabilities reach the host, lengths are
bucketed to :data:`LENGTH_BUCKET` and group counts to powers of two, and caches are pooled per shape so compiled
kernels and graphs are reused across batches (the pool keeps ``cache_lengths`` lengths, least recently used
evicted: :class:`~selfens_pl.engine.kv_cache.CachePool`). When enough groups have finished the batch shrinks: to the exact
live count in eager mode, to the next power of two when compiled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from selfens_pl.engine.attention import PAD, PREFIX, dense_mask
from selfens_pl.engine.decode_batches import DecodeStats, EncodedPrompts, Generation, PrefillBatch

# no_fusion: re-exported for heads and tests
from selfens_pl.engine.fusion import no_fusion, token_logprob  # noqa: F401
from selfens_pl.engine.kv_cache import CACHE_LENGTHS, CachePool, StaticKVCache
from selfens_pl.errors import InternalError, UserError

#: ``fuse(logits [g, n, V], weights [g, n] | None, valid [g, n] | None) -> [g, V]`` log-scores
#: (:mod:`selfens_pl.engine.fusion`).
FuseFn = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]

#: Compiled decoding rounds the cache length up to a multiple of this, so batches share compiled steps.
LENGTH_BUCKET = 128


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


def fuse_and_pick(fuse: FuseFn, logits: torch.Tensor, n: int, weights, valid):
    """``logits [g*n, V]`` -> fused token ``[g]`` and its log-probability ``[g]`` (one compiled graph when compiled)."""
    scores = fuse(logits.reshape(-1, n, logits.shape[-1]), weights, valid)
    tokens = scores.argmax(-1)
    return tokens, token_logprob(scores, tokens)


def _cache_kwarg(model) -> str:
    """transformers 5.24 renamed ``past_key_values`` to ``cache``; support both."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def resolve_compile(compile: bool | str, device: torch.device) -> bool:
    """``--model.compile``: ``auto`` compiles on CUDA only (on CPU the eager step measured faster, see README)."""
    if compile == "auto":
        return device.type == "cuda"
    if isinstance(compile, bool):
        return compile
    raise UserError(f"--model.compile={compile!r}: choose auto, true or false")


def _bucket(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pow2(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()


@dataclass
class _Live:
    """Decode state of a batch: group slot ``i`` owns rows ``i*n .. i*n+n-1`` of every per-row tensor."""

    cache: StaticKVCache
    slots: list[int | None]  # the generation each group slot feeds; None: finished, or padding of a bucket
    tokens: torch.Tensor  # [G] the token each slot feeds next
    prompt_valid: torch.Tensor  # [G*n, L] bool: real prompt columns
    next_position: torch.Tensor  # [G*n] position of the first generated token
    weights: torch.Tensor | None  # [G, n]
    valid: torch.Tensor | None  # [G, n]

    def take(self, order: list[int], n: int, cache: StaticKVCache | None) -> _Live:
        """The state of group slots ``order``, copied into ``cache`` (or a fresh one). An index repeated at the
        end pads a bucket: the copy computes like the original and feeds no generation."""
        idx = torch.tensor(order, device=self.tokens.device)
        rows = (idx[:, None] * n + torch.arange(n, device=idx.device)).reshape(-1)
        if cache is None:
            cache = self.cache.select(rows)
        else:
            cache.copy_rows(self.cache, rows)
        unique = len(set(order))
        slots = [self.slots[i] if j < unique else None for j, i in enumerate(order)]

        def pick(t):
            return None if t is None else t.index_select(0, idx)

        return _Live(cache, slots, pick(self.tokens), self.prompt_valid.index_select(0, rows),
                     self.next_position.index_select(0, rows), pick(self.weights), pick(self.valid))

    def pad(self, slots: int, n: int) -> None:
        """Grow to ``slots`` group slots (a compiled bucket) with copies of slot 0's per-row state; their cache rows
        hold whatever the pooled cache held, so they read only column 0 (finite) and feed nothing."""
        extra = slots - len(self.slots)
        if extra <= 0:
            return

        def grow(t):
            return None if t is None else torch.cat([t, t[:1].expand(extra, *t.shape[1:])])

        self.slots += [None] * extra
        self.tokens, self.weights, self.valid = grow(self.tokens), grow(self.weights), grow(self.valid)
        filler = torch.zeros((extra * n, self.prompt_valid.shape[1]), dtype=torch.bool, device=self.tokens.device)
        filler[:, 0] = True
        self.prompt_valid = torch.cat([self.prompt_valid, filler])
        self.next_position = torch.cat([self.next_position, self.next_position.new_zeros(extra * n)])


class GreedyDecoder:
    """Greedy decoding for a Hugging Face causal LM (``[r, s]`` in, one ``Generation`` per group out).

    Args:
        compile: ``--model.compile``: ``auto`` (on for CUDA), ``True`` or ``False``. A compile that fails raises
            naming the flag; nothing falls back to eager silently.
        compile_backend: ``torch.compile`` backend: ``inductor`` (generated kernels; CUDA graphs on CUDA);
            the tests also use ``aot_eager`` (the same capture, eager kernels) to check the compiled path cheaply.
        cache_lengths: ``--model.cache_lengths``: compiled decoding keeps the KV caches of this many length buckets
            for later batches (:class:`~selfens_pl.engine.kv_cache.CachePool`; least recently used evicted).
    """

    def __init__(self, model, tokenizer, max_new_tokens: int = 20, stop: str | None = "\n", share_prefix: bool = True,
                 compile: bool | str = "auto", compile_backend: str = "inductor", cache_lengths: int = CACHE_LENGTHS):
        if max_new_tokens < 1:
            raise UserError(f"--model.max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.stop = stop or None
        #: Encode the instruction + few-shot prefix once per batch and share its KV cache across rows.
        self.share_prefix = share_prefix
        resolve_compile(compile, torch.device("cpu"))  # validate the flag now
        self.pool = CachePool(cache_lengths)  # (and this one)
        self.compile = compile
        self.compile_backend = compile_backend
        self.base = decoder_stack(model)
        self.lm_head = model.get_output_embeddings()
        self.cache_kw = _cache_kwarg(self.base)
        self.eos_ids = self._eos_ids()
        self.stats = DecodeStats()
        self._compiled: dict[str, Callable] = {}

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
        from selfens_pl.engine.parallel import execution_device

        return execution_device(self.model.get_input_embeddings())

    @property
    def compiled(self) -> bool:
        return resolve_compile(self.compile, self.device)

    @property
    def context_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    # -- the model -----------------------------------------------------------------------------------------------
    def _forward(self, input_ids, attention_mask, position_ids, cache, **attention):
        """``attention``: keyword arguments the model hands to every layer's attention function
        (:func:`~selfens_pl.engine.attention.selfens_attention_forward`), e.g. ``flex_compile``."""
        out = self.base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=True, **{self.cache_kw: cache}, **attention)
        return out.last_hidden_state

    def _count(self, input_ids: torch.Tensor) -> None:
        self.stats.forward_calls += 1
        self.stats.tokens_fed += input_ids.numel()

    def new_cache(self, rows: int, length: int) -> StaticKVCache:
        return StaticKVCache(rows, length)

    @torch.inference_mode()
    def prefill(self, batch: PrefillBatch, cache: StaticKVCache | None = None) -> torch.Tensor:
        """Encode the prompts once into ``cache`` (a fresh one sized for the prompts when ``None``).

        Returns logits ``[r, k, V]`` at ``batch.gather``. A batch of already encoded prompts (``batch.source``)
        only copies their cache rows and logits.
        """
        if batch.source is not None:
            return self._copy_encoded(batch, cache)
        rows, s = batch.input_ids.shape
        p = batch.prefix_len
        cache = cache if cache is not None else self.new_cache(rows, p + s)
        if p and batch.prefix_rows is not None:  # several prefixes, each encoded once
            self.stats.prompt_tokens += int(batch.pad_mask[:, p:].sum()) + int(batch.prefix_mask.sum())
            self._prefill_prefixes(batch, cache)
        elif p:  # one row of prefix, written into every row of the cache
            self.stats.prompt_tokens += int(batch.pad_mask.sum()) - (rows - 1) * p
            prefix_segments = torch.full((1, p), PREFIX, device=self.device)
            cache.write_pos, cache.read_len = torch.arange(p, device=self.device), p
            self._count(batch.prefix_ids[None])
            self._forward(batch.prefix_ids[None], dense_mask(prefix_segments),
                          torch.arange(p, device=self.device)[None], cache)
        else:
            self.stats.prompt_tokens += int(batch.pad_mask.sum())
        mask = batch.attention_mask
        if mask is None:  # causal over the prefix and each row's own tokens, padding masked
            real = batch.pad_mask.bool()
            segments = torch.where(real, 0, PAD)
            segments[:, :p] = torch.where(real[:, :p], PREFIX, PAD)
            mask = dense_mask(segments)[:, :, p:]
        cache.write_pos, cache.read_len = torch.arange(p, p + s, device=self.device), p + s
        self._count(batch.input_ids)
        attention = {} if batch.flex_compile is None else {"flex_compile": batch.flex_compile}
        hidden = self._forward(batch.input_ids, mask, batch.position_ids, cache, **attention)
        return gathered_logits(self.model, hidden, batch.gather)

    @torch.inference_mode()
    def encode(self, batch: PrefillBatch) -> EncodedPrompts:
        """Prefill ``batch`` (one logit per row) into a cache of exactly its width, kept for later decodes/scores."""
        if batch.gather.shape[1] != 1:
            raise InternalError("encode takes one next-token position per row")
        cache = self.new_cache(batch.rows, batch.pad_mask.shape[1])
        logits = self.prefill(batch, cache)[:, 0]
        return EncodedPrompts(cache, logits, batch.pad_mask, batch.next_position)

    def _copy_encoded(self, batch: PrefillBatch, cache: StaticKVCache) -> torch.Tensor:
        source, rows = batch.source, batch.rows_from
        extra = cache.rows - len(rows)  # a compiled bucket's padding rows repeat the first one
        cache.copy_prompt(source.cache, torch.cat([rows, rows[:1].expand(extra)]) if extra else rows)
        return source.logits[rows][:, None]

    @torch.inference_mode()
    def score_continuations(self, source: EncodedPrompts, rows_from: list[int],
                            continuations: list[list[list[int]]], chunk_tokens: int = 1024) -> list[list[list[float]]]:
        """Log-probability of every token of every continuation ``continuations[i][c]`` after encoded prompt
        ``rows_from[i]``, teacher forced. A row's continuations are packed into ONE sequence after its prompt (each
        continuation sees the prompt and its own earlier tokens, positioned as if it alone followed the prompt), so
        the prompt's keys and values are copied once per row, not once per continuation; rows are batched by packed
        length, about ``chunk_tokens`` fed tokens per forward. A continuation's last token is never fed (its output
        scores nothing) and its first token is scored by the prompt's own logits. Returns ``[row][continuation]``
        lists of token log-probabilities."""
        if len(rows_from) != len(continuations) or any(not c for row in continuations for c in row):
            raise InternalError("score_continuations needs, per row, a list of non-empty continuations")
        fed = [sum(len(c) - 1 for c in row) for row in continuations]
        order = sorted(range(len(rows_from)), key=lambda i: fed[i])
        out: list[list[list[float]] | None] = [None] * len(rows_from)
        start = 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * max(1, fed[order[stop]]) <= chunk_tokens:
                stop += 1
            chunk = order[start:stop]
            rows = torch.tensor([rows_from[i] for i in chunk], dtype=torch.long, device=self.device)
            for i, scored in zip(chunk, self._score_chunk(source, rows, [continuations[i] for i in chunk])):
                out[i] = scored
            start = stop
        return out  # type: ignore[return-value]

    def _score_chunk(self, source: EncodedPrompts, rows: torch.Tensor,
                     conts: list[list[list[int]]]) -> list[list[list[float]]]:
        r, width, device = len(rows), source.width, self.device
        first = source.logits[rows].log_softmax(-1)  # [r, V]
        length = max(sum(len(c) - 1 for c in row) for row in conts)
        later = None
        if length:
            tokens = torch.full((r, length), pad_token_id(self.tokenizer), dtype=torch.long)
            targets = torch.zeros((r, length), dtype=torch.long)
            segment = torch.full((r, length), -1, dtype=torch.long)
            offset = torch.zeros((r, length), dtype=torch.long)
            for i, row in enumerate(conts):
                j = 0
                for c_index, c in enumerate(row):
                    n = len(c) - 1
                    tokens[i, j:j + n] = torch.tensor(c[:-1])
                    targets[i, j:j + n] = torch.tensor(c[1:])
                    segment[i, j:j + n] = c_index
                    offset[i, j:j + n] = torch.arange(n)
                    j += n
            tokens, targets, segment, offset = (t.to(device) for t in (tokens, targets, segment, offset))
            cache = self.new_cache(r, width + length)
            cache.copy_prompt(source.cache, rows)
            cache.write_pos, cache.read_len = torch.arange(width, width + length, device=device), None
            # a packed token sees the prompt, and the earlier tokens of its own continuation
            own = (segment[:, :, None] == segment[:, None, :]) & (segment[:, None, :] >= 0) & \
                torch.ones((length, length), dtype=torch.bool, device=device).tril()
            mask = torch.cat([source.pad_mask[rows].bool()[:, None, :].expand(-1, length, -1), own], dim=2)[:, None]
            self._count(tokens)
            hidden = self._forward(tokens, mask, source.next_position[rows][:, None] + offset, cache)
            later = lm_logits(self.model, hidden).log_softmax(-1).gather(2, targets[..., None])[..., 0].double()
            later = later.tolist()
        first = first.double()
        out = []
        for i, row in enumerate(conts):
            scored, j = [], 0
            for c in row:
                n = len(c) - 1
                scored.append([first[i, c[0]].item()] + (later[i][j:j + n] if n else []))
                j += n
            out.append(scored)
        return out

    def _prefill_prefixes(self, batch: PrefillBatch, cache: StaticKVCache) -> None:
        """Encode the ``P`` left-padded prefixes into the cache's first ``P`` rows, then copy each row's own prefix
        (``batch.prefix_rows``) into it; rows past the batch (a compiled bucket's padding) get the first row's."""
        real = batch.prefix_mask.bool()
        p = batch.prefix_len
        cache.write_pos, cache.read_len = torch.arange(p, device=self.device), p
        self._count(batch.prefix_ids)
        self._forward(batch.prefix_ids, dense_mask(torch.where(real, PREFIX, PAD)),
                      (real.long().cumsum(-1) - 1).clamp(min=0), cache)
        rows = batch.prefix_rows
        extra = cache.rows - len(rows)
        cache.copy_rows(cache, torch.cat([rows, rows[:1].expand(extra)]) if extra else rows)

    def decode_one_token(self, cache: StaticKVCache, tokens: torch.Tensor, positions: torch.Tensor,
                         key_mask: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens [R]`` at ``positions [R]``, writing key column ``cache.write_pos``; attention reads the whole
        cache under ``key_mask [R, L]``. Returns float32 logits ``[R, V]``. Fixed shapes: this is what compiles."""
        hidden = self._forward(tokens[:, None], key_mask[:, None, None, :], positions[:, None], cache)
        return lm_logits(self.model, hidden[:, -1])

    # -- compiled pieces -----------------------------------------------------------------------------------------
    def _fn(self, name: str, fn: Callable) -> Callable:
        """``fn`` itself in eager mode; compiled once per decoder otherwise (graphs are cached per shape)."""
        if not self.compiled:
            return fn
        if name not in self._compiled:
            import torch._dynamo.config as dynamo_config

            # Fail loudly instead of silently running eager past dynamo's recompile limit (names differ by version).
            limit = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
            setattr(dynamo_config, limit, max(getattr(dynamo_config, limit), 64))
            dynamo_config.fail_on_recompile_limit_hit = True
            options = {}
            if self.compile_backend == "inductor" and self.device.type == "cuda":
                options["mode"] = "reduce-overhead"  # CUDA graphs
            self._compiled[name] = torch.compile(fn, fullgraph=True, dynamic=None, backend=self.compile_backend,
                                                 **options)
        compiled = self._compiled[name]

        def run(*args):
            try:
                return compiled(*args)
            except torch._dynamo.exc.TorchDynamoException as err:
                raise RuntimeError(f"--model.compile={self.compile}: torch.compile failed in the decode step "
                                   f"({type(err).__name__}: {str(err).splitlines()[0]}); run with --model.compile "
                                   "false to decode eagerly") from err

        return run

    def _step(self, cache, tokens, n: int, positions, key_mask):
        return self.decode_one_token(cache, tokens.repeat_interleave(n), positions, key_mask)

    # -- the loop ------------------------------------------------------------------------------------------------
    def _stopped(self, gen: Generation, token: int, logprob: float) -> bool:
        if token in self.eos_ids:
            gen.end, gen.eos_token = "eos", token
            return True
        gen.token_ids.append(token)
        gen.logprobs.append(logprob)
        gen.text = self.tokenizer.decode(gen.token_ids, skip_special_tokens=True)
        # A stop string only counts once the answer has started: a leading newline is not an empty answer.
        if self.stop is not None and self.stop in gen.text.lstrip():
            gen.end = "stop"
            return True
        return False

    def _start(self, batch: PrefillBatch, fuse_first: FuseFn) -> tuple[_Live, torch.Tensor]:
        """Allocate (or reuse) the cache, prefill, pick every group's first token, lay out the per-row state.
        Returns it and the first tokens' log-probabilities ``[g]``."""
        n, device = batch.rows_per_group, self.device
        rows, width = batch.rows, batch.pad_mask.shape[1]
        groups = rows // n
        length = width + self.max_new_tokens - 1  # the last token is never fed back
        if self.compiled:
            length = _bucket(length, LENGTH_BUCKET)
            cache = self.pool.get(_pow2(groups) * n, length)
        else:
            cache = self.new_cache(rows, length)
        logits = self.prefill(batch, cache)  # [r, k, V]
        k = logits.shape[1]
        tokens, logprobs = fuse_and_pick(fuse_first, logits.reshape(rows * k, -1), n * k, batch.weights, batch.valid)
        prompt_valid = torch.zeros((rows, length), dtype=torch.bool, device=device)
        prompt_valid[:, :width] = batch.pad_mask.bool()
        live = _Live(cache, list(range(groups)), tokens, prompt_valid, batch.next_position, batch.step_weights,
                     batch.step_valid)
        if self.compiled:
            live.pad(_pow2(groups), n)
            logprobs = torch.cat([logprobs, logprobs[:1].expand(len(live.slots) - groups)])
        return live, logprobs

    def _shrink(self, live: _Live, keep: list[int], n: int) -> _Live:
        """Drop finished group slots when it pays: eager mode keeps exactly ``keep``; compiled mode shrinks only to
        a smaller power of two (a pooled cache, so compiled steps are reused) and otherwise just stops feeding."""
        if not self.compiled:
            return live.take(keep, n, None) if len(keep) < len(live.slots) else live
        target = _pow2(len(keep))
        if target < len(live.slots):
            cache = self.pool.get(target * n, live.cache.length)
            if not cache.keys:
                cache.adopt_layout(live.cache)
            return live.take(keep + [keep[0]] * (target - len(keep)), n, cache)
        live.slots = [slot if i in keep else None for i, slot in enumerate(live.slots)]
        return live

    @torch.inference_mode()
    def decode_n_tokens(self, batch: PrefillBatch, fuse_first: FuseFn, fuse_step: FuseFn) -> list[Generation]:
        """Prefill, then greedy decoding until every group hit EOS, the stop string or ``max_new_tokens``."""
        n = batch.rows_per_group
        rows = batch.rows
        if rows % n:
            raise InternalError(f"{rows} rows do not split into groups of {n}")
        gens = [Generation() for _ in range(rows // n)]
        live, logprobs = self._start(batch, fuse_first)
        width = batch.pad_mask.shape[1]
        step, pick = self._fn("step", self._step), self._fn("fuse", fuse_and_pick)
        columns = torch.arange(live.cache.length, device=self.device)
        writes = torch.arange(width, width + self.max_new_tokens, device=self.device)
        for t in range(self.max_new_tokens):
            # one device-to-host copy per step: token ids (exact in float64) and their log-probabilities
            host_tokens, host_logprobs = torch.stack([live.tokens.double(), logprobs.double()]).tolist()
            host_tokens = [int(token) for token in host_tokens]
            keep = [i for i, slot in enumerate(live.slots)
                    if slot is not None and not self._stopped(gens[slot], host_tokens[i], host_logprobs[i])]
            if not keep or t == self.max_new_tokens - 1:
                break
            live = self._shrink(live, keep, n)
            # the token fed now is written at key column width + t and sees the prompt and every earlier token
            live.cache.write_pos, live.cache.read_len = writes[t: t + 1], None
            key_mask = live.prompt_valid | ((columns >= width) & (columns <= width + t))
            self.stats.forward_calls += 1
            self.stats.tokens_fed += live.prompt_valid.shape[0]
            if self.compiled:  # a new step: the previous step's CUDA-graph outputs are dead (cloned below)
                torch.compiler.cudagraph_mark_step_begin()
            logits = step(live.cache, live.tokens, n, live.next_position + t, key_mask)
            live.tokens, logprobs = pick(fuse_step, logits, n, live.weights, live.valid)
            if self.compiled:  # CUDA-graph outputs are overwritten by the next replay
                live.tokens, logprobs = live.tokens.clone(), logprobs.clone()
        return gens


def left_pad(sequences: list[list[int]], pad_id: int, device, multiple_of: int = 1):
    """Left-pad token lists. Returns ``input_ids [r, s]`` and ``pad_mask [r, s]`` (s rounded up to a multiple)."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise InternalError("cannot pad an empty token sequence")
    width = max(len(s) for s in sequences)
    width = -(-width // multiple_of) * multiple_of
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[i, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def pad_token_id(tokenizer) -> int:
    """The id left padding uses: the pad token, else EOS, else 0 (padding is always masked out)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return 0 if pad is None else int(pad)
