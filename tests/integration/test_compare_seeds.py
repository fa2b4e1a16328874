"""``fmi compare --seeds``: one comparison per seed, and each method's mean and range."""

from __future__ import annotations

import json

import pytest

from analyses.cli.main import main
from analyses.compare.seeds import by_method, seeds_markdown


def test_by_method_regroups_rows_by_method_then_split():
    doc = {
        "splits": {
            "same": {"rows": [{"method": "a", "summary": {"read": 1.0}}]},
            "new": {"rows": [{"method": "a", "summary": {"read": 0.25}}]},
        }
    }
    assert by_method(doc) == {"results": {"a": {"same": {"read": 1.0}, "new": {"read": 0.25}}}}


def test_seeds_markdown_prints_mean_and_range():
    doc = {
        "seeds": [1, 2],
        "summary": {"a": {"same": {"read": {"mean": 0.75, "min": 0.5, "max": 1.0}}}},
    }
    text = seeds_markdown(doc)
    assert "seeds 1, 2: mean over seeds (lowest–highest seed: a range, not an interval)" in text
    assert "| a | n/a | 0.750 (0.500–1.000) | n/a | n/a | n/a |" in text


def test_cli_compare_seeds_runs_each_seed_and_averages(tmp_path, capsys):
    out = tmp_path / "seeds.json"
    args = ["compare", "--quick", "--quiet", "--seeds", "3,4", "--out", str(tmp_path)]
    assert main([*args, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| seed 3 | split same" in printed and "| seed 4 | split same" in printed
    doc = json.loads(out.read_text())
    assert doc["seeds"] == [3, 4]
    assert [d["header"]["config"]["seed"] for d in doc["per_seed"].values()] == [3, 4]
    assert (tmp_path / "seed-3" / "compare.html").exists()
    for method, per in doc["summary"].items():
        got = [
            next(r for r in d["splits"]["same"]["rows"] if r["method"] == method)["summary"]
            for d in doc["per_seed"].values()
        ]
        read = per["same"]["read"]
        assert read["per_seed"] == [g["read"] for g in got]
        assert read["mean"] == pytest.approx(sum(read["per_seed"]) / 2)
        assert read["min"] == min(read["per_seed"]) and read["max"] == max(read["per_seed"])


@pytest.mark.parametrize("bad", ["3,x", "3,3", ","])
def test_bad_compare_seeds_are_one_line_and_exit_2(capsys, bad, tmp_path):
    assert main(["compare", "--quick", "--quiet", "--seeds", bad, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and len(err.strip().splitlines()) == 1


def test_a_compare_report_document_renders_one_table_per_split():
    from analyses.results import results_report

    summary = {m: 0.5 for m in ("write", "read", "plain", "unrelated", "unrelated_changed")}
    summary["ci95"] = {m: [0.25, 0.75] for m in summary}
    row = {"method": "m", "summary": summary, "cost": {"forward": 1, "backward": 0, "seconds": 2}}
    doc = {"header": {"config": {"seed": 7}}, "data": {"splits": {"same": {"rows": [row]}}}}
    text = results_report(doc)
    assert text.startswith("seed 7, split same:\n\n| method |")
    assert "| m | 0.500 [0.25, 0.75] | 0.500 [0.25, 0.75] |" in text and text.endswith("| 2.0 |")
