"""Exact top-1 retrieval over large banks: an int8 prefilter whose error is bounded, then the
memory's own float32 rule on the few entries the bound cannot rule out.

The prefilter scores every query token against every key row with int8 codes (one scale per
row, an ``int32`` matrix product taken in blocks of key rows, so the ``[tokens, rows]`` product
never exists whole) and applies the MaxSim rule to those approximate cosines. For unit vectors
``q``, ``k`` and their decoded codes ``q~``, ``k~``,

    |q.k - q~.k~| <= |q - q~| + |q~| |k - k~|        (Cauchy-Schwarz)

(a row that shares the code of a nearly equal row ``r`` adds ``|k - r|``), and the max over
query tokens, the mean over an entry's key rows and ``clamp_min(0)`` cannot make an error
larger, so each approximate entry score is within a bound ``E`` of the float32 score
(``dual_key``'s product: within ``E_s (C~ + E_c) + S~ E_c``). Every entry whose approximate
score plus its bound reaches the best approximate score minus its bound (and the threshold, if
one is given) is rescored in float32 with ``maxsim``'s rule; the best of those is the float32
top-1. Entries ruled out cannot beat it, so the decision is the brute-force one, up to float
rounding between two entries that tie within it (``tests/unit/test_search.py``). A query whose
bound leaves much of the bank in play is scored by :func:`fmi.memory.keys.maxsim` whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from fmi.memory.keys import maxsim, pad_queries

# Float32 rounding of the int32 products and of the scale divisions (relative 1e-7 on scores of
# at most 1): far below the int8 bound, added so that the bound stays an upper bound.
_FLOAT_SLACK = 1e-5


@dataclass(frozen=True)
class Quantized:
    """Rows as int8 codes with one scale per row: ``row ~= codes / scale``."""

    codes: Tensor  # int8 [m, d]
    scale: Float[Tensor, " m"]
    error: Float[Tensor, " m"]  # |row - codes / scale|, L2, per row

    @classmethod
    def of(cls, rows: Float[Tensor, "m d"]) -> Quantized:
        top = rows.abs().amax(dim=-1).clamp_min(1e-12)
        scale = 127.0 / top
        codes = torch.round(rows * scale[:, None]).clamp(-127, 127)
        error = (rows - codes / scale[:, None]).norm(dim=-1)
        return cls(codes.to(torch.int8), scale, error)


def _int_products(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b.T`` for int8 ``a [p, d]``, ``b [m, d]``, exact in int32."""
    if hasattr(torch, "_int_mm") and a.shape[0] > 16:
        try:
            return torch._int_mm(a, b.T)
        except RuntimeError:  # shapes or a device the int8 kernel does not take
            pass
    return (a.double() @ b.double().T).round().to(torch.int32)  # exact below 2**53


def approx_maxsim(
    queries: Float[Tensor, "q pos d"],
    query_mask: Bool[Tensor, "q pos"],
    channel: Channel,
    n_entries: int,
    entries: Int[Tensor, " c"] | None = None,
    block: int = 4096,
) -> tuple[Float[Tensor, "q c"], Float[Tensor, " q"]]:
    """MaxSim of unit-norm ``queries`` against a channel's int8 codes, for every entry or only
    ``entries`` (columns in that order), and per query the bound on ``|approx - float32|``
    that every entry's score obeys."""
    n_q, width, dim = queries.shape
    keys = channel.codes
    dev = keys.codes.device
    if entries is None:
        codes, scale = keys.codes, keys.scale
        row_code, row_owner, n_out = channel.inverse, channel.owner, n_entries
    else:
        rows, row_owner = _rows_of(channel, entries)
        used = rows if channel.inverse is None else channel.inverse[rows]
        used, row_code = torch.unique(used, return_inverse=True)
        codes, scale, n_out = keys.codes[used], keys.scale[used], len(entries)
    # padding repeats the row's first real token, so the max over tokens needs no mask
    first = queries[torch.arange(n_q, device=dev), query_mask.int().argmax(dim=1)]
    q = torch.where(query_mask[:, :, None], queries, first[:, None, :])
    top = q.abs().amax(dim=(1, 2)).clamp_min(1e-12)
    q_scale = 127.0 / top  # one scale per query: the max over its tokens can stay in int32
    q_codes = torch.round(q * q_scale[:, None, None]).clamp(-127, 127)
    q_err = (q - q_codes / q_scale[:, None, None]).norm(dim=-1).amax(dim=1)
    flat = q_codes.to(torch.int8).reshape(n_q * width, dim)
    best = torch.empty(n_q, codes.shape[0], device=dev)
    for start in range(0, codes.shape[0], block):
        stop = start + block
        prod = _int_products(flat, codes[start:stop]).view(n_q, width, -1).amax(dim=1)
        best[:, start:stop] = prod.float() / (q_scale[:, None] * scale[None, start:stop])
    bound = q_err + (1 + q_err) * keys.error.max() + channel.spread + _FLOAT_SLACK
    if row_code is not None:
        best = best[:, row_code]  # each row scores as the distinct row it shares codes with
    if row_owner.shape[0] == n_out and bool((row_owner == torch.arange(n_out, device=dev)).all()):
        return best, bound
    count = torch.bincount(row_owner, minlength=n_out).float()
    total = torch.zeros(n_q, n_out, device=dev).index_add_(1, row_owner, best)
    return total / count.clamp_min(1.0), bound


