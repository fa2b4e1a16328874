"""``fmi compare``: the fast memory against the alternatives, on the same prompts and metrics.

The memory is fitted once on the training split (as ``fmi recall`` fits it). Then, on each
evaluation split, the bindings are written once, every query is decoded once without memory, and
each method produces its own outputs, scored by the recall experiment's metrics and intervals.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from analyses.compare import (
    entropy_gate,
    figures,
    grace,
    gradmem,
    in_context,
    iterated,
    steering_baseline,
)
from analyses.compare.attention_entropy import split_attention
from analyses.compare.config import MEMORY_MODES, CompareConfig
from analyses.compare.rows import Cost, Row
from analyses.compare.soft_prefix.rows import soft_prefix_rows
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import (
    Outputs,
    SplitRun,
    mode_outputs,
    mode_summaries,
    prepare_split,
    summarize,
)
from fmi.experiments.labels import check_labels
from fmi.experiments.recall import task_for
from fmi.experiments.run_folder import RunFolder
from fmi.memory.fit import Fitted, fit
from fmi.memory.retrieve import Decision, shown_name
from fmi.models.fingerprint import model_fingerprint
from fmi.models.registry import LoadedModel, load_model
from fmi.reporting.atomic import write_json
from fmi.reporting.provenance import header
from fmi.reporting.report import Report, write_report


class Stopwatch:
    """Runs ``fn`` under a name, announces and records its wall time."""

    def __init__(self, prefix: str, announce: Callable[[str], None]) -> None:
        self.prefix, self.announce = prefix, announce
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = fn()
        self.seconds[name] = round(time.perf_counter() - start, 1)
        self.announce(f"{self.prefix}{name} in {self.seconds[name]} s")
        return result


def memory_rows(
    model, run: SplitRun, cfg: CompareConfig, write_cost: Cost
) -> tuple[list[Row], tuple[Decision, Outputs]]:
    """The fast memory's own rows, and the ``dual_key`` decision and outputs other rows reuse."""
    modes = tuple(dict.fromkeys((*MEMORY_MODES, "dual_key")))
    decisions, outputs = mode_outputs(model, run, cfg.recall, modes)
    shown = {m: decisions[m] for m in MEMORY_MODES}
    summaries = mode_summaries(model, run, cfg.recall, shown, outputs)
    rows = [
        Row(f"fast memory: {shown_name(m)}", "fast memory", summaries[m], write_cost) for m in shown
    ]
    return rows, (decisions["dual_key"], outputs["dual_key"])


