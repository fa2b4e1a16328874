"""ROME (analyses.edit.rome): the closed form against a naive one, the keys, the covariance and
its disk cache against independent reads, v*'s loop, the method's rank-one write and its exact
undo, on the tiny random models."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import no_hooks, weights_digest

from analyses.capacity.lora.adapter import lora_targets
from analyses.edit.cases import EditCase, answer_text
from analyses.edit.method import Cost
from analyses.edit.rome import covariance as cov
from analyses.edit.rome.config import PAPER_VS_FMI, SOURCES, RomeConfig
from analyses.edit.rome.keys import context_prefixes, key_covariance, subject_keys
from analyses.edit.rome.method import Rome
from analyses.edit.rome.update import rank_one_update
from analyses.edit.rome.value import at_linear, target_value, value_batch
from fmi.core.prompts import encode
from fmi.errors import ConfigError

CASE = EditCase("0", "Paris", "{} is the capital of", "Italy", "France")
MIDDLE = EditCase("1", "Eiffel Tower", "In my view the {} is located in", "Rome", "Paris")
FAST = RomeConfig(steps=4, cov_samples=1000, context_prefixes=2, early_stop=0.0)
DEFAULT_ROOT = cov.default_root


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path_factory):
    """Every covariance of this module in one temporary folder (built once per session), not
    the fmi cache (whose root also holds the model assets)."""
    root = tmp_path_factory.getbasetemp() / "rome-cov"
    monkeypatch.setattr(cov, "default_root", lambda: root)


def _inputs(model, layer, tokens, mask):
    """The edited Linear's full input for a batch, read by a hook of this test's own."""
    seen = []
    linear = lora_targets(model.hf_model)[layer][1]
    handle = linear.register_forward_pre_hook(lambda m, i: seen.append(i[0].detach().clone()))
    try:
        with torch.no_grad():
            model.bridge(tokens, attention_mask=mask)
    finally:
        handle.remove()
    return seen[0]


def _torch_hooks(model) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.hf_model.modules()
    )


def _grad_flags(model) -> list[bool]:
    return [p.requires_grad for m in (model.bridge, model.hf_model) for p in m.parameters()]


# --------------------------------------------------------------------------- closed form


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_direction", [False, True])
def test_rank_one_update_matches_naive_closed_form(with_bias, with_direction):
    gen = torch.Generator().manual_seed(0)
    d_out, d_in = 5, 7
    W = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    A = torch.randn(d_in, d_in, generator=gen, dtype=torch.float64)
    C = A @ A.T + 0.1 * torch.eye(d_in, dtype=torch.float64)
    k = torch.randn(d_in, generator=gen, dtype=torch.float64)
    v = torch.randn(d_out, generator=gen, dtype=torch.float64)
    b = torch.randn(d_out, generator=gen, dtype=torch.float64) if with_bias else None
    d = k + 0.3 * torch.randn(d_in, generator=gen, dtype=torch.float64) if with_direction else k

    Cinv = torch.linalg.inv(C)
    u = [sum(float(Cinv[i, j]) * float(d[j]) for j in range(d_in)) for i in range(d_in)]
    ut_k = sum(u[i] * float(k[i]) for i in range(d_in))
    Wk = [sum(float(W[o, i]) * float(k[i]) for i in range(d_in)) for o in range(d_out)]
    resid = [float(v[o]) - (float(b[o]) if b is not None else 0.0) - Wk[o] for o in range(d_out)]
    naive = torch.tensor(
        [[resid[o] * u[i] / ut_k for i in range(d_in)] for o in range(d_out)],
        dtype=torch.float64,
    )

    delta = rank_one_update(W, C, k, v, b, d if with_direction else None)
    torch.testing.assert_close(delta, naive, rtol=1e-9, atol=1e-10)
    W2 = W + delta
    out = W2 @ k + (b if b is not None else 0)
    torch.testing.assert_close(out, v, rtol=1e-9, atol=1e-10)
    # a key C⁻¹-orthogonal to the direction keeps its output
    u_t = torch.tensor(u, dtype=torch.float64)
    k2 = torch.randn(d_in, generator=gen, dtype=torch.float64)
    k2 = k2 - (k2 @ u_t) / (u_t @ u_t) * u_t
    assert abs(float(k2 @ Cinv @ d)) < 1e-10
    torch.testing.assert_close(W2 @ k2, W @ k2, rtol=1e-9, atol=1e-10)
    assert torch.linalg.matrix_rank(delta) == 1


# --------------------------------------------------------------------------- reads


def test_key_covariance_matches_naive_loop(tiny_gemma):
    model, layer = tiny_gemma, 1
    texts = ["The cat sat on the mat today", "Hello"]
    enc = encode(model.tokenizer, texts)
    assert enc.mask[1, 0] == 0  # the short text is left-padded
    C = key_covariance(model, layer, texts)
    k = _inputs(model, layer, enc.tokens, enc.mask).double()
    d = k.shape[-1]
    total, n = torch.zeros(d, d, dtype=torch.float64), 0
    for row in range(k.shape[0]):
        for pos in range(k.shape[1]):
            if enc.mask[row, pos]:
                total += torch.outer(k[row, pos], k[row, pos])
                n += 1
    assert n == sum(len(model.tokenizer(t)["input_ids"]) for t in texts)
    torch.testing.assert_close(C, total / n, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(key_covariance(model, layer, enc), C)


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_neox"])
def test_subject_keys_are_the_subjects_last_token(fixture, request):
    model, layer = request.getfixturevalue(fixture), 1
    tok = model.tokenizer
    # the index found independently: the tokens of the rewrite up to the subject's end
    upto = MIDDLE.rewrite[: MIDDLE.rewrite.find(MIDDLE.subject) + len(MIDDLE.subject)]
    index = len(tok(upto)["input_ids"]) - 1
    full = tok(MIDDLE.rewrite)["input_ids"]
    assert tok(upto)["input_ids"] == full[: index + 1]  # same tokens up to there
    assert 0 < index < len(full) - 1  # the subject sits in the middle
    enc = encode(tok, [MIDDLE.rewrite])
    k_all = _inputs(model, layer, enc.tokens, enc.mask)
    prefix = "Some words first. "
    keys = subject_keys(model, layer, [MIDDLE, CASE], ["", prefix])
    assert [k.shape[0] for k in keys] == [2, 2]
    torch.testing.assert_close(keys[0][0], k_all[0, index].float())
    assert not torch.allclose(keys[0][0], k_all[0, index + 1].float())
    # the prefixed row, read alone: its subject sits after the prefix's tokens
    enc2 = encode(tok, [prefix + MIDDLE.rewrite])
    shift = len(tok(prefix + upto)["input_ids"]) - 1
    k_pre = _inputs(model, layer, enc2.tokens, enc2.mask)[0, shift].float()
    torch.testing.assert_close(keys[0][1], k_pre, rtol=1e-4, atol=1e-5)


def test_context_prefixes_are_seeded_and_split_over_lengths(tiny_gemma):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = context_prefixes(tiny_gemma, 4, (3, 6), seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert len(a) == 4 and all(p.endswith(". ") and "{" not in p for p in a)
    assert context_prefixes(tiny_gemma, 4, (3, 6), seed=7) == a
    assert context_prefixes(tiny_gemma, 4, (3, 6), seed=8) != a
    tok = tiny_gemma.tokenizer
    short = [len(tok(p[:-2], add_special_tokens=False)["input_ids"]) for p in a[:2]]
    assert all(n <= 4 for n in short)  # 2 sampled tokens each (decoding may merge them)
    memit = context_prefixes(tiny_gemma, 2, (5,), seed=0, starts=("The", "I"))
    assert memit[0].startswith("The") and memit[1].startswith("I")


# --------------------------------------------------------------------------- covariance


def test_sampled_tokens_are_seeded_counted_and_leave_the_rng(tiny_gemma):
    spec = cov.CovSpec(tokens=300, seed=3)
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    tokens, mask, content = cov.sample_tokens(tiny_gemma, spec)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = cov.sample_tokens(tiny_gemma, spec)
    assert torch.equal(again[0], tokens) and torch.equal(again[2], content)
    other = cov.sample_tokens(tiny_gemma, dataclasses.replace(spec, seed=4))[0]
    assert not torch.equal(other, tokens)
    assert int(content.sum()) >= 300 and tokens.shape[0] % spec.rows == 0
    assert not (content & ~mask.bool()).any()  # padding never counts
    special = set(tiny_gemma.tokenizer.all_special_ids)
    assert all(int(t) not in special for t in tokens[content])


def test_covariance_matches_the_sampled_tokens(tiny_neox, tmp_path):
    spec = cov.CovSpec(tokens=150, seed=1)
    got = cov.covariances(tiny_neox, [0, 1], spec, tmp_path)
    tokens, mask, content = cov.sample_tokens(tiny_neox, spec)
    for layer in (0, 1):
        k = _inputs(tiny_neox, layer, tokens, mask)[content].double()
        C, info = got[layer]
        assert C.dtype == torch.float32 and info["tokens"] == k.shape[0]
        torch.testing.assert_close(C.double(), k.T @ k / k.shape[0], rtol=1e-4, atol=1e-6)
        assert info["source"] == "model-text" and info["from"] == "built"
        assert info["build_seconds"] >= info["sample_seconds"] > 0


def test_covariance_cache_round_trip_and_keys(tiny_gemma, tiny_neox, tmp_path):
    spec = cov.CovSpec(tokens=100, seed=0)
    first, info = cov.covariances(tiny_gemma, [1], spec, tmp_path)[1]
    path = cov.cache_path(tiny_gemma, 1, spec, tmp_path)
    assert path.is_file() and path.is_relative_to(tmp_path)
    assert cov.covariances(tiny_gemma, [1], spec, tmp_path)[1][1]["from"] == "memory"
    cov._MEMO.clear()
    loaded, again = cov.covariances(tiny_gemma, [1], spec, tmp_path)[1]
    assert again["from"] == "disk" and torch.equal(loaded, first)
    assert again["tokens"] == info["tokens"] and again["build_seconds"] == info["build_seconds"]
    # a new layer reuses the cached text: only its keys are computed
    cov._MEMO.clear()
    _, layer0 = cov.covariances(tiny_gemma, [0], spec, tmp_path)[0]
    assert layer0["from"] == "built" and layer0["tokens"] == info["tokens"]
    paths = {
        path,
        cov.cache_path(tiny_gemma, 0, spec, tmp_path),
        cov.cache_path(tiny_gemma, 1, dataclasses.replace(spec, tokens=101), tmp_path),
        cov.cache_path(tiny_gemma, 1, dataclasses.replace(spec, seed=1), tmp_path),
        cov.cache_path(tiny_neox, 1, spec, tmp_path),
    }
    assert len(paths) == 5
    # changed weights: another fingerprint, another file
    w = lora_targets(tiny_gemma.hf_model)[0][1].weight
    saved = w.detach().clone()
    with torch.no_grad():
        w[0, 0] += 1.0
    try:
        assert cov.cache_path(tiny_gemma, 1, spec, tmp_path) != path
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert cov.cache_path(tiny_gemma, 1, spec, tmp_path) == path


def test_covariance_lives_under_the_fmi_cache(tiny_gemma, monkeypatch, tmp_path):
    monkeypatch.setattr(cov, "default_root", DEFAULT_ROOT)
    monkeypatch.setenv("FMI_CACHE", str(tmp_path / "root"))
    path = cov.cache_path(tiny_gemma, 0, cov.CovSpec(tokens=10))
    assert path.is_relative_to(tmp_path / "root" / "rome-cov")
    monkeypatch.delenv("FMI_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cov.cache_path(tiny_gemma, 0, cov.CovSpec(tokens=10)).is_relative_to(
        tmp_path / "xdg" / "fmi" / "rome-cov"
    )


# --------------------------------------------------------------------------- v*


def test_value_batch_columns(tiny_gemma):
    tok = tiny_gemma.tokenizer
    batch = value_batch(tok, CASE, ["", "A b. "])
    answer = tok(answer_text(CASE.target_new), add_special_tokens=False)["input_ids"]
    assert batch.prompts == 2 and batch.rows == 3
    width = batch.tokens.shape[1]
    cols = batch.keep[batch.answer].tolist()
    assert cols == list(range(width - len(answer), width))
    # the essence row's subject token is where the KL is read and delta goes
    assert int(batch.keep[batch.kl]) == int(batch.where[1][-1])
    row = batch.tokens[-1][batch.mask[-1].bool()].tolist()
    assert row == tok("Paris is a")["input_ids"]
    # teacher forcing: the prompt rows end with the answer minus its last token
    assert batch.tokens[0, width - len(answer) + 1 :].tolist() == answer[:-1]


def test_value_loop_counts_early_stop_and_clamp(tiny_gemma):
    model, layer = tiny_gemma, 0  # (at the last block, the subject's token reaches no answer)
    cost = Cost()
    cfg = dataclasses.replace(FAST, steps=5)
    init, delta, info = target_value(model, at_linear, layer, CASE, cfg, cost, ["", "A b. "])
    assert (cost.forward, cost.backward, info["steps"]) == (5, 4, 5)
    assert float(delta.norm()) <= cfg.clamp * float(init.norm()) * (1 + 1e-5)
    assert info["nll"][1] != info["nll"][0]
    # v_init is the Linear's output on the bare prompt, read without the hook
    k = subject_keys(model, layer, [CASE])[0][0]
    linear = lora_targets(model.hf_model)[layer][1]
    with torch.no_grad():
        torch.testing.assert_close(init, linear(k), rtol=1e-4, atol=1e-5)
    stopped = Cost()
    target_value(model, at_linear, layer, CASE, dataclasses.replace(cfg, early_stop=1e9), stopped)
    assert (stopped.forward, stopped.backward) == (1, 0)
    tight = dataclasses.replace(cfg, clamp=1e-3)
    init2, delta2, _ = target_value(model, at_linear, layer, CASE, tight)
    assert float(delta2.norm()) == pytest.approx(1e-3 * float(init2.norm()), rel=1e-4)
    with pytest.raises(ValueError, match="bare prompt"):
        target_value(model, at_linear, layer, CASE, cfg, prefixes=["A b. "])


def test_weight_decay_shrinks_delta(tiny_neox):
    free = dataclasses.replace(FAST, steps=6, weight_decay=0.0, clamp=100.0)
    heavy = dataclasses.replace(free, weight_decay=50.0)
    _, d_free, _ = target_value(tiny_neox, at_linear, 1, CASE, free)
    _, d_heavy, _ = target_value(tiny_neox, at_linear, 1, CASE, heavy)
    assert float(d_heavy.norm()) < float(d_free.norm())


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("layer", -1),
        ("steps", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("kl_weight", -1.0),
        ("weight_decay", -1.0),
        ("early_stop", float("inf")),
        ("clamp", 0.0),
        ("cov_samples", 0),
        ("cov_lambda", -1e-3),
        ("context_prefixes", -1),
        ("prefix_lengths", ()),
        ("prefix_lengths", (1,)),
        ("prefix_top_k", 0),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"^{field} "):
        RomeConfig(**{field: value})


def test_defaults_are_the_papers():
    cfg = RomeConfig()
    assert (cfg.steps, cfg.lr, cfg.kl_weight, cfg.weight_decay, cfg.clamp) == (
        20,
        0.5,
        0.0625,
        0.5,
        4.0,
    )
    assert (cfg.cov_samples, cfg.context_prefixes, cfg.prefix_lengths) == (100_000, 20, (5, 10))
    assert cfg.early_stop == 5e-2
    assert set(SOURCES) <= set(cfg.to_dict()) and len(PAPER_VS_FMI) >= 5
    json.dumps(cfg.to_dict())


def test_layer_out_of_range_is_rejected_at_use(tiny_gemma):
    with (
        pytest.raises(ConfigError, match="layer must be in 0..1"),
        Rome(RomeConfig(layer=2)).edited(tiny_gemma, [CASE], Cost()),
    ):
        pass


# --------------------------------------------------------------------------- the method


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_neox"])
def test_edit_is_rank_one_and_maps_the_bare_key_to_the_value(fixture, request):
    model = request.getfixturevalue(fixture)
    rome, cost = Rome(FAST), Cost()
    layer = FAST.resolved_layer(model)
    linear = lora_targets(model.hf_model)[layer][1]
    before = linear.weight.detach().clone()
    rest = {
        n: t.weight.detach().clone() for n, t in lora_targets(model.hf_model) if t is not linear
    }
    prefixes = rome.prefixes(model)
    assert len(prefixes) == 1 + FAST.context_prefixes and prefixes[0] == ""
    keys = subject_keys(model, layer, [CASE], prefixes)[0]
    init, delta, _ = target_value(model, at_linear, layer, CASE, FAST, None, prefixes)
    with rome.edited(model, [CASE], cost):
        update = (linear.weight.detach() - before).double()
        assert update.abs().max() > 0
        assert torch.linalg.matrix_rank(update, rtol=1e-5) == 1
        with torch.no_grad():
            torch.testing.assert_close(linear(keys[0]), init + delta, rtol=1e-4, atol=1e-4)
        # its row space is C⁻¹ k_avg
        u = torch.linalg.solve(rome.covariance(model, layer), keys.mean(0).double())
        row = update[update.norm(dim=1).argmax()]
        assert abs(float(torch.nn.functional.cosine_similarity(row, u, dim=0))) > 0.999
        for n, t in lora_targets(model.hf_model):
            if t is not linear:
                assert torch.equal(t.weight, rest[n])
    assert cost.forward == 1 + FAST.steps and cost.backward == FAST.steps - 1
    assert cost.seconds > 0
    settings = rome.settings()
    json.dumps(settings)
    assert settings["resolved_layer"] == layer == int(model.bridge.cfg.n_layers) // 3
    assert settings["covariance_tokens"] >= FAST.cov_samples
    assert settings["covariance"]["source"] == "model-text"
    assert settings["steps"] == FAST.steps and settings["context_prefixes_used"] == 2


def test_sequential_edits_stack(tiny_gemma):
    model = tiny_gemma
    layer = FAST.resolved_layer(model)
    linear = lora_targets(model.hf_model)[layer][1]
    before = linear.weight.detach().clone()
    other = dataclasses.replace(MIDDLE, target_new="Berlin")
    cost = Cost()
    with Rome(FAST).edited(model, [CASE, other], cost):
        delta = (linear.weight.detach() - before).double()
        assert torch.linalg.matrix_rank(delta, rtol=1e-5) == 2
    assert cost.backward == 2 * (FAST.steps - 1)


def test_weights_hooks_and_flags_restored(tiny_gemma):
    model = tiny_gemma
    digest, flags, hooks = weights_digest(model.bridge), _grad_flags(model), _torch_hooks(model)
    rome = Rome(FAST)
    with rome.edited(model, [CASE], Cost()):
        assert weights_digest(model.bridge) != digest
    assert weights_digest(model.bridge) == digest
    with pytest.raises(KeyError), rome.edited(model, [CASE, MIDDLE], Cost()):
        raise KeyError("boom")
    assert weights_digest(model.bridge) == digest
    assert no_hooks(model.bridge) and _torch_hooks(model) == hooks
    assert _grad_flags(model) == flags


def test_covariance_is_not_charged(tiny_gemma):
    rome = Rome(dataclasses.replace(FAST, cov_samples=130))
    layer = FAST.resolved_layer(tiny_gemma)
    cost = Cost()
    with rome.edited(tiny_gemma, [CASE], cost):
        pass
    assert rome.setup_seconds > 0
    assert cost.forward == 1 + FAST.steps  # no sampling or covariance forward in the cost
    assert rome.covariance(tiny_gemma, layer).dtype == torch.float64


def test_learnable_edit_changes_greedy_answer(tiny_neox):
    """The random tiny models are near-uniform and an edit at a middle subject barely moves
    their output, so the subject ends the prompt here (the edited output then feeds the answer
    position directly), with no prefixes, no weight decay and a loose clamp."""
    model, tok = tiny_neox, tiny_neox.tokenizer
    case = EditCase("2", "Paris", "The city of {}", "Italy", "France")
    cfg = RomeConfig(
        steps=40, clamp=8.0, weight_decay=0.0, cov_samples=120, context_prefixes=0, early_stop=0
    )
    first = tok(answer_text(case.target_new), add_special_tokens=False)["input_ids"][0]

    def greedy_and_nll() -> tuple[int, float]:
        enc = encode(tok, [case.rewrite])
        with torch.no_grad():
            logits = model.bridge(enc.tokens, attention_mask=enc.mask)[0, -1].float()
        logp = logits.log_softmax(-1)
        return int(logp.argmax()), -float(logp[first])

    top, nll = greedy_and_nll()
    assert top != first
    with Rome(cfg).edited(model, [case], Cost()):
        top_after, nll_after = greedy_and_nll()
    assert top_after == first
    assert nll_after < nll - 0.5
    assert greedy_and_nll() == (top, nll)


def test_paper_settings_lower_the_nll_on_gemma(tiny_gemma):
    """Gemma-3's post-MLP norm bounds what one MLP output can do on a random model: with the
    paper's settings the target's NLL still goes down."""
    rome = Rome(dataclasses.replace(RomeConfig(), cov_samples=120, context_prefixes=4))
    with rome.edited(tiny_gemma, [CASE], Cost()):
        pass
    first, last = rome.last_values[0]["nll"]
    assert last < first
