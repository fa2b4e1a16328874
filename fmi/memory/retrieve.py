"""Retrieval: score queries against a memory and decide, per mode, which value to inject
(:mod:`fmi.memory.inject` adds it).

Modes
- ``both_top1``: one bank with every context; cosine MaxSim top-1 on projected keys.
- ``context_gate``: an oracle gate restricts the bank to the query's true context (upper bound).
- ``raw_both_top1``: like ``both_top1`` on standardized raw residual states, no projector.
- ``average``: top-1 symbol (projected keys), then the mean of that symbol's values over contexts.
- ``dual_key``: score = symbol similarity x context similarity (token MaxSim at an early site).
- ``dual_key_learned``: a logistic weighting of symbol, context and their product.
- ``relation_key``: a logistic weighting of the dual key's features, the subject's single-vector
  similarity (``raw``), the relation similarity (the query's state at the injection site, last
  position, against the entry's at its answer position) and the subject x relation product.
Every mode abstains when its best score is below a threshold calibrated on training data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from fmi.core.forward import Collected, collect
from fmi.core.threads import torch_threads
from fmi.errors import ConfigError
from fmi.experiments.queries import QuerySet
from fmi.memory.entry import CONTEXT_ROLE, SYMBOL_ROLE
from fmi.memory.keys import maxsim, pad_queries
from fmi.memory.plan import MATRIX, SEARCH, matrix_seconds
from fmi.memory.search import search_top1
from fmi.memory.store import FastMemory

MODES = (
    "both_top1",
    "context_gate",
    "raw_both_top1",
    "average",
    "dual_key",
    "dual_key_learned",
    "relation_key",
)
# Modes that read information a real memory does not have (the prompt's gold context): every
# table, JSON key and summary names them with " (oracle)", and no finding reports them as the
# memory's result.
ORACLE_MODES = frozenset({"context_gate"})


def shown_name(mode: str) -> str:
    """``mode`` as tables and result documents name it: oracles carry ``" (oracle)"``.

    >>> shown_name("context_gate"), shown_name("dual_key")
    ('context_gate (oracle)', 'dual_key')
    """
    return f"{mode} (oracle)" if mode in ORACLE_MODES else mode


def check_modes(modes: list[str]) -> list[str]:
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ConfigError(f"unknown mode(s) {', '.join(bad)}; modes are {', '.join(MODES)}")
    return modes


# The score channels each mode ranks by: ``score_queries(..., modes=...)`` computes only these.
CHANNELS: dict[str, tuple[str, ...]] = {
    "both_top1": ("projected",),
    "context_gate": ("projected",),
    "raw_both_top1": ("raw",),
    "average": ("projected",),
    "dual_key": ("symbol", "context"),
    "dual_key_learned": ("symbol", "context"),
    "relation_key": ("raw", "symbol", "context", "relation"),
}
RELATION_FEATURES = (
    "symbol",
    "context",
    "symbol*context",
    "subject",
    "relation",
    "subject*relation",
)
"""The features ``relation_key`` weighs (``subject`` is the ``raw`` channel)."""


@dataclass(frozen=True)
class QueryScores:
    """Similarity of every query to every entry, per key channel: ``[queries, entries]``.

    A channel no requested mode needs is ``None``; :meth:`channel` names the missing one.
    """

    raw: Float[Tensor, "q n"] | None
    projected: Float[Tensor, "q n"] | None
    symbol: Float[Tensor, "q n"] | None
    context: Float[Tensor, "q n"] | None
    relation: Float[Tensor, "q n"] | None = None

    def channel(self, name: str) -> Float[Tensor, "q n"]:
        got = getattr(self, name)
        if got is None:
            raise ConfigError(f"score channel {name!r} was not computed for these queries")
        return got


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
    return [a[c.to(a.device)] for a, c in zip(acts, content, strict=True)]


def score_queries(
    memory: FastMemory,
    symbol_acts: list[Tensor],
    token_acts: list[Tensor],
    content: list[Tensor],
    modes: tuple[str, ...] | None = None,
    answer_acts: Float[Tensor, "q d"] | None = None,
) -> QueryScores:
    """MaxSim of each query's content tokens against each entry's keys, in the channels ``modes``
    rank by (every channel by default); each channel is one matrix product on the keys' device.
    The ``relation`` channel needs ``answer_acts``: each query's state at the injection site,
    last position, before anything is added there. ``modes`` None: every mode, ``relation_key``
    only where ``answer_acts`` are given."""
    if modes is None:
        modes = tuple(m for m in MODES if m != "relation_key" or answer_acts is not None)
    want = {c for m in check_modes(list(modes)) for c in CHANNELS[m]}
    if "relation" in want and answer_acts is None:
        raise ConfigError("the relation channel needs the queries' answer-position states")
    enc = memory.encoder
    n = len(memory)
    got: dict[str, Tensor] = {}

    def channel(name: str, queries: Tensor, mask: Tensor) -> None:
        keys, owner = memory.key_index(name)
        got[name] = maxsim(queries, mask, keys, owner, n, unit_keys=True)

    if want & {"raw", "projected"}:
        sym_q, sym_mask = pad_queries([enc.raw(a) for a in _content(symbol_acts, content)])
        if "raw" in want:
            channel("raw", sym_q, sym_mask)
        if "projected" in want:
            channel("projected", sym_q @ _projector(enc), sym_mask)
    if want & {"symbol", "context"}:
        tok_q, tok_mask = pad_queries([enc.tokens(a) for a in _content(token_acts, content)])
        for name in want & {"symbol", "context"}:
            channel(name, tok_q, tok_mask)
    if answer_acts is not None and "relation" in want:
        keys, _ = memory.key_index("relation")
        q = torch.nn.functional.normalize(enc.answers(answer_acts.to(keys.device).float()), dim=-1)
        got["relation"] = q @ keys.T
    return QueryScores(*(got.get(c) for c in ("raw", "projected", "symbol", "context", "relation")))


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
    sym, ctx = scores.channel("symbol"), scores.channel("context")
    return torch.stack([sym, ctx, sym * ctx], dim=-1)


def relation_features(scores: QueryScores) -> Float[Tensor, "q n 6"]:
    """Features of ``relation_key``, in :data:`RELATION_FEATURES` order.

    >>> one = torch.tensor([[0.5]])
    >>> s = QueryScores(raw=one / 2, projected=None, symbol=one, context=one * 2, relation=one * 4)
    >>> relation_features(s)[0, 0].tolist()
    [0.5, 1.0, 0.5, 0.25, 2.0, 0.5]
    """
    sym, ctx = scores.channel("symbol"), scores.channel("context")
    subj, rel = scores.channel("raw"), scores.channel("relation")
    return torch.stack([sym, ctx, sym * ctx, subj, rel, subj * rel], dim=-1)


def mode_scores(
    mode: str, scores: QueryScores, memory: FastMemory, gate: list[str | None] | None = None
) -> Float[Tensor, "q n"]:
    """The ``[queries, entries]`` score matrix a mode ranks by."""
    if mode == "raw_both_top1":
        return scores.channel("raw")
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
        return scores.projected.masked_fill(~allowed.to(scores.projected.device), float("-inf"))
    if mode == "dual_key":
        return dual_key_scores(scores.channel("symbol"), scores.channel("context"))
    if mode == "dual_key_learned":
        if memory.dual_weights is None:
            raise ConfigError("dual_key_learned needs fitted weights")
        w = memory.dual_weights
        return torch.sigmoid(dual_features(scores) @ w[:3] + w[3])
    if mode == "relation_key":
        if memory.relation_weights is None:
            raise ConfigError("relation_key needs fitted weights")
        w = memory.relation_weights.to(scores.channel("relation").device)
        k = len(RELATION_FEATURES)
        return torch.sigmoid(relation_features(scores) @ w[:k] + w[k])
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
            device=chosen.device,
        )
    want = torch.tensor(target, device=chosen.device)
    return (chosen == want) & (want >= 0)


def top_k(
    mode: str,
    scores: QueryScores,
    memory: FastMemory,
    k: int,
    gate: list[str | None] | None = None,
) -> tuple[Float[Tensor, "q k"], Int[Tensor, "q k"]]:
    """The ``k`` best entries per query under ``mode`` (best first): one ``torch.topk`` over the
    mode's score matrix, on its device. ``k`` larger than the bank returns the whole bank."""
    s = mode_scores(mode, scores, memory, gate)
    return torch.topk(s, min(k, s.shape[1]), dim=1)


