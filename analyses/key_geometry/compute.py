"""Analysis 1: key geometry, raw residual keys vs keys through a learned projector, per layer.

A key here is one vector: the residual state (``blocks.{L}.hook_resid_post``) at the invented
word's last token, standardized with training statistics, optionally through a projector trained
at that layer with ``fmi recall``'s loss and hyperparameters (entries plus an abstain class) on
single symbol-token keys. Write keys come from the statements, read keys from the questions.
Nothing here looks at the answer. The memory's own projector (MaxSim over every content token)
is measured end to end by ``fmi recall``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from jaxtyping import Float
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from torch import Tensor
from tqdm import tqdm

from analyses.prepare import Setup
from fmi.core.forward import collect
from fmi.core.prompts import prompt_spans, span_tokens
from fmi.core.sites import layer_of, resid
from fmi.experiments.queries import unique_bindings
from fmi.memory.keys import Standardizer
from fmi.memory.projectors import train_projector

NAME = "key_geometry"
TITLE = "Key geometry: raw vs projected keys, per layer"
SPLITS = ("same", "new_game", "new_lab")
KINDS = ("raw", "projected")
MATRIX_SYMBOLS = 8  # symbols per context in the cosine matrices


@dataclass(frozen=True)
class KeySet:
    """Symbol-token keys of some prompts at several layers, with who they belong to."""

    keys: dict[int, Float[Tensor, "n d"]]
    context: list[str]
    symbol: list[str]
    role: list[str]  # "write" or "read"


@dataclass(frozen=True)
class LayerEncoder:
    """The standardizer and projector fitted at one layer on the training split."""

    std: Standardizer
    projector: Float[Tensor, "d r"]

    def __call__(self, kind: str, x: Tensor) -> Tensor:
        return self.std(x) if kind == "raw" else self.std(x) @ self.projector


@dataclass(frozen=True)
class KeyGeometryData:
    layers: list[int]
    focus_layer: int  # the memory's own symbol-key layer
    splits: list[str]
    # kind -> split -> "symbol" | "binding" -> per-layer nearest-neighbour accuracy
    retrieval: dict[str, dict[str, dict[str, list[float]]]]
    # kind -> split -> per-layer silhouette of contexts (cosine)
    silhouette: dict[str, dict[str, list[float]]]
    # kind -> {"x", "y", "context", "symbol", "role", "explained"} at the focus layer
    pca: dict[str, dict[str, list]]
    # kind -> {"matrix", "rows", "cols"}: cosines, read keys x write keys, split "same"
    cosine: dict[str, dict[str, list]]

    def to_dict(self) -> dict:
        return asdict(self)


def symbol_token(tokenizer, text: str, span: tuple[int, int]) -> int:
    """Unpadded index of the last token of the symbol's character ``span`` in ``text``."""
    return span_tokens(tokenizer, text, span)[-1]


def _states(setup: Setup, texts: list[str], where: list[int], layers: list[int]) -> dict:
    """Per layer: the residual state of each text at its unpadded token index ``where[i]``."""
    sites = [resid(layer, "post") for layer in layers]
    got = collect(
        setup.model.bridge, setup.model.tokenizer, texts, sites, batch_size=setup.cfg.batch_size
    )
    return {layer: got.stack_at(site, where) for layer, site in zip(layers, sites, strict=True)}


def _symbol_prompts(setup: Setup, split, items) -> tuple[list[str], list[int]]:
    """Texts of ``(binding, kind)`` items and the index of each one's symbol token."""
    texts, where = [], []
    for b, kind in items:
        text, spans = prompt_spans(split.templates, kind, b)
        texts.append(text)
        where.append(symbol_token(setup.model.tokenizer, text, spans["symbol"]))
    return texts, where


def symbol_keys(setup: Setup, split, layers: list[int]) -> KeySet:
    """Symbol-token keys of ``split``'s write statements (one per entry) and read questions."""
    items = [(b, "write") for b in unique_bindings(split.bindings)]
    items += [(b, "read") for b in split.bindings]
    texts, where = _symbol_prompts(setup, split, items)
    return KeySet(
        _states(setup, texts, where, layers),
        [b.context for b, _ in items],
        [b.symbol for b, _ in items],
        [kind for _, kind in items],
    )


def fit_layer_encoders(
    setup: Setup, layers: list[int], *, progress: bool = True
) -> dict[int, LayerEncoder]:
    """A standardizer and projector per layer, fitted on the training split only.

    The projector is trained as ``fmi recall`` trains its own (cross-entropy over entries plus
    a learned abstain class, same hyperparameters) but on single symbol-token keys, the keys this
    analysis studies: write and read prompts point to their entry; plain prompts (symbol without
    context) and unrelated prompts (their last token) must abstain.
    """
    train = setup.task.train
    entries = unique_bindings(train.bindings)
    row = {(b.context, b.symbol): i for i, b in enumerate(entries)}
    first = {b.symbol: b for b in reversed(entries)}
    items = [(b, "write") for b in entries] + [(b, "read") for b in train.bindings]
    items += [(b, "plain") for b in first.values()]
    texts, where = _symbol_prompts(setup, train, items)
    targets = [row[(b.context, b.symbol)] for b, _ in items[: len(items) - len(first)]]
    targets += [-1] * len(first)
    texts += list(train.unrelated)
    where += [-1] * len(train.unrelated)
    targets += [-1] * len(train.unrelated)
    states = _states(setup, texts, where, layers)
    target = torch.tensor(targets)
    out = {}
    for layer in tqdm(layers, desc="projectors", disable=not progress, leave=False):
        std = Standardizer.fit(states[layer])
        queries = std(states[layer])[:, None, :]
        mask = torch.ones(queries.shape[:2], dtype=torch.bool)
        keys = std(states[layer][: len(entries)])
        projector = train_projector(
            keys, queries, mask, target, setup.cfg.recall.projector, setup.cfg.seed
        )
        out[layer] = LayerEncoder(std, projector)
    return out


