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
    # side measurements, name -> (seconds, edits): e.g. the memory's one-at-a-time write, timed
    # beside its batched write; reported per edit as ``<name>_per_edit``
    extra: dict[str, tuple[float, int]] = field(default_factory=dict)

    def note(self, name: str, seconds: float, edits: int) -> None:
        """Add a side measurement of ``seconds`` over ``edits`` edits under ``name``."""
        s, n = self.extra.get(name, (0.0, 0))
        self.extra[name] = (s + seconds, n + edits)

    def per_edit(self, n: int) -> dict[str, float]:
        """Seconds and passes per edit over ``n`` edits, and each side measurement's.

        >>> cost = Cost(2.0, 4, 0)
        >>> cost.note("single_seconds", 1.5, 3)
        >>> cost.per_edit(4)
        {'seconds_per_edit': 0.5, 'forward_per_edit': 1.0, 'backward_per_edit': 0.0, \
'single_seconds_per_edit': 0.5}
        """
        n = max(1, n)
        out = {
            "seconds_per_edit": self.seconds / n,
            "forward_per_edit": self.forward / n,
            "backward_per_edit": self.backward / n,
        }
        for name, (seconds, edits) in self.extra.items():
            out[f"{name}_per_edit"] = seconds / max(1, edits)
        return out


def no_hooks(enc: Any, start: int) -> list:
    return []


def no_explain(texts: list[str]) -> list[dict[str, Any]]:
    return [{} for _ in texts]


@dataclass
class Held:
    """What scoring needs while edits are held: a prompt rewrite (in-context's prefix) and hooks
    for each decoded batch (fast memory, GRACE); both identity by default.

    ``explain(prompts)``: per prompt, what the method retrieved for it, JSON-ready (a memory:
    ``{"entry": case_id or None, "score": s, "threshold": t}``); the failure log keeps it beside
    each failing probe. Methods without a retrieval step return ``{}`` per prompt.

    ``prefix``: a text every rewritten prompt starts with (in-context's stated facts), so that
    ``prompts(texts) == [prefix + t for t in texts]``; a scorer may instead decode the raw texts
    after the prefix's cached keys and values
    (:func:`analyses.edit.prefix_cache.decode_with_prefix`): the same tokens, the prefix run once.
    Empty: no shared prefix."""

    hooks_for: HooksFor = no_hooks
    prompts: Callable[[list[str]], list[str]] = field(default=lambda texts: list(texts))
    explain: Callable[[list[str]], list[dict[str, Any]]] = no_explain
    prefix: str = ""


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
