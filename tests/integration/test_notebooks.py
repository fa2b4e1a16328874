"""The tutorial notebooks: stored without outputs, and every cell runs on tiny-gemma.

``make notebooks MODEL=...`` runs them on a real model (``scripts/run_notebooks.py``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
REQUIRED = ("01_quickstart.ipynb", "02_why_it_works.ipynb")
BUDGET_S = 60.0  # every notebook together, kernel start-ups included
CELL_TIMEOUT_S = 300


def test_the_notebooks_are_there():
    assert set(REQUIRED) <= {p.name for p in PATHS}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs or execution counts; clear them"


def _execute(path: Path, cwd: Path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    # as scripts/run_notebooks.py runs them: spinning OpenMP threads starve the kernel on two
    # cores (the tiny fit took 15x longer), so they sleep unless told otherwise
    client.execute(env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "FMI_MODEL": "tiny-gemma"})
    return nb


def _errors(nb) -> list[str]:
    return [
        f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]


def _mime(nb) -> set[str]:
    return {
        mime
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        for mime in out.get("data", {})
    }


def test_the_notebooks_run_on_tiny_gemma(tmp_path):
    start = time.perf_counter()
    executed = {p.name: _execute(p, tmp_path) for p in PATHS}  # raises on a cell error
    seconds = time.perf_counter() - start
    for name, nb in executed.items():
        assert not _errors(nb), name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), f"{name}: a cell did not run"
        assert "application/vnd.plotly.v1+json" in _mime(nb), f"{name}: no Plotly figure"
    views = [
        out["data"]["text/html"]
        for cell in executed["01_quickstart.ipynb"].cells
        for out in cell.get("outputs", [])
        if "text/html" in out.get("data", {})
    ]
    assert any("circuits-vis" in v for v in views), "no circuitsvis view"
    assert not any("unpkg.com" in v or "cdn.jsdelivr" in v for v in views), "a view needs a CDN"
    assert seconds < BUDGET_S, f"the notebooks took {seconds:.1f} s (budget {BUDGET_S:.0f} s)"