def nearest_accuracy(
    queries: Float[Tensor, "q d"],
    keys: Float[Tensor, "n d"],
    query_ids: list[tuple[str, str]],
    key_ids: list[tuple[str, str]],
) -> tuple[float, float]:
    """Top-1 cosine neighbour of each query among ``keys``: (right symbol, right symbol+context).

    Ids are ``(context, symbol)`` pairs."""
    sims = (
        torch.nn.functional.normalize(queries, dim=-1)
        @ torch.nn.functional.normalize(keys, dim=-1).T
    )
    best = sims.argmax(dim=1).tolist()
    symbol = np.mean([query_ids[q][1] == key_ids[k][1] for q, k in enumerate(best)])
    binding = np.mean([query_ids[q] == key_ids[k] for q, k in enumerate(best)])
    return float(symbol), float(binding)


def context_silhouette(keys: Float[Tensor, "n d"], contexts: list[str]) -> float:
    """Silhouette (cosine) of ``keys`` grouped by context: 1 separated, 0 mixed."""
    if len(set(contexts)) < 2:
        return float("nan")
    return float(silhouette_score(keys.numpy(), contexts, metric="cosine"))


def _split_rows(ks: KeySet, role: str) -> list[int]:
    return [i for i, r in enumerate(ks.role) if r == role]


def _pca(ks: KeySet, vectors: Tensor) -> dict[str, list]:
    pca = PCA(n_components=2, random_state=0)
    xy = pca.fit_transform(vectors.numpy())
    return {
        "x": xy[:, 0].round(4).tolist(),
        "y": xy[:, 1].round(4).tolist(),
        "context": ks.context,
        "symbol": ks.symbol,
        "role": ks.role,
        "explained": pca.explained_variance_ratio_.round(4).tolist(),
    }


def _cosine_matrix(ks: KeySet, vectors: Tensor) -> dict[str, list]:
    symbols = list(dict.fromkeys(ks.symbol))[:MATRIX_SYMBOLS]

    def rows(role: str) -> list[int]:
        picked = [i for i in _split_rows(ks, role) if ks.symbol[i] in symbols]
        return sorted(picked, key=lambda i: (ks.context[i], symbols.index(ks.symbol[i])))

    reads, writes = rows("read"), rows("write")
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    matrix = unit[reads] @ unit[writes].T
    return {
        "matrix": matrix.numpy().round(4).tolist(),
        "rows": [f"{ks.context[i]} / {ks.symbol[i]}" for i in reads],
        "cols": [f"{ks.context[i]} / {ks.symbol[i]}" for i in writes],
    }


def compute(setup: Setup, *, progress: bool = True) -> KeyGeometryData:
    layers = setup.key_layers()
    focus = layer_of(setup.fitted.encoder.symbol_site)
    if focus is None or focus not in layers:
        layers = sorted({*layers, focus if focus is not None else layers[-1]})
        focus = focus if focus is not None else layers[-1]
    encoders = fit_layer_encoders(setup, layers, progress=progress)
    retrieval: dict[str, dict[str, dict[str, list[float]]]] = {
        k: {s: {"symbol": [], "binding": []} for s in SPLITS} for k in KINDS
    }
    silhouette: dict[str, dict[str, list[float]]] = {k: {s: [] for s in SPLITS} for k in KINDS}
    focus_sets: list[tuple[KeySet, dict[str, Tensor]]] = []
    for name in tqdm(SPLITS, desc="key splits", disable=not progress, leave=False):
        ks = symbol_keys(setup, setup.task.split(name), layers)
        reads, writes = _split_rows(ks, "read"), _split_rows(ks, "write")
        ids = list(zip(ks.context, ks.symbol, strict=True))
        for layer in layers:
            for kind in KINDS:
                vec = encoders[layer](kind, ks.keys[layer])
                sym, bind = nearest_accuracy(
                    vec[reads], vec[writes], [ids[i] for i in reads], [ids[i] for i in writes]
                )
                retrieval[kind][name]["symbol"].append(sym)
                retrieval[kind][name]["binding"].append(bind)
                silhouette[kind][name].append(context_silhouette(vec, ks.context))
        focus_sets.append((ks, {k: encoders[focus](k, ks.keys[focus]) for k in KINDS}))
    merged = KeySet(
        {},
        [c for ks, _ in focus_sets for c in ks.context],
        [s for ks, _ in focus_sets for s in ks.symbol],
        [r for ks, _ in focus_sets for r in ks.role],
    )
    pca = {k: _pca(merged, torch.cat([v[k] for _, v in focus_sets])) for k in KINDS}
    same_ks, same_vec = focus_sets[0]
    cosine = {k: _cosine_matrix(same_ks, same_vec[k]) for k in KINDS}
    return KeyGeometryData(layers, focus, list(SPLITS), retrieval, silhouette, pca, cosine)


# --------------------------------------------------------------------------- figures
