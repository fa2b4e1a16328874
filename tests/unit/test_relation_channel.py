"""The relation key: the entry's key is the frozen state at the injection site, answer position;
the ``relation`` channel is the standardized cosine of a query's last-position state with it;
``relation_key`` weighs six features; one-pass reading decides as two passes do; the keys
survive select, append, save and load."""

from __future__ import annotations

import pytest
import torch

import fmi
from fmi.core.forward import collect
from fmi.core.sites import UNEMBED_IN
from fmi.errors import ConfigError
from fmi.memory.inject import ReadLog, check_order, read_greedy
from fmi.memory.keys import Standardizer
from fmi.memory.relation import fit_relation_key, relation_fit, relation_scores, youden
from fmi.memory.retrieve import RELATION_FEATURES, QueryScores, decide, mode_scores, score_queries

FACTS = ["Ann lives in", "Bob works at", "The capital of Peru is"]
ANSWERS = [" Rome", " CERN", " Lima"]
SPANS = [{"symbol": "Ann"}, {"symbol": "Bob"}, {"symbol": "Peru"}]
QUERIES = [
    "Ann lives in",
    "Where does Ann live? In",
    "Ann works at",
    "The capital of Peru is",
    "The language of Peru is",
    "Hello there",
]


@pytest.fixture(scope="module")
def fitted(tiny_gemma):
    memory = fmi.FastMemory.fit(tiny_gemma, fmi.RecallConfig.quick())
    memory.write_many(FACTS, ANSWERS, spans=SPANS)
    return fit_relation_key(memory, tiny_gemma, FACTS, [0, 1, 2], QUERIES[4:])


def test_written_relation_key_is_the_answer_position_state(tiny_gemma, fitted):
    tok = tiny_gemma.tokenizer
    for i, fact in enumerate(FACTS):
        ids = tok(fact + ANSWERS[i] + "\n")["input_ids"]
        _, cache = tiny_gemma.bridge.run_with_cache(torch.tensor([ids]))
        n = len(tok(fact)["input_ids"])
        want = cache[UNEMBED_IN][0, n - 1]
        torch.testing.assert_close(fitted.answer_keys[i], want, atol=1e-5, rtol=1e-5)


def test_relation_channel_equals_a_naive_loop(tiny_gemma, fitted):
    enc = fitted.encoder
    got = collect(tiny_gemma.bridge, tiny_gemma.tokenizer, QUERIES, [UNEMBED_IN])
    last = got.stack_last(UNEMBED_IN)
    scores = relation_scores(fitted, tiny_gemma, QUERIES)[..., RELATION_FEATURES.index("relation")]
    std = enc.answer_std
    for q in range(len(QUERIES)):
        for e in range(len(fitted)):
            a = (last[q] - std.mean) / std.std
            b = (fitted.answer_keys[e] - std.mean) / std.std
            want = float(a @ b / (a.norm() * b.norm()))
            assert abs(float(scores[q, e]) - want) < 1e-5


def test_relation_key_weighs_its_features_hand_made():
    one = torch.ones(1, 2)
    s = QueryScores(
        raw=one * 0.5,
        projected=None,
        symbol=torch.tensor([[1.0, 0.0]]),
        context=one,
        relation=torch.tensor([[0.0, 2.0]]),
    )
    memory = type("M", (), {"relation_weights": torch.tensor([1.0, 0, 0, 0, 0, 0, 0])})()
    torch.testing.assert_close(mode_scores("relation_key", s, memory), torch.sigmoid(s.symbol))
    memory.relation_weights = torch.tensor([0.0, 0, 0, 0, 0, 2.0, -1.0])  # subject x relation
    want = torch.sigmoid(torch.tensor([[0.0 - 1.0, 2.0 * 0.5 * 2.0 - 1.0]]))
    torch.testing.assert_close(mode_scores("relation_key", s, memory), want)
    memory.relation_weights = None
    with pytest.raises(ConfigError, match="fitted weights"):
        mode_scores("relation_key", s, memory)


def test_youden_known_answers():
    import numpy as np

    assert youden(np.array([1.0, 2.0]), np.array([0.0])) == 0.5
    assert youden(np.array([0.9, 0.8, 0.3]), np.array([0.1, 0.2, 0.85])) == 0.25
    # no cut separates: every cut gives J = 0 and the highest is taken
    assert youden(np.array([0.5]), np.array([0.5])) == pytest.approx(0.5 + 1e-6)


