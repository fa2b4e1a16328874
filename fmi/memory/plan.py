"""Search or score matrix: the cheap measured rule that keeps reading a large bank never
slower than the full score matrix.

The int8 search (:mod:`fmi.memory.search`) is exact either way, but its cost depends on the
data: a bank whose bound prunes poorly (random unit keys, queries that match nothing) rescores
much of it and costs more than the plain ``[queries, entries]`` product, whose cost does not
depend on the numbers. So each memory keeps, per mode, what the two ways cost it per query the
last times they ran (an exponential average of measured seconds), and :meth:`ReadPlan.choose`
takes the cheaper one:

- first the search, whose cost is then known;
- the matrix is run (and so measured) once the search costs at least ``suspect`` times what a
  float32 product of that size is predicted to cost on this machine (:func:`matrix_seconds`,
  from one timed product per process), so a bank where the search is clearly cheaper never
  pays for a matrix;
- once both are known, the cheaper one, and the other every ``explore_every``-th call, so a
  change (the machine gets busy, the bank grows) is seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

SEARCH, MATRIX = "search", "matrix"
_THROUGHPUT: list[float] = []  # float32 multiply-adds per second, measured once per process


def matrix_seconds(multiply_adds: float) -> float:
    """Predicted seconds of a float32 matrix product of ``multiply_adds`` on this machine now,
    from one timed ``[256, 256] x [256, 4096]`` product (a few ms, once per process).

    >>> matrix_seconds(0) == 0.0 and matrix_seconds(1e9) > 0
    True
    """
    if not _THROUGHPUT:
        a, b = torch.randn(256, 256), torch.randn(256, 4096)
        a @ b  # warm-up
        start = time.perf_counter()
        a @ b
        _THROUGHPUT.append(256 * 256 * 4096 / max(time.perf_counter() - start, 1e-9))
    return multiply_adds / _THROUGHPUT[0]


@dataclass
class ReadPlan:
    """Per mode: the measured cost per query of each way, and the choice between them.

    >>> plan = ReadPlan(explore_every=4)
    >>> plan.choose("dual_key", predicted=1.0)
    'search'
    >>> plan.record("dual_key", "search", seconds=0.1, queries=10)   # 0.01 s per query
    >>> plan.choose("dual_key", predicted=1.0)   # far below the prediction: no matrix
    'search'
    >>> plan.record("dual_key", "search", seconds=20.0, queries=10)  # averages to 1.005
    >>> plan.choose("dual_key", predicted=1.0)
    'matrix'
    """

    explore_every: int = 16
    suspect: float = 0.5
    weight: float = 0.5  # of the newest measurement in the average
    cost: dict[tuple[str, str], float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)  # the way each mode's last call took

    def choose(self, mode: str, predicted: float) -> str:
        """``"search"`` or ``"matrix"`` for the next call of ``mode``; ``predicted``: the
        matrix's predicted seconds per query (:func:`matrix_seconds`)."""
        n = self.calls.get(mode, 0)
        self.calls[mode] = n + 1
        search, matrix = self.cost.get((mode, SEARCH)), self.cost.get((mode, MATRIX))
        if search is None:
            return SEARCH
        if matrix is None:
            return MATRIX if search >= self.suspect * predicted else SEARCH
        best, other = (SEARCH, MATRIX) if search <= matrix else (MATRIX, SEARCH)
        return other if n % self.explore_every == 0 else best

    def clear(self) -> None:
        """Forget every measurement (the next call of each mode starts with the search)."""
        self.cost.clear()
        self.calls.clear()
        self.last.clear()

    def record(self, mode: str, way: str, seconds: float, queries: int) -> None:
        """Add one measured call of ``way`` on ``queries`` queries."""
        self.last[mode] = way
        per = seconds / max(1, queries)
        old = self.cost.get((mode, way))
        self.cost[(mode, way)] = per if old is None else self.weight * per + (1 - self.weight) * old
