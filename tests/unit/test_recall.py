"""The recall experiment end to end on a tiny model: frozen weights, determinism, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from fmi.errors import ConfigError, MemoryMismatchError
from fmi.experiments.builtin_tasks import builtin_task
from fmi.experiments.config import RecallConfig
from fmi.experiments.recall import run_recall
from fmi.memory.device import TENSOR_FIELDS
from fmi.memory.fit import fit
from fmi.memory.projectors import ProjectorConfig
from fmi.memory.retrieve import shown_name
from fmi.memory.store import FastMemory
from fmi.memory.write import write_memory
from fmi.models.fingerprint import parameter_checksum

SMALL = dict(
    n_train=6,
    n_eval=3,
    n_bootstrap=50,
    calibration_prompts=8,
    rho_grid=(0.2, 0.8),
    projector=ProjectorConfig(dim=16, steps=20),
)


def _cfg(**kw) -> RecallConfig:
    return RecallConfig(**{**SMALL, **kw})


@pytest.fixture(scope="module")
def task():
    return builtin_task(seed=0, n_train=6, n_eval=3, n_unrelated=12)


def _strip_times(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    for k in ("created", "wall_seconds", "git"):
        doc["header"].pop(k)
    return doc


def test_recall_is_deterministic_and_leaves_weights_bit_identical(tiny_neox, task):
    before = parameter_checksum(tiny_neox)
    first = run_recall(tiny_neox, task, _cfg(), progress=False)
    second = run_recall(tiny_neox, task, _cfg(), progress=False)
    assert parameter_checksum(tiny_neox) == before
    assert json.dumps(_strip_times(first)) == json.dumps(_strip_times(second))
    assert set(first["results"]) == {"none", *map(shown_name, RecallConfig().modes)}
    assert "context_gate (oracle)" in first["results"]
    row = first["results"]["both_top1"]["same"]
    assert len(row["read_misses"]) <= 5
    assert all({"prompt", "label", "output"} == set(m) for m in row["read_misses"])
    for metric in ("write", "read", "plain", "unrelated", "unrelated_changed"):
        assert 0.0 <= row[metric] <= 1.0
        lo, hi = row["ci95"][metric]
        assert lo <= row[metric] <= hi and hi > lo  # never zero-width
    header = first["header"]
    assert header["model"]["name"] == "tiny-neox" and "processing" in header["model"]
    assert header["config"]["seed"] == 0 and "torch" in header["versions"]


def test_other_seed_changes_the_task(tiny_neox):
    a = builtin_task(seed=0, n_train=6, n_eval=3)
    b = builtin_task(seed=1, n_train=6, n_eval=3)
    assert a.train.symbols() != b.train.symbols()


def test_memory_save_load_round_trip_and_refusal(tiny_neox, tiny_gemma, task, tmp_path):
    cfg = _cfg()
    fitted = fit(tiny_neox, task.train, cfg)
    split = task.split("same")
    _, memory = write_memory(tiny_neox, list(split.bindings), split.templates, fitted, cfg)
    path = tmp_path / "mem.safetensors"
    memory.save(path)
    back = FastMemory.load(path, tiny_neox)
    assert back.entries == memory.entries and back.thresholds == memory.thresholds
    assert back.alpha == memory.alpha and back.inject_site == memory.inject_site
    for name in TENSOR_FIELDS:  # every tensor of the memory, the answer steps' included
        saved, loaded = getattr(memory, name), getattr(back, name)
        assert (saved is None and loaded is None) or torch.equal(loaded, saved), name
    assert torch.equal(back.encoder.projector, memory.encoder.projector)
    with pytest.raises(MemoryMismatchError, match="tiny-neox.*tiny-gemma"):
        FastMemory.load(path, tiny_gemma)


def test_projector_training_leaves_weights_bit_identical(tiny_pythia, task):
    before = parameter_checksum(tiny_pythia)
    fitted = fit(tiny_pythia, task.train, _cfg())
    assert fitted.encoder.projector is not None
    assert parameter_checksum(tiny_pythia) == before
    assert all(not p.requires_grad for p in tiny_pythia.bridge.parameters())


def test_bad_config_is_named():
    with pytest.raises(ConfigError, match="unknown mode"):
        RecallConfig(modes=("both_top1", "nearest"))
    with pytest.raises(ConfigError, match="symbol_depth"):
        RecallConfig(symbol_depth=1.5)
