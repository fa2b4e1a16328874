"""An epsilon-codebook (GRACE-style, Hartvigsen et al. 2023): nearest key within a radius.

The codebook holds the memory's own raw keys (the standardized residual at the symbol site, the
invented word's last token; no learned projector, as GRACE has none). A query's distance to an
entry is ``1 - cos`` of its closest content token to the key; the nearest entry's value is
injected only when that distance is within the deferral radius ``epsilon``, otherwise the model
answers alone. ``epsilon`` is chosen on training data: it is ``1 -`` the raw mode's calibrated
threshold (at most ``false_accept`` of training plain and unrelated prompts accepted). The whole
read vs unrelated curve costs one decode: each query's output with and without its nearest value
is known, and a radius only chooses between them.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float, Int
from torch import Tensor

from fmi.compare.rows import Cost, Row, fired, inject, mix, score
from fmi.config import RecallConfig
from fmi.evaluate import SplitRun
from fmi.metrics import rate


def nearest(run: SplitRun) -> tuple[Float[Tensor, " q"], Int[Tensor, " q"]]:
    """Each query's cosine distance to its nearest raw key, and that entry."""
    best, idx = run.scores.channel("raw").max(dim=1)
    return 1.0 - best, idx


def within(distance: Float[Tensor, " q"], epsilon: float) -> Bool[Tensor, " q"]:
    """The deferral rule: inject where the nearest key is within ``epsilon``."""
    return distance <= epsilon


def codebook_rows(
    model, run: SplitRun, cfg: RecallConfig, threshold: float, points: int, write_cost: Cost
) -> tuple[list[Row], dict]:
    """The codebook's row at the training-chosen epsilon, and its curve over ``points`` radii."""
    distance, idx = nearest(run)
    deltas = run.memory.alpha * run.memory.values[idx]
    injected = inject(model, run, cfg, run.memory.inject_site, deltas)
    chosen = 1.0 - threshold
    grid = np.quantile(distance.numpy(), np.linspace(0, 1, points)).tolist()
    curve = []
    for eps in sorted({*grid, chosen, 0.0}):
        active = within(distance, eps)
        hits = run.hits(model, mix(active, injected, run.base_outputs))
        metrics = ("read", "plain", "unrelated", "unrelated_changed")
        point = {"epsilon": eps, **{m: rate(hits[m]) for m in metrics}}
        curve.append({**point, "fired": fired(run, active)})
    active = within(distance, chosen)
    reads = run.qs.index("read")
    right = [bool(idx[q] == run.qs.entry[q]) for q in reads]
    row = score(
        model,
        run,
        cfg,
        f"epsilon-codebook (eps {chosen:.3f})",
        "codebook",
        mix(active, injected, run.base_outputs),
        write_cost,
        active=active,
        detail={"epsilon": chosen, "nearest_right": float(np.mean(right))},
    )
    return [row], {"chosen": chosen, "curve": curve}