def test_fit_sets_mode_weights_threshold_and_standardizer(tiny_gemma, fitted):
    assert fitted.mode == "relation_key"
    assert fitted.relation_weights.shape == (len(RELATION_FEATURES) + 1,)
    assert "relation_key" in fitted.thresholds
    assert isinstance(fitted.encoder.answer_std, Standardizer)
    with pytest.raises(ConfigError, match="written entries"):
        fit_relation_key(fitted.select([]), tiny_gemma, FACTS, [0], QUERIES)
    with pytest.raises(ConfigError, match="one owner each"):
        fit_relation_key(fitted, tiny_gemma, FACTS, [0], QUERIES)


def test_one_pass_read_decides_as_two_passes(tiny_gemma, fitted):
    enc = fitted.encoder
    sites = list(dict.fromkeys([enc.symbol_site, enc.token_site, UNEMBED_IN]))
    got = collect(tiny_gemma.bridge, tiny_gemma.tokenizer, QUERIES, sites)
    scores = score_queries(
        fitted,
        got.acts[enc.symbol_site],
        got.acts[enc.token_site],
        got.content,
        modes=("relation_key",),
        answer_acts=got.stack_last(UNEMBED_IN),
    )
    two = decide("relation_key", scores, fitted)
    _, log = read_greedy(tiny_gemma, fitted, "relation_key", QUERIES, max_new_tokens=2)
    assert log.entry.tolist() == two.entry.tolist()
    assert isinstance(log, ReadLog)


def test_relation_channel_needs_its_states_and_the_unembedding_input(fitted):
    with pytest.raises(ConfigError, match="answer-position states"):
        score_queries(fitted, [], [], [], modes=("relation_key",))
    moved = fitted.select([0])
    moved.inject_site = "blocks.1.hook_resid_post"
    with pytest.raises(ConfigError, match="relation key"):
        check_order(moved, "relation_key")


def test_keys_survive_select_append_save_and_load(tiny_gemma, fitted, tmp_path):
    picked = fitted.select([2, 0])
    torch.testing.assert_close(picked.answer_keys, fitted.answer_keys[[2, 0]])
    grown = fitted.select([0])
    grown.write_many(FACTS[1:], ANSWERS[1:], spans=SPANS[1:])
    torch.testing.assert_close(grown.answer_keys, fitted.answer_keys, atol=1e-5, rtol=1e-5)
    path = tmp_path / "r.fmi.safetensors"
    fitted.save(path)
    back = fmi.FastMemory.load(path, tiny_gemma)
    assert back.mode == "relation_key"
    torch.testing.assert_close(back.relation_weights, fitted.relation_weights)
    torch.testing.assert_close(back.encoder.answer_std.mean, fitted.encoder.answer_std.mean)
    assert [a.entry for a in back.ask(tiny_gemma, QUERIES)] == [
        a.entry for a in fitted.ask(tiny_gemma, QUERIES)
    ]


def test_relation_fit_on_separable_banks_fires_own_and_silences_negatives():
    # two banks; the own entry has relation 1, every other pair relation 0; negatives all 0
    def bank(n_pos: int, n_neg: int, n_entries: int):
        feats = torch.zeros(n_pos + n_neg, n_entries, len(RELATION_FEATURES))
        for q in range(n_pos):
            feats[q, q % n_entries, RELATION_FEATURES.index("relation")] = 1.0
        return feats, [q % n_entries for q in range(n_pos)] + [-1] * n_neg

    a, b = bank(6, 4, 3), bank(4, 2, 2)
    weights, threshold = relation_fit([a, b])
    k = len(RELATION_FEATURES)
    assert weights[RELATION_FEATURES.index("relation")] > 0
    for feats, owners in (a, b):
        best, idx = torch.sigmoid(feats @ weights[:k] + weights[k]).max(dim=1)
        fired = best >= threshold
        for q, o in enumerate(owners):
            assert bool(fired[q]) == (o >= 0) and (o < 0 or int(idx[q]) == o)


def test_fit_gives_the_relation_key_its_weights_threshold_and_statistics(quick_fit):
    fitted = quick_fit.fitted
    assert fitted.relation_weights is not None
    assert fitted.relation_weights.shape == (len(RELATION_FEATURES) + 1,)
    assert 0.0 <= fitted.thresholds["relation_key"] <= 1.0
    assert fitted.encoder.answer_std is not None
    assert fitted.to_dict()["relation_weights"] == [
        round(float(w), 6) for w in fitted.relation_weights
    ]
