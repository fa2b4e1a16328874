"""The editing benchmark's table, curves and one-line finding (data in, figures out).

Columns are labelled by how they are measured (:data:`analyses.edit.rates.METRIC_LABELS`:
"efficacy (greedy)", "ES (full target)", ...), and a metric no cell has (a benchmark without
relation or portability probes) is left out. A document written before the full-target scores
(no ``es`` in any cell) renders its original table, the same seven columns under their JSON
names, so the tables committed from it stay as they are.

>>> doc = {"results": {"none": {"1": {"efficacy": 0.0, "efficacy_ci": [0.0, 0.1]}}}}
>>> cell(doc["results"]["none"]["1"], "efficacy")
'0.000 [0.00, 0.10]'
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.edit.rates import METRIC_LABELS
from fmi.reporting.report import Panel, Report

PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880")
RATES = (
    "efficacy",
    "generalization",
    "specificity",
    "relation_specificity",
    "portability_alias",
    "portability_one_hop",
    "unrelated_changed",
)
SCORES = ("rewrite_score", "paraphrase_score", "neighbourhood_score", "es", "ps", "ns")
MAGNITUDES = ("em", "pm", "nm")
LEGACY = (
    "efficacy",
    "generalization",
    "specificity",
    "unrelated_changed",
    "rewrite_score",
    "paraphrase_score",
    "neighbourhood_score",
)
"""The columns of a document from before the full-target scores."""
CURVES = ("efficacy", "generalization", "specificity", *RATES[3:6], "es", "ps", "ns")


def cell(result: dict[str, Any], metric: str) -> str:
    """``value [lo, hi]`` (the cell's 95% interval), ``value`` where it has none, or ``n/a``.

    >>> cell({"em": -0.25, "em_ci": None}, "em"), cell({}, "es")
    ('-0.250', 'n/a')
    """
    value = result.get(metric)
    if value is None:
        return "n/a"
    ci = result.get(f"{metric}_ci")
    if ci is None:
        return f"{value:.3f}"
    lo, hi = ci
    return f"{value:.3f} [{lo:.2f}, {hi:.2f}]"


def legacy(doc: dict[str, Any]) -> bool:
    """Whether ``doc`` was written before the full-target scores (no ``es`` in any cell run).

    >>> legacy({"results": {"none": {"1": {"efficacy": 1.0}}}})
    True
    >>> legacy({"results": {"none": {"1": {"efficacy": 1.0, "es": None}}}})
    False
    """
    ran = [r for _, _, r in _rows(doc) if "not_run" not in r]
    return bool(ran) and not any("es" in r for r in ran)


def columns(doc: dict[str, Any], metrics: tuple[str, ...]) -> list[str]:
    """The metrics of ``metrics`` that some cell of ``doc`` has (a legacy document: its seven).

    >>> doc = {"results": {"none": {"1": {"efficacy": 1.0, "es": 0.5, "ns": None}}}}
    >>> columns(doc, ("efficacy", "relation_specificity", "es", "ns"))
    ['efficacy', 'es']
    """
    if legacy(doc):
        return list(LEGACY)
    ran = [r for _, _, r in _rows(doc) if "not_run" not in r]
    return [m for m in metrics if any(r.get(m) is not None for r in ran)]


def label(doc: dict[str, Any], metric: str) -> str:
    """A column's label: :data:`METRIC_LABELS`, or the JSON name in a legacy document."""
    return metric if legacy(doc) else METRIC_LABELS.get(metric, metric)


def _rows(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, t, result)
        for method, by_t in doc["results"].items()
        for t, result in sorted(by_t.items(), key=lambda kv: int(kv[0]))
    ]


def markdown_table(doc: dict[str, Any]) -> str:
    """One line per method and T: the greedy rates and the probability scores (first token, full
    target) that some cell has, with their intervals, seconds and passes per edit, and n (edits
    scored). The magnitudes (EM, PM, NM) are in the HTML table only."""
    cols = columns(doc, (*RATES, *SCORES))
    names = [label(doc, m) for m in cols]
    head = "| method | T | " + " | ".join(names) + " | s/edit | fwd/edit | bwd/edit | n |"
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
    greedy = "" if legacy(doc) else " (greedy)"
    full = "" if r.get("es") is None else f", ES {cell(r, 'es')}"
    return (
        f"{doc['data']}, {t} edits held: fast_memory efficacy {cell(r, 'efficacy')}, "
        f"generalization {cell(r, 'generalization')}, specificity {cell(r, 'specificity')}"
        f"{greedy}{full}, {r['seconds_per_edit']:.3f} s per edit"
    )


def table_figure(doc: dict[str, Any]) -> go.Figure:
    """Every cell: the metrics some cell has (magnitudes included), seconds per edit, n and,
    in a document with a failure log, the failing trials."""
    rows = [(m, t, r) for m, t, r in _rows(doc)]
    metrics = columns(doc, (*RATES, *SCORES, *MAGNITUDES))
    logged = any("failures" in r for _, _, r in rows)
    cols = ["method", "T", *(label(doc, k) for k in metrics), "s/edit", "n"]
    cols += ["failing"] if logged else []
    values: list[list[str]] = [[] for _ in cols]
    for m, t, r in rows:
        run = "not_run" not in r
        cells = [m, t]
        cells += [cell(r, k) if run else "not run" for k in metrics]
        cells += [f"{r['seconds_per_edit']:.4f}" if run else r["not_run"], str(r.get("n", 0))]
        cells += [str(len(r.get("failures", [])))] if logged else []
        for i, v in enumerate(cells):
            values[i].append(v)
    fig = go.Figure(go.Table(header={"values": cols}, cells={"values": values}))
    fig.update_layout(height=120 + 28 * len(rows), margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def _colours(doc: dict[str, Any]) -> dict[str, str]:
    """One colour per method, the same in every panel."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(doc["results"])}


def curves_figure(doc: dict[str, Any]) -> go.Figure:
    """Efficacy, generalization and specificity against T (log x), then the relation and
    portability rates and ES, PS and NS where the document has them, three panels a row, one
    line per method, with the cells' intervals as error bars."""
    metrics = [m for m in CURVES if m in CURVES[:3] or m in columns(doc, CURVES)]
    n_rows = -(-len(metrics) // 3)
    titles = [label(doc, m) for m in metrics]
    fig = make_subplots(rows=n_rows, cols=3, subplot_titles=titles)
    colour = _colours(doc)
    for i, metric in enumerate(metrics):
        row, col = i // 3 + 1, i % 3 + 1
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
                    showlegend=i == 0,
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
                row=row,
                col=col,
            )
        fig.update_xaxes(type="log", title_text="edits held (T)", row=row, col=col)
        fig.update_yaxes(range=[-0.03, 1.03], row=row, col=col)
    fig.update_layout(height=420 * n_rows)
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
    intervals = (
        "Wilson 95% intervals"
        if legacy(doc)
        else "95% cluster intervals over edits and bystanders, each distinct prompt counted once"
    )
    panels = (
        Panel(
            table_figure(doc),
            "Every method on the same edits, scored after the last of T held edits (greedy "
            "generation, and the whole targets teacher-forced for ES / PS / NS; "
            f"{intervals}; n edits scored).",
        ),
        Panel(
            curves_figure(doc),
            "Efficacy, generalization and specificity (and the other rates a benchmark has) as "
            "edits pile up (log x); a method missing at a T was not run there (see the table).",
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
