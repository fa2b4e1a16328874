"""Retrieval per query at each bank size: the full score matrix, the exact search, and reading
as users get it (``read_decide``, which chooses between the two by its measured rule)."""

from __future__ import annotations

import torch

from analyses.bench.bank import BANKS, bench_bank
from analyses.bench.config import BenchConfig
from analyses.bench.measurements import repeats_bar, ticking
from analyses.timing import median_seconds
from fmi.core.threads import available_cores, free_threads, other_running
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
    """Per bank (``written``, ``random``), mode and bank size: milliseconds per query (medians
    of ``repeats``, after a warm-up that builds the key indexes) of

    - ``matrix``: ``score_queries`` + ``decide`` on torch's thread setting;
    - ``search``: ``read_decide(way="search")``, the int8 prefilter and float32 rescoring, on
      the threads the cores leave free;
    - ``read``: ``read_decide`` as reading calls it (the matrix below its ``min_search`` of 4,096
      entries; above, the rule choosing search or matrix); its
      measurements start afresh (``read_plan.clear()``), so its warm-up call is the rule's first
      measurement, and ``read_way`` is the way its last call took;

    whether all three chose the same entries, the median number of entries the search rescored,
    and the threads the rule gave the search. ``progress``: a bar of the timed calls."""
    content = [torch.ones(len(q), dtype=torch.bool) for q in queries["symbol"]]
    args = (queries["symbol"], queries["token"], content)
    out: dict[str, dict[str, dict[int, dict]]] = {k: {m: {} for m in cfg.modes} for k in BANKS}
    calls = 3 * len(BANKS) * len(cfg.modes) * len(cfg.bank_sizes)
    bar = repeats_bar("bench: retrieval", calls, cfg.repeats, progress)
    for kind in BANKS:
        for n in cfg.bank_sizes:
            bar.set_postfix_str(f"{kind} N={n}")
            bank = bench_bank(memory, kind, n, cfg.seed)
            for mode in cfg.modes:
                out[kind][mode][n] = _one(bank, mode, args, cfg.repeats, bar)
    bar.close()
    return out


def _one(
    bank: FastMemory,
    mode: str,
    args: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]],
    repeats: int,
    bar,
) -> dict:
    def matrix() -> Decision:
        return decide(mode, score_queries(bank, *args, (mode,)), bank)

    def search() -> Decision:
        return read_decide(bank, mode, *args, min_search=0, way="search")

    def read() -> Decision:  # as reading calls it: below 4,096 entries, the matrix alone
        return read_decide(bank, mode, *args)

    n_q = len(args[2])
    t = median_seconds(ticking({"matrix": matrix, "search": search}, bar), repeats)
    bank.read_plan.clear()
    t.update(median_seconds(ticking({"read": read}, bar), repeats))
    row: dict = {k: 1000 * v / n_q for k, v in t.items()}
    row["read_way"] = bank.read_plan.last.get(mode, "matrix")
    ref = matrix().entry
    row["same_entries"] = float(((ref == search().entry) & (ref == read().entry)).float().mean())
    row["threads"] = free_threads(available_cores(), other_running(), torch.get_num_threads())
    if mode in SEARCHED:
        thr = bank.thresholds.get(mode, float("-inf"))
        row["rescored"] = float(searched_top1(bank, mode, *args, threshold=thr)[2].float().median())
    return row
