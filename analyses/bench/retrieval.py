"""Retrieval per query at each bank size: the full score matrix against the exact search."""

from __future__ import annotations

import torch

from analyses.bench.bank import synthetic_bank
from analyses.bench.config import BenchConfig
from analyses.bench.measurements import repeats_bar, ticking
from analyses.timing import median_seconds
from fmi.memory.retrieve import (
    SEARCHED,
    Decision,
    decide,
    read_decide,
    score_queries,
    searched_top1,
)
from fmi.memory.store import FastMemory


def retrieval(
    memory: FastMemory,
    queries: dict[str, list[torch.Tensor]],
    cfg: BenchConfig,
    progress: bool = False,
) -> dict:
    """Per mode and bank size: milliseconds per query for the full score matrix
    (``score_queries`` + ``decide``) and for the exact search (``read_decide``, int8 prefilter
    and float32 rescoring; medians of ``repeats``), whether both chose the same entries, and the
    median number of entries the search rescored. ``progress``: a bar of the timed calls (every
    size and mode) on stderr."""
    content = [torch.ones(len(q), dtype=torch.bool) for q in queries["symbol"]]
    args = (queries["symbol"], queries["token"], content)
    out: dict[str, dict[int, dict[str, float]]] = {m: {} for m in cfg.modes}
    calls = 2 * len(cfg.modes) * len(cfg.bank_sizes)
    bar = repeats_bar("bench: retrieval", calls, cfg.repeats, progress)
    for n in cfg.bank_sizes:
        bar.set_postfix_str(f"N={n}")
        bank = synthetic_bank(memory, n, cfg.seed)
        for mode in cfg.modes:

            def full(bank=bank, mode=mode) -> Decision:
                return decide(mode, score_queries(bank, *args, (mode,)), bank)

            def searched(bank=bank, mode=mode) -> Decision:
                return read_decide(bank, mode, *args, min_search=0)

            # the warm-up call builds the key indexes
            t = median_seconds(ticking({"matrix": full, "search": searched}, bar), cfg.repeats)
            row = {k: 1000 * v / len(content) for k, v in t.items()}
            row["same_entries"] = float((full().entry == searched().entry).float().mean())
            if mode in SEARCHED:
                thr = bank.thresholds.get(mode, float("-inf"))
                got = searched_top1(bank, mode, *args, threshold=thr)
                row["rescored"] = float(got[2].float().median())
            out[mode][n] = row
    bar.close()
    return out
