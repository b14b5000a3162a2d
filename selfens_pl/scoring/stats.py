"""Paired bootstrap intervals for accuracy gains: how sure a difference between two methods on the same facts is.

Two methods answer the same ``n`` facts; per fact each has a score in ``[0, 1]`` (1/0 correctness, or a fraction:
the mean single paraphrase is the mean correctness of K paraphrases answered alone). The gain is
``mean(a) - mean(b)``. Its interval resamples the *facts* with replacement, the same resample for both methods
(that is what makes it paired: a fact both get right or both get wrong moves neither), ``resamples`` times, and
takes the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the resampled gains. On 200 facts one fact is
0.5 points and a 95% interval of a typical gain spans several points; on 800 it halves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from selfens_pl.errors import InternalError, UserError

#: Fact indices drawn at once: ``[rows, n]`` with ``rows * n`` at most this (32 MB of int64).
CHUNK = 4_000_000


@dataclass(frozen=True)
class Gain:
    """``diff`` (mean of a - mean of b) and its percentile interval ``[low, high]``, in points of 0-1."""

    diff: float
    low: float
    high: float
    n: int
    resamples: int
    level: float

    def format(self) -> str:
        """``+4.6 [+2.9, +6.3]``: percentage points, one decimal (a value that rounds to zero is ``+0.0``)."""
        return f"{_points(self.diff)} [{_points(self.low)}, {_points(self.high)}]"

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _points(value: float) -> str:
    return f"{round(100 * value, 1) + 0.0:+.1f}"  # + 0.0: -0.0 (a tiny negative rounded) prints as +0.0


def _scores(values: Sequence[float], name: str) -> np.ndarray:
    """``values`` as a float array ``[n]``; an InternalError naming ``name`` unless 1-D, finite and in [0, 1]."""
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InternalError(f"paired_bootstrap: {name} must be per-fact scores (numbers in [0, 1])") from None
    if x.ndim != 1:
        raise InternalError(f"paired_bootstrap: {name} must be one score per fact (1-D), got shape {x.shape}")
    bad = np.flatnonzero(~((x >= 0) & (x <= 1)))  # NaN fails both comparisons
    if len(bad):
        raise InternalError(f"paired_bootstrap: {name}[{bad[0]}] = {x[bad[0]]}: per-fact scores lie in [0, 1]")
    return x


def _whole(value, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise InternalError(f"paired_bootstrap: {name} must be >= {least} (a whole number), got {value!r}")
    return int(value)


def _draw_indices(n: int, resamples: int, seed: int):
    """The resamples' fact indices, in chunks ``[rows, n]`` (``rows * n <= CHUNK``; rows summing to
    ``resamples``), drawn from one generator seeded with ``seed``: the same for every pair of methods."""
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK // n)
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n))


@lru_cache(maxsize=2)
def _kept_indices(n: int, resamples: int, seed: int) -> tuple[np.ndarray, ...]:
    """:func:`_draw_indices` kept between calls (one chunk, at most 32 MB): a sweep or report compares many
    methods on the same facts with the same seed, so the indices are drawn once, not once per method."""
    chunks = tuple(_draw_indices(n, resamples, seed))
    for chunk in chunks:
        chunk.flags.writeable = False
    return chunks


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> Gain:
    """The gain of ``a`` over ``b`` (per-fact scores ``[n]`` in [0, 1] of two methods, same facts, same order) with
    its paired bootstrap interval: ``resamples`` resamples of the facts, seeded (the same seed gives the same
    interval, and the same resamples for every pair of methods on ``n`` facts). Bad input is an InternalError."""
    x, y = _scores(a, "a"), _scores(b, "b")
    if x.shape != y.shape:
        raise InternalError(f"paired_bootstrap needs two per-fact score lists of one length, got {len(x)} and {len(y)}")
    if len(x) == 0:
        raise InternalError("paired_bootstrap needs at least one fact")
    resamples, seed = _whole(resamples, "resamples", 1), _whole(seed, "seed", 0)
    if not 0 < level < 1:
        raise InternalError(f"level must lie in (0, 1), got {level}")
    d, n = x - y, len(x)
    chunks = _kept_indices(n, resamples, seed) if n * resamples <= CHUNK else _draw_indices(n, resamples, seed)
    means = np.concatenate([d[idx].mean(axis=1) for idx in chunks])  # [resamples] resampled gains
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Gain(float(d.mean()), float(low), float(high), n, resamples, level)


def per_fact(records: list[dict], paraphrase_index: int | None = None, block_index: int | None = None,
             max_index: int | None = None, max_block: int | None = None) -> dict[str, float]:
    """``{id: score}`` of a run from its prediction records (``correct`` filled): the mean correctness of each id's
    records, optionally only those with ``paraphrase_index`` (e.g. 0: origin from a per_prompt run), with
    ``block_index`` (0: the standard few-shot block; a record without one counts as block 0), with
    ``paraphrase_index < max_index`` (the first K paraphrases) or with ``block_index < max_block`` (the first M
    few-shot blocks). Ids in the order of their first record."""
    hits: dict[str, list[float]] = {}
    for rec in records:
        if rec.get("correct") is None:
            continue
        index = rec.get("paraphrase_index")
        if paraphrase_index is not None and index != paraphrase_index:
            continue
        if max_index is not None and (index is None or index >= max_index):
            continue
        if block_index is not None and (rec.get("block_index") or 0) != block_index:
            continue
        if max_block is not None and (rec.get("block_index") or 0) >= max_block:
            continue
        hits.setdefault(str(rec["id"]), []).append(float(bool(rec["correct"])))
    return {i: sum(v) / len(v) for i, v in hits.items()}


def aligned(a: dict[str, float], b: dict[str, float], names: tuple[str, str] = ("a", "b")):
    """``(ids, a scores, b scores)`` over the facts both answered; an error naming both when they share none."""
    ids = sorted(set(a) & set(b))
    if not ids:
        raise UserError(f"{names[0]} and {names[1]} answered no fact in common")
    return ids, [a[i] for i in ids], [b[i] for i in ids]
