"""Analysis 2: where to inject, how strongly, and which layer's keys retrieve best.

Injection sweep: the memory's value direction for a prompt is added at its answer position at
every residual site (``blocks.{L}.hook_resid_pre`` for each block, the last block's
``hook_resid_post``, and the final normalized stream ``ln_final.hook_out``), scaled to ``alpha``
times the median residual norm at that site and position. ``blocks.{L}.hook_resid_post`` is the
same tensor as ``blocks.{L+1}.hook_resid_pre``, so these sites cover every distinct point.
Two retrievals: *oracle* injects the right entry into every write/read prompt, the symbol's
entry into plain prompts and a fixed stored entry into unrelated ones (what the site does when
the memory fires); *learned* injects what the fitted memory retrieves (nothing where it abstains).

Key-layer sweep: the memory's query rule (MaxSim over the prompt's content tokens) with token
keys (symbol x context, the ``dual_key`` rule) and single symbol keys (the ``raw_both_top1``
rule), standardized with training statistics, at every layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from analyses.prepare import Setup
from fmi.core.forward import collect
from fmi.core.generate import greedy
from fmi.core.prompts import prompt_spans
from fmi.core.sites import UNEMBED_IN, resid
from fmi.experiments.evaluate import Outputs, hits
from fmi.experiments.queries import QuerySet, build_queries, unique_bindings
from fmi.memory.keys import Standardizer, maxsim, pad_queries
from fmi.memory.retrieve import decide, dual_key_scores, read_queries, score_queries, token_channels
from fmi.memory.write import key_tokens, write_memory

NAME = "layer_sweep"
TITLE = "Injection-layer sweep and key-layer sweep"
SWEEP_SPLIT = "same"
KEY_SPLITS = ("same", "new_game", "new_lab")
METRICS = ("write", "read", "plain", "unrelated_changed")
HIGHER_IS_BETTER = {"write": True, "read": True, "plain": False, "unrelated_changed": False}
RETRIEVALS = ("oracle", "learned")
LEARNED_MODE = "dual_key"
STANDARDIZER_PROMPTS = 256  # training prompts whose content tokens fit each layer's standardizer


@dataclass(frozen=True)
class LayerSweepData:
    sites: list[str]
    alphas: list[float]
    site_norms: list[float]  # median |h| at each site, answer position
    # retrieval -> metric -> [site][alpha] rate
    rates: dict[str, dict[str, list[list[float]]]]
    n_prompts: dict[str, int]  # per kind
    fitted_rho: float  # the memory's own injected fraction at ln_final.hook_out
    key_layers: list[int]
    # rule ("dual_key", "raw_symbol") -> split -> per-layer top-1 retrieval of read prompts
    key_retrieval: dict[str, dict[str, list[float]]]
    memory_token_layer: int
    memory_symbol_layer: int
    max_new_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)

    def best(self, retrieval: str, metric: str) -> tuple[int, int]:
        """(site, alpha) index of the best cell. Read/write: among cells within 0.01 of the best
        rate, the most specific (lowest plain + unrelated_changed, then the smallest alpha).
        Plain/unrelated: the lowest rate among cells whose read is at least 90% of its best."""
        r = {m: np.array(self.rates[retrieval][m]) for m in METRICS}
        grid = r[metric]
        if HIGHER_IS_BETTER[metric]:
            near = grid >= grid.max() - 0.01
            cost = r["plain"] + r["unrelated_changed"] + 1e-6 * np.arange(grid.shape[1])
            flat = int(np.argmin(np.where(near, cost, np.inf)))
        else:
            ok = r["read"] >= 0.9 * r["read"].max()
            flat = int(np.argmin(np.where(ok, grid, np.inf)))
        i, j = np.unravel_index(flat, grid.shape)
        return int(i), int(j)


def sweep_sites(n_layers: int) -> list[str]:
    """Every distinct residual point: each block's input, the last block's output, the final
    normalized stream (the unembedding's input)."""
    return [*(resid(layer, "pre") for layer in range(n_layers)), resid(n_layers - 1), UNEMBED_IN]


def _subsample(qs: QuerySet, per_kind: int, seed: int) -> QuerySet:
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for kind in ("write", "read", "plain", "unrelated"):
        rows = qs.index(kind)
        if len(rows) > per_kind:
            rows = sorted(rng.choice(rows, size=per_kind, replace=False).tolist())
        keep += rows
    return qs.subset(keep)


def oracle_entries(qs: QuerySet, entries) -> list[int]:
    """The entry each prompt gets under oracle retrieval: its own (write/read), its symbol's
    first entry (plain), or a fixed cycle through the stored entries (unrelated)."""
    first: dict[str, int] = {}
    for i, e in enumerate(entries):
        first.setdefault(e.symbol, i)
    out = []
    for q, kind in enumerate(qs.kinds):
        if kind in ("write", "read"):
            out.append(qs.entry[q])
        elif kind == "plain":
            symbol = qs.symbol[q]
            assert symbol is not None  # plain prompts always name a symbol
            out.append(first[symbol])
        else:
            out.append(q % len(entries))
    return out


def _run(setup: Setup, qs: QuerySet, site: str, deltas: Tensor, label_ids: Tensor) -> Outputs:
    gen = greedy(
        setup.model,
        qs.texts,
        site=site,
        deltas=deltas,
        label_ids=label_ids,
        max_new_tokens=setup.cfg.max_new_tokens,
        batch_size=setup.cfg.batch_size,
    )
    return Outputs(gen.tokens, gen.label_pick)


def _rates(setup, qs, written, labels, out: Outputs, base: Outputs) -> dict[str, float]:
    got = hits(setup.model, qs, written.entries, labels, out, base)  # type: ignore[arg-type]
    return {m: float(np.mean(got[m])) if got[m] else float("nan") for m in METRICS}


def injection_sweep(setup: Setup, *, progress: bool = True) -> dict:
    """Rates per retrieval, metric, site and alpha on the held-out ``same`` split."""
    cfg = setup.cfg
    split = setup.task.split(SWEEP_SPLIT)
    entries = unique_bindings(split.bindings)
    written, memory = write_memory(setup.model, entries, split.templates, setup.fitted, cfg.recall)
    qs = _subsample(build_queries(split, entries), cfg.sweep_prompts, cfg.seed)
    enc = memory.encoder
    got = read_queries(setup.model, qs, (enc.symbol_site, enc.token_site), cfg.batch_size)
    scores = score_queries(memory, got.acts[enc.symbol_site], got.acts[enc.token_site], got.content)
    learned = decide(LEARNED_MODE, scores, memory).entry.tolist()
    oracle = oracle_entries(qs, written.entries)
    sites = sweep_sites(setup.n_layers)
    acts = collect(
        setup.model.bridge, setup.model.tokenizer, qs.texts, sites, batch_size=cfg.batch_size
    )
    norms = [float(acts.stack_last(s).norm(dim=-1).median()) for s in sites]
    labels = sorted({e.label for e in written.entries})
    target_of = {e.label: e.target for e in written.entries}
    label_ids = torch.tensor([target_of[lab] for lab in labels])
    unit = torch.nn.functional.normalize(written.values, dim=-1)
    zero = torch.zeros(len(qs.texts), unit.shape[1])
    base = _run(setup, qs, UNEMBED_IN, zero, label_ids)
    # learned retrieval differs from the oracle only where it picks another entry or abstains
    other = [q for q in range(len(qs.texts)) if learned[q] != oracle[q] and learned[q] >= 0]
    sub = qs.subset(other)
    rates: dict[str, dict[str, list[list[float]]]] = {
        r: {m: [] for m in METRICS} for r in RETRIEVALS
    }
    cells = [(s, n, a) for s, n in zip(sites, norms, strict=True) for a in cfg.alphas]
    bar = tqdm(total=len(cells), desc="injection sweep", disable=not progress, leave=False)
    for si, (site, norm) in enumerate(zip(sites, norms, strict=True)):
        for r in RETRIEVALS:
            for m in METRICS:
                rates[r][m].append([])
        for alpha in cfg.alphas:
            out = _run(setup, qs, site, alpha * norm * unit[oracle], label_ids)
            toks, picks = list(out.tokens), list(out.picks)
            if other:
                extra = _run(
                    setup, sub, site, alpha * norm * unit[[learned[q] for q in other]], label_ids
                )
                for k, q in enumerate(other):
                    toks[q], picks[q] = extra.tokens[k], extra.picks[k]
            for q in range(len(qs.texts)):
                if learned[q] < 0:
                    toks[q], picks[q] = base.tokens[q], base.picks[q]
            for r, o in (("oracle", out), ("learned", Outputs(toks, picks))):
                for m, v in _rates(setup, qs, written, labels, o, base).items():
                    rates[r][m][si].append(v)
            bar.update(1)
    bar.close()
    n_prompts = {k: len(qs.index(k)) for k in ("write", "read", "plain", "unrelated")}
    return {"sites": sites, "norms": norms, "rates": rates, "n_prompts": n_prompts}


def _token_keys(setup: Setup, split, layers: list[int]) -> tuple[dict, dict]:
    """Per layer: (token keys, owner, role) and single symbol keys of ``split``'s entries."""
    tok = setup.model.tokenizer
    entries = unique_bindings(split.bindings)
    texts, spans = zip(*(prompt_spans(split.templates, "write", b) for b in entries), strict=True)
    sites = [resid(layer) for layer in layers]
    got = collect(setup.model.bridge, tok, list(texts), sites, batch_size=setup.cfg.batch_size)
    where = key_tokens(tok, list(texts), list(spans))
    at = dict(zip(layers, sites, strict=True))
    keys = {
        "tokens": {layer: where.token_keys(got.acts[at[layer]]) for layer in layers},
        "owner": torch.tensor(where.prompt),
        "role": torch.tensor(where.role),
    }
    symbols = {layer: where.symbol_keys(got.acts[at[layer]]) for layer in layers}
    return keys, symbols


def key_layer_sweep(setup: Setup, layers: list[int], *, progress: bool = True) -> dict:
    """Top-1 retrieval of held-out read prompts per key layer, per rule and split."""
    cfg = setup.cfg
    sites = [resid(layer) for layer in layers]
    train = setup.task.train
    train_qs = build_queries(train, unique_bindings(train.bindings))
    rng = np.random.default_rng(cfg.seed)
    pick = rng.permutation(len(train_qs.texts))[:STANDARDIZER_PROMPTS].tolist()
    fit_got = collect(
        setup.model.bridge,
        setup.model.tokenizer,
        [train_qs.texts[i] for i in pick],
        sites,
        batch_size=cfg.batch_size,
    )
    stds = {
        layer: Standardizer.fit(
            torch.cat([a[c] for a, c in zip(fit_got.acts[site], fit_got.content, strict=True)])
        )
        for layer, site in zip(layers, sites, strict=True)
    }
    out: dict[str, dict[str, list[float]]] = {"dual_key": {}, "raw_symbol": {}}
    for name in tqdm(KEY_SPLITS, desc="key-layer sweep", disable=not progress, leave=False):
        split = setup.task.split(name)
        entries = unique_bindings(split.bindings)
        where = {(b.context, b.symbol): i for i, b in enumerate(entries)}
        want = torch.tensor([where[(b.context, b.symbol)] for b in split.bindings])
        keys, symbols = _token_keys(setup, split, layers)
        reads = [split.templates.prompt("read", b) for b in split.bindings]
        got = collect(
            setup.model.bridge, setup.model.tokenizer, reads, sites, batch_size=cfg.batch_size
        )
        out["dual_key"][name], out["raw_symbol"][name] = [], []
        for layer, site in zip(layers, sites, strict=True):
            std = stds[layer]
            q, mask = pad_queries(
                [std(a[c]) for a, c in zip(got.acts[site], got.content, strict=True)]
            )
            n = len(entries)
            channels = token_channels(
                q, mask, std(keys["tokens"][layer]), keys["owner"], keys["role"], n
            )
            dual = dual_key_scores(*channels)
            raw = maxsim(q, mask, std(symbols[layer]), torch.arange(n), n)
            out["dual_key"][name].append(float((dual.argmax(1) == want).float().mean()))
            out["raw_symbol"][name].append(float((raw.argmax(1) == want).float().mean()))
    return out


def compute(setup: Setup, *, progress: bool = True) -> LayerSweepData:
    sweep = injection_sweep(setup, progress=progress)
    layers = setup.key_layers()
    keys = key_layer_sweep(setup, layers, progress=progress)
    enc = setup.fitted.encoder
    return LayerSweepData(
        sites=sweep["sites"],
        alphas=list(setup.cfg.alphas),
        site_norms=sweep["norms"],
        rates=sweep["rates"],
        n_prompts=sweep["n_prompts"],
        fitted_rho=setup.fitted.rho,
        key_layers=layers,
        key_retrieval=keys,
        memory_token_layer=int(enc.token_site.split(".")[1]),
        memory_symbol_layer=int(enc.symbol_site.split(".")[1]),
        max_new_tokens=setup.cfg.max_new_tokens,
    )


# --------------------------------------------------------------------------- figures
