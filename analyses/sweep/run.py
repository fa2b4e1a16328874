"""``fmi sweep``: run every unfinished cell of the grid on an executor, write each as it
finishes, then merge them into ``OUT/sweep.json`` and ``OUT/sweep.html``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from analyses.sweep.cells import Cell, grid
from analyses.sweep.config import SweepConfig
from analyses.sweep.executors import EXECUTORS, require_ray
from analyses.sweep.figures import report
from analyses.sweep.merge import merge, read_cell, write_cell
from fmi.errors import ConfigError
from fmi.reporting.report import write_report


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def check_splits(cells: list[Cell]) -> None:
    """``ConfigError`` for a split the cells' task lacks, before any model loads.

    >>> cfg = SweepConfig.from_dict({"models": ["tiny-gemma"], "splits": ["nope"]})
    >>> check_splits(grid(cfg))
    Traceback (most recent call last):
    ...
    fmi.errors.ConfigError: task 'builtin' has no split 'nope': ...
    """
    from fmi.experiments.recall import task_for

    seen: set[tuple] = set()
    for cell in cells:
        r = cell.recall
        if (r.task, r.seed) in seen:
            continue
        seen.add((r.task, r.seed))
        task = task_for(r)
        for name in r.splits:
            task.split(name)


def run_sweep(
    cfg: SweepConfig,
    out: str | Path,
    *,
    executor: str = "local",
    progress: bool = True,
    announce: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Run the cells of ``cfg`` not finished in ``out`` (see :mod:`analyses.sweep.merge`) on
    ``executor`` (``local`` or ``ray``), then merge every cell and write the report. Returns
    what ran: ``cells``, ``ran`` (names), ``kept`` (finished before), the paths, the time, the
    report's ``finding`` and the ``merged`` document.

    >>> import tempfile
    >>> cfg = SweepConfig.from_dict({"models": ["tiny-gemma"], "splits": ["same"],
    ...     "modes": ["dual_key"], "recall": {"quick": True, "refine_grid": [1], "end": None,
    ...     "n_train": 8, "n_eval": 4, "n_unrelated": 8}})
    >>> out = tempfile.mkdtemp()
    >>> first = run_sweep(cfg, out, progress=False, announce=lambda _: None)
    >>> again = run_sweep(cfg, out, progress=False, announce=lambda _: None)
    >>> len(first["ran"]), len(again["ran"]), again["kept"]
    (1, 0, 1)
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; executors: {', '.join(EXECUTORS)}")
    if executor == "ray":
        require_ray()
    cells = grid(cfg)
    check_splits(cells)
    todo = [c for c in cells if read_cell(out, c) is None]
    announce(
        f"fmi: sweep: {len(cells)} cells, {len(cells) - len(todo)} already finished, "
        f"{len(todo)} to run ({executor})"
    )
    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc="sweep: cells", disable=not progress, leave=False)

    def done(cell: Cell, doc: dict[str, Any]) -> None:
        write_cell(out, cell, doc)
        bar.update()
        bar.set_postfix_str(cell.name[:40])

    try:
        EXECUTORS[executor](todo, done)
    finally:
        bar.close()
    merged = merge(cfg, out, cells)
    page = report(merged)
    html = write_report(page, out)
    return {
        "cells": len(cells),
        "ran": [c.name for c in todo],
        "kept": len(cells) - len(todo),
        "seconds": round(time.perf_counter() - started, 1),
        "json": Path(out) / "sweep.json",
        "html": html,
        "finding": page.finding,
        "merged": merged,
    }
