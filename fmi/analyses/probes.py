"""Analysis 4: context separability probes on the residual stream, per layer and position.

Logistic-regression probes read the context of held-out read questions (``Question: in game A,
what is blicket? Answer:``) from ``blocks.{L}.hook_resid_post`` (and the embeddings,
``blocks.0.hook_resid_pre``) at three token positions: the context's last token, the symbol's
last token and the prompt's last token (the answer position). Three questions:

1. game A vs game B, cross-validated with folds grouped by symbol (every symbol is asked in both
   contexts, so a fold never tests a symbol it trained on), against a shuffled-label control;
2. which of six contexts (game A/B/C/D, lab north/south), same protocol;
3. transfer: the A-vs-B probe, fitted on every A/B prompt, scored on unseen pairs (game C/D,
   lab north/south): accuracy under a fixed mapping and the mapping-free AUC.

The probes and their intervals are in :mod:`fmi.probing`.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor
from tqdm import tqdm

from fmi.analyses.setup import Setup, make_report
from fmi.errors import ConfigError
from fmi.forward import collect
from fmi.probing import probe_accuracy, probe_transfer, shuffled_accuracy, shuffled_transfer
from fmi.prompts import prompt_spans, span_tokens
from fmi.report import Panel, Report
from fmi.sites import resid
from fmi.tasks import Binding, Templates

NAME = "probes"
TITLE = "Context separability probes: where the residual stream knows the context"
# (split, context), in class order: 0 game A, 1 game B, ..., 5 lab south
CONTEXTS: tuple[tuple[str, str], ...] = (
    ("same", "game A"),
    ("same", "game B"),
    ("new_game", "game C"),
    ("new_game", "game D"),
    ("new_lab", "lab north"),
    ("new_lab", "lab south"),
)
POSITIONS: tuple[str, ...] = ("context", "symbol", "last")
# unseen pair -> its two class indices in CONTEXTS, mapped from game A (0) and game B (1)
TRANSFER_PAIRS: dict[str, tuple[int, int]] = {"new_game": (2, 3), "new_lab": (4, 5)}
VARIANTS: tuple[str, ...] = ("probe", "shuffled")
N_BOOT = 1000
Z95 = 1.959963984540054
MAX_ITER = 2000

Features = Float[np.ndarray, "n d"] | Float[Tensor, "n d"]


# --------------------------------------------------------------------------- prompts and states


def probe_positions(tokenizer, templates: Templates, binding: Binding) -> tuple[str, list[int]]:
    """The read prompt of ``binding`` and the unpadded indices of its probe positions.

    Indices follow :data:`POSITIONS`: the context's last token, the symbol's last token, the
    prompt's last token. The text equals ``templates.prompt("read", binding)`` (no trailing
    space), so the token indices are those the model sees.
    """
    text, spans = prompt_spans(templates, "read", binding)
    n = len(tokenizer(text)["input_ids"])
    return text, [
        span_tokens(tokenizer, text, spans["context"])[-1],
        span_tokens(tokenizer, text, spans["symbol"])[-1],
        n - 1,
    ]


def probe_sites(n_layers: int) -> list[str]:
    """The embeddings (``blocks.0.hook_resid_pre``) and every block's ``hook_resid_post``."""
    return [resid(0, "pre"), *(resid(layer, "post") for layer in range(n_layers))]


def site_label(site: str) -> str:
    """``embed`` for the embeddings, ``L3`` for ``blocks.3.hook_resid_post``."""
    return "embed" if site == resid(0, "pre") else "L" + site.split(".")[1]


def probe_bindings(setup: Setup) -> tuple[list[Binding], list[int], list[int]]:
    """Read bindings of the six contexts, context-major, with class and symbol ids.

    The same symbols are used in every context: those asked in all six, a seeded sample of
    ``cfg.probe_prompts`` of them when there are more.
    """
    per_context: list[dict[str, Binding]] = []
    for split_name, context in CONTEXTS:
        split = setup.task.split(split_name)
        found = {b.symbol: b for b in split.bindings if b.read_context == context}
        if not found:
            raise ConfigError(
                f"probes need read prompts in context {context!r} of split {split_name!r}; "
                f"it has {list(split.read_contexts())}"
            )
        per_context.append(found)
    common = [s for s in per_context[0] if all(s in found for found in per_context[1:])]
    if len(common) > setup.cfg.probe_prompts:
        rng = np.random.default_rng(setup.cfg.seed)
        keep = set(rng.choice(len(common), setup.cfg.probe_prompts, replace=False).tolist())
        common = [s for i, s in enumerate(common) if i in keep]
    if len(common) < setup.cfg.probe_folds:
        raise ConfigError(
            f"probes need at least probe_folds={setup.cfg.probe_folds} symbols asked in all six "
            f"contexts, found {len(common)}"
        )
    bindings, classes, symbols = [], [], []
    for c, found in enumerate(per_context):
        for s, symbol in enumerate(common):
            bindings.append(found[symbol])
            classes.append(c)
            symbols.append(s)
    return bindings, classes, symbols


