"""Everything fitted on the training split only: standardizers, projector, dual-key weights,
thresholds, and alpha. Evaluation symbols and contexts are never seen here."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from fmi.core.forward import Collected
from fmi.core.generate import greedy
from fmi.core.numerics import fixed_numerics
from fmi.core.sites import UNEMBED_IN
from fmi.experiments.config import RecallConfig
from fmi.experiments.queries import QuerySet, build_queries, unique_bindings
from fmi.memory.entry import KeyEncoder
from fmi.memory.keys import Standardizer, pad_queries
from fmi.memory.projectors import train_projector
from fmi.memory.refine import refined_values
from fmi.memory.relation import (
    collected_features,
    relation_fit,
    relation_states,
    with_answer_std,
)
from fmi.memory.relation_train import relation_bank
from fmi.memory.retrieve import (
    MODES,
    QueryScores,
    dual_features,
    mode_scores,
    read_queries,
    relation_features,
    retrieved_right,
    score_queries,
)
from fmi.memory.store import FastMemory
from fmi.memory.values import unembedding
from fmi.memory.write import Written, make_memory, write


@dataclass(frozen=True)
class Fitted:
    """What evaluation reuses: the key encoder, thresholds, dual weights and alpha."""

    encoder: KeyEncoder
    thresholds: dict[str, float]
    dual_weights: Tensor
    rho: float
    alpha: float
    alpha_curve: dict[float, float]  # rho -> training read accuracy with oracle retrieval
    train_retrieval: dict[str, float]  # mode -> training read retrieval accuracy
    refine_steps: int = 1  # closed-form refinement steps of every written value (fmi.memory.refine)
    refine_curve: dict[int, float] = field(default_factory=dict)  # steps -> training accuracy
    relation_weights: Tensor | None = None  # relation_key's (fmi.memory.relation)

    def to_dict(self) -> dict:
        relation = self.relation_weights
        return {
            "relation_weights": None
            if relation is None
            else [round(float(w), 6) for w in relation],
            "symbol_site": self.encoder.symbol_site,
            "token_site": self.encoder.token_site,
            "thresholds": self.thresholds,
            "dual_weights": [round(float(w), 6) for w in self.dual_weights],
            "rho": self.rho,
            "alpha": self.alpha,
            "alpha_curve": {str(k): v for k, v in self.alpha_curve.items()},
            "train_retrieval": self.train_retrieval,
            "refine_steps": self.refine_steps,
            "refine_curve": {str(k): v for k, v in self.refine_curve.items()},
        }


def _fit_standardizer(acts: list[Tensor], content: list[Tensor]) -> Standardizer:
    return Standardizer.fit(torch.cat([a[c] for a, c in zip(acts, content, strict=True)]))


def _fit_projector(
    written: Written,
    got: Collected,
    qs: QuerySet,
    std: Standardizer,
    site: str,
    cfg: RecallConfig,
    rows: list[int] | None = None,
) -> Tensor:
    """Train the projector on the query prompts ``rows`` (default: all) and their entries."""
    rows = list(range(len(qs.texts))) if rows is None else rows
    queries, mask = pad_queries([std(got.acts[site][i][got.content[i]]) for i in rows])
    targets = torch.tensor([qs.entry[i] for i in rows])  # -1: plain/unrelated, learn to abstain
    keys = std(written.symbol_keys)
    return train_projector(keys, queries, mask, targets, cfg.projector, cfg.seed)


def _crossfit_projected(
    memory: FastMemory, written: Written, got: Collected, qs: QuerySet, site: str, cfg: RecallConfig
) -> Tensor:
    """Projected scores where each query is scored by a projector trained without its symbol.

    Training symbols are split in two folds (unrelated prompts alternate); a projector fitted on
    one fold scores the other. Thresholds fitted on these scores see what held-out symbols look
    like, instead of the near-perfect scores of prompts the projector was trained on.
    """
    symbols = sorted({s for s in qs.symbol if s is not None})
    fold_of = {s: i % 2 for i, s in enumerate(symbols)}
    fold = [fold_of[s] if s is not None else i % 2 for i, s in enumerate(qs.symbol)]
    std = memory.encoder.symbol_std
    out = torch.zeros(len(qs.texts), len(memory), device=memory.values.device)
    for f in (0, 1):
        train_rows = [i for i in range(len(fold)) if fold[i] != f]
        projector = _fit_projector(written, got, qs, std, site, cfg, train_rows)
        encoder = KeyEncoder(
            site, memory.encoder.token_site, std, memory.encoder.token_std, projector
        )
        held = [i for i in range(len(fold)) if fold[i] == f]
        scores = score_queries(
            replace(memory, encoder=encoder),
            [got.acts[site][i] for i in held],
            [got.acts[memory.encoder.token_site][i] for i in held],
            [got.content[i] for i in held],
        )
        assert scores.projected is not None
        out[held] = scores.projected
    return out


def _fit_dual_weights(scores: QueryScores, qs: QuerySet, seed: int) -> Tensor:
    feats = dual_features(scores).reshape(-1, 3).cpu().numpy()
    labels = np.zeros(scores.channel("symbol").shape, dtype=int)
    for q, e in enumerate(qs.entry):
        if e >= 0:
            labels[q, e] = 1
    clf = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=seed)
    clf.fit(feats, labels.reshape(-1))
    dev = scores.channel("symbol").device
    return torch.tensor([*clf.coef_[0], clf.intercept_[0]], dtype=torch.float32, device=dev)


def threshold_between(pos: np.ndarray, neg: np.ndarray, false_accept: float) -> float:
    """The lowest threshold that accepts at most ``false_accept`` of ``neg``, moved to the middle
    of the gap up to the next positive score (so that a margin is kept on both sides)."""
    if len(neg) == 0:
        return float(pos.min()) if len(pos) else 0.0
    floor = float(np.quantile(neg, 1.0 - false_accept, method="higher"))
    above = pos[pos > floor]
    return (floor + float(above.min())) / 2 if len(above) else floor + 1e-6


def _thresholds(
    memory: FastMemory, scores: QueryScores, qs: QuerySet, false_accept: float
) -> tuple[dict[str, float], dict[str, float]]:
    entry = torch.tensor(qs.entry)
    positive = entry >= 0
    read = torch.tensor([k == "read" for k in qs.kinds])
    thresholds, retrieval = {}, {}
    for mode in (m for m in MODES if m != "relation_key"):  # fitted by fmi.memory.relation
        best, idx = (t.cpu() for t in mode_scores(mode, scores, memory, qs.gate).max(dim=1))
        right = retrieved_right(mode, idx, qs.entry, memory)
        pos = best[positive & right].numpy()
        thresholds[mode] = threshold_between(pos, best[~positive].numpy(), false_accept)
        retrieval[mode] = float((right & read).sum() / read.sum())
    return thresholds, retrieval


def _calibrate_alpha(
    model, written: Written, qs: QuerySet, cfg: RecallConfig
) -> tuple[float, float, dict[float, float]]:
    """Pick rho (injected norm as a fraction of the answer-position norm) with oracle retrieval on
    training read prompts: one grid step above the smallest rho that reaches the best accuracy."""
    entries, accuracy = _oracle_reads(model, written, qs, cfg)
    values = written.values[entries]
    scale = float(written.answer_norms.median() / written.values.norm(dim=-1).median())
    curve = {rho: accuracy(rho * scale * values) for rho in cfg.rho_grid}
    rho = choose_rho(curve)
    return rho, rho * scale, curve


def choose_rho(curve: dict[float, float]) -> float:
    """The alpha rule: one grid step above the smallest rho within 0.01 of the best training
    accuracy (the step keeps a margin), or the largest rho when that is the last.

    >>> choose_rho({0.05: 0.06, 0.1: 0.81, 0.15: 1.0, 0.2: 1.0, 0.3: 1.0})
    0.2
    >>> choose_rho({0.1: 0.2, 0.2: 0.5, 0.4: 0.995})
    0.4
    """
    grid = sorted(curve)
    first = grid.index(_smallest_near_best(curve))
    return grid[min(first + 1, len(grid) - 1)]


def _oracle_reads(model, written: Written, qs: QuerySet, cfg: RecallConfig):
    """Training read prompts (at most ``cfg.calibration_prompts``), the entry each asks for, and
    a function giving greedy step-one accuracy when those entries' ``deltas`` are injected."""
    reads = qs.index("read")[: cfg.calibration_prompts]
    texts = [qs.texts[i] for i in reads]
    entries = [qs.entry[i] for i in reads]
    targets = [written.entries[e].target for e in entries]

    def accuracy(deltas: Tensor) -> float:
        out = greedy(
            model,
            texts,
            site=cfg.inject_site,
            deltas=deltas,
            max_new_tokens=1,
            batch_size=cfg.batch_size,
        )
        return float(np.mean([t[0] == y for t, y in zip(out.tokens, targets, strict=True)]))

    return entries, accuracy


