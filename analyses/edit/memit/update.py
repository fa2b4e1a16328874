"""The closed-form writes of MEMIT and AlphaEdit, and AlphaEdit's null-space projector.

Keys and residuals are rows here: ``K`` ``[n, d_in]`` (one key per edit), ``R`` ``[n, d_out]``;
updates are in torch's Linear layout ``[d_out, d_in]`` (output ``W x + b``). Everything is
computed in float64 and returned in float64.

>>> K, R = torch.eye(2)[:1], torch.tensor([[2.0, 0.0]])
>>> memit_delta(K, R, torch.eye(2), 1.0)
tensor([[1., 0.],
        [0., 0.]], dtype=torch.float64)
>>> P = null_space_projector(torch.diag(torch.tensor([1.0, 0.0])), 0.5)
>>> P
tensor([[0., 0.],
        [0., 1.]], dtype=torch.float64)
"""

from __future__ import annotations

import torch
from torch import Tensor


def memit_delta(K: Tensor, R: Tensor, C: Tensor, weight: float) -> Tensor:
    """MEMIT's ``ΔW = Rᵀ K (weight * C + Kᵀ K)⁻¹`` (the paper's ``R Kᵀ (λ C + K Kᵀ)⁻¹`` with
    keys as columns there): the least-squares update with ``ΔW K ≈ R`` that moves the outputs
    of the preserved keys, whose second moment is ``C``, the least. A solve, not an inverse."""
    K64, R64 = K.double(), R.double()
    A = weight * C.double().to(K64.device) + K64.T @ K64
    return torch.linalg.solve(A, K64.T @ R64).T


def alphaedit_delta(K: Tensor, R: Tensor, P: Tensor, earlier: Tensor, l2: float) -> Tensor:
    """AlphaEdit's ``ΔW = Rᵀ K P (earlier P + Kᵀ K P + l2 I)⁻¹`` (the paper's ``R K₁ᵀ P (K_p
    K_pᵀ P + K₁ K₁ᵀ P + α I)⁻¹``), solved as its code does: ``X = (P (Kᵀ K + earlier) + l2
    I)⁻¹ P Kᵀ R``, ``ΔW = Xᵀ``. ``earlier``: ``K_pᵀ K_p`` of the keys already edited. Every row
    of ``ΔW`` is in P's range, so ``ΔW x = 0`` for ``x`` in the preserved space (``P x = 0``)."""
    K64, R64, P64 = K.double(), R.double(), P.double().to(K.device)
    d = K64.shape[1]
    A = P64 @ (K64.T @ K64 + earlier.double().to(K64.device))
    A = A + l2 * torch.eye(d, dtype=torch.float64, device=K64.device)
    return torch.linalg.solve(A, P64 @ K64.T @ R64).T


def null_space_projector(C: Tensor, threshold: float) -> Tensor:
    """``P = Û Ûᵀ``, ``Û`` the eigenvectors of the symmetric ``C`` whose eigenvalues are below
    ``threshold``: the projector onto the directions the preserved keys (nearly) never take."""
    values, vectors = torch.linalg.eigh(C.double())
    small = vectors[:, values < threshold]
    return small @ small.T
