"""The parametric baseline's curve: LoRA adapters trained on the same bindings, read the same way.

Each adapter (rank r, on a frozen base) is trained on the statements of the first N bindings,
exactly the text the fast memory writes from, to predict the label after ``means``. It is then
read with the prompts sampled for size N (the memory's own), so the two curves share every
prompt. ``write`` is memorization of the training statements; ``read`` is the question.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fmi.capacity.config import CapacityConfig
from fmi.capacity.lora import answer_loss, lora_outputs, train_lora
from fmi.capacity.measure import Bank, base_of
from fmi.capacity.power_law import PowerLaw, fit_power_law
from fmi.evaluate import Outputs, hits, summarize


def lora_rows(
    model, bank: Bank, bindings, templates, done: dict, cfg: CapacityConfig, announce=print
) -> list[dict]:
    """One row per (size, rank): recall metrics with intervals, final training loss, seconds.
    ``done`` holds the memory-free outputs (``curve_rows``), for ``unrelated_changed``."""
    out = []
    for n in cfg.lora_sizes:
        entries = bank.memory.entries[:n]
        statements = [templates.prompt("write", b) for b in bindings[:n]]
        targets = torch.tensor([e.target for e in entries])
        rows = bank.rows[n]
        qs = bank.qs.subset(rows)
        for rank in cfg.lora.ranks:
            start = time.perf_counter()
            adapter, losses = train_lora(model, statements, targets, rank, cfg.lora)
            seconds = time.perf_counter() - start
            gen = lora_outputs(
                model,
                adapter,
                qs.texts,
                max_new_tokens=cfg.recall.max_new_tokens,
                batch_size=cfg.batch_size,
                label_ids=bank.label_ids,
            )
            h = hits(
                model,
                qs,
                entries,
                bank.labels,
                Outputs(gen.tokens, gen.label_pick),
                base_of(done, rows),
            )
            row = summarize(h, qs, cfg.recall)
            loss = answer_loss(model, statements, targets, adapter, cfg.batch_size)
            row.update(
                size=n,
                rank=rank,
                parameters=adapter.n_parameters,
                loss=loss,
                train_losses=[round(x, 4) for x in losses],
                seconds=round(seconds, 1),
            )
            out.append(row)
            announce(
                f"fmi: LoRA r={rank} N={n}: write {row['write']:.3f} read {row['read']:.3f} "
                f"loss {loss:.3f} ({seconds:.0f} s)"
            )
    return out


MEMORIZED = 0.01  # nats: below this an adapter has memorized its bindings; no law describes 0


def loss_law(rows: list[dict]) -> PowerLaw | str:
    """``loss = c · N^a · r^b`` over the LoRA rows that did not memorize their bindings (final
    loss above :data:`MEMORIZED`), or why it could not be fitted."""
    rows = [r for r in rows if r["loss"] > MEMORIZED]
    if not rows:
        return f"no LoRA row with loss above {MEMORIZED} nats"
    y = np.array([r["loss"] for r in rows])
    try:
        return fit_power_law(
            y,
            N=np.array([r["size"] for r in rows], float),
            r=np.array([r["rank"] for r in rows], float),
        )
    except ValueError as err:
        return str(err)
