"""The KV-cache pool of compiled decoding: a repeated shape reuses its cache, memory stays bounded.

Compiled decoding (the default on CUDA) takes its caches from :class:`CachePool`, one per (rows, length bucket), so
compiled steps and their CUDA graphs replay on fixed buffers. Without a bound every distinct prompt width ever
seen kept a full KV cache alive. ``aot_eager`` runs the compiled path here on the CPU.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from selfens_pl.engine.batches import rows_batch
from selfens_pl.engine.decoding import LENGTH_BUCKET, GreedyDecoder, no_fusion
from selfens_pl.engine.kv_cache import CACHE_LENGTHS, CachePool
from selfens_pl.errors import UserError


def test_many_lengths_keep_the_default_pool_bounded():
    pool = CachePool()
    first = pool.get(4, LENGTH_BUCKET)
    for i in range(2, 40):
        pool.get(4, i * LENGTH_BUCKET)
        pool.get(2, i * LENGTH_BUCKET)  # a smaller row bucket of the same length, as a shrinking batch takes
        assert len(pool) <= 2 * CACHE_LENGTHS
    assert pool.get(4, LENGTH_BUCKET) is not first  # long evicted: a fresh cache
    assert len({c.length for c in pool}) == CACHE_LENGTHS


def test_least_recently_used_length_is_evicted_with_all_its_row_buckets():
    pool = CachePool(max_lengths=2)
    a, a_small = pool.get(4, 128), pool.get(2, 128)
    b = pool.get(4, 256)
    assert pool.get(4, 128) is a  # a repeated shape reuses its cache (and 128 is now the most recent length)
    pool.get(4, 384)  # a third length: 256, the least recently used, goes
    assert pool.get(4, 128) is a and pool.get(2, 128) is a_small
    assert {c.length for c in pool} == {128, 384}
    assert pool.get(4, 256) is not b


def test_a_pool_setting_below_one_names_the_flag():
    with pytest.raises(UserError, match=r"--model\.cache_lengths"):
        CachePool(max_lengths=0)


def _rows(widths: list[int], vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (w,), generator=gen).tolist() for w in widths]  # 0-2: pad, BOS, EOS


def test_compiled_decoding_over_many_widths_frees_evicted_caches_and_reuses_kept_ones(tiny_lm):
    """Four length buckets through a pool that keeps two: the evicted caches are freed (nothing, not the compiled
    step either, still holds them), answers equal eager decoding throughout, a repeated shape decodes on the very
    cache objects it used before, and coming back to an evicted shape compiles nothing new."""
    from torch._dynamo.utils import counters

    kwargs = dict(max_new_tokens=4, stop=None)
    compiled = GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, compile=True, compile_backend="aot_eager",
                             cache_lengths=2, **kwargs)
    eager = GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, compile=False, **kwargs)
    compiled.eos_ids = eager.eos_ids = set()  # every row decodes all its tokens: the same shapes every time
    vocab = len(tiny_lm.tokenizer)
    widths = [[50, 40], [180, 170], [300, 290], [420, 410]]  # + 3 new tokens: lengths 128, 256, 384, 512
    batches = [_rows(w, vocab, seed) for seed, w in enumerate(widths)]

    def decode(dec, rows):
        return [g.token_ids for g in dec.decode_n_tokens(rows_batch(dec, rows), no_fusion, no_fusion)]

    assert decode(compiled, batches[0]) == decode(eager, batches[0])
    first = [weakref.ref(c.keys[0]) for c in compiled.pool]
    assert first and all(r() is not None for r in first)
    for rows in batches[1:]:
        assert decode(compiled, rows) == decode(eager, rows)
    assert {c.length for c in compiled.pool} == {384, 512}
    gc.collect()
    assert all(r() is None for r in first), "an evicted cache is still referenced"

    kept = [id(c) for c in compiled.pool]
    assert decode(compiled, batches[3]) == decode(eager, batches[3])
    assert [id(c) for c in compiled.pool] == kept  # the same shape again: the same cache objects

    graphs = counters["stats"]["unique_graphs"]
    assert decode(compiled, batches[0]) == decode(eager, batches[0])  # back to an evicted length: a fresh cache
    assert counters["stats"]["unique_graphs"] == graphs  # ... and the step compiled for it is reused
    assert {c.length for c in compiled.pool} == {128, 512}
