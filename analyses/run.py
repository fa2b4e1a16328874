"""``fmi analyses``: fit the memory once, run every analysis, write the reports and an index."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from analyses import (
    correction_vs_steering,
    key_geometry,
    layer_sweep,
    probes,
    relation_geometry,
)
from analyses.prepare import AnalysisConfig, Setup, prepare
from fmi.errors import ConfigError
from fmi.experiments.run_folder import RunFolder
from fmi.models.fingerprint import model_fingerprint
from fmi.models.registry import LoadedModel
from fmi.reporting.report import write_index, write_report

ANALYSES: dict[str, ModuleType] = {
    m.NAME: m
    for m in (key_geometry, layer_sweep, correction_vs_steering, probes, relation_geometry)
}


def check_names(names: Sequence[str]) -> list[str]:
    """``names`` if every one is an analysis, else a ConfigError naming the ones that exist."""
    bad = [n for n in names if n not in ANALYSES]
    if bad or not names:
        raise ConfigError(
            f"unknown analysis {', '.join(bad) or '(none given)'}; analyses are "
            + ", ".join(ANALYSES)
        )
    return list(names)


def default_out(model_name: str) -> Path:
    return Path("reports") / model_name


def run_analyses(
    cfg: AnalysisConfig,
    out_dir: str | Path | None = None,
    *,
    names: Sequence[str] = tuple(ANALYSES),
    setup: Setup | None = None,
    model: LoadedModel | None = None,
    progress: bool = True,
    announce: Callable[[str], None] = print,
    resume: bool = False,
) -> Path:
    """Run ``names`` on ``cfg.model`` and write ``<out>/<name>.html`` plus ``<out>/index.html``.

    ``setup`` reuses an already fitted memory (tests); otherwise the model (unless given) is
    loaded and the memory fitted once here. Each finished analysis is kept in
    ``<out>/analyses.run/``; with ``resume`` those are not run again (the run folder must
    belong to the same configuration and model). Returns the index path.
    """
    names = check_names(names)
    start = time.perf_counter()
    if setup is None:
        announce(f"fmi: fitting the memory on {cfg.model} (training split only)")
        setup, seconds = prepare(cfg, model=model, announce=announce)
        announce(f"fmi: fitted in {seconds:.0f} s")
    out = Path(out_dir) if out_dir is not None else default_out(setup.model.slug)
    units = RunFolder(out / "analyses.run", _fingerprint(setup, names), resume=resume)
    entries: list[tuple[str, str, str]] = []
    for name in names:
        done = units.get(name)
        if done is not None and (out / done[0]).exists():
            announce(f"fmi: {name} already finished ({out / done[0]})")
            entries.append(tuple(done))
            continue
        announce(f"fmi: running {name}")
        rep = ANALYSES[name].report(setup, progress=progress)
        path = write_report(rep, out)
        entries.append((path.name, rep.title, rep.finding))
        units.put(name, [path.name, rep.title, rep.finding])
        announce(f"fmi: wrote {path} in {rep.header['wall_seconds']} s: {rep.finding}")
    entries += _inspections(setup, out, announce)
    title = f"fmi analyses: {setup.model.name}"
    index = write_index(title, entries, setup.header(time.perf_counter() - start), out)
    units.remove()
    announce(f"fmi: wrote {index} ({time.perf_counter() - start:.0f} s in all)")
    return index


def _fingerprint(setup: Setup, names: Sequence[str]) -> dict:
    """What an analyses run folder must match to be resumed."""
    return {
        "command": "analyses",
        "config": setup.cfg.to_dict(),
        "analyses": list(names),
        "model": model_fingerprint(setup.model),
    }


def _inspections(
    setup: Setup, out: Path, announce: Callable[[str], None]
) -> list[tuple[str, str, str]]:
    """circuitsvis pages for the first held-out binding of each evaluation context pair."""
    from analyses.inspect.figures import write_inspection
    from analyses.inspect.run import inspect_from_setup

    pages = []
    for split_name in ("same", "new_lab"):
        b = setup.task.split(split_name).bindings[0]
        start = time.perf_counter()
        ins = inspect_from_setup(setup, b.context, b.symbol, b.label)
        head = setup.header(time.perf_counter() - start)
        path = write_inspection(ins, out / f"inspect-{split_name}.html", head)
        pages.append((path.name, f"inspect: {b.context}, {b.symbol}", ins.summary()))
        announce(f"fmi: wrote {path}")
    return pages
