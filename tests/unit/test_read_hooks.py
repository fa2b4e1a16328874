"""Batching and one-pass reading: batched equals one at a time, one pass equals two passes,
top-k equals a naive loop, and no hook outlives its generation."""

from __future__ import annotations

import pytest
import torch

from fmi.core.generate import greedy
from fmi.errors import ConfigError
from fmi.experiments.evaluate import prepare_split
from fmi.memory.entry import CONTEXT_ROLE, SYMBOL_ROLE
from fmi.memory.inject import read_greedy
from fmi.memory.keys import maxsim_loop
from fmi.memory.retrieve import decide, score_queries, top_k
from fmi.memory.write import write


@pytest.fixture(scope="module")
def prepared(quick_fit):
    s = quick_fit
    return prepare_split(s.model, s.task.split("same"), s.fitted, s.cfg)


def _no_hooks(bridge) -> bool:
    return all(not hp.fwd_hooks for hp in bridge.hook_dict.values())


def test_batched_writes_equal_one_at_a_time(quick_fit):
    s = quick_fit
    split = s.task.split("same")
    enc = s.fitted.encoder
    kw = dict(
        symbol_site=enc.symbol_site, token_site=enc.token_site, inject_site="ln_final.hook_out"
    )
    bindings = list(split.bindings)[:7]
    batched = write(s.model, bindings, split.templates, batch_size=16, **kw)
    single = write(s.model, bindings, split.templates, batch_size=1, **kw)
    for name in ("values", "symbol_keys", "token_keys", "answer_states", "answer_entropy"):
        torch.testing.assert_close(
            getattr(batched, name), getattr(single, name), atol=1e-4, rtol=1e-4
        )
    assert torch.equal(batched.token_owner, single.token_owner)
    assert batched.entries == single.entries


def test_padded_batched_reads_equal_unbatched(prepared, quick_fit):
    model, run = quick_fit.model, prepared
    rows = [i for k in ("write", "read", "plain", "unrelated") for i in run.qs.index(k)[:3]]
    texts = [run.qs.texts[i] for i in rows]
    assert len({len(model.tokenizer(t)["input_ids"]) for t in texts}) > 2  # padding happens
    deltas = run.memory.values[[max(run.qs.entry[i], 0) for i in rows]] * 3.0
    kw = dict(site=run.memory.inject_site, deltas=deltas, label_ids=run.label_ids)
    batched = greedy(model, texts, batch_size=len(texts), **kw)
    single = greedy(model, texts, batch_size=1, **kw)
    assert batched.tokens == single.tokens
    assert batched.label_pick == single.label_pick


@pytest.mark.parametrize("mode", ["both_top1", "raw_both_top1", "dual_key", "context_gate"])
def test_one_pass_read_equals_two_passes(prepared, quick_fit, mode):
    model, run = quick_fit.model, prepared
    two = decide(mode, run.scores, run.memory, gate=run.qs.gate)
    expected = greedy(
        model,
        run.qs.texts,
        site=run.memory.inject_site,
        deltas=two.vectors,
        active=two.active,
        label_ids=run.label_ids,
        batch_size=8,
    )
    got, log = read_greedy(
        model,
        run.memory,
        mode,
        run.qs.texts,
        gate=run.qs.gate,
        label_ids=run.label_ids,
        batch_size=8,
    )
    assert torch.equal(log.entry, two.entry)
    assert two.active.any() and (~two.active).any()  # both branches are exercised
    assert got.tokens == expected.tokens
    assert _no_hooks(model.bridge)


def test_one_pass_read_batched_equals_unbatched(prepared, quick_fit):
    model, run = quick_fit.model, prepared
    texts = [run.qs.texts[i] for k in ("read", "plain", "unrelated") for i in run.qs.index(k)[:4]]
    a, log_a = read_greedy(model, run.memory, "dual_key", texts, batch_size=12)
    b, log_b = read_greedy(model, run.memory, "dual_key", texts, batch_size=1)
    assert a.tokens == b.tokens and torch.equal(log_a.entry, log_b.entry)


