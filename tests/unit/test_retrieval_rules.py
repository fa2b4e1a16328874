"""Known answers for the retrieval rules: each mode's score matrix, top-k, the abstaining
decision and what counts as retrieving right, on hand-made scores and a hand-made bank."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from fmi.errors import ConfigError
from fmi.memory.entry import Entry
from fmi.memory.plan import ReadPlan
from fmi.memory.retrieve import (
    MODES,
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
        self.read_plan = ReadPlan()

    def search_channel(self, name):
        return SimpleNamespace(rows=torch.zeros(len(self.entries), 2))

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
        (
            "both_top1",
            QueryScores(RAW, None, SYM, CTX),
            Bank(),
            None,
            "mode both_top1 needs a trained projector",
        ),
        ("context_gate", SCORES, Bank(), None, "context_gate needs the query's context"),
        ("dual_key_learned", SCORES, Bank(), None, "dual_key_learned needs fitted weights"),
        ("nope", SCORES, Bank(), None, "unknown mode 'nope'; modes are " + ", ".join(MODES)),
        (
            "dual_key",
            QueryScores(RAW, PROJ, None, CTX),
            Bank(),
            None,
            "score channel 'symbol' was not computed for these queries",
        ),
    ],
)
def test_a_mode_without_its_inputs_is_refused(mode, scores, bank, gate, message):
    """The whole message, so that a garbled one fails too."""
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
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


def _calibrated(raw, proj):
    """``_thresholds`` on two reads (entries 0 and 2, game A), a plain and an unrelated prompt,
    with fixed symbol and context channels and the given raw and projected scores."""
    from types import SimpleNamespace

    from fmi.memory.fit import _thresholds

    sym = torch.tensor([[1, 0.5, 0], [0, 0, 1], [0.5, 0.5, 0.5], [0.2, 0.1, 0]])
    ctx = torch.tensor([[1, 0, 1], [1, 0, 0.5], [0.4, 1, 0.2], [1, 1, 1]])
    qs = SimpleNamespace(
        kinds=["read", "read", "plain", "unrelated"],
        entry=[0, 2, -1, -1],
        gate=["game A", "game A", None, None],
    )
    bank = Bank(dual_weights=torch.zeros(4))
    return _thresholds(bank, QueryScores(raw, proj, sym, ctx), qs, 0.0)


def test_calibrated_thresholds_and_training_retrieval_by_hand():
    raw = torch.tensor([[0.2, 0.9, 0.1], [0.1, 0.2, 0.7], [0.3, 0.3, 0.3], [0.0, 0.4, 0.1]])
    proj = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.2, 0.8], [0.4, 0.5, 0.1], [0.6, 0.0, 0.3]])
    thr, retrieval = _calibrated(raw, proj)
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


def test_thresholds_count_only_positives_that_retrieved_right():
    # q0 asks for entry 0 (dax, game A): raw picks entry 1 with 0.5, proj picks entry 1 (dax,
    # game B), right for ``average`` only; q1 asks for entry 2 (wug): raw right with 0.7, proj
    # picks entry 1 (a dax), wrong for every mode
    raw = torch.tensor([[0.2, 0.5, 0.1], [0.1, 0.2, 0.7], [0.3, 0.3, 0.3], [0.0, 0.4, 0.1]])
    proj = torch.tensor([[0.1, 0.9, 0.2], [0.3, 0.85, 0.8], [0.4, 0.5, 0.1], [0.6, 0.0, 0.3]])
    thr, retrieval = _calibrated(raw, proj)
    assert thr["raw_both_top1"] == pytest.approx((0.4 + 0.7) / 2)  # not 0.5, retrieved wrong
    assert thr["both_top1"] == pytest.approx(0.6 + 1e-6)  # no positive retrieved right
    assert thr["average"] == pytest.approx((0.6 + 0.9) / 2)  # q0's symbol is right
    assert (retrieval["raw_both_top1"], retrieval["both_top1"], retrieval["average"]) == (
        0.5,
        0.0,
        0.5,
    )


def test_retrieved_right_needs_one_target_per_query():
    with pytest.raises(ValueError):
        retrieved_right("average", torch.tensor([0, 1]), [0, 1, 2], Bank())


def test_token_channels_are_maxsim_per_role_against_a_naive_loop():
    from fmi.memory.entry import CONTEXT_ROLE, SYMBOL_ROLE
    from fmi.memory.retrieve import token_channels

    g = torch.Generator().manual_seed(0)
    queries = torch.randn(2, 3, 4, generator=g)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    keys = torch.randn(7, 4, generator=g)
    owner = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    role = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    assert (SYMBOL_ROLE, CONTEXT_ROLE) == (0, 1)
    sym, ctx = token_channels(queries, mask, keys, owner, role, 3)
    cos = torch.nn.functional.cosine_similarity
    for r, got in ((0, sym), (1, ctx)):
        for q in range(2):
            for e in range(3):
                toks = [m for m in range(7) if owner[m] == e and role[m] == r]
                # MaxSim: each key token's best query token, averaged over the key tokens
                best = [
                    max(float(cos(queries[q, p], keys[m], dim=0)) for p in range(3) if mask[q, p])
                    for m in toks
                ]
                assert float(got[q, e]) == pytest.approx(sum(best) / len(best), abs=1e-5)


def test_decide_reads_the_memory_and_the_gate():
    gate = ["game B", None]  # q0 may open game B's bank only; q1 names no context
    d = decide("context_gate", SCORES, Bank(), gate=gate)
    assert d.entry.tolist() == [1, -1]  # entry 1 is dax in game B; nothing opens for q1
    assert torch.equal(d.vectors[1], torch.zeros(2))  # even with no threshold (-inf)
    bank = Bank(dual_weights=torch.tensor([0.0, 0.0, 0.0, -1.0]), thresholds={})
    d = decide("dual_key_learned", SCORES, bank)  # the weights come from the memory
    want = torch.sigmoid(torch.tensor(-1.0))
    assert torch.allclose(d.score, torch.stack([want, want]))


class _Spy:
    """Records the calls ``read_decide`` makes, and answers each with a marker."""

    def __init__(self, monkeypatch):
        from fmi.memory import retrieve as retrieval

        self.calls = []
        for name in ("score_queries", "decide", "searched_top1", "choose"):
            monkeypatch.setattr(retrieval, name, self._fake(name))

    def _fake(self, name):
        def fake(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return ("best", "idx", "rescored") if name == "searched_top1" else name

        return fake


@pytest.mark.parametrize(
    "mode, size, min_search, path",
    [
        ("dual_key", 3, 4, "matrix"),  # a bank below min_search: the full score matrix
        ("dual_key", 4, 4, "search"),  # from min_search on: the exact search
        ("context_gate", 4, 4, "matrix"),  # a mode the search does not serve
    ],
)
def test_read_decide_chooses_matrix_or_search(monkeypatch, mode, size, min_search, path):
    from fmi.memory.retrieve import read_decide

    spy = _Spy(monkeypatch)
    bank = Bank(thresholds={"dual_key": 0.25})
    bank.entries = bank.entries[:1] * size
    acts = (["sym"], ["tok"], ["content"])
    got = read_decide(bank, mode, *acts, gate=["game A"], min_search=min_search, way="search")
    if path == "matrix":
        assert got == "decide"
        assert spy.calls == [
            ("score_queries", (bank, *acts), {"modes": (mode,), "answer_acts": None}),
            ("decide", (mode, "score_queries", bank), {"gate": ["game A"]}),
        ]
    else:
        assert got == "choose"
        assert spy.calls == [
            ("searched_top1", (bank, mode, *acts, 0.25), {}),
            ("choose", (mode, "best", "idx", bank), {}),
        ]


def test_read_decide_searches_without_a_threshold_when_the_mode_has_none(monkeypatch):
    from fmi.memory.retrieve import read_decide

    spy = _Spy(monkeypatch)
    read_decide(Bank(), "both_top1", [], [], [], min_search=1)
    assert spy.calls[0][1][-1] == float("-inf")


def test_choose_follows_the_memorys_device():
    """Scores computed elsewhere (the search) are moved to the values' device; ``meta`` stands in
    for a second device on a CPU-only machine."""
    bank = Bank()
    bank.values = torch.zeros(3, 2, device="meta")
    d = choose("dual_key", torch.tensor([0.5, 0.2]), torch.tensor([1, 2]), bank)
    assert d.entry.device.type == "meta" and d.vectors.device.type == "meta"


def test_the_context_gate_mask_follows_the_scores_device():
    meta = QueryScores(RAW, PROJ.to("meta"), SYM, CTX)
    got = mode_scores("context_gate", meta, Bank(), gate=["game B", None])
    assert got.device.type == "meta"


@pytest.mark.parametrize("size, path", [(4095, "decide"), (4096, "choose")])
def test_read_decide_searches_from_4096_entries_by_default(monkeypatch, size, path):
    from fmi.memory.retrieve import read_decide

    _Spy(monkeypatch)
    bank = Bank()
    bank.entries = bank.entries[:1] * size
    assert read_decide(bank, "dual_key", [], [], []) == path


def test_choose_injects_the_chosen_entrys_own_value():
    d = choose("dual_key", torch.tensor([0.9, 0.8]), torch.tensor([0, 2]), Bank(alpha=2.0))
    assert d.entry.tolist() == [0, 2]
    assert torch.equal(d.vectors, torch.tensor([[2.0, 0.0], [6.0, 6.0]]))
