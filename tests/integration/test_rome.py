"""ROME (analyses.edit.rome): the closed form against a naive one, the key and covariance against
independent reads, the method's rank-one write and its exact undo, on the tiny random models."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import no_hooks, weights_digest

from analyses.capacity.lora.adapter import lora_targets
from analyses.edit.cases import EditCase, answer_text
from analyses.edit.method import Cost
from analyses.edit.rome.config import RomeConfig
from analyses.edit.rome.keys import key_covariance, neutral_text, subject_key
from analyses.edit.rome.method import Rome
from analyses.edit.rome.update import rank_one_update
from analyses.edit.rome.value import target_value
from fmi.core.prompts import encode
from fmi.errors import ConfigError

CASE = EditCase("0", "Paris", "{} is the capital of", "Italy", "France")
MIDDLE = EditCase("1", "Eiffel Tower", "In my view the {} is located in", "Rome", "Paris")
FAST = RomeConfig(steps=4, cov_samples=120)


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
def test_rank_one_update_matches_naive_closed_form(with_bias):
    gen = torch.Generator().manual_seed(0)
    d_out, d_in = 5, 7
    W = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    A = torch.randn(d_in, d_in, generator=gen, dtype=torch.float64)
    C = A @ A.T + 0.1 * torch.eye(d_in, dtype=torch.float64)
    k = torch.randn(d_in, generator=gen, dtype=torch.float64)
    v = torch.randn(d_out, generator=gen, dtype=torch.float64)
    b = torch.randn(d_out, generator=gen, dtype=torch.float64) if with_bias else None

    Cinv = torch.linalg.inv(C)
    u = [sum(float(Cinv[i, j]) * float(k[j]) for j in range(d_in)) for i in range(d_in)]
    ut_k = sum(u[i] * float(k[i]) for i in range(d_in))
    Wk = [sum(float(W[o, i]) * float(k[i]) for i in range(d_in)) for o in range(d_out)]
    resid = [float(v[o]) - (float(b[o]) if b is not None else 0.0) - Wk[o] for o in range(d_out)]
    naive = torch.tensor(
        [[resid[o] * u[i] / ut_k for i in range(d_in)] for o in range(d_out)],
        dtype=torch.float64,
    )

    delta = rank_one_update(W, C, k, v, b)
    torch.testing.assert_close(delta, naive, rtol=1e-9, atol=1e-10)
    W2 = W + delta
    out = W2 @ k + (b if b is not None else 0)
    torch.testing.assert_close(out, v, rtol=1e-9, atol=1e-10)
    # a key C⁻¹-orthogonal to k: project a random vector off the u direction in k2ᵀ u = 0
    k2 = torch.randn(d_in, generator=gen, dtype=torch.float64)
    u_t = torch.tensor(u, dtype=torch.float64)
    k2 = k2 - (k2 @ u_t) / (u_t @ u_t) * u_t
    assert abs(float(k2 @ Cinv @ k)) < 1e-10
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
def test_subject_key_is_the_subjects_last_token(fixture, request):
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
    k = subject_key(model, layer, MIDDLE)
    torch.testing.assert_close(k, k_all[0, index].float())
    assert not torch.allclose(k, k_all[0, index + 1].float())


def test_neutral_text_is_deterministic_and_leaves_the_rng(tiny_gemma):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = neutral_text(tiny_gemma, 60, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert neutral_text(tiny_gemma, 60, seed=3) == a
    assert neutral_text(tiny_gemma, 60, seed=4) != a
    n = sum(len(tiny_gemma.tokenizer(t)["input_ids"]) for t in a)
    assert 60 <= n <= 200


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("layer", -1),
        ("steps", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("kl_weight", -1.0),
        ("clamp", 0.0),
        ("cov_samples", 0),
        ("cov_lambda", -1e-3),
        ("context_prefixes", -1),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"^{field} "):
        RomeConfig(**{field: value})


def test_layer_out_of_range_is_rejected_at_use(tiny_gemma):
    with (
        pytest.raises(ConfigError, match="layer must be in 0..1"),
        Rome(RomeConfig(layer=2)).edited(tiny_gemma, [CASE], Cost()),
    ):
        pass


# --------------------------------------------------------------------------- the method


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_neox"])
def test_edit_is_rank_one_and_maps_key_to_value(fixture, request):
    model = request.getfixturevalue(fixture)
    rome, cost = Rome(FAST), Cost()
    layer = FAST.resolved_layer(model)
    linear = lora_targets(model.hf_model)[layer][1]
    before = linear.weight.detach().clone()
    rest = {
        n: t.weight.detach().clone() for n, t in lora_targets(model.hf_model) if t is not linear
    }
    k = subject_key(model, layer, CASE)
    v = target_value(model, layer, CASE, k, FAST)
    with rome.edited(model, [CASE], cost):
        delta = (linear.weight.detach() - before).double()
        assert delta.abs().max() > 0
        assert torch.linalg.matrix_rank(delta, rtol=1e-5) == 1
        with torch.no_grad():
            torch.testing.assert_close(linear(k), v, rtol=1e-4, atol=1e-4)
        for n, t in lora_targets(model.hf_model):
            if t is not linear:
                assert torch.equal(t.weight, rest[n])
    assert cost.forward == 2 + FAST.steps and cost.backward == FAST.steps
    assert cost.seconds > 0
    settings = rome.settings()
    assert settings["resolved_layer"] == layer == int(model.bridge.cfg.n_layers) // 3
    assert settings["covariance_tokens"] > 0 and settings["steps"] == FAST.steps


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
    assert cost.backward == 2 * FAST.steps


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


def test_covariance_is_cached_and_not_charged(tiny_gemma):
    rome = Rome(FAST)
    layer = FAST.resolved_layer(tiny_gemma)
    C = rome.covariance(tiny_gemma, layer)
    seconds = rome.covariance_seconds
    assert seconds > 0 and rome.covariance(tiny_gemma, layer) is C
    cost = Cost()
    with rome.edited(tiny_gemma, [CASE], cost):
        pass
    assert rome.covariance_seconds == seconds
    assert cost.forward == 2 + FAST.steps  # no generation or covariance forward in the cost


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_neox"])
def test_learnable_edit_changes_greedy_answer(fixture, request):
    """The random tiny models are near-uniform and an edit at a middle subject barely moves
    their output (at layer 0 of 2, only one attention layer carries it on; Gemma's post-MLP
    norm bounds its size), so the subject ends the prompt here: the edited output then feeds
    the answer position directly."""
    model = request.getfixturevalue(fixture)
    tok = model.tokenizer
    case = EditCase("2", "Paris", "The city of {}", "Italy", "France")
    cfg = RomeConfig(steps=30, lr=0.5, clamp=4.0, cov_samples=120)
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


def test_context_prefixes_average_the_key(tiny_gemma):
    cfg = dataclasses.replace(FAST, context_prefixes=2)
    layer = cfg.resolved_layer(tiny_gemma)
    linear = lora_targets(tiny_gemma.hf_model)[layer][1]
    before = linear.weight.detach().clone()
    cost = Cost()
    with Rome(cfg).edited(tiny_gemma, [CASE], cost):
        delta = (linear.weight.detach() - before).double()
        assert torch.linalg.matrix_rank(delta, rtol=1e-5) == 1
    assert cost.backward == cfg.steps
