"""Figures and the finding of :mod:`analyses.layer_sweep.compute`, built from its data."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.layer_sweep.compute import (
    HIGHER_IS_BETTER,
    KEY_SPLITS,
    LEARNED_MODE,
    METRICS,
    LayerSweepData,
)
from fmi.reporting.report import Panel


def _short(site: str) -> str:
    return site.replace("blocks.", "L").replace(".hook_resid_", " ").replace(".hook_out", "")


def _heatmaps(d: LayerSweepData, retrieval: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(METRICS), subplot_titles=METRICS, shared_yaxes=True)
    x = [f"{a:g}" for a in d.alphas]
    y = [_short(s) for s in d.sites]
    for c, m in enumerate(METRICS, start=1):
        z = d.rates[retrieval][m]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=x,
                y=y,
                zmin=0,
                zmax=1,
                colorscale="Viridis" if HIGHER_IS_BETTER[m] else "Inferno",
                showscale=c == len(METRICS),
                hovertemplate="site %{y}<br>alpha %{x}<br>rate %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=c,
        )
        i, j = d.best(retrieval, m)
        fig.add_trace(
            go.Scatter(
                x=[x[j]],
                y=[y[i]],
                mode="markers+text",
                text=[f"{z[i][j]:.2f}"],
                textposition="middle right",
                marker={"symbol": "star", "size": 14, "color": "white", "line": {"width": 1}},
                showlegend=False,
                hoverinfo="skip",
            ),
            row=1,
            col=c,
        )
    fig.update_xaxes(title_text="alpha (|delta| / median |h|)", type="category")
    fig.update_yaxes(autorange="reversed", tickfont={"size": 9})
    fig.update_layout(height=max(420, 22 * len(d.sites)), margin={"t": 40})
    return fig


def _key_figure(d: LayerSweepData) -> go.Figure:
    fig = go.Figure()
    colours = ("#4a6fa5", "#d1495b", "#66a182")
    for rule, dash in (("dual_key", "solid"), ("raw_symbol", "dot")):
        for colour, split in zip(colours, KEY_SPLITS, strict=True):
            fig.add_trace(
                go.Scatter(
                    x=d.key_layers,
                    y=d.key_retrieval[rule][split],
                    mode="lines+markers",
                    name=f"{rule}, {split}",
                    line={"dash": dash, "color": colour},
                )
            )
    fig.add_vline(x=d.memory_token_layer, line={"color": "gray", "dash": "dash"})
    fig.update_layout(
        height=380,
        xaxis_title="key layer (resid_post)",
        yaxis_title="read prompts retrieving their binding (top-1)",
        yaxis_range=[0, 1.02],
        margin={"t": 20},
    )
    return fig


def figures(d: LayerSweepData) -> list[Panel]:
    n = ", ".join(f"{k} {v}" for k, v in d.n_prompts.items())
    common = (
        f"Rows: injection site (L3 pre = blocks.3.hook_resid_pre; ln_final = the unembedding's "
        f"input); columns: alpha, the injected norm as a fraction of the median residual norm at "
        f"that site. Greedy decoding of {d.max_new_tokens} token(s) on held-out game A/B "
        f"prompts ({n}): write/read = the continuation's first word is the label; plain = it is "
        f"a label bound to the symbol although the context is missing; unrelated_changed = "
        f"the output differs from the memory-free one. With one token, a label's first token "
        f"counts (wolf for wolfram); `fmi recall` measures whole words. Stars: best read/write "
        f"cell; for plain/unrelated, the lowest "
        f"rate among cells whose read is within 90% of its best. The memory itself uses "
        f"ln_final at alpha about {d.fitted_rho:g}."
    )
    return [
        Panel(
            _heatmaps(d, "oracle"),
            "Oracle retrieval: every prompt gets a value (its own; its symbol's for plain; a "
            "stored one for unrelated), so plain/unrelated show what a site does when the "
            "memory fires where it should not. " + common,
        ),
        Panel(
            _heatmaps(d, "learned"),
            f"Learned retrieval ({LEARNED_MODE}, thresholds fitted on training data): the "
            "memory injects only what it retrieves. Compare with the oracle row to see how much "
            "of the specificity comes from retrieval rather than from the site. " + common,
        ),
        Panel(
            _key_figure(d),
            "Key-layer sweep: top-1 retrieval of held-out read questions when keys come from "
            "each layer, with the memory's MaxSim query rule. Solid: token keys, symbol x "
            "context (the dual_key rule); dotted: one symbol-token key (raw_both_top1 rule). "
            "Unseen contexts (game C/D, labs) test whether the layer keeps token identity. "
            "The dashed line marks the memory's token-key layer.",
        ),
    ]


def finding(d: LayerSweepData) -> str:
    rates = d.rates["oracle"]
    i, j = d.best("oracle", "read")
    first = next(k for k, row in enumerate(rates["read"]) if max(row) >= rates["read"][i][j] - 0.01)
    dual, raw = d.key_retrieval["dual_key"]["new_lab"], d.key_retrieval["raw_symbol"]["new_lab"]
    return (
        f"Oracle read reaches {rates['read'][i][j]:.2f} from {_short(d.sites[first])} on; the "
        f"most specific such cell is {_short(d.sites[i])} at alpha {d.alphas[j]:g}, where forced "
        f"injection answers {rates['plain'][i][j]:.2f} of plain prompts but learned retrieval "
        f"only {d.rates['learned']['plain'][i][j]:.2f} (unrelated changed "
        f"{d.rates['learned']['unrelated_changed'][i][j]:.2f}). "
        f"Unseen labs: dual keys retrieve {min(dual):.2f}-{max(dual):.2f} across key layers, "
        f"one symbol key {min(raw):.2f}-{max(raw):.2f}."
    )
