"""Label checks: one token each for first-token memories; at least one token each for memories
written with answer sequences (``RecallConfig.end``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fmi.errors import LabelError
from fmi.experiments.tasks import KINDS, Task


def label_targets(task: Task) -> dict[str, str]:
    """Every distinct label target (e.g. ``" red"``) in ``task``, mapped to its label."""
    targets: dict[str, str] = {}
    for split in (task.train, *task.splits):
        for label in split.labels():
            for kind in KINDS:
                targets.setdefault(split.templates.target(kind, label), label)
    return targets


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (HF tokenizer or any look-alike)."""
    encoded = tokenizer(text, add_special_tokens=False)
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded.input_ids
    return list(ids)


def _token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Readable pieces for ``ids``: decoded one by one, else token names, else the ids."""
    if hasattr(tokenizer, "decode"):
        return [tokenizer.decode([i]) for i in ids]
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        return [str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]
    return [str(i) for i in ids]


def check_labels(task: Task, tokenizer: Any, *, multi_token: bool = False) -> None:
    """Raise ``LabelError`` unless every label target encodes to exactly one token (with
    ``multi_token``: to at least one token).

    ``tokenizer(text, add_special_tokens=False)`` must return ``input_ids``; the message names
    each failing label and its pieces, e.g. ``label 'turquoise' is not one token for this
    tokenizer: ' turquoise' -> [' turqu', 'oise']``.
    """
    problems = []
    for target, label in label_targets(task).items():
        ids = _token_ids(tokenizer, target)
        if multi_token and not ids:
            problems.append(f"label {label!r} is no token at all for this tokenizer")
        elif not multi_token and len(ids) != 1:
            pieces = _token_strings(tokenizer, ids)
            problems.append(
                f"label {label!r} is not one token for this tokenizer: {target!r} -> {pieces!r}"
                " (answers of several tokens need an end value: --end '\\n')"
            )
    if problems:
        raise LabelError("; ".join(problems))
