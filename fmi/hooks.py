"""Hook factories. Each returns an ``fn(act, hook)`` to be applied with ``bridge.hooks(...)``.

With the KV cache on, a generation step after the prompt shows a hook one position
(``[batch, 1, d]``); the factories below count absolute positions across calls so that a
vector lands at exactly the prompt position it was meant for, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

HookFn = Callable[[Tensor, object], Tensor]


def add_at_positions(
    delta: Float[Tensor, "batch d"],
    positions: Int[Tensor, " batch"],
    active: Bool[Tensor, " batch"] | None = None,
) -> HookFn:
    """Add ``delta[b]`` to the activation of row ``b`` at absolute position ``positions[b]``.

    The hook is stateful: it counts the positions it has seen, so under KV-cached
    generation (one new position per call) it adds nothing after the prompt unless a
    position there was asked for. Use a fresh hook per generation.
    """
    if delta.ndim != 2 or positions.ndim != 1 or delta.shape[0] != positions.shape[0]:
        raise ValueError(
            f"delta must be [batch, d] and positions [batch]; got {tuple(delta.shape)} "
            f"and {tuple(positions.shape)}"
        )
    rows_on = torch.ones_like(positions, dtype=torch.bool) if active is None else active
    state = {"offset": 0}

    def hook(act: Tensor, hook: object) -> Tensor:
        seq = act.shape[1]
        offset = state["offset"]
        state["offset"] = offset + seq
        local = positions.to(act.device) - offset
        rows = (local >= 0) & (local < seq) & rows_on.to(act.device)
        if not bool(rows.any()):
            return act
        idx = rows.nonzero().squeeze(-1)
        out = act.clone()
        out[idx, local[idx]] = out[idx, local[idx]] + delta[idx].to(act.dtype).to(act.device)
        return out

    return hook
