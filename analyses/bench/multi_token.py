"""Answers of several tokens: the teacher-forced write and memory generation, timed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from analyses.bench.config import BenchConfig
from analyses.bench.measurements import timed
from fmi.core.generate import greedy
from fmi.core.prompts import encode
from fmi.experiments.tasks import Templates
from fmi.memory.inject import read_greedy
from fmi.memory.store import FastMemory
from fmi.memory.write import write


def answers_of(tokenizer, length: int) -> list[str]:
    """The built-in multi-token labels that are exactly ``length`` tokens after a space."""
    from fmi.experiments.builtin_tasks import MULTI_CATEGORIES

    labels = [label for cat in MULTI_CATEGORIES for label in cat]
    return [
        x
        for x in labels
        if len(tokenizer(" " + x, add_special_tokens=False)["input_ids"]) == length
    ]


def multi_token(
    model, bindings, fitted, cfg: BenchConfig, length: int = 3, progress: bool = False
) -> dict[str, Any]:
    """The write and generation ratios for answers of ``length`` tokens (plus the end token).

    The bindings are ``bindings`` with labels drawn in turn from :func:`answers_of`. The write
    (one teacher-forced forward over statement + answer + end, a value per answer token and for
    the end token) is timed against the plain forward of the same texts that yields the logits
    at the same positions; memory generation (``dual_key``, values following the stored answer)
    against plain greedy generation of ``length + 1`` tokens. ``progress``: a bar of the timed
    calls on stderr.
    """
    from fmi.memory.write import write_memory

    pool = answers_of(model.tokenizer, length)
    if not pool:
        return {"skipped": f"no built-in label is {length} tokens for this tokenizer"}
    if cfg.recall.end is None:
        return {"skipped": "the recall configuration writes no answer sequence (end=None)"}
    multi = [replace(b, label=pool[i % len(pool)]) for i, b in enumerate(bindings)]
    templates = Templates()
    _, memory = write_memory(model, multi, templates, fitted, cfg.recall)
    end = cfg.recall.end
    steps = length + (1 if end else 0)
    reads = [templates.prompt("read", b) for b in multi]
    calls = timed_calls(model, memory, multi, templates, end, steps, cfg)
    t = timed(calls, cfg.repeats, "bench: multi-token", progress)
    out, _ = read_greedy(
        model, memory, "dual_key", reads, max_new_tokens=steps, batch_size=cfg.batch_size
    )
    right = [
        tuple(o[:length]) == e.answer_tokens
        for o, e in zip(out.tokens, memory.entries, strict=True)
    ]
    return {
        "answer_tokens": length,
        "labels": pool,
        "forward_s": t["forward"],
        "write_s": t["write"],
        "write_ratio": t["write"] / t["forward"],
        "plain_s": t["plain"],
        "memory_s": t["read"],
        "generation_ratio": t["read"] / t["plain"],
        "read_exact": sum(right) / len(right),
    }


def timed_calls(
    model,
    memory: FastMemory,
    multi,
    templates: Templates,
    end: str,
    steps: int,
    cfg: BenchConfig,
) -> dict[str, Callable[[], Any]]:
    """The four calls :func:`multi_token` times against each other, over ``multi``'s texts:
    ``forward`` (logits at the ``steps`` positions that predict the answer and end), ``write``
    (the teacher-forced write, answer then ``end``), ``plain`` and ``read`` (greedy, ``steps``
    tokens)."""
    texts = [templates.prompt("write", b) + templates.target("write", b.label) + end for b in multi]
    enc = memory.encoder
    kw = dict(
        symbol_site=enc.symbol_site, token_site=enc.token_site, inject_site=memory.inject_site
    )

    @torch.inference_mode()
    def forward() -> None:
        for start in range(0, len(texts), cfg.batch_size):
            batch = encode(model.tokenizer, texts[start : start + cfg.batch_size])
            width = batch.tokens.shape[1]
            keep = torch.arange(width - 1 - steps, width - 1)  # the positions that predict
            model.bridge(batch.tokens, attention_mask=batch.mask, logits_to_keep=keep)

    def written() -> Any:
        return write(model, multi, templates, batch_size=cfg.batch_size, end=end, **kw)

    reads = [templates.prompt("read", b) for b in multi]

    def plain() -> Any:
        return greedy(
            model, reads, site=memory.inject_site, max_new_tokens=steps, batch_size=cfg.batch_size
        )

    def read() -> Any:
        return read_greedy(
            model, memory, "dual_key", reads, max_new_tokens=steps, batch_size=cfg.batch_size
        )

    return {"forward": forward, "write": written, "plain": plain, "read": read}
