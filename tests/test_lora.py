"""The LoRA capacity probe: adapter arithmetic, hooks through the Bridge, a frozen base, fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmi.capacity.lora import (
    LoraAdapter,
    LoraConfig,
    answer_loss,
    applied,
    lora_outputs,
    lora_targets,
    train_lora,
)
from fmi.capacity.power_law import PowerLaw, fit_power_law
from fmi.errors import ConfigError
from fmi.generate import greedy
from fmi.models import parameter_checksum
from fmi.prompts import encode

SUBJECTS = ["apple", "window", "music", "engine", "forest", "pocket", "silver", "garden"]
# Distinct last tokens: a tiny random model barely mixes context into the last position.
TEXTS = [f"The word for {s}" for s in SUBJECTS]
WORDS = [" red", " blue", " green", " cat", " dog", " house", " tree", " river"]


def _targets(model) -> torch.Tensor:
    return torch.tensor([model.tokenizer(w)["input_ids"][-1] for w in WORDS])


def _hooks(module: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Forward and forward-pre hook ids on every module, by name."""
    return {
        name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
        for name, m in module.named_modules(remove_duplicate=False)
    }


def _random_adapter(model, rank: int = 2, seed: int = 1) -> LoraAdapter:
    """An adapter with a nonzero ``B``, so that it changes the model."""
    adapter = LoraAdapter.init(model.hf_model, rank, seed)
    gen = torch.Generator().manual_seed(seed)
    for b in adapter.B:
        b.data.copy_(torch.randn(b.shape, generator=gen))
    return adapter


@pytest.fixture(params=["tiny_pythia", "tiny_gemma"])
def tiny(request):
    return request.getfixturevalue(request.param)


def test_targets_in_block_order(tiny_pythia, tiny_gemma):
    pythia = lora_targets(tiny_pythia.hf_model)
    assert [n for n, _ in pythia] == [f"gpt_neox.layers.{i}.mlp.dense_4h_to_h" for i in range(6)]
    gemma = lora_targets(tiny_gemma.hf_model)
    assert [n for n, _ in gemma] == [f"model.layers.{i}.mlp.down_proj" for i in range(2)]
    assert all(type(m) is torch.nn.Linear for _, m in pythia + gemma)


def test_targets_unknown_architecture():
    with pytest.raises(ConfigError, match="Sequential") as err:
        lora_targets(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    assert "dense_4h_to_h" in str(err.value) and "down_proj" in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"ranks": ()}, "ranks"),
        ({"ranks": (4, 0)}, "ranks"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        LoraConfig(**overrides)


def test_config_to_dict():
    cfg = LoraConfig(ranks=(2,), steps=7, lr=1e-3)
    assert cfg.to_dict() == {"ranks": (2,), "steps": 7, "lr": 1e-3, "batch_size": 32, "seed": 0}


def test_adapter_shapes(tiny_gemma):
    adapter = LoraAdapter.init(tiny_gemma.hf_model, 3)
    d_model = int(tiny_gemma.bridge.cfg.d_model)
    d_mlp = int(tiny_gemma.bridge.cfg.d_mlp)
    assert [tuple(a.shape) for a in adapter.A] == [(d_mlp, 3)] * 2
    assert all(not b.any() and b.requires_grad and b.is_leaf for b in adapter.B)
    assert adapter.n_parameters == 2 * 3 * (d_mlp + d_model)
    assert torch.equal(adapter.A[0], LoraAdapter.init(tiny_gemma.hf_model, 3).A[0])


@torch.inference_mode()
def test_zero_adapter_is_identity(tiny):
    enc = encode(tiny.tokenizer, TEXTS[:4])
    base = tiny.bridge(enc.tokens, attention_mask=enc.mask)
    with applied(tiny.hf_model, LoraAdapter.init(tiny.hf_model, 4)):
        same = tiny.bridge(enc.tokens, attention_mask=enc.mask)
    assert (same - base).abs().max().item() == 0.0


@torch.inference_mode()
def test_applied_arithmetic(tiny_pythia):
    adapter = _random_adapter(tiny_pythia)
    name, linear = lora_targets(tiny_pythia.hf_model)[1]
    a, b = adapter.A[1], adapter.B[1]
    x = torch.randn(3, linear.in_features, generator=torch.Generator().manual_seed(0))
    want = x @ linear.weight.T + linear.bias + (x @ a) @ b
    seen: dict[str, torch.Tensor] = {}

    def probe(module, inputs, out):  # registered after the adapter's hook: sees its output
        seen["x"], seen["out"] = inputs[0].clone(), out.clone()

    with applied(tiny_pythia.hf_model, adapter):
        torch.testing.assert_close(linear(x), want)
        handle = linear.register_forward_hook(probe)
        try:
            enc = encode(tiny_pythia.tokenizer, TEXTS[:2])
            changed = tiny_pythia.bridge(enc.tokens, attention_mask=enc.mask)
        finally:
            handle.remove()
    xs = seen["x"]
    torch.testing.assert_close(seen["out"], xs @ linear.weight.T + linear.bias + (xs @ a) @ b)
    base = tiny_pythia.bridge(enc.tokens, attention_mask=enc.mask)
    assert (changed - base).abs().max() > 1e-3, name


def test_hooks_fire_in_forward_and_generate(tiny_gemma):
    """One call per block per forward, and per decoding step (KV-cached steps included)."""
    calls: list[int] = []
    targets = lora_targets(tiny_gemma.hf_model)
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for _, m in targets]
    try:
        with torch.inference_mode():
            enc = encode(tiny_gemma.tokenizer, TEXTS[:2])
            tiny_gemma.bridge(enc.tokens, attention_mask=enc.mask)
            assert len(calls) == len(targets)
            greedy(tiny_gemma, TEXTS[:2], site="", max_new_tokens=3)
        assert len(calls) == 4 * len(targets)
    finally:
        for h in handles:
            h.remove()


