"""Paired bootstrap intervals (selfens_pl/scoring/stats.py) on hand-made tables."""

from __future__ import annotations

import math
import random

import pytest

from selfens_pl.scoring.stats import aligned, paired_bootstrap, per_fact


def test_identical_runs_gain_nothing_with_certainty():
    a = [1, 0, 1, 1, 0, 0, 1]
    g = paired_bootstrap(a, a)
    assert (g.diff, g.low, g.high) == (0.0, 0.0, 0.0) and not g.excludes_zero


def test_right_everywhere_against_wrong_everywhere_is_one():
    g = paired_bootstrap([1] * 12, [0] * 12)
    assert (g.diff, g.low, g.high) == (1.0, 1.0, 1.0) and g.format() == "+100.0 [+100.0, +100.0]"


def exact_quantiles(diffs: list[int], level: float = 0.95) -> tuple[float, float]:
    """The exact percentile ends of the mean of ``len(diffs)`` draws with replacement from ``diffs`` (integers),
    by convolving the distribution of one draw: what the bootstrap estimates."""
    n = len(diffs)
    one: dict[int, float] = {}
    for d in diffs:
        one[d] = one.get(d, 0.0) + 1 / n
    total = {0: 1.0}
    for _ in range(n):
        nxt: dict[int, float] = {}
        for s, p in total.items():
            for d, q in one.items():
                nxt[s + d] = nxt.get(s + d, 0.0) + p * q
        total = nxt
    cdf, ends = 0.0, []
    targets = [(1 - level) / 2, (1 + level) / 2]
    for s in sorted(total):
        cdf += total[s]
        while targets and cdf >= targets[0] - 1e-12:
            ends.append(s / n)
            targets.pop(0)
    return ends[0], ends[1]


def test_a_hand_made_ten_fact_table():
    """Per-fact differences: four +1, one -1, five 0: the gain is 0.3. Every resample's mean gain is a multiple
    of 1/10, so are the interval's ends, and they are the exact percentiles of the resampled mean (computed here by
    convolution) up to one step: [-0.1, +0.7] (normal approximation: 0.3 +- 1.96 x 0.20)."""
    a = [1, 1, 1, 1, 0, 1, 0, 1, 0, 0]
    b = [0, 0, 0, 0, 1, 1, 0, 1, 0, 0]
    g = paired_bootstrap(a, b, resamples=5000, seed=1)
    assert g.diff == pytest.approx(0.3)
    for end in (g.low, g.high):
        assert abs(10 * end - round(10 * end)) < 1e-9
    low, high = exact_quantiles([x - y for x, y in zip(a, b)])
    assert (low, high) == (pytest.approx(-0.1), pytest.approx(0.7))
    assert abs(g.low - low) <= 0.1 + 1e-9 and abs(g.high - high) <= 0.1 + 1e-9
    assert g.format() == f"+30.0 [{100 * g.low:+.1f}, {100 * g.high:+.1f}]"


def test_seeded_and_deterministic():
    rng = random.Random(3)
    a = [rng.random() < 0.4 for _ in range(300)]
    b = [rng.random() < 0.35 for _ in range(300)]
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)
    assert paired_bootstrap(a, b, seed=5) != paired_bootstrap(a, b, seed=6)


def test_width_matches_the_normal_approximation_on_a_large_table():
    rng = random.Random(0)
    n = 2000
    a = [float(rng.random() < 0.45) for _ in range(n)]
    b = [x if rng.random() < 0.7 else float(rng.random() < 0.4) for x in a]
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    g = paired_bootstrap(a, b, resamples=4000)
    normal = 2 * 1.96 * sd / math.sqrt(n)
    assert abs((g.high - g.low) - normal) / normal < 0.1
    assert g.low < mean < g.high


def test_fractional_scores_the_mean_single_paraphrase():
    single = [1 / 3, 2 / 3, 0.0, 1.0, 1 / 3]  # mean correctness of 3 paraphrases answered alone
    fused = [1, 1, 0, 1, 0]
    g = paired_bootstrap(fused, single, resamples=3000)
    assert g.diff == pytest.approx((3 - 7 / 3) / 5)
    assert g.low <= g.diff <= g.high


def test_errors_name_the_problem():
    with pytest.raises(RuntimeError, match="one length"):
        paired_bootstrap([1, 0], [1])
    with pytest.raises(RuntimeError, match="at least one fact"):
        paired_bootstrap([], [])
    with pytest.raises(RuntimeError, match="resamples must be >= 1"):
        paired_bootstrap([1], [0], resamples=0)
    with pytest.raises(RuntimeError, match="level must lie"):
        paired_bootstrap([1], [0], level=1.0)


