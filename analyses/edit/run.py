"""``fmi edit``: every editing method on the same edits, held T at a time, scored the same way.

1. The data: a bundled benchmark's evaluation part, or a user's CounterFact / ZsRE file whole;
   the training part (always a bundled one) fits the memory and tunes every baseline.
2. Each method is set up on the training part (:mod:`analyses.edit.tune`), within the budget its
   ``tuning`` entry records.
3. For every seed and T, the unedited model decodes every probe once (the reference of
   specificity and ``unrelated_changed``); then each method writes each group's edits one after
   another and the group is scored after the last (:mod:`analyses.edit.score`).

The document: ``results[method][T]`` with every metric, ``<metric>_ci``, ``<metric>_n``,
``<metric>_clusters`` (:mod:`analyses.edit.rates`), ``seconds_per_edit``, forward and backward
passes per edit, ``n`` (edits scored) and ``failures`` (:mod:`analyses.edit.failures`); a cell
that was not run has ``not_run`` with the reason.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from analyses.edit import tune
from analyses.edit.bundled.files import BUNDLED, bundled_path, load_bundled, load_unrelated
from analyses.edit.cases import EditCase
from analyses.edit.config import EditConfig
from analyses.edit.failures import failure_log
from analyses.edit.loaders import _records, detect_format, load_cases
from analyses.edit.method import Cost, Held, Method
from analyses.edit.methods import TooLong
from analyses.edit.score import (
    Outcome,
    cases_scored,
    groups,
    max_tokens,
    probes,
    score_group,
    summary,
)
from fmi.errors import ConfigError
from fmi.reporting.provenance import header

LITERATURE = {
    "note": "context only: other models, other data, teacher-forced or published scoring",
    "WISE, 1,000 ZsRE edits, Mistral-7B (reliability / generalization / locality)": [
        0.70,
        0.67,
        1.00,
    ],
    "ROME, 1 ZsRE edit, Llama-2-7B (EasyEdit)": [92.45, 87.04, 99.63],
    "MEMIT, 1 ZsRE edit, Llama-2-7B (EasyEdit)": [92.94, 85.97, 99.49],
}


@dataclass(frozen=True)
class Data:
    """What one run edits and what it tunes on."""

    name: str
    train: list[EditCase]
    eval: list[EditCase]
    unrelated_train: list[str]
    unrelated_eval: list[str]
    info: dict[str, Any]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_data(cfg: EditConfig) -> Data:
    """The bundled benchmark ``cfg.data`` (its two parts), or the user's file (evaluated whole,
    tuned on ``known-cf``'s training part)."""
    u_train, u_eval = load_unrelated()
    u_eval = u_eval[: cfg.unrelated] if cfg.unrelated else u_eval
    if cfg.data in BUNDLED:
        train, eval_ = load_bundled(cfg.data)
        path, fmt = bundled_path(cfg.data), "counterfact"
    else:
        path = Path(cfg.data)
        eval_ = load_cases(path, cfg.format)
        train, _ = load_bundled("known-cf")
        fmt = cfg.format if cfg.format != "auto" else detect_format(_records(path)[0])
    ids = [c.case_id for c in eval_]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: case ids are not unique")
    info = {
        "source": str(path),
        "sha256": _sha256(path),
        "format": fmt,
        "eval_cases": len(eval_),
        "train_cases": len(train),
        "train_source": cfg.data if cfg.data in BUNDLED else "known-cf",
        "unrelated": {"train": len(u_train), "eval": len(u_eval)},
    }
    name = cfg.data if cfg.data in BUNDLED else path.stem
    return Data(name, train, eval_, u_train, u_eval, info)


def _cell(outcomes: list[Outcome], cost: Cost, written: int, extra: dict) -> dict[str, Any]:
    """A results cell: every metric with ``<metric>_ci``, ``_n`` and ``_clusters``
    (:func:`analyses.edit.rates.summary`), the cost per edit, ``n`` and the ``failures`` log
    (:func:`analyses.edit.failures.failure_log`)."""
    out: dict[str, Any] = summary(outcomes)
    out.update({k: round(v, 6) for k, v in cost.per_edit(written).items()})
    out["n"] = cases_scored(outcomes)
    out["edits_written"] = written
    out.update(extra)
    out["failures"] = failure_log(outcomes)
    return out


