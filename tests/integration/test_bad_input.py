"""The bad-input table: each row is a command a user might type with something wrong in it. Each
must end with a non-zero status (2 for usage and input errors), a message of at most a few
lines that names the problem, and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analyses.cli.main import main

RECALL = ["recall", "--model", "tiny-gemma", "--quick", "--quiet"]
INSPECT = ["inspect", "--model", "tiny-gemma", "--context", "game A", "--symbol", "blick"]
EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "examples/task_file.json").read_text())


def _task(**change) -> dict:
    return {**EXAMPLE, **change}


def _files(d: Path) -> dict[str, Path]:
    """The bad files the table refers to, by name."""
    bindings = EXAMPLE["bindings"]
    files = {
        "not_json": "{ this is not json",
        "empty": "",
        "wrong_shape": json.dumps([1, 2, 3]),
        "no_label": json.dumps(_task(bindings=[{"context": "x", "symbol": "y"}, *bindings])),
        "empty_label": json.dumps(_task(bindings=[{**bindings[0], "label": ""}, *bindings[1:]])),
        "garbage_memory": "\x00\x01garbage" * 10,
        "json_memory": json.dumps({"a": 1}),
        "cf_bad": json.dumps([{"case_id": 0, "requested_rewrite": {"prompt": "no subject"}}]),
        "zsre_bad": json.dumps([{"src": "Who?", "alt": 3}]),
    }
    out = {}
    for name, text in files.items():
        out[name] = d / f"{name}.json"
        out[name].write_text(text)
    out["a_file"] = d / "a_file"
    out["a_file"].write_text("x")
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    out = _files(d)
    memory = d / "good.fmi"
    assert main(["memory", "new", str(memory), "--model", "tiny-gemma", "--quick"]) == 0
    out["good_memory"] = memory
    truncated = d / "truncated.fmi"
    truncated.write_bytes(memory.read_bytes()[: memory.stat().st_size // 2])
    out["truncated_memory"] = truncated
    import fmi
    from fmi.models.registry import load_model

    neox = load_model("tiny-neox", announce=lambda _: None)
    foreign = d / "foreign.fmi"
    fmi.FastMemory.fit(neox, fmi.RecallConfig.quick()).save(foreign)
    out["foreign_memory"] = foreign
    return out


# (row id, argv with {file} placeholders, text the message must contain)
TABLE = [
    ("unknown model", ["recall", "--model", "nope"], "nope"),
    ("missing model folder", ["recall", "--model", "{d}/no_model_here"], "no_model_here"),
    ("folder that is no model", ["recall", "--model", "{d}"], "no config.json"),
    ("uncached Hub id offline", ["recall", "--model", "nobody/no-such-model"], "no-such-model"),
    ("revision of a GGUF model", [*RECALL, "--revision", "step1000"], "no revisions"),
    ("unknown device", [*RECALL, "--device", "tpu"], "unknown device 'tpu'"),
    ("unknown dtype", [*RECALL, "--dtype", "float8"], "unknown dtype 'float8'"),
    ("missing task file", [*RECALL, "--task", "{d}/missing.json"], "missing.json"),
    ("non-JSON task file", [*RECALL, "--task", "{not_json}"], "not_json.json"),
    ("empty task file", [*RECALL, "--task", "{empty}"], "empty.json"),
    ("wrong-shaped task file", [*RECALL, "--task", "{wrong_shape}"], "wrong_shape.json"),
    ("binding without a label", [*RECALL, "--task", "{no_label}"], "label"),
    ("label that is no token", [*RECALL, "--task", "{empty_label}"], "label"),
    ("non-numeric option", [*RECALL, "--n-train", "abc"], "--n-train"),
    ("zero option", [*RECALL, "--n-train", "0"], "n_train"),
    ("negative option", [*RECALL, "--n-eval", "-3"], "n_eval"),
    ("zero bench repeats", ["bench", "--quick", "--repeats", "0"], "repeats"),
    ("negative edit count", ["edit", "--quick", "--scored", "-1"], "scored"),
    ("zero capacity size", ["capacity", "--quick", "--sizes", "0"], "size"),
    ("unknown split", [*RECALL, "--splits", "nope"], "nope"),
    ("unknown mode", [*RECALL, "--modes", "nope"], "nope"),
    ("unknown analysis", ["analyses", "--quick", "--only", "nope"], "nope"),
    ("output under a file", [*RECALL, "--json", "{a_file}/r.json"], "a_file"),
    ("output is a directory", [*RECALL, "--json", "{d}"], "is a directory"),
    ("output in /proc", [*RECALL, "--json", "/proc/r.json"], "/proc"),
    ("--out under a file", ["analyses", "--quick", "--out", "{a_file}/x"], "a_file"),
    ("missing memory file", ["memory", "list", "{d}/none.fmi"], "none.fmi"),
    ("garbage memory file", ["memory", "list", "{garbage_memory}"], "garbage_memory"),
    ("JSON as a memory file", ["memory", "list", "{json_memory}"], "json_memory"),
    ("truncated memory file", ["memory", "list", "{truncated_memory}"], "truncated"),
    ("foreign memory file", [*INSPECT, "--memory", "{foreign_memory}"], "tiny-neox"),
    ("inspect a missing memory", [*INSPECT, "--memory", "{d}/none.fmi"], "none.fmi"),
    ("unknown entry id", ["memory", "delete", "{good_memory}", "99"], "99"),
    (
        "malformed CounterFact record",
        ["edit", "--quick", "--data", "{cf_bad}", "--format", "counterfact"],
        "cf_bad.json",
    ),
    (
        "malformed ZsRE record",
        ["edit", "--quick", "--data", "{zsre_bad}", "--format", "zsre"],
        "zsre_bad.json",
    ),
]


def _argv(argv: list[str], files: dict[str, Path]) -> list[str]:
    names = {k: str(v) for k, v in files.items()} | {"d": str(files["a_file"].parent)}
    return [a.format(**names) for a in argv]


@pytest.mark.parametrize(("row", "argv", "expect"), TABLE, ids=[r[0] for r in TABLE])
def test_bad_input_gets_one_clear_message(row, argv, expect, files, capsys):
    try:
        code = main(_argv(argv, files))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    out = capsys.readouterr()
    message = out.err.strip()
    assert code == 2, (row, code, message)
    assert "Traceback" not in out.err + out.out
    assert 1 <= len(message.splitlines()) <= 3, message
    assert expect in message, (row, message)


def test_every_command_accepts_quiet():
    from analyses.cli.options import _leaves, parser

    leaves = _leaves(parser())
    assert len(leaves) >= 13  # models, recall, ..., and the five memory subcommands
    for leaf in leaves:
        assert any("--quiet" in a.option_strings for a in leaf._actions), leaf.prog
