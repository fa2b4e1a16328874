"""``fmi bench`` in one run: every measurement on one loaded model, as one document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from analyses.bench.config import BenchConfig
from analyses.bench.contention import one_core_busy
from analyses.bench.measurements import generation, peak_memory, write_vs_forward
from analyses.bench.memory import bench_memory, query_states
from analyses.bench.multi_token import multi_token
from analyses.bench.retrieval import retrieval
from analyses.capacity.bank import capacity_bindings
from fmi.experiments.tasks import Templates


def run_bench(
    cfg: BenchConfig,
    *,
    model=None,
    announce: Callable[[str], None] = print,
    progress: bool = False,
) -> dict:
    """Every figure of the benchmark, measured in this process, in one document
    (``progress``: a bar of each measurement's timed calls, repeats included, on stderr)."""
    from fmi.models.registry import load_model
    from fmi.reporting.provenance import header

    torch.manual_seed(cfg.seed)
    if model is None:
        model = load_model(cfg.model, seed=cfg.seed, announce=announce)
    rc = cfg.recall
    bindings = capacity_bindings(cfg.prompts, cfg.seed, skip=rc.n_train + rc.n_eval)
    memory, fit_seconds, fitted = bench_memory(model, bindings, cfg)
    announce(f"fmi: bench on {model.name}: {len(bindings)} prompts, batch {cfg.batch_size}")
    doc: dict[str, Any] = {
        "model": model.name,
        "threads": torch.get_num_threads(),
        "fit_s": fit_seconds,
        "thresholds": memory.thresholds,
    }
    doc["write"] = write_vs_forward(model, bindings, memory, cfg, progress)
    announce(f"fmi: write/forward {doc['write']['ratio']:.3f}")
    doc["generation"] = generation(model, bindings, memory, cfg, progress)
    doc["multi_token"] = multi_token(model, bindings, fitted, cfg, progress=progress)
    texts = [Templates().prompt("read", b) for b in bindings]
    queries = query_states(model, memory, texts, cfg.query_batch)
    doc["retrieval_ms_per_query"] = retrieval(memory, queries, cfg, progress)
    if cfg.loaded:
        announce("fmi: the same figures with one core kept busy by a background process")
        with one_core_busy(cfg.busy_limit_s) as busy:
            doc["loaded"] = {
                "write": write_vs_forward(model, bindings, memory, cfg, progress),
                "generation": generation(model, bindings, memory, cfg, progress),
                "retrieval_ms_per_query": retrieval(memory, queries, cfg, progress),
            }
        doc["loaded"]["busy_process"] = busy
    doc["peak_memory"] = peak_memory()
    doc["header"] = header(model, cfg.to_dict(), device=str(memory.values.device))
    return doc