def run_cell(
    model,
    method: Method,
    data: Data,
    held: int,
    seed: int,
    base: dict[str, tuple[int, ...]],
    cfg: EditConfig,
    steps: int,
    budget_left: float,
    progress: bool = False,
) -> tuple[list[Outcome], Cost, int, dict[str, Any]]:
    """Score ``method`` at T = ``held`` for one seed: every group written then scored
    (``progress``: a bar of the groups on stderr)."""
    cost = Cost()
    outcomes: list[Outcome] = []
    written = 0
    plan = groups(data.eval, held, cfg.scored, data.unrelated_eval, seed)
    start = time.perf_counter()
    stopped = ""
    bar = tqdm(plan, desc=f"edit: {method.name} T={held}", disable=not progress, leave=False)
    for g, group in enumerate(bar):
        with method.edited(model, group.edits, cost) as h:
            got, _ = score_group(
                model,
                h,
                probes(model.tokenizer, group),
                base,
                max_new_tokens=steps,
                batch_size=cfg.batch_size,
            )
        outcomes.extend(got)
        written += len(group.edits)
        if cost.seconds > budget_left and g + 1 < len(plan):
            stopped = f"stopped after {g + 1} of {len(plan)} groups: write budget spent"
            break
    bar.close()
    extra: dict[str, Any] = {
        "groups": len(plan),
        "score_seconds": round(time.perf_counter() - start - cost.seconds, 1),
    }
    if stopped:
        extra["stopped"] = stopped
    return outcomes, cost, written, extra


def reference(model, data: Data, cfg: EditConfig, seed: int, steps: int):
    """The unedited model's new tokens for every probe of every T (they share one prompt set:
    the same scored edits and the same generic prompts), each prompt decoded once."""
    found = {
        p.prompt: p
        for t in cfg.edits
        for group in groups(
            data.eval, min(t, len(data.eval)), cfg.scored, data.unrelated_eval, seed
        )
        for p in probes(model.tokenizer, group)
    }
    _, base = score_group(
        model, Held(), list(found.values()), None, max_new_tokens=steps, batch_size=cfg.batch_size
    )
    return base


