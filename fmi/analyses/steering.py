"""Analysis 3: the memory's correction vectors against standard steering vectors.

For each label of the held-out ``same`` split (that also ends some training statement):

* **steering vectors** at the embeddings (``blocks.0.hook_resid_pre``), every
  ``blocks.{L}.hook_resid_post`` and the unembedding's input ``ln_final.hook_out``: mean
  difference (CAA) over the training statements with their label appended, and ActAdd from the
  pair ``"The answer is red"`` - ``"The answer is the"`` (both in :mod:`fmi.steering_vectors`);
* **correction vectors**: the values ``W_U[:, t] - W_U p`` of the label's training entries
  (``fmi.write.write``), which live at ``ln_final.hook_out``, and the unembedding column
  ``W_U[:, t]``.

Then: cosines of every steering vector with the label's mean correction and with ``W_U[:, t]``
(raw, and with residual vectors mapped through the final norm's per-dimension scale, which is
what separates the residual basis from the normalized one); a logit lens of each vector type;
and a direct comparison, each vector scaled to the memory's injected norm (``fitted.rho`` times
the median residual norm at the site and answer position) and added at the answer position of
held-out read prompts (target rate) and of plain and unrelated prompts (false activation).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from plotly.subplots import make_subplots
from torch import Tensor
from tqdm import tqdm

from fmi.analyses.setup import Setup, make_report
from fmi.errors import ConfigError
from fmi.forward import collect
from fmi.generate import greedy
from fmi.probing import wilson_interval
from fmi.queries import unique_bindings
from fmi.report import Panel, Report
from fmi.sites import UNEMBED_IN, resid
from fmi.steering_vectors import (
    ACTADD_NEUTRAL,
    ACTADD_PREFIX,
    actadd_vectors,
    caa_vectors,
    single_token,
)
from fmi.tasks import Binding
from fmi.values import unembedding
from fmi.write import write

NAME = "steering"
TITLE = "Correction vectors vs steering vectors (CAA, ActAdd, W_U)"
SPLIT = "same"
METHODS = ("caa", "actadd", "caa_normed", "actadd_normed")
METHOD_NAMES = {
    "caa": "CAA",
    "actadd": "ActAdd",
    "caa_normed": "CAA × final-norm scale",
    "actadd_normed": "ActAdd × final-norm scale",
}
REFERENCES = ("correction", "w_u")
INJECT_METHODS = ("none", "correction", "caa", "actadd", "w_u")
INJECT_NAMES = {
    "none": "no injection",
    "correction": "mean correction",
    "caa": "CAA (this site)",
    "actadd": "ActAdd (this site)",
    "w_u": "W_U column",
}
RATE_METRICS = ("target", "false_plain", "false_unrelated")
RATE_NAMES = {
    "target": "target rate: read prompts, right label's vector",
    "false_plain": "false activation: plain prompts",
    "false_unrelated": "false activation: unrelated prompts",
}
LENS_K = 5
LENS_TABLE_LABELS = 4
MAX_PROMPTS = 96  # per kind (read, plain, unrelated), seeded sample when a split has more


# --------------------------------------------------------------------------- sites and maths


def vector_sites(n_layers: int) -> list[str]:
    """Where steering vectors are built: embeddings, every block's output, the unembedding input."""
    return [resid(0, "pre"), *(resid(layer) for layer in range(n_layers)), UNEMBED_IN]


