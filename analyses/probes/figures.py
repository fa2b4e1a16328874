"""Figures and the finding of :mod:`analyses.probes.compute`, built from its data."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.probes.compute import VARIANTS, Grid, ProbesData
from fmi.reporting.report import Panel

COLOURS = {"context": "#4a6fa5", "symbol": "#d1495b", "last": "#66a182"}
POSITION_NAMES = {
    "context": "context's last token",
    "symbol": "symbol's last token",
    "last": "last token",
}


def _heatmaps(d: ProbesData, data: dict[str, Grid], chance: float) -> go.Figure:
    titles = ["probe (true labels)", "control (shuffled labels)"]
    fig = make_subplots(rows=2, cols=1, subplot_titles=titles, vertical_spacing=0.16)
    y_names = [POSITION_NAMES[p] for p in d.positions]
    for r, variant in enumerate(VARIANTS, start=1):
        g = data[variant]
        acc = np.array(g["accuracy"]).T  # [position][site]
        low, high = np.array(g["ci_low"]).T, np.array(g["ci_high"]).T
        fig.add_trace(
            go.Heatmap(
                z=acc,
                x=d.site_labels,
                y=y_names,
                zmin=0,
                zmax=1,
                colorscale="Viridis",
                showscale=r == 1,
                text=[[f"{v:.2f}" for v in row] for row in acc],
                texttemplate="%{text}",
                textfont={"size": 9},
                customdata=np.stack([low, high], axis=-1),
                hovertemplate=(
                    "%{x}, %{y}<br>accuracy %{z:.3f}<br>95% CI [%{customdata[0]:.3f}, "
                    f"%{{customdata[1]:.3f}}]<br>chance {chance:.3f}<extra></extra>"
                ),
            ),
            row=r,
            col=1,
        )
    fig.update_xaxes(
        title_text="layer (resid_post; embed = blocks.0.hook_resid_pre)", type="category"
    )
    fig.update_layout(height=520, margin={"t": 40})
    return fig


def _transfer_figure(d: ProbesData) -> go.Figure:
    pairs = list(d.transfer)
    names = {p: " / ".join(d.pair_contexts[p]) for p in pairs}
    titles = [f"{names[p]}: symmetrised AUC" for p in pairs]
    titles += [
        f"{names[p]}: accuracy, A→{d.pair_contexts[p][0]}, B→{d.pair_contexts[p][1]}" for p in pairs
    ]
    fig = make_subplots(rows=2, cols=len(pairs), subplot_titles=titles, shared_xaxes=True)
    for c, pair in enumerate(pairs, start=1):
        for r, (value, low, high) in enumerate(
            (("auc", "auc_low", "auc_high"), ("accuracy", "ci_low", "ci_high")), start=1
        ):
            for variant in VARIANTS:
                g = d.transfer[pair][variant]
                for j, pos in enumerate(d.positions):
                    v = np.array(g[value])[:, j]
                    lo, hi = np.array(g[low])[:, j], np.array(g[high])[:, j]
                    fig.add_trace(
                        go.Scatter(
                            x=d.site_labels,
                            y=v,
                            mode="lines+markers",
                            name=f"{POSITION_NAMES[pos]}, {variant}",
                            legendgroup=f"{pos}-{variant}",
                            showlegend=r == 1 and c == 1,
                            line={
                                "color": COLOURS[pos],
                                "dash": "solid" if variant == "probe" else "dot",
                            },
                            opacity=1.0 if variant == "probe" else 0.55,
                            error_y={
                                "type": "data",
                                "array": hi - v,
                                "arrayminus": v - lo,
                                "thickness": 1,
                                "width": 2,
                            },
                        ),
                        row=r,
                        col=c,
                    )
            fig.add_hline(y=0.5, line={"color": "gray", "dash": "dash"}, row=r, col=c)
    fig.update_yaxes(range=[0, 1.03])
    fig.update_xaxes(type="category")
    fig.update_xaxes(title_text="layer", row=2)
    fig.update_layout(height=620, margin={"t": 40})
    return fig


def figures(d: ProbesData) -> list[Panel]:
    n = d.n_per_context
    protocol = (
        f"{n} held-out symbols per context, each asked in every context; {d.folds}-fold "
        "cross-validation grouped by symbol (no symbol is tested by a probe that trained on "
        "it); standardized features, L2 logistic regression; read questions only. Hover for the "
        "95% Wilson interval on the pooled held-out predictions."
    )
    sanity = (
        " At 'embed' the symbol and last tokens cannot know the context (same token, same "
        "vector in every context) and must sit at chance; the context token there is the "
        "context word itself, so 1.0 means token identity, not a computed representation."
    )
    return [
        Panel(
            _heatmaps(d, d.ab, 0.5),
            "Game A vs game B (chance 0.5). Top: probe; bottom: the same CV with labels "
            "shuffled (should sit near 0.5 everywhere). Look for the first layer where the "
            "symbol's and the last token's rows turn bright: from there on the context has "
            "been moved onto the word and the answer position. " + protocol + sanity,
        ),
        Panel(
            _heatmaps(d, d.six, 1 / 6),
            "Which of six contexts (game A/B/C/D, lab north/south; chance 1/6). Same protocol "
            "and control. Games vs labs differ in more than one token, so a probe can often "
            "tell the family apart before it tells the letter; compare with the A/B map. "
            + protocol
            + sanity,
        ),
        Panel(
            _transfer_figure(d),
            "Transfer: the game A vs B probe, fitted on all A/B prompts at each layer and "
            "position, scored on unseen contexts. Top: symmetrised AUC max(AUC, 1 - AUC) of the "
            "probe's score on the new pair (95% stratified bootstrap over prompts): whether the "
            "A/B direction separates the new pair at all, whichever way round. Bottom: accuracy "
            "under the fixed mapping A→C, B→D and A→north, B→south (Wilson 95%); the mapping is "
            "arbitrary, so below 0.5 is as informative as above. Dotted: the same from a probe "
            "fitted on shuffled A/B labels, i.e. what an arbitrary learned direction gets; "
            "where new contexts differ by token identity (context token, early layers) even that "
            "separates them, so only the gap between solid and dotted counts as transfer. The "
            "symmetrised AUC is above 0.5 even for noise.",
        ),
    ]


def finding(d: ProbesData) -> str:
    def cell(g: Grid, i: int, j: int) -> str:
        return f"{g['accuracy'][i][j]:.2f} [{g['ci_low'][i][j]:.2f}, {g['ci_high'][i][j]:.2f}]"

    si, sj = d.best(d.ab["probe"], ("symbol",))
    li, lj = d.best(d.ab["probe"], ("last",))
    xi, xj = d.best(d.six["probe"], ("last",))
    shuffled_max = float(np.max(d.ab["shuffled"]["accuracy"]))
    moved = []
    for pair in d.transfer:
        real, ctrl = d.transfer[pair]["probe"], d.transfer[pair]["shuffled"]
        moved.append(
            f"{'/'.join(d.pair_contexts[pair])} AUC {real['auc'][li][lj]:.2f} "
            f"(shuffled-probe {ctrl['auc'][li][lj]:.2f}, mapped acc {real['accuracy'][li][lj]:.2f})"
        )
    return (
        f"Game A vs B: best at the symbol token {d.site_labels[si]} {cell(d.ab['probe'], si, sj)}, "
        f"at the last token {d.site_labels[li]} {cell(d.ab['probe'], li, lj)}; shuffled labels "
        f"at most {shuffled_max:.2f}. Six contexts at the last token: best "
        f"{cell(d.six['probe'], xi, xj)} at {d.site_labels[xi]} (chance 0.17). A/B probe from "
        f"{d.site_labels[li]} last token on unseen pairs: " + "; ".join(moved) + "."
    )
