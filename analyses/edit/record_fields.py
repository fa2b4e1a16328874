"""One record of a user's editing file, read field by field: every problem is one line naming
the file, the record and the field (:class:`_Record`).

>>> from pathlib import Path
>>> rec = _Record(Path("cases.json"), 3, {"subject": 7})
>>> rec.text("subject")
Traceback (most recent call last):
...
fmi.errors.ConfigError: cases.json: record 3: field 'subject' must be a string, got a number
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fmi.errors import ConfigError


def _kind(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class _Record:
    """One record's fields, read with messages naming the file, the record and the field."""

    def __init__(self, path: Path, index: int, data: Any) -> None:
        self.where = f"{path}: record {index}"
        if not isinstance(data, dict):
            raise ConfigError(f"{self.where}: must be a JSON object, got {_kind(data)}")
        self.data = data

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: field {name!r} {problem}")

    def get(self, name: str, default: Any = ...) -> Any:
        """The value at dotted ``name`` (``requested_rewrite.target_new.str``)."""
        value: Any = self.data
        walked: list[str] = []
        for part in name.split("."):
            if walked and not isinstance(value, dict):
                raise self.fail(".".join(walked), f"must be an object, got {_kind(value)}")
            walked.append(part)
            if part not in value:
                if default is not ...:
                    return default
                raise self.fail(".".join(walked), "is missing")
            value = value[part]
        return value

    def text(self, name: str, value: Any = ..., empty: bool = False) -> str:
        """A string field (``value``: the field's value, already fetched); non-empty unless
        ``empty``."""
        value = self.get(name) if value is ... else value
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string, got {_kind(value)}")
        if not empty and not value.strip():
            raise self.fail(name, "is an empty string")
        return value

    def optional(self, name: str) -> str:
        """A string field that may be absent (then ``""``)."""
        value = self.get(name, None)
        return "" if value is None else self.text(name, value, empty=True)

    def texts(self, name: str) -> list[str]:
        """A list of non-empty strings."""
        value = self.get(name)
        if not isinstance(value, list):
            raise self.fail(name, f"must be a list of strings, got {_kind(value)}")
        return [self.text(f"{name}[{j}]", item) for j, item in enumerate(value)]

    def identity(self, names: tuple[str, ...], default: str) -> str:
        """The first of ``names`` present (a string or an integer), else ``default``."""
        for name in names:
            value = self.get(name, None)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise self.fail(name, f"must be a string or an integer, got {_kind(value)}")
            return self.text(name, str(value))
        if default:
            return default
        raise self.fail(names[0], "is missing")


def _slot(src: str, subject: str) -> tuple[int, int] | None:
    """Where ``subject`` first occurs in ``src``: exactly, else ignoring case."""
    at = src.find(subject)
    if at >= 0:
        return at, at + len(subject)
    found = re.search(re.escape(subject), src, flags=re.IGNORECASE)
    return found.span() if found else None


def subject_template(rec: _Record, field: str, text: str, subject: str) -> str:
    """``text`` (field ``field`` of ``rec``) with the subject's first occurrence (exact, else
    ignoring case) made ``{}`` and every other brace doubled, so that ``.format(subject)``
    gives ``text`` back; one line naming the field when the subject is not in it.

    >>> rec = _Record(Path("f.json"), 0, {})
    >>> subject_template(rec, "src", "Where is {x} Rome?", "rome")
    'Where is {{x}} {}?'
    """
    span = _slot(text, subject)
    if span is None:
        raise rec.fail("subject", f"{subject!r} does not occur in field {field!r} ({text!r})")

    def escape(part: str) -> str:
        return part.replace("{", "{{").replace("}", "}}")

    return escape(text[: span[0]]) + "{}" + escape(text[span[1] :])
