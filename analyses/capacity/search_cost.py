"""What reading costs on a real bank: the score matrix against the int8-prefiltered search.

For every bank size and searched mode, the sampled prompts' query states (kept by
``write_bank``) are decided twice on the bank of that size: ``score_queries`` + ``decide`` (the
full ``[queries, entries]`` matrix) and ``read_decide`` through
:func:`fmi.memory.search.search_top1`.
The two must choose the same entries; the row records both times per query (medians of
``repeats``, calls interleaved, after a warm-up that builds the key indexes) and how many
entries the search rescored in float32, per prompt kind.
"""

from __future__ import annotations

import statistics
from typing import Any

from tqdm import tqdm

from analyses.timing import median_seconds
from fmi.memory.retrieve import SEARCHED, decide, read_decide, score_queries, searched_top1


def search_rows(
    bank, modes: tuple[str, ...], repeats: int = 3, progress: bool = False
) -> list[dict]:
    """One row per (size, searched mode): ms per query both ways, agreement, rescored entries
    (``progress``: a bar of the sizes on stderr, updated between the timed calls)."""
    out = []
    sizes = sorted(bank.rows)
    for n in tqdm(sizes, desc="capacity: search cost", disable=not progress, leave=False):
        rows = bank.rows[n]
        acts = ([bank.acts["symbol"][q] for q in rows], [bank.acts["token"][q] for q in rows])
        content = [bank.acts["content"][q] for q in rows]
        kinds = [bank.qs.kinds[q] for q in rows]
        for mode in (m for m in modes if m in SEARCHED):
            row = _row(bank.memory.head(n), mode, acts, content, kinds, repeats)
            out.append({"size": n, "mode": mode, **row})
    return out


def _row(memory, mode: str, acts: tuple, content: list, kinds: list[str], repeats: int) -> dict:
    def full() -> Any:
        return decide(mode, score_queries(memory, acts[0], acts[1], content, modes=(mode,)), memory)

    def searched() -> Any:
        return read_decide(memory, mode, acts[0], acts[1], content, min_search=0)

    same = int((full().entry == searched().entry).sum())
    thr = memory.thresholds.get(mode, float("-inf"))
    rescored = searched_top1(memory, mode, acts[0], acts[1], content, thr)[2].tolist()
    by_kind: dict[str, list[int]] = {}
    for kind, count in zip(kinds, rescored, strict=True):
        by_kind.setdefault(kind, []).append(count)
    seconds = median_seconds({"matrix": full, "search": searched}, repeats)
    return {
        "queries": len(content),
        "matrix_ms": 1000 * seconds["matrix"] / len(content),
        "search_ms": 1000 * seconds["search"] / len(content),
        "same_entries": same,
        "rescored_median": {k: statistics.median(v) for k, v in by_kind.items()},
        "rescored_max": {k: max(v) for k, v in by_kind.items()},
    }
