"""What MEMIT reads between its writes: the residual at each edit's subject, the keys averaged
as its code averages them, and (Gemma-3) the down_proj output that moves the normalised MLP
output by a residual.

>>> from fmi.models.registry import load_model
>>> from analyses.edit.cases import EditCase
>>> model = load_model("tiny-gemma", announce=lambda _: None)
>>> case = EditCase("0", "Paris", "{} is the capital of", "Italy", "France")
>>> subject_residuals(model, 1, [case]).shape
torch.Size([1, 64])
>>> post_norm(model, 0) is not None, post_norm(load_model("tiny-neox", announce=lambda _: None), 0)
(True, None)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor

from analyses.edit.cases import EditCase
from analyses.edit.method import Cost
from analyses.edit.rome.keys import _Stop, subject_row
from fmi.core.prompts import encode
from fmi.core.sites import resid


def subject_residuals(
    model, layer: int, cases: Sequence[EditCase], cost: Cost | None = None, batch_rows: int = 64
) -> Tensor:
    """``[n, d_model]``: block ``layer``'s residual output at the subject's last token of each
    bare rewrite prompt (one forward per ``batch_rows`` cases, stopped there)."""
    tok = model.tokenizer
    out: list[Tensor] = []
    for start in range(0, len(cases), batch_rows):
        chunk = cases[start : start + batch_rows]
        rows = [subject_row(tok, c.rewrite, c.subject) for c in chunk]
        enc = encode(tok, [c.rewrite for c in chunk])
        seen: list[Tensor] = []

        def hook(act: Tensor, hook: object, seen: list[Tensor] = seen) -> Tensor:
            seen.append(act.detach())
            raise _Stop

        with (
            torch.no_grad(),
            contextlib.suppress(_Stop),
            model.bridge.hooks(fwd_hooks=[(resid(layer), hook)]),
        ):
            model.bridge(enc.tokens, attention_mask=enc.mask)
        if cost is not None:
            cost.forward += 1
        width = enc.tokens.shape[1]
        out.extend(
            seen[0][i, width - len(r.ids) + r.subject_last].float() for i, r in enumerate(rows)
        )
    return torch.stack(out)


def memit_keys(per_case: Sequence[Tensor]) -> Tensor:
    """``[n, d_in]``: each case's key as MEMIT's ``compute_ks`` averages it, the mean of the
    bare prompt's key (row 0) and the mean over the context prefixes' (rows 1:)."""
    return torch.stack([k[0] if len(k) == 1 else (k[0] + k[1:].mean(0)) / 2 for k in per_case])


def post_norm(model, layer: int) -> torch.nn.Module | None:
    """Block ``layer``'s norm after the MLP (Gemma-3's ``post_feedforward_layernorm``, its
    Hugging Face module), or None where the MLP's output joins the residual as is."""
    blocks = model.bridge.blocks
    block = blocks[layer]
    inner = getattr(block, "_original_component", block)
    norm = getattr(inner, "post_feedforward_layernorm", None)
    if norm is None:
        return None
    return getattr(norm, "_original_component", norm)


def _rms_norm(x: Tensor, gain: Tensor, eps: float) -> Tensor:
    """Gemma-3's RMSNorm ``x / rms(x) * gain`` (``gain = 1 + w``), in ``x``'s dtype."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain


def nearest_on_norm_surface(gain: Tensor, target: Tensor, iters: int = 200) -> Tensor:
    """Per row of ``target`` ``[n, d]``, the ``u`` with ``mean(u²) = 1`` that minimises
    ``||gain * u - target||²``: every output an RMSNorm can give is ``gain * u`` for such a
    ``u``. The minimiser is ``u = gain t / (gain² + λ)`` with the multiplier ``λ >
    -min(gain²)`` found by bisection (geometric, on ``λ + min(gain²)``) so that ``mean(u²) =
    1``; in the degenerate case where that norm is never reached, the rest is put on the
    smallest gain's axis. Float64.

    >>> u = nearest_on_norm_surface(torch.ones(2), torch.tensor([[3.0, 4.0]]))
    >>> [round(float(v), 6) for v in u[0] / u[0].norm()]   # the target's direction
    [0.6, 0.8]
    """
    g = gain.double()
    t = target.double()
    d = t.shape[-1]
    g2 = g.pow(2)
    g2min = g2.min()
    gt = g * t

    def sq_norm(s: Tensor) -> Tensor:  # mean(u²) at λ = s - g2min, s [n, 1]
        return (gt / (g2 - g2min + s)).pow(2).mean(-1, keepdim=True)

    scale = float(gt.abs().max()) + float(g2.max()) + 1e-300
    lo = torch.full((t.shape[0], 1), 1e-30 * scale, dtype=torch.float64)
    hi = torch.full_like(lo, 2.0 * scale)
    for _ in range(iters):
        mid = (lo * hi).sqrt()
        big = sq_norm(mid) > 1.0
        lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
    s = (lo * hi).sqrt()
    u = gt / (g2 - g2min + s)
    short = (1.0 - u.pow(2).mean(-1, keepdim=True)).clamp_min(0.0)
    axis = torch.nn.functional.one_hot(g2.argmin(), d).double()
    return u + (short * d).sqrt() * axis


def through_post_norm(norm: torch.nn.Module, y: Tensor, r: Tensor) -> Tensor:
    """The change ``dy`` of the down_proj outputs ``y`` ``[n, d]`` whose normalised output
    ``norm(y + dy)`` comes closest (least squares) to ``o + r``, ``o = norm(y)``. The norm's
    outputs lie on the surface ``gain * u``, ``mean(u²) = 1``
    (:func:`nearest_on_norm_surface`); of the rays ``c u`` that give the nearest one, ``dy``
    takes the point nearest ``y`` (``c = <u, y> / <u, u>``), so ``r = 0`` gives ``dy = 0``.
    The first-order preimage ``rms(y) (o + r) / gain - y`` agrees where ``o + r`` is
    reachable, and breaks where ``r`` asks for much in small-gain components: their
    ``r / gain`` swamps the rms and shrinks the whole output. ``eps`` is neglected (exact for
    ``rms(y)² >> eps``)."""
    weight: Tensor = getattr(norm, "weight")  # noqa: B009 (a Module attribute, typed here)
    y64 = y.detach().double()
    gain = 1.0 + weight.detach().double().to(y64.device)
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
    target = _rms_norm(y64, gain, eps) + r.detach().double().to(y64.device)
    u = nearest_on_norm_surface(gain.cpu(), target.cpu()).to(y64.device)
    c = (u * y64).sum(-1, keepdim=True) / u.pow(2).sum(-1, keepdim=True)
    rms = (y64.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    c = torch.where(c > 0, c, rms)
    out = c * u - y64
    return torch.where(r.abs().amax(-1, keepdim=True).to(y64.device) > 0, out, 0.0)
