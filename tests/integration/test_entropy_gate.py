"""The entropy gates on ``dual_key``: attention entropy (FlashMem's signal) beside next-token
entropy. Known answers: hand-made patterns and entropy vectors, a naive per-text loop over
``hook_pattern`` on both tiny architectures, and the gated row recomputed by hand."""

from __future__ import annotations

import doctest
import math
from types import SimpleNamespace

import pytest
import torch

from analyses.compare import entropy_gate, rows
from analyses.compare.attention_entropy import (
    attention_entropy,
    entropy_layers,
    last_query_entropy,
    pattern_entropy,
    split_attention,
)
from analyses.compare.run import memory_rows
from fmi.errors import ConfigError
from fmi.experiments.evaluate import METRICS, Outputs
from fmi.experiments.queries import build_queries, unique_bindings
from fmi.memory.write import write_prompt

INF = float("inf")

# --- the entropy reduction ----------------------------------------------------------------------


def test_module_examples_run():
    result = doctest.testmod(entropy_gate, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 64])
def test_uniform_over_n_keys_is_log_n(n):
    uniform = torch.full((n,), 1.0 / n, dtype=torch.float64)
    assert float(pattern_entropy(uniform)) == pytest.approx(math.log(n), rel=1e-12)


def test_one_hot_is_zero_and_padding_keys_add_nothing():
    one_hot = torch.eye(5)
    assert pattern_entropy(one_hot).tolist() == [0.0] * 5
    third = 1.0 / 3.0
    padded = torch.tensor([[0.0, 0.0, third, third, third]], dtype=torch.float64)
    unpadded = torch.tensor([[third, third, third]], dtype=torch.float64)
    assert float(pattern_entropy(padded)) == float(pattern_entropy(unpadded))
    assert float(pattern_entropy(padded)) == pytest.approx(math.log(3), rel=1e-12)
    assert not torch.isnan(pattern_entropy(torch.zeros(2, 4))).any()


def test_last_query_entropy_means_heads_then_layers_at_the_last_row_only():
    # [batch 1, head 2, query 2, key 4]; the first query row is noise that must be ignored.
    layer0 = torch.zeros(1, 2, 2, 4)
    layer0[0, :, 0] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    layer0[0, 0, 1] = torch.tensor([0.0, 0.0, 0.5, 0.5])  # log 2
    layer0[0, 1, 1] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # 0
    layer1 = torch.zeros(1, 2, 2, 4)
    layer1[0, :, 1] = 0.25  # log 4 in both heads
    got = last_query_entropy([layer0, layer1])
    assert got.shape == (1,)
    expected = ((math.log(2) + 0.0) / 2 + math.log(4)) / 2
    assert float(got[0]) == pytest.approx(expected, abs=1e-6)


# --- attention entropy on the models ------------------------------------------------------------

RAGGED = [
    "Hi",
    "The cat sat on the mat and then it",
    "A b c",
    "In Paris the river that flows through the city is called the",
    "x y",
]


def _naive(model, text: str, layers: list[int]) -> float:
    """One unpadded forward, the pattern from run_with_cache, entropy by a Python loop."""
    ids = torch.tensor([model.tokenizer(text)["input_ids"]])
    _, cache = model.bridge.run_with_cache(ids)
    per_head = []
    for layer in layers:
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0]  # [head, query, key]
        assert pattern.shape[-1] == ids.shape[1]
        for head in range(pattern.shape[0]):
            row = pattern[head, -1].tolist()
            per_head.append(-sum(p * math.log(p) for p in row if p > 0.0))
    return sum(per_head) / len(per_head)


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_pythia"])
def test_attention_entropy_matches_a_naive_loop(fixture, request):
    model = request.getfixturevalue(fixture)
    n = model.bridge.cfg.n_layers
    lengths = {len(model.tokenizer(t)["input_ids"]) for t in RAGGED}
    assert len(lengths) == len(RAGGED)  # every batch is really left-padded
    for layers in (None, [0], [n - 1], [0, n - 1]):
        want = torch.tensor([_naive(model, t, layers or list(range(n))) for t in RAGGED])
        got = attention_entropy(model, RAGGED, batch_size=3, layers=layers)
        assert got.shape == (len(RAGGED),)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert float(attention_entropy(model, ["Hi"], 1)[0]) == pytest.approx(
        _naive(model, "Hi", list(range(n))), abs=1e-5
    )


def test_attention_entropy_layers_are_checked(tiny_gemma):
    n = tiny_gemma.bridge.cfg.n_layers
    assert entropy_layers(tiny_gemma, None) == tuple(range(n))
    assert entropy_layers(tiny_gemma, [-1, n - 1]) == (n - 1,)
    for bad in ([n], [], [-n - 1]):
        with pytest.raises(ConfigError, match="attention-entropy layers"):
            entropy_layers(tiny_gemma, bad)


