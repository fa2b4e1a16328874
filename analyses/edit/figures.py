"""The editing benchmark's table, curves and one-line finding (data in, figures out).

>>> doc = {"results": {"none": {"1": {"efficacy": 0.0, "efficacy_ci": [0.0, 0.1]}}}}
>>> cell(doc["results"]["none"]["1"], "efficacy")
'0.000 [0.00, 0.10]'
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fmi.reporting.report import Panel, Report

PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880")
RATES = ("efficacy", "generalization", "specificity", "unrelated_changed")
SCORES = ("rewrite_score", "paraphrase_score", "neighbourhood_score")


def cell(result: dict[str, Any], metric: str) -> str:
    """``rate [lo, hi]`` (Wilson 95%), or ``n/a``."""
    value = result.get(metric)
    if value is None:
        return "n/a"
    lo, hi = result[f"{metric}_ci"]
    return f"{value:.3f} [{lo:.2f}, {hi:.2f}]"


def _rows(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, t, result)
        for method, by_t in doc["results"].items()
        for t, result in sorted(by_t.items(), key=lambda kv: int(kv[0]))
    ]


def markdown_table(doc: dict[str, Any]) -> str:
    """One line per method and T: the four rates and the three probability scores with their
    intervals, seconds and passes per edit, and n (edits scored)."""
    cols = (*RATES, *SCORES)
    head = "| method | T | " + " | ".join(cols) + " | s/edit | fwd/edit | bwd/edit | n |"
    lines = [head, "|" + "---|" * (len(cols) + 6)]
    for method, t, r in _rows(doc):
        if "not_run" in r:
            lines.append(f"| {method} | {t} | not run: {r['not_run']} |" + " |" * (len(cols) + 3))
            continue
        cells = " | ".join(cell(r, m) for m in cols)
        lines.append(
            f"| {method} | {t} | {cells} | {r['seconds_per_edit']:.4f} | "
            f"{r['forward_per_edit']:g} | {r['backward_per_edit']:g} | {r['n']} |"
        )
    return "\n".join(lines)


def finding(doc: dict[str, Any]) -> str:
    """The fast memory's figures at the largest T it ran, in one line."""
    fast = doc["results"].get("fast_memory", {})
    ran = [t for t, r in fast.items() if "not_run" not in r]
    if not ran:
        return f"{doc['data']}: {len(doc['results'])} methods on the same edits"
    t = max(ran, key=int)
    r = fast[t]
    return (
        f"{doc['data']}, {t} edits held: fast_memory efficacy {cell(r, 'efficacy')}, "
        f"generalization {cell(r, 'generalization')}, specificity {cell(r, 'specificity')}, "
        f"{r['seconds_per_edit']:.3f} s per edit"
    )


def table_figure(doc: dict[str, Any]) -> go.Figure:
    rows = [(m, t, r) for m, t, r in _rows(doc)]
    cols = ["method", "T", *RATES, *SCORES, "s/edit", "n"]
    values: list[list[str]] = [[] for _ in cols]
    for m, t, r in rows:
        run = "not_run" not in r
        cells = [m, t]
        cells += [cell(r, k) if run else "not run" for k in (*RATES, *SCORES)]
        cells += [f"{r['seconds_per_edit']:.4f}" if run else r["not_run"], str(r.get("n", 0))]
        for i, v in enumerate(cells):
            values[i].append(v)
    fig = go.Figure(go.Table(header={"values": cols}, cells={"values": values}))
    fig.update_layout(height=120 + 28 * len(rows), margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def _colours(doc: dict[str, Any]) -> dict[str, str]:
    """One colour per method, the same in every panel."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(doc["results"])}


def curves_figure(doc: dict[str, Any]) -> go.Figure:
    """Efficacy, generalization and specificity against T (log x), one line per method, with
    Wilson intervals as error bars."""
    metrics = ("efficacy", "generalization", "specificity")
    fig = make_subplots(rows=1, cols=3, subplot_titles=metrics)
    colour = _colours(doc)
    for i, metric in enumerate(metrics, start=1):
        for method, by_t in doc["results"].items():
            pts = sorted(
                (int(t), r)
                for t, r in by_t.items()
                if "not_run" not in r and r.get(metric) is not None
            )
            if not pts:
                continue
            ys = [r[metric] for _, r in pts]
            fig.add_trace(
                go.Scatter(
                    x=[t for t, _ in pts],
                    y=ys,
                    mode="lines+markers",
                    name=method,
                    legendgroup=method,
                    line={"color": colour[method]},
                    marker={"color": colour[method]},
                    showlegend=i == 1,
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [
                            r[f"{metric}_ci"][1] - y for (_, r), y in zip(pts, ys, strict=True)
                        ],
                        "arrayminus": [
                            y - r[f"{metric}_ci"][0] for (_, r), y in zip(pts, ys, strict=True)
                        ],
                    },
                ),
                row=1,
                col=i,
            )
        fig.update_xaxes(type="log", title_text="edits held (T)", row=1, col=i)
        fig.update_yaxes(range=[-0.03, 1.03], row=1, col=i)
    fig.update_layout(height=420)
    return fig


def cost_figure(doc: dict[str, Any]) -> go.Figure:
    """Seconds of writing per edit against T (log y)."""
    fig = go.Figure()
    colour = _colours(doc)
    for method, by_t in doc["results"].items():
        pts = sorted(
            (int(t), r["seconds_per_edit"])
            for t, r in by_t.items()
            if "not_run" not in r and r["seconds_per_edit"] > 0
        )
        if pts:
            fig.add_trace(
                go.Scatter(
                    x=[t for t, _ in pts],
                    y=[s for _, s in pts],
                    mode="lines+markers",
                    name=method,
                    line={"color": colour[method]},
                )
            )
    fig.update_xaxes(type="log", title_text="edits held (T)")
    fig.update_yaxes(type="log", title_text="seconds per edit (writing)")
    fig.update_layout(height=420)
    return fig


def report(doc: dict[str, Any]) -> Report:
    """The ``edit-<data>`` report: the table, the curves and the cost."""
    name = "edit_" + "".join(ch if ch.isalnum() else "_" for ch in doc["data"])
    panels = (
        Panel(
            table_figure(doc),
            "Every method on the same edits, scored after the last of T "
            "held edits (greedy generation; Wilson 95% intervals; n edits scored).",
        ),
        Panel(
            curves_figure(doc),
            "Efficacy, generalization and specificity as edits pile up "
            "(log x); a method missing at a T was not run there (see the table).",
        ),
        Panel(cost_figure(doc), "Wall seconds of writing per edit (log y), measured in this run."),
    )
    return Report(
        name,
        f"Knowledge editing: {doc['data']} on {doc['header']['model']['name']}",
        finding(doc),
        panels,
        doc["header"],
        {k: doc[k] for k in ("results", "methods", "examples", "literature")},
    )
