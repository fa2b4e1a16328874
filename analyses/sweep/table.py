"""A merged sweep document (``OUT/sweep.json``) as Markdown for the docs: one table per model
and varied layer dimension, each row a layer and each column a mode's read (with the modes'
plain and unrelated_changed), means over seeds with the span of the seeds' 95% intervals."""

from __future__ import annotations

from typing import Any

from analyses.sweep.figures import DIMENSIONS, GRID, aggregate, best, values
from analyses.sweep.merge import METRICS, records


def _cell(row: dict[str, Any], metric: str) -> str:
    lo, hi = row[f"{metric}_ci"]
    return f"{row[metric]:.3f} [{lo:.2f}, {hi:.2f}]"


def layer_table(agg: list[dict[str, Any]], model: str, dim: str) -> str:
    """One model's rows along ``dim`` (the other dimensions at each mode's best cell): read of
    every mode, then plain and unrelated_changed of every mode.

    >>> row = {"model": "m", "mode": "d", "revision": None, "symbol": "2", "token": "0",
    ...        "inject": "x", "symbol_layer": 2.0, "read": 0.5, "read_ci": [0.25, 0.75],
    ...        "plain": 0.0, "plain_ci": [0.0, 0.1], "unrelated_changed": 0.0,
    ...        "unrelated_changed_ci": [0.0, 0.05]}
    >>> print(layer_table([row], "m", "symbol"))
    | symbol key layer | read: d | plain: d | unrelated_changed: d |
    |---|---|---|---|
    | 2 | 0.500 [0.25, 0.75] | 0.000 [0.00, 0.10] | 0.000 [0.00, 0.05] |
    """
    label, key, title = DIMENSIONS[dim]
    tops = [t for t in best(agg) if t["model"] == model]
    columns = [(metric, t) for metric in METRICS for t in tops]
    by_value: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for metric, top in columns:
        held = [g for g in GRID if g != label]
        for r in agg:
            if all(r[g] == top[g] for g in held):
                by_value.setdefault(r[label], {})[(metric, top["mode"])] = r
    order = sorted(by_value, key=lambda v: next(iter(by_value[v].values()))[key] or 0)
    lines = [
        f"| {title.split(' (')[0]} | "
        + " | ".join(f"{metric}: {t['mode']}" for metric, t in columns)
        + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for value in order:
        cells = [by_value[value].get((metric, t["mode"])) for metric, t in columns]
        text = [
            _cell(c, metric) if c else "" for c, (metric, _) in zip(cells, columns, strict=True)
        ]
        lines.append(f"| {value} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def sweep_tables(doc: dict[str, Any]) -> str:
    """Every model's table of every layer dimension it varies, on the split the report shows.

    >>> sweep_tables({"data": {"cells": [], "split_shown": "same"}})
    ''
    """
    data = doc["data"]
    split = data["split_shown"]
    agg = aggregate(records(data, split))
    parts = []
    for model in dict.fromkeys(r["model"] for r in agg):
        for dim in ("symbol", "token", "inject"):
            if len(values(agg, model, dim)) > 1:
                seeds = max(r["seeds"] for r in agg if r["model"] == model)
                head = (
                    f"{model}, split {split}: mean of {seeds} seed(s) [lowest lower and highest "
                    "upper bound of the seeds' 95% intervals]:"
                )
                parts.append(f"{head}\n\n{layer_table(agg, model, dim)}")
    return "\n\n".join(parts)
