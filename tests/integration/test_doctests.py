"""Every ``>>>`` example in the public modules runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "fmi",
    "analyses.relation_geometry.compute",
    "analyses.edit.relation_key",
    "fmi.memory.store",
    "fmi.memory.statements",
    "fmi.memory.ask",
    "fmi.memory.refine",
    "fmi.memory.answers",
    "fmi.experiments.config",
    "fmi.experiments.evaluate",
    "fmi.experiments.intervals",
    "fmi.experiments.questions",
    "fmi.experiments.tasks",
    "fmi.experiments.builtin_tasks",
    "fmi.experiments.recall",
    "fmi.memory.entry",
    "fmi.models.registry",
    "fmi.reporting.report",
    "fmi.reporting.atomic",
    "fmi.experiments.run_folder",
    "analyses.inspect.figures",
    "fmi.memory.fit",
    "fmi.memory.relation",
    "analyses.compare.entropy_gate",
    "analyses.compare.attention_entropy",
    "analyses.compare.seeds",
    "analyses.compare.soft_prefix.prepend",
    "analyses.compare.soft_prefix.tune",
    "fmi.experiments.known_facts",
    "analyses.edit.cases",
    "analyses.edit.loaders",
    "analyses.edit.record_fields",
    "analyses.edit.bundled.files",
    "analyses.edit.bundled.split",
    "analyses.edit.bundled.known_cf",
    "analyses.edit.bundled.nonce_cf",
    "analyses.edit.bundled.unrelated",
    "analyses.edit.bundled.build",
    "analyses.edit.bundled.records",
    "analyses.edit.bundled.relation_probes",
    "analyses.edit.bundled.geo_source",
    "analyses.edit.bundled.geo_templates",
    "analyses.edit.bundled.geo_cf",
    "analyses.edit.config",
    "analyses.edit.score",
    "analyses.edit.plan",
    "analyses.edit.rates",
    "analyses.edit.failures",
    "analyses.edit.failure_classes",
    "analyses.edit.probability",
    "analyses.edit.method",
    "analyses.edit.grace",
    "analyses.edit.prefix_cache",
    "analyses.edit.methods",
    "analyses.edit.teacher",
    "analyses.edit.tune",
    "analyses.edit.fast",
    "analyses.edit.figures",
    "analyses.edit.rome.config",
    "analyses.edit.rome.keys",
    "analyses.edit.rome.covariance",
    "analyses.edit.rome.value",
    "analyses.edit.rome.update",
    "analyses.edit.rome.method",
    "analyses.edit.memit.config",
    "analyses.edit.memit.update",
    "analyses.edit.memit.states",
    "analyses.edit.memit.method",
    "analyses.sweep.config",
    "analyses.sweep.cells",
    "analyses.sweep.executors",
    "analyses.sweep.merge",
    "analyses.sweep.figures",
    "analyses.sweep.table",
    "analyses.sweep.run",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