def test_a_pattern_that_never_fires_is_an_error(tiny_gemma):
    # A bridge whose attention runs in a fused kernel: the forward runs, hook_pattern never fires.
    fused = SimpleNamespace(cfg=tiny_gemma.bridge.cfg, run_with_hooks=lambda *a, **kw: None)
    model = SimpleNamespace(bridge=fused, tokenizer=tiny_gemma.tokenizer)
    with pytest.raises(ConfigError, match="hook_pattern did not fire"):
        attention_entropy(model, ["a b c"], 1)


# --- thresholds and gates -----------------------------------------------------------------------


def test_threshold_and_gate_on_hand_made_entropies():
    e = torch.tensor([0.0, 1.0, 2.0, 3.0])
    # lower quantile at 1 - keep: n - floor((1 - keep)(n - 1)) of n distinct values fire.
    cases = {1.0: 0.0, 0.75: 0.0, 0.5: 1.0, 0.25: 2.0, 0.01: 2.0}
    for keep, tau in cases.items():
        assert entropy_gate.threshold(e, keep) == tau
    assert entropy_gate.gate(e, entropy_gate.threshold(e, 0.5)).tolist() == [
        False,
        True,
        True,
        True,
    ]
    assert entropy_gate.gate(e, 2.0).tolist() == [False, False, True, True]
    assert entropy_gate.gate(e, -INF).all() and not entropy_gate.gate(e, INF).any()
    # The default keep (0.99) over 64 calibration prompts sits at their minimum: all fire.
    many = torch.arange(64, dtype=torch.float32).flip(0)
    assert entropy_gate.threshold(many, 0.99) == 0.0
    assert entropy_gate.threshold(torch.ones(4), 0.5) == 1.0  # ties all fire


def test_unknown_signal_is_named():
    with pytest.raises(ConfigError, match="entropy signal must be one of next_token, attention"):
        entropy_gate.training_thresholds(None, None, None, 0.5, signal="logits")


# --- the gated row on the quick compare setup ---------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tiny_gemma, quick_compare):
    cfg, task, _, run = quick_compare
    _, (dual, dual_out) = memory_rows(tiny_gemma, run, cfg, rows.Cost(1, 0, 0.0))
    att = split_attention(tiny_gemma, run, cfg.recall)
    return cfg, task, run, dual, dual_out, att


def test_attention_training_thresholds_are_chosen_as_the_next_token_ones(tiny_gemma, prepared):
    cfg, task, *_ = prepared
    rc = cfg.recall
    qs = build_queries(task.train, unique_bindings(task.train.bindings))
    taus = entropy_gate.training_thresholds(tiny_gemma, task.train, rc, 0.5, signal="attention")
    for kind in ("write", "read"):
        texts = [qs.texts[q] for q in qs.index(kind)][: rc.calibration_prompts]
        e = attention_entropy(tiny_gemma, texts, rc.batch_size)
        assert taus[kind] == float(e.sort().values[int(0.5 * (len(texts) - 1))])
    assert entropy_gate.training_thresholds(
        tiny_gemma, task.train, rc, 0.5
    ) == entropy_gate.training_thresholds(tiny_gemma, task.train, rc, 0.5, signal="next_token")


def test_split_attention_covers_questions_and_written_statements(tiny_gemma, prepared):
    cfg, _, run, _, _, att = prepared
    rc = cfg.recall
    torch.testing.assert_close(
        att.questions,
        attention_entropy(tiny_gemma, run.qs.texts, rc.batch_size),
        atol=1e-5,
        rtol=0,
    )
    statements = [write_prompt(run.split.templates, e)[0] for e in run.entries]
    torch.testing.assert_close(
        att.written, attention_entropy(tiny_gemma, statements, 1), atol=1e-5, rtol=0
    )
    for q in run.qs.index("write"):  # a statement is its own write question: one forward
        assert run.qs.texts[q] == statements[run.qs.entry[q]]
        assert float(att.written[run.qs.entry[q]]) == float(att.questions[q])
    assert att.prompts == len(set(run.qs.texts))
    assert att.layers == tuple(range(tiny_gemma.bridge.cfg.n_layers))


def _captured(model, run, rc, taus, dual, dual_out, att, monkeypatch):
    """The attention row, with the outputs and active mask it hands to ``score``."""
    seen = {}
    real = entropy_gate.score

    def spy(model, run, cfg, method, family, out, cost, *, active=None, detail=None):
        seen.update(out=out, active=active)
        return real(model, run, cfg, method, family, out, cost, active=active, detail=detail)

    monkeypatch.setattr(entropy_gate, "score", spy)
    cost = rows.Cost(1, 0, 0.5)
    row = entropy_gate.attention_gated_row(
        model, run, rc, taus, dual, dual_out, cost, attention=att
    )
    return row, seen["out"], seen["active"]


