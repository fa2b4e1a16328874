"""Reproducibility: fits and recall runs are bit-identical whatever the caller's thread count."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from fmi.core.numerics import fixed_numerics, numerics
from fmi.errors import ConfigError
from fmi.experiments.builtin_tasks import builtin_task
from fmi.experiments.config import RecallConfig
from fmi.experiments.recall import run_recall
from fmi.memory.fit import fit


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()


def _fitted_bits(fitted) -> dict:
    enc = fitted.encoder
    return {
        "projector": _sha(enc.projector),
        "symbol_std": _sha(torch.cat([enc.symbol_std.mean, enc.symbol_std.std])),
        "token_std": _sha(torch.cat([enc.token_std.mean, enc.token_std.std])),
        "dual_weights": _sha(fitted.dual_weights),
        **fitted.to_dict(),
    }


def _strip_times(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    for k in ("created", "wall_seconds"):
        doc["header"].pop(k)
    return doc


@pytest.fixture(scope="module")
def task():
    return builtin_task(seed=0, n_train=8, n_eval=3, n_unrelated=12)


def test_fixed_numerics_sets_and_restores_threads_and_determinism():
    before = torch.get_num_threads()
    assert not torch.are_deterministic_algorithms_enabled()
    with fixed_numerics(1):
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
        assert numerics()["threads"] == 1 and numerics()["deterministic_algorithms"] is True
    assert torch.get_num_threads() == before
    assert not torch.are_deterministic_algorithms_enabled()


def test_fixed_numerics_restores_after_an_exception():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), fixed_numerics(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    assert not torch.are_deterministic_algorithms_enabled()


def test_fixed_numerics_refuses_zero_threads():
    with pytest.raises(ValueError, match="threads"), fixed_numerics(0):
        pass


def test_threads_is_validated_and_recorded():
    with pytest.raises(ConfigError, match="threads"):
        RecallConfig.quick(threads=0)
    assert RecallConfig().to_dict()["threads"] == 2


def test_fits_with_one_and_two_caller_threads_are_bit_identical(tiny_neox, task):
    cfg = RecallConfig.quick(n_train=8, n_eval=3)
    before = torch.get_num_threads()
    bits = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            bits[threads] = _fitted_bits(fit(tiny_neox, task.train, cfg))
            assert torch.get_num_threads() == threads  # the caller's setting comes back
    finally:
        torch.set_num_threads(before)
    assert bits[1] == bits[2]


def test_recall_json_is_identical_with_one_and_two_caller_threads(tiny_neox, task):
    cfg = RecallConfig.quick(n_train=8, n_eval=3, modes=("both_top1", "dual_key"))
    before = torch.get_num_threads()
    docs = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            docs[threads] = _strip_times(run_recall(tiny_neox, task, cfg, progress=False))
    finally:
        torch.set_num_threads(before)
    assert json.dumps(docs[1]) == json.dumps(docs[2])
    head = docs[1]["header"]
    assert head["numerics"]["threads"] == cfg.threads  # the run's own count, not the caller's
    assert head["numerics"]["deterministic_algorithms"] is True
    assert len(head["model"]["weights_sha256"]) == 64
