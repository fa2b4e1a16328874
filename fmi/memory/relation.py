"""The relation key: fitting the ``relation_key`` read rule on written entries.

An entry's relation key is the frozen model's state at the injection site (the unembedding's
input), answer position: what the model was about to say after the statement. A query's is the
same state at its last position, which the injection hook sees before it adds anything. Two
prompts that ask the same question about a subject tend to sit close there; the same subject
under another relation does not (docs/analyses.md, relation geometry). ``relation_key`` weighs
the dual key's token similarities, the subject's single-vector similarity (``raw``) and this
relation similarity by a balanced logistic regression on training (query, entry) pairs, then
abstains below a threshold set by Youden's J on the training queries.

>>> import fmi
>>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
>>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
>>> _ = memory.write_many(["Ann lives in", "Bob works at"], [" Rome", " CERN"],
...                       spans=[{"symbol": "Ann"}, {"symbol": "Bob"}])
>>> fitted = fit_relation_key(memory, model, ["Ann lives in", "Bob works at"], [0, 1],
...                           ["Ann works at"])
>>> fitted.mode, fitted.relation_weights.shape
('relation_key', torch.Size([7]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from fmi.core.forward import Collected, collect
from fmi.core.sites import UNEMBED_IN
from fmi.errors import ConfigError
from fmi.memory.keys import Standardizer
from fmi.memory.retrieve import (
    RELATION_FEATURES,
    QueryScores,
    relation_features,
    score_queries,
)
from fmi.memory.store import FastMemory


def relation_states(
    memory: FastMemory, model: Any, prompts: Sequence[str], batch_size: int = 16
) -> Collected:
    """One frozen forward per batch of ``prompts``, keeping the memory's key sites and the
    unembedding's input: everything ``relation_key`` reads."""
    enc = memory.encoder
    sites = list(dict.fromkeys([enc.symbol_site, enc.token_site, UNEMBED_IN]))
    return collect(model.bridge, model.tokenizer, list(prompts), sites, batch_size=batch_size)


def collected_features(memory: FastMemory, got: Collected) -> Float[Tensor, "q n 6"]:
    """``[prompts, entries, 6]``: the ``relation_key`` features of :func:`relation_states`."""
    enc = memory.encoder
    scores = score_queries(
        memory,
        got.acts[enc.symbol_site],
        got.acts[enc.token_site],
        got.content,
        modes=("relation_key",),
        answer_acts=got.stack_last(UNEMBED_IN),
    )
    return relation_features(scores)


def relation_scores(
    memory: FastMemory, model: Any, prompts: Sequence[str], batch_size: int = 16
) -> Float[Tensor, "q n 6"]:
    """``[prompts, entries, 6]``: the ``relation_key`` features of every prompt against every
    entry of ``memory`` (one frozen forward per batch of prompts)."""
    return collected_features(memory, relation_states(memory, model, prompts, batch_size))


def reads_relation(memory: FastMemory) -> bool:
    """Whether ``memory`` has relation keys and their statistics (``relation_key`` can read it)."""
    return memory.answer_keys is not None and memory.encoder.answer_std is not None


def scored(memory: FastMemory, got: Collected) -> QueryScores:
    """:func:`fmi.memory.retrieve.score_queries` on states ``collect``-ed at the memory's key
    sites and, for a memory that :func:`reads_relation`, at the unembedding's input (every
    mode's channels that those states allow)."""
    enc = memory.encoder
    answers = got.stack_last(UNEMBED_IN) if UNEMBED_IN in got.acts else None
    return score_queries(
        memory,
        got.acts[enc.symbol_site],
        got.acts[enc.token_site],
        got.content,
        answer_acts=answers if reads_relation(memory) else None,
    )


