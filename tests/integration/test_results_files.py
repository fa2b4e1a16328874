"""The README's result tables are the committed JSON files under results/, figure for figure.

A table is marked in the README by ``<!-- results: PATH -->`` on the line before its code block
(or before Markdown tables closed by ``<!-- end results -->``); the block must equal what the
JSON renders to (``analyses.results.results_report``). Every results path the README names must
exist.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analyses.results import results_report

ROOT = Path(__file__).resolve().parents[2]
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


def _intervals(node, path=""):
    """Every ``ci95`` interval in a results document, with where it sits."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ci95" and isinstance(value, dict):
                yield from ((f"{path}/{m}", iv) for m, iv in value.items())
            elif key.endswith("_ci") and isinstance(value, list):  # fmi edit's <metric>_ci
                yield f"{path}/{key}", value
            else:
                yield from _intervals(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _intervals(value, f"{path}[{i}]")


RESULTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "results").rglob("*.json"))


@pytest.mark.parametrize("path", RESULTS)
def test_no_committed_interval_is_zero_width(path):
    found = list(_intervals(json.loads((ROOT / path).read_text())))
    flat = [(where, iv) for where, iv in found if iv[0] == iv[1]]
    assert not flat, flat[:5]


def test_the_interval_walk_finds_nested_intervals():
    doc = {"a": [{"ci95": {"read": [0.1, 0.2]}}], "ci95": {"plain": [0.0, 0.0]}}
    assert sorted(_intervals(doc)) == [("/a[0]/read", [0.1, 0.2]), ("/plain", [0.0, 0.0])]
    edit = {"results": {"rome": {"1": {"efficacy": 1.0, "efficacy_ci": [0.9, 1.0]}}}}
    assert list(_intervals(edit)) == [("/results/rome/1/efficacy_ci", [0.9, 1.0])]
