"""The two methods that change nothing in the model: ``none`` (the unedited model, every other
method's reference) and ``in_context`` (the new facts stated before each prompt).

``TooLong`` is :class:`analyses.edit.prefix_cache.TooLong`, re-exported.

>>> from analyses.edit.cases import EditCase
>>> case = EditCase("0", "Rome", "{} is the capital of", "France", "Italy")
>>> stated([case])
'New fact: Rome is the capital of France.\\n'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from analyses.edit.cases import EditCase, answer_text
from analyses.edit.method import Cost, Held
from analyses.edit.prefix_cache import TooLong, context_length


class NoEdit:
    """The unedited model."""

    name = "none"

    @contextmanager
    def edited(self, model: Any, cases: Sequence[EditCase], cost: Cost) -> Iterator[Held]:
        yield Held()

    def settings(self) -> dict[str, Any]:
        return {}


def stated(cases: Sequence[EditCase]) -> str:
    """The facts as text, one ``New fact: ...`` line each, in the order written."""
    return "".join(f"New fact: {c.rewrite}{answer_text(c.target_new)}.\n" for c in cases)


ROOM = 64
"""Tokens kept free after the prefix when the budget is the model's context: a probe and its
greedy tokens."""


@dataclass
class InContext:
    """Every held fact stated before every prompt (ROME's and EasyEdit's in-context baseline,
    without demonstrations). Writing costs nothing. The facts are one prefix,
    :attr:`Held.prefix`: a scorer decodes every probe after its keys and values, computed once
    (:func:`analyses.edit.prefix_cache.decode_with_prefix`). A prefix over the budget is refused
    with :class:`TooLong`: ``max_tokens`` tokens, or with 0 the model's context
    (:func:`analyses.edit.prefix_cache.context_length`) less :data:`ROOM`."""

    max_tokens: int = 0
    name: str = "in_context"

    def budget(self, model: Any) -> int:
        """The longest prefix allowed, in tokens."""
        return self.max_tokens or context_length(model) - ROOM

    @contextmanager
    def edited(self, model: Any, cases: Sequence[EditCase], cost: Cost) -> Iterator[Held]:
        prefix = stated(cases)
        n, budget = len(model.tokenizer(prefix)["input_ids"]), self.budget(model)
        if n > budget:
            raise TooLong(
                f"{len(cases)} stated facts take {n} tokens, over the prefix budget of {budget}"
            )
        yield Held(prompts=lambda texts: [prefix + t for t in texts], prefix=prefix)

    def settings(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens or "the model's context less 64",
            "format": "New fact: <rewrite> <target_new>.\\n",
            "prefix": "one shared prefix; its keys and values computed once per group",
        }
