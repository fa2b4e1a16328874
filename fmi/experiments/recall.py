"""``fmi recall``: fit on the training split, evaluate every split, return the JSON document."""

from __future__ import annotations

import time

import torch
from tqdm import tqdm

from fmi.core.numerics import fixed_numerics
from fmi.experiments.builtin_tasks import builtin_task
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import evaluate_split
from fmi.experiments.labels import check_labels
from fmi.experiments.run_folder import RunFolder
from fmi.experiments.taskfile import load_task
from fmi.experiments.tasks import Task
from fmi.memory.fit import fit
from fmi.memory.retrieve import shown_name
from fmi.reporting.provenance import header


def task_for(cfg: RecallConfig) -> Task:
    """The built-in task sized by ``cfg`` (its seed, n_train, n_eval; with the multi-token
    splits when ``cfg.end`` is set), or a task file."""
    if cfg.task == "builtin":
        return builtin_task(
            seed=cfg.seed,
            n_train=cfg.n_train,
            n_eval=cfg.n_eval,
            multi=cfg.end is not None,
            n_unrelated=cfg.n_unrelated,
        )
    return load_task(cfg.task, seed=cfg.seed, n_train=cfg.n_train)


def run_recall(
    model, task: Task, cfg: RecallConfig, *, progress: bool = True, units: RunFolder | None = None
) -> dict:
    """The whole experiment, run with ``cfg.threads`` threads and deterministic algorithms.

    Bit-identical for the same weights, task, config and numerics (header ``numerics``),
    whatever the caller's thread count or the machine's load. With ``units`` (a
    :class:`~fmi.experiments.run_folder.RunFolder`, see :func:`recall_fingerprint`) each
    finished split is kept there and a split already there is not run again: the fit is
    deterministic, so a resumed run's results equal an uninterrupted run's.

    >>> import fmi
    >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
    >>> task = fmi.builtin_task(seed=0, n_train=12, n_eval=6)
    >>> cfg = fmi.RecallConfig.quick(splits=("same",), modes=("dual_key",))
    >>> doc = fmi.run_recall(model, task, cfg, progress=False)
    >>> sorted(doc["results"]), sorted(doc["results"]["dual_key"])[:1]
    (['dual_key', 'none'], ['same'])
    """
    with fixed_numerics(cfg.threads):
        return _run_recall(model, task, cfg, progress=progress, units=units)


def recall_fingerprint(model, task: Task, cfg: RecallConfig) -> dict:
    """What a recall run folder must match to be resumed: the configuration, the task and the
    model (:func:`fmi.models.fingerprint.model_fingerprint`, the one a memory file records)."""
    from fmi.models.fingerprint import model_fingerprint

    return {
        "command": "recall",
        "config": cfg.to_dict(),
        "task": task.to_dict(),
        "model": model_fingerprint(model),
    }


def _run_recall(
    model, task: Task, cfg: RecallConfig, *, progress: bool, units: RunFolder | None
) -> dict:
    torch.manual_seed(cfg.seed)
    for name in cfg.splits:
        task.split(name)  # an unknown name fails here, listing the splits, before any work
    check_labels(task, model.tokenizer, multi_token=cfg.end is not None)
    start = time.perf_counter()
    fitted = fit(model, task.train, cfg)
    results: dict[str, dict[str, dict]] = {}
    chosen = [task.split(name) for name in cfg.splits] if cfg.splits else list(task.splits)
    splits = tqdm(chosen, desc="splits", disable=not progress, leave=False)
    for split in splits:
        splits.set_postfix_str(split.name)
        rows = units.get(split.name) if units is not None else None
        if rows is None:
            rows = {
                shown_name(mode): row
                for mode, row in evaluate_split(model, split, fitted, cfg, cfg.modes).items()
            }
            if units is not None:
                units.put(split.name, rows)
        for mode, row in rows.items():
            results.setdefault(mode, {})[split.name] = row
    return {
        "model": model.name,
        "task": task.name,
        "results": results,
        "config": cfg.to_dict(),
        "fitted": fitted.to_dict(),
        "task_info": task.to_dict(),
        "header": header(model, cfg.to_dict(), wall_seconds=round(time.perf_counter() - start, 1)),
    }
