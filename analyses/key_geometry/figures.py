"""Figures and the finding of :mod:`analyses.key_geometry.compute`, built from its data."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.key_geometry.compute import KINDS, MATRIX_SYMBOLS, KeyGeometryData
from fmi.reporting.report import Panel

COLOURS = ("#4a6fa5", "#d1495b", "#66a182", "#edae49", "#8d6a9f", "#00798c")
DASH = {"raw": "dot", "projected": "solid"}


def _retrieval_figure(d: KeyGeometryData) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(d.splits), subplot_titles=d.splits, shared_yaxes=True)
    for col, split in enumerate(d.splits, start=1):
        for kind in KINDS:
            for what, colour in (("symbol", COLOURS[0]), ("binding", COLOURS[1])):
                fig.add_trace(
                    go.Scatter(
                        x=d.layers,
                        y=d.retrieval[kind][split][what],
                        mode="lines+markers",
                        name=f"{kind}, right {what}",
                        legendgroup=f"{kind}-{what}",
                        showlegend=col == 1,
                        line={"dash": DASH[kind], "color": colour},
                    ),
                    row=1,
                    col=col,
                )
        fig.add_vline(x=d.focus_layer, line={"color": "gray", "dash": "dash"}, row=1, col=col)
    fig.update_yaxes(range=[0, 1.02], title_text="nearest-neighbour accuracy", col=1)
    fig.update_xaxes(title_text="key layer (resid_post)")
    fig.update_layout(height=380, margin={"t": 40})
    return fig


def _silhouette_figure(d: KeyGeometryData) -> go.Figure:
    fig = go.Figure()
    for i, split in enumerate(d.splits):
        for kind in KINDS:
            fig.add_trace(
                go.Scatter(
                    x=d.layers,
                    y=d.silhouette[kind][split],
                    mode="lines+markers",
                    name=f"{split}, {kind}",
                    line={"dash": DASH[kind], "color": COLOURS[i]},
                )
            )
    fig.add_vline(x=d.focus_layer, line={"color": "gray", "dash": "dash"})
    fig.update_layout(
        height=360,
        xaxis_title="key layer (resid_post)",
        yaxis_title="silhouette of contexts (cosine)",
        margin={"t": 20},
    )
    return fig


def _pca_figure(d: KeyGeometryData) -> go.Figure:
    titles = [f"{k}: coloured by {c}" for k in KINDS for c in ("context", "symbol")]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles)
    for r, kind in enumerate(KINDS, start=1):
        p = d.pca[kind]
        for c, field in enumerate(("context", "symbol"), start=1):
            groups = list(dict.fromkeys(p[field]))
            shown = groups if field == "context" else groups[: len(COLOURS)]
            for g in [*shown, None] if field == "symbol" else shown:
                rows = [
                    i
                    for i, v in enumerate(p[field])
                    if (v == g if g is not None else v not in shown)
                ]
                if not rows:
                    continue
                colour = "#c8c8c8" if g is None else COLOURS[groups.index(g) % len(COLOURS)]
                fig.add_trace(
                    go.Scatter(
                        x=[p["x"][i] for i in rows],
                        y=[p["y"][i] for i in rows],
                        mode="markers",
                        name=f"{field}: {g if g is not None else 'other symbols'}",
                        legendgroup=f"{field}-{g}",
                        showlegend=r == 1,
                        marker={
                            "color": colour,
                            "size": 6,
                            "symbol": ["circle" if p["role"][i] == "write" else "x" for i in rows],
                        },
                        text=[
                            f"{p['role'][i]}: {p['context'][i]} / {p['symbol'][i]}" for i in rows
                        ],
                        hoverinfo="text",
                    ),
                    row=r,
                    col=c,
                )
    fig.update_layout(height=760, margin={"t": 40})
    return fig


def _cosine_figure(d: KeyGeometryData) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=list(KINDS), horizontal_spacing=0.18)
    for c, kind in enumerate(KINDS, start=1):
        m = d.cosine[kind]
        fig.add_trace(
            go.Heatmap(
                z=m["matrix"],
                x=m["cols"],
                y=m["rows"],
                zmin=-1,
                zmax=1,
                colorscale="RdBu",
                reversescale=True,
                showscale=c == 2,
            ),
            row=1,
            col=c,
        )
    fig.update_xaxes(title_text="write keys", tickfont={"size": 8})
    fig.update_yaxes(title_text="read keys", tickfont={"size": 8}, col=1)
    fig.update_yaxes(tickfont={"size": 8}, autorange="reversed")
    fig.update_layout(height=620, margin={"t": 40})
    return fig


def figures(d: KeyGeometryData) -> list[Panel]:
    return [
        Panel(
            _retrieval_figure(d),
            "Key-layer sweep: for each held-out read question, the nearest write key by cosine "
            "(single symbol-token keys). 'right symbol' ignores the context; 'right binding' "
            "needs the context too. Look for the gap between the two: raw keys find the word "
            "but not its context; the projector (solid) is trained to close that gap on game "
            "A/B only. The dashed line marks the memory's symbol-key layer.",
        ),
        Panel(
            _silhouette_figure(d),
            "How well the keys cluster by context (silhouette, cosine; write and read keys of "
            "each split). Near 0: the context is not a direction the keys are organised by. "
            "Compare game A/B (the projector's training contexts) with unseen C/D and labs.",
        ),
        Panel(
            _pca_figure(d),
            f"PCA of keys at the memory's layer ({d.focus_layer}), all three splits (circles: "
            "write statements, crosses: read questions). Left: coloured by context; right: by "
            "symbol (six symbols coloured, the rest gray). Look for what the leading components "
            "encode: the prompt's format (statement vs question), the symbol, or the context, "
            "and whether the projector makes game A and game B (its training contexts) separable "
            "while the unseen contexts fall onto them.",
        ),
        Panel(
            _cosine_figure(d),
            f"Cosine similarity of read keys (rows) to write keys (columns), layer "
            f"{d.focus_layer}, split 'same', {MATRIX_SYMBOLS} symbols x 2 contexts sorted by "
            "context then symbol. Keys that separate contexts give one bright diagonal; two "
            "parallel diagonals mean a read key matches the same symbol's write key in the other "
            "context as well as its own, so top-1 retrieval picks the context by chance.",
        ),
    ]


def finding(d: KeyGeometryData) -> str:
    i = d.layers.index(d.focus_layer)
    r = {k: {s: d.retrieval[k][s]["binding"][i] for s in d.splits} for k in KINDS}
    best = max(range(len(d.layers)), key=lambda j: d.retrieval["projected"]["same"]["binding"][j])
    return (
        f"At layer {d.focus_layer}, projected keys retrieve the right binding for "
        f"{r['projected']['same']:.2f} of held-out game A/B reads (raw {r['raw']['same']:.2f}); "
        f"on unseen contexts {r['projected']['new_game']:.2f} (game C/D) and "
        f"{r['projected']['new_lab']:.2f} (labs). Best projected layer: {d.layers[best]} "
        f"({d.retrieval['projected']['same']['binding'][best]:.2f})."
    )
