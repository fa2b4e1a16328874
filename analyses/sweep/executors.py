"""Where a sweep's cells run: ``local`` (this process, in order) or ``ray`` (one Ray task per
cell). Both call :func:`analyses.sweep.cells.run_cell` and hand each finished cell's document
to the same ``done`` callback (the writer) in this process, as it finishes.

Ray connects to ``RAY_ADDRESS`` when it is set, else starts a local instance with the cores
this machine has (at least one task's worth). A task asks for ``threads`` CPUs (the recall's
``RecallConfig.threads``) and one GPU when the cells run on CUDA; scheduling, placement and
retries of a task whose worker died are Ray's. Each worker process keeps the last model it
loaded (:func:`analyses.sweep.cells.cached_model`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from analyses.sweep.cells import Cell, cached_model, check_sites, run_cell
from fmi.errors import ConfigError, FmiError

Done = Callable[[Cell, dict[str, Any]], None]
RAY_INSTALL = "--executor ray needs Ray: pip install -e '.[ray]'"


def local(cells: Sequence[Cell], done: Done) -> None:
    """Run ``cells`` in this process, in order (grouped by model, one model loaded at a time).
    When a model loads, the sites of all its cells are checked before the first runs.

    >>> local([], lambda cell, doc: None)
    """
    checked: set[tuple] = set()
    for cell in cells:
        if cell.model_key not in checked:
            model = cached_model(cell.model_key)
            for other in cells:
                if other.model_key == cell.model_key:
                    check_sites(model, other)
            checked.add(cell.model_key)
        done(cell, run_cell(cell))


def require_ray():
    """The ``ray`` module, or ``ConfigError`` saying how to install it.

    >>> import importlib.util
    >>> require_ray().__name__ if importlib.util.find_spec("ray") else "ray"
    'ray'
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_INSTALL) from None
    return ray


def _gpus(ray, device: str) -> int:
    if device.startswith("cuda"):
        return 1
    if device == "auto":
        return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return 0


def _local_cpus(task_cpus: int) -> int:
    return max(task_cpus, os.cpu_count() or 1)


def ray_executor(cells: Sequence[Cell], done: Done) -> None:
    """One Ray task per cell; each finished cell is handed to ``done`` as it comes back. A cell
    that fails with an fmi error (a layer beyond the model's depth) raises that error here.

    >>> ray_executor([], lambda cell, doc: None)
    """
    if not cells:
        return
    ray = require_ray()
    started = not ray.is_initialized()
    threads = max(int(c.recall.threads) for c in cells)
    if started:
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=_local_cpus(threads), include_dashboard=False)
    try:
        task = ray.remote(num_cpus=threads, num_gpus=_gpus(ray, cells[0].device))(run_cell)
        pending = {task.remote(cell): cell for cell in cells}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    doc = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    if isinstance(err.cause, FmiError):
                        raise err.cause from None
                    raise
                done(cell, doc)
    finally:
        if started:
            ray.shutdown()


EXECUTORS: dict[str, Callable[[Sequence[Cell], Done], None]] = {
    "local": local,
    "ray": ray_executor,
}
