"""Training a LoRA adapter: Adam on the answer cross-entropy, the base frozen, retention added.

Training (:func:`train_lora`) may add a retention term, ``retention_weight`` x
``KL(p_base || p_adapted)`` on unrelated prompts
(:func:`analyses.capacity.lora.retention.retention_kl`, after ROME/MEMIT's KL term), and copy
the adapter at chosen step counts, so that one run per learning rate gives a whole learning rate
x steps grid (:func:`analyses.capacity.lora.tune.tune_lora`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm import tqdm

from analyses.capacity.lora.adapter import LoraAdapter, applied
from analyses.capacity.lora.base import _frozen_base, _last_logits
from analyses.capacity.lora.config import LoraConfig
from analyses.capacity.lora.retention import Retention, retention_kl
from fmi.errors import ConfigError


@torch.inference_mode()
def answer_loss(
    model, texts: list[str], targets: Int[Tensor, " n"], adapter: LoraAdapter, batch_size: int
) -> float:
    """Mean cross-entropy of ``targets`` at each prompt's last position, with ``adapter``."""
    total = 0.0
    with applied(model.hf_model, adapter):
        for start in range(0, len(texts), batch_size):
            logits = _last_logits(model, texts[start : start + batch_size])
            y = targets[start : start + batch_size].to(logits.device)
            total += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    return total / len(texts)


@dataclass
class Trained:
    """A trained adapter, the per-step answer cross-entropy (before each update), the per-step
    retention KL (empty when retention is off) and the snapshots asked for (steps -> adapter)."""

    adapter: LoraAdapter
    losses: list[float]
    retention: list[float]
    snapshots: dict[int, LoraAdapter]


def train_lora(
    model,
    texts: list[str],
    targets: Int[Tensor, " n"],
    rank: int,
    cfg: LoraConfig,
    *,
    lr: float,
    steps: int,
    retention: Retention | None = None,
    snapshots: tuple[int, ...] = (),
    progress: bool = False,
) -> Trained:
    """Adam (``lr``) on a rank-``rank`` adapter only: ``steps`` seeded minibatches of prompts,
    loss the cross-entropy of ``targets`` at the last prompt position, plus
    ``cfg.retention_weight`` x :func:`retention_kl` on one batch of ``retention`` per step (in
    turn). With no retention or a weight of 0 the retention path never runs: the loop is the
    plain cross-entropy one, bit for bit. ``snapshots``: step counts at which to copy the adapter
    (after that many updates); the run is the same as without them. ``progress``: a bar of the
    steps on stderr."""
    if len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts but {len(targets)} targets")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be > 0, got {lr}")
    outside = [k for k in snapshots if not 1 <= k <= steps]
    if outside:
        raise ConfigError(f"snapshots {outside} are outside 1..{steps} steps")
    keep = retention is not None and cfg.retention_weight > 0
    adapter = LoraAdapter.init(model.hf_model, rank, cfg.seed)
    opt = torch.optim.Adam(adapter.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(texts)
    losses: list[float] = []
    kls: list[float] = []
    snaps: dict[int, LoraAdapter] = {}
    with _frozen_base(model), applied(model.hf_model, adapter), torch.enable_grad():
        bar = tqdm(range(steps), desc=f"LoRA r={rank}", disable=not progress, leave=False)
        for step in bar:
            rows = torch.randperm(n, generator=gen)[: cfg.batch_size].tolist()
            logits = _last_logits(model, [texts[i] for i in rows])
            y = targets[rows].to(logits.device)
            loss = torch.nn.functional.cross_entropy(logits, y)
            total = loss
            if keep:
                assert retention is not None
                i = step % len(retention.batches)
                kl = retention_kl(model, retention.batches[i], retention.base[i])
                total = loss + cfg.retention_weight * kl
                kls.append(float(kl.detach()))
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if step + 1 in snapshots:
                snaps[step + 1] = adapter.snapshot()
    for p in adapter.parameters():
        p.grad = None
    return Trained(adapter, losses, kls, snaps)
