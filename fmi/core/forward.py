"""One frozen forward pass over many prompts, in batches, keeping only what is asked for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from fmi.core.prompts import encode
from fmi.core.sites import layer_of

NO_LOGITS = torch.empty(0, dtype=torch.long)
"""``logits_to_keep`` that keeps no position: the model runs to its final norm and skips the
unembedding (Hugging Face slices the positions before ``lm_head``)."""


def answer_only(tokens: Tensor) -> Tensor:
    """``logits_to_keep`` for the answer position alone (the last column of a left-padded batch).

    Not ``logits_to_keep=1``: that slices ``hidden[:, -1:]``, a strided ``[batch, 1, d]`` view
    that ``F.linear`` cannot fold into one matrix product, so the unembedding runs as a batched
    matrix-vector product that reads ``W_U`` once per row. An index tensor gathers a contiguous
    copy first, and the logits are the same (``tests/unit/test_forward.py``). On Gemma-3-270M the
    ``fmi bench`` plain forward of 64 statements went from 3.99 s to 1.86-2.04 s (docs/capacity.md).
    """
    return torch.tensor([tokens.shape[1] - 1], device=tokens.device)


@dataclass
class Collected:
    """Per-prompt activations (unpadded, ``[len_i, d]``) and a reduction of the last logits."""

    acts: dict[str, list[Tensor]] = field(default_factory=dict)
    content: list[Tensor] = field(default_factory=list)  # per prompt: not a special token
    last: list[Tensor] = field(default_factory=list)

    def stack_at(self, site: str, index: list[int]) -> Float[Tensor, "n d"]:
        """Prompt ``i``'s activation at its unpadded token ``index[i]`` (negative: from the end)."""
        return torch.stack([a[i] for a, i in zip(self.acts[site], index, strict=True)])

    def stack_last(self, site: str) -> Float[Tensor, "n d"]:
        """Each prompt's activation at its last token (the answer position)."""
        return self.stack_at(site, [-1] * len(self.acts[site]))


@torch.inference_mode()
def collect(
    bridge,
    tokenizer,
    texts: list[str],
    sites: list[str],
    *,
    batch_size: int = 16,
    reduce_last: Callable[[Tensor, slice], Tensor] | None = None,
) -> Collected:
    """Run ``texts`` through the frozen model, caching ``sites``.

    ``reduce_last(last_logits [b, vocab], rows)`` may turn each batch's answer-position logits
    into something small (a value, a top token) so that full-vocabulary logits are never kept.
    """
    out = Collected(acts={s: [] for s in sites})
    wanted = set(sites)
    layers = [layer for layer in (layer_of(s) for s in sites) if layer is not None]
    # Without logits to reduce, stop after the last block a site needs, or (for a site after
    # the blocks, such as the final norm) skip the unembedding altogether; otherwise compute it at
    # the answer position only (Gemma-3's 262k-token vocabulary dominates a 270M-parameter
    # model's cost when applied at every position).
    limit: dict = {}
    if reduce_last is None:
        limit = (
            {"stop_at_layer": max(layers) + 1}
            if len(layers) == len(sites)
            else {"logits_to_keep": NO_LOGITS}
        )
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        enc = encode(tokenizer, chunk)
        keep = limit or {"logits_to_keep": answer_only(enc.tokens)}
        logits, cache = bridge.run_with_cache(
            enc.tokens, attention_mask=enc.mask, names_filter=lambda n: n in wanted, **keep
        )
        out.content.extend(
            enc.content[row, enc.tokens.shape[1] - n :].clone() for row, n in enumerate(enc.lengths)
        )
        for site in sites:
            act = cache[site]
            for row, n in enumerate(enc.lengths):
                out.acts[site].append(act[row, act.shape[1] - n :].float().clone())
        if reduce_last is not None:
            out.last.append(reduce_last(logits[:, -1].float(), slice(start, start + len(chunk))))
    return out
