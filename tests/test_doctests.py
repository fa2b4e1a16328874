"""Every ``>>>`` example in the public modules runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "fmi",
    "fmi.memory",
    "fmi.statements",
    "fmi.ask",
    "fmi.refine",
    "fmi.answers",
    "fmi.config",
    "fmi.evaluate",
    "fmi.intervals",
    "fmi.questions",
    "fmi.tasks",
    "fmi.calibrate",
    "fmi.compare.entropy_gate",
    "fmi.compare.seeds",
    "fmi.compare.soft_prefix",
    "fmi.known_facts",
    "fmi.edit.cases",
    "fmi.edit.loaders",
    "fmi.edit.bundled",
    "fmi.edit.config",
    "fmi.edit.score",
    "fmi.edit.methods",
    "fmi.edit.teacher",
    "fmi.edit.tune",
    "fmi.edit.fast",
    "fmi.edit.figures",
    "fmi.edit.rome",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
