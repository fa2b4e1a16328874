"""Keys of the locate-then-edit methods: an MLP output projection's input at a subject's last
token, under the random context prefixes the model writes (ROME's and MEMIT's "context
templates"), and the same input over every token of a batch.

>>> from fmi.models.registry import load_model
>>> model = load_model("tiny-gemma", announce=lambda _: None)
>>> case = EditCase("0", "Paris", "{} is the capital of", "Italy", "France")
>>> keys = subject_keys(model, 0, [case], ["", "A day. "])
>>> keys[0].shape
torch.Size([2, 128])
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from analyses.capacity.lora.adapter import lora_targets
from analyses.edit.cases import EditCase
from analyses.edit.method import Cost
from fmi.core.prompts import Encoded, encode, span_tokens

MEMIT_STARTS = ("The", "Therefore", "Because", "I", "You")
"""MEMIT's prefix starts (github kmeng01/memit, memit/memit_main.py get_context_templates)."""

# (model name, n, lengths, top_k, seed, starts) -> prefixes: made once per model, as the
# papers' CONTEXT_TEMPLATES_CACHE
_PREFIXES: dict[tuple, list[str]] = {}


def edited_linear(model, layer: int) -> torch.nn.Linear:
    """Block ``layer``'s MLP output projection: the Linear ROME and MEMIT edit."""
    return lora_targets(model.hf_model)[layer][1]


class _Stop(Exception):
    """Raised by a key hook once it has what it needs: the rest of the forward is skipped."""


def linear_inputs(
    model, layers: Sequence[int], tokens: Tensor, mask: Tensor, cost: Cost | None = None
) -> dict[int, Tensor]:
    """Each of ``layers``' MLP output projection input ``[batch, pos, d_in]`` for one batch;
    the forward stops at the deepest of them."""
    seen: dict[int, Tensor] = {}
    last = max(layers)
    handles = []

    def hook_for(layer: int):
        def hook(module: torch.nn.Module, inputs: tuple[Tensor, ...]) -> None:
            seen[layer] = inputs[0].detach()
            if layer == last:
                raise _Stop

        return hook

    try:
        for layer in dict.fromkeys(layers):
            linear = edited_linear(model, layer)
            handles.append(linear.register_forward_pre_hook(hook_for(layer)))
        with torch.no_grad(), contextlib.suppress(_Stop):
            model.bridge(tokens, attention_mask=mask)
    finally:
        for handle in handles:
            handle.remove()
    if cost is not None:
        cost.forward += 1
    return seen


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
        k = linear_inputs(model, [layer], enc.tokens, enc.mask)[layer]
        k = k[enc.mask.bool().to(k.device)].float()
        total += (k.T @ k).double().cpu()
        count += k.shape[0]
    return total / max(count, 1)


@dataclass(frozen=True)
class SubjectRow:
    """One prompt with the subject: its token ids and the subject's last-token index."""

    ids: list[int]
    subject_last: int


def subject_row(tokenizer, text: str, subject: str, prefix: str = "") -> SubjectRow:
    """``prefix + text`` tokenized, with the index of the subject's last token (its first
    occurrence after the prefix)."""
    text = prefix + text
    at = text.find(subject, len(prefix))
    if at < 0:
        raise ValueError(f"subject {subject!r} is not in {text!r}")
    last = span_tokens(tokenizer, text, (at, at + len(subject)))[-1]
    return SubjectRow(list(tokenizer(text)["input_ids"]), last)


def context_prefixes(
    model,
    n: int,
    lengths: Sequence[int],
    *,
    top_k: int = 5,
    seed: int = 0,
    starts: Sequence[str] = (),
) -> list[str]:
    """``n`` short texts the model writes, each followed by ``". "``: the random contexts the
    key is averaged over and v*'s NLL is taken on. Split evenly over ``lengths`` (tokens per
    prefix, the start token included, as the papers' ``max_out_len``); sampled with top-k
    ``top_k`` from the tokenizer's BOS token (ROME) or from ``starts`` in turn (MEMIT: the
    start word is kept). Seeded, made once per model and arguments; braces become spaces."""
    key = (model.name, n, tuple(lengths), top_k, seed, tuple(starts))
    if key in _PREFIXES:
        return list(_PREFIXES[key])
    tok = model.tokenizer
    out: list[str] = []
    counts = [n // len(lengths) + (i < n % len(lengths)) for i in range(len(lengths))]
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for length, count in zip(lengths, counts, strict=True):
            if not count:
                continue
            if starts:
                heads = [starts[i % len(starts)] for i in range(count)]
                enc = encode(tok, heads)
                tokens, mask = enc.tokens, enc.mask
                new = max(1, length - 1)  # the start word is one token
            else:
                first = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
                tokens = torch.full((count, 1), int(first), dtype=torch.long)
                mask = torch.ones_like(tokens)
                heads, new = [""] * count, length - 1
            seq = model.bridge.generate(
                tokens,
                attention_mask=mask,
                max_new_tokens=new,
                do_sample=True,
                top_k=top_k,
                stop_at_eos=False,
                verbose=False,
            )
            for row, head in enumerate(heads):
                text = tok.decode(seq[row, tokens.shape[1] :], skip_special_tokens=True)
                text = (head + text).replace("{", " ").replace("}", " ").replace("\n", " ")
                out.append(text.strip() + ". ")
    _PREFIXES[key] = out
    return list(out)


def subject_keys(
    model,
    layer: int,
    cases: Sequence[EditCase],
    prefixes: Sequence[str] = ("",),
    cost: Cost | None = None,
    batch_rows: int = 64,
) -> list[Tensor]:
    """Per case, ``[len(prefixes), d_in]``: block ``layer``'s MLP output projection input at
    the subject's last token of ``prefix + case.rewrite``, for each of ``prefixes`` in order
    (put ``""`` first for the bare prompt). One stopped forward per ``batch_rows`` rows."""
    tok = model.tokenizer
    texts = [(c, p) for c in cases for p in prefixes]
    picked: list[Tensor] = []
    for start in range(0, len(texts), batch_rows):
        chunk = texts[start : start + batch_rows]
        rows = [subject_row(tok, c.rewrite, c.subject, p) for c, p in chunk]
        enc = encode(tok, [p + c.rewrite for c, p in chunk])
        k = linear_inputs(model, [layer], enc.tokens, enc.mask, cost)[layer]
        width = enc.tokens.shape[1]
        picked.extend(k[i, width - len(r.ids) + r.subject_last].float() for i, r in enumerate(rows))
    n = len(prefixes)
    return [torch.stack(picked[i * n : (i + 1) * n]) for i in range(len(cases))]
