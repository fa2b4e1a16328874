"""The README's result tables are the committed JSON files under results/, figure for figure.

A table is marked in the README by ``<!-- results: PATH -->`` on the line before its code block
(or before Markdown tables closed by ``<!-- end results -->``); the block must equal what the
JSON renders to (``fmi.table.results_report``). Every results path the README names must exist.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fmi.table import results_report

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MARKED = [
    (path, fenced or plain)
    for path, fenced, plain in re.findall(
        r"<!-- results: (\S+) -->\n(?:```\n(.*?)```|(.*?)<!-- end results -->)", README, re.S
    )
]


def test_the_readme_marks_its_result_tables():
    assert len(MARKED) >= 2


@pytest.mark.parametrize("path, block", MARKED, ids=[p for p, _ in MARKED])
def test_each_marked_table_equals_its_json(path, block):
    doc = json.loads((ROOT / path).read_text())
    assert block.strip("\n") == results_report(doc).strip("\n")


def test_every_results_path_named_exists():
    named = set(re.findall(r"results/[\w./-]+\.json", README))
    assert named and all((ROOT / p).is_file() for p in named), sorted(named)


def test_the_bench_figures_quoted_equal_the_json():
    doc = json.loads((ROOT / "results/gemma-3-270m/bench.json").read_text())
    m = doc["multi_token"]
    assert f"{m['write_s']:.3f} / {m['forward_s']:.3f} s = **{m['write_ratio']:.3f}**" in README
    assert f"{m['memory_s']:.3f} / {m['plain_s']:.3f} s =\n  **{m['generation_ratio']:.3f}**" in (
        README
    )