def decide(
    mode: str,
    scores: QueryScores,
    memory: FastMemory,
    gate: list[str | None] | None = None,
    threshold: float | None = None,
) -> Decision:
    """Top-1 entry per query under ``mode``, abstaining below the mode's threshold."""
    best, idx = mode_scores(mode, scores, memory, gate).max(dim=1)  # top_k with k = 1
    return choose(mode, best, idx, memory, threshold)


# Modes whose top-1 :func:`fmi.memory.search.search_top1` finds exactly, and the channels it ranks
# by.
SEARCHED = {m: CHANNELS[m] for m in ("both_top1", "raw_both_top1", "average", "dual_key")}


def read_decide(
    memory: FastMemory,
    mode: str,
    symbol_acts: list[Tensor],
    token_acts: list[Tensor],
    content: list[Tensor],
    gate: list[str | None] | None = None,
    min_search: int = 4096,
    way: str = "auto",
    answer_acts: Float[Tensor, "q d"] | None = None,
) -> Decision:
    """``decide(mode, score_queries(...))`` for reading: the same decision, on banks of at least
    ``min_search`` entries and for the modes in ``SEARCHED`` computed on the threads the cores
    leave free (:func:`fmi.core.threads.torch_threads`) by the int8-prefiltered exact search
    (:mod:`fmi.memory.search`) or the full score matrix, whichever the memory's measured rule
    (:class:`fmi.memory.plan.ReadPlan`) finds cheaper; ``way="search"`` or ``"matrix"`` forces
    one. The entries and vectors are the same either way; a query the search proves below the
    mode's threshold abstains without ranking the bank, and its ``score`` is then the upper
    bound it proved, not its best score. ``answer_acts`` feed the ``relation`` channel
    (:func:`score_queries`)."""
    if way not in ("auto", SEARCH, MATRIX):
        raise ConfigError(f"way must be auto, search or matrix, got {way!r}")
    if mode not in SEARCHED or len(memory) < min_search:
        scores = score_queries(
            memory, symbol_acts, token_acts, content, modes=(mode,), answer_acts=answer_acts
        )
        return decide(mode, scores, memory, gate=gate)
    if way == "auto":
        channels = [memory.search_channel(name) for name in SEARCHED[mode]]  # before timing
        tokens = sum(int(c.sum()) for c in content)
        work = sum(tokens * ch.rows.shape[0] * ch.rows.shape[1] for ch in channels)
        way = memory.read_plan.choose(mode, matrix_seconds(work) / max(1, len(content)))
    with torch_threads():
        start = time.perf_counter()
        if way == SEARCH:
            thr = memory.thresholds.get(mode, float("-inf"))
            best, idx, _ = searched_top1(memory, mode, symbol_acts, token_acts, content, thr)
            decision = choose(mode, best, idx, memory)
        else:
            scores = score_queries(memory, symbol_acts, token_acts, content, modes=(mode,))
            decision = decide(mode, scores, memory, gate=gate)
        memory.read_plan.record(mode, way, time.perf_counter() - start, len(content))
    return decision


