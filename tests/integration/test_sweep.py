"""``fmi sweep``: a two-cell grid on tiny-gemma run by the local executor and by Ray (local mode),
with the same results; a rerun runs nothing, a deleted cell file reruns that cell only; bad
configs end in one line and status 2."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from analyses.cli.main import main
from analyses.sweep import SweepConfig, run_sweep

# two cells (token key layers 0 and 1) of a small recall: one split, one mode, single-token write
CONFIG = {
    "models": ["tiny-gemma"],
    "token_layers": [0, 1],
    "splits": ["same"],
    "modes": ["dual_key"],
    "recall": {
        "quick": True,
        "refine_grid": [1],
        "end": None,
        "n_train": 8,
        "n_eval": 4,
        "n_unrelated": 8,
        "n_bootstrap": 20,
    },
}


def _quiet(_: str) -> None:
    """Swallow the sweep's announcements."""


def _results(merged: dict) -> list:
    """What the cells measured: name, sites and results, without timestamps or headers."""
    return [(c["name"], c["sites"], c["results"], c["fitted"]) for c in merged["cells"]]


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((out / "cells").glob("*.json"))}


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "local"
    cfg = SweepConfig.from_dict(CONFIG)
    return cfg, out, run_sweep(cfg, out, progress=False, announce=_quiet)


def test_the_local_sweep_writes_one_file_per_cell_and_a_report(local_sweep):
    cfg, out, got = local_sweep
    assert got["cells"] == 2 and len(got["ran"]) == 2 and got["kept"] == 0
    assert sorted(p.stem for p in (out / "cells").glob("*.json")) == sorted(got["ran"])
    assert all(name.startswith("tiny-gemma-symauto-tok") for name in got["ran"])
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["header"]["command"] == "sweep" and doc["header"]["config"] == cfg.to_dict()
    assert [c["sites"]["token"] for c in doc["data"]["cells"]] == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    for cell in doc["data"]["cells"]:
        assert set(cell["results"]) == {"none", "dual_key"}
        assert set(cell["results"]["dual_key"]) == {"same"}
    html = (out / "sweep.html").read_text()
    assert "token key layer" in html  # the one varied dimension has its figure
    assert "Held (one value, no figure)" in html and "checkpoint step of tiny-gemma" in html
    assert (out / "plotly.min.js").is_file()


