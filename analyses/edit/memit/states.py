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


def through_post_norm(norm: torch.nn.Module, y: Tensor, r: Tensor) -> Tensor:
    """The change of the down_proj outputs ``y`` ``[n, d]`` that moves the RMS-normalised output
    ``o = norm(y)`` by ``r``: ``y' - y`` with ``y' = rms(y) (o + r) / (1 + w)`` (Gemma-3's
    ``x / rms(x) * (1 + w)``; the norm ignores the scale, and ``rms(y)`` gives ``y' = y`` at
    ``r = 0``). Components where ``|1 + w| < 1e-3`` are left as they are."""
    y64, r64 = y.double(), r.double()
    weight: Tensor = getattr(norm, "weight")  # noqa: B009 (a Module attribute, typed here)
    gain = 1.0 + weight.detach().double().to(y64.device)
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
    rms = (y64.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    o = y64 / rms * gain
    ok = gain.abs() >= 1e-3
    target = torch.where(ok, rms * (o + r64) / torch.where(ok, gain, 1.0), y64)
    return target - y64