def youden(pos: np.ndarray, neg: np.ndarray) -> float:
    """The cut (a midpoint between adjacent scores) with the largest true-accept rate of ``pos``
    minus false-accept rate of ``neg``; ties: the higher cut.

    >>> float(youden(np.array([0.9, 0.8, 0.3]), np.array([0.1, 0.2, 0.85])))
    0.25
    """
    values = np.unique(np.concatenate([pos, neg]))
    cuts = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-6]])
    j = np.array([(pos >= c).mean() - (neg >= c).mean() for c in cuts])
    return float(cuts[np.flatnonzero(j == j.max())].max())


def relation_fit(
    parts: Sequence[tuple[Tensor, Sequence[int]]], seed: int = 0
) -> tuple[Tensor, float]:
    """``relation_key``'s weights (``len(RELATION_FEATURES)`` then the bias) and threshold from
    one or more banks' ``(features [prompts, entries, 6], owners)``, where ``owners[i]`` is the
    entry prompt ``i`` should read (-1: none). The weights: a balanced logistic regression over
    every (prompt, entry) pair of every bank, positive where the prompt meets its own entry. The
    threshold: Youden's J between the best score of the prompts whose best entry is their own
    and the best score of the prompts that should read none."""
    k = len(RELATION_FEATURES)
    xs, ys = [], []
    for feats, owners in parts:
        feats = feats.cpu().double()
        own = torch.tensor(list(owners))
        labels = torch.zeros(feats.shape[:2])
        rows = (own >= 0).nonzero().squeeze(-1)
        labels[rows, own[rows]] = 1
        xs.append(feats.reshape(-1, k))
        ys.append(labels.reshape(-1))
    clf = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed)
    clf.fit(torch.cat(xs).numpy(), torch.cat(ys).numpy())
    weights = torch.tensor([*clf.coef_[0], clf.intercept_[0]], dtype=torch.float32)
    pos, neg = [], []
    for feats, owners in parts:
        best, idx = torch.sigmoid(feats.cpu().float() @ weights[:k] + weights[k]).max(dim=1)
        own = torch.tensor(list(owners))
        pos.append(best[(own >= 0) & (idx == own)])
        neg.append(best[own < 0])
    return weights, youden(torch.cat(pos).numpy(), torch.cat(neg).numpy())


def with_answer_std(memory: FastMemory, states: Tensor) -> FastMemory:
    """``memory`` whose encoder standardizes relation keys with the statistics of ``states``
    (raw answer-position states of training statements and queries)."""
    std = Standardizer.fit(states.float().cpu())
    return replace(memory, encoder=replace(memory.encoder, answer_std=std))


def fit_relation_key(
    memory: FastMemory,
    model: Any,
    positives: Sequence[str],
    owners: Sequence[int],
    negatives: Sequence[str],
    *,
    batch_size: int = 16,
) -> FastMemory:
    """``memory`` (its entries written, relation keys included) read by ``relation_key``, fitted
    on it (:func:`relation_fit`): the relation keys' standardizer (every entry's key and every
    prompt's state), the weights and the threshold, with ``positives[i]`` reading its entry
    ``owners[i]`` and each negative none. The entries stay; ``select([])`` empties it."""
    if memory.answer_keys is None or not len(memory):
        raise ConfigError("fitting the relation key needs written entries with relation keys")
    if len(positives) != len(owners) or not positives or not negatives:
        raise ConfigError("fitting the relation key needs positives, one owner each, and negatives")
    prompts = [*positives, *negatives]
    got = relation_states(memory, model, prompts, batch_size)  # one forward serves both below
    fitted = with_answer_std(
        memory, torch.cat([memory.answer_keys.cpu(), got.stack_last(UNEMBED_IN).cpu()])
    )
    feats = collected_features(fitted, got)
    weights, threshold = relation_fit([(feats, [*owners, *([-1] * len(negatives))])])
    return replace(
        fitted,
        relation_weights=weights.to(memory.values.device),
        thresholds={**memory.thresholds, "relation_key": threshold},
        mode="relation_key",
    )
