"""The bundled benchmarks' files: where they are, and their cases and prompts as loaded."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from analyses.edit.cases import EditCase
from analyses.edit.loaders import load_cases
from fmi.errors import ConfigError

BUNDLED = ("known-cf", "nonce-cf", "geo-cf")


def data_dir() -> Path:
    """The package folder that holds the bundled files."""
    return Path(str(resources.files("fmi") / "data" / "edit"))


def bundled_path(name: str) -> Path:
    """The file of bundled benchmark ``name`` (one of :data:`BUNDLED`).

    >>> bundled_path("nonce-cf").name
    'nonce-cf.json'
    """
    if name not in BUNDLED:
        raise ConfigError(
            f"unknown bundled benchmark {name!r}; expected one of "
            + ", ".join(repr(n) for n in BUNDLED)
        )
    return data_dir() / f"{name}.json"


def unrelated_path() -> Path:
    """The bundled unrelated prompts."""
    return data_dir() / "unrelated.json"


def load_bundled(name: str) -> tuple[list[EditCase], list[EditCase]]:
    """Bundled benchmark ``name`` as its (train, eval) cases.

    >>> train, eval_ = load_bundled("known-cf")
    >>> len(train), len(eval_)
    (215, 807)
    >>> {c.split for c in train}, {c.split for c in eval_}
    ({'train'}, {'eval'})
    """
    cases = load_cases(bundled_path(name), format="counterfact")
    return [c for c in cases if c.split == "train"], [c for c in cases if c.split == "eval"]


def load_unrelated() -> tuple[list[str], list[str]]:
    """The (train, eval) unrelated prompts: neutral beginnings that name no known subject.

    >>> train, eval_ = load_unrelated()
    >>> len(train), len(eval_), bool(set(train) & set(eval_))
    (200, 455, False)
    """
    doc = json.loads(unrelated_path().read_text(encoding="utf-8"))
    return list(doc["train"]), list(doc["eval"])
