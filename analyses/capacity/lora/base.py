"""The frozen base as the probe runs it: answer-position logits, parameters without gradient."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from jaxtyping import Float
from torch import Tensor

from fmi.core.forward import answer_only
from fmi.core.prompts import encode


def _last_logits(model, texts: list[str]) -> Float[Tensor, "batch vocab"]:
    """The answer position's logits (the last column of a left-padded batch), in float32."""
    enc = encode(model.tokenizer, texts)
    logits = model.bridge(
        enc.tokens, attention_mask=enc.mask, logits_to_keep=answer_only(enc.tokens)
    )
    return logits[:, -1].float()


@contextlib.contextmanager
def _frozen_base(model) -> Iterator[None]:
    """Every base parameter (bridge and HF) at ``requires_grad=False``; flags restored after."""
    params = {id(p): p for m in (model.bridge, model.hf_model) for p in m.parameters()}
    flags = {k: p.requires_grad for k, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(False)
        yield
    finally:
        for k, p in params.items():
            p.requires_grad_(flags[k])
