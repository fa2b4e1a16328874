"""Long loops show tqdm bars on stderr, never on stdout, and none at all with ``progress=False``:
capacity (the bank's write, decoding, sizes, search cost, LoRA rows and steps), bench (every
timed call, repeats included) and edit (set-up, tuning grids, cells, groups, examples)."""

from __future__ import annotations

from dataclasses import replace

import pytest

BAR = "%|"  # tqdm's bar: "desc:  50%|#####     | 2/4 [...]"


def _quiet(_: str) -> None:
    """Announcements go to stdout by default; silenced, stdout must stay empty."""


def _capacity(model_fixtures, tmp_path, progress: bool) -> None:
    from analyses.capacity.config import CapacityConfig
    from analyses.capacity.run import run_capacity

    quick = CapacityConfig.quick_config()
    cfg = replace(quick, sizes=(4, 12), lora_sizes=(4,), lora=replace(quick.lora, ranks=(1,)))
    run_capacity(
        cfg, tmp_path, model=model_fixtures["tiny_gemma"], announce=_quiet, progress=progress
    )


def _bench(model_fixtures, tmp_path, progress: bool) -> None:
    from analyses.bench.config import BenchConfig
    from analyses.bench.run import run_bench

    cfg = BenchConfig.quick_config(bank_sizes=(50, 200))
    run_bench(cfg, model=model_fixtures["tiny_neox"], announce=_quiet, progress=progress)


def _edit(model_fixtures, tmp_path, progress: bool) -> None:
    from analyses.edit.config import EditConfig
    from analyses.edit.run import run_edit

    cfg = EditConfig(
        model="tiny-gemma",
        methods=("none", "grace"),
        edits=(1, 4),
        scored=4,
        tune_edits=4,
        unrelated=12,
    )
    run_edit(model_fixtures["tiny_gemma"], cfg, announce=_quiet, progress=progress)


RUNS = {
    "capacity": (
        _capacity,
        ("capacity: write", "capacity: decode", "capacity: bank sizes", "LoRA rows", "LoRA r=1"),
    ),
    "bench": (
        _bench,
        ("bench: write vs forward", "bench: generation", "bench: multi-token", "bench: retrieval"),
    ),
    "edit": (
        _edit,
        ("edit: set up", "edit: tuning grid", "edit: cells", "edit: grace T=1", "edit: examples"),
    ),
}


@pytest.fixture
def models(request):
    return {
        "tiny_gemma": request.getfixturevalue("tiny_gemma"),
        "tiny_neox": request.getfixturevalue("tiny_neox"),
    }


@pytest.mark.parametrize("name", list(RUNS))
def test_bars_go_to_stderr_only(name, models, tmp_path, capsys):
    run, bars = RUNS[name]
    capsys.readouterr()
    run(models, tmp_path / "on", True)
    on = capsys.readouterr()
    for desc in bars:
        assert desc in on.err, f"no {desc!r} bar on stderr"
    assert BAR in on.err
    assert on.out == "", f"stdout got {on.out[:300]!r}"

    run(models, tmp_path / "off", False)
    off = capsys.readouterr()
    assert BAR not in off.err and "\r" not in off.err, f"a bar with progress=False: {off.err!r}"
    for desc in bars:
        assert desc not in off.err
    assert off.out == ""
