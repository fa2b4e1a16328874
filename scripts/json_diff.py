"""Every leaf that differs between two JSON documents, one path a line (``a.b[3].c``), with
both values; the paths named by --ignore (prefixes) are left out. Exit 0 when nothing else
differs, 1 otherwise.

    python scripts/json_diff.py A.json B.json --ignore header.wall_seconds
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def leaves(doc: Any, path: str = "") -> dict[str, Any]:
    """``{path: value}`` for every leaf of ``doc`` (an empty dict or list is a leaf).

    >>> leaves({"a": [1, {"b": 2}], "c": {}})
    {'a[0]': 1, 'a[1].b': 2, 'c': {}}
    """
    if isinstance(doc, dict) and doc:
        out: dict[str, Any] = {}
        for key, value in doc.items():
            out.update(leaves(value, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(doc, list) and doc:
        out = {}
        for i, value in enumerate(doc):
            out.update(leaves(value, f"{path}[{i}]"))
        return out
    return {path: doc}


def differences(a: Any, b: Any, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``(path, value in a, value in b)`` for each differing leaf outside ``ignore``.

    >>> differences({"x": 1, "h": {"t": 1}}, {"x": 2, "h": {"t": 9}}, ignore=("h.t",))
    [('x', 1, 2)]
    """
    la, lb = leaves(a), leaves(b)
    missing = object()
    paths = sorted(set(la) | set(lb))
    out = []
    for p in paths:
        if any(p == i or p.startswith((i + ".", i + "[")) for i in ignore):
            continue
        va, vb = la.get(p, missing), lb.get(p, missing)
        if va != vb:
            out.append((p, None if va is missing else va, None if vb is missing else vb))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--ignore", action="append", default=[], help="a path prefix to leave out")
    args = ap.parse_args()
    with open(args.a) as fa, open(args.b) as fb:
        found = differences(json.load(fa), json.load(fb), tuple(args.ignore))
    for path, va, vb in found:
        print(f"{path}: {va!r} | {vb!r}")
    print(f"{len(found)} differing leaves")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
