"""Activation steering as a memory: CAA (mean difference) and ActAdd vectors, one per label.

The vectors come from :mod:`analyses.steering_vectors`: CAA at the label token, CAA at the answer
position (the token that predicts the label) and ActAdd. A sweep on training read prompts picks the
site (evenly spaced residual layers plus the final norm's output) and the scale (a fraction of
the median residual norm there), giving each read its own label's vector: the best a steering
method can do. Then on the evaluation split:

- ``oracle label``: each write/read prompt gets the vector of the label it asks for (an oracle
  picks it; steering has no retrieval). Plain prompts get the symbol's first label, unrelated
  prompts the labels in turn: a steering vector that is on does not know it is not needed.
- ``both edits on``: steering cannot tell game A from game B, so both edits about a symbol are
  on together: every prompt about the symbol gets the mean of its labels' vectors. This is the
  two-context conflict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from analyses.compare.rows import Cost, Row, entries_in_play, inject, score
from analyses.steering_vectors import (
    actadd_vectors,
    caa_answer_vectors,
    caa_vectors,
    last_states,
)
from fmi.core.generate import greedy
from fmi.core.sites import UNEMBED_IN, resid
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import SplitRun
from fmi.experiments.queries import build_queries, unique_bindings

METHODS = ("CAA", "CAA at answer", "ActAdd")
VARIANTS = ("oracle label", "both edits on")


def steering_sites(n_layers: int, k: int) -> list[str]:
    """``k`` evenly spaced ``hook_resid_post`` sites (the last layer included), then the final
    norm's output."""
    layers = sorted({int(round(x)) for x in np.linspace(0, n_layers - 1, min(k, n_layers))})
    return [resid(layer, "post") for layer in layers] + [UNEMBED_IN]


@dataclass(frozen=True)
class Sweep:
    """Training read accuracy (first token) of each (site, alpha), and the pick."""

    sites: list[str]
    alphas: list[float]
    accuracy: Float[Tensor, "s a"]
    site: int
    alpha: float

    def to_dict(self) -> dict:
        return {
            "sites": self.sites,
            "alphas": self.alphas,
            "accuracy": self.accuracy.tolist(),
            "site": self.sites[self.site],
            "alpha": self.alpha,
        }


def pick(accuracy: Float[Tensor, "s a"], alphas: list[float]) -> tuple[int, float]:
    """The best cell; ties go to the smaller alpha, then the earlier site."""
    best = float(accuracy.max())
    for a in sorted(range(len(alphas)), key=lambda j: alphas[j]):
        for s in range(accuracy.shape[0]):
            if float(accuracy[s, a]) >= best:
                return s, alphas[a]
    raise AssertionError("unreachable: the maximum is in the table")


