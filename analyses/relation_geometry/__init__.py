"""Relation geometry: where a fact's paraphrase parts from its subject's other facts and from
look-alike names, per layer and key site (compute), and its figures."""

from __future__ import annotations

from analyses.prepare import Setup, make_report
from analyses.relation_geometry import compute, figures
from fmi.reporting.report import Report

NAME, TITLE = compute.NAME, compute.TITLE
__all__ = ["NAME", "TITLE", "compute", "figures", "report"]


def report(setup: Setup, *, progress: bool = True) -> Report:
    """Compute this analysis on a fitted ``setup`` and wrap its figures in a :class:`Report`."""
    return make_report(setup, compute, figures, progress=progress)