def _smallest_near_best(curve: dict, tolerance: float = 0.01):
    """The smallest grid point whose accuracy is within ``tolerance`` of the best."""
    best = max(curve.values())
    return next(k for k in sorted(curve) if curve[k] >= best - tolerance)


def _calibrate_steps(
    model, written: Written, qs: QuerySet, cfg: RecallConfig, alpha: float, at_one: float
) -> tuple[int, dict[int, float]]:
    """Choose the refinement steps on training read prompts (oracle retrieval, the calibrated
    alpha): the smallest number of steps within 0.01 of the best accuracy. ``at_one`` is the
    one-step accuracy, already measured by the alpha calibration."""
    grid = sorted(set(cfg.refine_grid))
    if grid == [1] or cfg.inject_site != UNEMBED_IN:
        return 1, {1: at_one}
    entries, accuracy = _oracle_reads(model, written, qs, cfg)
    w_u, b_u = unembedding(model.bridge, linear_only=True)
    targets = torch.tensor([e.target for e in written.entries])
    curve = {}
    for k in grid:
        if k == 1:
            curve[k] = at_one
            continue
        values = refined_values(written.answer_states, written.values, w_u, b_u, targets, alpha, k)
        curve[k] = accuracy(alpha * values[entries])
    return _smallest_near_best(curve), curve


