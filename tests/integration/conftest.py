"""Fixtures of the analysis layer: a fitted analysis setup, every analysis' reports, and the
quick comparison. Only integration tests see them."""

from __future__ import annotations

import pytest


def _quiet(_: str) -> None:
    """Swallow load announcements in tests."""


@pytest.fixture(scope="session")
def quick_setup(tiny_gemma):
    """A memory fitted on the quick analysis configuration over ``tiny_gemma`` (seconds)."""
    from analyses.prepare import AnalysisConfig, prepare

    setup, _ = prepare(AnalysisConfig.quick_config(), model=tiny_gemma, announce=_quiet)
    return setup


@pytest.fixture(scope="session")
def quick_reports(quick_setup, tmp_path_factory):
    """Every analysis run on ``quick_setup`` into one directory: ``(directory, index path)``."""
    from analyses.run import run_analyses

    out = tmp_path_factory.mktemp("reports")
    index = run_analyses(quick_setup.cfg, out, setup=quick_setup, progress=False, announce=_quiet)
    return out, index


@pytest.fixture(scope="session")
def quick_compare(tiny_gemma):
    """The quick comparison's config, task, fit and prepared ``same`` split on tiny-gemma."""
    from analyses.compare.config import CompareConfig
    from fmi.experiments.evaluate import prepare_split
    from fmi.experiments.recall import task_for
    from fmi.memory.fit import fit

    cfg = CompareConfig.quick_config()
    task = task_for(cfg.recall)
    fitted = fit(tiny_gemma, task.train, cfg.recall)
    run = prepare_split(tiny_gemma, task.split("same"), fitted, cfg.recall)
    return cfg, task, fitted, run
