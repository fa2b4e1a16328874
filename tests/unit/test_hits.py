"""Known-answer tests of the per-prompt outcomes that every recall table is made of."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fmi.core.generate import Generated
from fmi.experiments.evaluate import Outputs, hits, summarize
from fmi.experiments.queries import QuerySet
from fmi.memory.entry import Entry


@pytest.fixture(scope="module")
def case(tiny_neox):
    return _case(tiny_neox)


def _case(tiny_neox):
    """Hand-made queries, entries and outputs with known outcomes (also tests/test_breakages)."""
    tok = tiny_neox.tokenizer

    def ids(text: str) -> tuple[int, ...]:
        return tuple(tok(text)["input_ids"])

    ny = ids(" New York City")
    entries = [
        Entry("game A", "dax", "New York City", ny[0], (*ny, ids("\n")[0]), True),
        Entry("game B", "dax", "red", ids(" red")[0]),
        Entry("game A", "wug", "pig", ids(" pig")[0]),
    ]
    labels = sorted({e.label for e in entries})
    kinds = ["write", "read", "read", "read", "plain", "plain", "unrelated", "unrelated"]
    qs = QuerySet(
        texts=[""] * len(kinds),
        kinds=kinds,
        entry=[0, 0, 1, 2, -1, -1, -1, -1],
        symbol=["dax", "dax", "dax", "wug", "dax", "wug", None, None],
        gate=[None] * len(kinds),
    )
    outputs = [
        ids(" New York City\n"),  # write: whole answer, then the end token
        ids(" New York"),  # read: stops early, 2 of 3 answer tokens
        ids("\n\nred"),  # read: a hit after whitespace
        ids(" piglet"),  # read: " pig" + "let" is a miss
        ids(" red."),  # plain: a label bound to dax
        ids(" blue"),  # plain: no label of wug
        ids(" pig"),  # unrelated: a stored label
        ids(" Paris"),  # unrelated: no label
    ]
    base = [ids(" Paris")] * len(kinds)
    out = Outputs(
        outputs, picks=[labels.index(e) for e in ["New York City"] * 2 + ["red", "red"]] + [0] * 4
    )
    gen = Generated(base, [0] * len(kinds), [0.0] * len(kinds))
    return SimpleNamespace(
        model=tiny_neox, qs=qs, entries=entries, labels=labels, out=out, base=gen, ny=ny
    )


def test_outcomes_of_hand_made_outputs(case):
    got = hits(case.model, case.qs, case.entries, case.labels, case.out, case.base)
    assert got["write"] == [True]
    assert got["read"] == [False, True, False]
    assert got["plain"] == [True, False]
    assert got["unrelated"] == [True, False]
    assert got["unrelated_changed"] == [True, False]
    assert got["read_token"] == [True, False, True]  # "\n\nred" starts with "\n\n"
    assert got["read_label"] == [True, True, False]
    assert got["write_prefix"] == [1.0]
    assert got["read_prefix"] == [2 / 3, 0.0, 1.0]  # token level: "\n\nred" departs at once


def test_summary_rates_of_hand_made_outputs(case):
    from fmi.experiments.config import RecallConfig

    got = hits(case.model, case.qs, case.entries, case.labels, case.out, case.base)
    row = summarize(got, case.qs, RecallConfig.quick())
    assert row["read"] == pytest.approx(1 / 3) and row["write"] == 1.0
    assert row["plain"] == 0.5 and row["unrelated"] == 0.5 and row["unrelated_changed"] == 0.5
    assert row["first_token"]["read"] == pytest.approx(2 / 3)
    assert row["answer_prefix"]["read"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert row["n"] == 3 and row["n_by_metric"]["plain"] == 2


def test_summary_intervals_are_clustered_by_symbol_and_never_zero_width(case):
    from fmi.experiments.config import RecallConfig
    from fmi.experiments.intervals import cluster_interval, wilson

    got = hits(case.model, case.qs, case.entries, case.labels, case.out, case.base)
    row = summarize(got, case.qs, RecallConfig.quick(n_bootstrap=200))
    assert row["clusters"] == {
        "write": 1,
        "read": 2,
        "plain": 2,
        "unrelated": 2,
        "unrelated_changed": 2,
    }
    assert row["ci95"]["plain"] == wilson(1, 2) and row["ci95"]["unrelated"] == wilson(1, 2)
    want = cluster_interval([0.0, 1.0, 0.0], ["dax", "dax", "wug"], 200, 0)
    assert row["ci95"]["read"] == want
    assert row["ci95"]["write"][1] == 1.0 and row["ci95"]["write"][0] == wilson(1, 1)[0]
    assert all(hi > lo for lo, hi in row["ci95"].values())
    assert set(row["ci_method"]) == {"write", "read", "plain", "unrelated", "unrelated_changed"}


def test_summary_with_a_decision_reports_retrieval_and_fired_rates(case):
    import torch

    from fmi.experiments.config import RecallConfig
    from fmi.experiments.intervals import cluster_interval
    from fmi.memory.retrieve import Decision

    got = hits(case.model, case.qs, case.entries, case.labels, case.out, case.base)
    entry = torch.tensor([0, 0, -1, 2, 1, -1, -1, 0])
    decision = Decision(entry, torch.zeros(8), torch.zeros(8, 2))
    row = summarize(got, case.qs, RecallConfig.quick(n_bootstrap=200), decision, [True, False])
    assert row["retrieval"] == 0.5
    assert row["fired"] == {"read": pytest.approx(2 / 3), "plain": 0.5, "unrelated": 0.5}
    assert row["label_restricted"] == {"write": 1.0, "read": pytest.approx(2 / 3)}
    assert row["first_token"]["write"] == 1.0
    assert row["answer_prefix"]["write"] == 1.0
    symbols = ["dax", "dax", "wug"]
    assert row["ci95"]["first_token.read"] == cluster_interval([1.0, 0.0, 1.0], symbols, 200, 0)
    assert row["ci95"]["label.read"] == cluster_interval([1.0, 1.0, 0.0], symbols, 200, 0)
    assert row["n_by_metric"] == {
        "write": 1,
        "read": 3,
        "plain": 2,
        "unrelated": 2,
        "unrelated_changed": 2,
    }
    assert "retrieval" not in summarize(got, case.qs, RecallConfig.quick())


def test_misses_lists_the_wrong_reads_in_order_up_to_the_limit(case):
    from fmi.experiments.evaluate import misses

    qs = case.qs
    got = misses(case.model, qs, case.entries, case.out)
    assert [m["label"] for m in got] == ["New York City", "pig"]
    assert got[1]["output"] == " piglet" and got[0]["prompt"] == qs.texts[1]
    assert len(misses(case.model, qs, case.entries, case.out, limit=1)) == 1


def test_special_tokens_are_dropped_before_an_output_is_matched(case):
    eos = case.model.tokenizer.eos_token_id
    assert eos is not None
    out = Outputs(
        [(eos, *t) for t in case.out.tokens], case.out.picks
    )  # every output starts with the end-of-text token
    got = hits(case.model, case.qs, case.entries, case.labels, out, case.base)
    assert got["write"] == [True] and got["read"] == [False, True, False]
    assert got["plain"] == [True, False] and got["unrelated"] == [True, False]


def test_decode_steps_cover_the_longest_answer_and_one_more():
    from fmi.experiments.config import RecallConfig
    from fmi.experiments.evaluate import decode_steps

    def entry(n):
        return Entry("c", "s", "x", 1, tuple(range(1, n + 1)))  # n answer tokens

    cfg = RecallConfig(max_new_tokens=4)
    assert decode_steps([entry(1)], cfg) == 4
    assert decode_steps([entry(3)], cfg) == 4
    assert decode_steps([entry(4)], cfg) == 5
    assert decode_steps([entry(2), entry(6), entry(1)], cfg) == 7


def test_summary_intervals_use_the_configured_seed_and_size(case, monkeypatch):
    from fmi.experiments import evaluate
    from fmi.experiments.config import RecallConfig

    calls = []
    monkeypatch.setattr(
        evaluate, "cluster_interval", lambda h, c, n, seed: calls.append((n, seed)) or (0.0, 1.0)
    )
    got = hits(case.model, case.qs, case.entries, case.labels, case.out, case.base)
    summarize(got, case.qs, RecallConfig.quick(n_bootstrap=123, seed=45))
    assert calls and set(calls) == {(123, 45)}
