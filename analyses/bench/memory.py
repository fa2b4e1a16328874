"""What the benchmark reads: a memory fitted as ``fmi recall`` fits it, and query states."""

from __future__ import annotations

import time
from typing import Any

from analyses.bench.config import BenchConfig
from fmi.experiments.tasks import Templates
from fmi.memory.store import FastMemory


def bench_memory(model, bindings, cfg: BenchConfig) -> tuple[FastMemory, float, Any]:
    """A memory of ``bindings`` read the way ``fmi recall`` reads (fitted on the built-in
    task's training split: standardizers, projector, thresholds, alpha), the fit's seconds, and
    the fit."""
    from fmi.experiments.recall import task_for
    from fmi.memory.fit import fit
    from fmi.memory.write import write_memory

    start = time.perf_counter()
    fitted = fit(model, task_for(cfg.recall).train, cfg.recall)
    seconds = time.perf_counter() - start
    _, memory = write_memory(model, bindings, Templates(), fitted, cfg.recall)
    return memory, seconds, fitted


def query_states(model, memory: FastMemory, texts: list[str], n: int) -> dict[str, list]:
    """Real read prompts' content-token states at both key sites, repeated up to ``n``."""
    from fmi.core.forward import collect

    enc = memory.encoder
    sites = list(dict.fromkeys([enc.symbol_site, enc.token_site]))
    got = collect(model.bridge, model.tokenizer, texts, sites)
    rows = [i % len(texts) for i in range(n)]
    pick = [got.content[i] for i in rows]
    return {
        "symbol": [got.acts[enc.symbol_site][i][c] for i, c in zip(rows, pick, strict=True)],
        "token": [got.acts[enc.token_site][i][c] for i, c in zip(rows, pick, strict=True)],
    }