def test_a_rerun_runs_no_cell(local_sweep, capsys):
    cfg, out, _ = local_sweep
    before = _mtimes(out)
    got = run_sweep(cfg, out, progress=False, announce=_quiet)
    assert got["ran"] == [] and got["kept"] == 2
    assert _mtimes(out) == before
    capsys.readouterr()
    config = out.parent / "sweep.json"
    config.write_text(json.dumps(CONFIG))
    assert main(["sweep", str(config), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "2 cells, 0 run, 2 already finished" in printed.out
    assert "%|" not in printed.err  # --quiet: no bar
    assert _mtimes(out) == before


def test_a_resume_reruns_only_the_missing_cell(local_sweep, tmp_path):
    cfg, out, first = local_sweep
    copy = tmp_path / "resumed"
    shutil.copytree(out, copy)
    kept, gone = sorted((copy / "cells").glob("*.json"))
    kept_mtime = kept.stat().st_mtime_ns
    gone.unlink()
    got = run_sweep(cfg, copy, progress=False, announce=_quiet)
    assert got["ran"] == [gone.stem] and got["kept"] == 1
    assert kept.stat().st_mtime_ns == kept_mtime and gone.is_file()
    assert _results(got["merged"]) == _results(first["merged"])  # a deterministic rerun


def test_the_ray_executor_gives_the_local_results(local_sweep, tmp_path, capsys):
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    cfg, _, local = local_sweep
    started = time.perf_counter()
    got = run_sweep(cfg, tmp_path / "ray", executor="ray", progress=False, announce=_quiet)
    seconds = time.perf_counter() - started
    assert sorted(got["ran"]) == sorted(local["ran"])
    assert _results(got["merged"]) == _results(local["merged"])
    before = _mtimes(tmp_path / "ray")
    again = run_sweep(cfg, tmp_path / "ray", executor="ray", progress=False, announce=_quiet)
    assert again["ran"] == [] and again["kept"] == 2 and _mtimes(tmp_path / "ray") == before
    with capsys.disabled():
        print(f"\nray sweep of 2 cells: {seconds:.1f} s", file=sys.stderr)


BAD = [
    ("missing file", None, "no such file"),
    ("not JSON", "{ nope", "not valid JSON"),
    ("unknown key", {**CONFIG, "layers": [1]}, "unknown key 'layers'"),
    ("no models", {k: v for k, v in CONFIG.items() if k != "models"}, "'models' is required"),
    ("empty models", {**CONFIG, "models": []}, "models must be a non-empty list"),
    ("unknown model", {**CONFIG, "models": ["nope"]}, "unknown model 'nope'"),
    ("negative layer", {**CONFIG, "symbol_layers": [-1]}, "must be >= 0"),
    ("bad recall field", {**CONFIG, "recall": {"n_trian": 3}}, "n_trian"),
    ("bad recall value", {**CONFIG, "recall": {"n_train": 0}}, "n_train must be >= 1"),
    ("grid key in recall", {**CONFIG, "recall": {"seed": 3}}, "'seed'"),
    ("unknown split", {**CONFIG, "splits": ["nope"]}, "no split 'nope'"),
    ("layer beyond the model", {**CONFIG, "token_layers": [0, 7]}, "blocks.7.hook_resid_post"),
]


@pytest.mark.parametrize(("row", "config", "expect"), BAD, ids=[r[0] for r in BAD])
def test_a_bad_config_gets_one_line_and_status_2(row, config, expect, tmp_path, capsys):
    path = tmp_path / "sweep.json"
    if config is not None:
        path.write_text(config if isinstance(config, str) else json.dumps(config))
    code = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    message = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (row, message)
    errors = [line for line in message if line.startswith("fmi: error:")]
    assert len(errors) == 1 and expect in errors[0], (row, message)
    assert not any("Traceback" in line for line in message)


def test_the_ray_executor_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(CONFIG))
    code = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor", "ray"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "fmi: error: --executor ray needs Ray: pip install -e '.[ray]'"
    assert not (tmp_path / "out").exists()


def test_the_example_config_is_valid():
    root = Path(__file__).resolve().parents[2]
    from analyses.sweep import load_config
    from analyses.sweep.cells import grid

    cfg = load_config(root / "examples" / "sweep-gemma-smollm2.json")
    assert cfg.models == ("gemma-3-270m", "smollm2-135m")
    cells = grid(cfg)
    assert len({c.name for c in cells}) == len(cells) == 2 * (9 + 15)


def _entry(revision: str, read: float) -> dict:
    row = {"read": read, "plain": 0.0, "unrelated_changed": 0.0}
    row["ci95"] = {m: [max(v - 0.1, 0.0), min(v + 0.1, 1.0)] for m, v in row.items()}
    return {
        "model": "pythia-70m",
        "revision": revision,
        "seed": 0,
        "sites": {
            "symbol": "blocks.2.hook_resid_post",
            "token": "blocks.0.hook_resid_post",
            "inject": "ln_final.hook_out",
        },
        "layers": {"symbol": 2.0, "token": 0.0, "inject": 5.5},
        "results": {"none": {"same": {}}, "dual_key": {"same": row}},
    }


def test_revisions_are_drawn_against_the_checkpoint_step_on_a_log_axis():
    from analyses.sweep.figures import report

    merged = {
        "header": {"model": {"name": "pythia-70m"}},
        "config": {},
        "cells": [_entry("step0", 0.1), _entry("step1000", 0.4), _entry("step143000", 0.7)],
    }
    page = report(merged)
    (steps, table) = page.panels
    trace = steps.figure.data[0]
    assert list(trace.x) == [1, 1000, 143000] and list(trace.y) == [0.1, 0.4, 0.7]
    assert steps.figure.layout.xaxis.type == "log"
    assert table.figure.data[0].type == "table"
    assert "step143000" in page.finding and "symbol key layer of pythia-70m at 2" in table.caption


def _row(model: str, params: int, depth: int, layer: int, read: float) -> dict:
    """One aggregated cell of a token-layer sweep (the other dimensions fixed)."""
    ci = {f"{m}_ci": [0.0, 1.0] for m in ("read", "plain", "unrelated_changed")}
    return {
        "model": model,
        "mode": "dual_key",
        "revision": None,
        "symbol": "auto",
        "token": str(layer),
        "inject": "ln_final.hook_out",
        "symbol_layer": 1.0,
        "token_layer": float(layer),
        "inject_layer": depth - 0.5,
        "n_layers": depth,
        "n_parameters": params,
        "read": read,
        "plain": 0.0,
        "unrelated_changed": 0.0,
        "seeds": 1,
        **ci,
    }


def test_the_best_layer_is_drawn_against_model_size():
    from analyses.sweep.figures import size_panel

    agg = [
        _row("big", 300, 10, 2, 0.5),
        _row("big", 300, 10, 4, 0.9),
        _row("big", 300, 10, 6, 0.895),  # within 0.01 of the best: in the bar
        _row("small", 100, 4, 0, 0.7),
        _row("small", 100, 4, 2, 0.2),
    ]
    panel = size_panel(agg)
    (trace,) = panel.figure.data
    assert trace.name == "token key layer: dual_key"
    assert list(trace.x) == [100, 300]  # smallest first, by parameter count
    assert list(trace.y) == [0.0, 0.4]  # best layer / depth
    assert list(trace.error_y.array) == pytest.approx([0.0, 0.2])  # up to layer 6 of 10
    assert list(trace.error_y.arrayminus) == [0.0, 0.0]
    assert panel.figure.layout.xaxis.type == "log"
    assert size_panel([r for r in agg if r["model"] == "big"]) is None  # one model: no panel
