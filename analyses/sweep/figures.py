"""The sweep report's figures and its one-line finding, from the merged document (data in).

Each varied dimension (checkpoint step, symbol key layer, token key layer, injection site) gets
one figure: read, plain and unrelated_changed against it, one line per model and mode, the
other dimensions held at that model and mode's best cell. A dimension with one value gets no
figure; the table of best cells says which dimensions were held and at what.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.sweep.merge import METRICS, records, split_shown
from fmi.reporting.report import Panel, Report

# dimension -> (row key of its label, row key of its x position, axis title)
DIMENSIONS = {
    "revision": ("revision", "step", "checkpoint step (log)"),
    "symbol": ("symbol", "symbol_layer", "symbol key layer (residual after block L)"),
    "token": ("token", "token_layer", "token key layer (residual after block L)"),
    "inject": ("inject", "inject_layer", "injection site (depth in blocks)"),
}
GRID = ("model", "mode", "revision", "symbol", "token", "inject")
COLOURS = plotly.colors.qualitative.Plotly  # one per model and mode, the same in every panel


def step_of(revision: str | None) -> int | None:
    """The training step a ``stepN`` revision names; ``None`` for any other revision.

    >>> step_of("step1000"), step_of("main"), step_of(None)
    (1000, None, None)
    """
    m = re.fullmatch(r"step(\d+)", revision or "")
    return int(m.group(1)) if m else None


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of :func:`analyses.sweep.merge.records` merged over seeds: each metric's mean, and
    an interval spanning the seeds' 95% intervals (one seed: its interval).

    >>> rows = [{"model": "m", "mode": "d", "revision": None, "symbol": "1", "token": "0",
    ...          "inject": "x", "symbol_layer": 1.0, "token_layer": 0.0, "inject_layer": 1.5,
    ...          "seed": s, "read": r, "read_ci": [r - 0.1, r + 0.1], "plain": 0.0,
    ...          "plain_ci": [0, 0], "unrelated_changed": 0.0, "unrelated_changed_ci": [0, 0]}
    ...         for s, r in ((0, 0.4), (1, 0.6))]
    >>> one = aggregate(rows)[0]
    >>> round(one["read"], 3), [round(v, 3) for v in one["read_ci"]], one["seeds"]
    (0.5, [0.3, 0.7], 2)
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GRID), []).append(row)
    out = []
    for group in groups.values():
        first = group[0]
        keep = (*GRID, "symbol_layer", "token_layer", "inject_layer", "n_layers", "n_parameters")
        agg = {k: first.get(k) for k in keep}
        agg["step"] = step_of(first["revision"])
        agg["seeds"] = len(group)
        for m in METRICS:
            agg[m] = float(np.mean([r[m] for r in group]))
            lo, hi = zip(*(r[f"{m}_ci"] for r in group), strict=True)
            agg[f"{m}_ci"] = [min(lo), max(hi)]
        out.append(agg)
    return out


def net(row: dict[str, Any]) -> float:
    """What a cell is ranked by: read minus the false activations (plain + unrelated_changed),
    so that a cell that reads by firing on everything does not rank first.

    >>> net({"read": 0.9, "plain": 0.1, "unrelated_changed": 0.05})
    0.75
    """
    return round(row["read"] - row["plain"] - row["unrelated_changed"], 12)


def best(agg: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and mode, the cell with the highest :func:`net` (seed means); among cells
    within 0.01 of it, the highest read, then the first in grid order.

    >>> rows = [{"model": "m", "mode": "d", "read": r, "plain": p, "unrelated_changed": u,
    ...          "symbol": s} for r, p, u, s in ((0.7, 1.0, 1.0, "1"), (0.5, 0.0, 0.0, "2"),
    ...                                          (0.505, 0.0, 0.0, "3"), (0.1, 0, 0, "4"))]
    >>> best(rows)[0]["symbol"]
    '3'
    """
    by: dict[tuple, list[dict[str, Any]]] = {}
    for row in agg:
        by.setdefault((row["model"], row["mode"]), []).append(row)
    out = []
    for group in by.values():
        top = max(net(r) for r in group)
        near = [r for r in group if net(r) >= top - 0.01]
        out.append(max(near, key=lambda r: r["read"]))  # max keeps the first of equal reads
    return out


