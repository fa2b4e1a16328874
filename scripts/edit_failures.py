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

POSITIVE_KINDS = ("rewrite", "paraphrase", "one_hop", "alias")


def false_fire_causes(log: list[dict]) -> list[tuple[str, int]]:
    """Among failing trials where the memory fired wrongly (a prompt that should keep the
    unedited output fired any entry; a prompt that should follow an edit fired another one), how
    many had each ``relation_key`` term as the largest contribution to the fired entry's logit
    (``explain.terms``), most first.

    >>> why = {"entry": "7", "fired": True, "terms": {"subject": 2.0, "relation": 0.5}}
    >>> log = [{"kind": "relation", "case_ids": ["7"], "explain": why},
    ...        {"kind": "paraphrase", "case_ids": ["7"], "explain": why},
    ...        {"kind": "paraphrase", "case_ids": ["8"], "explain": why},
    ...        {"kind": "relation", "case_ids": ["7"], "explain": {**why, "fired": False}}]
    >>> false_fire_causes(log)
    [('subject', 2)]
    """
    counts: dict[str, int] = {}
    for e in log:
        why = e.get("explain") or {}
        terms = why.get("terms")
        if not terms or not why.get("fired"):
            continue
        if e.get("kind") in POSITIVE_KINDS and why.get("entry") in e.get("case_ids", []):
            continue
        top = max(terms, key=terms.__getitem__)
        counts[top] = counts.get(top, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


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
            causes = false_fire_causes(log)
            if causes:
                shown = ", ".join(f"{n} {c}" for n, c in causes)
                print(f"  false fires by largest term: {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
