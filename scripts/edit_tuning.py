"""The tuning grids of an ``fmi edit`` document: per method, every setting tried on the shared
tuning edits with its greedy training rates, whether it met the ``unrelated_changed`` bound,
and which one the rule kept. The docs' "which settings met the bound" is read off this.

    python scripts/edit_tuning.py results/gemma-3-270m/edit-known-cf-locate.json [--bound 0.02]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RATES = ("efficacy", "generalization", "specificity", "relation_specificity", "unrelated_changed")


def _short(settings: dict[str, Any], shared: dict[str, Any]) -> str:
    """The settings that differ across the grid (the rest are the method's fixed settings)."""
    varied = {k: v for k, v in settings.items() if shared.get(k, object()) != v}
    return ", ".join(f"{k}={v}" for k, v in varied.items()) or "(the only setting)"


def rows(tuning: dict[str, Any], bound: float) -> list[dict[str, Any]]:
    """One row per grid setting: its varied settings, rates, bound check and chosen mark.

    >>> lo, hi = {"unrelated_changed": 0.0}, {"unrelated_changed": 0.1}
    >>> grid = {"grid": [{"settings": {"lr": 1e-4, "steps": 5}, "train": lo},
    ...                  {"settings": {"lr": 1e-3, "steps": 5}, "train": hi}], "chosen": 0}
    >>> [(r["setting"], r["within"], r["chosen"]) for r in rows(grid, 0.02)]
    [('lr=0.0001', True, True), ('lr=0.001', False, False)]
    """
    grid = tuning.get("grid") or []
    if not grid:
        return []
    keys = set.intersection(*(set(g["settings"]) for g in grid))
    shared = {
        k: grid[0]["settings"][k]
        for k in keys
        if all(g["settings"][k] == grid[0]["settings"][k] for g in grid)
    }
    if len(grid) == 1:
        shared = {}
    out = []
    for i, g in enumerate(grid):
        train = g["train"]
        changed = train.get("unrelated_changed")
        out.append(
            {
                "setting": _short(g["settings"], shared),
                "rates": {k: train.get(k) for k in RATES},
                "within": changed is not None and changed <= bound,
                "chosen": i == tuning.get("chosen"),
            }
        )
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("document", type=Path)
    parser.add_argument("--bound", type=float, default=None, help="default: the run's own")
    args = parser.parse_args(argv)
    try:
        doc = json.loads(args.document.read_text(encoding="utf-8"))
        methods = doc["methods"]
        bound = args.bound
        if bound is None:
            bound = float(doc["header"]["config"].get("max_unrelated_changed", 0.02))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        print(f"{args.document}: not an fmi edit document ({err})", file=sys.stderr)
        return 2
    for name, record in methods.items():
        tuning = record.get("tuning") or {}
        table = rows(tuning, bound)
        if not table:
            continue
        met = sum(r["within"] for r in table)
        print(
            f"{name}: {len(table)} settings, {met} within unrelated_changed <= {bound}; "
            f"{tuning.get('budget', '')}; {tuning.get('seconds', '?')} s"
        )
        print("  " + " | ".join(("kept", *RATES, "setting")))
        for r in table:
            rates = " | ".join(_fmt(r["rates"][k]) for k in RATES)
            print(f"  {'*' if r['chosen'] else ' '} | {rates} | {r['setting']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
