"""Key geometry: how the memory's keys for the same and different bindings sit (compute), and
its figures."""

from __future__ import annotations

from analyses.key_geometry import compute, figures
from analyses.prepare import Setup, make_report
from fmi.reporting.report import Report

NAME, TITLE = compute.NAME, compute.TITLE
__all__ = ["NAME", "TITLE", "compute", "figures", "report"]


def report(setup: Setup, *, progress: bool = True) -> Report:
    """Compute this analysis on a fitted ``setup`` and wrap its figures in a :class:`Report`."""
    return make_report(setup, compute, figures, progress=progress)
