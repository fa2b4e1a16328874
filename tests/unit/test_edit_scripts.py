"""The two readers of an ``fmi edit`` document (``scripts/edit_tuning.py`` and
``scripts/edit_failures.py``), on hand-made documents with known output."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grid(changed: list[float], chosen: int) -> dict:
    return {
        "grid": [
            {
                "settings": {"layer": 6, "lr": lr, "steps": 5},
                "train": {"efficacy": 1.0, "unrelated_changed": c},
            }
            for lr, c in zip((1e-4, 1e-3, 1e-2), changed, strict=True)
        ],
        "chosen": chosen,
        "budget": "3 settings x 10 training edits",
        "seconds": 12.5,
    }


def _doc(tmp_path: Path) -> Path:
    doc = {
        "header": {"config": {"max_unrelated_changed": 0.02}},
        "methods": {
            "none": {"tuning": {"budget": "nothing to tune"}},
            "lora": {"tuning": _grid([0.0, 0.02, 0.5], 1)},
        },
        "results": {
            "fast_memory": {
                "1": {
                    "failures": [
                        {
                            "kind": "relation",
                            "case_ids": ["7"],
                            "prompt": "The language of Kenya is",
                            "expected": " English",
                            "got": " Delhi",
                            "explain": {"entry": "7", "fired": True, "score": 0.9},
                        },
                        {
                            "kind": "relation",
                            "case_ids": ["8"],
                            "prompt": "The currency of Peru is",
                            "expected": " sol",
                            "got": " yen",
                            "explain": {"entry": "8", "fired": True, "score": 0.8},
                        },
                        {
                            "kind": "paraphrase",
                            "case_ids": ["9"],
                            "prompt": "Kenya's capital is",
                            "expected": " Delhi",
                            "got": " Nairobi",
                            "explain": {"entry": "9", "fired": False, "score": 0.1},
                        },
                    ]
                }
            }
        },
    }
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_tuning_rows_mark_the_bound_inclusively_and_the_kept_setting():
    rows = _load("edit_tuning").rows(_grid([0.0, 0.02, 0.5], 1), 0.02)
    assert [r["setting"] for r in rows] == ["lr=0.0001", "lr=0.001", "lr=0.01"]
    assert [r["within"] for r in rows] == [True, True, False]
    assert [r["chosen"] for r in rows] == [False, True, False]
    assert rows[2]["rates"]["unrelated_changed"] == 0.5


def test_tuning_report_counts_settings_within_the_run_bound(tmp_path, capsys):
    assert _load("edit_tuning").main([str(_doc(tmp_path))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("lora: 3 settings, 2 within unrelated_changed <= 0.02;")
    assert "12.5 s" in out[0]
    assert [line.lstrip()[0] for line in out[2:]] == ["|", "*", "|"]
    assert not any(line.startswith("none") for line in out)


def test_failure_report_lists_the_largest_class_first(tmp_path, capsys):
    assert _load("edit_failures").main([str(_doc(tmp_path))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "fast_memory T=1: 3 failing trials"
    assert out[1].split()[0] == "2" and "relation: fired on its own edit" in out[1]
    assert "score 0.900" in out[1]
    assert out[2].split()[0] == "1" and "paraphrase: did not fire" in out[2]


@pytest.mark.parametrize("name", ["edit_tuning", "edit_failures"])
def test_a_file_that_is_not_a_document_gets_one_line_and_exit_2(tmp_path, capsys, name):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    assert _load(name).main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{bad}: not an fmi edit document")


# ------------------------------------------------------------------ scripts/memit_reach.py


def test_memit_reach_measures_the_move_against_the_wanted_move():
    reach = _load("memit_reach").reach
    import torch

    h0, z = torch.tensor([1.0, 1.0]), torch.tensor([3.0, 1.0])
    assert reach(h0, torch.tensor([2.0, 1.0]), z) == (1.0, 0.5)
    assert reach(h0, torch.tensor([1.0, 3.0]), z) == (0.0, 0.0)
    assert reach(h0, torch.tensor([0.0, 1.0]), z) == (-1.0, -0.5)


def test_memit_reach_first_order_is_the_old_preimage():
    import torch

    first_order = _load("memit_reach").first_order
    norm = torch.nn.Module()
    norm.weight = torch.nn.Parameter(torch.tensor([0.0, 1.0]))
    norm.eps = 0.0
    y, r = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])
    rms = (12.5) ** 0.5  # rms of (3, 4); gain (1, 2); o = (3, 8) / rms
    want = rms * (torch.tensor([3.0, 8.0]) / rms + r[0]) / torch.tensor([1.0, 2.0]) - y[0]
    torch.testing.assert_close(first_order(norm, y, r)[0], want.double())


@pytest.mark.parametrize("argv", [["--layers", "5,x"], ["--edits", "0"]])
def test_memit_reach_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as err:
        _load("memit_reach").main(argv)
    assert err.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_false_fires_are_counted_by_their_largest_term():
    f = _load("edit_failures").false_fire_causes
    why = {"entry": "7", "fired": True, "terms": {"subject": 2.0, "relation": 0.5}}
    rel = {**why, "terms": {"subject": 0.1, "relation": 0.5}}
    log = [
        {"kind": "relation", "case_ids": ["7"], "explain": why},  # fired its own edit: false
        {"kind": "neighbour", "case_ids": ["3"], "explain": rel},  # any fire is false
        {"kind": "paraphrase", "case_ids": ["7"], "explain": why},  # its own edit: not false
        {"kind": "paraphrase", "case_ids": ["8"], "explain": why},  # another edit: false
        {"kind": "relation", "case_ids": ["7"], "explain": {**why, "fired": False}},
        {"kind": "relation", "case_ids": ["7"], "explain": {"entry": "7", "fired": True}},
    ]
    assert f(log) == [("subject", 2), ("relation", 1)]
    assert f([]) == []
