"""The analysis layer: everything that runs an experiment on the library (:mod:`fmi`) and
writes a report.

Each analysis (:mod:`analyses.key_geometry`, :mod:`analyses.layer_sweep`,
:mod:`analyses.probes`, :mod:`analyses.correction_vs_steering`) is a package whose ``compute``
module computes the data and whose ``figures`` module builds the Plotly figures and the
finding from it; :mod:`analyses.run` fits one memory and writes every report. ``compare``,
``capacity``, ``edit``, ``bench`` and ``inspect`` are the other commands, with the same split;
:mod:`analyses.cli` is the ``fmi`` command line. The library never imports this package.
"""