def inject_sites(n_layers: int) -> list[str]:
    """Where vectors are added: the middle block's output, the last block's, ``ln_final``."""
    return list(dict.fromkeys([resid((n_layers - 1) // 2), resid(n_layers - 1), UNEMBED_IN]))


def site_label(site: str) -> str:
    """``embed``, ``L3`` (``blocks.3.hook_resid_post``) or ``ln_final``."""
    if site == resid(0, "pre"):
        return "embed"
    if site == UNEMBED_IN:
        return "ln_final"
    return "L" + site.split(".")[1]


def cosine(a: Float[Tensor, "*batch d"], b: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch"]:
    """Cosine similarity along the last axis (broadcasting), clipped to [-1, 1]; 0 for a zero
    vector."""
    a, b = torch.broadcast_tensors(a.double(), b.double())
    num = (a * b).sum(-1)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    out = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))
    return out.clamp(-1.0, 1.0).float()


@torch.inference_mode()
def through_final_norm(bridge, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
    """``ln_final(x) - ln_final(0)``: a residual direction as the final norm maps it.

    For Gemma-3's RMSNorm that is ``x / rms(x) * (1 + w)``; for LayerNorm ``(x - mean x) / std(x)
    * w`` (the bias cancels). Up to one positive scalar per vector this is the norm's
    per-dimension scale, which is all a cosine or a top-k sees.
    """
    flat = x.reshape(-1, x.shape[-1]).float()
    zero = torch.zeros(1, x.shape[-1])
    return (bridge.ln_final(flat) - bridge.ln_final(zero)).reshape(x.shape)


def lens_top(
    vectors: Float[Tensor, "m d"], w_u: Float[Tensor, "d vocab"], targets: Int[Tensor, " m"], k: int
) -> tuple[Int[Tensor, "m k"], Int[Tensor, " m"]]:
    """Top-``k`` token ids of ``vectors @ W_U`` and the rank of each row's target (0 = top).

    Rows go through in small chunks so that only a few vocabulary-sized rows exist at once.
    """
    tops, ranks = [], []
    for start in range(0, vectors.shape[0], 16):
        logits = vectors[start : start + 16].float() @ w_u
        t = targets[start : start + 16]
        tops.append(logits.topk(k, dim=-1).indices)
        own = logits.gather(1, t[:, None])
        ranks.append((logits > own).sum(-1))
    return torch.cat(tops), torch.cat(ranks)


def rate_ci(hits: Bool[Tensor, " n"]) -> tuple[float, float, float]:
    """Mean of 0/1 ``hits`` and its 95% Wilson interval (NaNs when there are none)."""
    n = int(hits.numel())
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    k = int(hits.sum())
    low, high = wilson_interval(k, n)
    return k / n, low, high


# --------------------------------------------------------------------------- the analysis

Rates = dict[str, dict[str, list[list[float]]]]  # metric -> rate/ci_low/ci_high -> [site][method]


@dataclass(frozen=True)
class SteeringData:
    labels: list[str]
    label_tokens: list[int]
    skipped_labels: list[str]  # labels of the split that end no training statement
    n_statements: list[int]  # training statements (= correction entries) per label
    sites: list[str]
    site_labels: list[str]
    methods: list[str]
    # reference ("correction", "w_u") -> [label][site][method]
    cosines: dict[str, list[list[list[float]]]]
    correction_vs_wu: list[float]  # per label: mean correction vs W_U[:, label]
    individual_vs_wu: list[list[float]]  # per label, per entry
    individual_vs_mean: list[list[float]]  # per label, per entry: vs the label's mean
    actadd_pair: list[str]  # [prefix, neutral token]
    lens_vectors: list[str]
    # [label][vector] -> top token strings, their ids, rank of the label token, in top-k?
    lens: list[list[dict]]
    inject_sites: list[str]
    inject_site_labels: list[str]
    inject_methods: list[str]
    inject_norms: list[float]  # median |h| at each injection site, answer position
    rho: float
    rates: Rates
    n_prompts: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)

    def cosine_stats(self, reference: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over labels: ``[site, method]`` each."""
        c = np.array(self.cosines[reference])
        return c.mean(0), c.std(0)


def _round(x) -> list:
    return np.round(np.asarray(x, dtype=float), 4).tolist()


def _labels(setup: Setup, entries) -> tuple[list[str], list[str]]:
    """Labels of the split that some training statement ends in, and those that none does."""
    trained = {b.label for b in entries}
    labels = setup.task.split(SPLIT).labels()
    keep = [lab for lab in labels if lab in trained]
    if not keep:
        raise ConfigError(f"no label of split {SPLIT!r} ends a training statement: {labels}")
    return keep, [lab for lab in labels if lab not in trained]


def _sample(items: list, n: int, seed: int) -> list:
    if len(items) <= n:
        return items
    keep = sorted(np.random.default_rng(seed).choice(len(items), n, replace=False).tolist())
    return [items[i] for i in keep]


def eval_prompts(setup: Setup, labels: list[str]) -> tuple[list[str], list[str], list[int]]:
    """Prompts for the direct comparison: ``(texts, kinds, label index injected into each)``.

    ``read``: the split's read questions (their own label); ``plain``: one context-free question
    per symbol (the label of the symbol's first binding, what a symbol-only memory would
    inject); ``unrelated``: the split's control questions, labels in turn.
    """
    split = setup.task.split(SPLIT)
    t, seed = split.templates, setup.cfg.seed
    where = {lab: i for i, lab in enumerate(labels)}
    reads = _sample([b for b in split.bindings if b.label in where], MAX_PROMPTS, seed)
    first: dict[str, Binding] = {}
    for b in split.bindings:
        if b.label in where:
            first.setdefault(b.symbol, b)
    plains = _sample(list(first.values()), MAX_PROMPTS, seed)
    unrelated = _sample(list(split.unrelated), MAX_PROMPTS, seed)
    rows = [(t.prompt("read", b), "read", where[b.label]) for b in reads]
    rows += [(t.prompt("plain", b), "plain", where[b.label]) for b in plains]
    rows += [(u, "unrelated", i % len(labels)) for i, u in enumerate(unrelated)]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _corrections(setup: Setup, entries, labels: list[str]) -> tuple[Tensor, list[Tensor]]:
    """The label's mean correction value and its entries' values (one frozen forward pass)."""
    enc = setup.fitted.encoder
    written = write(
        setup.model,
        entries,
        setup.task.train.templates,
        symbol_site=enc.symbol_site,
        token_site=enc.token_site,
        inject_site=setup.cfg.recall.inject_site,
        batch_size=setup.cfg.batch_size,
    )
    per_label = [
        written.values[[i for i, e in enumerate(written.entries) if e.label == lab]]
        for lab in labels
    ]
    return torch.stack([v.mean(0) for v in per_label]), per_label


def _normed(bridge, v: Float[Tensor, "k s d"], sites: list[str]) -> Float[Tensor, "k s d"]:
    """Residual-site vectors through the final norm's scale; ``ln_final`` ones stay as they are."""
    out = v.clone()
    res = [i for i, s in enumerate(sites) if s != UNEMBED_IN]
    out[:, res] = through_final_norm(bridge, v[:, res])
    return out


def _lens(
    setup: Setup, vectors: dict[str, Tensor], w_u: Tensor, tokens: Tensor
) -> tuple[list[str], list[list[dict]]]:
    """Top tokens of each named ``[labels, d]`` vector (in the normalized stream) via ``W_U``."""
    tok = setup.model.tokenizer
    names = list(vectors)
    k = len(tokens)
    stacked = torch.stack([vectors[n] for n in names], dim=1).reshape(k * len(names), -1)
    top, rank = lens_top(stacked, w_u, tokens.repeat_interleave(len(names)), LENS_K)
    out = []
    for i in range(k):
        row = []
        for j in range(len(names)):
            r = i * len(names) + j
            ids = top[r].tolist()
            row.append(
                {
                    "top": [tok.decode([t]) for t in ids],
                    "top_ids": ids,
                    "label_rank": int(rank[r]),
                    "label_in_top": bool(rank[r] < LENS_K),
                }
            )
        out.append(row)
    return names, out


def _direct_comparison(
    setup: Setup,
    labels: list[str],
    vectors: dict[str, Tensor],
    site_vectors: dict[str, dict[str, Tensor]],
    progress: bool,
) -> tuple[list[str], list[float], Rates, dict[str, int]]:
    """Target and false-activation rates per injection site and vector type (one batched greedy
    run per pair); every vector scaled to ``rho`` x the median answer-position norm at the site."""
    cfg, model = setup.cfg, setup.model
    tok = model.tokenizer
    texts, kinds, idx = eval_prompts(setup, labels)
    templates = setup.task.split(SPLIT).templates
    targets = torch.tensor(
        [
            single_token(tok, templates.target("plain" if k == "plain" else "read", labels[i]))
            for k, i in zip(kinds, idx, strict=True)
        ]
    )
    sites = inject_sites(setup.n_layers)
    # one frozen forward gives the norms and the injection-free first greedy token (the argmax of
    # the answer position's logits; checked equal to ``greedy`` without deltas)
    base = collect(
        model.bridge,
        tok,
        texts,
        sites,
        batch_size=cfg.batch_size,
        reduce_last=lambda logits, rows: logits.argmax(-1),
    )
    norms = [float(base.stack_last(s).norm(dim=-1).median()) for s in sites]
    first_base = torch.cat(base.last)
    rows = {
        "target": [i for i, k in enumerate(kinds) if k == "read"],
        "false_plain": [i for i, k in enumerate(kinds) if k == "plain"],
        "false_unrelated": [i for i, k in enumerate(kinds) if k == "unrelated"],
    }
    rates: Rates = {m: {"rate": [], "ci_low": [], "ci_high": []} for m in RATE_METRICS}
    label_idx = torch.tensor(idx)
    bar = tqdm(
        total=len(sites) * (len(INJECT_METHODS) - 1),
        desc="steering injections",
        disable=not progress,
        leave=False,
    )
    for site, norm in zip(sites, norms, strict=True):
        cells: dict[str, list[tuple[float, float, float]]] = {m: [] for m in RATE_METRICS}
        for method in INJECT_METHODS:
            if method == "none":
                first = first_base
            else:
                vec = site_vectors[site][method] if method in ("caa", "actadd") else vectors[method]
                unit = torch.nn.functional.normalize(vec.float(), dim=-1)
                out = greedy(
                    model,
                    texts,
                    site=site,
                    deltas=setup.fitted.rho * norm * unit[label_idx],
                    max_new_tokens=1,
                    batch_size=cfg.batch_size,
                )
                first = torch.tensor([t[0] for t in out.tokens])
                bar.update(1)
            hits = first == targets
            for m in RATE_METRICS:
                cells[m].append(rate_ci(hits[rows[m]]))
        for m in RATE_METRICS:
            for f, field in enumerate(("rate", "ci_low", "ci_high")):
                rates[m][field].append([round(c[f], 4) for c in cells[m]])
    bar.close()
    n_prompts = {k: kinds.count(k) for k in ("read", "plain", "unrelated")}
    return sites, norms, rates, n_prompts


def compute(setup: Setup, *, progress: bool = True) -> SteeringData:
    cfg, model = setup.cfg, setup.model
    train = setup.task.train
    entries = unique_bindings(train.bindings)
    labels, skipped = _labels(setup, entries)
    tokens = torch.tensor(
        [single_token(model.tokenizer, train.templates.target("write", lab)) for lab in labels]
    )
    sites = vector_sites(setup.n_layers)
    steps = tqdm(total=3, desc="steering vectors", disable=not progress, leave=False)
    caa = caa_vectors(model, entries, train.templates, labels, sites, batch_size=cfg.batch_size)
    steps.update(1)
    targets = [train.templates.target("write", lab) for lab in labels]
    actadd = actadd_vectors(model, targets, sites, batch_size=cfg.batch_size)
    steps.update(1)
    corr_mean, corr_each = _corrections(setup, entries, labels)
    steps.update(1)
    steps.close()
    w_u, _ = unembedding(model.bridge)
    cols = w_u[:, tokens].T  # [labels, d]

    vecs = torch.stack(
        [caa, actadd, _normed(model.bridge, caa, sites), _normed(model.bridge, actadd, sites)],
        dim=2,
    )  # [labels, sites, methods, d]
    cosines = {
        "correction": _round(cosine(vecs, corr_mean[:, None, None])),
        "w_u": _round(cosine(vecs, cols[:, None, None])),
    }
    individual_vs_wu = [_round(cosine(v, cols[i])) for i, v in enumerate(corr_each)]
    individual_vs_mean = [_round(cosine(v, corr_mean[i])) for i, v in enumerate(corr_each)]

    mid, last = (setup.n_layers - 1) // 2, setup.n_layers - 1
    fin = sites.index(UNEMBED_IN)
    lens_vectors = {"correction": corr_mean, "W_U column": cols}
    for layer in dict.fromkeys((mid, last)):
        s = sites.index(resid(layer))
        lens_vectors[f"CAA L{layer}"] = through_final_norm(model.bridge, caa[:, s])
        lens_vectors[f"ActAdd L{layer}"] = through_final_norm(model.bridge, actadd[:, s])
    lens_vectors["CAA ln_final"] = caa[:, fin]
    lens_vectors["ActAdd ln_final"] = actadd[:, fin]
    lens_names, lens = _lens(setup, lens_vectors, w_u, tokens)

    site_vectors = {
        s: {"caa": caa[:, sites.index(s)], "actadd": actadd[:, sites.index(s)]}
        for s in inject_sites(setup.n_layers)
    }
    isites, norms, rates, n_prompts = _direct_comparison(
        setup, labels, {"correction": corr_mean, "w_u": cols}, site_vectors, progress
    )
    return SteeringData(
        labels=labels,
        label_tokens=tokens.tolist(),
        skipped_labels=skipped,
        n_statements=[len(v) for v in corr_each],
        sites=sites,
        site_labels=[site_label(s) for s in sites],
        methods=list(METHODS),
        cosines=cosines,
        correction_vs_wu=_round(cosine(corr_mean, cols)),
        individual_vs_wu=individual_vs_wu,
        individual_vs_mean=individual_vs_mean,
        actadd_pair=[ACTADD_PREFIX, ACTADD_NEUTRAL],
        lens_vectors=lens_names,
        lens=lens,
        inject_sites=isites,
        inject_site_labels=[site_label(s) for s in isites],
        inject_methods=list(INJECT_METHODS),
        inject_norms=_round(norms),
        rho=setup.fitted.rho,
        rates=rates,
        n_prompts=n_prompts,
    )


# --------------------------------------------------------------------------- figures

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
                    hovertemplate="%{x}: %{y:.3f}<extra>" + METHOD_NAMES[method] + "</extra>",
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


def report(setup: Setup, *, progress: bool = True) -> Report:
    return make_report(setup, sys.modules[__name__], progress=progress)
