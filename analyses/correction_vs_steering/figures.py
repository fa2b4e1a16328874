"""Figures and the finding of :mod:`analyses.correction_vs_steering.compute`, built from
its data."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from analyses.correction_vs_steering.compute import (
    INJECT_NAMES,
    LENS_K,
    LENS_TABLE_LABELS,
    METHOD_NAMES,
    METHODS,
    RATE_METRICS,
    RATE_NAMES,
    REFERENCES,
    SPLIT,
    SteeringData,
)
from analyses.correction_vs_steering.vector_math import rate_ci
from fmi.reporting.report import Panel, plot_text

METHOD_STYLE = {
    "caa": ("#4a6fa5", "dot"),
    "actadd": ("#d1495b", "dot"),
    "caa_normed": ("#4a6fa5", "solid"),
    "actadd_normed": ("#d1495b", "solid"),
}
INJECT_COLOURS = {
    "none": "#9e9e9e",
    "correction": "#66a182",
    "caa": "#4a6fa5",
    "actadd": "#d1495b",
    "w_u": "#edae49",
}


def _cosine_figure(d: SteeringData) -> go.Figure:
    titles = ["vs the label's mean correction vector", "vs W_U[:, label]"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, shared_yaxes=True)
    for c, ref in enumerate(REFERENCES, start=1):
        mean, std = d.cosine_stats(ref)
        for j, method in enumerate(d.methods):
            colour, dash = METHOD_STYLE[method]
            fig.add_trace(
                go.Scatter(
                    x=d.site_labels,
                    y=mean[:, j],
                    mode="lines+markers",
                    name=METHOD_NAMES[method],
                    legendgroup=method,
                    showlegend=c == 1,
                    line={"color": colour, "dash": dash},
                    error_y={"type": "data", "array": std[:, j], "thickness": 1, "width": 2},
                    hovertemplate=(  # a template is not escaped by the report: its text is
                        f"%{{x}}: %{{y:.3f}}<extra>{plot_text(METHOD_NAMES[method])}</extra>"
                    ),
                ),
                row=1,
                col=c,
            )
    level = float(np.mean(d.correction_vs_wu))
    fig.add_hline(
        y=level,
        line={"color": "#66a182", "dash": "dash"},
        annotation_text=f"mean correction vs W_U: {level:.2f}",
        row=1,
        col=2,
    )
    fig.add_hline(y=0, line={"color": "gray", "width": 1}, row=1, col=1)
    fig.update_xaxes(type="category", title_text="site of the steering vector")
    fig.update_yaxes(title_text="cosine (mean ± sd over labels)", row=1, col=1)
    fig.update_layout(height=440, margin={"t": 40})
    return fig


def _correction_figure(d: SteeringData) -> go.Figure:
    names = [f"{lab} ({n})" for lab, n in zip(d.labels, d.n_statements, strict=True)]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=names,
            y=d.correction_vs_wu,
            name="mean correction vs W_U[:, label]",
            marker_color="#edae49",
            opacity=0.7,
        )
    )
    for name, data, colour in (
        ("each entry vs W_U[:, label]", d.individual_vs_wu, "#8d6a00"),
        ("each entry vs its label's mean correction", d.individual_vs_mean, "#66a182"),
    ):
        xs = [lab for lab, v in zip(names, data, strict=True) for _ in v]
        ys = [y for v in data for y in v]
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="markers", name=name, marker={"color": colour, "size": 6})
        )
    fig.update_layout(
        height=380,
        yaxis_title="cosine",
        xaxis_title="label (training entries)",
        margin={"t": 20},
    )
    fig.update_xaxes(type="category")
    return fig


def _lens_table(d: SteeringData) -> go.Figure:
    rows: list[list[str]] = [[], [], [], []]
    fills = []
    for i, label in enumerate(d.labels[:LENS_TABLE_LABELS]):
        for j, vec in enumerate(d.lens_vectors):
            cell = d.lens[i][j]
            rows[0].append(label)
            rows[1].append(vec)
            rows[2].append(" | ".join(repr(t) for t in cell["top"]))
            rows[3].append(str(cell["label_rank"]))
            fills.append("#e3f1e6" if cell["label_in_top"] else "white")
    header = ["label", "vector", f"top-{LENS_K} tokens", "rank of the label token"]
    return go.Figure(
        go.Table(
            columnwidth=[60, 110, 420, 80],
            header={"values": header, "fill_color": "#f3f6fb", "align": "left"},
            cells={"values": rows, "fill_color": [fills] * 4, "align": "left", "height": 22},
        )
    ).update_layout(height=min(900, 60 + 24 * len(rows[0])), margin={"t": 10, "b": 10})


def _lens_summary(d: SteeringData) -> go.Figure:
    fracs, lows, highs, medians = [], [], [], []
    for j in range(len(d.lens_vectors)):
        hits = torch.tensor([row[j]["label_in_top"] for row in d.lens])
        r, lo, hi = rate_ci(hits)
        fracs.append(r)
        lows.append(r - lo)
        highs.append(hi - r)
        medians.append(float(np.median([row[j]["label_rank"] for row in d.lens])))
    fig = go.Figure(
        go.Bar(
            x=d.lens_vectors,
            y=fracs,
            error_y={"type": "data", "array": highs, "arrayminus": lows},
            customdata=medians,
            hovertemplate="%{x}: %{y:.2f}<br>median rank %{customdata}<extra></extra>",
            marker_color="#4a6fa5",
        )
    )
    fig.update_layout(
        height=360,
        yaxis={"title": f"labels with their token in the top {LENS_K}", "range": [0, 1.05]},
        margin={"t": 20},
    )
    return fig


def _rates_figure(d: SteeringData) -> go.Figure:
    titles = [RATE_NAMES[m] for m in RATE_METRICS]
    fig = make_subplots(rows=1, cols=len(RATE_METRICS), subplot_titles=titles, shared_yaxes=True)
    for c, metric in enumerate(RATE_METRICS, start=1):
        g = {f: np.array(v) for f, v in d.rates[metric].items()}  # [site][method]
        for j, method in enumerate(d.inject_methods):
            r = g["rate"][:, j]
            fig.add_trace(
                go.Bar(
                    x=d.inject_site_labels,
                    y=r,
                    name=INJECT_NAMES[method],
                    legendgroup=method,
                    showlegend=c == 1,
                    marker_color=INJECT_COLOURS[method],
                    error_y={
                        "type": "data",
                        "array": g["ci_high"][:, j] - r,
                        "arrayminus": r - g["ci_low"][:, j],
                        "thickness": 1,
                    },
                ),
                row=1,
                col=c,
            )
    fig.update_layout(barmode="group", height=440, margin={"t": 40})
    fig.update_yaxes(range=[0, 1.05])
    fig.update_xaxes(type="category", title_text="injection site")
    return fig


def figures(d: SteeringData) -> list[Panel]:
    basis = (
        "Correction vectors and W_U columns live in the normalized stream (ln_final.hook_out, "
        "the unembedding's input); residual-stream vectors share its basis only up to the final "
        "norm's per-dimension scale (Gemma-3's RMSNorm multiplies by 1 + w), so the dotted raw "
        "cosines of residual sites compare different coordinates. Solid lines first map the "
        "residual vectors through the final norm (ln_final(v) - ln_final(0)); at ln_final both "
        "are the same vector."
    )
    how = (
        f"CAA: mean residual at the label token of training statements ending in the label "
        f"(write statement + label) minus the mean over statements ending in any other label. "
        f"ActAdd: last-token residual of '{d.actadd_pair[0]} <label>' minus "
        f"'{d.actadd_pair[0]}{d.actadd_pair[1]}' (equal token lengths, checked). "
        f"{len(d.labels)} labels of the held-out '{SPLIT}' split"
        + (
            f" ({', '.join(d.skipped_labels)} skipped: no training statement)"
            if d.skipped_labels
            else ""
        )
        + "."
    )
    n = d.n_prompts
    return [
        Panel(
            _cosine_figure(d),
            "Cosine of each steering vector with the label's mean correction vector (left) and "
            "with the label's unembedding column (right), per site, mean ± sd over labels. "
            "High values late would say the memory writes what standard steering would write; "
            "low values say the correction is a different direction. " + how + " " + basis,
        ),
        Panel(
            _correction_figure(d),
            "The correction vectors themselves: bars, cosine of each label's mean correction "
            "W_U[:, t] - W_U p with W_U[:, t]; dots, each training entry's correction with "
            "W_U[:, t] and with its label's mean. Entries of one label differ only through the "
            "model's prediction p on their statement, so a tight cloud near 1 means the mean "
            "is a fair summary of the label.",
        ),
        Panel(
            _lens_table(d),
            f"Logit lens, first {min(LENS_TABLE_LABELS, len(d.labels))} labels: top-{LENS_K} "
            "tokens of v @ W_U for each vector type (residual CAA/ActAdd vectors first through "
            "the final norm's scale; b_U left out, the direction only). Green rows have the "
            "label token in the top five. " + basis.split(";")[0] + ".",
        ),
        Panel(
            _lens_summary(d),
            f"Logit lens over all {len(d.labels)} labels: share whose own token is in the "
            f"top {LENS_K} of each vector type (Wilson 95% interval; hover for the median rank). "
            "The W_U column is the unembedding's own direction for the label, a ceiling for "
            "what a single direction can say.",
        ),
        Panel(
            _rates_figure(d),
            f"Direct comparison at the same site: each vector scaled to the memory's injected "
            f"norm (rho {d.rho:g} x the median residual norm at the site and answer position: "
            + ", ".join(
                f"{s} {v:.1f}" for s, v in zip(d.inject_site_labels, d.inject_norms, strict=True)
            )
            + ") and added at the answer position. Left: held-out read questions with their "
            f"own label's vector, first greedy token = label ({n['read']} prompts). Middle and "
            f"right: context-free questions ({n['plain']}; the symbol's first label) and "
            f"unrelated questions ({n['unrelated']}; labels in turn), first token = the "
            "injected label. Correction and W_U vectors are the same at every site (they "
            "belong at ln_final); CAA and ActAdd are those built at that site. Wilson 95% "
            "intervals.",
        ),
    ]


def finding(d: SteeringData) -> str:
    mean, _ = d.cosine_stats("correction")
    col = {m: d.methods.index(m) for m in METHODS}
    embed = d.site_labels.index("embed") if "embed" in d.site_labels else None
    later = [i for i in range(len(d.site_labels)) if i != embed]
    beyond = max(float(mean[i, col[m]]) for i in later for m in METHODS)
    at_embed = (
        f"CAA {mean[embed, col['caa']]:.2f}, ActAdd {mean[embed, col['actadd']]:.2f} at the "
        f"embeddings (raw), "
        if embed is not None
        else ""
    )
    fin = d.inject_site_labels.index("ln_final")
    got = [d.rates[m]["rate"][fin] for m in RATE_METRICS]
    rates = ", ".join(
        f"{INJECT_NAMES[m].split(' (')[0]} " + "/".join(f"{g[i]:.2f}" for g in got)
        for i, m in enumerate(d.inject_methods)
        if m != "none"
    )
    return (
        f"Cosine with the mean correction: {at_embed}at most {beyond:.2f} at any other site "
        f"(raw or norm-mapped); correction vs W_U {np.mean(d.correction_vs_wu):.2f}. At "
        f"ln_final, rho {d.rho:g}, target / false activation (plain, unrelated): {rates}."
    )
