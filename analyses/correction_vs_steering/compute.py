"""Analysis 3: the memory's correction vectors against standard steering vectors.

For each label of the held-out ``same`` split (that also ends some training statement):

* **steering vectors** at the embeddings (``blocks.0.hook_resid_pre``), every
  ``blocks.{L}.hook_resid_post`` and the unembedding's input ``ln_final.hook_out``: mean
  difference (CAA) over the training statements with their label appended, and ActAdd from the
  pair ``"The answer is red"`` - ``"The answer is the"`` (both in :mod:`analyses.steering_vectors`);
* **correction vectors**: the values ``W_U[:, t] - W_U p`` of the label's training entries
  (``fmi.memory.write.write``), which live at ``ln_final.hook_out``, and the unembedding column
  ``W_U[:, t]``.

Then: cosines of every steering vector with the label's mean correction and with ``W_U[:, t]``
(raw, and with residual vectors mapped through the final norm's per-dimension scale, which is
what separates the residual basis from the normalized one); a logit lens of each vector type;
and a direct comparison, each vector scaled to the memory's injected norm (``fitted.rho`` times
the median residual norm at the site and answer position) and added at the answer position of
held-out read prompts (target rate) and of plain and unrelated prompts (false activation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from analyses.correction_vs_steering.vector_math import (
    cosine,
    lens_top,
    rate_ci,
    through_final_norm,
)
from analyses.prepare import Setup
from analyses.steering_vectors import (
    ACTADD_NEUTRAL,
    ACTADD_PREFIX,
    actadd_vectors,
    caa_vectors,
    single_token,
)
from fmi.core.forward import collect
from fmi.core.generate import greedy
from fmi.core.sites import UNEMBED_IN, resid
from fmi.errors import ConfigError
from fmi.experiments.queries import unique_bindings
from fmi.experiments.tasks import Binding
from fmi.memory.values import unembedding
from fmi.memory.write import write

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


def _lens_vectors(
    setup: Setup, sites: list[str], corr_mean: Tensor, cols: Tensor, caa: Tensor, actadd: Tensor
) -> dict[str, Tensor]:
    """The vectors the logit lens reads, in the normalized stream: the mean correction, the W_U
    columns, and CAA / ActAdd at the middle and last layers and at ``ln_final``."""
    bridge = setup.model.bridge
    mid, last = (setup.n_layers - 1) // 2, setup.n_layers - 1
    fin = sites.index(UNEMBED_IN)
    out = {"correction": corr_mean, "W_U column": cols}
    for layer in dict.fromkeys((mid, last)):
        s = sites.index(resid(layer))
        out[f"CAA L{layer}"] = through_final_norm(bridge, caa[:, s])
        out[f"ActAdd L{layer}"] = through_final_norm(bridge, actadd[:, s])
    out["CAA ln_final"] = caa[:, fin]
    out["ActAdd ln_final"] = actadd[:, fin]
    return out


def compute(setup: Setup, *, progress: bool = True) -> SteeringData:
    """Steering vectors (CAA, ActAdd) at every site against the fitted memory's corrections:
    cosines, the logit lens, and the rates of injecting each at the same norm."""
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

    lens_vectors = _lens_vectors(setup, sites, corr_mean, cols, caa, actadd)
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
