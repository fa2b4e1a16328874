"""``fmi capacity``: how far one frozen model's fast memory goes, next to LoRA adapters.

The memory is fitted once on the built-in task's training split (as ``fmi recall --seed-value``
fits it); the largest bank of fresh words is written once; every size is read from its prefix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from analyses.capacity import figures
from analyses.capacity.bank import capacity_bindings
from analyses.capacity.config import CapacityConfig
from analyses.capacity.lora_curve import lora_rows, loss_law
from analyses.capacity.measure import curve_rows, write_bank
from analyses.capacity.search_cost import search_rows
from fmi.experiments.labels import check_labels
from fmi.experiments.recall import task_for
from fmi.memory.fit import fit
from fmi.models.registry import LoadedModel, load_model, report_name
from fmi.reporting.atomic import write_json
from fmi.reporting.provenance import header
from fmi.reporting.report import Report, write_report


def run_capacity(
    cfg: CapacityConfig,
    out_dir: str | Path | None = None,
    *,
    model: LoadedModel | None = None,
    json_path: str | Path | None = None,
    announce: Callable[[str], None] = print,
    progress: bool = False,
) -> tuple[dict[str, Any], Path]:
    """Fit, write the largest bank, read every size, train the LoRA probe; write the report.
    ``progress``: bars on stderr (the bank's write, decoding, sizes, search cost, LoRA rows and
    training steps)."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if model is None:
        model = load_model(cfg.model, seed=cfg.seed, announce=announce)
    rc = cfg.recall
    task = task_for(rc)
    check_labels(task, model.tokenizer)
    announce(f"fmi: fitting the memory on {model.name} (training split only)")
    fitted = fit(model, task.train, rc)
    seconds = {"fit": round(time.perf_counter() - start, 1)}
    bindings = capacity_bindings(max(cfg.sizes), cfg.seed, skip=rc.n_train + rc.n_eval)
    split = task.split("same")  # its templates and held-out unrelated prompts
    announce(f"fmi: writing {len(bindings)} bindings and scoring the sampled prompts")
    bank = write_bank(model, bindings, split, fitted, cfg, progress=progress)
    seconds["write"] = round(bank.write_seconds, 1)
    curve, done = curve_rows(model, bank, cfg, progress)
    announce(f"fmi: {figures.finding(curve)}")
    search = search_rows(bank, cfg.modes, progress=progress)
    announce(f"fmi: {figures.search_finding(search)}")
    lora = lora_rows(
        model, bank, bindings, split.templates, done, cfg, announce, task.train, progress
    )
    seconds["total"] = round(time.perf_counter() - start, 1)
    head = header(
        model,
        cfg.to_dict(),
        sites={
            "symbol_key": fitted.encoder.symbol_site,
            "token_key": fitted.encoder.token_site,
            "inject": rc.inject_site,
        },
        alpha={"alpha": fitted.alpha, "rho": fitted.rho},
        seeds={"seed": cfg.seed, "task_seed": task.seed},
        fitted=fitted.to_dict(),
        seconds=seconds,
    )
    doc = {"model": model.name, "curve": curve, "search": search, "lora": lora, "header": head}
    path = render(doc, out_dir)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        write_json(json_path, doc)
    return doc, path


def render(doc: dict[str, Any], out_dir: str | Path | None = None) -> Path:
    """The HTML report of a capacity document (``run_capacity``'s, or one read back from its
    JSON): the power law is refitted from the LoRA rows. Adds ``power_law`` to ``doc``."""
    curve, lora = doc["curve"], doc["lora"]
    law = loss_law(lora)
    doc["power_law"] = law if isinstance(law, str) else {**asdict(law), "formula": law.formula()}
    report = Report(
        "capacity",
        f"Fast-memory capacity: {doc['model']}",
        figures.finding(curve),
        tuple(figures.panels(curve, lora, law, doc.get("search", []))),
        doc["header"],
        {
            "curve": curve,
            "search": doc.get("search", []),
            "lora": lora,
            "power_law": doc["power_law"],
        },
    )
    out = (
        Path(out_dir)
        if out_dir is not None
        else Path("reports") / report_name(doc["model"], doc["header"]["model"].get("revision"))
    )
    return write_report(report, out)
