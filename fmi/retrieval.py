"""Reading: score queries against a memory and decide, per mode, which value to inject.

Modes
- ``both_top1``: one bank with every context; cosine MaxSim top-1 on projected keys.
- ``context_gate``: an oracle gate restricts the bank to the query's true context (upper bound).
- ``raw_both_top1``: like ``both_top1`` on standardized raw residual states, no projector.
- ``average``: top-1 symbol (projected keys), then the mean of that symbol's values over contexts.
- ``dual_key``: score = symbol similarity x context similarity (token MaxSim at an early site).
- ``dual_key_learned``: a logistic weighting of symbol, context and their product.
Every mode abstains when its best score is below a threshold calibrated on training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from fmi.errors import ConfigError
from fmi.keys import maxsim, pad_queries
from fmi.memory import CONTEXT_ROLE, SYMBOL_ROLE, FastMemory

MODES = ("both_top1", "context_gate", "raw_both_top1", "average", "dual_key", "dual_key_learned")


def check_modes(modes: list[str]) -> list[str]:
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ConfigError(f"unknown mode(s) {', '.join(bad)}; modes are {', '.join(MODES)}")
    return modes


@dataclass(frozen=True)
class QueryScores:
    """Similarity of every query to every entry, per key channel: ``[queries, entries]``."""

    raw: Float[Tensor, "q n"]
    projected: Float[Tensor, "q n"] | None
    symbol: Float[Tensor, "q n"]
    context: Float[Tensor, "q n"]


@dataclass(frozen=True)
class Decision:
    """Per query: chosen entry (-1 = abstain), its score, and the vector to inject."""

    entry: Int[Tensor, " q"]
    score: Float[Tensor, " q"]
    vectors: Float[Tensor, "q d"]

    @property
    def active(self) -> Bool[Tensor, " q"]:
        return self.entry >= 0


def _content(acts: list[Tensor], content: list[Tensor]) -> list[Tensor]:
    return [a[c] for a, c in zip(acts, content, strict=True)]


def score_queries(
    memory: FastMemory,
    symbol_acts: list[Tensor],
    token_acts: list[Tensor],
    content: list[Tensor],
) -> QueryScores:
    """MaxSim of each query's content tokens against each entry's keys, in every channel."""
    enc = memory.encoder
    n = len(memory)
    every = torch.arange(n)
    sym_q, sym_mask = pad_queries([enc.raw(a) for a in _content(symbol_acts, content)])
    raw = maxsim(sym_q, sym_mask, enc.raw(memory.symbol_keys), every, n)
    projected = None
    if enc.projector is not None:
        proj_q = sym_q @ enc.projector
        projected = maxsim(proj_q, sym_mask, enc.projected(memory.symbol_keys), every, n)
    tok_q, tok_mask = pad_queries([enc.tokens(a) for a in _content(token_acts, content)])
    keys = enc.tokens(memory.token_keys)
    symbol, context = token_channels(
        tok_q, tok_mask, keys, memory.token_owner, memory.token_role, n
    )
    return QueryScores(raw, projected, symbol, context)


def token_channels(
    queries: Float[Tensor, "q pos d"],
    query_mask: Bool[Tensor, "q pos"],
    keys: Float[Tensor, "m d"],
    owner: Int[Tensor, " m"],
    role: Int[Tensor, " m"],
    n_entries: int,
) -> tuple[Float[Tensor, "q n"], Float[Tensor, "q n"]]:
    """MaxSim of the queries against each entry's symbol tokens and, apart, its context tokens."""
    out = []
    for r in (SYMBOL_ROLE, CONTEXT_ROLE):
        sel = role == r
        out.append(maxsim(queries, query_mask, keys[sel], owner[sel], n_entries))
    return out[0], out[1]


def dual_key_scores(
    symbol: Float[Tensor, "q n"], context: Float[Tensor, "q n"]
) -> Float[Tensor, "q n"]:
    """The ``dual_key`` rule: symbol similarity times context similarity, each clamped at 0."""
    return symbol.clamp_min(0) * context.clamp_min(0)


def dual_features(scores: QueryScores) -> Float[Tensor, "q n 3"]:
    """Features of the learned dual key: symbol, context, and their product."""
    return torch.stack([scores.symbol, scores.context, scores.symbol * scores.context], dim=-1)


def mode_scores(
    mode: str, scores: QueryScores, memory: FastMemory, gate: list[str | None] | None = None
) -> Float[Tensor, "q n"]:
    """The ``[queries, entries]`` score matrix a mode ranks by."""
    if mode == "raw_both_top1":
        return scores.raw
    if mode in ("both_top1", "average", "context_gate"):
        if scores.projected is None:
            raise ConfigError(f"mode {mode} needs a trained projector")
        if mode != "context_gate":
            return scores.projected
        if gate is None:
            raise ConfigError("context_gate needs the query's context")
        # the oracle gate opens the bank of the context the prompt names; none named, none open
        allowed = torch.tensor(
            [[g is not None and e.context == g for e in memory.entries] for g in gate],
            dtype=torch.bool,
        ).reshape(len(gate), len(memory))
        return scores.projected.masked_fill(~allowed, float("-inf"))
    if mode == "dual_key":
        return dual_key_scores(scores.symbol, scores.context)
    if mode == "dual_key_learned":
        if memory.dual_weights is None:
            raise ConfigError("dual_key_learned needs fitted weights")
        w = memory.dual_weights
        return torch.sigmoid(dual_features(scores) @ w[:3] + w[3])
    raise ConfigError(f"unknown mode {mode!r}; modes are {', '.join(MODES)}")


def retrieved_right(
    mode: str, chosen: Int[Tensor, " q"], target: list[int], memory: FastMemory
) -> Bool[Tensor, " q"]:
    """Per query: did it retrieve what it asks for? The exact binding, or for ``average`` (which
    injects a symbol's mean value) an entry of the right symbol. Abstentions and queries that ask
    for nothing (target -1) count as not right."""
    if mode == "average":
        symbols = memory.symbols()
        return torch.tensor(
            [
                c >= 0 and t >= 0 and symbols[c] == symbols[t]
                for c, t in zip(chosen.tolist(), target, strict=True)
            ],
            dtype=torch.bool,
        )
    want = torch.tensor(target)
    return (chosen == want) & (want >= 0)


def decide(
    mode: str,
    scores: QueryScores,
    memory: FastMemory,
    gate: list[str | None] | None = None,
    threshold: float | None = None,
) -> Decision:
    """Top-1 entry per query under ``mode``, abstaining below the mode's threshold."""
    s = mode_scores(mode, scores, memory, gate)
    best, idx = s.max(dim=1)
    thr = memory.thresholds.get(mode, float("-inf")) if threshold is None else threshold
    entry = torch.where(best >= thr, idx, torch.full_like(idx, -1))
    vectors = memory.values[idx].clone()
    if mode == "average":
        symbols = memory.symbols()
        rows: dict[str, list[int]] = {}
        for j, sym in enumerate(symbols):
            rows.setdefault(sym, []).append(j)
        means = {sym: memory.values[js].mean(0) for sym, js in rows.items()}
        for q, i in enumerate(idx.tolist()):
            vectors[q] = means[symbols[i]]
    vectors[entry < 0] = 0.0
    return Decision(entry, best, memory.alpha * vectors)
