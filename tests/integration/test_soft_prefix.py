"""GradMem's soft prefix: K memory tokens at hook_embed, written by Adam, always prepended."""

from __future__ import annotations

import doctest

import pytest
import torch
from helpers import no_hooks, weights_digest

from analyses.compare.rows import Cost, score
from analyses.compare.soft_prefix import prepend, tune
from analyses.compare.soft_prefix import rows as prefix_rows
from analyses.compare.soft_prefix.config import SoftPrefixConfig
from analyses.compare.soft_prefix.prepend import (
    SITE,
    PrefixTokenizer,
    insert_prefix,
    prefix_hook,
    prefix_starts,
)
from analyses.compare.soft_prefix.read import prefix_greedy
from analyses.compare.soft_prefix.rows import soft_prefix_rows
from analyses.compare.soft_prefix.tune import pick
from analyses.compare.soft_prefix.write import embedding_stats, init_prefix, optimise
from fmi.core.forward import answer_only
from fmi.core.prompts import encode
from fmi.errors import ConfigError

TEXTS = ["In game A, blicket means", "dax means", "Question: in the lab, what is zorp? Answer:"]


def _prefixed(model, texts, k):
    ptok = PrefixTokenizer(model.tokenizer, k)
    enc = encode(ptok, texts)
    return ptok, enc, prefix_starts(ptok, texts, enc)


def _embed_and_logits(bridge, enc, hooks=(), logits=True):
    """The activations at hook_embed as the model goes on with them (after ``hooks``) and the
    answer position's logits (``logits=False``: stop after the first block, no logits)."""
    seen = {}

    def capture(act, hook):
        seen["act"] = act.detach().clone()
        return act

    with torch.inference_mode(), bridge.hooks(fwd_hooks=[*hooks, (SITE, capture)]):
        if not logits:
            bridge(enc.tokens, attention_mask=enc.mask, stop_at_layer=1)
            return seen["act"], None
        out = bridge(enc.tokens, attention_mask=enc.mask, logits_to_keep=answer_only(enc.tokens))
    return seen["act"], out[:, -1]


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sizes", (0, 8), "sizes must be token counts in 1..64"),
        ("sizes", (65,), "sizes must be token counts in 1..64"),
        ("sizes", (), "sizes must be"),
        ("sizes", (8, 8), "sizes must be distinct"),
        ("steps", (), "steps must be distinct step counts >= 1"),
        ("steps", (0, 2), "steps must be"),
        ("lr", 0.0, "lr must be positive"),
        ("lr", -0.1, "lr must be positive"),
        ("lrs", (0.1, 0.0), "lrs must be positive"),
        ("lrs", (), "lrs must be positive"),
        ("init", 0.0, "init must be positive"),
        ("tune_symbols", 0, "tune_symbols must be >= 1"),
    ],
)
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        SoftPrefixConfig(**{field: value})


def test_config_defaults_and_round_trip():
    cfg = SoftPrefixConfig()
    assert cfg.sizes == (8, 32) and cfg.steps == (2, 5) and cfg.lrs == (0.3, 1.0)
    assert cfg.lr in cfg.lrs
    assert SoftPrefixConfig(**cfg.to_dict()) == cfg
    assert SoftPrefixConfig.quick(seed=3).seed == 3


def test_doctests_run():
    results = [
        doctest.testmod(m, optionflags=doctest.ELLIPSIS, verbose=False) for m in (prepend, tune)
    ]
    assert sum(r.attempted for r in results) >= 4 and not any(r.failed for r in results)


# --- prepending ---------------------------------------------------------------------------------


def test_a_prefix_of_no_tokens_is_refused(tiny_neox):
    with pytest.raises(ValueError, match="at least one token"):
        insert_prefix([1, 2], 0, 0, 0)
    with pytest.raises(ValueError, match="at least one token"):
        PrefixTokenizer(tiny_neox.tokenizer, 0)
    with pytest.raises(ValueError, match="prefix must be"):
        prefix_hook(torch.zeros(0, 64), torch.zeros(2, dtype=torch.long))


