"""Int8 codes of a key channel, and the approximate MaxSim scores they give with a proved error
bound: the first stage of :mod:`fmi.memory.search`.

For unit vectors ``q``, ``k`` and their decoded codes ``q~``, ``k~``,

    |q.k - q~.k~| <= |q - q~| + |q~| |k - k~|        (Cauchy-Schwarz)

(a row that shares the code of a nearly equal row ``r`` adds ``|k - r|``), and the max over
query tokens, the mean over an entry's key rows and ``clamp_min(0)`` cannot make an error
larger, so each approximate entry score is within the bound of the float32 score.

Three things keep the work small, because on a shared CPU every kernel call can wait for a
descheduled thread (issue 20):
- **Distinct rows only.** Key rows within ``merge`` of each other share one code (a context's
  tokens have the same states in every statement of that context), and query token rows that
  are equal (a shared question prefix) are multiplied once.
- **Groups.** Entries whose rows have the same codes (every statement of one context, on the
  context channel) form one group and are scored once.
- **Cache-sized blocks.** One ``torch._int_mm`` per block of key codes whose ``int32`` output
  stays within a few MiB (measured here: 1,024 to 4,096 codes of 128 dims run at 160 to 370
  GMAC/s on 2 cores, 16,384 at 40 to 70).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

# Float32 rounding of the int32 products and of the scale products (relative 1e-7 on scores of
# at most 1): far below the int8 bound, added so that the bound stays an upper bound.
FLOAT_SLACK = 1e-5
# The int32 output of one int8 product, at most: it stays in cache (see the module docstring).
BLOCK_BYTES = 4 * 2**20


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


def int_products(
    a: Tensor, b: Tensor, buffer: Tensor | None = None, size: int | None = None
) -> Tensor:
    """``a @ b.T`` for int8 ``a [p, d]``, ``b [m, d]``, exact in int32 (into the first
    ``p * m`` elements of ``buffer`` where one is given and the int8 kernel takes the shapes).

    >>> a = torch.tensor([[1, -2]], dtype=torch.int8)
    >>> int_products(a.repeat(17, 1), torch.tensor([[3, 4]], dtype=torch.int8))[0].tolist()
    [-5]
    """
    if hasattr(torch, "_int_mm") and a.shape[0] > 16:
        try:
            if buffer is None:
                return torch._int_mm(a, b.T)
            out = buffer[: a.shape[0] * b.shape[0]].view(a.shape[0], b.shape[0])
            return torch._int_mm(a, b.T, out=out)
        except RuntimeError:  # shapes or a device the int8 kernel does not take
            pass
    return (a.double() @ b.double().T).round().to(torch.int32)  # exact below 2**53


def _csr(keys: Int[Tensor, " m"], n: int) -> tuple[Tensor, Tensor]:
    """``order`` and ``starts`` such that ``order[starts[i]:starts[i + 1]]`` are the positions
    whose key is ``i``."""
    order = torch.argsort(keys, stable=True)
    return order, torch.searchsorted(keys[order], torch.arange(n + 1, device=keys.device))


def segments(starts: Int[Tensor, " n1"], which: Int[Tensor, " c"]) -> tuple[Tensor, Tensor]:
    """For CSR ``starts`` and segments ``which``: the positions of every segment's items, in
    order, and per position the index into ``which`` of its segment."""
    first = starts[which]
    lens = starts[which + 1] - first
    dev = which.device
    local = torch.repeat_interleave(torch.arange(len(which), device=dev), lens)
    offset = torch.arange(len(local), device=dev) - torch.repeat_interleave(
        torch.cumsum(lens, 0) - lens, lens
    )
    return first[local] + offset, local


@dataclass(frozen=True)
class Channel:
    """One key channel as the search sees it.

    - ``rows``, ``owner``: float32 unit rows and the entry of each; ``order[starts[e]:
      starts[e + 1]]`` are entry ``e``'s rows.
    - ``codes``: int8 codes of the distinct rows (rows within ``merge`` of each other in every
      coordinate share one; ``code_of_row`` maps each row to its code, ``spread`` is the largest
      L2 distance of a row from the row whose code it shares).
    - Groups: entries whose rows have the same codes. ``group[e]`` is entry ``e``'s; group
      ``g``'s codes are ``member_code[member_starts[g]:member_starts[g + 1]]`` and its entries
      ``group_order[group_starts[g]:group_starts[g + 1]]``. ``group`` is ``None`` where it is
      the identity (no two entries share codes), ``member_code`` where group ``g`` is code ``g``
      alone (one key per entry, no repeats).
    """

    rows: Float[Tensor, "m d"]
    owner: Int[Tensor, " m"]
    order: Int[Tensor, " m"]
    starts: Int[Tensor, " n1"]
    codes: Quantized
    code_of_row: Int[Tensor, " m"]
    spread: float
    n_groups: int
    group: Int[Tensor, " n"] | None
    member_code: Int[Tensor, " s"] | None
    member_starts: Int[Tensor, " g1"]
    group_order: Int[Tensor, " n"]
    group_starts: Int[Tensor, " g1"]

    @classmethod
    def of(
        cls,
        rows: Float[Tensor, "m d"],
        owner: Int[Tensor, " m"],
        n_entries: int,
        merge: float = 1e-4,
    ) -> Channel:
        dev = rows.device
        order, starts = _csr(owner, n_entries)
        _, code_of_row = torch.unique(torch.round(rows / merge), dim=0, return_inverse=True)
        n_codes = int(code_of_row.max()) + 1 if len(code_of_row) else 0
        if n_codes == len(rows):  # all distinct: codes in row order
            code_of_row = torch.arange(len(rows), device=dev)
        index = torch.arange(len(rows), device=dev)
        first = torch.full((n_codes,), len(rows), device=dev)
        first = first.scatter_reduce(0, code_of_row, index, "amin")
        spread = float((rows - rows[first][code_of_row]).norm(dim=-1).max()) if len(rows) else 0.0
        # each entry's codes, sorted and padded with -1: equal signatures form one group
        lens = starts[1:] - starts[:-1]
        width = int(lens.max()) if n_entries else 0
        sig = torch.full((n_entries, max(width, 1)), -1, dtype=torch.long, device=dev)
        at, local = segments(starts, torch.arange(n_entries, device=dev))
        sig[local, at - starts[local]] = code_of_row[order[at]]
        sig = sig.sort(dim=1).values
        signatures, group = torch.unique(sig, dim=0, return_inverse=True)
        real = signatures >= 0
        member_code = signatures[real]
        member_starts = torch.zeros(len(signatures) + 1, dtype=torch.long, device=dev)
        member_starts[1:] = torch.cumsum(real.sum(dim=1), 0)
        group_order, group_starts = _csr(group, len(signatures))
        arange = torch.arange(n_entries, device=dev)
        same_groups = len(signatures) == n_entries and bool((group == arange).all())
        single = same_groups and len(member_code) == n_entries
        single = single and bool((member_code == arange).all())
        return cls(
            rows,
            owner,
            order,
            starts,
            Quantized.of(rows[first]),
            code_of_row,
            spread,
            len(signatures),
            None if same_groups else group,
            None if single else member_code,
            member_starts,
            group_order,
            group_starts,
        )


def repeat_first(
    queries: Float[Tensor, "q w d"], mask: Bool[Tensor, "q w"]
) -> Float[Tensor, "q w d"]:
    """``queries`` with each padding slot holding its query's first real token: a max over
    tokens is then unchanged by the padding, and needs no mask (``maxsim`` does the same).

    >>> q = torch.tensor([[[1.0], [0.0]], [[2.0], [3.0]]])
    >>> repeat_first(q, torch.tensor([[True, False], [True, True]])).flatten().tolist()
    [1.0, 1.0, 2.0, 3.0]
    """
    first = queries[torch.arange(len(queries), device=queries.device), mask.int().argmax(dim=1)]
    return torch.where(mask[:, :, None], queries, first[:, None, :])


@dataclass(frozen=True)
class QueryCodes:
    """A batch of unit query token sets as int8 codes with one scale for the batch: the
    distinct token rows, each query's padded tokens as indices into them (padding repeats its
    first real token, so a max over tokens needs no mask), and per query the largest coding
    error of its tokens. One scale lets the max over a query's tokens be taken on the exact
    ``int32`` products, and the scale applied once per query and code."""

    codes: Tensor  # int8 [u, d]
    scale: float
    index: Int[Tensor, "q w"]
    error: Float[Tensor, " q"]

    @classmethod
    def of(cls, queries: Float[Tensor, "q w d"], mask: Bool[Tensor, "q w"]) -> QueryCodes:
        n_q, width, dim = queries.shape
        q = repeat_first(queries, mask).reshape(-1, dim)
        distinct, index = torch.unique(q, dim=0, return_inverse=True)
        scale = 127.0 / max(float(distinct.abs().max()) if distinct.numel() else 0.0, 1e-12)
        codes = torch.round(distinct * scale).clamp(-127, 127)
        row_error = (distinct - codes / scale).norm(dim=-1)
        error = row_error[index].view(n_q, width).amax(dim=1)
        return cls(codes.to(torch.int8), scale, index.view(n_q, width), error)


def code_blocks(
    queries: QueryCodes, keys: Quantized, codes: Int[Tensor, " c"] | None = None
) -> Iterator[tuple[int, Float[Tensor, "q b"]]]:
    """Approximate MaxSim of every query against every key code (or only ``codes``), one
    cache-sized block of codes at a time: ``(first code of the block, [queries, block])``. One
    int8 product per block, the max over each query's tokens; the buffers are allocated once
    per call and reused (a fresh multi-MiB tensor per block costs its page faults again), so a
    consumer must copy what it keeps."""
    k_codes = keys.codes if codes is None else keys.codes[codes]
    inv_k = 1.0 / (queries.scale * (keys.scale if codes is None else keys.scale[codes]))
    n_q, width = queries.index.shape
    n_rows, n_codes = len(queries.codes), len(k_codes)
    flat = queries.index.flatten()
    gather = n_rows != n_q * width or bool(
        (flat != torch.arange(len(flat), device=flat.device)).any()
    )
    block = min(n_codes, max(256, BLOCK_BYTES // (4 * max(1, n_rows))))
    dev = k_codes.device
    products = torch.empty(n_rows * block, dtype=torch.int32, device=dev)
    tokens = torch.empty(n_q * width * block, dtype=torch.int32, device=dev) if gather else None
    best = torch.empty(n_q * block, device=dev)
    for start in range(0, n_codes, block):
        size = min(block, n_codes - start)
        prod = int_products(queries.codes, k_codes[start : start + size], products, size)
        if tokens is not None:
            out = tokens[: n_q * width * size].view(n_q * width, size)
            prod = torch.index_select(prod, 0, flat, out=out)
        top = prod.view(n_q, width, size).amax(dim=1)
        out_f = best[: n_q * size].view(n_q, size)
        yield start, torch.mul(top, inv_k[None, start : start + size], out=out_f)


def code_scores(
    queries: QueryCodes, keys: Quantized, codes: Int[Tensor, " c"] | None = None
) -> Float[Tensor, "q c"]:
    """:func:`code_blocks` as one ``[queries, codes]`` matrix."""
    n = len(keys.codes) if codes is None else len(codes)
    out = torch.empty(queries.index.shape[0], n, device=keys.codes.device)
    for start, block in code_blocks(queries, keys, codes):
        out[:, start : start + block.shape[1]] = block
    return out


def bound_of(queries: QueryCodes, channel: Channel) -> Float[Tensor, " q"]:
    """Per query, the bound on ``|approximate - float32|`` that its every entry score obeys."""
    q_err = queries.error
    return q_err + (1 + q_err) * channel.codes.error.max() + channel.spread + FLOAT_SLACK


def group_scores(
    queries: QueryCodes, channel: Channel, groups: Int[Tensor, " g"] | None = None
) -> Float[Tensor, "q g"]:
    """Approximate score of every group (or only ``groups``): the mean over its codes."""
    if channel.member_code is None:  # identity: group g is code g
        return code_scores(queries, channel.codes, groups)
    dev = channel.member_starts.device
    which = torch.arange(channel.n_groups, device=dev) if groups is None else groups
    at, local = segments(channel.member_starts, which)
    used, code_at = torch.unique(channel.member_code[at], return_inverse=True)
    scores = code_scores(queries, channel.codes, used)
    total = torch.zeros(scores.shape[0], len(which), device=scores.device)
    total.index_add_(1, local, scores[:, code_at])
    count = torch.bincount(local, minlength=len(which)).clamp_min(1)
    return total / count


def entry_scores(
    queries: QueryCodes, channel: Channel, entries: Int[Tensor, " c"] | None = None
) -> Float[Tensor, "q c"]:
    """Approximate score of every entry (or only ``entries``, in that order)."""
    if channel.group is None:
        return group_scores(queries, channel, entries)
    if entries is None:
        return group_scores(queries, channel)[:, channel.group]
    groups, at = torch.unique(channel.group[entries], return_inverse=True)
    return group_scores(queries, channel, groups)[:, at]


def approx_maxsim(
    queries: Float[Tensor, "q pos d"],
    query_mask: Bool[Tensor, "q pos"],
    channel: Channel,
    entries: Int[Tensor, " c"] | None = None,
) -> tuple[Float[Tensor, "q c"], Float[Tensor, " q"]]:
    """MaxSim of unit-norm ``queries`` against a channel's int8 codes, for every entry or only
    ``entries`` (columns in that order), and per query the bound on ``|approx - float32|``
    that every entry's score obeys."""
    coded = QueryCodes.of(queries, query_mask)
    return entry_scores(coded, channel, entries), bound_of(coded, channel)