def values(agg: list[dict[str, Any]], model: str, dim: str) -> list[Any]:
    """The distinct labels of dimension ``dim`` among ``model``'s cells, in grid order.

    >>> values([{"model": "m", "symbol": "2"}, {"model": "m", "symbol": "4"}], "m", "symbol")
    ['2', '4']
    """
    label = DIMENSIONS[dim][0]
    return list(dict.fromkeys(r[label] for r in agg if r["model"] == model))


def _error(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    return {
        "type": "data",
        "symmetric": False,
        "array": [r[f"{metric}_ci"][1] - r[metric] for r in rows],
        "arrayminus": [r[metric] - r[f"{metric}_ci"][0] for r in rows],
    }


def _x(rows: list[dict[str, Any]], dim: str) -> tuple[list[Any], bool]:
    """x positions and whether they are numeric (step 0 drawn at 1 on the log axis)."""
    label, key, _ = DIMENSIONS[dim]
    if all(r[key] is not None for r in rows):
        xs = [r[key] for r in rows]
        return ([max(x, 1) for x in xs] if dim == "revision" else xs), True
    return [str(r[label]) for r in rows], False


def dimension_panel(agg: list[dict[str, Any]], dim: str) -> Panel | None:
    """Read, plain and unrelated_changed against one dimension, per model and mode, the
    others held at the best cell's; ``None`` when no model has two values of it.

    >>> dimension_panel([{"model": "m", "revision": None}], "revision") is None
    True
    """
    models = [m for m in dict.fromkeys(r["model"] for r in agg) if len(values(agg, m, dim)) > 1]
    if not models:
        return None
    label, _, title = DIMENSIONS[dim]
    fig = make_subplots(rows=1, cols=len(METRICS), subplot_titles=METRICS)
    numeric, span = True, 0.0
    tops = best(agg)
    for k, top in enumerate(tops):
        if top["model"] not in models:
            continue
        held = [g for g in GRID if g != label]
        rows = [r for r in agg if all(r[g] == top[g] for g in held)]
        xs, is_num = _x(rows, dim)
        if is_num:  # in depth (or step) order; labels stay in the config's order
            order = sorted(range(len(rows)), key=lambda i: xs[i])
            rows, xs = [rows[i] for i in order], [xs[i] for i in order]
        numeric = numeric and is_num
        span = max(span, max(xs) - min(xs)) if is_num else span
        colour = COLOURS[k % len(COLOURS)]
        for col, metric in enumerate(METRICS, start=1):
            fig.add_scatter(
                x=xs,
                y=[r[metric] for r in rows],
                error_y=_error(rows, metric),
                name=f"{top['model']}: {top['mode']}",
                legendgroup=f"{top['model']}: {top['mode']}",
                showlegend=col == 1,
                line={"color": colour},
                text=[str(r[label]) for r in rows],
                hovertemplate="%{text}: %{y:.3f}<extra>%{fullData.name}</extra>",
                row=1,
                col=col,
            )
    axis: dict[str, Any] = {"title": title, "type": "log" if dim == "revision" and numeric else "-"}
    if numeric and dim != "revision" and span <= 12:
        axis["dtick"] = 1  # whole blocks
    for col in range(1, len(METRICS) + 1):
        fig.update_xaxes(**axis, row=1, col=col)
        fig.update_yaxes(range=[-0.02, 1.05], row=1, col=col)
    fig.update_layout(height=460, title=f"metrics against {title.split(' (')[0]}")
    skipped = sorted({r["model"] for r in agg} - set(models))
    note = f" Not varied for {', '.join(skipped)}." if skipped else ""
    return Panel(
        fig,
        f"Greedy exact match on read prompts (read), plain prompts (the question without its "
        f"context answering a label bound to the symbol: lower is better) and "
        f"unrelated prompts whose output the memory changed (unrelated_changed), against "
        f"{title}; the other dimensions held at each model and mode's "
        f"best cell. Points: the mean over seeds; bars: the span of the seeds' 95% intervals."
        + note,
    )


def _size(row: dict[str, Any]) -> float:
    """What orders models by size: the parameter count where the header has it, else depth.

    >>> _size({"n_parameters": 10, "n_layers": 2}), _size({"n_layers": 2})
    (10.0, 2.0)
    """
    return float(row.get("n_parameters") or row.get("n_layers") or 0)


Point = tuple[dict[str, Any], float, float, float]  # best cell, its layer, bar low, bar high


def best_layer_lines(agg: list[dict[str, Any]]) -> list[tuple[str, list[Point]]]:
    """One line per varied layer dimension and mode, models smallest first: each point the best
    cell, its layer as a fraction of depth, and the lowest and highest layer whose net (read -
    plain - unrelated_changed) is within 0.01 of the best cell's (the others held at the best
    cell's). A dimension that fewer than two models vary has no line.

    >>> best_layer_lines([{"model": "m", "symbol": "1", "token": "0", "inject": "x"}])
    []
    """
    lines = []
    for dim in ("symbol", "token", "inject"):
        label, key, title = DIMENSIONS[dim]
        models = [m for m in dict.fromkeys(r["model"] for r in agg) if len(values(agg, m, dim)) > 1]
        if len(models) < 2:
            continue
        tops = best(agg)
        for mode in dict.fromkeys(t["mode"] for t in tops):
            pts = []
            for top in sorted(
                (t for t in tops if t["mode"] == mode and t["model"] in models), key=_size
            ):
                held = [g for g in GRID if g != label]
                rows = [r for r in agg if all(r[g] == top[g] for g in held)]
                near = [r[key] for r in rows if net(r) >= net(top) - 0.01]
                depth = float(top["n_layers"] or 1)
                pts.append((top, top[key] / depth, min(near) / depth, max(near) / depth))
            lines.append((f"{title.split(' (')[0]}: {mode}", pts))
    return lines


def size_panel(agg: list[dict[str, Any]]) -> Panel | None:
    """:func:`best_layer_lines` against model size (parameter count, log x; models in size
    order where a count is missing); ``None`` when there is no line.

    >>> size_panel([{"model": "m", "symbol": "1", "token": "0", "inject": "x"}]) is None
    True
    """
    lines = best_layer_lines(agg)
    if not lines:
        return None
    by_params = all(r.get("n_parameters") for r in agg)
    fig = go.Figure()
    for k, (name, pts) in enumerate(lines):
        fig.add_scatter(
            x=[p[0]["n_parameters"] if by_params else p[0]["model"] for p in pts],
            y=[p[1] for p in pts],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [p[3] - p[1] for p in pts],
                "arrayminus": [p[1] - p[2] for p in pts],
            },
            mode="lines+markers",
            name=name,
            line={"color": COLOURS[k % len(COLOURS)]},
            text=[f"{p[0]['model']}, read {p[0]['read']:.3f}" for p in pts],
            hovertemplate="%{text}: %{y:.2f} of depth<extra>%{fullData.name}</extra>",
        )
    fig.update_xaxes(
        title="parameters (log)" if by_params else "model (smallest first)",
        type="log" if by_params else "category",
    )
    fig.update_yaxes(title="best layer / number of blocks", range=[-0.05, 1.05])
    fig.update_layout(height=460, title="best layer against model size")
    return Panel(
        fig,
        "The best cell's layer of each varied layer dimension as a fraction of the model's "
        "depth (layer L is the residual stream after block L; the final norm is at depth "
        "minus a half), against the model's parameter count, one line per dimension and mode. "
        "Bars span every layer whose net score (read - plain - unrelated_changed, means over "
        "seeds) is within 0.01 of the best cell's, the other dimensions held at the best "
        "cell's: a long bar means the layer hardly matters there.",
    )


