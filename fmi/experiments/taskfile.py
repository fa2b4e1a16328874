"""JSON task files: parsing with errors that name the file and the field, and ``load_task``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fmi.errors import ConfigError, TaskFileError
from fmi.experiments.builtin_tasks import builtin_task
from fmi.experiments.tasks import (
    KINDS,
    REQUIRED_FIELDS,
    Binding,
    Split,
    Task,
    Templates,
    template_problem,
)

FILE_SPLIT = "file"  # the one evaluation split a task file holds
FILE_KEYS: tuple[str, ...] = ("name", "templates", "bindings", "unrelated")
REQUIRED_FILE_KEYS: tuple[str, ...] = ("name", "bindings", "unrelated")
BINDING_KEYS: tuple[str, ...] = ("context", "symbol", "label", "read_context")
REQUIRED_BINDING_KEYS: tuple[str, ...] = ("context", "symbol", "label")


class _FileChecker:
    """Validates one parsed task file; every error names the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, message: str) -> TaskFileError:
        """A ``TaskFileError`` prefixed with the file name."""
        return TaskFileError(f"task file {self.path}: {message}")

    def keys(
        self, obj: Mapping[str, Any], where: str, allowed: Sequence[str], required: Sequence[str]
    ) -> None:
        """No unknown keys and no missing required keys in ``obj``."""
        prefix = f"{where}: " if where else ""
        for key in obj:
            if key not in allowed:
                raise self.fail(f"{prefix}unknown key {key!r} (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in obj:
                raise self.fail(f"{prefix}missing key {key!r}")

    def obj(self, value: Any, where: str) -> Mapping[str, Any]:
        """``value`` as a JSON object."""
        if not isinstance(value, dict):
            raise self.fail(f"{where} must be an object, got {_json_type(value)}")
        return value

    def text(self, value: Any, where: str) -> str:
        """``value`` as a non-empty string without surrounding whitespace."""
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where} must be a non-empty string, got {_json_repr(value)}")
        if value != value.strip():
            raise self.fail(f"{where} must not start or end with whitespace: {value!r}")
        return value

    def text_list(self, value: Any, where: str) -> list[str]:
        """``value`` as a non-empty list of non-empty strings."""
        if not isinstance(value, list):
            raise self.fail(f"{where} must be a list, got {_json_type(value)}")
        if not value:
            raise self.fail(f"{where} must not be empty")
        return [self.text(item, f"{where}[{i}]") for i, item in enumerate(value)]

    def templates(self, value: Any) -> Templates:
        """The ``templates`` object; missing kinds take the defaults."""
        raw = self.obj(value, "templates")
        self.keys(raw, "templates", KINDS, ())
        for kind, text in raw.items():
            problem = template_problem(text, REQUIRED_FIELDS[kind])
            if problem is not None:
                raise self.fail(f"templates.{kind} {problem}")
        return Templates(**raw)

    def binding(self, value: Any, where: str) -> Binding:
        """One entry of ``bindings``."""
        raw = self.obj(value, where)
        self.keys(raw, where, BINDING_KEYS, REQUIRED_BINDING_KEYS)
        fields = {key: self.text(raw[key], f"{where}.{key}") for key in raw}
        return Binding(**fields)

    def bindings(self, value: Any) -> list[Binding]:
        """The non-empty ``bindings`` list, with no two entries contradicting each other."""
        if not isinstance(value, list):
            raise self.fail(f"bindings must be a list, got {_json_type(value)}")
        if not value:
            raise self.fail("bindings must not be empty")
        out = [self.binding(item, f"bindings[{i}]") for i, item in enumerate(value)]
        self.no_conflicts(out)
        return out

    def no_conflicts(self, bindings: Sequence[Binding]) -> None:
        """One label per (context, symbol), and no binding repeated."""
        seen: dict[tuple[str, str], int] = {}
        seen_reads: dict[tuple[str, str, str], int] = {}
        for i, b in enumerate(bindings):
            j = seen.setdefault((b.context, b.symbol), i)
            if bindings[j].label != b.label:
                raise self.fail(
                    f"bindings[{i}].label {b.label!r} conflicts with bindings[{j}].label "
                    f"{bindings[j].label!r} (same context {b.context!r} and symbol {b.symbol!r})"
                )
            k = seen_reads.setdefault((b.context, b.symbol, b.read_context), i)
            if k != i:
                raise self.fail(f"bindings[{i}] repeats bindings[{k}]")


def _json_type(value: Any) -> str:
    """The JSON name of ``value``'s type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "list", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def _json_repr(value: Any) -> str:
    """A short description of ``value`` for error messages."""
    return repr(value) if isinstance(value, str) else _json_type(value)


def _read_json(checker: _FileChecker) -> Any:
    """The parsed contents of the task file."""
    try:
        text = checker.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise checker.fail("file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise checker.fail(f"cannot read file ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise checker.fail(
            f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None


def load_task_file(path: str | Path, seed: int = 0, n_train: int = 150) -> Task:
    """A task from a JSON file: its bindings form the ``file`` split; ``train`` is built-in.

    Format: ``{"name": str, "templates": {"write", "read", "plain"} (optional, each
    optional), "bindings": [{"context", "symbol", "label", "read_context" (optional)}],
    "unrelated": [str]}``. Any problem raises ``TaskFileError`` naming the file and field.
    """
    checker = _FileChecker(Path(path))
    data = checker.obj(_read_json(checker), "top level")
    checker.keys(data, "", FILE_KEYS, REQUIRED_FILE_KEYS)
    name = checker.text(data["name"], "name")
    templates = checker.templates(data["templates"]) if "templates" in data else Templates()
    bindings = checker.bindings(data["bindings"])
    unrelated = checker.text_list(data["unrelated"], "unrelated")
    split = Split(FILE_SPLIT, tuple(bindings), templates, tuple(unrelated))
    return Task(name, builtin_task(seed, n_train=n_train).train, (split,), seed)


def load_task(name_or_path: str, seed: int = 0, n_train: int = 150) -> Task:
    """``"builtin"`` for :func:`builtin_task`, or a path ending ``.json`` for a task file."""
    if name_or_path == "builtin":
        return builtin_task(seed, n_train=n_train)
    if str(name_or_path).endswith(".json"):
        return load_task_file(name_or_path, seed, n_train=n_train)
    raise ConfigError(
        f"unknown task {name_or_path!r}: use 'builtin' or a path to a .json task file"
    )