def test_one_pass_read_refuses_a_key_site_after_injection(prepared, quick_fit):
    from dataclasses import replace

    memory = replace(prepared.memory, inject_site="blocks.0.hook_resid_post")
    with pytest.raises(ConfigError, match="before the injection site"):
        read_greedy(quick_fit.model, memory, "dual_key", ["Question: hi Answer:"])
    assert _no_hooks(quick_fit.model.bridge)


def _naive_scores(memory, mode, sym_rows, tok_rows):
    enc = memory.encoder
    n = len(memory)
    if mode == "both_top1":
        return maxsim_loop(
            [enc.raw(q) @ enc.projector for q in sym_rows],
            enc.projected(memory.symbol_keys),
            torch.arange(n),
            n,
        )
    keys, owner, role = enc.tokens(memory.token_keys), memory.token_owner, memory.token_role
    queries = [enc.tokens(q) for q in tok_rows]
    sym = maxsim_loop(queries, keys[role == SYMBOL_ROLE], owner[role == SYMBOL_ROLE], n)
    ctx = maxsim_loop(queries, keys[role == CONTEXT_ROLE], owner[role == CONTEXT_ROLE], n)
    return sym.clamp_min(0) * ctx.clamp_min(0)


@pytest.mark.parametrize("mode", ["both_top1", "dual_key"])
def test_top_k_matches_a_naive_loop(quick_fit, mode):
    from fmi.experiments.queries import build_queries, unique_bindings
    from fmi.memory.retrieve import read_queries

    s = quick_fit
    split = s.task.split("same")
    entries = unique_bindings(split.bindings)
    from fmi.memory.write import write_memory

    _, memory = write_memory(s.model, entries, split.templates, s.fitted, s.cfg)
    qs = build_queries(split, entries).subset(list(range(0, 40, 3)))
    enc = memory.encoder
    got = read_queries(s.model, qs, (enc.symbol_site, enc.token_site), 8)
    scores = score_queries(
        memory, got.acts[enc.symbol_site], got.acts[enc.token_site], got.content, modes=(mode,)
    )
    k = 3
    values, index = top_k(mode, scores, memory, k)
    sym_rows = [a[c] for a, c in zip(got.acts[enc.symbol_site], got.content, strict=True)]
    tok_rows = [a[c] for a, c in zip(got.acts[enc.token_site], got.content, strict=True)]
    naive = _naive_scores(memory, mode, sym_rows, tok_rows)
    for q in range(len(qs.texts)):
        order = sorted(range(len(memory)), key=lambda e: -float(naive[q, e]))[:k]
        torch.testing.assert_close(values[q], naive[q, order], atol=1e-5, rtol=1e-5)
        assert float(naive[q, index[q]].min()) >= float(naive[q, order[-1]]) - 1e-5


def test_score_queries_computes_only_what_the_mode_needs(prepared):
    run = prepared
    assert run.scores.raw is not None  # the default computes every channel
    with pytest.raises(ConfigError, match="'raw' was not computed"):
        from fmi.memory.retrieve import QueryScores, mode_scores

        mode_scores("raw_both_top1", QueryScores(None, None, None, None), run.memory)


def test_memory_head_equals_writing_only_the_first_entries(quick_fit):
    from fmi.memory.write import write_memory

    s = quick_fit
    split = s.task.split("same")
    entries = list(split.bindings)
    _, full = write_memory(s.model, entries, split.templates, s.fitted, s.cfg)
    _, part = write_memory(s.model, entries[:5], split.templates, s.fitted, s.cfg)
    head = full.head(5)
    assert head.entries == part.entries
    for name in ("values", "symbol_keys", "token_keys"):
        torch.testing.assert_close(getattr(head, name), getattr(part, name), atol=1e-4, rtol=1e-4)
    assert torch.equal(head.token_owner, part.token_owner)
    assert torch.equal(head.token_role, part.token_role)
    with pytest.raises(ValueError, match="0 < n"):
        full.head(0)