def _fmt(row: dict[str, Any], metric: str) -> str:
    lo, hi = row[f"{metric}_ci"]
    return f"{row[metric]:.3f} [{lo:.2f}, {hi:.2f}]"


def best_panel(agg: list[dict[str, Any]], split: str) -> Panel:
    """A table: each model and mode's best cell (:func:`best`) and its metrics, with the
    dimensions that were not varied named in the caption.

    >>> best_panel([], "same").figure.data[0].type
    'table'
    """
    tops = best(agg)
    columns = {
        "model": [t["model"] for t in tops],
        "mode": [t["mode"] for t in tops],
        "revision": [t["revision"] or "(own)" for t in tops],
        "symbol layer": [t["symbol"] for t in tops],
        "token layer": [t["token"] for t in tops],
        "inject site": [t["inject"] for t in tops],
        **{m: [_fmt(t, m) for t in tops] for m in METRICS},
        "seeds": [t["seeds"] for t in tops],
    }
    fig = go.Figure(
        go.Table(
            header={"values": list(columns), "align": "left"},
            cells={"values": list(columns.values()), "align": "left"},
            columnwidth=[1.4, 1.4, 0.9, 0.8, 0.8, 1.6, 1.6, 1.6, 1.6, 0.6],
        )
    )
    fig.update_layout(height=220 + 34 * len(tops), title=f"best cell per model and mode ({split})")
    held = []
    for dim, (_, _, title) in DIMENSIONS.items():
        for model in dict.fromkeys(t["model"] for t in tops):
            only = values(agg, model, dim)
            if len(only) == 1:
                held.append(f"{title.split(' (')[0]} of {model} at {only[0] or '(own weights)'}")
    note = f" Held (one value, no figure): {'; '.join(held)}." if held else ""
    return Panel(
        fig,
        f"Split {split}: the cell with the highest net score, read - plain - "
        f"unrelated_changed (means over seeds); among cells within 0.01 of it, the highest "
        f"read. Intervals span the seeds' 95% "
        f"intervals. Layer L is the residual stream after block L." + note,
    )


