"""Batched, KV-cached sampling (temperature, nucleus/top-p) on top of :class:`~selfens_pl.engine.decoding.GreedyDecoder`.

The sampler composes the decoder's two primitives: :meth:`GreedyDecoder.prefill` encodes the prompts once (with the
shared instruction + few-shot prefix when the batch has one) and :meth:`GreedyDecoder.decode_one_token` feeds one
token per row against the cache. On top it adds:

* ``repeat``: each prompt's KV cache rows are copied ``repeat`` times (``StaticKVCache.select``) right after
  the prefill, so ``M`` samples of one prompt cost one prefill;
* per-row seeds: row ``i`` draws its randomness from its own ``torch.Generator(seed_i)`` -- one uniform number per
  generated token, drawn up front -- and picks its token by inverse-CDF sampling. A row's sample therefore depends
  only on its prompt, its seed and the settings, never on which other rows share the batch (up to float noise of
  the padded batch, which would have to land exactly on a CDF boundary to change a token). A ``None`` seed makes
  a row greedy (argmax), so a greedy answer can ride in the same batch as its samples;
* per-row stopping: at EOS (not kept), at the stop string once the answer has started (default newline; the
  prediction is the first line) or at ``max_new_tokens``. Finished rows leave the batch and the cache.
"""

from __future__ import annotations

import torch

from selfens_pl.engine.decoding import Generation, GreedyDecoder, PrefillBatch
from selfens_pl.errors import InternalError, UserError


def sample_from_logits(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0,
                       top_p: float = 1.0, greedy: torch.Tensor | None = None) -> torch.Tensor:
    """Pick one token per row of ``logits [r, V]`` by inverse-CDF sampling with ``uniforms [r]`` in ``[0, 1)``.

    ``temperature`` divides the logits (``<= 0``: argmax for every row); ``top_p < 1`` keeps the smallest set of
    most likely tokens whose probability reaches ``top_p`` (the most likely token always stays), renormalised.
    ``greedy [r]`` (bool) marks rows that take the argmax instead.
    """
    if not 0 < top_p <= 1:
        raise InternalError(f"top_p must be in (0, 1], got {top_p}")
    argmax = logits.argmax(-1)
    if temperature <= 0:
        return argmax
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        probs, order = probs.sort(dim=-1, descending=True, stable=True)
        probs = probs * ((probs.cumsum(-1) - probs) < top_p)  # keep a token while the mass before it is < top_p
    else:
        order = None
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    # u * total, kept strictly below total so rounding can never select past the last token with mass
    target = torch.minimum(uniforms.to(cdf)[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    index = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)  # first cdf > u
    tokens = index[:, 0] if order is None else order.gather(-1, index)[:, 0]
    return tokens if greedy is None else torch.where(greedy, argmax, tokens)


class Sampler:
    """Sample continuations of prompts with a :class:`GreedyDecoder`'s model and KV cache.

    Args:
        decoder: Supplies ``prefill`` / ``decode_one_token``, the cache, EOS ids and the tokenizer.
        temperature: Softmax temperature; ``<= 0`` means greedy for every row.
        top_p: Nucleus sampling mass (``1`` = the full distribution).
        max_new_tokens: Most tokens generated per row (default: the decoder's).
        stop: Stop string, counted once the answer has started (``None``: only EOS and ``max_new_tokens``).
    """

    def __init__(self, decoder: GreedyDecoder, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int | None = None, stop: str | None = "\n"):
        self.decoder = decoder
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top_p must be in (0, 1], got {top_p}")
        self.max_new_tokens = decoder.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if self.max_new_tokens < 1:
            raise UserError(f"--max_new_tokens must be >= 1, got {max_new_tokens}")
        self.stop = stop or None

    def _finished(self, gen: Generation, token: int) -> bool:
        if token in self.decoder.eos_ids:
            return True
        gen.token_ids.append(token)
        gen.text = self.decoder.tokenizer.decode(gen.token_ids, skip_special_tokens=True)
        return self.stop is not None and self.stop in gen.text.lstrip()

    def _uniforms(self, seeds: list[int | None]) -> torch.Tensor:
        """``[r, max_new_tokens]``: row ``i``'s uniforms from its own CPU generator (zeros for greedy rows)."""
        rows = []
        for seed in seeds:
            if seed is None:
                rows.append(torch.zeros(self.max_new_tokens, dtype=torch.float64))
            else:
                gen = torch.Generator().manual_seed(int(seed))
                rows.append(torch.rand(self.max_new_tokens, generator=gen, dtype=torch.float64))
        return torch.stack(rows).to(self.decoder.device)

    @torch.inference_mode()
    def sample(self, batch: PrefillBatch, seeds: list[int | None], repeat: int = 1) -> list[Generation]:
        """Prefill ``batch`` (one row per prompt, ``rows_per_group == 1``), copy each prompt's cache ``repeat``
        times, and sample every row to its end.

        ``seeds`` has one entry per output row (``prompts * repeat``, prompt-major: rows ``i*repeat ..
        i*repeat+repeat-1`` continue prompt ``i``); ``None`` marks a greedy row. Returns one
        :class:`Generation` per output row, in that order.
        """
        decoder = self.decoder
        prompts = batch.input_ids.shape[0]
        if batch.rows_per_group != 1 or batch.gather.shape[1] != 1:
            raise InternalError("Sampler.sample expects one independent row per prompt (rows_batch / prompt_batch)")
        if repeat < 1:
            raise InternalError(f"repeat must be >= 1, got {repeat}")
        if len(seeds) != prompts * repeat:
            raise InternalError(f"{len(seeds)} seeds for {prompts} prompts x {repeat} samples")
        width = batch.pad_mask.shape[1]
        cache = decoder.new_cache(prompts, width + self.max_new_tokens - 1)
        logits = decoder.prefill(batch, cache)[:, -1]  # [prompts, V]
        prompt_valid = torch.zeros((prompts, cache.length), dtype=torch.bool, device=decoder.device)
        prompt_valid[:, :width] = batch.pad_mask.bool()
        positions = batch.next_position
        if repeat > 1:
            copies = torch.arange(prompts, device=decoder.device).repeat_interleave(repeat)
            cache = cache.select(copies)
            logits, prompt_valid, positions = logits[copies], prompt_valid[copies], positions[copies]
        uniforms = self._uniforms(seeds)
        greedy = torch.tensor([s is None for s in seeds], device=decoder.device)
        gens = [Generation() for _ in seeds]
        active = list(range(len(seeds)))  # output row of each live row
        columns = torch.arange(cache.length, device=decoder.device)
        writes = torch.arange(width, width + self.max_new_tokens, device=decoder.device)
        for step in range(self.max_new_tokens):
            tokens = sample_from_logits(logits, uniforms[:, step], self.temperature, self.top_p, greedy)
            keep = [i for i, t in enumerate(tokens.tolist()) if not self._finished(gens[active[i]], t)]
            if not keep or step == self.max_new_tokens - 1:
                break
            if len(keep) < len(active):  # drop finished rows from every per-row tensor and the cache
                live = torch.tensor(keep, device=decoder.device)
                cache = cache.select(live)
                active = [active[i] for i in keep]
                tokens, prompt_valid, positions = tokens[live], prompt_valid[live], positions[live]
                uniforms, greedy = uniforms[live], greedy[live]
            cache.write_pos, cache.read_len = writes[step: step + 1], None
            key_mask = prompt_valid | ((columns >= width) & (columns <= width + step))
            logits = decoder.decode_one_token(cache, tokens, positions, key_mask)
            positions = positions + 1
        return gens
