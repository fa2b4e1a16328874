"""Shared fixtures: seeded tiny models (random weights, offline neox tokenizer), loaded once."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

# Imported here, at collection, so that a process forked after collecting (mutmut's fork server,
# make mutation) starts with them loaded instead of spending seconds on them per mutant.
import transformer_lens.model_bridge  # noqa: F401
import transformers  # noqa: F401

from fmi.models.registry import LoadedModel, load_model


def _quiet(_: str) -> None:
    """Swallow load announcements in tests."""


@pytest.fixture(scope="session")
def tiny_neox() -> LoadedModel:
    """Random GPT-NeoX, 2 layers, d_model 64 (seed 0)."""
    return load_model("tiny-neox", seed=0, announce=_quiet)


@pytest.fixture(scope="session")
def tiny_pythia() -> LoadedModel:
    """Random weights in Pythia-70M's exact architecture (seed 0)."""
    return load_model("tiny-pythia-arch", seed=0, announce=_quiet)


@pytest.fixture(scope="session")
def tiny_gemma() -> LoadedModel:
    """Random Gemma-3 text model, 2 layers, d_model 64 (seed 0)."""
    return load_model("tiny-gemma", seed=0, announce=_quiet)


@pytest.fixture(scope="session")
def quick_fit(tiny_gemma):
    """A memory fitted on the quick recall configuration over ``tiny_gemma``, from the library
    alone (no analysis module): ``.model``, ``.cfg``, ``.task``, ``.fitted``."""
    from fmi.experiments.config import RecallConfig
    from fmi.experiments.labels import check_labels
    from fmi.experiments.recall import task_for
    from fmi.memory.fit import fit
    from fmi.memory.projectors import ProjectorConfig

    # the analyses' quick configuration's recall part (single-token labels)
    cfg = RecallConfig.seed_value(
        rho_grid=(0.2, 0.8),
        calibration_prompts=8,
        projector=ProjectorConfig(dim=16),
        n_unrelated=12,
    )
    task = task_for(cfg)
    check_labels(task, tiny_gemma.tokenizer)
    return SimpleNamespace(
        model=tiny_gemma, cfg=cfg, task=task, fitted=fit(tiny_gemma, task.train, cfg)
    )
