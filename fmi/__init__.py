"""fmi: fast-memory interpretability for frozen language models.

A frozen transformer gets an external fast memory: writing a fact is one frozen forward pass,
reading it is a hook that adds the stored value during greedy generation. Nothing in the
weights changes.

>>> import fmi
>>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
>>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
>>> memory.write("Alice's favourite drink is", " green tea", spans={"symbol": "Alice"}).entry.id
0

Importing ``fmi`` loads nothing heavy and has no side effects: the names below are imported
on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "fmi.models.registry",
    "list_models": "fmi.models.registry",
    "FastMemory": "fmi.memory.store",
    "Entry": "fmi.memory.entry",
    "Stored": "fmi.memory.statements",
    "Answer": "fmi.memory.ask",
    "RecallConfig": "fmi.experiments.config",
    "run_recall": "fmi.experiments.recall",
    "builtin_task": "fmi.experiments.builtin_tasks",
}
__all__ = [
    "Answer",
    "Entry",
    "FastMemory",
    "RecallConfig",
    "Stored",
    "builtin_task",
    "list_models",
    "load_model",
    "run_recall",
]

if TYPE_CHECKING:
    from fmi.experiments.builtin_tasks import builtin_task
    from fmi.experiments.config import RecallConfig
    from fmi.experiments.recall import run_recall
    from fmi.memory.ask import Answer
    from fmi.memory.entry import Entry
    from fmi.memory.statements import Stored
    from fmi.memory.store import FastMemory
    from fmi.models.registry import list_models, load_model


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fmi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