def finding(agg: list[dict[str, Any]], split: str) -> str:
    """One line: the best read per model (its mode and sites) on ``split``.

    >>> finding([], "same")
    'No cell has results on split same.'
    """
    if not agg:
        return f"No cell has results on split {split}."
    parts = []
    for model in dict.fromkeys(r["model"] for r in agg):
        top = max((b for b in best(agg) if b["model"] == model), key=lambda b: b["read"])
        rev = f", {top['revision']}" if top["revision"] else ""
        parts.append(
            f"{model}: read {top['read']:.2f} with {top['mode']} (symbol layer {top['symbol']}, "
            f"token layer {top['token']}, inject {top['inject']}{rev})"
        )
    return f"Best read on split {split}: " + "; ".join(parts) + "."


def report(merged: dict[str, Any]) -> Report:
    """The sweep's report: a figure per varied dimension and the table of best cells, on the
    split :func:`analyses.sweep.merge.split_shown` picks; the merged document as its data.

    >>> report({"header": {"model": {"name": "m"}}, "config": {}, "cells": []}).finding
    'No cell has results on split same.'
    """
    split = split_shown(merged) or "same"
    agg = aggregate(records(merged, split))
    panels = [p for dim in DIMENSIONS if (p := dimension_panel(agg, dim)) is not None]
    if (sizes := size_panel(agg)) is not None:
        panels.append(sizes)
    panels.append(best_panel(agg, split))
    data = {k: merged[k] for k in ("config", "cells")}
    data["best"] = best(agg)
    data["split_shown"] = split
    return Report(
        "sweep",
        f"Sweep: {merged['header']['model']['name']}",
        finding(agg, split),
        tuple(panels),
        merged["header"],
        data,
    )
