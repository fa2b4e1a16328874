"""Figures and the finding of :mod:`analyses.relation_geometry.compute`, built from its data."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.relation_geometry.compute import KINDS, RelationGeometryData
from fmi.reporting.report import Panel

COLOURS = {"paraphrase": "#66a182", "other_relation": "#d1495b", "look_alike": "#edae49"}
DASH = {"subject_last": "dot", "prompt_last": "solid"}


def _band(x: list[int], rows: list[list[float]], name: str, colour: str, dash: str) -> list:
    """A line of ``rows[i][0]`` with error bars from ``rows[i][1:]``."""
    y = [r[0] for r in rows]
    return [
        go.Scatter(
            x=x,
            y=y,
            mode="lines+markers",
            name=name,
            line={"color": colour, "dash": dash},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [r[2] - r[0] for r in rows],
                "arrayminus": [r[0] - r[1] for r in rows],
            },
        )
    ]


def _per_layer(fig: go.Figure, level: float, y_title: str, height: int) -> go.Figure:
    """A per-layer rate figure's axes, with a dashed line at ``level`` (chance)."""
    fig.add_hline(y=level, line={"color": "gray", "dash": "dash"})
    fig.update_layout(
        height=height,
        xaxis_title="layer (resid_post; the last point: the final norm's output, the relation key)",
        yaxis_title=y_title,
        yaxis_range=[0, 1.02],
        margin={"t": 20},
    )
    return fig


def _auc_figure(d: RelationGeometryData) -> go.Figure:
    fig = go.Figure()
    for site in d.sites:
        for neg in d.negatives:
            for trace in _band(
                d.layers, d.auc[site][neg], f"{site}: vs {neg}", COLOURS[neg], DASH[site]
            ):
                fig.add_trace(trace)
    return _per_layer(fig, 0.5, "AUC: paraphrase above the negative", 380)


def _probe_figure(d: RelationGeometryData) -> go.Figure:
    fig = go.Figure()
    for site in d.sites:
        for trace in _band(d.layers, d.probe[site], site, "#4a6fa5", DASH[site]):
            fig.add_trace(trace)
    return _per_layer(fig, d.probe_chance, "held-out probe accuracy", 360)


def _cosine_figure(d: RelationGeometryData) -> go.Figure:
    fig = make_subplots(rows=1, cols=1)
    for kind in KINDS:
        fig.add_trace(
            go.Histogram(
                x=d.best["cosines"][kind],
                name=kind,
                opacity=0.6,
                marker_color=COLOURS[kind],
                histnorm="probability",
                xbins={"size": 0.05},
            )
        )
    fig.update_layout(
        barmode="overlay",
        height=340,
        xaxis_title=f"cos(anchor, prompt) at {d.best['site']}, layer {d.best['layer']}",
        yaxis_title="share of pairs",
        margin={"t": 20},
    )
    return fig


def figures(d: RelationGeometryData) -> list[Panel]:
    n = ", ".join(f"{d.counts[k]} {k}" for k in KINDS)
    return [
        Panel(
            _auc_figure(d),
            f"For {d.edits} known-cf training edits ({n} pairs): how well the cosine to the "
            "rewrite prompt ranks a paraphrase above the same subject under another relation "
            "(red) and above a look-alike name in the same template (yellow), at the subject's "
            "last token (dotted) and the prompt's last token (solid). 0.5: no separation; "
            "below 0.5 the negative looks more like the anchor than the paraphrase does. Bars: "
            "95% stratified bootstrap.",
        ),
        Panel(
            _probe_figure(d),
            "A linear probe on the product of the two standardized vectors, paraphrase against "
            "either negative, 5-fold and grouped by edit (95% Wilson). The dashed line is the "
            "majority-class rate. Where the probe beats the cosine's AUC, the separating "
            "direction exists but a plain cosine does not weigh it.",
        ),
        Panel(
            _cosine_figure(d),
            "The cosines at the site and layer with the best worse-of-two AUC. A key that knows "
            "the relation puts the green mass to the right of both others.",
        ),
    ]


def finding(d: RelationGeometryData) -> str:
    site, layer = d.best["site"], d.best["layer"]
    i = d.layers.index(layer)
    aucs = {neg: d.auc[site][neg][i][0] for neg in d.negatives}
    j = max(range(len(d.layers)), key=lambda k: d.probe["prompt_last"][k][0])
    key = {neg: d.auc["prompt_last"][neg][-1][0] for neg in d.negatives}
    return (
        f"Best cosine separation at {site}, layer {layer}: AUC {aucs['other_relation']:.2f} "
        f"against the subject's other relations and {aucs['look_alike']:.2f} against look-alike "
        f"names. A probe at prompt_last reaches {d.probe['prompt_last'][j][0]:.2f} held out "
        f"(layer {d.layers[j]}; chance {d.probe_chance:.2f}). The relation key (prompt_last at "
        f"the final norm) gives AUC {key['other_relation']:.2f} against other relations and "
        f"{key['look_alike']:.2f} against look-alikes, which the subject channel separates."
    )