def test_per_fact_scores_from_records():
    recs = [{"id": "a", "paraphrase_index": 0, "block_index": 0, "correct": True},
            {"id": "a", "paraphrase_index": 1, "block_index": 0, "correct": False},
            {"id": "a", "paraphrase_index": 0, "block_index": 1, "correct": False},
            {"id": "b", "paraphrase_index": 0, "correct": False},
            {"id": "b", "paraphrase_index": 1, "correct": True},
            {"id": "c", "paraphrase_index": 0, "correct": None}]
    assert per_fact(recs) == {"a": pytest.approx(1 / 3), "b": 0.5}
    assert per_fact(recs, paraphrase_index=0, block_index=0) == {"a": 1.0, "b": 0.0}
    assert per_fact(recs, block_index=0, max_index=2) == {"a": 0.5, "b": 0.5}
    ids, x, y = aligned({"a": 1.0, "b": 0.0}, {"b": 1.0, "z": 0.0})
    assert (ids, x, y) == (["b"], [0.0], [1.0])
    with pytest.raises(ValueError, match="'run' and 'base' answered no fact in common"):
        aligned({"a": 1.0}, {"b": 1.0}, ("'run'", "'base'"))


def test_pairing_one_changed_fact_by_the_binomial():
    """b is a with one fact flipped (a right, b wrong): per-fact differences are one 1 and nine 0, so a resample's
    gain is X/10 with X ~ Binomial(10, 0.1). P(X = 0) = 0.349, P(X <= 2) = 0.930, P(X <= 3) = 0.987: the 95%
    interval is exactly [0, 0.3] for any seed (the empirical CDF at 2,000 resamples is off by ~0.006, far less than
    the margins). Resampled unpaired, accuracies 0.5 and 0.4 on 10 facts would span about +-0.43."""
    a = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    b = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert exact_quantiles([x - y for x, y in zip(a, b)]) == (0.0, pytest.approx(0.3))
    for seed in (0, 1, 2, 3):
        g = paired_bootstrap(a, b, resamples=2000, seed=seed)
        assert (g.diff, g.low, g.high) == (pytest.approx(0.1), 0.0, pytest.approx(0.3))
        assert g.format() == "+10.0 [+0.0, +30.0]"


def test_every_chunk_of_resamples_counts(monkeypatch):
    """With more fact indices than one chunk holds (here 2 resamples of 10 facts per chunk, the last chunk one
    resample), the resamples are drawn chunk by chunk and not kept: the interval is still the exact [0, 0.3] and
    deterministic."""
    import selfens_pl.scoring.stats as stats

    quantile, resampled = stats.np.quantile, []

    def spy(values, q):  # what the interval is taken over
        resampled.append(len(values))
        return quantile(values, q)

    monkeypatch.setattr(stats, "CHUNK", 25)
    monkeypatch.setattr(stats.np, "quantile", spy)
    stats._kept_indices.cache_clear()
    a = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    b = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    g = stats.paired_bootstrap(a, b, resamples=2001, seed=4)
    assert (g.low, g.high, g.resamples) == (0.0, pytest.approx(0.3), 2001)
    assert resampled == [2001] and stats._kept_indices.cache_info().currsize == 0  # every resample, none kept
    assert stats.paired_bootstrap(a, b, resamples=2001, seed=4) == g


def test_the_same_resamples_for_every_method_on_the_same_facts():
    """The kept resamples serve every pair on n facts: a method's interval does not depend on what was computed
    before it, and only on (n, resamples, seed)."""
    from selfens_pl.scoring.stats import _kept_indices

    rng = random.Random(7)
    base = [float(rng.random() < 0.4) for _ in range(200)]
    one = [float(rng.random() < 0.5) for _ in range(200)]
    two = [rng.random() for _ in range(200)]
    first = paired_bootstrap(one, base, resamples=1000, seed=2)
    paired_bootstrap(two, base, resamples=1000, seed=2)
    paired_bootstrap(one, base[:150] + [1.0] * 50, resamples=1000, seed=9)
    assert paired_bootstrap(one, base, resamples=1000, seed=2) == first
    _kept_indices.cache_clear()
    assert paired_bootstrap(one, base, resamples=1000, seed=2) == first  # drawn afresh: the same


def test_a_gain_that_rounds_to_zero_prints_plus_zero():
    from selfens_pl.scoring.stats import Gain

    assert Gain(-0.0004, -0.0004, 0.0, 2500, 2000, 0.95).format() == "+0.0 [+0.0, +0.0]"
    assert Gain(-0.046, -0.0631, -0.029, 800, 2000, 0.95).format() == "-4.6 [-6.3, -2.9]"


@pytest.mark.parametrize("kwargs, message", [
    (dict(a=[float("nan"), 1], b=[0, 0]), r"a\[0\] = nan: per-fact scores lie in \[0, 1\]"),
    (dict(a=[1, 0], b=[0, 1.5]), r"b\[1\] = 1.5: per-fact scores lie in \[0, 1\]"),
    (dict(a=[[1, 0]], b=[[0, 0]]), r"a must be one score per fact \(1-D\), got shape \(1, 2\)"),
    (dict(a=["right"], b=[0]), r"a must be per-fact scores"),
    (dict(a=[1, 0], b=[0, 0], seed=-1), r"seed must be >= 0 \(a whole number\), got -1"),
    (dict(a=[1, 0], b=[0, 0], resamples=2.5), r"resamples must be >= 1 \(a whole number\), got 2.5"),
    (dict(a=[1, 0], b=[0, 0], resamples=True), r"resamples must be >= 1"),
])
def test_bad_scores_seeds_and_counts_are_one_internal_error(kwargs, message):
    with pytest.raises(RuntimeError, match=message) as e:
        paired_bootstrap(**kwargs)
    assert "\n" not in str(e.value) and e.value.__cause__ is None