def test_prefix_sits_after_bos_and_inside_the_mask(tiny_neox):
    """A tokenizer that prepends <bos> (as Gemma-3's does) keeps it first; the K placeholders
    follow it, then the text; left padding stays on the left and the mask covers the prefix."""
    inner = tiny_neox.tokenizer

    class BosTokenizer:
        bos_token_id, pad_token_id, all_special_ids = 0, 1, [0, 1]

        def __call__(self, text, **kw):
            return {"input_ids": [0, *inner(text)["input_ids"]]}

    k = 3
    ptok = PrefixTokenizer(BosTokenizer(), k)
    enc = encode(ptok, TEXTS)
    starts = prefix_starts(ptok, TEXTS, enc)
    width = enc.tokens.shape[1]
    for row, text in enumerate(TEXTS):
        ids = inner(text)["input_ids"]
        pad = width - (1 + k + len(ids))
        assert enc.tokens[row].tolist() == [1] * pad + [0] + [1] * k + ids
        assert enc.mask[row].tolist() == [0] * pad + [1] * (1 + k + len(ids))
        assert int(starts[row]) == pad + 1
        assert not enc.content[row, pad : pad + 1 + k].any()  # bos and placeholders: special
    # no <bos>: the prefix opens the text (Pythia's tokenizer prepends nothing)
    plain = PrefixTokenizer(inner, k)
    enc2 = encode(plain, TEXTS)
    starts2 = prefix_starts(plain, TEXTS, enc2)
    assert starts2.tolist() == enc2.pad.tolist()
    assert (
        enc2.tokens[0, -len(inner(TEXTS[0])["input_ids"]) :].tolist()
        == inner(TEXTS[0])["input_ids"]
    )


@pytest.mark.parametrize("fixture", ["tiny_neox", "tiny_gemma", "tiny_pythia"])
def test_hook_overwrites_exactly_the_prefix_positions(fixture, request):
    model = request.getfixturevalue(fixture)
    bridge = model.bridge
    assert SITE in bridge.hook_dict
    k, d = 4, int(bridge.cfg.d_model)
    _, enc, starts = _prefixed(model, TEXTS, k)
    assert len(set(starts.tolist())) == len(TEXTS)  # ragged: every row padded differently
    prefix = torch.randn(k, d, generator=torch.Generator().manual_seed(0))
    clean, _ = _embed_and_logits(bridge, enc, logits=False)
    hook = prefix_hook(prefix, starts)
    hooked, _ = _embed_and_logits(bridge, enc, [(SITE, hook)], logits=False)
    where = torch.zeros(enc.tokens.shape, dtype=torch.bool)
    for row, s in enumerate(starts.tolist()):
        where[row, s : s + k] = True
        torch.testing.assert_close(hooked[row, s : s + k], prefix, rtol=0, atol=0)
    torch.testing.assert_close(hooked[~where], clean[~where], rtol=0, atol=0)  # padding too
    assert no_hooks(bridge)


def test_hook_leaves_kv_cached_steps_alone():
    k, d = 2, 3
    prefix = torch.full((k, d), 7.0)
    hook = prefix_hook(prefix, torch.tensor([1, 0]))
    prompt = torch.zeros(2, 5, d)
    out = hook(prompt, None)
    assert torch.equal(out[0, 1:3], prefix) and torch.equal(out[1, 0:2], prefix)
    assert out[0, [0, 3, 4]].abs().sum() == 0 and out[1, 2:].abs().sum() == 0
    assert prompt.abs().sum() == 0  # the input is not written in place
    for _ in range(3):
        step = torch.zeros(2, 1, d)
        assert hook(step, None) is step


@pytest.mark.parametrize("fixture", ["tiny_neox", "tiny_gemma"])
def test_placeholder_embeddings_as_prefix_change_nothing(fixture, request):
    """Prefix vectors equal to the placeholders' own embeddings at hook_embed: the logits are
    those of the model on the placeholder ids with no hook (the positions are exact)."""
    model = request.getfixturevalue(fixture)
    bridge = model.bridge
    k = 3
    _, enc, starts = _prefixed(model, TEXTS, k)
    clean, want = _embed_and_logits(bridge, enc)
    s = int(starts[0])
    own = clean[0, s : s + k]
    _, got = _embed_and_logits(bridge, enc, [(SITE, prefix_hook(own, starts))])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # and greedy decoding with that prefix is decoding the placeholder ids plainly
    gen = prefix_greedy(model, TEXTS, own, max_new_tokens=3, batch_size=8)
    with torch.inference_mode():
        out = bridge.generate(
            enc.tokens,
            attention_mask=enc.mask,
            max_new_tokens=3,
            do_sample=False,
            stop_at_eos=False,
            verbose=False,
        )
    width = enc.tokens.shape[1]
    assert gen.tokens == [tuple(r[width:].tolist()) for r in out]
    assert no_hooks(bridge)