def test_hooks_removed_after_exception(tiny_gemma):
    before = _hooks(tiny_gemma.hf_model)
    with (
        pytest.raises(RuntimeError, match="boom"),
        applied(tiny_gemma.hf_model, LoraAdapter.init(tiny_gemma.hf_model, 2)),
    ):
        assert _hooks(tiny_gemma.hf_model) != before
        raise RuntimeError("boom")
    assert _hooks(tiny_gemma.hf_model) == before


def test_mismatched_adapter_refused(tiny_pythia, tiny_gemma):
    with (
        pytest.raises(ConfigError, match="do not match"),
        applied(tiny_pythia.hf_model, LoraAdapter.init(tiny_gemma.hf_model, 2)),
    ):
        pass


def test_train_lora_keeps_base_frozen(tiny):
    hf = tiny.hf_model
    params = list(hf.parameters())
    checksum, hooks = parameter_checksum(tiny), _hooks(hf)
    flags = [p.requires_grad for p in params]
    params[0].requires_grad_(True)  # a mixed set of flags must come back as it was
    try:
        cfg = LoraConfig(steps=12, lr=1e-2, batch_size=3)
        adapter, losses = train_lora(tiny, TEXTS[:4], _targets(tiny)[:4], 4, cfg)
        assert params[0].requires_grad and not any(p.requires_grad for p in params[1:])
    finally:
        params[0].requires_grad_(flags[0])
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert parameter_checksum(tiny) == checksum
    assert all(p.grad is None for p in tiny.bridge.parameters())
    assert _hooks(hf) == hooks
    assert any(b.abs().sum() > 0 for b in adapter.B)


def test_memorizes_training_prompts(tiny):
    targets = _targets(tiny)
    cfg = LoraConfig(steps=40, lr=1e-2, batch_size=8)
    adapter, _ = train_lora(tiny, TEXTS, targets, 8, cfg)
    got = [t[0] for t in lora_outputs(tiny, adapter, TEXTS, max_new_tokens=1).tokens]
    base = [t[0] for t in greedy(tiny, TEXTS, site="", max_new_tokens=1).tokens]
    want = targets.tolist()
    assert sum(g == w for g, w in zip(got, want, strict=True)) >= 7
    assert sum(g == w for g, w in zip(base, want, strict=True)) <= 1
    fresh = LoraAdapter.init(tiny.hf_model, 8)
    assert answer_loss(tiny, TEXTS, targets, adapter, 3) < answer_loss(
        tiny, TEXTS, targets, fresh, 3
    )


def test_power_law_recovers_exact_coefficients():
    n = np.array([10, 100, 1000, 10, 100, 1000], float)
    r = np.array([1, 1, 1, 16, 16, 16], float)
    law = fit_power_law(2.31 * n**-0.42 * r**-0.1, N=n, r=r)
    assert law.coef == pytest.approx(2.31) and law.r2 == pytest.approx(1.0)
    assert law.exponents == pytest.approx({"N": -0.42, "r": -0.1})
    assert law.n_points == 6
    assert law.predict(N=50.0, r=4.0) == pytest.approx(2.31 * 50**-0.42 * 4**-0.1)
    assert law.formula() == "L = 2.31 · N^-0.42 · r^-0.10"


def test_power_law_drops_nonpositive_points():
    x = np.array([1.0, 2.0, 4.0, 8.0, -1.0, 3.0, 5.0])
    y = 3.0 * np.abs(x) ** 0.5
    y[5], y[6] = 0.0, np.nan
    law = fit_power_law(y, x=x)
    assert law.n_points == 4
    assert law.coef == pytest.approx(3.0) and law.exponents["x"] == pytest.approx(0.5)


def test_power_law_too_few_points():
    with pytest.raises(ValueError, match="not enough data"):
        fit_power_law(np.array([1.0, 2.0, 0.0]), N=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="vary"):
        fit_power_law(np.ones(4), N=np.full(4, 2.0))
    assert isinstance(fit_power_law(np.array([1.0, 2.0, 3.0]), N=np.array([1.0, 2, 4])), PowerLaw)
