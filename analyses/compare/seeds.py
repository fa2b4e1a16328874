"""``fmi compare --seeds``: the comparison once per seed (fresh symbols, prompts and fit each),
per-seed rows, and each method's mean and range over seeds.

>>> doc = {"splits": {"same": {"rows": [{"method": "no memory", "summary": {"read": 0.5}}]}}}
>>> by_method(doc)
{'results': {'no memory': {'same': {'read': 0.5}}}}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from analyses.compare.config import CompareConfig
from analyses.compare.figures import COLUMNS, markdown_table
from fmi.experiments.seeds import RANGE_NOTE, summarize_seeds
from fmi.models.registry import LoadedModel


def by_method(doc: dict) -> dict:
    """A compare document reshaped as ``{"results": {method: {split: summary}}}``, the shape
    :func:`fmi.experiments.seeds.summarize_seeds` reads."""
    out: dict[str, dict[str, Any]] = {}
    for split, result in doc["splits"].items():
        for row in result["rows"]:
            out.setdefault(row["method"], {})[split] = row["summary"]
    return {"results": out}


def run_compare_seeds(
    cfg: CompareConfig,
    seeds: tuple[int, ...],
    out_dir: str | Path | None = None,
    *,
    model: LoadedModel | None = None,
    progress: bool = True,
    announce: Callable[[str], None] = print,
) -> dict[str, Any]:
    """:func:`analyses.compare.run.run_compare` once per seed on one loaded model (reports under
    ``<out>/seed-<s>/``), and the mean and range over seeds of every method's metrics."""
    from analyses.compare.run import run_compare
    from fmi.models.registry import load_model
    from fmi.reporting.provenance import header

    start = time.perf_counter()
    if model is None:
        model = load_model(cfg.model, seed=seeds[0], announce=announce)
    out = Path(out_dir) if out_dir is not None else Path("reports") / model.slug
    per_seed: dict[str, dict] = {}
    for seed in seeds:
        announce(f"fmi: compare, seed {seed}")
        doc, _ = run_compare(
            replace(cfg, seed=seed),
            out / f"seed-{seed}",
            model=model,
            progress=progress,
            announce=announce,
        )
        per_seed[str(seed)] = doc
    summary = summarize_seeds({s: by_method(d) for s, d in per_seed.items()}, COLUMNS)
    wall = round(time.perf_counter() - start, 1)
    return {
        "model": model.name,
        "seeds": list(seeds),
        "summary": summary,
        "per_seed": per_seed,
        "header": header(model, cfg.to_dict(), seeds={"seeds": list(seeds)}, wall_seconds=wall),
    }


def seeds_markdown(doc: dict) -> str:
    """One table per split: each method's mean over seeds and its range, per metric."""
    lines = [f"seeds {', '.join(map(str, doc['seeds']))}: {RANGE_NOTE}"]
    summary = doc["summary"]
    splits = list(dict.fromkeys(s for per in summary.values() for s in per))
    for split in splits:
        lines += ["", f"split {split}", "", "| method | " + " | ".join(COLUMNS) + " |"]
        lines.append("|" + "---|" * (len(COLUMNS) + 1))
        for method, per in summary.items():
            row = per.get(split, {})
            cells = [
                f"{row[m]['mean']:.3f} ({row[m]['min']:.3f}–{row[m]['max']:.3f})"
                if m in row
                else "n/a"
                for m in COLUMNS
            ]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_report(doc: dict) -> str:
    """What the README shows of a several-seed comparison: the first seed's tables (every
    row with its intervals and write cost), then the mean and range over all seeds."""
    first = str(doc["seeds"][0])
    parts = [
        f"seed {first}, split {name}:\n\n{markdown_table(result['rows'])}"
        for name, result in doc["per_seed"][first]["splits"].items()
    ]
    return "\n\n".join([*parts, seeds_markdown(doc)])
