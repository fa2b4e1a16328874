"""Known answers for the fitting rules: thresholds, their cross-fitting, dual-key weights,
the alpha rule and the refinement-step rule."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fmi.experiments.config import RecallConfig
from fmi.experiments.queries import QuerySet
from fmi.memory import fit as calibrate
from fmi.memory.entry import Entry, KeyEncoder
from fmi.memory.fit import _smallest_near_best, choose_rho, threshold_between
from fmi.memory.keys import Standardizer
from fmi.memory.retrieve import QueryScores
from fmi.memory.store import FastMemory


@pytest.mark.parametrize(
    "pos, neg, fa, want",
    [
        ([0.5, 0.9], [0.1, 0.2, 0.3], 0.01, 0.4),  # midway from the top negative to next positive
        ([0.75, 0.2], [x / 10 for x in range(1, 11)], 0.34, 0.725),  # 0.7 lets 3 of 10 fire
        ([0.2], [0.1, 0.3], 0.01, 0.3 + 1e-6),  # no positive above: just above the negatives
        ([0.6, 0.4], [], 0.01, 0.4),  # no negatives: the lowest positive
        ([], [], 0.01, 0.0),  # neither: 0
    ],
)
def test_threshold_between_known_answers(pos, neg, fa, want):
    got = threshold_between(np.array(pos), np.array(neg), fa)
    assert got == pytest.approx(want, abs=1e-12)


def test_threshold_lets_at_most_the_false_accept_share_fire():
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0, 1, 500), rng.normal(5, 1, 200)
    thr = threshold_between(pos, neg, 0.01)
    assert (neg >= thr).mean() <= 0.01 and (pos >= thr).mean() > 0.9


def test_smallest_near_best_and_rho_rule():
    assert _smallest_near_best({1: 0.5, 2: 0.995, 3: 1.0, 5: 1.0}) == 2
    assert _smallest_near_best({1: 1.0, 3: 1.0}) == 1
    assert _smallest_near_best({1: 0.985, 2: 1.0}) == 2  # 0.015 short: outside the default 0.01
    assert _smallest_near_best({1: 0.5, 2: 1.0, 4: 1.0}, tolerance=0.0) == 2  # ties at the best
    assert _smallest_near_best({1: 0.5, 2: 0.9, 4: 1.0}, tolerance=0.5) == 1
    assert choose_rho({0.05: 0.06, 0.1: 0.81, 0.15: 1.0, 0.2: 1.0}) == 0.2
    assert choose_rho({0.4: 0.2}) == 0.4


def _memory(n: int) -> FastMemory:
    d = 4
    std = Standardizer(torch.zeros(d), torch.ones(d))
    z = torch.zeros(n, d)
    return FastMemory(
        "m",
        d,
        "ln_final.hook_out",
        1.0,
        KeyEncoder("a", "b", std, std, torch.eye(d)),
        [Entry("game A", f"s{i}", "red", 1) for i in range(n)],
        z,
        z,
        z,
        torch.arange(n),
        torch.zeros(n, dtype=torch.long),
    )


def test_crossfitting_scores_each_query_with_a_projector_blind_to_its_symbol(monkeypatch):
    symbols = ["s0", "s0", "s1", "s1", "s2", "s2", None, None, None]
    qs = QuerySet(
        [""] * 9,
        ["read"] * 6 + ["unrelated"] * 3,
        [0, 0, 1, 1, 2, 2, -1, -1, -1],
        symbols,
        [None] * 9,
    )
    trained: list[list[int]] = []

    def fake_fit(written, got, qs_, std, site, cfg, rows=None):
        trained.append(list(rows))
        return torch.eye(4) * len(trained)  # projector k marks its scores with k

    def fake_scores(memory, sym_acts, tok_acts, content, modes=None):
        k = float(memory.encoder.projector[0, 0])
        return QueryScores(None, torch.full((len(sym_acts), 3), k), None, None)

    monkeypatch.setattr(calibrate, "_fit_projector", fake_fit)
    monkeypatch.setattr(calibrate, "score_queries", fake_scores)
    acts = [torch.zeros(2, 4)] * 9
    got = SimpleNamespace(acts={"a": acts, "b": acts}, content=[torch.ones(2)] * 9)
    out = calibrate._crossfit_projected(_memory(3), None, got, qs, "a", RecallConfig.quick())
    # folds: symbols s0, s2 in fold 0, s1 in fold 1; unrelated prompts alternate by index
    assert trained == [[2, 3, 7], [0, 1, 4, 5, 6, 8]]
    for q, row in enumerate(out[:, 0].tolist()):
        k = int(row) - 1  # the projector that scored q
        assert q not in trained[k]
        if symbols[q] is not None:
            assert symbols[q] not in {symbols[r] for r in trained[k]}


def test_dual_weights_learn_from_exactly_the_right_labels(monkeypatch):
    seen = {}

    class Spy:
        def __init__(self, **kw):
            seen["kw"] = kw
            self.coef_, self.intercept_ = np.array([[1.0, 2.0, 3.0]]), np.array([-4.0])

        def fit(self, x, y):
            seen["x"], seen["y"] = x, y
            return self

    monkeypatch.setattr(calibrate, "LogisticRegression", Spy)
    sym = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.3]])
    ctx = torch.tensor([[0.5, 0.4], [0.6, 0.7], [0.1, 0.2]])
    qs = QuerySet([""] * 3, ["read", "read", "plain"], [0, 1, -1], ["a", "b", "a"], [None] * 3)
    w = calibrate._fit_dual_weights(QueryScores(None, None, sym, ctx), qs, seed=7)
    assert seen["y"].tolist() == [1, 0, 0, 1, 0, 0]  # query-major: (q0,e0) (q0,e1) (q1,e0) ...
    assert np.allclose(seen["x"][0], [0.9, 0.5, 0.45]) and np.allclose(
        seen["x"][3], [0.8, 0.7, 0.56]
    )
    assert seen["kw"] == {"class_weight": "balanced", "max_iter": 1000, "random_state": 7}
    assert w.tolist() == [1.0, 2.0, 3.0, -4.0] and w.dtype == torch.float32


def test_standardizer_is_fitted_on_the_content_rows_only():
    a = torch.tensor([[1.0, 10.0], [3.0, 30.0], [100.0, 100.0]])
    b = torch.tensor([[5.0, 50.0], [-100.0, 0.0]])
    keep = [torch.tensor([True, True, False]), torch.tensor([True, False])]
    std = calibrate._fit_standardizer([a, b], keep)
    assert torch.equal(std.mean, torch.tensor([3.0, 30.0]))
    assert torch.equal(std.std, torch.tensor([2.0, 20.0]))
    with pytest.raises(ValueError):
        calibrate._fit_standardizer([a, b], keep[:1])