def unit(v: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def sweep(
    model,
    texts: list[str],
    targets: list[int],
    label_of: list[int],
    vectors: Float[Tensor, "k s d"],
    sites: list[str],
    norms: Float[Tensor, " s"],
    alphas: list[float],
    cfg: RecallConfig,
    progress: bool = False,
) -> Sweep:
    """Inject each text's label vector at every (site, alpha); score the first greedy token."""
    acc = torch.zeros(len(sites), len(alphas))
    cells = [(s, a) for s in range(len(sites)) for a in range(len(alphas))]
    for s, a in tqdm(cells, desc="steering sweep", disable=not progress, leave=False):
        deltas = alphas[a] * norms[s] * unit(vectors[label_of, s])
        out = greedy(
            model,
            texts,
            site=sites[s],
            deltas=deltas,
            max_new_tokens=1,
            batch_size=cfg.batch_size,
        )
        acc[s, a] = float(
            np.mean([t[:1] == (y,) for t, y in zip(out.tokens, targets, strict=True)])
        )
    s, alpha = pick(acc, alphas)
    return Sweep(sites, alphas, acc, s, alpha)


def query_vectors(
    run: SplitRun, label_vectors: Float[Tensor, "k d"], labels: list[str], variant: str
) -> Float[Tensor, "q d"]:
    """Per query, the steering vector that is on under ``variant`` (see the module notes): the
    mean of the label vectors of the entries in play."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    index = {lab: i for i, lab in enumerate(labels)}
    chosen = entries_in_play(run, own_only=variant == "oracle label")
    return torch.stack(
        [label_vectors[[index[run.entries[i].label] for i in ids]].mean(0) for ids in chosen]
    )


@dataclass(frozen=True)
class SweepReads:
    """Training read prompts the sweep scores: their first target token, their label's index,
    and the median residual norm at each site (answer position) that alphas are fractions of."""

    texts: list[str]
    targets: list[int]
    label_of: list[int]
    norms: Float[Tensor, " s"]


def sweep_reads(
    model, train_split, labels: list[str], sites: list[str], n: int, batch_size: int
) -> SweepReads:
    """``n`` training read prompts spread evenly over the training split."""
    entries = unique_bindings(train_split.bindings)
    tqs = build_queries(train_split, entries)
    reads = tqs.index("read")
    reads = reads[:: max(1, len(reads) // n)][:n]
    texts = [tqs.texts[q] for q in reads]
    asked = [entries[tqs.entry[q]] for q in reads]
    tok, templates = model.tokenizer, train_split.templates
    targets = [
        tok(templates.target("read", b.label), add_special_tokens=False)["input_ids"][0]
        for b in asked
    ]
    states = last_states(model, texts, sites, batch_size=batch_size)
    norms = states.norm(dim=-1).median(0).values
    return SweepReads(texts, targets, [labels.index(b.label) for b in asked], norms)


def label_vectors(
    method: str, model, statements, templates, labels: list[str], sites: list[str], batch: int
) -> tuple[Float[Tensor, "k s d"], int]:
    """``method``'s vector for every label at every site, and the forward passes it took."""
    if method == "CAA":
        vecs = caa_vectors(model, statements, templates, labels, sites, batch_size=batch)
        return vecs, len(statements)
    if method == "CAA at answer":
        vecs = caa_answer_vectors(model, statements, templates, labels, sites, batch_size=batch)
        return vecs, len(statements)
    if method == "ActAdd":
        targets = [templates.target("write", lab) for lab in labels]
        return actadd_vectors(model, targets, sites, batch_size=batch), len(labels) + 1
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def steering_rows(
    model, train_split, run: SplitRun, cfg: RecallConfig, ccfg, progress: bool = False
) -> tuple[list[Row], dict]:
    """Rows of every steering method in both variants, and each method's sweep."""
    sites = steering_sites(int(model.bridge.cfg.n_layers), ccfg.steering_layers)
    templates = run.split.templates  # type: ignore[attr-defined]
    statements = [
        *unique_bindings(train_split.bindings),
        *unique_bindings(run.split.bindings),  # type: ignore[attr-defined]
    ]
    labels = sorted({b.label for b in statements})
    reads = sweep_reads(model, train_split, labels, sites, ccfg.sweep_prompts, cfg.batch_size)
    alphas = list(ccfg.steering_alphas)
    rows, sweeps = [], {}
    for method in METHODS:
        start = time.perf_counter()
        vecs, forwards = label_vectors(
            method, model, statements, templates, labels, sites, cfg.batch_size
        )
        found = sweep(
            model,
            reads.texts,
            reads.targets,
            reads.label_of,
            vecs,
            sites,
            reads.norms,
            alphas,
            cfg,
            progress,
        )
        sweeps[method] = found.to_dict()
        cells, n = found.accuracy.numel(), len(reads.texts)
        cost = Cost(
            forwards + n * cells,
            0,
            time.perf_counter() - start,
            f"{forwards} statement forwards for {len(labels)} label vectors, plus the training "
            f"sweep ({cells} cells x {n} prompts); once, not per binding",
        )
        chosen = found.alpha * reads.norms[found.site] * unit(vecs[:, found.site])
        site = sites[found.site]
        for variant in VARIANTS:
            out = inject(model, run, cfg, site, query_vectors(run, chosen, labels, variant))
            rows.append(
                score(
                    model,
                    run,
                    cfg,
                    f"{method} ({variant})",
                    "steering",
                    out,
                    cost,
                    active=torch.ones(len(run.qs.texts), dtype=torch.bool),
                    detail={"site": site, "alpha": found.alpha},
                )
            )
    return rows, sweeps
