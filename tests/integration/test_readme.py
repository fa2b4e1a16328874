"""The README's quickstart runs as written: on a tiny model (FMI_MODEL), and on Gemma-3 (slow)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS_QUICKSTART = ROOT / "docs" / "quickstart.md"


def quickstart(page: Path = README, heading: str = "\n## Quickstart") -> str:
    """The first ``python`` block after the ``## Quickstart`` heading."""
    text = page.read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading.strip()} in {page.name}"
    return match.group(1)


def test_the_readme_is_short_and_starts_with_what_a_newcomer_needs():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, len(lines)
    first = "\n".join(lines[:60])
    for needed in ("## Set up (fresh machine)", "make recall", "make test", "## Quickstart"):
        assert needed in first, needed
    assert "memory.write(" in first  # a first memory written within 60 lines


def test_the_docs_quickstart_runs_the_same_block():
    assert quickstart(DOCS_QUICKSTART, "# Quickstart") == quickstart()


def _run(tmp_path, model: str) -> str:
    env = {**os.environ, "FMI_MODEL": model}
    got = subprocess.run(
        [sys.executable, "-c", quickstart()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert got.returncode == 0, got.stderr[-2000:]
    assert (tmp_path / "alice.fmi.safetensors").exists()
    return got.stdout


def test_quickstart_uses_the_public_api():
    code = quickstart()
    for call in (
        "fmi.FastMemory.fit(",
        "memory.write(",
        "memory.generate(",
        "memory.apply(",
        "memory.save(",
        "fmi.FastMemory.load(",
    ):
        assert call in code, call


def test_quickstart_runs_on_a_tiny_model(tmp_path):
    out = _run(tmp_path, "tiny-gemma")
    assert out.startswith("['") and out.rstrip().endswith("']")  # one continuation, printed


@pytest.mark.slow
def test_quickstart_runs_on_gemma(tmp_path):
    from fmi.models.registry import model_status

    ok, why = model_status("gemma-3-270m")
    if not ok:
        pytest.skip(why)
    out = _run(tmp_path, "gemma-3-270m")
    assert "[' green tea']" in out
