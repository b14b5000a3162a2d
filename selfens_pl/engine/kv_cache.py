"""A static KV cache for Hugging Face decoder layers (gpt-fast's shape): allocated once, written in place.

Every layer's keys and values live in one ``[rows, kv_heads, length, head_dim]`` tensor each, allocated on the
first write from the key states the layer produces, so the local head count of a tensor-parallel shard and the
layer's own device (``device_map``) need no configuration. A forward writes its new keys at ``write_pos`` (set by
the decoder before the call) and reads ``[:, :, :read_len]`` (a prefill) or the whole length (a decode step:
fixed shapes, so the step compiles once and replays as a CUDA graph). A prefill with fewer rows than the cache
(the shared prefix, one row) writes its keys into every row by broadcasting: the prefix's KV is written once.

It is duck-typed to what the models call (``update`` and ``get_seq_length``), which is stable across transformers
5.x, where ``StaticCache``'s interface is not (``cache_position`` in 5.17, ``cumulative_length`` in 5.24). The
decoder always passes a ready 4-D mask, so the model never asks the cache for mask sizes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import torch

from selfens_pl.errors import UserError


class StaticKVCache:
    """Keys/values ``[rows, h_kv, length, d]`` per layer.

    Args:
        rows: Batch rows the cache holds (groups x rows per group, possibly bucketed).
        length: Key positions: prompt width + ``max_new_tokens`` (possibly bucketed).
    """

    def __init__(self, rows: int, length: int):
        self.rows, self.length = rows, length
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        #: ``[q]`` key positions the next forward writes (one per query token, shared by every row).
        self.write_pos: torch.Tensor | None = None
        #: Keys a forward reads: ``read_len`` leading positions (prefill) or ``None`` for all (decode step).
        self.read_len: int | None = None

    def _allocate(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        _, heads, _, dim = key_states.shape
        shape = (self.rows, heads, self.length, dim)
        # zeros, not empty: a padded row that only sees column 0 must read finite numbers
        keys = torch.zeros(shape, dtype=key_states.dtype, device=key_states.device)
        values = torch.zeros(shape[:3] + (value_states.shape[-1],), dtype=value_states.dtype,
                             device=value_states.device)
        if not torch.compiler.is_compiling():
            torch._dynamo.mark_static_address(keys)  # CUDA graphs use the buffers in place, no copy per step
            torch._dynamo.mark_static_address(values)
        self.keys.append(keys)
        self.values.append(values)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write ``key/value_states [b, h, q, d]`` at :attr:`write_pos`; return the keys/values attention reads."""
        if layer_idx == len(self.keys):
            self._allocate(key_states, value_states)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        pos = self.write_pos.to(keys.device)  # a no-op unless device_map put this layer on another device
        b = key_states.shape[0]
        if b in (1, self.rows):  # b == 1 (the shared prefix) broadcasts to every row
            keys[:, :, pos] = key_states
            values[:, :, pos] = value_states
        else:  # a batch smaller than a bucketed cache: the rows after it are padding
            keys[:b, :, pos] = key_states
            values[:b, :, pos] = value_states
        if self.read_len is None and b == self.rows:
            return keys, values
        return keys[:b, :, : self.read_len], values[:b, :, : self.read_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Asked by some transformers versions to derive ``cache_position`` when none is given; the decoder always
        gives ``position_ids`` and a 4-D mask, so nothing reads it. A constant keeps compiled steps from
        specialising on the step number."""
        return 0

    def select(self, rows: torch.Tensor) -> StaticKVCache:
        """A new cache holding rows ``rows [r']`` of this one (repeats allowed: sampling M continuations of one
        prompt copies its row M times; dropping finished rows keeps the live ones)."""
        out = StaticKVCache(len(rows), self.length)
        out.keys = [k.index_select(0, rows) for k in self.keys]
        out.values = [v.index_select(0, rows) for v in self.values]
        return out

    def copy_rows(self, source: StaticKVCache, rows: torch.Tensor) -> None:
        """``self[i] = source[rows[i]]`` for every layer (``rows [self.rows]``): compaction into a smaller cache."""
        for mine, theirs in zip(self.keys + self.values, source.keys + source.values):
            mine.copy_(theirs.index_select(0, rows))

    def copy_prompt(self, source: StaticKVCache, rows: torch.Tensor) -> None:
        """``self[i, :, :w] = source[rows[i]]`` for every layer (``rows [self.rows]``, ``w = source.length``): start
        decoding (or scoring) from prompts encoded once, into a cache with room for what follows them."""
        if not self.keys:
            for k, v in zip(source.keys, source.values):
                self._allocate(k[:1], v[:1])
        w = source.length
        for mine, theirs in zip(self.keys + self.values, source.keys + source.values):
            mine[:, :, :w].copy_(theirs.index_select(0, rows))

    def adopt_layout(self, source: StaticKVCache) -> None:
        """Allocate like ``source`` (heads, dims, dtypes, devices per layer) before :meth:`copy_rows`."""
        for k, v in zip(source.keys, source.values):
            self._allocate(k[:1], v[:1])


#: Length buckets whose caches :class:`CachePool` keeps by default (``--model.cache_lengths``).
CACHE_LENGTHS = 4


class CachePool:
    """Caches (:class:`StaticKVCache`) per ``(rows, length)``, reused across batches: fixed buffer addresses let
    compiled decode steps (and their CUDA graphs) replay instead of re-recording.

    Bounded by length: caches of at most ``max_lengths`` distinct lengths are kept; when a batch needs a new length
    the least recently used length goes, with all its row buckets (a batch shrinks through the row buckets of ONE
    length, so they live and die together, and the length in use is always the most recent: never evicted under a
    running batch). Memory: per kept length and group size, its largest cache plus the smaller row buckets batches
    shrank into (at most twice the largest). A shape seen again while kept decodes on the very same buffers.

    What is evicted is unreachable afterwards: the pool holds the only reference between batches (a batch's decode
    state dies with the batch), and neither dynamo (cache tensors are marked static *unguarded*: no guard on their
    identity) nor a CUDA graph (cudagraph trees record data pointers, not tensors) keeps it alive, so its memory is
    freed. A graph recorded on an evicted cache replays only on inputs at the very addresses it recorded, i.e. on a
    new cache of the same shape that happens to occupy the same memory; any other address makes cudagraph trees
    record anew. Coming back to an evicted shape therefore allocates a fresh cache and re-records its CUDA graph
    (cheap next to a compile; dynamo's compiled step is reused).
    """

    def __init__(self, max_lengths: int = CACHE_LENGTHS):
        if max_lengths < 1:
            raise UserError(f"--model.cache_lengths must be >= 1, got {max_lengths}")
        self.max_lengths = max_lengths
        #: ``length -> rows -> cache``, least recently used length first.
        self._caches: OrderedDict[int, dict[int, StaticKVCache]] = OrderedDict()

    def get(self, rows: int, length: int) -> StaticKVCache:
        by_rows = self._caches.get(length)
        if by_rows is None:
            while len(self._caches) >= self.max_lengths:
                self._caches.popitem(last=False)
            by_rows = self._caches[length] = {}
        self._caches.move_to_end(length)
        if rows not in by_rows:
            by_rows[rows] = StaticKVCache(rows, length)
        cache = by_rows[rows]
        cache.write_pos, cache.read_len = None, None
        return cache

    def __iter__(self) -> Iterator[StaticKVCache]:
        """The kept caches, least recently used length first."""
        return (cache for by_rows in self._caches.values() for cache in by_rows.values())

    def __len__(self) -> int:
        return sum(len(by_rows) for by_rows in self._caches.values())
