"""The refined value: the output correction iterated in closed form through the unembedding.

At the unembedding's input (``ln_final.hook_out``) an injected vector ``delta`` gives the logits
``(h + delta) @ W_U + b_U``, so the gradient of the cross-entropy of target ``t`` with respect to
``delta`` has a closed form and needs no backward pass through the transformer:

    delta_{k+1} = delta_k + alpha * (W_U[:, t] - W_U @ softmax((h + delta_k) @ W_U + b_U))

From ``delta_0 = 0`` the first step is ``alpha * v``, the seed value times the read scale. Later
steps keep pushing until the target dominates, which is what a tied, anisotropic unembedding
(SmolLM2) needs. The write's one forward pass gives ``h``; the steps cost a few unembedding
products each. Calibration chooses the number of steps on training prompts
(:func:`fmi.memory.fit.fit`).

>>> import torch
>>> w_u, b_u = torch.eye(3), torch.zeros(3)
>>> h, t = torch.zeros(1, 3), torch.tensor([2])
>>> one = refine(h, w_u, b_u, t, alpha=1.0, steps=[1])[0][1]
>>> torch.allclose(one, torch.tensor([[-1 / 3, -1 / 3, 2 / 3]]))
True
"""

from __future__ import annotations

import time

import torch
from jaxtyping import Float, Int
from torch import Tensor

from fmi.memory.values import correction_values


def refine(
    h: Float[Tensor, "n d"],
    w_u: Float[Tensor, "d vocab"],
    b_u: Float[Tensor, " vocab"],
    targets: Int[Tensor, " n"],
    alpha: float,
    steps: list[int],
) -> tuple[dict[int, Float[Tensor, "n d"]], dict[int, float]]:
    """The injected vector after each of ``steps`` closed-form steps (see the module), and the
    seconds spent up to each of them (one pass)."""
    start = time.perf_counter()
    delta = torch.zeros_like(h)
    out, seconds = {}, {}
    for k in range(1, max(steps) + 1):
        delta = delta + alpha * correction_values(w_u, (h + delta) @ w_u + b_u, targets)
        if k in steps:
            out[k], seconds[k] = delta, time.perf_counter() - start
    return out, seconds


def refined_values(
    h: Float[Tensor, "n d"],
    seed: Float[Tensor, "n d"],
    w_u: Float[Tensor, "d vocab"],
    b_u: Float[Tensor, " vocab"],
    targets: Int[Tensor, " n"],
    alpha: float,
    steps: int,
) -> Float[Tensor, "n d"]:
    """Values to store so that reading (which injects ``alpha * value``) injects the ``steps``-step
    refined vector. One step returns ``seed`` itself, bit for bit."""
    if steps < 1:
        raise ValueError(f"refinement needs at least one step, got {steps}")
    if steps == 1 or h.shape[0] == 0:
        return seed
    return refine(h, w_u, b_u, targets, alpha, [steps])[0][steps] / alpha


def refine_written(model, written, inject_site: str, alpha: float, steps: int):
    """``written`` (a :class:`fmi.memory.write.Written`) with every value, the answer steps'
    included,
    replaced by its ``steps``-step refined value (:func:`refined_values`); one step returns it
    unchanged. Refinement is closed-form only at the unembedding's input."""
    from dataclasses import replace

    from fmi.core.sites import UNEMBED_IN
    from fmi.errors import ConfigError
    from fmi.memory.values import unembedding

    if steps == 1:
        return written
    if inject_site != UNEMBED_IN:
        raise ConfigError(
            f"refined values need injection at {UNEMBED_IN!r}, not {inject_site!r}; "
            "use refine_steps=(1,)"
        )
    w_u, b_u = unembedding(model.bridge, linear_only=True)
    first = torch.tensor([e.target for e in written.entries], dtype=torch.long)
    values = refined_values(written.answer_states, written.values, w_u, b_u, first, alpha, steps)
    tail = written.tail_values
    if tail is not None and written.tail_states is not None:
        later = torch.tensor([t for e in written.entries for t in e.answer[1:]], dtype=torch.long)
        tail = refined_values(written.tail_states, tail, w_u, b_u, later, alpha, steps)
    return replace(written, values=values, tail_values=tail)
