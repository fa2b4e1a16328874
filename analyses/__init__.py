"""Analyses of why the fast memory works or fails. Each module computes data, builds Plotly
figures, and returns a :class:`fmi.reporting.report.Report`; :mod:`analyses.run` writes them all."""
