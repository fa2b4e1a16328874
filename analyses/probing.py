"""Linear probes on plain arrays: grouped cross-validated accuracy, shuffled-label controls,
transfer to unseen classes, Wilson and bootstrap intervals. No model in here.

Accuracy intervals are 95% Wilson intervals on the pooled held-out predictions (every sample is
predicted once, by the fold that did not train on its group); they treat the predictions as
independent, which ignores the shared training data of a fold. AUC intervals are percentile
intervals of a stratified bootstrap over the test samples (the probe itself is held fixed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import Tensor

from fmi.errors import ConfigError

N_BOOT = 1000
Z95 = 1.959963984540054
MAX_ITER = 2000

Features = Float[np.ndarray, "n d"] | Float[Tensor, "n d"]


@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated accuracy with its 95% Wilson interval; ``chance`` = majority-class rate."""

    accuracy: float
    ci_low: float
    ci_high: float
    n: int
    chance: float


@dataclass(frozen=True)
class TransferResult:
    """A probe scored on a new pair: accuracy under a fixed class mapping (Wilson 95%) and the
    symmetrised AUC ``max(AUC, 1 - AUC)`` of its score (bootstrap 95%)."""

    accuracy: float
    ci_low: float
    ci_high: float
    auc: float
    auc_low: float
    auc_high: float
    n: int


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n`` (95% by default)."""
    if n < 1 or not 0 <= correct <= n:
        raise ConfigError(f"wilson_interval needs 0 <= correct <= n and n >= 1, got {correct}/{n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def _array(x) -> np.ndarray:
    """``x`` (a Tensor or array-like) as a NumPy array."""
    if isinstance(x, Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


def make_probe(seed: int) -> Pipeline:
    """Standardized features into an L2 logistic regression (sklearn defaults, C = 1)."""
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("logreg", LogisticRegression(max_iter=MAX_ITER, random_state=seed)),
        ]
    )


def _check_xy(x: np.ndarray, y: np.ndarray, what: str) -> None:
    if x.ndim != 2:
        raise ConfigError(f"{what}: features must be [n, d], got shape {x.shape}")
    if len(y) != len(x):
        raise ConfigError(f"{what}: {len(x)} feature rows but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ConfigError(f"{what}: needs at least two classes, got {np.unique(y).tolist()}")


def probe_accuracy(
    x: Features,
    y: Int[np.ndarray, " n"],
    groups: Int[np.ndarray, " n"],
    *,
    folds: int,
    seed: int,
) -> ProbeResult:
    """Grouped, stratified ``folds``-fold CV accuracy of :func:`make_probe` on ``(x, y)``.

    No group (here: symbol) is ever in both the training and the test part of a fold, so a probe
    cannot score by recognising the word. Folds are shuffled with ``seed``.
    """
    x, y, groups = _array(x), _array(y), _array(groups)
    _check_xy(x, y, "probe_accuracy")
    if len(groups) != len(y):
        raise ConfigError(f"probe_accuracy: {len(y)} labels but {len(groups)} groups")
    if folds < 2:
        raise ConfigError(f"probe_accuracy: folds must be >= 2, got {folds}")
    if len(np.unique(groups)) < folds:
        raise ConfigError(
            f"probe_accuracy: {folds} folds need at least {folds} groups (symbols), "
            f"got {len(np.unique(groups))}"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    correct = 0
    # One BLAS thread: these fits are tiny, and threads fighting over two cores made them ~15x
    # slower (measured).
    with threadpool_limits(limits=1):
        for train, test in splitter.split(x, y, groups):
            probe = make_probe(seed).fit(x[train], y[train])
            correct += int((probe.predict(x[test]) == y[test]).sum())
    n = len(y)
    low, high = wilson_interval(correct, n)
    _, counts = np.unique(y, return_counts=True)
    return ProbeResult(correct / n, low, high, n, float(counts.max() / n))


def shuffled_labels(y: Int[np.ndarray, " n"], seed: int) -> Int[np.ndarray, " n"]:
    """``y`` permuted with a seeded RNG: the labels lose any link to the features."""
    return np.random.default_rng(seed).permutation(_array(y))


def shuffled_accuracy(
    x: Features,
    y: Int[np.ndarray, " n"],
    groups: Int[np.ndarray, " n"],
    *,
    folds: int,
    seed: int,
) -> ProbeResult:
    """The control: :func:`probe_accuracy` with labels shuffled (should sit near chance)."""
    return probe_accuracy(x, shuffled_labels(y, seed), groups, folds=folds, seed=seed)


def auc(scores: Float[np.ndarray, " n"], y: Int[np.ndarray, " n"]) -> float:
    """ROC AUC of ``scores`` for ``y == 1`` vs ``y == 0`` (ties count half)."""
    return float(_auc_rows(_array(scores)[None], _array(y))[0])


def _auc_rows(
    scores: Float[np.ndarray, "b n"], y: Int[np.ndarray, " n"]
) -> Float[np.ndarray, " b"]:
    """AUC of each row of ``scores`` (Mann-Whitney: mean rank of the positives)."""
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        raise ConfigError(f"auc needs both classes 0 and 1, got {n1} positives and {n0} negatives")
    ranks = rankdata(scores, axis=1)
    return (ranks[:, pos].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def bootstrap_auc(
    scores: Float[np.ndarray, " n"], y: Int[np.ndarray, " n"], *, seed: int, n_boot: int = N_BOOT
) -> Float[np.ndarray, " n_boot"]:
    """AUCs of ``n_boot`` stratified bootstrap resamples (each class resampled on its own)."""
    scores, y = _array(scores), _array(y)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rows = np.concatenate(
        [rng.choice(pos, (n_boot, len(pos))), rng.choice(neg, (n_boot, len(neg)))], axis=1
    )
    labels = np.r_[np.ones(len(pos), dtype=int), np.zeros(len(neg), dtype=int)]
    return _auc_rows(scores[rows], labels)


def probe_transfer(
    x_train: Features,
    y_train: Int[np.ndarray, " n"],
    x_test: Features,
    y_test: Int[np.ndarray, " m"],
    *,
    seed: int,
    n_boot: int = N_BOOT,
) -> TransferResult:
    """Fit a binary probe on ``(x_train, y_train)`` and score it on another pair.

    Labels are 0/1; class 1 of the test pair is taken to correspond to class 1 of the training
    pair (the fixed mapping behind ``accuracy``). The AUC of the probe's score on the test pair is
    symmetrised, ``max(AUC, 1 - AUC)``: it asks whether the training direction separates the new
    pair at all, whichever way round. Being a maximum it sits above 0.5 even for noise.
    """
    x_train, y_train = _array(x_train), _array(y_train)
    x_test, y_test = _array(x_test), _array(y_test)
    _check_xy(x_train, y_train, "probe_transfer (train)")
    _check_xy(x_test, y_test, "probe_transfer (test)")
    for what, labels in (("y_train", y_train), ("y_test", y_test)):
        if set(np.unique(labels).tolist()) != {0, 1}:
            raise ConfigError(f"probe_transfer: {what} must be 0/1, got {np.unique(labels)}")
    with threadpool_limits(limits=1):
        probe = make_probe(seed).fit(x_train, y_train)
        scores = probe.decision_function(x_test)
    correct = int(((scores > 0).astype(int) == y_test).sum())
    low, high = wilson_interval(correct, len(y_test))
    raw = auc(scores, y_test)
    boot = np.quantile(bootstrap_auc(scores, y_test, seed=seed, n_boot=n_boot), [0.025, 0.975])
    if raw >= 0.5:
        a, a_low, a_high = raw, float(boot[0]), float(boot[1])
    else:
        a, a_low, a_high = 1 - raw, float(1 - boot[1]), float(1 - boot[0])
    return TransferResult(correct / len(y_test), low, high, a, a_low, a_high, len(y_test))


def shuffled_transfer(
    x_train: Features,
    y_train: Int[np.ndarray, " n"],
    x_test: Features,
    y_test: Int[np.ndarray, " m"],
    *,
    seed: int,
    n_boot: int = N_BOOT,
) -> TransferResult:
    """The control: :func:`probe_transfer` from a probe fitted on shuffled training labels.

    Its AUC is what an arbitrary learned direction achieves on the new pair (the floor the real
    probe's AUC must beat, e.g. where the new contexts differ by token identity alone).
    """
    return probe_transfer(
        x_train, shuffled_labels(y_train, seed), x_test, y_test, seed=seed, n_boot=n_boot
    )
