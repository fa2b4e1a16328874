"""The failure classes of an ``fmi edit`` document: per method and T, how many failing trials
fell in each class (:mod:`analyses.edit.failure_classes`), the largest first, with one example
prompt each. The docs' explanations of shortfalls are read off this.

    python scripts/edit_failures.py results/gemma-3-270m/edit-geo-cf.json [--method fast_memory]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analyses.edit.failure_classes import class_counts, failure_class


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("document", type=Path)
    parser.add_argument("--method", help="only this method")
    parser.add_argument("--top", type=int, default=5, help="classes per cell (default 5)")
    args = parser.parse_args(argv)
    try:
        doc = json.loads(args.document.read_text(encoding="utf-8"))
        results = dict(doc["results"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"{args.document}: not an fmi edit document ({err})", file=sys.stderr)
        return 2
    for method, cells in results.items():
        if args.method and method != args.method:
            continue
        for t, cell in cells.items():
            log = cell.get("failures")
            if log is None:
                continue
            print(f"{method} T={t}: {len(log)} failing trials")
            for name, count in class_counts(log)[: args.top]:
                example = next(e for e in log if failure_class(e) == name)
                why = example.get("explain") or {}
                score = f" score {why['score']:.3f}" if "score" in why else ""
                print(
                    f"  {count:5d}  {name}  e.g. {example['prompt']!r} -> {example['got']!r}"
                    f" (expected {example['expected']!r}{score})"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
