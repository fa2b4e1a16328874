"""Known answers for the retrieval rules: each mode's score matrix, top-k, the abstaining
decision and what counts as retrieving right, on hand-made scores and a hand-made bank."""

from __future__ import annotations

import pytest
import torch

from fmi.errors import ConfigError
from fmi.memory import Entry
from fmi.retrieval import (
    QueryScores,
    choose,
    decide,
    dual_features,
    dual_key_scores,
    mode_scores,
    retrieved_right,
    top_k,
)


class Bank:
    """The parts of a FastMemory the rules read: entries, values, thresholds, alpha, weights."""

    def __init__(self, thresholds=None, dual_weights=None, alpha=2.0):
        pairs = [("game A", "dax"), ("game B", "dax"), ("game A", "wug")]
        self.entries = [Entry(c, s, " red", 7) for c, s in pairs]
        self.values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
        self.thresholds = thresholds or {}
        self.dual_weights = dual_weights
        self.alpha = alpha

    def __len__(self):
        return len(self.entries)

    def symbols(self):
        return [e.symbol for e in self.entries]


RAW = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
PROJ = torch.tensor([[0.5, 0.9, 0.1], [0.2, 0.1, 0.8]])
SYM = torch.tensor([[0.5, -0.5, 1.0], [0.2, 0.4, -1.0]])
CTX = torch.tensor([[-0.2, 0.5, 0.5], [1.0, 0.5, 0.3]])
SCORES = QueryScores(RAW, PROJ, SYM, CTX)


def test_each_mode_ranks_by_its_own_matrix():
    bank = Bank(dual_weights=torch.tensor([1.0, 2.0, 3.0, -1.0]))
    assert torch.equal(mode_scores("raw_both_top1", SCORES, bank), RAW)
    assert torch.equal(mode_scores("both_top1", SCORES, bank), PROJ)
    assert torch.equal(mode_scores("average", SCORES, bank), PROJ)
    dual = torch.tensor([[0.0, 0.0, 0.5], [0.2, 0.2, 0.0]])
    assert torch.allclose(mode_scores("dual_key", SCORES, bank), dual)
    z = SYM * 1.0 + CTX * 2.0 + SYM * CTX * 3.0 - 1.0
    assert torch.allclose(mode_scores("dual_key_learned", SCORES, bank), torch.sigmoid(z))


def test_context_gate_opens_only_the_named_contexts_bank():
    got = mode_scores("context_gate", SCORES, Bank(), gate=["game B", None])
    inf = float("-inf")
    assert torch.equal(got, torch.tensor([[inf, 0.9, inf], [inf, inf, inf]]))
    got = mode_scores("context_gate", SCORES, Bank(), gate=["game A", "game B"])
    assert torch.equal(got, torch.tensor([[0.5, inf, 0.1], [inf, 0.1, inf]]))


def test_dual_key_clamps_each_channel_at_zero_then_multiplies():
    s, c = torch.tensor([[-1.0, 0.5, 2.0]]), torch.tensor([[3.0, -0.1, 0.25]])
    assert torch.equal(dual_key_scores(s, c), torch.tensor([[0.0, 0.0, 0.5]]))
    feats = dual_features(SCORES)
    assert feats.shape == (2, 3, 3)
    assert torch.equal(feats[..., 0], SYM) and torch.equal(feats[..., 1], CTX)
    assert torch.equal(feats[..., 2], SYM * CTX)


@pytest.mark.parametrize(
    ("mode", "scores", "bank", "gate", "message"),
    [
        ("both_top1", QueryScores(RAW, None, SYM, CTX), Bank(), None, "needs a trained projector"),
        ("context_gate", SCORES, Bank(), None, "needs the query's context"),
        ("dual_key_learned", SCORES, Bank(), None, "needs fitted weights"),
        ("nope", SCORES, Bank(), None, "unknown mode 'nope'"),
        ("dual_key", QueryScores(RAW, PROJ, None, CTX), Bank(), None, "'symbol' was not"),
    ],
)
def test_a_mode_without_its_inputs_is_refused(mode, scores, bank, gate, message):
    with pytest.raises(ConfigError, match=message):
        mode_scores(mode, scores, bank, gate)


def test_top_k_is_best_first_and_capped_at_the_bank():
    vals, idx = top_k("both_top1", SCORES, Bank(), 2)
    assert idx.tolist() == [[1, 0], [2, 0]]
    assert torch.equal(vals, torch.tensor([[0.9, 0.5], [0.8, 0.2]]))
    vals, idx = top_k("raw_both_top1", SCORES, Bank(), 10)
    assert idx.tolist() == [[2, 1, 0], [0, 1, 2]]
    vals, idx = top_k("context_gate", SCORES, Bank(), 1, gate=["game A", "game B"])
    assert idx.tolist() == [[0], [1]] and vals.tolist() == [[0.5], [pytest.approx(0.1)]]
    vals, idx = top_k("dual_key_learned", SCORES, Bank(dual_weights=torch.zeros(4)), 1)
    assert vals.tolist() == [[0.5], [0.5]]