def test_a_prefixed_row_reads_as_it_would_alone(tiny_gemma):
    """Left padding and the mask: a row's logits in a ragged batch equal its logits alone."""
    k = 4
    prefix = torch.randn(k, 64, generator=torch.Generator().manual_seed(2))
    _, enc, starts = _prefixed(tiny_gemma, TEXTS, k)
    _, batch = _embed_and_logits(tiny_gemma.bridge, enc, [(SITE, prefix_hook(prefix, starts))])
    for row in (0, 1):
        _, one, st = _prefixed(tiny_gemma, TEXTS[row : row + 1], k)
        hook = prefix_hook(prefix, st)
        _, alone = _embed_and_logits(tiny_gemma.bridge, one, [(SITE, hook)])
        torch.testing.assert_close(batch[row], alone[0], rtol=1e-4, atol=1e-4)


def test_gemma_site_is_scaled_and_the_prefix_is_drawn_at_that_scale(tiny_gemma):
    """Gemma-3 multiplies embeddings by sqrt(d_model) before hook_embed: the site holds
    W_E[id] * sqrt(d), and the initial prefix's RMS coordinate is the real tokens' there."""
    bridge = tiny_gemma.bridge
    enc = encode(tiny_gemma.tokenizer, TEXTS[:1])
    act, _ = _embed_and_logits(bridge, enc)
    d = int(bridge.cfg.d_model)
    torch.testing.assert_close(act[0], bridge.W_E[enc.tokens[0]] * d**0.5, rtol=1e-5, atol=1e-6)
    mean, std, rms = embedding_stats(tiny_gemma, TEXTS)
    assert rms == pytest.approx(float(act[0].pow(2).mean().sqrt()), rel=0.3)
    prefix = init_prefix(64, mean, std, 1.0, seed=0)
    assert float(prefix.pow(2).mean().sqrt()) == pytest.approx(rms, rel=0.1)
    torch.testing.assert_close(prefix, init_prefix(64, mean, std, 1.0, seed=0), rtol=0, atol=0)


# --- writing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_neox", "tiny_gemma"])
def test_optimise_lowers_the_loss_and_leaves_the_model_alone(fixture, request):
    model = request.getfixturevalue(fixture)
    bridge = model.bridge
    tok = model.tokenizer
    targets = torch.tensor([tok(w)["input_ids"][-1] for w in (" red", " blue", " green")])
    before = weights_digest(bridge)
    k, lr = 3, 0.3
    got = optimise(model, TEXTS, targets, k, (1, 3), lr, batch_size=2, seed=5)
    assert weights_digest(bridge) == before
    assert all(p.grad is None for p in bridge.parameters())
    assert no_hooks(bridge)
    assert sorted(got.snapshots) == [1, 3] and len(got.losses) == 4
    assert got.seconds[1] <= got.seconds[3]
    assert got.losses[3] < got.losses[0]
    # Adam's first step is lr * scale * sign(grad) on every coordinate
    mean, std, scale = embedding_stats(model, TEXTS, 2)
    assert scale == pytest.approx(got.scale)
    start = init_prefix(k, mean, std, 1.0, seed=5)
    step = (got.snapshots[1] - start).abs()
    torch.testing.assert_close(step, torch.full_like(step, lr * scale), rtol=1e-3, atol=1e-7)
    # the loss recorded after 3 steps is the loss of the third snapshot, recomputed
    ptok, enc, starts = _prefixed(model, TEXTS, k)
    _, logits = _embed_and_logits(bridge, enc, [(SITE, prefix_hook(got.snapshots[3], starts))])
    again = torch.nn.functional.cross_entropy(logits.float(), targets)
    assert float(again) == pytest.approx(got.losses[3], rel=1e-4)


