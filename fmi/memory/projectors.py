"""The learned key projector: a linear map trained with backprop on cached keys.

The language model is never in the loop: training sees only residual states cached by one
frozen forward pass over the training split, so the model's weights cannot change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from fmi.memory.keys import maxsim


@dataclass(frozen=True)
class ProjectorConfig:
    dim: int = 128
    steps: int = 300
    lr: float = 3e-3
    temperature: float = 0.05
    weight_decay: float = 1e-4
    batch_size: int = 256  # query prompts per step (all of them when there are fewer)

    def __post_init__(self) -> None:
        if min(self.dim, self.steps, self.batch_size) < 1 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError(f"invalid projector config {self}")


def train_projector(
    keys: Float[Tensor, "n d"],
    queries: Float[Tensor, "q pos d"],
    query_mask: Bool[Tensor, "q pos"],
    targets: Int[Tensor, " q"],
    cfg: ProjectorConfig,
    seed: int,
) -> Float[Tensor, "d r"]:
    """Fit ``W`` so that MaxSim of ``queries @ W`` against ``keys @ W`` picks ``targets``.

    Each step takes a seeded minibatch of ``batch_size`` queries. Loss: cross-entropy over all
    entries plus one *abstain* class, of MaxSim scores divided by
    ``temperature``. The other contexts of the same symbol are the hard negatives; queries with
    target ``-1`` (contextless and unrelated training prompts) must pick abstain, whose logit is
    a learned scalar. Without them the projector cannot learn that a symbol seen without its
    context is not a match. Returns the ``[d, r]`` matrix, in float32 on the keys' device (the
    seeded draws are made on the CPU, so a seed gives the same start on every device).
    """
    gen = torch.Generator().manual_seed(seed)
    dev = keys.device
    keys, queries = keys.float(), queries.to(dev).float()
    query_mask, targets = query_mask.to(dev), targets.to(dev)
    d = keys.shape[1]
    weight = (torch.randn(d, cfg.dim, generator=gen) / d**0.5).to(dev).requires_grad_(True)
    abstain = torch.zeros(1, device=dev, requires_grad=True)
    opt = torch.optim.AdamW([weight, abstain], lr=cfg.lr, weight_decay=cfg.weight_decay)
    owner = torch.arange(keys.shape[0], device=dev)
    classes = torch.where(targets >= 0, targets, torch.full_like(targets, keys.shape[0]))
    n_queries = queries.shape[0]
    with torch.enable_grad():
        for _ in range(cfg.steps):
            rows = torch.randperm(n_queries, generator=gen)[: cfg.batch_size].to(dev)
            scores = maxsim(
                queries[rows] @ weight, query_mask[rows], keys @ weight, owner, keys.shape[0]
            )
            null = abstain.expand(scores.shape[0], 1)
            logits = torch.cat([scores, null], dim=1) / cfg.temperature
            loss = torch.nn.functional.cross_entropy(logits, classes[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return weight.detach()