def compare_split(
    model,
    train_split,
    run: SplitRun,
    fitted: Fitted,
    cfg: CompareConfig,
    taus: dict[str, float],
    progress: bool = False,
    announce: Callable[[str], None] = print,
    attention_taus: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Every method's row on one prepared split, plus the curves behind the figures
    (``attention_taus``: the attention-entropy gate's training thresholds; none, no row)."""
    n = len(run.entries)
    write_cost = Cost(1, 0, run.write_seconds, f"one batched frozen forward over {n} statements")
    timed = Stopwatch(f"fmi: {run.split.name}: ", announce)  # type: ignore[attr-defined]
    rows, curves = baseline_rows(model, train_split, run, fitted, cfg, progress, timed)
    mem_rows, (dual, dual_out) = timed(
        "fast memory", lambda: memory_rows(model, run, cfg, write_cost)
    )
    written, written_curves = written_rows(model, train_split, run, cfg, dual, timed)
    gated, entropy = gated_rows(
        model, run, cfg.recall, taus, attention_taus, (dual, dual_out), write_cost, timed
    )
    rows += written + gated + mem_rows
    return {
        "rows": [r.to_dict() for r in rows],
        **curves,
        **written_curves,
        "entropy": entropy,
        "seconds": timed.seconds,
    }


def baseline_rows(
    model,
    train_split,
    run: SplitRun,
    fitted: Fitted,
    cfg: CompareConfig,
    progress: bool,
    timed: Stopwatch,
) -> tuple[list[Row], dict[str, Any]]:
    """The rows run before the fast memory's: no memory, in-context, steering and GRACE, with
    GRACE's ``eps_init`` curve (``"grace"``) and the steering sweeps (``"steering_sweeps"``)."""
    rc = cfg.recall
    rows: list[Row] = [
        Row(
            "no memory",
            "none",
            summarize(run.hits(model, run.base_outputs), run.qs, rc),
            Cost(0, 0, 0.0),
        )
    ]
    rows += timed(
        "in-context",
        lambda: [
            in_context.in_context_row(model, run, rc, v, train_split) for v in in_context.VARIANTS
        ],
    )
    steer_rows, sweeps = timed(
        "steering",
        lambda: steering_baseline.steering_rows(model, train_split, run, rc, cfg, progress),
    )
    rows += steer_rows
    code_rows, curve = timed(
        "GRACE", lambda: grace.grace_rows(model, train_split, run, fitted, rc, cfg)
    )
    rows += code_rows
    return rows, {"grace": curve, "steering_sweeps": sweeps}


def written_rows(
    model, train_split, run: SplitRun, cfg: CompareConfig, dual: Decision, timed: Stopwatch
) -> tuple[list[Row], dict[str, Any]]:
    """The rows of other values written for the split's statements: iterated values and GradMem
    (read with ``dual``'s retrieval) and GradMem's always-on soft prefix, with GradMem's and
    the prefix's curves (``"gradmem"``, ``"soft_prefix"``)."""
    rc = cfg.recall
    rows: list[Row] = [
        *timed(
            "iterated value",
            lambda: iterated.iterated_rows(model, run, rc, list(cfg.refine_steps), dual),
        )
    ]
    grad_rows, grad = timed(
        "GradMem", lambda: gradmem.gradmem_rows(model, run, rc, cfg, dual, train_split)
    )
    rows += grad_rows
    prefix_rows, prefix = timed(
        "GradMem soft prefix",
        lambda: soft_prefix_rows(model, run, rc, cfg.soft_prefix, train_split),
    )
    rows += prefix_rows
    return rows, {"gradmem": grad, "soft_prefix": prefix}


def gated_rows(
    model,
    run: SplitRun,
    rc: RecallConfig,
    taus: dict[str, float],
    attention_taus: dict[str, float] | None,
    dual: tuple[Decision, Outputs],
    write_cost: Cost,
    timed: Stopwatch,
) -> tuple[list[Row], dict]:
    """The entropy-gated ``dual_key`` rows (the attention-entropy one when ``attention_taus``
    are given) and the entropies the report plots (:func:`entropy_gate.entropy_data`)."""
    decision, outputs = dual
    rows = [entropy_gate.gated_row(model, run, rc, taus, decision, outputs, write_cost)]
    attention = None
    if attention_taus is not None:
        attention = timed("attention entropy", lambda: split_attention(model, run, rc))
        rows.append(
            entropy_gate.attention_gated_row(
                model, run, rc, attention_taus, decision, outputs, write_cost, attention=attention
            )
        )
    return rows, entropy_gate.entropy_data(run, taus, attention, attention_taus)


def run_compare(
    cfg: CompareConfig,
    out_dir: str | Path | None = None,
    *,
    model: LoadedModel | None = None,
    json_path: str | Path | None = None,
    progress: bool = True,
    announce: Callable[[str], None] = print,
    resume: bool = False,
) -> tuple[dict[str, Any], Path]:
    """Fit, compare on every split in ``cfg.splits``, write ``compare.html``/``.json``.

    Each finished split is kept in ``<out>/compare.run/``; with ``resume`` those splits are not
    run again (the folder must belong to the same configuration and model)."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if model is None:
        model = load_model(cfg.model, seed=cfg.seed, announce=announce)
    rc = cfg.recall
    task = task_for(rc)
    splits = [task.split(name) for name in cfg.splits]  # unknown names fail before any work
    check_labels(task, model.tokenizer)
    announce(f"fmi: fitting the memory on {model.name} (training split only)")
    fitted = fit(model, task.train, rc)
    taus = entropy_gate.training_thresholds(model, task.train, rc, cfg.entropy_keep)
    attention_taus = entropy_gate.training_thresholds(
        model, task.train, rc, cfg.entropy_keep, signal="attention"
    )
    announce(f"fmi: fitted in {time.perf_counter() - start:.0f} s")
    out = Path(out_dir) if out_dir is not None else Path("reports") / model.slug
    fingerprint = {
        "command": "compare",
        "config": cfg.to_dict(),
        "model": model_fingerprint(model),
    }
    units = RunFolder(out / "compare.run", fingerprint, resume=resume)
    results = {}
    for split in splits:
        done = units.get(split.name)
        if done is not None:
            announce(f"fmi: split {split.name} already finished")
            results[split.name] = done
            continue
        run = prepare_split(model, split, fitted, rc)
        results[split.name] = json.loads(
            json.dumps(
                compare_split(
                    model, task.train, run, fitted, cfg, taus, progress, announce, attention_taus
                ),
                default=str,
            )
        )  # as the unit keeps it, so a resumed run builds the same figures from the same data
        units.put(split.name, results[split.name])
    head = _header(model, cfg, fitted, task, splits, round(time.perf_counter() - start, 1))
    doc = {"model": model.name, "task": task.name, "splits": results, "header": head}
    report = Report(
        "compare",
        f"Fast memory vs baselines: {model.name}",
        figures.finding(results),
        tuple(figures.panels(results)),
        head,
        {"splits": results},
    )
    path = write_report(report, out)
    if json_path is not None:
        write_json(json_path, doc)
    units.remove()
    return doc, path


def _header(model, cfg: CompareConfig, fitted: Fitted, task, splits, wall: float) -> dict:
    """The provenance header: model, flags, config, sites, alpha, seeds, sizes, wall time."""
    return header(
        model,
        cfg.to_dict(),
        sites={
            "symbol_key": fitted.encoder.symbol_site,
            "token_key": fitted.encoder.token_site,
            "inject": cfg.recall.inject_site,
        },
        alpha={"alpha": fitted.alpha, "rho": fitted.rho},
        seeds={"seed": cfg.seed, "task_seed": task.seed},
        task_sizes={s.name: len(s.bindings) for s in (task.train, *splits)},
        fitted=fitted.to_dict(),
        wall_seconds=wall,
    )