def searched_top1(
    memory: FastMemory,
    mode: str,
    symbol_acts: list[Tensor],
    token_acts: list[Tensor],
    content: list[Tensor],
    threshold: float = float("-inf"),
) -> tuple[Float[Tensor, " q"], Int[Tensor, " q"], Int[Tensor, " q"]]:
    """``mode``'s best score and entry per query by :func:`fmi.memory.search.search_top1`, and how
    many
    entries it rescored in float32 for each (entry -1: proved below ``threshold``)."""
    if mode not in SEARCHED:
        raise ConfigError(f"mode {mode} is not searched; searched modes: {', '.join(SEARCHED)}")
    enc = memory.encoder
    queries: list[list[Tensor]] = []
    tokens: list[Tensor] | None = None  # the "symbol" and "context" channels share these
    for name in SEARCHED[mode]:
        if name == "raw":
            queries.append([enc.raw(a) for a in _content(symbol_acts, content)])
        elif name == "projected":
            p = _projector(enc)
            queries.append([enc.raw(a) @ p for a in _content(symbol_acts, content)])
        else:
            if tokens is None:
                tokens = [enc.tokens(a) for a in _content(token_acts, content)]
            queries.append(tokens)
    channels = [memory.search_channel(name) for name in SEARCHED[mode]]
    return search_top1(channels, queries, len(memory), threshold)


def _projector(enc) -> Tensor:
    if enc.projector is None:
        raise ConfigError("the projected modes need a trained projector")
    return enc.projector


def choose(
    mode: str,
    best: Float[Tensor, " q"],
    idx: Int[Tensor, " q"],
    memory: FastMemory,
    threshold: float | None = None,
) -> Decision:
    """The :class:`Decision` for each query's best entry ``idx`` (score ``best``): abstain below
    the mode's threshold or where no entry is open (a best score of -inf: ``context_gate``
    with no bank for the query's context), else inject the entry's value (``average``: its
    symbol's mean)."""
    best, idx = best.to(memory.values.device), idx.to(memory.values.device)
    thr = memory.thresholds.get(mode, float("-inf")) if threshold is None else threshold
    open_ = (best >= thr) & (best > float("-inf")) & (idx >= 0)
    entry = torch.where(open_, idx, torch.full_like(idx, -1))
    idx = idx.clamp_min(0)  # an abstention's vector is zeroed below
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


def read_queries(model, queries: QuerySet, encoder_sites: tuple[str, str], batch: int) -> Collected:
    """One frozen forward over every query prompt, caching the two key sites."""
    return collect(
        model.bridge,
        model.tokenizer,
        queries.texts,
        list(dict.fromkeys(encoder_sites)),
        batch_size=batch,
    )