def _relation_bank(model, memory: FastMemory, cfg: RecallConfig):
    """The relation key's second training bank (:mod:`fmi.memory.relation_train`): its facts
    written into a copy of ``memory`` (one frozen forward per batch), the states of its prompts
    at the key sites and the unembedding's input, and each prompt's entry (-1: none)."""
    from fmi.memory.statements import facts_memory

    bank = relation_bank()
    spans: list[dict | None] = [{"symbol": s} for s in bank.subjects]
    facts = facts_memory(
        memory.select([]), model, bank.statements, bank.answers, spans, batch_size=cfg.batch_size
    )
    prompts = [*bank.positives, *bank.negatives]
    acts = relation_states(memory, model, prompts, cfg.batch_size)
    return facts, acts, [*bank.owners, *([-1] * len(bank.negatives))]


def fit(model, train_split, cfg: RecallConfig) -> Fitted:
    """Fit every calibrated part of the memory on ``train_split`` (training symbols only).

    Runs with ``cfg.threads`` threads and deterministic algorithms (:mod:`fmi.core.numerics`), so
    the
    fitted memory is bit-identical whatever the caller's thread count.
    """
    with fixed_numerics(cfg.threads):
        return _fit(model, train_split, cfg)


def _fit(model, train_split, cfg: RecallConfig) -> Fitted:
    sym_site, tok_site = cfg.sites(int(model.bridge.cfg.n_layers))
    entries = unique_bindings(train_split.bindings)
    written = write(
        model,
        entries,
        train_split.templates,
        symbol_site=sym_site,
        token_site=tok_site,
        inject_site=cfg.inject_site,
        batch_size=cfg.batch_size,
        end=cfg.end,
    )
    qs = build_queries(train_split, entries)
    relation = cfg.inject_site == UNEMBED_IN  # the relation key is read where values are added
    sites = (sym_site, tok_site, *((UNEMBED_IN,) if relation else ()))
    got = read_queries(model, qs, sites, cfg.batch_size)
    sym_std = _fit_standardizer(got.acts[sym_site], got.content)
    tok_std = _fit_standardizer(got.acts[tok_site], got.content)
    projector = _fit_projector(written, got, qs, sym_std, sym_site, cfg)
    encoder = KeyEncoder(sym_site, tok_site, sym_std, tok_std, projector)
    memory = make_memory(model, written, encoder, alpha=1.0, inject_site=cfg.inject_site)
    answers = got.stack_last(UNEMBED_IN) if relation else None
    bank = _relation_bank(model, memory, cfg) if relation else None
    if answers is not None and bank is not None:
        states = [
            written.answer_states,
            answers,
            bank[0].answer_keys,
            bank[1].stack_last(UNEMBED_IN),
        ]
        memory = with_answer_std(memory, torch.cat([t.cpu() for t in states]))
    scores = score_queries(
        memory, got.acts[sym_site], got.acts[tok_site], got.content, answer_acts=answers
    )
    memory.dual_weights = _fit_dual_weights(scores, qs, cfg.seed)
    crossfit = replace(
        scores, projected=_crossfit_projected(memory, written, got, qs, sym_site, cfg)
    )
    thresholds, retrieval = _thresholds(memory, crossfit, qs, cfg.false_accept)
    relation_weights = None
    if bank is not None:
        facts, acts, owners = bank
        facts_features = collected_features(replace(facts, encoder=memory.encoder), acts)
        relation_weights, thresholds["relation_key"] = relation_fit(
            [(relation_features(scores), qs.entry), (facts_features, owners)], cfg.seed
        )
    rho, alpha, curve = _calibrate_alpha(model, written, qs, cfg)
    steps, steps_curve = _calibrate_steps(model, written, qs, cfg, alpha, curve[rho])
    return Fitted(
        memory.encoder,
        thresholds,
        memory.dual_weights,
        rho,
        alpha,
        curve,
        retrieval,
        steps,
        steps_curve,
        relation_weights,
    )