def collect_states(
    setup: Setup, bindings: list[Binding], sites: list[str]
) -> dict[str, dict[str, Float[Tensor, "n d"]]]:
    """``site -> position -> [n, d]`` residual states of the bindings' read prompts.

    One batched frozen forward caches every site; only the three positions are kept.
    """
    tok = setup.model.tokenizer
    templates = {name: setup.task.split(name).templates for name, _ in CONTEXTS}
    split_of = {context: name for name, context in CONTEXTS}
    texts, where = [], []
    for b in bindings:
        text, idx = probe_positions(tok, templates[split_of[b.read_context]], b)
        texts.append(text)
        where.append(idx)
    got = collect(setup.model.bridge, tok, texts, sites, batch_size=setup.cfg.batch_size)
    out: dict[str, dict[str, Tensor]] = {}
    for site in sites:
        out[site] = {
            pos: got.stack_at(site, [w[p] for w in where]) for p, pos in enumerate(POSITIONS)
        }
        got.acts[site] = []  # free the full sequences as we go
    return out


# --------------------------------------------------------------------------- the analysis

Grid = dict[str, list[list[float]]]  # field -> [site][position]


@dataclass(frozen=True)
class ProbesData:
    sites: list[str]
    site_labels: list[str]
    positions: list[str]
    contexts: list[str]
    n_per_context: int
    folds: int
    # variant ("probe", "shuffled") -> {"accuracy", "ci_low", "ci_high"} -> [site][position]
    ab: dict[str, Grid]
    six: dict[str, Grid]
    # pair ("new_game", "new_lab") -> variant -> {"accuracy", "ci_low", "ci_high", "auc",
    # "auc_low", "auc_high"} -> [site][position]
    transfer: dict[str, dict[str, Grid]]
    pair_contexts: dict[str, list[str]]

    def to_dict(self) -> dict:
        return asdict(self)

    def best(self, grid: Grid, positions: tuple[str, ...] = POSITIONS) -> tuple[int, int]:
        """(site, position) index of the highest accuracy among ``positions`` (earliest site
        on ties)."""
        acc = np.array(grid["accuracy"])
        cols = [self.positions.index(p) for p in positions]
        sub = acc[:, cols]
        i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)
        return int(i), cols[int(j)]


def _empty(fields: tuple[str, ...], n_sites: int) -> Grid:
    return {f: [[] for _ in range(n_sites)] for f in fields}


def _add(grid: Grid, site: int, result) -> None:
    for f, rows in grid.items():
        rows[site].append(round(float(getattr(result, f)), 4))


ACC_FIELDS = ("accuracy", "ci_low", "ci_high")
TRANSFER_FIELDS = (*ACC_FIELDS, "auc", "auc_low", "auc_high")


def compute(setup: Setup, *, progress: bool = True) -> ProbesData:
    cfg = setup.cfg
    bindings, classes, symbols = probe_bindings(setup)
    sites = probe_sites(setup.n_layers)
    states = collect_states(setup, bindings, sites)
    y, groups = np.array(classes), np.array(symbols)
    ab = y < 2
    ab_data = {v: _empty(ACC_FIELDS, len(sites)) for v in VARIANTS}
    six_data = {v: _empty(ACC_FIELDS, len(sites)) for v in VARIANTS}
    transfer = {
        p: {v: _empty(TRANSFER_FIELDS, len(sites)) for v in VARIANTS} for p in TRANSFER_PAIRS
    }
    for s, site in enumerate(tqdm(sites, desc="probes", disable=not progress, leave=False)):
        for pos in POSITIONS:
            x = states[site][pos].numpy()
            kw = {"folds": cfg.probe_folds, "seed": cfg.seed}
            _add(ab_data["probe"], s, probe_accuracy(x[ab], y[ab], groups[ab], **kw))
            _add(ab_data["shuffled"], s, shuffled_accuracy(x[ab], y[ab], groups[ab], **kw))
            _add(six_data["probe"], s, probe_accuracy(x, y, groups, **kw))
            _add(six_data["shuffled"], s, shuffled_accuracy(x, y, groups, **kw))
            for pair, (c0, c1) in TRANSFER_PAIRS.items():
                test = (y == c0) | (y == c1)
                args = (x[ab], y[ab], x[test], (y[test] == c1).astype(int))
                _add(transfer[pair]["probe"], s, probe_transfer(*args, seed=cfg.seed))
                _add(transfer[pair]["shuffled"], s, shuffled_transfer(*args, seed=cfg.seed))
    return ProbesData(
        sites=sites,
        site_labels=[site_label(s) for s in sites],
        positions=list(POSITIONS),
        contexts=[c for _, c in CONTEXTS],
        n_per_context=int((y == 0).sum()),
        folds=cfg.probe_folds,
        ab=ab_data,
        six=six_data,
        transfer=transfer,
        pair_contexts={p: [CONTEXTS[c][1] for c in cs] for p, cs in TRANSFER_PAIRS.items()},
    )


# --------------------------------------------------------------------------- figures

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


def report(setup: Setup, *, progress: bool = True) -> Report:
    return make_report(setup, sys.modules[__name__], progress=progress)
