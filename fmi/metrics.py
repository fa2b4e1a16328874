"""Greedy exact match, bootstrap confidence intervals, next-token entropy."""

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


def bootstrap_ci(hits: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean of 0/1 ``hits``."""
    if len(hits) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = rng.choice(hits, size=(n_boot, len(hits)), replace=True).mean(axis=1)
    return (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))


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