def run_edit(
    model,
    cfg: EditConfig,
    *,
    announce: Callable[[str], None] = print,
    progress: bool = False,
    partial: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark on a loaded ``model``; returns the JSON-ready document. ``progress``:
    bars on stderr (methods set up and their tuning grids, cells, each cell's groups, the
    examples). ``partial`` receives the document after every cell, with ``"partial"`` saying
    how many cells are done (no examples yet), so an interrupted run leaves its finished
    cells behind (``fmi edit --json`` writes each one)."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seeds[0])
    data = load_data(cfg)
    steps = cfg.max_new_tokens or max_tokens(model.tokenizer, data.eval + data.train)
    announce(
        f"fmi edit: {data.name}, {len(data.eval)} evaluation edits, tuning on {len(data.train)}"
        f" training edits, {steps} greedy tokens per prompt"
    )
    methods, tuning = tune.set_up(model, cfg, data, steps, announce, progress)
    sizes = sorted({min(t, len(data.eval)) for t in cfg.edits})

    def document(results: dict, examples: dict) -> dict[str, Any]:
        head = header(
            model,
            cfg.to_dict(),
            data=data.info,
            seeds={"orders": list(cfg.seeds)},
            greedy_tokens=steps,
            wall_seconds=round(time.perf_counter() - start, 1),
        )
        return {
            "header": head,
            "data": data.name,
            "edits": sizes,
            "methods": {
                m: {"settings": methods[m].settings(), "tuning": tuning[m]} for m in cfg.methods
            },
            "results": results,
            "examples": examples,
            "literature": LITERATURE,
        }

    on_cell = None
    if partial is not None:

        def on_cell(results: dict, done: int, cells: int) -> None:
            doc = document(copy.deepcopy(results), {})  # a snapshot: later cells add to it
            partial({"partial": f"{done} of {cells} cells done; examples not decoded", **doc})

    results = run_cells(model, methods, data, cfg, sizes, steps, announce, progress, on_cell)
    return document(results, _examples(model, methods, data, cfg, steps, progress))


Pooled = dict[tuple[str, int], tuple[list[Outcome], Cost, int, dict]]
"""(method, T) -> the outcomes, cost, edits written and extras of the seeds run so far."""


def run_cells(
    model,
    methods: dict[str, Method],
    data: Data,
    cfg: EditConfig,
    sizes: list[int],
    steps: int,
    announce: Callable[[str], None] = print,
    progress: bool = False,
    on_cell: Callable[[dict[str, dict[str, Any]], int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """``results[method][str(T)]``: every method at every T in ``sizes``, pooled over the seeds
    (each seed's unedited outputs decoded once). A cell whose estimated writing time (from the
    slowest smaller T) exceeds ``cfg.cell_budget_s``, or whose edits do not fit, is ``not_run``
    with the reason, and is not tried again for a later seed. ``progress``: a bar of the
    (seed, method, T) cells and one of each cell's groups, on stderr. ``on_cell(results,
    done, cells)`` is called after each (seed, method, T) cell: ``done`` of ``cells``."""
    results: dict[str, dict[str, Any]] = {m: {} for m in cfg.methods}
    done = 0
    pooled: Pooled = {}
    cells = len(cfg.seeds) * len(cfg.methods) * len(sizes)
    bar = tqdm(total=cells, desc="edit: cells", disable=not progress, leave=False)
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        base = reference(model, data, cfg, seed, steps)
        announce(f"fmi edit: seed {seed}: unedited outputs in {time.perf_counter() - t0:.0f} s")
        for name in cfg.methods:
            per_edit = 0.0
            for t in sizes:
                bar.set_postfix_str(f"seed {seed} {name} T={t}")
                bar.update()
                per_edit = _one_cell(
                    model, methods, data, cfg, (seed, name, t), base, steps, progress,
                    results, pooled, per_edit, announce,
                )  # fmt: skip
                done += 1
                if on_cell is not None:
                    on_cell(results, done, cells)
    bar.close()
    return results


def _one_cell(
    model, methods, data, cfg, key, base, steps, progress, results, pooled, per_edit, announce
) -> float:
    """Run (seed, method, T) = ``key`` into ``results`` unless it is over budget or was not
    run for an earlier seed; returns the slowest seconds per edit seen so far."""
    seed, name, t = key
    if "not_run" in results[name].get(str(t), {}):
        return per_edit
    estimate = per_edit * _edits_written(data, t, cfg, seed)
    if estimate > cfg.cell_budget_s:
        results[name][str(t)] = {
            "not_run": f"estimated {estimate:.0f} s of writing ({per_edit:.2f} s per "
            f"edit at smaller T) exceeds the cell budget of {cfg.cell_budget_s:.0f} s"
        }
        return per_edit
    try:
        got = run_cell(
            model,
            methods[name],
            data,
            t,
            seed,
            base,
            cfg,
            steps,
            cfg.cell_budget_s,
            progress,
        )
    except TooLong as err:
        results[name][str(t)] = {"not_run": str(err)}
        return per_edit
    results[name][str(t)] = _pooled_cell(pooled, (name, t), got)
    _announce_cell(announce, name, t, results[name][str(t)])
    return max(per_edit, got[1].seconds / max(1, got[2]))


def _pooled_cell(
    pooled: Pooled, key: tuple[str, int], got: tuple[list[Outcome], Cost, int, dict]
) -> dict[str, Any]:
    """The cell of ``got`` summed with the earlier seeds' run of ``key`` (``pooled``, updated)."""
    outs, cost, written, extra = got
    if key in pooled:
        o0, c0, w0, e0 = pooled[key]
        merged = Cost(
            c0.seconds + cost.seconds,
            c0.forward + cost.forward,
            c0.backward + cost.backward,
            dict(c0.extra),
        )
        for name, (seconds, edits) in cost.extra.items():
            merged.note(name, seconds, edits)
        cost = merged
        outs, written = o0 + outs, w0 + written
    pooled[key] = (outs, cost, written, extra)
    return _cell(outs, cost, written, extra)


def _announce_cell(announce: Callable[[str], None], name: str, t: int, cell: dict) -> None:
    extra = "".join(
        f" {label} {_fmt(cell.get(key))}"
        for key, label in (
            ("relation_specificity", "relation"),
            ("portability_alias", "alias"),
            ("portability_one_hop", "one_hop"),
        )
        if cell.get(key) is not None
    )
    announce(
        f"fmi edit: {name:<12} T={t:<5} efficacy {_fmt(cell['efficacy'])} "
        f"generalization {_fmt(cell['generalization'])} specificity "
        f"{_fmt(cell['specificity'])} unrelated_changed "
        f"{_fmt(cell['unrelated_changed'])}{extra} ES {_fmt(cell.get('es'))} PS "
        f"{_fmt(cell.get('ps'))} NS {_fmt(cell.get('ns'))}  {len(cell.get('failures', []))} "
        f"failing  {cell['seconds_per_edit']:.3f} s/edit"
    )


def _edits_written(data: Data, t: int, cfg: EditConfig, seed: int) -> int:
    return sum(len(g.edits) for g in groups(data.eval, t, cfg.scored, [], seed))


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def _examples(
    model,
    methods: dict[str, Method],
    data: Data,
    cfg: EditConfig,
    steps: int,
    progress: bool = False,
):
    """Three edits held at once, and what each method decodes at their rewrite prompts
    (``progress``: a bar of the methods on stderr)."""
    from fmi.core.generate import decode

    cases = groups(data.eval, 3, 3, [], cfg.seeds[0])[0].edits
    out: dict[str, Any] = {
        "cases": [
            {"prompt": c.rewrite, "target_new": c.target_new, "target_true": c.target_true}
            for c in cases
        ]
    }
    shown = tqdm(methods.items(), desc="edit: examples", disable=not progress, leave=False)
    for name, method in shown:
        try:
            with method.edited(model, cases, Cost()) as h:
                got = decode(
                    model, h.prompts([c.rewrite for c in cases]), h.hooks_for, max_new_tokens=steps
                )
        except TooLong:
            continue
        out[name] = [model.tokenizer.decode(list(t), skip_special_tokens=True) for t in got.tokens]
    return out


def write_outputs(doc: dict[str, Any], json_path: str | Path | None, out_dir: str | Path) -> Path:
    """The HTML report (and the JSON when asked), each written atomically."""
    from analyses.edit.figures import report
    from fmi.reporting.atomic import write_json
    from fmi.reporting.report import write_report

    if json_path is not None:
        write_json(json_path, doc)
    return write_report(report(doc), out_dir)
