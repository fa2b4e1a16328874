"""Interval functions against published values, hand-made cases and a naive loop."""

from __future__ import annotations

import numpy as np
import pytest

from fmi.intervals import (
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