def test_decide_abstains_below_the_threshold_and_scales_the_value():
    bank = Bank(thresholds={"both_top1": 0.85})
    d = decide("both_top1", SCORES, bank)
    assert d.entry.tolist() == [1, -1] and d.active.tolist() == [True, False]
    assert torch.equal(d.score, torch.tensor([0.9, 0.8]))
    assert torch.equal(d.vectors, torch.tensor([[0.0, 2.0], [0.0, 0.0]]))
    d = decide("both_top1", SCORES, bank, threshold=0.8)  # an explicit threshold wins
    assert d.entry.tolist() == [1, 2]
    assert torch.equal(d.vectors, torch.tensor([[0.0, 2.0], [6.0, 6.0]]))
    d = decide("raw_both_top1", SCORES, bank)  # no threshold for the mode: never abstains
    assert d.entry.tolist() == [2, 0]


def test_a_threshold_equal_to_the_score_injects():
    d = choose("dual_key", torch.tensor([0.5, 0.4999]), torch.tensor([0, 0]), Bank(), 0.5)
    assert d.entry.tolist() == [0, -1]


def test_an_index_below_zero_abstains_whatever_its_score():
    d = choose("dual_key", torch.tensor([9.0]), torch.tensor([-1]), Bank(), 0.0)
    assert d.entry.tolist() == [-1] and torch.equal(d.vectors, torch.zeros(1, 2))


def test_average_injects_the_mean_value_of_the_chosen_symbol():
    d = choose("average", torch.tensor([1.0, 1.0]), torch.tensor([1, 2]), Bank(alpha=1.0), 0.0)
    assert torch.equal(d.vectors, torch.tensor([[0.5, 0.5], [3.0, 3.0]]))
    assert d.entry.tolist() == [1, 2]


def test_retrieved_right_is_the_exact_binding_or_for_average_the_symbol():
    chosen = torch.tensor([0, 1, -1, 2, 0])
    target = [0, 0, 1, -1, 2]
    assert retrieved_right("dual_key", chosen, target, Bank()).tolist() == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert retrieved_right("average", chosen, target, Bank()).tolist() == [
        True,
        True,
        False,
        False,
        False,
    ]


def test_calibrated_thresholds_and_training_retrieval_by_hand():
    from types import SimpleNamespace

    from fmi.calibrate import _thresholds

    raw = torch.tensor([[0.2, 0.9, 0.1], [0.1, 0.2, 0.7], [0.3, 0.3, 0.3], [0.0, 0.4, 0.1]])
    proj = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.2, 0.8], [0.4, 0.5, 0.1], [0.6, 0.0, 0.3]])
    sym = torch.tensor([[1, 0.5, 0], [0, 0, 1], [0.5, 0.5, 0.5], [0.2, 0.1, 0]])
    ctx = torch.tensor([[1, 0, 1], [1, 0, 0.5], [0.4, 1, 0.2], [1, 1, 1]])
    qs = SimpleNamespace(
        kinds=["read", "read", "plain", "unrelated"],
        entry=[0, 2, -1, -1],
        gate=["game A", "game A", None, None],
    )
    bank = Bank(dual_weights=torch.zeros(4))
    thr, retrieval = _thresholds(bank, QueryScores(raw, proj, sym, ctx), qs, 0.0)
    # positives that retrieved right vs the best score of every negative, midway in the gap
    assert thr["both_top1"] == pytest.approx((0.6 + 0.8) / 2)
    assert thr["average"] == pytest.approx((0.6 + 0.8) / 2)
    assert thr["raw_both_top1"] == pytest.approx((0.4 + 0.7) / 2)  # q0 retrieved the wrong entry
    assert thr["dual_key"] == pytest.approx((0.5 + 1.0) / 2)  # 0.5 is not above the floor
    assert thr["dual_key_learned"] == pytest.approx(0.5 + 1e-6)  # no positive above the floor
    assert thr["context_gate"] == float("-inf")  # negatives name no context: nothing opens
    assert retrieval == {
        "both_top1": 1.0,
        "context_gate": 1.0,
        "raw_both_top1": 0.5,
        "average": 1.0,
        "dual_key": 1.0,
        "dual_key_learned": 0.5,
    }
