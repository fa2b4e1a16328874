"""Steering vectors (CAA mean difference, ActAdd): vectorised vs naive loops, pair checks."""

from __future__ import annotations

import pytest
import torch

from analyses import steering_vectors as sv
from fmi.core.forward import collect
from fmi.core.sites import UNEMBED_IN, resid
from fmi.errors import ConfigError
from fmi.experiments.builtin_tasks import builtin_task
from fmi.experiments.queries import unique_bindings


def test_mean_difference_equals_a_naive_loop():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 5, generator=gen)
    groups = torch.randint(0, 4, (40,), generator=gen)
    groups[:4] = torch.arange(4)  # every group present
    got = sv.mean_difference(x, groups, 4)
    assert got.shape == (4, 3, 5)
    for k in range(4):
        inside = [x[i] for i in range(40) if groups[i] == k]
        outside = [x[i] for i in range(40) if groups[i] != k]
        want = sum(inside) / len(inside) - sum(outside) / len(outside)
        torch.testing.assert_close(got[k], want, atol=1e-5, rtol=1e-5)


def test_mean_difference_known_answer_and_bad_groups():
    x = torch.tensor([[1.0], [3.0], [10.0], [20.0]])
    got = sv.mean_difference(x, torch.tensor([0, 0, 1, 2]), 3)
    # group 0: 2 - 15; group 1: 10 - 8; group 2: 20 - 14/3
    torch.testing.assert_close(got[:, 0], torch.tensor([-13.0, 2.0, 20 - 14 / 3]))
    with pytest.raises(ConfigError, match="inside and outside every group"):
        sv.mean_difference(x, torch.tensor([0, 0, 1, 1]), 3)  # group 2 empty
    with pytest.raises(ConfigError, match="inside and outside every group"):
        sv.mean_difference(x, torch.zeros(4, dtype=torch.long), 1)  # nothing outside
    with pytest.raises(ConfigError, match="group ids"):
        sv.mean_difference(x, torch.tensor([0, 1, 2, 3]), 3)
    with pytest.raises(ConfigError, match="group ids"):
        sv.mean_difference(x, torch.tensor([0, 1]), 3)


def test_label_statements_end_in_the_label():
    task = builtin_task(0, n_train=4, n_eval=2)
    b = task.train.bindings[0]
    (text,) = sv.label_statements(task.train.templates, [b])
    assert text == f"In {b.context}, {b.symbol} means {b.label}"


def test_caa_vectors_match_one_statement_at_a_time(tiny_gemma):
    task = builtin_task(0, n_train=6, n_eval=2)
    entries = unique_bindings(task.train.bindings)
    t = task.train.templates
    labels = list(dict.fromkeys(b.label for b in entries))[:3]
    sites = [resid(0, "pre"), resid(1), UNEMBED_IN]
    got = sv.caa_vectors(tiny_gemma, entries, t, labels, sites, batch_size=4)
    assert got.shape == (3, len(sites), tiny_gemma.bridge.cfg.d_model)
    # naive: each statement alone (no padding), last token, per-label means of the rest
    states = []
    for text in sv.label_statements(t, entries):
        one = collect(tiny_gemma.bridge, tiny_gemma.tokenizer, [text], sites)
        states.append(torch.stack([one.acts[s][0][-1] for s in sites]))
    for k, lab in enumerate(labels):
        inside = torch.stack([s for s, b in zip(states, entries, strict=True) if b.label == lab])
        outside = torch.stack([s for s, b in zip(states, entries, strict=True) if b.label != lab])
        want = inside.mean(0) - outside.mean(0)
        torch.testing.assert_close(got[k], want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="no statement ends in label"):
        sv.caa_vectors(tiny_gemma, entries, t, ["turquoise"], sites)


def test_caa_answer_vectors_match_one_prompt_at_a_time(tiny_neox):
    task = builtin_task(0, n_train=6, n_eval=2)
    entries = unique_bindings(task.train.bindings)
    t = task.train.templates
    labels = list(dict.fromkeys(b.label for b in entries))[:3]
    sites = [resid(1), UNEMBED_IN]
    got = sv.caa_answer_vectors(tiny_neox, entries, t, labels, sites, batch_size=4)
    states = []
    for b in entries:  # naive: the write prompt alone, without its label, last token
        one = collect(tiny_neox.bridge, tiny_neox.tokenizer, [t.prompt("write", b)], sites)
        states.append(torch.stack([one.acts[s][0][-1] for s in sites]))
    for k, lab in enumerate(labels):
        inside = torch.stack([s for s, b in zip(states, entries, strict=True) if b.label == lab])
        outside = torch.stack([s for s, b in zip(states, entries, strict=True) if b.label != lab])
        torch.testing.assert_close(got[k], inside.mean(0) - outside.mean(0), atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="no statement is followed by label"):
        sv.caa_answer_vectors(tiny_neox, entries, t, ["turquoise"], sites)


def test_actadd_pair_needs_equal_token_lengths(tiny_gemma):
    tok = tiny_gemma.tokenizer
    pos, neg = sv.actadd_pair(tok, " red")
    assert (pos, neg) == ("The answer is red", "The answer is the")
    assert len(tok(pos)["input_ids"]) == len(tok(neg)["input_ids"])
    with pytest.raises(ConfigError, match="equal token lengths"):
        sv.actadd_pair(tok, " xylophonequuxblicket")


def test_actadd_vectors_are_the_pair_difference(tiny_gemma):
    sites = [resid(0), UNEMBED_IN]
    got = sv.actadd_vectors(tiny_gemma, [" red", " cat"], sites)
    assert got.shape == (2, 2, tiny_gemma.bridge.cfg.d_model)
    for k, target in enumerate((" red", " cat")):
        pos, neg = sv.actadd_pair(tiny_gemma.tokenizer, target)
        both = collect(tiny_gemma.bridge, tiny_gemma.tokenizer, [pos, neg], sites)
        for j, s in enumerate(sites):
            want = both.acts[s][0][-1] - both.acts[s][1][-1]
            torch.testing.assert_close(got[k, j], want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="at least one target"):
        sv.actadd_vectors(tiny_gemma, [], sites)


def test_single_token(tiny_gemma):
    tok = tiny_gemma.tokenizer
    assert sv.single_token(tok, " red") == tok(" red", add_special_tokens=False)["input_ids"][0]
    with pytest.raises(ConfigError, match="not one token"):
        sv.single_token(tok, " xylophonequux")
