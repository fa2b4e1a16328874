"""Memory values: the cross-entropy output correction at the answer position.

For logits ``z = h @ W_U + b_U`` (``h`` the input of the unembedding, ``unembed.hook_in``: the
residual stream after the final norm and its scale) and target ``t``, the negative gradient of
``-log softmax(z)[t]`` with respect to ``h`` is

    v = W_U[:, t] - W_U @ softmax(z)

so ``v`` lives in the space after the final norm. Pythia's unembedding is untied (``embed_out``),
Gemma-3's and SmolLM2's are tied to the embedding; either way ``W_U`` is the matrix the model
multiplies ``h`` by, read from the bridge with the weight processing it was loaded with (none by
default; ``fold_ln``/centering would change both ``h`` and ``W_U``). ``tests/test_values.py`` checks
the identity ``logits == h @ W_U + b_U`` and that ``v`` equals autograd's gradient.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def unembedding(bridge) -> tuple[Float[Tensor, "d vocab"], Float[Tensor, " vocab"]]:
    """``(W_U, b_U)`` as the model applies them (``b_U`` is zeros where the model has none)."""
    w_u = bridge.W_U.detach().float()
    b_u = getattr(bridge, "b_U", None)
    b_u = torch.zeros(w_u.shape[1]) if b_u is None else b_u.detach().float()
    return w_u, b_u


def correction_values(
    w_u: Float[Tensor, "d vocab"],
    logits: Float[Tensor, "batch vocab"],
    targets: Int[Tensor, " batch"],
) -> Float[Tensor, "batch d"]:
    """``W_U[:, t] - W_U @ softmax(logits)`` for each row."""
    return values_from_probs(w_u, torch.softmax(logits.float(), dim=-1), targets)


def values_from_probs(
    w_u: Float[Tensor, "d vocab"],
    probs: Float[Tensor, "batch vocab"],
    targets: Int[Tensor, " batch"],
) -> Float[Tensor, "batch d"]:
    """``W_U[:, t] - W_U @ p`` for each row's next-token distribution ``p`` (already computed)."""
    return w_u[:, targets].T - probs @ w_u.T
