"""Tokenizing prompts: left-padded batches, and which tokens a text span covers.

Prompts are tokenized by the model's own Hugging Face tokenizer with its default special
tokens (Gemma-3 prepends ``<bos>``; Pythia and SmolLM2 prepend nothing), exactly as the
model would see them outside fmi.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor


@dataclass(frozen=True)
class Encoded:
    """A left-padded batch: the last column is every prompt's last token (the answer position)."""

    tokens: Int[Tensor, "batch pos"]
    mask: Int[Tensor, "batch pos"]
    content: Bool[Tensor, "batch pos"]  # real, non-special tokens (where queries may look)
    lengths: tuple[int, ...]

    @property
    def pad(self) -> Int[Tensor, " batch"]:
        """Left padding per row: unpadded index ``i`` sits at column ``pad + i``."""
        return self.tokens.shape[1] - torch.tensor(self.lengths)


def encode(tokenizer, texts: list[str]) -> Encoded:
    """Tokenize ``texts`` and left-pad them into one batch."""
    if not texts:
        raise ValueError("encode needs at least one text")
    ids = [tokenizer(t)["input_ids"] for t in texts]
    special = set(tokenizer.all_special_ids)
    width = max(len(x) for x in ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    content = torch.zeros((len(ids), width), dtype=torch.bool)
    for row, seq in enumerate(ids):
        start = width - len(seq)
        tokens[row, start:] = torch.tensor(seq)
        mask[row, start:] = 1
        content[row, start:] = torch.tensor([t not in special for t in seq])
    return Encoded(tokens, mask, content, tuple(len(x) for x in ids))


def field_spans(template: str, values: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Format ``template`` and return the text with the character span of each field."""
    out: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    pos = 0
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        pos += len(literal)
        if field is None:
            continue
        text = values[field]
        spans[field] = (pos, pos + len(text))
        out.append(text)
        pos += len(text)
    return "".join(out), spans


def span_tokens(tokenizer, text: str, span: tuple[int, int]) -> list[int]:
    """Unpadded indices of the tokens of ``text`` that overlap the character ``span``."""
    enc = tokenizer(text, return_offsets_mapping=True)
    lo, hi = span
    hits = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < hi and b > lo]
    if not hits:
        raise ValueError(f"no token of {text!r} covers characters {lo}..{hi}")
    return hits


def prompt_spans(templates, kind: str, binding) -> tuple[str, dict[str, tuple[int, int]]]:
    """``templates.prompt(kind, binding)`` with the character span of each field in it.

    The read prompt names ``binding.read_context``; write and plain name ``binding.context``
    (plain has no context field). The text equals ``templates.prompt(kind, binding)``.
    """
    template = getattr(templates, kind)
    prefix = template[: template.rindex("{label}")].rstrip()
    context = binding.read_context if kind == "read" else binding.context
    return field_spans(prefix, {"context": context, "symbol": binding.symbol})
