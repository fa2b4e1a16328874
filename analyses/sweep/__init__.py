"""``fmi sweep CONFIG --out DIR``: recall over a grid of models x revisions x symbol key layers
x token key layers x injection sites x seeds, one JSON per cell, merged into one report.

The modules: :mod:`.config` (the config file and :class:`~.config.SweepConfig`), :mod:`.cells`
(the grid, each cell's name and hash, :func:`~.cells.run_cell`), :mod:`.executors` (``local``
and ``ray``), :mod:`.merge` (cell files, resume, the merged document), :mod:`.figures` (the
report) and :mod:`.run` (:func:`~.run.run_sweep`).
"""

from analyses.sweep.config import SweepConfig, load_config
from analyses.sweep.run import run_sweep

__all__ = ["SweepConfig", "load_config", "run_sweep"]
