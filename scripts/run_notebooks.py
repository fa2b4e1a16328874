"""Execute the tutorial notebooks on one model; the executed copies go elsewhere (make notebooks).

    python scripts/run_notebooks.py --model gemma-3-270m [--out DIR] [NOTEBOOK ...]

The model reaches the notebooks as ``FMI_MODEL`` (``auto`` resolves as ``fmi.load_model`` does).
Executed copies, outputs included, are written to ``--out`` (default
``reports/<model>/notebooks/``), also when a cell fails; ``notebooks/`` itself is never
written: the stored notebooks carry no outputs (tests/integration/test_notebooks.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def kernel_env(model: str) -> dict[str, str]:
    """The kernel's environment: ours, ``FMI_MODEL``, and OpenMP threads that sleep when idle.

    On a two-core machine, torch's spinning OpenMP threads starve the kernel's own threads: the
    tiny quickstart fit took 15x longer in a kernel than in a script until they slept (an
    explicit ``OMP_WAIT_POLICY`` is kept)."""
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "FMI_MODEL": model}


def execute(path: Path, model: str, cwd: Path, timeout: int) -> tuple[nbformat.NotebookNode, str]:
    """Run every cell of ``path`` in a fresh kernel; returns the notebook and its error ("")."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    try:
        client.execute(env=kernel_env(model))
    except CellExecutionError as err:
        return nb, str(err)
    return nb, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auto", help="registry name or auto (FMI_MODEL)")
    parser.add_argument("--out", type=Path, help="default: reports/<model>/notebooks")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per cell")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args(argv)
    out = (args.out or ROOT / "reports" / args.model / "notebooks").resolve()
    if out == NOTEBOOKS.resolve():
        parser.error("--out must not be notebooks/: the stored notebooks keep no outputs")
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb")):
        start = time.perf_counter()
        nb, error = execute(path, args.model, out, args.timeout)
        nbformat.write(nb, out / path.name)
        verdict = "ok" if not error else "FAILED"
        print(
            f"{path.name} on {args.model}: {verdict} in {time.perf_counter() - start:.1f} s "
            f"-> {out / path.name}"
        )
        if error:
            failed.append(path.name)
            print(error, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