@dataclass(frozen=True)
class Channel:
    """One key channel as the search sees it: float32 unit rows and their owners; int8 codes of
    its distinct rows (rows within ``merge`` of each other in every coordinate share one code,
    ``inverse`` maps each row to it, ``spread`` is the largest L2 distance of a row from the row
    it shares a code with); and each entry's rows (``order[starts[e]:starts[e + 1]]``).

    Rows repeat in real banks: a context is written before the symbol, so its tokens' states
    are the same in every statement of that context (2,000 context-token rows of 1,000 Gemma-3
    statements in two contexts have 4 distinct rows)."""

    rows: Float[Tensor, "m d"]
    owner: Int[Tensor, " m"]
    codes: Quantized
    inverse: Int[Tensor, " m"] | None
    spread: float
    order: Int[Tensor, " m"]
    starts: Int[Tensor, " n1"]

    @classmethod
    def of(
        cls,
        rows: Float[Tensor, "m d"],
        owner: Int[Tensor, " m"],
        n_entries: int,
        merge: float = 1e-4,
    ) -> Channel:
        order = torch.argsort(owner, stable=True)
        starts = torch.searchsorted(owner[order], torch.arange(n_entries + 1, device=owner.device))
        _, inverse = torch.unique(torch.round(rows / merge), dim=0, return_inverse=True)
        n_distinct = int(inverse.max()) + 1 if len(inverse) else 0
        if n_distinct == len(rows):
            return cls(rows, owner, Quantized.of(rows), None, 0.0, order, starts)
        index = torch.arange(len(rows), device=rows.device)
        first = torch.full((n_distinct,), len(rows), device=rows.device)
        first = first.scatter_reduce(0, inverse, index, "amin")
        spread = float((rows - rows[first][inverse]).norm(dim=-1).max())
        return cls(rows, owner, Quantized.of(rows[first]), inverse, spread, order, starts)


def _rows_of(channel: Channel, entries: Int[Tensor, " c"]) -> tuple[Tensor, Tensor]:
    """The rows of ``entries`` and, per row, the index into ``entries`` of its owner."""
    first = channel.starts[entries]
    lens = channel.starts[entries + 1] - first
    dev = entries.device
    local = torch.repeat_interleave(torch.arange(len(entries), device=dev), lens)
    offset = torch.arange(len(local), device=dev) - torch.repeat_interleave(
        torch.cumsum(lens, 0) - lens, lens
    )
    return channel.order[first[local] + offset], local


