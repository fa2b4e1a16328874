"""``fmi recall --seeds``: one run per seed, per-seed figures, and their mean and range."""

from __future__ import annotations

import json

import pytest

from analyses.cli.main import main
from fmi.experiments.seeds import summarize_seeds

TINY = [
    "recall",
    "--model",
    "tiny-neox",
    "--quiet",
    "--n-train",
    "4",
    "--n-eval",
    "2",
    "--modes",
    "dual_key,context_gate",
    "--splits",
    "same,new_lab",
]


def test_seeds_run_each_seed_and_summarize(capsys, tmp_path):
    out = tmp_path / "seeds.json"
    assert main([*TINY, "--seeds", "101,102", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| seed 101 |" in printed and "| seed 102 |" in printed
    assert "seeds 101, 102: mean over seeds (lowest–highest seed: a range" in printed
    doc = json.loads(out.read_text())
    assert doc["seeds"] == [101, 102] and set(doc["per_seed"]) == {"101", "102"}
    a, b = doc["per_seed"]["101"], doc["per_seed"]["102"]
    assert a["config"]["seed"] == 101 and b["config"]["seed"] == 102
    assert a["task_info"] != b["task_info"] or a["fitted"] != b["fitted"]  # fresh draws
    for mode in ("dual_key", "context_gate (oracle)"):
        for split in ("same", "new_lab"):
            got = doc["summary"][mode][split]["read"]
            per = [a["results"][mode][split]["read"], b["results"][mode][split]["read"]]
            assert got["per_seed"] == per and got["mean"] == pytest.approx(sum(per) / 2)
            assert got["min"] == min(per) and got["max"] == max(per)


def test_summary_known_answer():
    docs = {
        "1": {"results": {"m": {"s": {"read": 0.5, "plain": 0.0, "n": 4}}}},
        "2": {"results": {"m": {"s": {"read": 1.0, "plain": 0.1, "n": 4}}}},
        "3": {"results": {"m": {"s": {"read": 0.75, "plain": 0.2, "n": 4}}}},
    }
    got = summarize_seeds(docs, ("read", "plain", "n"))["m"]["s"]
    assert got["read"] == {"mean": 0.75, "min": 0.5, "max": 1.0, "per_seed": [0.5, 1.0, 0.75]}
    assert got["plain"]["mean"] == pytest.approx(0.1) and "n" not in got  # ints are not rates


@pytest.mark.parametrize("bad", ["1,x", "", "3,3"])
def test_bad_seeds_are_one_line_and_exit_2(capsys, bad):
    assert main([*TINY, "--seeds", bad]) == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and len(err.strip().splitlines()) == 1
