"""The single-bank timings: write against forward, memory against plain generation, peak memory."""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

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


def ticking(fns: dict[str, Callable[[], Any]], bar: tqdm | None) -> dict[str, Callable[[], Any]]:
    """``fns`` advancing ``bar`` by one after each call; unchanged without a bar. The update (a
    counter; a redraw at most every 0.1 s) falls inside the timed call, microseconds against
    calls of milliseconds at least."""
    if bar is None or bar.disable:
        return fns

    def tick(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            out = fn()
            bar.update()
            return out

        return call

    return {name: tick(fn) for name, fn in fns.items()}


def repeats_bar(desc: str, calls: int, repeats: int, progress: bool) -> tqdm:
    """A bar of ``calls`` functions each timed ``repeats`` times after a warm-up, on stderr."""
    return tqdm(total=calls * (repeats + 1), desc=desc, disable=not progress, leave=False)


def timed(
    fns: dict[str, Callable[[], Any]], repeats: int, desc: str, progress: bool = False
) -> dict[str, float]:
    """:func:`analyses.timing.median_seconds` with a bar of the calls when ``progress``."""
    with repeats_bar(desc, len(fns), repeats, progress) as bar:
        return median_seconds(ticking(fns, bar), repeats)


def write_vs_forward(
    model, bindings, memory: FastMemory, cfg: BenchConfig, progress: bool = False
) -> dict[str, float]:
    templates = Templates()
    texts = [templates.prompt("write", b) for b in bindings]
    enc = memory.encoder
    kw = dict(
        symbol_site=enc.symbol_site, token_site=enc.token_site, inject_site=memory.inject_site
    )
    t = timed(
        {
            "forward": lambda: plain_forward(model, texts, cfg.batch_size),
            "write": lambda: write(model, bindings, templates, batch_size=cfg.batch_size, **kw),
        },
        cfg.repeats,
        "bench: write vs forward",
        progress,
    )
    return {"forward_s": t["forward"], "write_s": t["write"], "ratio": t["write"] / t["forward"]}


def generation(
    model, bindings, memory: FastMemory, cfg: BenchConfig, progress: bool = False
) -> dict[str, Any]:
    """Plain greedy vs one-pass memory reading per mode, and prompts per second."""
    texts = [Templates().prompt("read", b) for b in bindings]
    n, b = cfg.max_new_tokens, cfg.batch_size

    def plain() -> Any:
        return greedy(model, texts, site=memory.inject_site, max_new_tokens=n, batch_size=b)

    def read(mode: str) -> Callable[[], Any]:
        return lambda: read_greedy(model, memory, mode, texts, max_new_tokens=n, batch_size=b)

    fns: dict[str, Callable[[], Any]] = {"plain": plain, **{m: read(m) for m in cfg.modes}}
    t = timed(fns, cfg.repeats, "bench: generation", progress)
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
