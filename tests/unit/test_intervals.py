"""Interval functions against published values, hand-made cases and a naive loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fmi.experiments.intervals import (
    Z95,
    cluster_bootstrap,
    cluster_interval,
    design_effect,
    icc,
    wilson,
    wilson_rate,
)


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [  # Wilson score intervals at z = 1.96 (Newcombe 1998, Table I style values)
        (5, 10, 0.2366, 0.7634),
        (1, 10, 0.0179, 0.4042),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (0, 40, 0.0, 0.0876),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_known_values(k, n, lo, hi):
    got = wilson(k, n)
    assert (round(got[0], 4), round(got[1], 4)) == (lo, hi)


def test_wilson_is_never_zero_width_and_refuses_bad_counts():
    for n in (1, 2, 36, 300):
        for k in (0, n):
            lo, hi = wilson(k, n)
            assert hi - lo > 0
    assert wilson_rate([True, False, True, True]) == wilson(3, 4)
    assert all(np.isnan(wilson(0, 0)))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(5, 4)


def test_icc_hand_made():
    assert icc([1, 1, 0, 0], ["a", "a", "b", "b"]) == 1.0  # all variance between symbols
    assert icc([1, 0, 1, 0], ["a", "a", "b", "b"]) == 0.0  # all within (negative, clipped)
    assert icc([1, 1, 1, 1], ["a", "a", "b", "b"]) == 1.0  # no variance: counted as 1
    # 3 clusters of 2: msb = 2/3 * ... worked by hand: values a=(1,1) b=(1,0) c=(0,0)
    # grand 0.5; ssb = 2*(0.25+0+0.25) = 1.0, ssw = 0.5; msb = 0.5, msw = 0.5/3; n0 = 2
    assert icc([1, 1, 1, 0, 0, 0], ["a", "a", "b", "b", "c", "c"]) == pytest.approx(0.5)
    assert design_effect([1, 1, 1, 0, 0, 0], ["a", "a", "b", "b", "c", "c"]) == pytest.approx(1.5)


def test_cluster_bootstrap_matches_a_naive_loop():
    hits = [1, 1, 0, 1, 0, 0, 1, 1, 1]
    clusters = ["a", "a", "b", "b", "c", "c", "d", "d", "d"]
    got = cluster_bootstrap(hits, clusters, 500, seed=3)
    rng = np.random.default_rng(3)
    order = sorted(set(clusters))
    pick = rng.integers(0, len(order), size=(500, len(order)))
    means = []
    for row in pick:
        pooled = [h for i in row for h, c in zip(hits, clusters, strict=True) if c == order[i]]
        means.append(sum(pooled) / len(pooled))
    assert got == (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))


def test_cluster_interval_is_never_zero_width_and_counts_symbols_once_when_all_agree():
    lo, hi = cluster_interval([1] * 80, [i // 2 for i in range(80)], 200, 0)
    assert hi == 1.0 and lo == pytest.approx(wilson(40, 40)[0])  # 40 symbols, not 80 prompts
    lo, hi = cluster_interval([0] * 80, [i // 2 for i in range(80)], 200, 0)
    assert lo == 0.0 and hi == pytest.approx(wilson(0, 40)[1])
    # independent outcomes (icc 0): as wide as the bootstrap or Wilson at n, whichever is wider
    hits = [1, 0] * 20
    clusters = [i // 2 for i in range(40)]
    lo, hi = cluster_interval(hits, clusters, 400, 0)
    wl, wh = wilson(20, 40)
    assert lo <= wl and hi >= wh


def _icc_by_hand(values, clusters):
    """ANOVA ICC with the n0 correction, written out with numpy from the textbook formulas."""
    v = np.asarray(values, float)
    labels = sorted(set(clusters), key=str)
    groups = [v[[c == lab for c in clusters]] for lab in labels]
    n, g = len(v), len(groups)
    ssb = sum(len(x) * (x.mean() - v.mean()) ** 2 for x in groups)
    ssw = sum(((x - x.mean()) ** 2).sum() for x in groups)
    msb, msw = ssb / (g - 1), ssw / (n - g)
    n0 = (n - sum(len(x) ** 2 for x in groups) / n) / (g - 1)
    return (msb - msw) / (msb + (n0 - 1) * msw)


@pytest.mark.parametrize(
    "values, clusters",
    [
        ([1, 1, 1, 0, 1, 0, 0, 1, 0], ["a", "a", "a", "b", "b", "c", "c", "c", "c"]),
        ([1, 0, 1, 1, 1, 0, 0], [1, 1, 1, 2, 2, 3, 3]),
        ([0.2, 0.4, 0.9, 1.0, 0.1, 0.0, 0.5], ["x", "x", "y", "y", "z", "z", "z"]),
    ],
)
def test_icc_with_unequal_clusters_equals_the_textbook_formula(values, clusters):
    want = min(1.0, max(0.0, _icc_by_hand(values, clusters)))
    assert icc(values, clusters) == pytest.approx(want, abs=1e-12)
    m = len(values) / len(set(clusters))
    assert design_effect(values, clusters) == pytest.approx(1 + (m - 1) * want, abs=1e-12)


def test_icc_edge_cases():
    assert icc([1, 0, 1], ["a", "a", "a"]) == 1.0  # one cluster: nothing to compare
    assert icc([1, 0, 1], ["a", "b", "c"]) == 1.0  # singletons: no within-cluster variance
    assert icc([0, 0, 0, 0], [1, 1, 2, 2]) == 1.0
    with pytest.raises(ValueError, match="3 values but 2 cluster labels"):
        icc([1, 0, 1], ["a", "b"])
    assert design_effect([1, 0, 1, 0], ["a", "b", "c", "d"]) == 1.0  # clusters of one


def test_wilson_uses_its_z_and_accepts_effective_sizes():
    lo, hi = wilson(5, 10, z=1.0)
    centre, half = (0.5 + 1 / 20) / 1.1, math.sqrt(0.025 + 1 / 400) / 1.1
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-12)
    lo, hi = wilson(2.5, 7.5)  # a fractional (effective) sample
    p, z2, n = 1 / 3, Z95**2, 7.5
    c = (p + z2 / (2 * n)) / (1 + z2 / n)
    h = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    assert (lo, hi) == pytest.approx((c - h, c + h), abs=1e-12)
    assert all(np.isnan(wilson(0, -1)))
    assert wilson(0, 0.5)[0] == 0.0


def test_empty_inputs_give_nan_intervals():
    assert all(np.isnan(cluster_bootstrap([], [], 10, 0)))
    assert all(np.isnan(cluster_interval([], [], 10, 0)))
    assert all(np.isnan(wilson_rate([])))


def test_cluster_interval_is_the_hull_of_bootstrap_and_wilson_at_the_effective_size():
    hits = [1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1]
    clusters = [i // 3 for i in range(12)]
    n_eff = 12 / design_effect(hits, clusters)
    wl, wh = wilson(sum(hits) / 12 * n_eff, n_eff)
    bl, bh = cluster_bootstrap(hits, clusters, 300, 5)
    assert cluster_interval(hits, clusters, 300, 5) == (min(wl, bl), max(wh, bh))
    assert wl != bl and wh != bh  # both sides of the hull are exercised


def test_icc_when_between_and_within_sums_of_squares_are_equal():
    # a = (0, 0.5), b = (0.5, 1): ssb = ssw = 0.25; msb = 0.25, msw = 0.125, n0 = 2
    assert icc([0, 0.5, 0.5, 1], ["a", "a", "b", "b"]) == pytest.approx(1 / 3, abs=1e-12)


def test_cluster_bootstrap_does_not_depend_on_the_labels_type():
    # 12 integer clusters: numeric order (0, 1, 2, ...) differs from string order (0, 1, 10, ...)
    g = np.random.default_rng(0)
    hits = list(g.random(36).round(2))
    ints = [i // 3 for i in range(36)]
    got = cluster_bootstrap(hits, ints, 400, seed=9)
    assert got == cluster_bootstrap(hits, [str(c) for c in ints], 400, seed=9)
    assert cluster_interval(hits, ints, 400, 9) == cluster_interval(
        hits, [str(c) for c in ints], 400, 9
    )


def test_cluster_bootstrap_is_seeded():
    g = np.random.default_rng(1)
    hits = list(g.random(40).round(3))
    clusters = [i // 2 for i in range(40)]
    a = cluster_bootstrap(hits, clusters, 300, seed=4)
    assert a == cluster_bootstrap(hits, clusters, 300, seed=4)
    assert a != cluster_bootstrap(hits, clusters, 300, seed=5)
    assert a != cluster_bootstrap(hits, clusters, 301, seed=4)
    # the interval passes its seed on: here the bootstrap's upper bound binds for seed 4, and
    # Wilson's for seed 7 (worked out with the two functions apart)
    hits = [1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1]
    clusters = [i // 3 for i in range(12)]
    n_eff = 12 / design_effect(hits, clusters)
    wl, wh = wilson(sum(hits) / 12 * n_eff, n_eff)
    for seed in (4, 7):
        bl, bh = cluster_bootstrap(hits, clusters, 300, seed)
        assert cluster_interval(hits, clusters, 300, seed) == (min(wl, bl), max(wh, bh))
    assert cluster_interval(hits, clusters, 300, 4) != cluster_interval(hits, clusters, 300, 7)


def test_cluster_interval_passes_its_seed_and_size_to_the_bootstrap(monkeypatch):
    from fmi.experiments import intervals

    calls = []
    monkeypatch.setattr(
        intervals, "cluster_bootstrap", lambda h, c, n, seed: calls.append((n, seed)) or (0.4, 0.6)
    )
    assert intervals.cluster_interval([1, 0, 1, 0], ["a", "a", "b", "b"], 77, 13)[0] <= 0.4
    assert calls == [(77, 13)]


def test_cluster_bootstrap_needs_one_cluster_per_outcome():
    with pytest.raises(ValueError):
        cluster_bootstrap([1, 0, 1], ["a", "b"], 10, 0)
