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

The probes and their intervals are in :mod:`analyses.probing`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from analyses.prepare import Setup
from analyses.probing import probe_accuracy, probe_transfer, shuffled_accuracy, shuffled_transfer
from fmi.core.forward import collect
from fmi.core.prompts import prompt_spans, span_tokens
from fmi.core.sites import resid
from fmi.errors import ConfigError
from fmi.experiments.tasks import Binding, Templates

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
