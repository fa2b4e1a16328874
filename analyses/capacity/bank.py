"""Banks of any size: fresh invented words, each bound to different labels in two contexts."""

from __future__ import annotations

import random

from fmi.experiments.builtin_tasks import (
    TRAIN_CONTEXTS,
    conflicting_bank,
    excluded_words,
    label_categories,
)
from fmi.experiments.nonce import nonce_words
from fmi.experiments.tasks import Binding


def capacity_bindings(n: int, seed: int, skip: int) -> list[Binding]:
    """``n`` bindings: ``n // 2`` invented words in ``game A`` and ``game B``, word by word.

    The words follow the first ``skip`` words of ``nonce_words(..., seed)`` (the built-in task's
    training and evaluation words), so none was seen while fitting. A prefix of an even length
    ``m`` is exactly ``capacity_bindings(m, seed, skip)``: word ``i`` keeps its labels.
    """
    words = nonce_words(skip + n // 2, seed, exclude=excluded_words())[skip:]
    rng = random.Random(seed)
    categories = label_categories(rng, words)
    out: list[Binding] = []
    for word in words:  # one private stream per word, so that a longer bank extends a shorter
        out += conflicting_bank(
            random.Random(f"{seed}:{word}"), {word: categories[word]}, TRAIN_CONTEXTS
        )
    return out
