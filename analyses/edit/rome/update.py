"""ROME's closed-form write: the rank-one update that maps a key to its value."""

from __future__ import annotations

import torch
from torch import Tensor


def rank_one_update(
    W: Tensor,
    C: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor | None = None,
    direction: Tensor | None = None,
) -> Tensor:
    """The rank-one delta ``(v - b - W k) uᵀ / (uᵀ k)``, ``u = C⁻¹ d`` with ``d = direction``
    (default ``k``; a solve, not an inverse), to add to ``W`` ``[d_out, d_in]`` (torch's Linear
    layout: output ``W x + b``). ROME's code takes ``d`` = the key averaged over the context
    prefixes and ``k`` = the bare prompt's key.

    After ``W' = W + delta``: ``W' k + b = v`` exactly up to float error, and ``W' x = W x`` for
    every ``x`` with ``xᵀ C⁻¹ d = 0``. Computed in float64, returned in ``W``'s dtype.

    >>> W, C, k, v = torch.zeros(2, 2), torch.eye(2), torch.tensor([1.0, 0.0]), torch.ones(2)
    >>> rank_one_update(W, C, k, v)
    tensor([[1., 0.],
            [1., 0.]])
    """
    W64, k64 = W.detach().double(), k.detach().double().to(W.device)
    d64 = k64 if direction is None else direction.detach().double().to(W.device)
    target = v.detach().double().to(W.device)
    if bias is not None:
        target = target - bias.detach().double()
    u = torch.linalg.solve(C.double().to(W.device), d64)
    delta = torch.outer(target - W64 @ k64, u) / (u @ k64)
    return delta.to(W.dtype)
