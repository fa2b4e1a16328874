"""A run folder: the finished units of a long run (a split, a size, a cell), kept beside its
output so that an interrupted run can resume.

Each unit is one JSON file, written atomically. The folder's ``run.json`` holds the
fingerprint of the run it belongs to: its configuration and the model's
(:func:`fmi.models.fingerprint.model_fingerprint`). Resuming from a folder with another
fingerprint is refused in one line that names what differs.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "recall.run"
>>> units = RunFolder(folder, {"seed": 0}, resume=False)
>>> units.get("same") is None
True
>>> units.put("same", {"read": 1.0})
>>> RunFolder(folder, {"seed": 0}, resume=True).get("same")
{'read': 1.0}
>>> RunFolder(folder, {"seed": 1}, resume=True)
Traceback (most recent call last):
...
fmi.errors.ConfigError: run folder ... another run (seed: 0 there, 1 here); remove it ...
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from fmi.errors import ConfigError
from fmi.reporting.atomic import write_json

FINGERPRINT = "run.json"


def run_folder_for(output: str | Path) -> Path:
    """The run folder beside an output file: ``out/recall.json`` -> ``out/recall.run``."""
    p = Path(output)
    return p.with_name(p.stem + ".run")


def _differs(old: Any, new: Any, at: str = "") -> str | None:
    """The first place two fingerprints differ, as ``key: old there, new here``."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            where = f"{at}.{key}" if at else str(key)
            if key not in old or key not in new:
                return (
                    f"{where}: {old.get(key, 'missing')!r} there, {new.get(key, 'missing')!r} here"
                )
            found = _differs(old[key], new[key], where)
            if found:
                return found
        return None
    return None if old == new else f"{at}: {old!r} there, {new!r} here"


def _unit_file(name: str) -> str:
    """The file a unit is kept in: its name, percent-encoded (a task file's split may be named
    anything)."""
    return f"unit-{quote(name, safe='')}.json"


class RunFolder:
    """The finished units of one run. ``resume=False`` starts the folder afresh (earlier units
    are removed); ``resume=True`` keeps them if the fingerprint matches and refuses otherwise."""

    def __init__(self, path: str | Path, fingerprint: dict[str, Any], *, resume: bool) -> None:
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        stored = self.path / FINGERPRINT
        if resume and stored.exists():
            try:
                old = json.loads(stored.read_text())
            except (OSError, ValueError) as err:
                raise ConfigError(f"run folder {self.path} is unreadable ({err})") from None
            diff = _differs(old, self.fingerprint)
            if diff:
                raise ConfigError(
                    f"run folder {self.path} belongs to another run ({diff}); remove it or run "
                    "without --resume"
                )
        elif self.path.exists():
            if self.path.is_file():
                raise ConfigError(f"run folder {self.path} is a file")
            shutil.rmtree(self.path)
        if not stored.exists():
            write_json(stored, self.fingerprint)

    def get(self, name: str) -> Any | None:
        """The unit ``name`` if it was finished, else None."""
        path = self.path / _unit_file(name)
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def put(self, name: str, data: Any) -> None:
        """Keep the finished unit ``name`` (atomically)."""
        write_json(self.path / _unit_file(name), data)

    def done(self) -> list[str]:
        """The names of the finished units, sorted."""
        return sorted(unquote(p.name[5:-5]) for p in self.path.glob("unit-*.json"))

    def remove(self) -> None:
        """Delete the folder (the run finished and its output is written)."""
        shutil.rmtree(self.path, ignore_errors=True)
