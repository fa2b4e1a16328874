"""95% intervals for rates: Wilson for independent 0/1 outcomes, a cluster interval for reads.

Read and write prompts come two or more per symbol (one per context), so they are not
independent: a symbol whose key is weak misses in every context. :func:`cluster_interval`
accounts for that twice over and keeps the wider bound on each side:

- a cluster bootstrap: symbols are resampled with replacement, each bringing all its prompts;
- a Wilson interval at the effective sample size ``n / deff``, with the design effect
  ``deff = 1 + (m - 1) * icc`` (``m`` the mean cluster size, ``icc`` the one-way ANOVA
  intra-class correlation, clipped to [0, 1], and taken as 1 when every outcome is equal, where
  it cannot be estimated: then each symbol counts once).

Neither is ever zero-width for ``n >= 1``: at 0/n Wilson's upper bound is
``z^2 / (n + z^2) > 0``, and at n/n its lower bound is below 1.

The editing benchmark (:mod:`analyses.edit.rates`) uses the same interval
(:func:`cluster_rate`), its clusters the edits and the bystanders of the neighbourhood prompts.

>>> lo, hi = wilson(0, 40)
>>> lo, round(hi, 4)
(0.0, 0.0876)
>>> [round(x, 4) for x in wilson(40, 40)]
[0.9124, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (``n`` may be fractional,
    an effective sample size); ``(nan, nan)`` for ``n == 0``."""
    if n <= 0:
        return (float("nan"), float("nan"))
    if not 0 <= k <= n:
        raise ValueError(f"wilson needs 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # the bounds hold p exactly (rounding could put 0 - 1e-17 above a rate of 0)
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def wilson_rate(hits: Sequence[bool]) -> tuple[float, float]:
    """:func:`wilson` of a list of 0/1 outcomes."""
    return wilson(int(sum(bool(h) for h in hits)), len(hits))


def icc(values: Sequence[float], clusters: Sequence[object]) -> float:
    """One-way ANOVA intra-class correlation of ``values`` grouped by ``clusters`` (unequal
    sizes: the ``n0`` correction), clipped to [0, 1]; 1 when the total variance is zero."""
    if len(values) != len(clusters):
        raise ValueError(f"{len(values)} values but {len(clusters)} cluster labels")
    groups: dict[object, list[float]] = {}
    for v, c in zip(values, clusters, strict=True):
        groups.setdefault(c, []).append(float(v))
    n, g = len(values), len(groups)
    if g < 2 or n <= g:
        return 1.0
    grand = sum(values) / n
    ssb = sum(len(x) * (sum(x) / len(x) - grand) ** 2 for x in groups.values())
    ssw = sum(sum((v - sum(x) / len(x)) ** 2 for v in x) for x in groups.values())
    if ssb + ssw == 0:
        return 1.0
    msb, msw = ssb / (g - 1), ssw / (n - g)
    n0 = (n - sum(len(x) ** 2 for x in groups.values()) / n) / (g - 1)
    denom = msb + (n0 - 1) * msw
    return 1.0 if denom <= 0 else min(1.0, max(0.0, (msb - msw) / denom))


def design_effect(values: Sequence[float], clusters: Sequence[object]) -> float:
    """``1 + (m - 1) * icc``, ``m`` the mean cluster size."""
    m = len(values) / max(1, len(set(clusters)))
    return 1.0 + (m - 1.0) * icc(values, clusters)


def cluster_bootstrap(
    hits: Sequence[float], clusters: Sequence[object], n_boot: int, seed: int
) -> tuple[float, float]:
    """Percentile 95% interval of the pooled mean when whole clusters are resampled."""
    if not hits:
        return (float("nan"), float("nan"))
    order = sorted(set(clusters), key=str)
    index = {c: i for i, c in enumerate(order)}
    sums = np.zeros(len(order))
    sizes = np.zeros(len(order))
    for h, c in zip(hits, clusters, strict=True):
        sums[index[c]] += float(h)
        sizes[index[c]] += 1
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(order), size=(n_boot, len(order)))
    means = sums[pick].sum(axis=1) / sizes[pick].sum(axis=1)
    return (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))


