"""``fmi sweep CONFIG --out DIR [--executor local|ray]``: recall over a grid of models,
revisions, key layers, injection sites and seeds (docs/sweep.md). Finished cells are kept in
``DIR/cells/``; a rerun skips them, so a killed sweep resumes where it stopped."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """``fmi sweep``'s options."""
    s = sub.add_parser("sweep", help="recall over a grid (models, revisions, layers, seeds)")
    s.add_argument("config", help="the sweep config (.json, or .toml); see docs/sweep.md")
    s.add_argument("--out", required=True, help="output folder: cells/, sweep.json, sweep.html")
    s.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: this process, cells in order (default); ray: one Ray task per cell "
        "(RAY_ADDRESS, else a local instance; pip install -e '.[ray]')",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from analyses.sweep import load_config, run_sweep

    cfg = load_config(args.config)
    got = run_sweep(cfg, args.out, executor=args.executor, progress=not args.quiet)
    print(
        f"sweep: {got['cells']} cells, {len(got['ran'])} run, {got['kept']} already finished "
        f"({got['seconds']} s)"
    )
    print(got["finding"])
    print(f"wrote {got['json']} and {got['html']}")
    return 0
