"""The single-bank timings: write against forward, memory against plain generation, peak memory."""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

import torch

from analyses.bench.config import BenchConfig
from analyses.timing import median_seconds
from fmi.core.forward import answer_only
from fmi.core.generate import greedy
from fmi.core.prompts import encode
from fmi.experiments.tasks import Templates
from fmi.memory.inject import read_greedy
from fmi.memory.store import FastMemory
from fmi.memory.write import write


@torch.inference_mode()
def plain_forward(model, texts: list[str], batch_size: int) -> None:
    """The model's forward over ``texts`` in left-padded batches, answer-position logits only."""
    for start in range(0, len(texts), batch_size):
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        model.bridge(enc.tokens, attention_mask=enc.mask, logits_to_keep=answer_only(enc.tokens))


def write_vs_forward(model, bindings, memory: FastMemory, cfg: BenchConfig) -> dict[str, float]:
    templates = Templates()
    texts = [templates.prompt("write", b) for b in bindings]
    enc = memory.encoder
    kw = dict(
        symbol_site=enc.symbol_site, token_site=enc.token_site, inject_site=memory.inject_site
    )
    t = median_seconds(
        {
            "forward": lambda: plain_forward(model, texts, cfg.batch_size),
            "write": lambda: write(model, bindings, templates, batch_size=cfg.batch_size, **kw),
        },
        cfg.repeats,
    )
    return {"forward_s": t["forward"], "write_s": t["write"], "ratio": t["write"] / t["forward"]}


def generation(model, bindings, memory: FastMemory, cfg: BenchConfig) -> dict[str, Any]:
    """Plain greedy vs one-pass memory reading per mode, and prompts per second."""
    texts = [Templates().prompt("read", b) for b in bindings]
    n, b = cfg.max_new_tokens, cfg.batch_size

    def plain() -> Any:
        return greedy(model, texts, site=memory.inject_site, max_new_tokens=n, batch_size=b)

    def read(mode: str) -> Callable[[], Any]:
        return lambda: read_greedy(model, memory, mode, texts, max_new_tokens=n, batch_size=b)

    fns: dict[str, Callable[[], Any]] = {"plain": plain, **{m: read(m) for m in cfg.modes}}
    t = median_seconds(fns, cfg.repeats)
    out: dict[str, Any] = {"plain_s": t["plain"], "prompts": len(texts)}
    for mode in cfg.modes:
        out[mode] = {
            "seconds": t[mode],
            "ratio": t[mode] / t["plain"],
            "prompts_per_s": len(texts) / t[mode],
        }
    return out


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (and of the GPU, where one is used), MiB."""
    out = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out
