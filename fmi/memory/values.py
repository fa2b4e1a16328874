"""Memory values: the cross-entropy output correction at the answer position.

For logits ``z = h @ W_U + b_U`` (``h`` the input of the unembedding, ``unembed.hook_in``: the
residual stream after the final norm and its scale) and target ``t``, the negative gradient of
``-log softmax(z)[t]`` with respect to ``h`` is

    v = W_U[:, t] - W_U @ softmax(z)

so ``v`` lives in the space after the final norm. Pythia's unembedding is untied (``embed_out``),
Gemma-3's and SmolLM2's are tied to the embedding; either way ``W_U`` is the matrix the model
multiplies ``h`` by, read from the bridge with the weight processing it was loaded with (none by
default; ``fold_ln``/centering would change both ``h`` and ``W_U``). ``tests/unit/test_values.py``
checks
the identity ``logits == h @ W_U + b_U`` and that ``v`` equals autograd's gradient.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from fmi.errors import ConfigError


def unembedding(
    bridge, *, linear_only: bool = False
) -> tuple[Float[Tensor, "d vocab"], Float[Tensor, " vocab"]]:
    """``(W_U, b_U)`` as the model applies them (``b_U`` is zeros where the model has none).

    ``linear_only`` refuses a model whose logits are not ``h @ W_U + b_U`` (a final logit
    soft-cap, as in Gemma-2), for code that computes the logits itself."""
    cap = getattr(getattr(bridge, "original_model", None), "config", None)
    cap = getattr(cap, "final_logit_softcapping", None)
    if linear_only and cap is not None:
        raise ConfigError(
            f"this model soft-caps its logits (final_logit_softcapping={cap}), so they are not "
            "h @ W_U + b_U and the streamed correction value would be wrong for it"
        )
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


def streamed_values(
    h: Float[Tensor, "batch d"],
    w_u: Float[Tensor, "d vocab"],
    b_u: Float[Tensor, " vocab"],
    targets: Int[Tensor, " batch"],
    *,
    chunk: int = 1024,
    rows: int = 1024,
) -> tuple[Float[Tensor, "batch d"], Float[Tensor, " batch"]]:
    """The values ``W_U[:, t] - W_U @ softmax(h @ W_U + b_U)`` and the entropies of those
    distributions, from the unembedding's input ``h``, without the logits.

    The vocabulary is streamed in blocks of ``chunk`` columns with an online softmax (a running
    max, a running sum of ``exp``, and the running ``exp``-weighted sums of the columns and of the
    logits, rescaled whenever the max grows): each block of ``W_U`` is multiplied twice while it
    is still in cache, so the value costs about what the logits alone cost, and no
    ``[batch, vocab]`` tensor exists. Equal to :func:`values_from_probs` on the full softmax up to
    float rounding (tested). ``rows`` bounds how many statements share one pass over ``W_U``.
    """
    w_t = w_u.T  # [vocab, d]: for an ``nn.Linear`` head, the weight itself (rows contiguous)
    vals, ents = [], []
    for start in range(0, h.shape[0], rows):
        x = h[start : start + rows].float()
        m = torch.full((x.shape[0], 1), float("-inf"), dtype=x.dtype, device=x.device)
        total = torch.zeros_like(m)  # sum of exp(z - m)
        z_sum = torch.zeros_like(m)  # sum of exp(z - m) * z
        acc = torch.zeros_like(x)  # sum of exp(z - m) * W_U[:, j]
        for col in range(0, w_t.shape[0], chunk):
            z = torch.addmm(b_u[col : col + chunk], x, w_u[:, col : col + chunk])
            new_m = torch.maximum(m, z.amax(dim=1, keepdim=True))
            scale = torch.exp(m - new_m)
            e = torch.exp(z - new_m)
            total = total * scale + e.sum(dim=1, keepdim=True)
            z_sum = z_sum * scale + (e * z).sum(dim=1, keepdim=True)
            acc = torch.addmm(acc * scale, e, w_t[col : col + chunk])
            m = new_m
        vals.append(acc / total)
        ents.append((m + total.log() - z_sum / total).squeeze(1))
    return w_u[:, targets].T - torch.cat(vals), torch.cat(ents)