def test_attention_row_is_dual_key_and_both_gates(tiny_gemma, prepared, monkeypatch):
    cfg, _, run, dual, dual_out, att = prepared
    rc = cfg.recall
    taus = {"write": float(att.written.median()), "read": float(att.questions.median())}
    row, out, active = _captured(tiny_gemma, run, rc, taus, dual, dual_out, att, monkeypatch)
    by_hand = []
    for q, e in enumerate(dual.entry.tolist()):
        asked = float(att.questions[q]) >= taus["read"]
        written = e >= 0 and float(att.written[e]) >= taus["write"]
        by_hand.append(e >= 0 and asked and written)
    assert active.tolist() == by_hand
    assert 0 < sum(by_hand) < int(dual.active.sum())  # the gates block some, not all
    base = run.base_outputs
    for q, on in enumerate(by_hand):
        want = dual_out if on else base
        assert out.tokens[q] == want.tokens[q] and out.picks[q] == want.picks[q]
    d = row.detail
    assert row.method == "attention-entropy-gated dual_key" and row.family == "entropy gate"
    assert d["signal"] == "attention entropy (mean over heads, layers 0, 1)"
    assert d["thresholds"] == taus
    assert d["injections_blocked"] == int(dual.active.sum()) - sum(by_hand)
    assert d["writes_stored"] == pytest.approx(
        sum(float(x) >= taus["write"] for x in att.written) / len(run.entries)
    )
    asked = [float(x) >= taus["read"] for x in att.questions]
    assert d["retrievals_saved"] == pytest.approx(1 - sum(asked) / len(asked))
    assert d["question_gate_open"] == rows.fired(run, torch.tensor(asked))
    assert row.summary["fired"] == rows.fired(run, torch.tensor(by_hand))
    assert row.cost.forward == 2 and row.cost.seconds == pytest.approx(0.5 + att.seconds)
    assert f"{att.prompts} distinct questions and statements" in row.cost.note
    # Same detail keys as the next-token row, plus the signal (and the extra forward).
    old = entropy_gate.gated_row(tiny_gemma, run, rc, taus, dual, dual_out, rows.Cost(1, 0, 0.5))
    assert old.method == "entropy-gated dual_key"
    assert set(d) == set(old.detail) | {"signal", "extra_forward"}


def test_attention_row_open_is_dual_key_and_shut_is_no_memory(tiny_gemma, prepared, monkeypatch):
    cfg, _, run, dual, dual_out, att = prepared
    rc = cfg.recall
    wide = {"write": -INF, "read": -INF}
    opened, out, active = _captured(tiny_gemma, run, rc, wide, dual, dual_out, att, monkeypatch)
    assert torch.equal(active, dual.active)
    assert out == Outputs(dual_out.tokens, dual_out.picks)
    dual_summary = rows.score(tiny_gemma, run, rc, "d", "d", dual_out, rows.Cost(1, 0, 0.0))
    for m in METRICS:
        assert opened.summary[m] == dual_summary.summary[m]
    assert opened.detail["retrievals_saved"] == 0.0 and opened.detail["injections_blocked"] == 0
    for taus in ({"write": INF, "read": INF}, {"write": -INF, "read": INF}):
        shut, out, active = _captured(tiny_gemma, run, rc, taus, dual, dual_out, att, monkeypatch)
        assert not active.any()
        assert out == run.base_outputs
        assert set(shut.summary["fired"].values()) == {0.0}
    no_memory = rows.score(tiny_gemma, run, rc, "n", "n", run.base_outputs, rows.Cost(0, 0, 0.0))
    for m in METRICS:
        assert shut.summary[m] == no_memory.summary[m]


def test_entropy_data_adds_the_attention_entropies_by_kind(prepared):
    _, _, run, _, _, att = prepared
    taus = {"write": 0.0, "read": 1.0}
    plain = entropy_gate.entropy_data(run, taus)
    assert set(plain) == {"thresholds", "by_kind", "write"}
    data = entropy_gate.entropy_data(run, taus, att, {"write": 2.0, "read": 3.0})
    for key in plain:
        assert data[key] == plain[key]
    a = data["attention"]
    assert a["thresholds"] == {"write": 2.0, "read": 3.0} and a["signal"] == att.signal
    assert a["write"] == att.written.tolist()
    for kind, values in a["by_kind"].items():
        assert values == [float(att.questions[q]) for q in run.qs.index(kind)]
