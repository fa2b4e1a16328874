"""Greedy exact match (first word, whole answer, answer prefix), rates, entropy (intervals:
:mod:`fmi.experiments.intervals`)."""

from __future__ import annotations

import re

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

_WORD = re.compile(r"\s*([^\W_]+)")


def answer_word(tokenizer, new_tokens: tuple[int, ...]) -> str:
    """The first word of a greedy continuation ('' when it starts with no word)."""
    m = _WORD.match(tokenizer.decode(list(new_tokens), skip_special_tokens=True))
    return m.group(1) if m else ""


def answer_match(tokenizer, new_tokens: tuple[int, ...], answer: str) -> bool:
    """Whether a greedy continuation starts with the whole ``answer``, word-bounded.

    Leading whitespace of both is ignored; the character after the answer must not be a letter
    or digit (or the text must end there). For a one-word answer this is
    ``answer_word(...) == answer``: `` pig`` then ``let`` is a miss, ``\\n\\nred`` a hit.

    >>> from fmi.models.registry import load_model
    >>> tok = load_model("tiny-neox", announce=lambda _: None).tokenizer
    >>> answer_match(tok, tuple(tok(" New York.")["input_ids"]), " New York")
    True
    >>> answer_match(tok, tuple(tok(" New Yorker")["input_ids"]), " New York")
    False
    """
    return text_matches(tokenizer.decode(list(new_tokens), skip_special_tokens=True), answer)


def text_matches(text: str, answer: str) -> bool:
    """:func:`answer_match` on decoded text.

    >>> text_matches("\\n\\nNew York, then", " New York"), text_matches(" piglet", "pig")
    (True, False)
    """
    text, want = text.lstrip(), answer.strip()
    if not want or not text.startswith(want):
        return False
    rest = text[len(want) :]
    return not rest or not rest[0].isalnum()


def answer_prefix(new_tokens: tuple[int, ...], answer_tokens: tuple[int, ...]) -> float:
    """The fraction of ``answer_tokens`` generated, in order, before the first departure.

    >>> answer_prefix((5, 6, 9), (5, 6, 7, 8))
    0.5
    """
    if not answer_tokens:
        raise ValueError("answer_prefix needs at least one answer token")
    n = 0
    for got, want in zip(new_tokens, answer_tokens, strict=False):
        if got != want:
            break
        n += 1
    return n / len(answer_tokens)


def rate(hits: list[bool]) -> float:
    return float(np.mean(hits)) if hits else float("nan")


def next_token_entropy(logits: Float[Tensor, "n vocab"]) -> Float[Tensor, " n"]:
    """Entropy (nats) of each row's next-token distribution ``softmax(logits)``."""
    return distribution(logits)[1]


def distribution(
    logits: Float[Tensor, "n vocab"],
) -> tuple[Float[Tensor, "n vocab"], Float[Tensor, " n"]]:
    """``softmax(logits)`` and its entropy (nats), from one ``log_softmax``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    probs = logp.exp()
    return probs, -(probs * logp).sum(-1)
