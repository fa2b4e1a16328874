"""``fast_memory`` as an editor: each edit is one :meth:`fmi.FastMemory.write` (one frozen
forward pass, no backward pass), read back by the memory's hooks while prompts are decoded.

The memory is fitted once (:meth:`fmi.FastMemory.fit`, on the built-in recall training split),
then its reading threshold is set on the editing benchmark's training part
(:func:`calibrated`): the learned dual key's weights, the thresholds and alpha, with every
training edit written. Nothing is fitted on the evaluation part. Thresholds are set by
Youden's J (:func:`fmi.memory.relation.youden`):

>>> import numpy as np
>>> float(youden_threshold(np.array([0.9, 0.8, 0.3]), np.array([0.1, 0.2, 0.85])))
0.25
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from analyses.edit.cases import EditCase, answer_text
from analyses.edit.method import Cost, Held
from fmi.core.forward import collect
from fmi.core.prompts import Encoded
from fmi.experiments.metrics import text_matches
from fmi.memory.ask import ask
from fmi.memory.inject import ReadLog, memory_hooks
from fmi.memory.relation import youden as youden_threshold
from fmi.memory.retrieve import dual_features, score_queries
from fmi.memory.store import FastMemory

WRITE_BATCH = 32
"""Edits per frozen forward of a batched write."""


def write_edits(
    memory: FastMemory, model: Any, cases: Sequence[EditCase], *, batched: bool = True
) -> FastMemory:
    """A copy of ``memory`` (entries dropped) holding ``cases``, each keyed by its subject
    (``symbol``) and the rest of its rewrite prompt (``context``): one batched write
    (:meth:`fmi.FastMemory.write_many`, ``WRITE_BATCH`` edits a forward), or with ``batched``
    false one :meth:`fmi.FastMemory.write` per edit, in order (the same memory)."""
    held = memory.select([])
    statements = [c.rewrite for c in cases]
    answers = [answer_text(c.target_new) for c in cases]
    spans: list[dict | None] = [{"symbol": c.subject} for c in cases]
    if batched:
        held.write_many(statements, answers, spans=spans, model=model, batch_size=WRITE_BATCH)
    else:
        for s, a, sp in zip(statements, answers, spans, strict=True):
            held.write(s, a, spans=sp, model=model)
    return held


def explainer(held: FastMemory, model: Any, cases: Sequence[EditCase]):
    """``Held.explain`` for a memory holding ``cases``: per prompt, the case whose entry scored
    best, its score, the threshold and whether it fired (one extra frozen forward per prompt
    batch; only the failure log calls it)."""
    by_statement = {c.rewrite: c.case_id for c in cases}

    def explain(prompts: list[str]) -> list[dict[str, Any]]:
        if not len(held) or not prompts:
            return [{"entry": None, "fired": False} for _ in prompts]
        answers = ask(held, model, list(prompts), max_new_tokens=1)
        out = [_why(held, a, by_statement) for a in answers]
        if held.mode == "relation_key":
            for why, terms in zip(out, _terms(held, model, prompts, answers), strict=True):
                why["terms"] = terms
        return out

    return explain


def _terms(held: FastMemory, model: Any, prompts: list[str], answers) -> list[dict[str, float]]:
    """Per prompt, each ``relation_key`` term's contribution (weight x feature) to the logit of
    the entry it fired (or, abstaining, its best entry)."""
    from fmi.memory.relation import relation_scores
    from fmi.memory.retrieve import RELATION_FEATURES

    feats = relation_scores(held, model, prompts).cpu()
    assert held.relation_weights is not None
    w = held.relation_weights.cpu()[: len(RELATION_FEATURES)]
    rows = {e.statement: i for i, e in enumerate(held.entries)}
    out = []
    for q, a in enumerate(answers):
        e = rows[a.entry.statement] if a.entry is not None else int(feats[q].mv(w).argmax())
        out.append(
            {n: round(float(w[k] * feats[q, e, k]), 4) for k, n in enumerate(RELATION_FEATURES)}
        )
    return out


def _why(held: FastMemory, answer, by_statement: dict[str, str]) -> dict[str, Any]:
    fired = answer.entry is not None
    return {
        "entry": by_statement.get(answer.entry.statement) if fired else None,
        "fired": fired,
        "score": round(float(answer.score), 6),
        "threshold": round(float(answer.threshold), 6),
    }


ALPHA_MULTIPLES = (1.0, 1.5, 2.0, 3.0)


def _features(full: FastMemory, model: Any, prompts: list[str]) -> Tensor:
    """``[queries, entries, 3]``: symbol and context similarity and their product."""
    site = full.encoder.token_site
    got = collect(model.bridge, model.tokenizer, prompts, [site], batch_size=16)
    empty = [torch.zeros(0)] * len(prompts)
    scores = score_queries(full, empty, got.acts[site], got.content, modes=("dual_key",))
    return dual_features(scores)


def _efficacy(memory: FastMemory, model: Any, cases: Sequence[EditCase]) -> float:
    answers = ask(memory, model, [c.rewrite for c in cases], max_new_tokens=4)
    return sum(
        text_matches(a.text, c.target_new) for a, c in zip(answers, cases, strict=True)
    ) / len(cases)


def calibrated(
    memory: FastMemory,
    model: Any,
    train: Sequence[EditCase],
    unrelated: Sequence[str],
    *,
    choose_alpha: bool = True,
    relation_train: Sequence[EditCase] = (),
) -> tuple[FastMemory, dict[str, Any]]:
    """``memory`` fitted to editing on the training edits, all written at once:

    1. the learned dual key's weights (:func:`learned_weights`, a balanced logistic regression
       on symbol, context and their product): positives are each rewrite and paraphrase prompt
       with its own entry, negatives every other (prompt, entry) pair, neighbourhood and
       ``unrelated`` prompts included;
    2. a threshold per dual-key mode (:func:`youden_threshold`, :func:`mode_thresholds`): right
       top-1 reads of the positives against the best score of the neighbourhood and generic
       prompts;
    3. alpha (``choose_alpha``): the smallest of ``ALPHA_MULTIPLES`` x the recall fit's alpha
       with the best training efficacy (:func:`alpha_multiple`); ``fmi edit`` instead passes
       ``choose_alpha=False`` and picks alpha by the rule every method's grid uses
       (:mod:`analyses.edit.tune`).

    The mode is ``dual_key_learned``; ``dual_key`` keeps the recall default's rule with its own
    threshold on the same data (the ``dual_key`` row). With ``relation_train`` (the training
    part's edits), the relation key is fitted on them too (:func:`relation_fitted`) and the mode
    is ``relation_key``."""
    full = write_edits(memory, model, train)
    pos = [(i, p) for i, c in enumerate(train) for p in (c.rewrite, *c.paraphrases)]
    neg = [n.prompt for c in train for n in c.neighbourhood] + list(unrelated)
    feats = _features(full, model, [p for _, p in pos] + neg)
    own = torch.tensor([i for i, _ in pos])
    weights = learned_weights(feats, own)
    thresholds, right_reads = mode_thresholds(memory, feats, weights, own)
    out = replace(
        memory.select([]), thresholds=thresholds, dual_weights=weights, mode="dual_key_learned"
    )
    relation_info: dict[str, Any] = {}
    if relation_train:
        out, relation_info = relation_fitted(out, model, relation_train, unrelated)
    tried: dict[float, float] = {}
    chosen = 1.0
    if choose_alpha:
        tried, chosen = alpha_multiple(out, memory.alpha, model, train)
    out = replace(out, alpha=memory.alpha * chosen)
    info = {
        "thresholds": {k: thresholds[k] for k in ("dual_key_learned", "dual_key")},
        "dual_weights": weights.tolist(),
        "train_right_top1": right_reads,
        **({"alpha_multiples_train_efficacy": tried, "alpha_multiple": chosen} if tried else {}),
        "threshold_rule": "Youden's J on the training edits",
        "train_edits": len(train),
        "train_positive": len(pos),
        "train_negative": len(neg),
        **relation_info,
    }
    return out, info


RELATION_NEGATIVES_PER_KIND = 3
"""Neighbourhood, other-relation and look-alike prompts per training edit in the relation fit."""


def relation_fitted(
    memory: FastMemory, model: Any, train: Sequence[EditCase], unrelated: Sequence[str]
) -> tuple[FastMemory, dict[str, Any]]:
    """``memory`` (emptied) read by ``relation_key``, fitted with every edit of ``train`` written
    (:func:`fmi.memory.relation.fit_relation_key`): positives each rewrite and paraphrase with
    its own entry; negatives up to :data:`RELATION_NEGATIVES_PER_KIND` neighbourhood prompts,
    prompts about the subject under another relation and look-alike prompts (another training
    subject sharing the first word, in the edit's template) per edit, and ``unrelated``; a
    negative that states some edit is left out."""
    from analyses.relation_geometry.compute import look_alikes
    from fmi.memory.relation import fit_relation_key

    k = RELATION_NEGATIVES_PER_KIND
    full = write_edits(memory, model, train)
    pos = [(i, p) for i, c in enumerate(train) for p in dict.fromkeys((c.rewrite, *c.paraphrases))]
    stated = {p for _, p in pos}
    alikes = look_alikes(train, [c.subject for c in train], k)
    neg = [
        *(n.prompt for c in train for n in c.neighbourhood[:k]),
        *(r.prompt for c in train for r in c.relation_probes[:k]),
        *(c.prompt.format(s) for c, subjects in zip(train, alikes, strict=True) for s in subjects),
        *unrelated,
    ]
    neg = [p for p in dict.fromkeys(neg) if p not in stated]
    fitted = fit_relation_key(full, model, [p for _, p in pos], [i for i, _ in pos], neg)
    assert fitted.relation_weights is not None
    info = {
        "relation_weights": [round(float(w), 6) for w in fitted.relation_weights.tolist()],
        "relation_threshold": fitted.thresholds["relation_key"],
        "relation_fit": (
            f"{len(train)} training edits written; {len(pos)} positives, {len(neg)} negatives"
        ),
    }
    return fitted.select([]), info


def learned_weights(feats: Tensor, own: Tensor) -> Tensor:
    """The learned dual key's ``[w_symbol, w_context, w_product, bias]``: a balanced logistic
    regression on ``feats`` (``[prompts, entries, 3]``) whose positives are each of the first
    ``len(own)`` prompts with its own entry ``own[i]``, every other pair a negative (fitted on
    the CPU; the weights are returned on ``feats``' device)."""
    device, feats, own = feats.device, feats.cpu(), own.cpu()
    labels = torch.zeros(feats.shape[:2])
    labels[torch.arange(len(own)), own] = 1
    clf = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=0)
    clf.fit(feats.reshape(-1, 3).numpy(), labels.reshape(-1).numpy())
    weights = [*clf.coef_[0], clf.intercept_[0]]
    return torch.tensor(weights, dtype=torch.float32, device=device)


def mode_thresholds(
    memory: FastMemory, feats: Tensor, weights: Tensor, own: Tensor
) -> tuple[dict[str, float], dict[str, float]]:
    """``memory``'s thresholds with those of ``dual_key_learned`` and ``dual_key`` set by
    :func:`youden_threshold` (right top-1 reads of the first ``len(own)`` prompts against the
    best score of the rest), and each mode's fraction of right top-1 reads."""
    weights, own = weights.to(feats.device), own.to(feats.device)
    learned = torch.sigmoid(feats @ weights[:3] + weights[3])
    product = feats[..., 0].clamp_min(0) * feats[..., 1].clamp_min(0)
    thresholds = dict(memory.thresholds)
    right_reads = {}
    n = len(own)
    for mode, scores in (("dual_key_learned", learned), ("dual_key", product)):
        best, idx = scores.max(dim=1)
        right = idx[:n] == own
        best = best.cpu()
        thresholds[mode] = youden_threshold(best[:n][right.cpu()].numpy(), best[n:].numpy())
        right_reads[mode] = float(right.float().mean())
    return thresholds, right_reads


def alpha_multiple(
    memory: FastMemory, alpha: float, model: Any, train: Sequence[EditCase]
) -> tuple[dict[float, float], float]:
    """The training efficacy of ``memory`` at each of ``ALPHA_MULTIPLES`` x ``alpha`` with every
    training edit written, and the smallest multiple with the best efficacy."""
    tried = {}
    for m in ALPHA_MULTIPLES:
        trial = replace(memory, alpha=alpha * m)
        tried[m] = _efficacy(write_edits(trial, model, train), model, train)
    chosen = min(m for m in ALPHA_MULTIPLES if tried[m] == max(tried.values()))
    return tried, chosen


def _hooks(memory: FastMemory, log: ReadLog):
    def hooks_for(enc: Encoded, start: int) -> list:
        return memory_hooks(memory, memory.mode, enc.content, log) if len(memory) else []

    return hooks_for


@dataclass
class FastEdit:
    """Edits written into a copy of ``memory`` (fitted, threshold calibrated)."""

    memory: FastMemory
    info: dict[str, Any] = field(default_factory=dict)
    name: str = "fast_memory"
    mode: str = ""  # "" : the memory's own mode
    single_timing: int = 16  # edits per group also written one at a time, only to time it

    @contextmanager
    def edited(self, model: Any, cases: Sequence[EditCase], cost: Cost) -> Iterator[Held]:
        t0 = time.perf_counter()
        memory = replace(self.memory, mode=self.mode) if self.mode else self.memory
        held = write_edits(memory, model, cases)
        cost.seconds += time.perf_counter() - t0
        cost.forward += -(-len(cases) // WRITE_BATCH)
        if self.single_timing and cases:
            some = list(cases)[: self.single_timing]
            t0 = time.perf_counter()
            write_edits(memory, model, some, batched=False)
            cost.note("single_seconds", time.perf_counter() - t0, len(some))
        yield Held(hooks_for=_hooks(held, ReadLog()), explain=explainer(held, model, cases))

    def settings(self) -> dict[str, Any]:
        mode = self.mode or self.memory.mode
        return {
            "mode": mode,
            "alpha": self.memory.alpha,
            "inject_site": self.memory.inject_site,
            "refine_steps": self.memory.refine_steps,
            "threshold": self.memory.thresholds.get(mode),
            "write_batch": WRITE_BATCH,
            **self.info,
        }
