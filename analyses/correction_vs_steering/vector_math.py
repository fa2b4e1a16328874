"""The vector arithmetic of the correction-vs-steering analysis: cosines, the final norm's
view of a direction, the logit lens of many vectors, and a rate with its interval."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from analyses.probing import wilson_interval


def cosine(a: Float[Tensor, "*batch d"], b: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch"]:
    """Cosine similarity along the last axis (broadcasting), clipped to [-1, 1]; 0 for a zero
    vector."""
    a, b = torch.broadcast_tensors(a.double(), b.double())
    num = (a * b).sum(-1)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    out = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))
    return out.clamp(-1.0, 1.0).float()


@torch.inference_mode()
def through_final_norm(bridge, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
    """``ln_final(x) - ln_final(0)``: a residual direction as the final norm maps it.

    For Gemma-3's RMSNorm that is ``x / rms(x) * (1 + w)``; for LayerNorm ``(x - mean x) / std(x)
    * w`` (the bias cancels). Up to one positive scalar per vector this is the norm's
    per-dimension scale, which is all a cosine or a top-k sees.
    """
    flat = x.reshape(-1, x.shape[-1]).float()
    zero = torch.zeros(1, x.shape[-1])
    return (bridge.ln_final(flat) - bridge.ln_final(zero)).reshape(x.shape)


def lens_top(
    vectors: Float[Tensor, "m d"], w_u: Float[Tensor, "d vocab"], targets: Int[Tensor, " m"], k: int
) -> tuple[Int[Tensor, "m k"], Int[Tensor, " m"]]:
    """Top-``k`` token ids of ``vectors @ W_U`` and the rank of each row's target (0 = top).

    Rows go through in small chunks so that only a few vocabulary-sized rows exist at once.
    """
    tops, ranks = [], []
    for start in range(0, vectors.shape[0], 16):
        logits = vectors[start : start + 16].float() @ w_u
        t = targets[start : start + 16]
        tops.append(logits.topk(k, dim=-1).indices)
        own = logits.gather(1, t[:, None])
        ranks.append((logits > own).sum(-1))
    return torch.cat(tops), torch.cat(ranks)


def rate_ci(hits: Bool[Tensor, " n"]) -> tuple[float, float, float]:
    """Mean of 0/1 ``hits`` and its 95% Wilson interval (NaNs when there are none)."""
    n = int(hits.numel())
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    k = int(hits.sum())
    low, high = wilson_interval(k, n)
    return k / n, low, high
