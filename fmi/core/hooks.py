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
        out[idx, local[idx]] = out[idx, local[idx]] + delta.to(act.device)[idx].to(act.dtype)
        return out

    return hook


LOGITS_SITE = "unembed.hook_out"
"""The logits of each step: where :func:`sequence_hooks` sees the greedy pick."""


class Follower:
    """Per row of a batch: the vectors of an answer sequence and its tokens, and whether greedy
    decoding is still on it. ``inject`` adds row ``b``'s vector of the current step at the last
    position; ``follow`` (at the logits) reads each row's greedy pick and ends a row's sequence
    at its first departure. A row with ``None`` (or no tokens) gets nothing."""

    def __init__(self, deltas: list[Tensor | None], tokens: list[list[int]]) -> None:
        if len(deltas) != len(tokens):
            raise ValueError(f"{len(deltas)} delta sequences but {len(tokens)} token sequences")
        for d, t in zip(deltas, tokens, strict=True):
            if d is not None and (d.ndim != 2 or d.shape[0] != len(t)):
                raise ValueError(
                    f"each delta sequence must be [len(tokens), d]; got {tuple(d.shape)}"
                )
        self.deltas, self.tokens = deltas, tokens
        self.on = [d is not None and len(t) > 0 for d, t in zip(deltas, tokens, strict=True)]
        self.step = 0

    def inject(self, act: Tensor) -> Tensor:
        rows = [b for b, live in enumerate(self.on) if live and self.step < len(self.tokens[b])]
        if not rows:
            return act
        out = act.clone()
        for b in rows:
            delta = self.deltas[b]
            assert delta is not None
            out[b, -1] = out[b, -1] + delta[self.step].to(act.device, act.dtype)
        return out

    def follow(self, logits: Tensor) -> None:
        picks = logits[:, -1].argmax(-1).tolist()
        for b, pick in enumerate(picks):
            tokens = self.tokens[b]
            if self.on[b] and (self.step >= len(tokens) or pick != tokens[self.step]):
                self.on[b] = False
        self.step += 1


def sequence_hooks(
    site: str,
    deltas: list[Float[Tensor, "t d"] | None],
    tokens: list[list[int]],
) -> list[tuple[str, HookFn]]:
    """Hooks that add row ``b``'s ``deltas[b][s]`` at generation step ``s`` while it stays on its
    stored answer ``tokens[b]``, for one left-padded batch under greedy KV-cached generation.

    Step 0 is the prompt pass (the vector lands at the last prompt position); step ``s > 0``
    sees one new position. A second hook at the logits (``unembed.hook_out``) takes each step's
    greedy pick, ``argmax`` of the last position's logits, exactly what greedy decoding picks.
    Row ``b`` stays on while the picks equal ``tokens[b]``: the first step whose pick departs
    from it is the last that got a vector. A row with ``None`` gets nothing. Use a fresh set per
    generation; apply both with ``bridge.hooks(fwd_hooks=...)``.
    """
    state = Follower(deltas, tokens)

    def inject(act: Tensor, hook: object) -> Tensor:
        return state.inject(act)

    def follow(act: Tensor, hook: object) -> Tensor:
        state.follow(act)
        return act

    return [(site, inject), (LOGITS_SITE, follow)]