def _exact(
    channel: Channel, tokens: Float[Tensor, "t d"], entries: Int[Tensor, " c"]
) -> Float[Tensor, " c"]:
    """Float32 MaxSim of one query's unit tokens against ``entries`` only (``maxsim``'s rule)."""
    rows, local = _rows_of(channel, entries)
    best = (tokens @ channel.rows[rows].T).amax(dim=0)
    total = torch.zeros(len(entries), device=best.device).index_add_(0, local, best)
    return total / torch.bincount(local, minlength=len(entries)).clamp_min(1)


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
    if len(channels) == 1:
        score, bound = approx_maxsim(*padded[0], channels[0], n_entries)
        none = torch.full((len(score),), float("-inf"), device=dev)
        b = Bounds(score - bound[:, None], score + bound[:, None], None, none)
    else:
        b = _dual_bounds(channels, padded, n_entries, threshold)
    # an entry is kept if it could beat the best proved score, and could reach the threshold
    keep = b.high >= b.low.amax(dim=1, keepdim=True).clamp_min(threshold)
    best = torch.maximum(b.high.amax(dim=1), b.outside)
    entry = torch.full((len(best),), -1, dtype=torch.long, device=dev)
    # A query with no tokens in some channel scores by the brute-force rule's edge cases (ties,
    # entries without rows), and one whose bound keeps much of the bank is cheaper to score
    # whole: those take the brute-force path.
    empty = torch.stack([~mask.any(dim=1) for _, mask in padded]).any(dim=0)
    count = keep.sum(dim=1, dtype=torch.int32)  # a bool sum into int64 is 5x slower on CPU
    brute = empty | (count > max(256, n_entries // 16))
    rows = (~brute & (count > 0)).nonzero().flatten()
    # one nonzero over the rows that rescore, split per query (row-major order)
    kept = torch.split(keep[rows].nonzero()[:, 1], count[rows].tolist()) if len(rows) else ()
    for i, cand in zip(rows.tolist(), kept, strict=True):
        if b.columns is not None:
            cand = b.columns[cand]
        got = [
            _exact(ch, qs[i][mask[i]], cand)
            for ch, (qs, mask) in zip(channels, padded, strict=True)
        ]
        top, at = _combine(got).max(dim=0)
        best[i], entry[i] = top, cand[at]
    if bool(brute.any()):
        full = [
            maxsim(qs[brute], mask[brute], ch.rows, ch.owner, n_entries, unit_keys=True)
            for ch, (qs, mask) in zip(channels, padded, strict=True)
        ]
        best[brute], entry[brute] = _combine(full).max(dim=1)
        count[brute] = n_entries
    return best, entry, count


def _dual_bounds(
    channels: list[Channel], padded: list[tuple[Tensor, Tensor]], n_entries: int, threshold: float
) -> Bounds:
    """Bounds on ``clamp(symbol) * clamp(context)``.

    The context channel is scored first. Since a symbol score is at most 1, an entry whose
    context bound stays below a positive ``threshold`` for every query cannot fire: its symbol
    rows are not scored, and its context bound is its upper bound. So the symbol channel, the
    costly one, is scored only on the entries some query's context could open."""
    ctx, e_c = approx_maxsim(*padded[1], channels[1], n_entries)
    ctx_high = ctx.clamp_min(0) + e_c[:, None]
    columns = None
    outside = torch.full((len(ctx),), float("-inf"), device=ctx.device)
    if threshold > 0:
        opened = (ctx_high >= threshold).any(dim=0)
        if not bool(opened.all()):
            outside = ctx_high[:, ~opened].amax(dim=1) if bool((~opened).any()) else outside
            columns = opened.nonzero().flatten()
            ctx, ctx_high = ctx[:, columns], ctx_high[:, columns]
    ctx = ctx.clamp_min(0)
    if columns is None:
        sym, e_s = approx_maxsim(*padded[0], channels[0], n_entries)
    elif len(columns):
        sym, e_s = approx_maxsim(*padded[0], channels[0], n_entries, columns)
    else:
        sym, e_s = torch.zeros_like(ctx), torch.zeros(len(ctx), device=ctx.device)
    sym = sym.clamp_min(0)
    slack = e_s[:, None] * ctx_high + sym * e_c[:, None]
    return Bounds(sym * ctx - slack, sym * ctx + slack, columns, outside)


def _combine(scores: list[Tensor]) -> Tensor:
    """One channel's score as it is, or ``dual_key``'s ``clamp(symbol) * clamp(context)``."""
    return scores[0] if len(scores) == 1 else scores[0].clamp_min(0) * scores[1].clamp_min(0)
