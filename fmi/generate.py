"""Greedy generation with a vector added at each prompt's answer position."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from fmi.hooks import add_at_positions
from fmi.metrics import next_token_entropy
from fmi.prompts import encode


@dataclass(frozen=True)
class Generated:
    """Greedy continuations (new token ids) and the first step's pick among given labels."""

    tokens: list[tuple[int, ...]]
    label_pick: list[int]  # index into ``label_ids`` of the best-scoring label at step one
    entropy: list[float]  # the first step's next-token entropy (nats), injection included


@torch.inference_mode()
def greedy(
    model,
    texts: list[str],
    *,
    site: str,
    deltas: Float[Tensor, "n d"] | None = None,
    active: Bool[Tensor, " n"] | None = None,
    label_ids: Int[Tensor, " k"] | None = None,
    max_new_tokens: int = 3,
    batch_size: int = 16,
) -> Generated:
    """Greedy-decode ``texts``; where ``active``, add ``deltas[i]`` at ``site``, last prompt token.

    Prompts are left-padded, so the answer position is the last prompt column of every row; the
    hook counts absolute positions, so KV-cached steps after the prompt are left untouched.
    """
    tokens: list[tuple[int, ...]] = []
    picks: list[int] = []
    entropy: list[float] = []
    bridge = model.bridge
    for start in range(0, len(texts), batch_size):
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        n, width = enc.tokens.shape
        hooks = []
        if deltas is not None:
            on = active[start : start + n] if active is not None else None
            if on is None or bool(on.any()):
                pos = torch.full((n,), width - 1)
                hooks.append((site, add_at_positions(deltas[start : start + n], pos, on)))
        with bridge.hooks(fwd_hooks=hooks):
            out = bridge.generate(
                enc.tokens,
                attention_mask=enc.mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                stop_at_eos=False,
                output_logits=True,
                verbose=False,
                logits_to_keep=1,  # the prompt step needs the answer position's logits only
            )
        tokens.extend(tuple(row[width:].tolist()) for row in out.sequences)
        first = out.logits[0].float()
        entropy.extend(next_token_entropy(first).tolist())
        if label_ids is not None:
            picks.extend(first[:, label_ids].argmax(-1).tolist())
    return Generated(tokens, picks, entropy)