def cluster_interval(
    hits: Sequence[float], clusters: Sequence[object], n_boot: int, seed: int
) -> tuple[float, float]:
    """The hull of :func:`cluster_bootstrap` and the Wilson interval at ``n / deff`` (see the
    module): never zero-width, never narrower than either.

    >>> lo, hi = cluster_interval([1, 1, 1, 1], ["a", "a", "b", "b"], 200, 0)
    >>> (round(lo, 4), hi) == (round(wilson(2, 2)[0], 4), 1.0)   # two symbols, each once
    True
    """
    if not hits:
        return (float("nan"), float("nan"))
    n = len(hits)
    n_eff = n / design_effect(hits, clusters)
    k_eff = sum(float(h) for h in hits) / n * n_eff
    wl, wh = wilson(min(k_eff, n_eff), n_eff)
    bl, bh = cluster_bootstrap(hits, clusters, n_boot, seed)
    return (min(wl, bl), max(wh, bh))


def effective_n(values: Sequence[float], clusters: Sequence[object]) -> float:
    """``n / deff``: how many independent outcomes ``values`` are worth (:func:`design_effect`);
    every outcome equal: the number of clusters.

    >>> effective_n([1, 1, 1, 0, 0, 0], ["a", "a", "b", "b", "c", "c"])   # deff 1.5 (icc 0.5)
    4.0
    >>> effective_n([1, 1, 1, 1], ["a", "a", "a", "b"])
    2.0
    """
    if not values:
        return 0.0
    return len(values) / design_effect(values, clusters)


@dataclass(frozen=True)
class ClusterRate:
    """A rate of 0/1 outcomes grouped in clusters: the pooled rate, :func:`cluster_interval`,
    the outcomes counted, the clusters they fall in, and the design effect."""

    rate: float
    ci: tuple[float, float]
    n: int
    clusters: int
    deff: float


def cluster_rate(
    hits: Sequence[float], clusters: Sequence[object], n_boot: int = 2000, seed: int = 0
) -> ClusterRate | None:
    """The :class:`ClusterRate` of ``hits`` (``None`` for no outcome): the pooled mean, and the
    hull of the cluster bootstrap (``n_boot`` resamples, ``seed``) and Wilson at
    :func:`effective_n` (:func:`cluster_interval`).

    >>> r = cluster_rate([1, 1, 1, 0, 0, 0], ["a", "a", "b", "b", "c", "c"], 200, 0)
    >>> r.rate, r.n, r.clusters, r.deff
    (0.5, 6, 3, 1.5)
    >>> r.ci[0] <= wilson(2, 4)[0] and r.ci[1] >= wilson(2, 4)[1]
    True
    """
    if len(hits) != len(clusters):
        raise ValueError(f"{len(hits)} outcomes but {len(clusters)} cluster labels")
    if not hits:
        return None
    lo, hi = cluster_interval(hits, clusters, n_boot, seed)
    return ClusterRate(
        sum(float(h) for h in hits) / len(hits),
        (lo, hi),
        len(hits),
        len(set(clusters)),
        design_effect(hits, clusters),
    )


def cluster_mean(
    values: Sequence[float], clusters: Sequence[object], n_boot: int = 2000, seed: int = 0
) -> tuple[float, tuple[float, float] | None]:
    """The mean of real-valued ``values`` and its :func:`cluster_bootstrap` percentile interval
    (``None`` with fewer than two clusters, where resampling clusters cannot vary).

    >>> mean, ci = cluster_mean([0.5, 0.25, -0.25], ["a", "a", "b"], 200, 0)
    >>> mean, ci[0] < mean < ci[1]
    (0.16666666666666666, True)
    >>> cluster_mean([0.5, 0.25], ["a", "a"])
    (0.375, None)
    """
    if len(values) != len(clusters):
        raise ValueError(f"{len(values)} values but {len(clusters)} cluster labels")
    if not values:
        raise ValueError("cluster_mean needs at least one value")
    mean = math.fsum(float(v) for v in values) / len(values)
    if len(set(clusters)) < 2:
        return mean, None
    return mean, cluster_bootstrap(values, clusters, n_boot, seed)
