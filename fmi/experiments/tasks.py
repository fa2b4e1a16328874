"""Binding tasks: invented symbols whose meaning depends on a context.

A :class:`Binding` says that in context ``C`` the symbol ``S`` means label ``L``. It is written
from a statement (``In game A, blicket means`` -> `` red``) and read back from a question
(``Question: in game A, what is blicket? Answer:`` -> `` red``). A :class:`Task` holds a
training :class:`Split` and several evaluation splits on held-out symbols and unseen contexts.

Tasks come from :func:`fmi.experiments.builtin_tasks.builtin_task` (deterministic from a seed)
or from a JSON task file (:mod:`fmi.experiments.taskfile`, whose ``load_task`` picks between
them by name); :mod:`fmi.experiments.labels` checks that every label is one token for a
tokenizer.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fmi.errors import ConfigError, TaskFileError

KINDS: tuple[str, ...] = ("write", "read", "plain")
LABEL_FIELD = "{label}"


@dataclass(frozen=True)
class Binding:
    """In ``context`` (as written), ``symbol`` means ``label``; asked about in ``read_context``.

    ``read_context`` defaults to ``context``; it differs when the question paraphrases the
    context (written ``game C``, asked ``the C game``). ``label`` has no leading space.
    """

    context: str
    symbol: str
    label: str
    read_context: str = field(default="")

    def __post_init__(self) -> None:
        if not self.read_context:
            object.__setattr__(self, "read_context", self.context)


def template_problem(text: str, required: Sequence[str]) -> str | None:
    """Why ``text`` is not a valid template needing ``required`` fields, or ``None`` if it is."""
    if not isinstance(text, str):
        return f"must be a string, got {type(text).__name__}"
    if not text.endswith(LABEL_FIELD):
        return f"must end with '{LABEL_FIELD}': {text!r}"
    prefix = text[: -len(LABEL_FIELD)]
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(prefix) if name is not None]
    except ValueError as err:
        return f"is not a valid format string ({err}): {text!r}"
    allowed = set(required) | {"context", "symbol"}
    for name in fields:
        if name not in allowed:
            return f"has unknown field '{{{name}}}' (allowed: {sorted(allowed)}): {text!r}"
    for name in required:
        if name not in fields:
            return f"must contain '{{{name}}}': {text!r}"
    if not prefix.strip():
        return f"must have text before '{LABEL_FIELD}': {text!r}"
    return None


REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "write": ("context", "symbol"),
    "read": ("context", "symbol"),
    "plain": ("symbol",),
}


@dataclass(frozen=True)
class Templates:
    """How bindings are phrased: a write statement, a read question, a context-free question.

    Each template ends with ``{label}``; the text before it is the prompt.
    """

    write: str = "In {context}, {symbol} means {label}"
    read: str = "Question: in {context}, what is {symbol}? Answer: {label}"
    plain: str = "Question: what is {symbol}? Answer: {label}"

    def __post_init__(self) -> None:
        for kind in KINDS:
            problem = template_problem(getattr(self, kind), REQUIRED_FIELDS[kind])
            if problem is not None:
                raise TaskFileError(f"template '{kind}' {problem}")

    def _template(self, kind: str) -> str:
        """The template for ``kind``; ``ConfigError`` for an unknown kind."""
        if kind not in KINDS:
            raise ConfigError(f"unknown template kind {kind!r}: use one of {list(KINDS)}")
        return getattr(self, kind)

    def prompt(self, kind: str, b: Binding) -> str:
        """The text before ``{label}``, formatted for ``b``, trailing whitespace stripped.

        ``read`` uses ``b.read_context``; ``write`` uses ``b.context``; ``plain`` has no context.
        """
        prefix = self._template(kind)[: -len(LABEL_FIELD)]
        context = b.read_context if kind == "read" else b.context
        return prefix.format(context=context, symbol=b.symbol).rstrip()

    def target(self, kind: str, label: str) -> str:
        """``label`` as a continuation of the prompt: ``" red"`` if whitespace precedes it."""
        prefix = self._template(kind)[: -len(LABEL_FIELD)]
        return " " + label if prefix[-1:].isspace() else label

    def to_dict(self) -> dict[str, str]:
        """The three templates by kind."""
        return {kind: getattr(self, kind) for kind in KINDS}


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    """Items in order of first appearance, without repeats."""
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class Split:
    """A named bank of bindings phrased by ``templates``, plus unrelated control prompts."""

    name: str
    bindings: tuple[Binding, ...]
    templates: Templates
    unrelated: tuple[str, ...]

    def contexts(self) -> tuple[str, ...]:
        """Distinct write contexts, in order of first appearance."""
        return _unique(b.context for b in self.bindings)

    def read_contexts(self) -> tuple[str, ...]:
        """Distinct read contexts, in order of first appearance."""
        return _unique(b.read_context for b in self.bindings)

    def symbols(self) -> tuple[str, ...]:
        """Distinct symbols, in order of first appearance."""
        return _unique(b.symbol for b in self.bindings)

    def labels(self) -> tuple[str, ...]:
        """Distinct labels, in order of first appearance."""
        return _unique(b.label for b in self.bindings)

    def sizes(self) -> dict[str, int]:
        """Counts of bindings, symbols, contexts, labels and unrelated prompts."""
        return {
            "bindings": len(self.bindings),
            "symbols": len(self.symbols()),
            "contexts": len(self.contexts()),
            "labels": len(self.labels()),
            "unrelated": len(self.unrelated),
        }


@dataclass(frozen=True)
class Task:
    """A training split and evaluation splits, built from ``seed``."""

    name: str
    train: Split
    splits: tuple[Split, ...]
    seed: int

    def split_names(self) -> tuple[str, ...]:
        """Names of ``train`` and every evaluation split."""
        return (self.train.name, *(s.name for s in self.splits))

    def split(self, name: str) -> Split:
        """The split called ``name`` (``train`` included); ``ConfigError`` naming the options."""
        for candidate in (self.train, *self.splits):
            if candidate.name == name:
                return candidate
        raise ConfigError(
            f"task {self.name!r} has no split {name!r}: available splits are "
            + ", ".join(self.split_names())
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: name, seed, per-split sizes and contexts, templates."""
        return {
            "name": self.name,
            "seed": self.seed,
            "splits": {
                s.name: {**s.sizes(), "context_names": list(s.contexts())}
                for s in (self.train, *self.splits)
            },
            "templates": {s.name: s.templates.to_dict() for s in (self.train, *self.splits)},
        }


# --------------------------------------------------------------------------- built-in task


def question_prompt(question: str, context: str | None = None) -> str:
    """``Question: [in CONTEXT, ]QUESTION Answer:``, the read format without a symbol."""
    return (
        f"Question: {question} Answer:"
        if context is None
        else (f"Question: in {context}, {question} Answer:")
    )


def question_of(prompt: str) -> str:
    """The question a :func:`question_prompt` asks, without its frame.

    >>> question_of("Question: in game C, what is the capital of Peru? Answer:")
    'what is the capital of Peru?'
    """
    match = re.fullmatch(r"Question: (?:in [^,]+, )?(.*) Answer:", prompt)
    if match is None:
        raise ValueError(f"not a question prompt: {prompt!r}")
    return match.group(1)
