"""Bad input gets one clear line naming the problem, never a traceback from deep inside torch."""

from __future__ import annotations

import json

import pytest

from analyses.cli.main import main

TINY = ["--model", "tiny-neox", "--quiet", "--n-train", "4", "--n-eval", "2"]


def _run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_unknown_model_lists_names(capsys):
    code, _, err = _run(capsys, ["recall", "--model", "pythia-7b"])
    assert code == 2
    assert "pythia-7b" in err and "gemma-3-270m" in err and "Traceback" not in err


def test_unknown_mode_lists_modes(capsys):
    code, _, err = _run(capsys, ["recall", *TINY, "--modes", "both_top1,nearest"])
    assert code == 2 and "nearest" in err and "dual_key" in err


def test_multi_token_label_is_named_for_the_seed_value(capsys, tmp_path):
    path = tmp_path / "task.json"
    path.write_text(
        json.dumps(
            {
                "name": "bad-label",
                "bindings": [
                    {"context": "game A", "symbol": "dax", "label": "turquoise"},
                    {"context": "game B", "symbol": "dax", "label": "red"},
                ],
                "unrelated": ["Question: what is the capital of France? Answer:"],
            }
        )
    )
    code, _, err = _run(capsys, ["recall", *TINY, "--task", str(path), "--seed-value"])
    assert code == 2 and "turquoise" in err and "one token" in err


@pytest.mark.parametrize(
    "content, field",
    [
        ("{not json", "line 1"),
        ('{"name": "x", "bindings": [], "unrelated": ["q?"]}', "bindings"),
        (
            '{"name": "x", "bindings": [{"context": "c", "symbol": "s"}], "unrelated": ["q"]}',
            "bindings[0]: missing key 'label'",
        ),
    ],
)
def test_malformed_task_file_names_file_and_field(capsys, tmp_path, content, field):
    path = tmp_path / "broken.json"
    path.write_text(content)
    code, _, err = _run(capsys, ["recall", *TINY, "--task", str(path)])
    assert code == 2 and "broken.json" in err and field in err


def test_missing_task_file(capsys, tmp_path):
    code, _, err = _run(capsys, ["recall", *TINY, "--task", str(tmp_path / "nope.json")])
    assert code == 2 and "nope.json" in err


def test_task_file_runs_one_split_named_file(capsys, tmp_path):
    out = tmp_path / "r.json"
    code, stdout, _ = _run(
        capsys,
        [
            "recall",
            *TINY,
            "--task",
            "examples/task_file.json",
            "--modes",
            "both_top1,dual_key",
            "--json",
            str(out),
        ],
    )
    assert code == 0 and "[file]" in stdout
    doc = json.loads(out.read_text())
    assert list(doc["results"]["dual_key"]) == ["file"]
    row = doc["results"]["dual_key"]["file"]
    assert {"write", "read", "plain", "unrelated", "unrelated_changed", "n", "ci95"} <= set(row)


def test_models_lists_registry(capsys):
    code, out, _ = _run(capsys, ["models"])
    assert code == 0
    for name in ("pythia-70m", "pythia-1.4b-deduped", "gemma-3-270m", "tiny-pythia-arch"):
        assert name in out
    rows = out.splitlines()[:-1]  # the states in one column, after the longest name
    starts = {
        row.index(" available") if " available" in row else row.index(" unavailable")
        for row in rows
    }
    assert starts == {len("pythia-1.4b-deduped") + 1}
    assert "Hugging Face id" in out.splitlines()[-1]


def test_unknown_split_lists_the_splits_before_loading(capsys):
    code, _, err = _run(capsys, ["recall", *TINY, "--splits", "same,new_moon"])
    assert code == 2 and "new_moon" in err and "new_lab" in err and "Traceback" not in err


def test_bad_end_escape_is_named(capsys):
    code, _, err = _run(capsys, ["recall", *TINY, "--end", "\\x"])
    assert code == 2 and "--end" in err and "Traceback" not in err


def test_recall_runs_only_the_chosen_splits_with_end_values(capsys, tmp_path):
    out = tmp_path / "r.json"
    argv = ["recall", *TINY, "--splits", "same", "--end", "\\n", "--modes", "dual_key"]
    code, stdout, _ = _run(capsys, [*argv, "--json", str(out)])
    doc = json.loads(out.read_text())
    assert code == 0 and set(doc["results"]["dual_key"]) == {"same"}
    assert doc["config"]["end"] == "\n" and doc["config"]["splits"] == ["same"]
    row = doc["results"]["dual_key"]["same"]
    assert 0.0 <= row["answer_prefix"]["read"] <= 1.0
