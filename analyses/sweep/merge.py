"""A sweep's files: one JSON per cell under ``OUT/cells/``, and the merge of the grid's cells
into one document (``OUT/sweep.json`` holds it, with the report's header and finding).

A cell file is written atomically once its cell has run; a cell whose file is there and
records the same cell configuration is finished, so a rerun skips it and a killed sweep
resumes where it stopped. Files of cells outside the current grid are left alone and not
merged.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from analyses.sweep.cells import Cell, short_site
from analyses.sweep.config import SweepConfig
from fmi.reporting.atomic import write_json

METRICS = ("read", "plain", "unrelated_changed")
BASELINE_MODE = "none"  # no memory: the reference every mode is measured against


def cell_path(out: str | Path, cell: Cell) -> Path:
    """``OUT/cells/<cell name>.json``.

    >>> from analyses.sweep.cells import grid
    >>> cell = grid(SweepConfig.from_dict({"models": ["tiny-gemma"]}))[0]
    >>> cell_path("out", cell).parent.as_posix()
    'out/cells'
    """
    return Path(out) / "cells" / f"{cell.name}.json"


def read_cell(out: str | Path, cell: Cell) -> dict[str, Any] | None:
    """The cell's finished document, or ``None`` when its file is missing, unreadable, or
    records another configuration (then the cell runs again and replaces it).

    >>> from analyses.sweep.cells import grid
    >>> read_cell("/nonexistent", grid(SweepConfig.from_dict({"models": ["tiny-gemma"]}))[0])
    """
    path = cell_path(out, cell)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(doc, dict) and doc.get("cell") == cell.to_dict() and "recall" in doc
    return doc if ok else None


def write_cell(out: str | Path, cell: Cell, doc: dict[str, Any]) -> Path:
    """Write one finished cell's document atomically; returns its path.

    >>> import tempfile
    >>> from analyses.sweep.cells import grid
    >>> cell = grid(SweepConfig.from_dict({"models": ["tiny-gemma"]}))[0]
    >>> out = tempfile.mkdtemp()
    >>> _ = write_cell(out, cell, {"cell": cell.to_dict(), "recall": {}})
    >>> read_cell(out, cell)["recall"]
    {}
    """
    path = cell_path(out, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)
    return path


def _entry(doc: dict[str, Any]) -> dict[str, Any]:
    recall, cell = doc["recall"], doc["cell"]
    return {
        "name": doc["name"],
        "key": doc["key"],
        "model": cell["model"],
        "revision": cell["revision"],
        "seed": cell["recall"]["seed"],
        "sites": doc["sites"],
        "layers": doc["layers"],
        "n_layers": doc["n_layers"],
        "n_parameters": recall["header"]["model"].get("n_parameters"),
        "seconds": doc["seconds"],
        "weights_sha256": recall["header"]["model"].get("weights_sha256"),
        "cell": cell,
        "results": recall["results"],
        "fitted": recall["fitted"],
    }


def sweep_header(cfg: SweepConfig, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The merged document's provenance: the sweep's config, each model's header entry (name,
    source, weights sha256) by model and revision, versions, git revision, machine, the first
    cell's numerics, and the cells' summed time.

    >>> head = sweep_header(SweepConfig.from_dict({"models": ["tiny-gemma"]}), [])
    >>> head["command"], head["model"]["name"], head["cells"]
    ('sweep', 'tiny-gemma', 0)
    """
    from fmi.reporting.provenance import git_revision, package_versions

    models: dict[str, Any] = {}
    for doc in docs:
        rev = doc["cell"]["revision"]
        name = doc["cell"]["model"] + (f"@{rev}" if rev else "")
        models.setdefault(name, doc["recall"]["header"]["model"])
    first: dict[str, Any] = docs[0]["recall"]["header"] if docs else {}
    seconds = sum(d["seconds"]["load"] + d["seconds"]["recall"] for d in docs)
    return {
        "command": "sweep",
        "model": {
            "name": ", ".join(cfg.models),
            "requested": ", ".join(cfg.models),
            "source": "; ".join(dict.fromkeys(str(m.get("source", "?")) for m in models.values())),
            "processing": next((m.get("processing", {}) for m in models.values()), {}),
        },
        "models": models,
        "config": cfg.to_dict(),
        "seeds": list(cfg.seeds),
        "versions": package_versions(),
        "git": git_revision(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()}",
        "numerics": first.get("numerics"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cells": len(docs),
        "wall_seconds": round(seconds, 1),
    }


def merge(cfg: SweepConfig, out: str | Path, cells: list[Cell]) -> dict[str, Any]:
    """Every cell of the grid read back from ``OUT/cells/`` (all must be finished), merged:
    ``header``, ``config`` and ``cells`` (each with its sites, their depths and its recall
    ``results`` block), in grid order.

    >>> import tempfile
    >>> merge(SweepConfig.from_dict({"models": ["tiny-gemma"]}), tempfile.mkdtemp(), [])["cells"]
    []
    """
    docs = []
    for cell in cells:
        doc = read_cell(out, cell)
        if doc is None:
            raise FileNotFoundError(f"cell {cell.name} has not run (no {cell_path(out, cell)})")
        docs.append(doc)
    return {
        "header": sweep_header(cfg, docs),
        "config": cfg.to_dict(),
        "cells": [_entry(d) for d in docs],
    }


def split_shown(merged: dict[str, Any]) -> str | None:
    """The split the figures show: ``same`` when the cells ran it, else the first one run.

    >>> split_shown({"cells": [{"results": {"none": {"new_lab": {}, "same": {}}}}]})
    'same'
    """
    for entry in merged["cells"]:
        splits = list(next(iter(entry["results"].values()), {}))
        return "same" if "same" in splits else (splits[0] if splits else None)
    return None


def records(merged: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """One flat row per cell and mode (the no-memory baseline left out) on ``split``: the grid
    coordinates, each metric of :data:`METRICS` and its 95% interval (``<metric>_ci``).

    >>> doc = {"cells": [{"model": "m", "revision": None, "seed": 0, "layers": {"symbol": 2.0,
    ...     "token": 0.0, "inject": 1.5}, "sites": {"symbol": "blocks.2.hook_resid_post",
    ...     "token": "blocks.0.hook_resid_post", "inject": "ln_final.hook_out"},
    ...     "results": {"none": {"same": {}}, "dual_key": {"same": {"read": 0.5, "plain": 0.0,
    ...     "unrelated_changed": 0.1, "ci95": {"read": [0.3, 0.7], "plain": [0.0, 0.1],
    ...     "unrelated_changed": [0.0, 0.2]}}}}}]}
    >>> row = records(doc, "same")[0]
    >>> row["mode"], row["symbol"], row["read"], row["read_ci"]
    ('dual_key', '2', 0.5, [0.3, 0.7])
    """
    rows = []
    for entry in merged["cells"]:
        for mode, by_split in entry["results"].items():
            if mode == BASELINE_MODE or split not in by_split:
                continue
            result = by_split[split]
            row = {
                "model": entry["model"],
                "revision": entry["revision"],
                "seed": entry["seed"],
                "mode": mode,
                **{k: short_site(entry["sites"][k]) for k in ("symbol", "token", "inject")},
                **{f"{k}_layer": entry["layers"][k] for k in ("symbol", "token", "inject")},
                "n_layers": entry.get("n_layers"),
                "n_parameters": entry.get("n_parameters"),
            }
            for metric in METRICS:
                row[metric] = result[metric]
                row[f"{metric}_ci"] = list(result["ci95"][metric])
            rows.append(row)
    return rows
