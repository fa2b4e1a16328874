"""Exact top-1 retrieval over large banks: an int8 prefilter whose error is bounded
(:mod:`fmi.memory.codes`), then the memory's own float32 rule on the few entries the bound
cannot rule out.

Each approximate entry score is within a bound ``E`` of the float32 score (``dual_key``'s
product: within ``E_s (C~ + E_c) + S~ E_c``). Every entry whose approximate score plus its bound
reaches the best approximate score minus its bound (and the threshold, if one is given) is
rescored in float32 with ``maxsim``'s rule, every query's candidates in one batch; the best of
those is the float32 top-1. Entries ruled out cannot beat it, so the decision is the brute-force
one, up to float rounding between two entries that tie within it (``tests/unit/test_search.py``).
A query whose bound leaves much of the bank in play is scored by
:func:`fmi.memory.keys.maxsim` whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from fmi.memory.codes import (
    Channel,
    QueryCodes,
    bound_of,
    code_blocks,
    entry_scores,
    group_scores,
    repeat_first,
    segments,
)
from fmi.memory.keys import maxsim, pad_queries

# Query-token x key-row similarities one rescoring product may hold at once.
_RESCORE_ELEMENTS = 2**23


@dataclass(frozen=True)
class Bounds:
    """Bounds on each query's score for the entries ``columns`` (``None``: every entry, in
    order), and an upper bound on its score for every other entry (``-inf`` if none)."""

    low: Float[Tensor, "q c"]
    high: Float[Tensor, "q c"]
    columns: Int[Tensor, " c"] | None
    outside: Float[Tensor, " q"]


def search_top1(
    channels: list[Channel],
    queries: list[list[Float[Tensor, "len d"]]],
    n_entries: int,
    threshold: float = float("-inf"),
) -> tuple[Float[Tensor, " q"], Int[Tensor, " q"], Int[Tensor, " q"]]:
    """The float32 top-1 of each query under one channel's MaxSim score, or (two channels) under
    ``dual_key``'s ``clamp(symbol) * clamp(context)``: ``(score, entry, candidates rescored)``.

    ``queries[c]`` holds each query's token vectors for channel ``c``; a query with no tokens
    takes the brute-force path, whose edge cases (ties, entries without rows) it then shares.
    Below ``threshold`` a query abstains, so no entry that cannot reach it is ranked: a query
    whose every bound stays below it gets entry -1 and, as its score, that upper bound.
    """
    dev = channels[0].rows.device
    padded = [
        pad_queries([torch.nn.functional.normalize(t.to(dev).float(), dim=-1) for t in q])
        for q in queries
    ]
    coded = [QueryCodes.of(*p) for p in padded]
    if len(channels) == 1:
        best, pair_q, pair_e = _one_channel(coded[0], channels[0], threshold)
    else:
        b = _dual_bounds(channels, coded, n_entries, threshold)
        keep = b.high >= b.low.amax(dim=1, keepdim=True).clamp_min(threshold)
        best = torch.maximum(b.high.amax(dim=1), b.outside)
        pair_q, pair_e = keep.nonzero().unbind(1)  # row-major: by query, then entry
        if b.columns is not None:
            pair_e = b.columns[pair_e]
    entry = torch.full((len(best),), -1, dtype=torch.long, device=dev)
    # A query with no tokens in some channel scores by the brute-force rule's edge cases (ties,
    # entries without rows), and one whose bound keeps much of the bank is cheaper to score
    # whole: those take the brute-force path.
    empty = torch.stack([~mask.any(dim=1) for _, mask in padded]).any(dim=0)
    count = torch.bincount(pair_q, minlength=len(best)).int()
    brute = empty | (count > max(256, n_entries // 16))
    if bool(brute.any()):
        mine = ~brute[pair_q]
        pair_q, pair_e = pair_q[mine], pair_e[mine]
    if len(pair_q):
        got = [
            _rescore(ch, repeat_first(qs, mask), pair_q, pair_e)
            for ch, (qs, mask) in zip(channels, padded, strict=True)
        ]
        top, at = _top_per_query(_combine(got), pair_q, len(best))
        has = at < len(pair_q)
        best[has], entry[has] = top[has], pair_e[at[has]]
    if bool(brute.any()):
        full = [
            maxsim(qs[brute], mask[brute], ch.rows, ch.owner, n_entries, unit_keys=True)
            for ch, (qs, mask) in zip(channels, padded, strict=True)
        ]
        best[brute], entry[brute] = _combine(full).max(dim=1)
        count[brute] = n_entries
    return best, entry, count


def _one_channel(
    coded: QueryCodes, channel: Channel, threshold: float
) -> tuple[Float[Tensor, " q"], Int[Tensor, " p"], Int[Tensor, " p"]]:
    """One channel's prefilter: per query the upper bound of its best score, and the (query,
    entry) pairs, by query then entry, whose approximate score could beat the best proved score
    (best approximate minus its bound) and reach ``threshold``.

    Where every entry is one code (one key per entry, no repeats), the pairs are taken block by
    block against the running best, and the ``[queries, entries]`` matrix never exists: a
    pair kept early is dropped at the end if the final best rules it out."""
    bound = bound_of(coded, channel)
    if channel.member_code is not None:
        score = entry_scores(coded, channel)
        top = score.amax(dim=1)
        floor = torch.maximum(top - 2 * bound, threshold - bound)
        pair_q, pair_e = (score >= floor[:, None]).nonzero().unbind(1)
        return top + bound, pair_q, pair_e
    dev = channel.rows.device
    top = torch.full((len(bound),), float("-inf"), device=dev)
    found: list[tuple[Tensor, Tensor, Tensor]] = []
    for start, block in code_blocks(coded, channel.codes):
        top = torch.maximum(top, block.amax(dim=1))
        floor = torch.maximum(top - 2 * bound, threshold - bound)
        q, c = (block >= floor[:, None]).nonzero().unbind(1)
        found.append((q, c + start, block[q, c]))
    pair_q, pair_e, score = (torch.cat(x) for x in zip(*found, strict=True))
    floor = torch.maximum(top - 2 * bound, threshold - bound)
    keep = score >= floor[pair_q]
    pair_q, pair_e = pair_q[keep], pair_e[keep]
    order = torch.argsort(pair_q * len(channel.codes.scale) + pair_e)
    return top + bound, pair_q[order], pair_e[order]


def _rescore(
    channel: Channel,
    padded: Float[Tensor, "q w d"],
    pair_q: Int[Tensor, " p"],
    pair_e: Int[Tensor, " p"],
) -> Float[Tensor, " p"]:
    """Float32 MaxSim (``maxsim``'s rule) of query ``pair_q[i]`` against entry ``pair_e[i]``,
    for every pair at once: the query tokens against the distinct rows the pairs use, in
    chunks of queries. ``padded`` holds each query's first token in its padding
    (:func:`fmi.memory.codes.repeat_first`), so the max over tokens needs no mask; pairs are
    ordered by query."""
    n_q, width, _ = padded.shape
    at, local = segments(channel.starts, pair_e)
    rows = channel.order[at]
    q_of_row = pair_q[local]
    best = torch.empty(len(rows), device=padded.device)
    # pairs are ordered by query, so a chunk of rows spans a range of queries
    per_chunk = max(1, _RESCORE_ELEMENTS // (width * max(1, len(rows))))
    steps = torch.arange(0, n_q + per_chunk, per_chunk, device=q_of_row.device)
    bounds = torch.searchsorted(q_of_row, steps)
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if lo == hi:
            continue
        used, row_at = torch.unique(rows[lo:hi], return_inverse=True)
        q0 = int(q_of_row[lo])
        q1 = int(q_of_row[hi - 1]) + 1
        sims = padded[q0:q1].reshape(-1, padded.shape[2]) @ channel.rows[used].T
        sims = sims.view(q1 - q0, width, len(used))
        best[lo:hi] = sims[q_of_row[lo:hi] - q0, :, row_at].amax(dim=1)
    total = torch.zeros(len(pair_e), device=best.device).index_add_(0, local, best)
    return total / torch.bincount(local, minlength=len(pair_e)).clamp_min(1)


def _top_per_query(
    scores: Float[Tensor, " p"], pair_q: Int[Tensor, " p"], n_q: int
) -> tuple[Float[Tensor, " q"], Int[Tensor, " q"]]:
    """Per query, its best pair score and the first pair that reaches it (``len(scores)``
    where the query has no pair): ``max``'s first-occurrence rule over entries in order."""
    top = torch.full((n_q,), float("-inf"), device=scores.device)
    top = top.scatter_reduce(0, pair_q, scores, "amax")
    index = torch.arange(len(scores), device=scores.device)
    hit = torch.where(scores == top[pair_q], index, len(scores))
    first = torch.full((n_q,), len(scores), device=scores.device, dtype=torch.long)
    return top, first.scatter_reduce(0, pair_q, hit, "amin")


def _dual_bounds(
    channels: list[Channel], coded: list[QueryCodes], n_entries: int, threshold: float
) -> Bounds:
    """Bounds on ``clamp(symbol) * clamp(context)``.

    The context channel is scored first, once per group of entries that share their context
    codes. Since a symbol score is at most 1, a group whose context bound stays below a
    positive ``threshold`` for every query cannot fire: its entries' symbol rows are not
    scored, and its context bound is their upper bound. So the symbol channel, the costly one,
    is scored only on the entries some query's context could open."""
    sym_ch, ctx_ch = channels
    ctx_g = group_scores(coded[1], ctx_ch)
    e_c = bound_of(coded[1], ctx_ch)
    high_g = ctx_g.clamp_min(0) + e_c[:, None]
    columns = None
    outside = torch.full((len(ctx_g),), float("-inf"), device=ctx_g.device)
    opened = (high_g >= threshold).any(dim=0) if threshold > 0 else None
    if opened is not None and not bool(opened.all()):
        if bool((~opened).any()):
            outside = high_g[:, ~opened].amax(dim=1)
        columns, _ = segments(ctx_ch.group_starts, opened.nonzero().flatten())
        columns = ctx_ch.group_order[columns].sort().values
    group = ctx_ch.group
    if columns is None:
        ctx = ctx_g if group is None else ctx_g[:, group]
    else:
        ctx = ctx_g[:, columns if group is None else group[columns]]
    ctx_high = ctx.clamp_min(0) + e_c[:, None]
    ctx = ctx.clamp_min(0)
    e_s = bound_of(coded[0], sym_ch)
    if columns is None or len(columns):
        sym = entry_scores(coded[0], sym_ch, columns).clamp_min(0)
    else:
        sym, e_s = torch.zeros_like(ctx), torch.zeros_like(e_s)
    slack = e_s[:, None] * ctx_high + sym * e_c[:, None]
    return Bounds(sym * ctx - slack, sym * ctx + slack, columns, outside)


def _combine(scores: list[Tensor]) -> Tensor:
    """One channel's score as it is, or ``dual_key``'s ``clamp(symbol) * clamp(context)``."""
    return scores[0] if len(scores) == 1 else scores[0].clamp_min(0) * scores[1].clamp_min(0)
