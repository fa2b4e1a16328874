"""An interrupted ``fmi recall`` ends in one line with 130 (SIGINT) or 143 (SIGTERM), leaves no
partial output, keeps its finished splits, and ``--resume`` gives the uninterrupted results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FMI = [sys.executable, "-c", "import sys; from analyses.cli.main import main; sys.exit(main())"]
RECALL = ["recall", "--model", "tiny-gemma", "--quick", "--splits", "same,new_lab", "--quiet"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [*FMI, *RECALL, "--json", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    start = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - start < timeout, f"{path} never appeared"
        time.sleep(0.05)


def _same_results(a: dict, b: dict) -> None:
    for key in ("results", "fitted", "config", "task_info", "model", "task"):
        assert json.dumps(a[key], sort_keys=True) == json.dumps(b[key], sort_keys=True), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference") / "recall.json"
    got = subprocess.run([*FMI, *RECALL, "--json", str(out)], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr[-2000:]
    assert not (out.parent / "recall.run").exists(), "a finished run leaves no run folder"
    return json.loads(out.read_text())


def test_sigint_then_resume_gives_the_uninterrupted_results(tmp_path, reference):
    out = tmp_path / "recall.json"
    proc = _start(out)
    _wait_for(tmp_path / "recall.run" / "unit-same.json", proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("fmi: interrupted by SIGINT; finished units kept in ")
    assert "recall.run" in last and "--resume" in last
    assert not out.exists(), "no partial file at the output path"
    assert not list(tmp_path.glob(".tmp-*")), "no temporary file left"

    got = subprocess.run(
        [*FMI, *RECALL, "--json", str(out), "--resume"], capture_output=True, text=True
    )
    assert got.returncode == 0, got.stderr[-2000:]
    assert "resuming: same already finished" in got.stderr
    _same_results(json.loads(out.read_text()), reference)
    assert not (tmp_path / "recall.run").exists()


def test_sigterm_exits_143_in_one_line(tmp_path):
    out = tmp_path / "recall.json"
    proc = _start(out)
    _wait_for(tmp_path / "recall.run" / "run.json", proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("fmi: interrupted by SIGTERM; ")
    assert not out.exists()


def test_resume_refuses_another_configuration(tmp_path):
    from fmi.experiments.run_folder import RunFolder

    RunFolder(tmp_path / "recall.run", {"command": "recall", "config": {"seed": 7}}, resume=False)
    argv = [*RECALL, "--json", str(tmp_path / "recall.json"), "--resume"]
    proc = subprocess.run([*FMI, *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.count("\n") == 0 and "Traceback" not in line, line
    assert "belongs to another run" in line and "remove it or run without --resume" in line


def test_resume_without_json_is_refused(capsys):
    from analyses.cli.main import main

    assert main([*RECALL, "--resume"]) == 2
    assert "--resume needs --json" in capsys.readouterr().err


def test_analyses_resume_skips_finished_analyses(quick_setup, tmp_path, monkeypatch):
    from analyses import run as runner

    names = ["key_geometry", "probes"]
    calls: list[str] = []
    real = {n: runner.ANALYSES[n].report for n in names}

    def spy(name, fail=False):
        def report(setup, *, progress=True):
            calls.append(name)
            if fail:
                raise KeyboardInterrupt
            return real[name](setup, progress=progress)

        return report

    monkeypatch.setattr(runner.ANALYSES["key_geometry"], "report", spy("key_geometry"))
    monkeypatch.setattr(runner.ANALYSES["probes"], "report", spy("probes", fail=True))
    with pytest.raises(KeyboardInterrupt):
        runner.run_analyses(
            quick_setup.cfg,
            tmp_path,
            names=names,
            setup=quick_setup,
            progress=False,
            announce=lambda _: None,
        )
    assert (tmp_path / "analyses.run" / "unit-key_geometry.json").exists()
    assert not (tmp_path / "index.html").exists()
    first = (tmp_path / "key_geometry.html").read_text()

    monkeypatch.setattr(runner.ANALYSES["probes"], "report", spy("probes"))
    runner.run_analyses(
        quick_setup.cfg,
        tmp_path,
        names=names,
        setup=quick_setup,
        progress=False,
        announce=lambda _: None,
        resume=True,
    )
    assert calls == ["key_geometry", "probes", "probes"], "key_geometry ran once"
    assert (tmp_path / "key_geometry.html").read_text() == first
    index = (tmp_path / "index.html").read_text()
    assert "key_geometry.html" in index and "probes.html" in index
    assert not (tmp_path / "analyses.run").exists()


def test_compare_resume_skips_finished_splits(tmp_path, monkeypatch, tiny_gemma):
    from analyses.compare import run as compare_run
    from analyses.compare.config import CompareConfig

    cfg = CompareConfig.quick_config(splits=("same", "new_lab"))
    calls: list[str] = []

    def fake_split(model, train, run, *args):
        calls.append(run.split.name)
        if run.split.name == "new_lab" and calls.count("new_lab") == 1:
            raise KeyboardInterrupt
        return {"rows": [{"method": "x", "read": 0.5, "split": run.split.name}]}

    monkeypatch.setattr(compare_run, "compare_split", fake_split)
    monkeypatch.setattr(compare_run.figures, "panels", lambda results: [])
    monkeypatch.setattr(compare_run.figures, "finding", lambda results: "fake")
    monkeypatch.setattr(compare_run.entropy_gate, "training_thresholds", lambda *a, **k: {})
    kwargs = {"model": tiny_gemma, "progress": False, "announce": lambda _: None}
    with pytest.raises(KeyboardInterrupt):
        compare_run.run_compare(cfg, tmp_path, **kwargs)
    assert (tmp_path / "compare.run" / "unit-same.json").exists()
    doc, _ = compare_run.run_compare(cfg, tmp_path, resume=True, **kwargs)
    assert calls == ["same", "new_lab", "new_lab"]
    assert doc["splits"]["same"]["rows"][0]["split"] == "same"
    assert not (tmp_path / "compare.run").exists()
    with pytest.raises(Exception, match="belongs to another run"):
        compare_run.RunFolder(
            tmp_path / "compare.run", {"command": "compare", "config": {}}, resume=False
        )
        compare_run.run_compare(cfg.__class__.quick_config(seed=5), tmp_path, resume=True, **kwargs)


def test_a_stop_signal_in_a_finalizer_is_delivered_again(monkeypatch):
    import types

    from analyses.cli import main as cli
    from fmi.errors import Interrupted

    sent = []
    monkeypatch.setattr(cli.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    in_del = types.SimpleNamespace(f_code=types.SimpleNamespace(co_name="__del__"))
    cli._on_stop_signal(signal.SIGTERM, in_del)  # returns: raising there would be ignored
    time.sleep(0.2)
    assert sent == [(os.getpid(), signal.SIGTERM)]
    anywhere = types.SimpleNamespace(f_code=types.SimpleNamespace(co_name="fit"))
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        with pytest.raises(Interrupted) as err:
            cli._on_stop_signal(sig, anywhere)
        assert err.value.code == code and str(err.value) == f"interrupted by {sig.name}"
