"""ROME's keys: the edited Linear's input at a subject's last token, and their covariance."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from analyses.capacity.lora.adapter import lora_targets
from analyses.edit.cases import EditCase
from analyses.edit.method import Cost
from analyses.edit.rome.config import RomeConfig
from fmi.core.prompts import Encoded, encode, span_tokens

STARTS = ("The", "In the", "It is", "One of the", "A new", "When", "There are", "This")


def edited_linear(model, layer: int) -> torch.nn.Linear:
    """Block ``layer``'s MLP output projection: the Linear ROME edits."""
    return lora_targets(model.hf_model)[layer][1]


def neutral_text(
    model, n_tokens: int, seed: int = 0, *, new_tokens: int = 64, repeats: int = 4
) -> list[str]:
    """About ``n_tokens`` tokens of text the model writes itself from neutral starts (sampled,
    seeded; the global torch RNG is left as it was): the offline stand-in for ROME's Wikipedia
    sample. Each round samples ``repeats`` continuations of every start of ``STARTS`` in one
    batch, up to ``new_tokens`` tokens each (fewer when fewer are asked for)."""
    starts = [s for s in STARTS for _ in range(repeats)]
    new_tokens = max(1, min(new_tokens, -(-n_tokens // len(starts))))
    texts: list[str] = []
    total = 0
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        while total < n_tokens:
            enc = encode(model.tokenizer, starts)
            out = model.bridge.generate(
                enc.tokens,
                attention_mask=enc.mask,
                max_new_tokens=new_tokens,
                do_sample=True,
                stop_at_eos=False,
                verbose=False,
            )
            width = enc.tokens.shape[1]
            for row, start in enumerate(starts):
                text = start + model.tokenizer.decode(out[row, width:], skip_special_tokens=True)
                texts.append(text)
                total += enc.lengths[row] + new_tokens
    return texts


class _Stop(Exception):
    """Raised by a key hook once it has what it needs: the rest of the forward is skipped."""


def _keys(model, layer: int, enc: Encoded, cost: Cost | None = None) -> Tensor:
    """The edited Linear's input ``[batch, pos, d_in]`` for ``enc`` (the forward stops there)."""
    seen: list[Tensor] = []

    def hook(module: torch.nn.Module, inputs: tuple[Tensor, ...]) -> None:
        seen.append(inputs[0].detach())
        raise _Stop

    handle = edited_linear(model, layer).register_forward_pre_hook(hook)
    try:
        with torch.no_grad(), contextlib.suppress(_Stop):
            model.bridge(enc.tokens, attention_mask=enc.mask)
    finally:
        handle.remove()
    if cost is not None:
        cost.forward += 1
    return seen[0]


def key_covariance(
    model, layer: int, texts: Sequence[str] | Encoded, batch_size: int = 8
) -> Tensor:
    """``E[k kᵀ]`` ``[d_in, d_in]`` (float64, uncentred) of block ``layer``'s MLP output
    projection input ``k`` over every non-pad token of ``texts`` (or one encoded batch)."""
    batches = (
        [texts]
        if isinstance(texts, Encoded)
        else [
            encode(model.tokenizer, list(texts[i : i + batch_size]))
            for i in range(0, len(texts), batch_size)
        ]
    )
    d_in = edited_linear(model, layer).in_features
    total = torch.zeros(d_in, d_in, dtype=torch.float64)
    count = 0
    for enc in batches:
        k = _keys(model, layer, enc)[enc.mask.bool().to(enc.tokens.device)].float()
        total += (k.T @ k).double().cpu()
        count += k.shape[0]
    return total / max(count, 1)


@dataclass(frozen=True)
class SubjectRow:
    """One prompt with the subject: its token ids and the subject's last-token index."""

    ids: list[int]
    subject_last: int


def subject_row(tokenizer, text: str, subject: str, prefix: str = "") -> SubjectRow:
    text = prefix + text
    at = text.find(subject, len(prefix))
    if at < 0:
        raise ValueError(f"subject {subject!r} is not in {text!r}")
    last = span_tokens(tokenizer, text, (at, at + len(subject)))[-1]
    return SubjectRow(list(tokenizer(text)["input_ids"]), last)


def context_prefixes(model, cfg: RomeConfig) -> list[str]:
    """``""`` and ``cfg.context_prefixes`` short generated prefixes (ROME's random contexts)."""
    if not cfg.context_prefixes:
        return [""]
    texts = neutral_text(model, 1, cfg.seed + 1, new_tokens=8, repeats=1)
    return [""] + [t.strip() + ". " for t in (texts * cfg.context_prefixes)[: cfg.context_prefixes]]


def subject_key(
    model, layer: int, case: EditCase, prefixes: Sequence[str] = ("",), cost: Cost | None = None
) -> Tensor:
    """The key ``[d_in]``: block ``layer``'s MLP output projection input at the subject's last
    token of ``case.rewrite``, averaged over ``prefix + rewrite`` for each of ``prefixes``."""
    rows = [subject_row(model.tokenizer, case.rewrite, case.subject, p) for p in prefixes]
    enc = encode(model.tokenizer, [p + case.rewrite for p in prefixes])
    k = _keys(model, layer, enc, cost)
    width = enc.tokens.shape[1]
    picked = [k[i, width - len(r.ids) + r.subject_last] for i, r in enumerate(rows)]
    return torch.stack(picked).float().mean(0)
