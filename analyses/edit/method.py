"""What an editing method is to the runner: a way to hold a list of edits while prompts are
scored, and the cost of writing them.

Every method is scored by the same path (:mod:`analyses.edit.score`): greedy generation through
:func:`fmi.core.generate.decode` with the method's prompt prefix and hooks, inside
``method.edited(model, cases, cost)``. A method that changes weights (ROME, LoRA merged) changes
them inside that context manager and restores them bit for bit on exit, also after an
exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from analyses.edit.cases import EditCase
from fmi.core.generate import HooksFor


@dataclass
class Cost:
    """What writing edits cost: wall seconds, and forward and backward passes (one per batch
    call of the model, whatever its batch size)."""

    seconds: float = 0.0
    forward: int = 0
    backward: int = 0

    def per_edit(self, n: int) -> dict[str, float]:
        n = max(1, n)
        return {
            "seconds_per_edit": self.seconds / n,
            "forward_per_edit": self.forward / n,
            "backward_per_edit": self.backward / n,
        }


def no_hooks(enc: Any, start: int) -> list:
    return []


@dataclass
class Held:
    """What scoring needs while edits are held: a prompt rewrite (in-context's prefix) and hooks
    for each decoded batch (fast memory, GRACE); both identity by default."""

    hooks_for: HooksFor = no_hooks
    prompts: Callable[[list[str]], list[str]] = field(default=lambda texts: list(texts))


class Method(Protocol):
    """An editing method with its hyperparameters fixed (tuned on the training part)."""

    name: str

    def edited(
        self, model: Any, cases: Sequence[EditCase], cost: Cost
    ) -> AbstractContextManager[Held]:
        """Write ``cases`` one after another (adding to ``cost``), yield what scoring needs, and
        undo everything on exit."""
        ...

    def settings(self) -> dict[str, Any]:
        """The hyperparameters in use, JSON-ready (the report's header)."""
        ...


def held(value: Held) -> Iterator[Held]:
    """A generator body for methods that hold nothing to undo: ``yield from held(Held())``."""
    yield value
