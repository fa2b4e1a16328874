"""The six one-line breakages an audit found the suite blind to, each kept as a regression.

Each breakage is a one-line source change applied to a fresh copy of its module. The
known-answer check for that code must pass on the real module and fail on the broken copy.
The checks are exact: hand-made cases with known outcomes, nothing the breakage could satisfy.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types

import pytest
import torch

from fmi.experiments.config import RecallConfig
from fmi.memory.entry import Entry
from fmi.memory.retrieve import QueryScores


def mutated(name: str, old: str, new: str) -> types.ModuleType:
    """A fresh copy of module ``name`` with the one occurrence of ``old`` replaced by ``new``."""
    module = importlib.import_module(name)
    source = inspect.getsource(module)
    assert source.count(old) == 1, f"{name}: the breakage's line is not unique: {old!r}"
    copy = types.ModuleType(f"{name}_broken")
    copy.__file__ = module.__file__
    sys.modules[copy.__name__] = copy  # dataclasses look their module up while being made
    try:
        exec(compile(source.replace(old, new), module.__file__ or name, "exec"), copy.__dict__)
    finally:
        del sys.modules[copy.__name__]
    return copy


# -- the checks: each asserts exact outcomes on a hand-made case ------------------------------


def check_hits(evaluate, case) -> None:
    """Whole-answer word-bounded match, plain and unrelated against the memory-free output."""
    got = evaluate.hits(case.model, case.qs, case.entries, case.labels, case.out, case.base)
    assert got["write"] == [True]
    assert got["read"] == [False, True, False]  # " New York" short, "\n\nred" hit, " piglet" miss
    assert got["plain"] == [True, False]
    assert got["unrelated"] == [True, False]
    assert got["unrelated_changed"] == [True, False]


def check_cluster_interval(intervals) -> None:
    """Known intervals: 40 symbols all right count once each; a mixed case is not (0, 1)."""
    lo, hi = intervals.cluster_interval([1.0] * 80, [i // 2 for i in range(80)], 200, 0)
    assert hi == 1.0 and abs(lo - intervals.wilson(40, 40)[0]) < 1e-12
    lo, hi = intervals.cluster_interval([1.0, 0.0] * 20, list(range(40)), 400, 0)
    assert 0.3 < lo < 0.4 and 0.6 < hi < 0.7


def check_dual_key(retrieval) -> None:
    """dual_key = clamp(symbol, 0) * clamp(context, 0), blind to which context a prompt names."""
    entries = [Entry("game A", "dax", "red", 1), Entry("game B", "dax", "blue", 2)]
    memory = types.SimpleNamespace(entries=entries, dual_weights=None)
    sym = torch.tensor([[0.9, 0.9], [0.5, -0.2]])
    ctx = torch.tensor([[0.2, 0.8], [0.7, 0.4]])
    scores = QueryScores(None, None, sym, ctx)
    for gate in ([None, None], ["game A", "game A"], ["game C", None]):
        got = retrieval.mode_scores("dual_key", scores, memory, gate)
        want = torch.tensor([[0.18, 0.72], [0.35, 0.0]])
        assert torch.allclose(got, want, atol=1e-7, rtol=0), (gate, got)


def check_alpha_rule(calibrate) -> None:
    """One grid step above the smallest rho within 0.01 of the best."""
    assert calibrate.choose_rho({0.05: 0.06, 0.1: 0.81, 0.15: 1.0, 0.2: 1.0, 0.8: 1.0}) == 0.2
    assert calibrate.choose_rho({0.1: 0.995, 0.2: 1.0, 0.4: 0.3}) == 0.2
    assert calibrate.choose_rho({0.1: 0.2, 0.2: 0.5, 0.4: 0.9}) == 0.4


@pytest.fixture(scope="module")
def case(tiny_neox):
    from test_hits import _case

    return _case(tiny_neox)


BREAKAGES = {
    "word match -> first-token match": (
        "fmi.experiments.evaluate",
        "hits[kind].append(text_matches(texts[q], label))",
        "hits[kind].append(out.tokens[q][:1] == (entry.target,))",
        "hits",
    ),
    "unrelated_changed forced False": (
        "fmi.experiments.evaluate",
        'hits["unrelated_changed"].append(out.tokens[q] != base.tokens[q])',
        'hits["unrelated_changed"].append(False)',
        "hits",
    ),
    "plain forced False": (
        "fmi.experiments.evaluate",
        'hits["plain"].append(any(text_matches(texts[q], lab) for lab in bound[symbol]))',
        'hits["plain"].append(False)',
        "hits",
    ),
    "interval returns a constant (0, 1)": (
        "fmi.experiments.intervals",
        "    return (min(wl, bl), max(wh, bh))",
        "    return (0.0, 1.0)",
        "interval",
    ),
    "dual_key multiplied by the gold-context gate": (
        "fmi.memory.retrieve",
        '        return dual_key_scores(scores.channel("symbol"), scores.channel("context"))',
        '        return dual_key_scores(scores.channel("symbol"), scores.channel("context")) * '
        "torch.tensor([[g is not None and e.context == g for e in memory.entries] for g in gate])",
        "dual",
    ),
    "alpha rule -> largest rho": (
        "fmi.memory.fit",
        "    return grid[min(first + 1, len(grid) - 1)]",
        "    return grid[-1]",
        "alpha",
    ),
}


def _check(kind: str, module, case) -> None:
    if kind == "hits":
        check_hits(module, case)
    elif kind == "interval":
        check_cluster_interval(module)
    elif kind == "dual":
        check_dual_key(module)
    else:
        check_alpha_rule(module)


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_the_check_passes_on_the_real_code(name, case):
    module, _, _, kind = BREAKAGES[name]
    _check(kind, importlib.import_module(module), case)


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_the_breakage_is_caught(name, case):
    module, old, new, kind = BREAKAGES[name]
    with pytest.raises(AssertionError):
        _check(kind, mutated(module, old, new), case)


def test_recall_config_is_untouched_by_the_copies():
    assert RecallConfig().rho_grid[0] == 0.05  # the copies are separate modules
