"""The soft prefix's comparison rows: one per (``K``, steps), at the ``lr`` tuned per ``K``."""

from __future__ import annotations

import torch
from torch import Tensor

from analyses.compare.rows import Cost, Row, score
from analyses.compare.soft_prefix.config import SoftPrefixConfig
from analyses.compare.soft_prefix.prepend import SITE
from analyses.compare.soft_prefix.read import read_outputs
from analyses.compare.soft_prefix.tune import Tuning, tuned_rates
from analyses.compare.soft_prefix.write import Fit, optimise
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import SplitRun
from fmi.memory.write import write_prompt


def soft_prefix_rows(
    model, run: SplitRun, cfg: RecallConfig, pcfg: SoftPrefixConfig, train_split=None
) -> tuple[list[Row], dict]:
    """One row per (``K``, steps) on ``run``'s split: a prefix written from all its statements
    at the learning rate tuned for that ``K`` on ``train_split``
    (:func:`analyses.compare.soft_prefix.tune.tune`; without it, ``pcfg.lr``), prepended to every
    query. The tuned (``K``, steps) is marked in the details."""
    tuning = tuned_rates(model, cfg, pcfg, train_split)
    templates = run.split.templates  # type: ignore[attr-defined]
    texts = [write_prompt(templates, e)[0] for e in run.entries]
    targets = torch.tensor([e.target for e in run.entries])
    on = torch.ones(len(run.qs.texts), dtype=torch.bool)
    rows, points, fits = [], [], {}
    for k in pcfg.sizes:
        fit = optimise(
            model,
            texts,
            targets,
            k,
            pcfg.steps,
            tuning.lr_by_size[k],
            init=pcfg.init,
            seed=pcfg.seed,
            batch_size=cfg.batch_size,
        )
        fits[k] = {"losses": fit.losses, "seconds": fit.seconds, "scale": fit.scale}
        for s in sorted(fit.snapshots):
            row = prefix_row(model, run, cfg, fit, k, s, tuning, on)
            rows.append(row)
            points.append(curve_point(row, fit))
    return rows, {
        "curve": points,
        "fits": fits,
        "config": pcfg.to_dict(),
        "tuning": tuning.to_dict(),
    }


def prefix_row(
    model,
    run: SplitRun,
    cfg: RecallConfig,
    fit: Fit,
    k: int,
    s: int,
    tuning: Tuning,
    on: Tensor,
) -> Row:
    """The row of ``fit``'s ``k``-token prefix after ``s`` steps, read on every query."""
    out = read_outputs(model, run, cfg, fit.snapshots[s])
    n = len(run.entries)
    cost = Cost(
        s,
        s,
        fit.seconds[s],
        f"{s} Adam step(s), each one forward and one backward pass over all {n} "
        f"statements at once with the {k}-token prefix prepended (passes over the "
        f"split, not per binding), after an embedding-only pass for the scale",
    )
    return score(
        model,
        run,
        cfg,
        f"GradMem soft prefix (K={k}, {s} step{'s' if s > 1 else ''})",
        "gradient-written prefix",
        out,
        cost,
        active=on,
        detail={
            "K": k,
            "steps": s,
            "lr": tuning.lr_by_size[k],
            "site": SITE,
            "statements": n,
            "embedding_scale": fit.scale,
            "loss_start": fit.losses[0],
            "final_loss": fit.losses[s],
            "tuning_budget": tuning.budget,
            "tuned": tuning.is_tuned(k, s),
            "tuned_choice": tuning.choice,
            "tuning_seconds": tuning.seconds,
        },
    )


def curve_point(row: Row, fit: Fit) -> dict:
    """The figure's point for ``row``: its setting, rates, loss and seconds."""
    k, s = row.detail["K"], row.detail["steps"]
    return {
        "K": k,
        "steps": s,
        "lr": row.detail["lr"],
        "read": row.summary["read"],
        "write": row.summary["write"],
        "plain": row.summary["plain"],
        "unrelated_changed": row.summary["unrelated_changed"],
        "loss": fit.losses[s],
        "seconds": fit.seconds[s],
        "tuned": row.detail["tuned"],
    }