# --- rows ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(quick_compare):
    cfg, task, _, run = quick_compare
    return cfg, task, run


def test_soft_prefix_rows_cover_the_grid_with_a_training_only_budget(
    tiny_gemma, prepared, monkeypatch
):
    cfg, task, run = prepared
    pcfg = SoftPrefixConfig.quick(sizes=(2, 4), steps=(1, 2), lrs=(0.3, 1.0))
    calls = []
    real = optimise

    def spy(model, texts, *args, **kw):
        calls.append(list(texts))
        return real(model, texts, *args, **kw)

    monkeypatch.setattr(tune, "optimise", spy)  # the tuning runs
    monkeypatch.setattr(prefix_rows, "optimise", spy)  # the rows' runs
    before = weights_digest(tiny_gemma.bridge)
    got, data = soft_prefix_rows(tiny_gemma, run, cfg.recall, pcfg, task.train)
    assert weights_digest(tiny_gemma.bridge) == before and no_hooks(tiny_gemma.bridge)

    grid = [(k, s) for k in pcfg.sizes for s in pcfg.steps]
    assert [(r.detail["K"], r.detail["steps"]) for r in got] == grid
    assert got[0].method == "GradMem soft prefix (K=2, 1 step)"
    assert got[-1].method == "GradMem soft prefix (K=4, 2 steps)"
    assert {r.family for r in got} == {"gradient-written prefix"}
    reference = score(tiny_gemma, run, cfg.recall, "x", "x", run.base_outputs, Cost(0, 0, 0.0))
    n_configs = len(pcfg.sizes) * len(pcfg.lrs) * len(pcfg.steps)
    for r in got:
        assert set(reference.summary) <= set(r.summary)
        assert r.summary["fired"] == {k: 1.0 for k in ("write", "read", "plain", "unrelated")}
        assert r.cost.forward == r.cost.backward == r.detail["steps"]
        assert f"all {len(run.entries)} statements" in r.cost.note
        assert r.detail["tuning_budget"].startswith(f"{n_configs} configurations")
        assert f"on {pcfg.tune_symbols} training symbols" in r.detail["tuning_budget"]
        assert (
            r.detail["lr"] in pcfg.lrs
            and r.detail["lr"] == data["tuning"]["lr_by_size"][r.detail["K"]]
        )
        assert r.detail["final_loss"] < r.detail["loss_start"]
    # exactly one row is the tuned choice, the training curve's best point
    tuning = data["tuning"]
    assert len(tuning["curve"]) == n_configs
    assert tuning["best"] == pick(tuning["curve"])
    tuned = [r for r in got if r.detail["tuned"]]
    assert len(tuned) == 1
    assert (tuned[0].detail["K"], tuned[0].detail["steps"]) == (
        tuning["best"]["K"],
        tuning["best"]["steps"],
    )
    # the curve for the figure: one point per row, with the row's rates
    assert [(p["K"], p["steps"]) for p in data["curve"]] == grid
    assert all(p["read"] == r.summary["read"] for p, r in zip(data["curve"], got, strict=True))
    # tuning wrote training statements only; the evaluation prefixes wrote the split's own
    n_tune = len(pcfg.sizes) * len(pcfg.lrs)
    assert len(calls) == n_tune + len(pcfg.sizes)
    evaluation = set(run.qs.texts)
    assert all(not set(c) & evaluation for c in calls[:n_tune])
    assert all(set(c) <= evaluation for c in calls[n_tune:])  # write prompts are queries too


def test_without_a_training_split_the_fixed_lr_is_used(tiny_gemma, prepared):
    cfg, _, run = prepared
    pcfg = SoftPrefixConfig.quick(sizes=(2,), steps=(1,), lr=0.5)
    got, data = soft_prefix_rows(tiny_gemma, run, cfg.recall, pcfg)
    assert len(got) == 1 and got[0].detail["lr"] == 0.5
    assert got[0].detail["tuning_budget"] == "none (fixed learning rate)"
    assert got[0].detail["tuned_choice"] is None and data["tuning"]["curve"] == []
