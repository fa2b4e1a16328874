"""Prepending a soft prefix: ``K`` placeholder ids in each text, overwritten at ``hook_embed``."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from fmi.core.hooks import HookFn
from fmi.core.prompts import Encoded

SITE = "hook_embed"
"""Where the prefix is written: the token embeddings as the first block receives them."""


def insert_prefix(ids: list[int], k: int, placeholder: int, lead: int) -> list[int]:
    """``ids`` with ``k`` copies of ``placeholder`` after its first ``lead`` ids (the ``<bos>``).

    >>> insert_prefix([2, 10, 11], 3, 0, lead=1)
    [2, 0, 0, 0, 10, 11]
    >>> insert_prefix([10, 11], 2, 7, lead=0)
    [7, 7, 10, 11]
    """
    if k < 1:
        raise ValueError(f"a prefix needs at least one token, got k={k}")
    return [*ids[:lead], *([placeholder] * k), *ids[lead:]]


def prefix_columns(starts: Int[Tensor, " batch"], k: int) -> Int[Tensor, "batch k"]:
    """The columns of each row's ``k`` prefix positions, the first at ``starts[b]``.

    >>> prefix_columns(torch.tensor([0, 2]), 3)
    tensor([[0, 1, 2],
            [2, 3, 4]])
    """
    return starts[:, None] + torch.arange(k)[None, :]


class PrefixTokenizer:
    """A tokenizer that inserts ``k`` placeholder ids before each text's first real token.

    It answers what :func:`fmi.core.prompts.encode` asks of a tokenizer (``tok(text)["input_ids"]``,
    ``all_special_ids``, ``pad_token_id``) and passes everything else (``decode``) through, so
    the left padding, the mask and the answer column are ``encode``'s own. The placeholder is
    the id ``encode`` pads with; :func:`prefix_starts` finds the prefix in an encoded batch.
    """

    def __init__(self, tokenizer, k: int) -> None:
        if k < 1:
            raise ValueError(f"a prefix needs at least one token, got k={k}")
        self.inner, self.k = tokenizer, k
        pad = tokenizer.pad_token_id
        self.placeholder = int(pad) if pad is not None else 0
        self.all_special_ids = tokenizer.all_special_ids
        self.pad_token_id = tokenizer.pad_token_id

    def lead(self, ids: list[int]) -> int:
        """1 when ``ids`` open with the tokenizer's own ``<bos>``, else 0."""
        bos = getattr(self.inner, "bos_token_id", None)
        return int(bos is not None and len(ids) > 0 and ids[0] == bos)

    def __call__(self, text: str, **kwargs: Any) -> dict[str, list[int]]:
        ids = list(self.inner(text, **kwargs)["input_ids"])
        return {"input_ids": insert_prefix(ids, self.k, self.placeholder, self.lead(ids))}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def prefix_starts(ptok: PrefixTokenizer, texts: list[str], enc: Encoded) -> Int[Tensor, " n"]:
    """The column of each row's first prefix position in ``enc`` (``encode(ptok, texts)``)."""
    leads = torch.tensor([ptok.lead(list(ptok.inner(t)["input_ids"])) for t in texts])
    return enc.pad + leads


def prefix_hook(prefix: Float[Tensor, "k d"], starts: Int[Tensor, " batch"]) -> HookFn:
    """Overwrite row ``b``'s activations at columns ``starts[b] .. starts[b] + k - 1`` by the
    ``k`` prefix vectors (every row gets the same prefix); nothing else changes.

    Stateful like :func:`fmi.core.hooks.add_at_positions`: it counts absolute positions across
    calls, so KV-cached generation steps (``[batch, 1, d]``, after the prompt) pass through.
    Gradients flow into ``prefix``. Use a fresh hook per forward or generation.
    """
    if prefix.ndim != 2 or prefix.shape[0] < 1:
        raise ValueError(f"prefix must be [k >= 1, d], got {tuple(prefix.shape)}")
    cols = prefix_columns(starts, prefix.shape[0])
    state = {"offset": 0}

    def hook(act: Tensor, hook: object) -> Tensor:
        seq, offset = act.shape[1], state["offset"]
        state["offset"] = offset + seq
        local = cols.to(act.device) - offset
        inside = (local >= 0) & (local < seq)
        if not bool(inside.any()):
            return act
        if not bool(inside.all()):
            raise ValueError("a prefix straddles two calls of its hook (a chunked prompt?)")
        rows = torch.arange(act.shape[0], device=act.device)[:, None].expand_as(local)
        out = act.clone()
        out[rows, local] = prefix.to(act.device, act.dtype).expand(act.shape[0], -1, -1)
        return out

    return hook
