"""The result tables of the README and of every docs page are the committed JSON files under
results/, figure for figure.

A table is marked by ``<!-- results: PATH -->`` on the line before its code block (or before
Markdown tables closed by ``<!-- end results -->``); the block must equal what the JSON renders
to (``analyses.results.results_report``). ``<!-- results: PATH headline -->`` marks the README's
headline, one Markdown table of a several-seed recall run, which must equal
``analyses.results.headline_table`` (``scripts/readme_table.py --headline PATH``), and whose
file must also be shown whole on a page.
Every marker must be followed by its block, and every results path a page names must exist.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analyses import results
from analyses.results import results_report

ROOT = Path(__file__).resolve().parents[2]
PAGES = {
    str(p.relative_to(ROOT)): p.read_text()
    for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
}
MARKER = re.compile(r"<!-- results: .*?-->")
BLOCK = re.compile(
    r"<!-- results: (\S+)(?: (\w+))? -->\n(?:```\n(.*?)```|(.*?)<!-- end results -->)", re.S
)
MARKED = [
    (page, path, view, fenced or plain)
    for page, text in PAGES.items()
    for path, view, fenced, plain in BLOCK.findall(text)
]


VIEWS = results.VIEWS  # "" (the whole document) and "headline"
assert VIEWS[""] is results_report


def test_the_pages_mark_their_result_tables():
    pages = {page for page, *_ in MARKED}
    assert "README.md" in pages and len(pages) >= 4, sorted(pages)
    assert len(MARKED) >= 5


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_marker_is_followed_by_its_block(page):
    markers = MARKER.findall(PAGES[page])
    assert len(markers) == len(BLOCK.findall(PAGES[page])), markers


@pytest.mark.parametrize(
    "page, path, view, block", MARKED, ids=[f"{pg}:{p}:{v or 'all'}" for pg, p, v, _ in MARKED]
)
def test_each_marked_table_equals_its_json(page, path, view, block):
    assert (ROOT / path).is_file(), f"{page} marks {path}, which is not committed"
    assert view in VIEWS, f"{page}: unknown results view {view!r} for {path}"
    doc = json.loads((ROOT / path).read_text())
    assert block.strip("\n") == VIEWS[view](doc).strip("\n")


def test_a_headline_file_is_also_shown_whole():
    whole = {path for _, path, view, _ in MARKED if not view}
    parts = {path for _, path, view, _ in MARKED if view}
    assert parts and parts <= whole, sorted(parts - whole)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_results_path_named_exists(page):
    named = set(re.findall(r"results/[\w./-]+\.json", PAGES[page]))
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, missing


def test_the_results_paths_are_named_somewhere():
    named = set(re.findall(r"results/[\w./-]+\.json", "\n".join(PAGES.values())))
    assert len(named) >= 5, sorted(named)


def test_the_bench_figures_quoted_equal_the_json():
    doc = json.loads((ROOT / "results/gemma-3-270m/bench.json").read_text())
    page = PAGES["docs/capacity.md"]
    m = doc["multi_token"]
    assert f"{m['write_s']:.3f} / {m['forward_s']:.3f} s = **{m['write_ratio']:.3f}**" in page
    assert f"{m['memory_s']:.3f} / {m['plain_s']:.3f} s =\n  **{m['generation_ratio']:.3f}**" in (
        page
    )
    from analyses.bench.summary import retrieval_table

    assert retrieval_table(doc) in page  # idle and one core busy, every bank, mode and size
    assert f"at {doc['header']['git'][:7]} (seed 0" in page


def test_the_headline_view_examples_run():
    import doctest

    result = doctest.testmod(results, verbose=False)
    assert result.attempted > 0 and result.failed == 0


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
