"""The two methods that change nothing in the model: ``none`` (the unedited model, every other
method's reference) and ``in_context`` (the new facts stated before each prompt).

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


class TooLong(Exception):
    """The stated facts exceed the prefix budget: the cell is not run (the reason says why)."""


@dataclass
class InContext:
    """Every held fact stated before every prompt (ROME's and EasyEdit's in-context baseline,
    without demonstrations). Writing costs nothing; a prefix over ``max_tokens`` tokens is
    refused with :class:`TooLong`."""

    max_tokens: int = 512
    name: str = "in_context"

    @contextmanager
    def edited(self, model: Any, cases: Sequence[EditCase], cost: Cost) -> Iterator[Held]:
        prefix = stated(cases)
        n = len(model.tokenizer(prefix)["input_ids"])
        if n > self.max_tokens:
            raise TooLong(
                f"{len(cases)} stated facts take {n} tokens, over the prefix budget of "
                f"{self.max_tokens}"
            )
        yield Held(prompts=lambda texts: [prefix + t for t in texts])

    def settings(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "format": "New fact: <rewrite> <target_new>.\\n"}
