"""Atomic file writes: a temporary file beside the target, flushed to disk, then one rename.

A reader sees the old file or the new one, never half of one; a writer killed or failing
mid-way leaves the old file as it was and removes its temporary file. Every file fmi writes
(JSON, HTML, assets beside reports, memory files, run-folder units) goes through here.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
>>> write_text(path, "hello")
>>> path.read_text()
'hello'
>>> write_json(path.with_suffix(".json"), {"a": 1})
>>> path.with_suffix(".json").read_text()
'{\\n "a": 1\\n}\\n'
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fmi.errors import OutputPathError

# Every path written in this process, in order: what an interrupted command reports as done.
WRITTEN: list[Path] = []


def _writable_folder(folder: Path, target: Path, what: str) -> None:
    """``OutputPathError`` unless the first existing folder of ``folder`` and its parents is a
    writable folder (the rest can be created)."""
    for above in (folder, *folder.parents):
        if above.exists():
            if not above.is_dir():
                raise OutputPathError(f"{what} {target}: {above} is a file, not a folder")
            if not os.access(above, os.W_OK | os.X_OK):
                raise OutputPathError(f"{what} {target}: cannot write in {above}")
            return


def check_output_path(path: str | Path, what: str = "output") -> Path:
    """``path`` as a Path if a file can be written there, else ``OutputPathError`` naming it:
    a directory, a parent that is a file, or a folder that cannot be created or written."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{what} {p} is a directory; give a file path")
    _writable_folder(p.parent, p, what)
    return p


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """``path`` as a Path if files can be written in it (it may not exist yet), else
    ``OutputPathError`` naming it: a file, under a file, or in a folder that is not writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{what} {p} is a file, not a folder")
    _writable_folder(p, p, what)
    return p


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary path in ``path``'s folder, fsync it, then rename it
    to ``path``. On any failure (an exception, Ctrl-C) the temporary file is removed and
    ``path`` is untouched."""
    path = check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    except OSError as err:
        raise OutputPathError(f"cannot write {path}: {err.strerror or err}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise OutputPathError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    WRITTEN.append(path)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    write_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, doc: Any) -> None:
    """Write ``doc`` as indented JSON (one space, a final newline) to ``path`` atomically."""
    write_text(path, json.dumps(doc, indent=1, default=str) + "\n")
