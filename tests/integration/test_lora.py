"""The LoRA capacity probe: adapter arithmetic, hooks through the Bridge, a frozen base, fits."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from analyses.capacity.lora import tune as lora_module
from analyses.capacity.lora.adapter import LoraAdapter, applied, lora_outputs, lora_targets
from analyses.capacity.lora.config import LoraConfig
from analyses.capacity.lora.retention import Retention, retention_kl
from analyses.capacity.lora.train import answer_loss, train_lora
from analyses.capacity.lora.tune import choose
from analyses.capacity.power_law import PowerLaw, fit_power_law
from fmi.core.generate import greedy
from fmi.core.prompts import encode
from fmi.errors import ConfigError
from fmi.models.fingerprint import parameter_checksum

SUBJECTS = ["apple", "window", "music", "engine", "forest", "pocket", "silver", "garden"]
# Distinct last tokens: a tiny random model barely mixes context into the last position.
TEXTS = [f"The word for {s}" for s in SUBJECTS]
WORDS = [" red", " blue", " green", " cat", " dog", " house", " tree", " river"]
# Retention text: training-split unrelated questions (as the capacity probe uses), different
# lengths, so that batches are left-padded.
RETAIN = [
    "Question: what is the capital of Peru? Answer:",
    "Question: in game A, what is the opposite of hot? Answer:",
    "Question: how many legs does a spider have? Answer:",
    "Question: what month comes after May? Answer:",
    "Question: what is the color of snow? Answer:",
]


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
        ({"step_grid": ()}, "step_grid"),
        ({"step_grid": (0, 4)}, "step_grid"),
        ({"step_grid": (4, 2)}, "step_grid"),
        ({"step_grid": (2, 2)}, "step_grid"),
        ({"batch_size": 0}, "batch_size"),
        ({"lrs": ()}, "lrs"),
        ({"lrs": (0.0,)}, "lrs"),
        ({"lrs": (1e-3, float("nan"))}, "lrs"),
        ({"lrs": (1e-3, 1e-3)}, "lrs"),
        ({"ranks": ()}, "ranks"),
        ({"ranks": (4, 0)}, "ranks"),
        ({"seed": -1}, "seed"),
        ({"retention_weight": -0.5}, "retention_weight"),
        ({"retention_weight": float("inf")}, "retention_weight"),
        ({"retention_prompts": 0}, "retention_prompts"),
        ({"tune_size": 3}, "tune_size"),
        ({"tune_size": 0}, "tune_size"),
        ({"max_unrelated_changed": 1.5}, "max_unrelated_changed"),
        ({"max_unrelated_changed": float("nan")}, "max_unrelated_changed"),
    ],
)
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        LoraConfig(**overrides)


def test_config_to_dict():
    cfg = LoraConfig(ranks=(2,), lrs=(1e-3,), step_grid=(7,))
    assert cfg.to_dict() == {
        "ranks": (2,),
        "lrs": (1e-3,),
        "step_grid": (7,),
        "batch_size": 32,
        "seed": 0,
        "retention_weight": 1.0,
        "retention_prompts": 16,
        "tune_size": 10,
        "max_unrelated_changed": 0.05,
    }
    assert cfg.steps == 7 and not cfg.tuned
    assert LoraConfig().tuned and LoraConfig().steps == 50


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
        cfg = LoraConfig(batch_size=3, retention_weight=1.0)
        retention = Retention.build(tiny, RETAIN[:2], 2)
        run = train_lora(
            tiny, TEXTS[:4], _targets(tiny)[:4], 4, cfg, lr=1e-2, steps=12, retention=retention
        )
        adapter, losses = run.adapter, run.losses
        assert len(run.retention) == 12
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
    cfg = LoraConfig(batch_size=8)
    adapter = train_lora(tiny, TEXTS, targets, 8, cfg, lr=1e-2, steps=40).adapter
    got = [t[0] for t in lora_outputs(tiny, adapter, TEXTS, max_new_tokens=1).tokens]
    base = [t[0] for t in greedy(tiny, TEXTS, site="", max_new_tokens=1).tokens]
    want = targets.tolist()
    assert sum(g == w for g, w in zip(got, want, strict=True)) >= 7
    assert sum(g == w for g, w in zip(base, want, strict=True)) <= 1
    fresh = LoraAdapter.init(tiny.hf_model, 8)
    assert answer_loss(tiny, TEXTS, targets, adapter, 3) < answer_loss(
        tiny, TEXTS, targets, fresh, 3
    )


def _naive_kl(model, adapter: LoraAdapter, texts: list[str]) -> float:
    """``KL(p_base || p_adapted)`` prompt by prompt (unpadded, float64), averaged."""

    def last(text: str) -> torch.Tensor:
        enc = encode(model.tokenizer, [text])
        return model.bridge(enc.tokens, attention_mask=enc.mask)[0, -1].double().log_softmax(-1)

    with torch.no_grad():
        base = [last(t) for t in texts]
        with applied(model.hf_model, adapter):
            new = [last(t) for t in texts]
    return sum(float((p.exp() * (p - q)).sum()) for p, q in zip(base, new, strict=True)) / len(
        texts
    )


def test_retention_kl_matches_a_naive_loop(tiny):
    retention = Retention.build(tiny, RETAIN, 3)
    assert [len(b) for b in retention.batches] == [3, 2] and retention.n_prompts == 5
    adapter = _random_adapter(tiny)
    for b in adapter.B:
        b.data.mul_(0.3)  # a moderate change: KL well away from 0 and from saturation
    with torch.no_grad(), applied(tiny.hf_model, adapter):
        got = [
            float(retention_kl(tiny, b, p))
            for b, p in zip(retention.batches, retention.base, strict=True)
        ]
    want = [_naive_kl(tiny, adapter, list(b)) for b in retention.batches]
    assert min(want) > 1e-3
    assert got == pytest.approx(want, abs=1e-6, rel=0)


def test_retention_kl_is_zero_at_init_and_positive_after_a_step(tiny):
    retention = Retention.build(tiny, RETAIN, 3)
    fresh = LoraAdapter.init(tiny.hf_model, 2)
    with torch.enable_grad(), applied(tiny.hf_model, fresh):  # as in training: grad mode
        zero = [
            retention_kl(tiny, b, p) for b, p in zip(retention.batches, retention.base, strict=True)
        ]
    assert [z.item() for z in zero] == [0.0, 0.0]
    cfg = LoraConfig(batch_size=4, retention_weight=1.0)
    run = train_lora(
        tiny, TEXTS[:4], _targets(tiny)[:4], 2, cfg, lr=1e-2, steps=2, retention=retention
    )
    assert run.retention[0] == 0.0  # step 1 reads the adapter before its first update
    assert run.retention[1] > 0.0  # step 2: after one update, B != 0
    with torch.no_grad(), applied(tiny.hf_model, run.adapter):
        after = float(retention_kl(tiny, retention.batches[0], retention.base[0]))
    assert after > 0.0


def _reference_losses(model, texts, targets, rank: int, cfg: LoraConfig, lr: float, steps: int):
    """The probe's training loop before the retention term existed (cross-entropy only)."""
    from analyses.capacity.lora.base import _frozen_base, _last_logits

    adapter = LoraAdapter.init(model.hf_model, rank, cfg.seed)
    opt = torch.optim.Adam(adapter.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    with _frozen_base(model), applied(model.hf_model, adapter), torch.enable_grad():
        for _ in range(steps):
            rows = torch.randperm(len(texts), generator=gen)[: cfg.batch_size].tolist()
            logits = _last_logits(model, [texts[i] for i in rows])
            loss = torch.nn.functional.cross_entropy(logits, targets[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return adapter, losses


def test_zero_retention_weight_is_the_plain_loop_bit_for_bit(tiny_gemma):
    texts, targets = TEXTS[:6], _targets(tiny_gemma)[:6]
    cfg = LoraConfig(batch_size=4, retention_weight=0.0, seed=3)
    ref_adapter, ref = _reference_losses(tiny_gemma, texts, targets, 2, cfg, 1e-2, 5)
    retention = Retention.build(tiny_gemma, RETAIN, 4)
    calls: list[int] = []
    _, first = lora_targets(tiny_gemma.hf_model)[0]
    handle = first.register_forward_hook(lambda *_: calls.append(1))
    try:
        run = train_lora(tiny_gemma, texts, targets, 2, cfg, lr=1e-2, steps=5, retention=retention)
    finally:
        handle.remove()
    assert len(calls) == 5  # one forward a step: the retention set is never run
    assert run.losses == ref and run.retention == []
    none = train_lora(tiny_gemma, texts, targets, 2, cfg, lr=1e-2, steps=5)
    assert none.losses == ref
    for a, b in zip(run.adapter.parameters(), ref_adapter.parameters(), strict=True):
        assert torch.equal(a, b)
    on = train_lora(
        tiny_gemma,
        texts,
        targets,
        2,
        LoraConfig(batch_size=4, retention_weight=1.0, seed=3),
        lr=1e-2,
        steps=5,
        retention=retention,
    )
    assert on.losses[0] == ref[0] and on.losses != ref  # same first batch; the KL then pulls


def test_snapshots_equal_runs_of_exactly_that_many_steps(tiny_gemma):
    texts, targets = TEXTS[:6], _targets(tiny_gemma)[:6]
    cfg = LoraConfig(batch_size=4, step_grid=(2, 4), retention_weight=0.5)
    retention = Retention.build(tiny_gemma, RETAIN, 2)
    run = train_lora(
        tiny_gemma, texts, targets, 2, cfg, lr=2e-2, steps=4, retention=retention, snapshots=(2, 4)
    )
    assert sorted(run.snapshots) == [2, 4]
    for k in (2, 4):
        alone = train_lora(
            tiny_gemma, texts, targets, 2, cfg, lr=2e-2, steps=k, retention=retention
        )
        assert alone.losses == run.losses[:k] and alone.retention == run.retention[:k]
        for a, b in zip(run.snapshots[k].parameters(), alone.adapter.parameters(), strict=True):
            assert torch.equal(a, b), k
            assert not a.requires_grad  # a detached copy: training went on without it
    assert not torch.equal(run.snapshots[2].B[0], run.snapshots[4].B[0])
    with pytest.raises(ConfigError, match="snapshots"):
        train_lora(tiny_gemma, texts, targets, 2, cfg, lr=2e-2, steps=3, snapshots=(4,))


def _point(lr: float, steps: int, read: float, changed: float) -> dict:
    return {"lr": lr, "steps": steps, "read": read, "unrelated_changed": changed}


def test_choose_rule_and_tie_breaks():
    curve = [
        _point(0.02, 10, 0.8, 0.00),
        _point(0.005, 10, 0.8, 0.04),  # same read and steps as above, smaller lr: wins
        _point(0.005, 25, 0.8, 0.00),  # same read, more steps: loses
        _point(0.001, 50, 0.7, 0.00),
        _point(0.02, 50, 1.0, 0.10),  # best read, but changes too many unrelated prompts
    ]
    assert choose(curve, 0.05) == {**curve[1], "within_bound": True}
    assert choose(curve, 0.10) == {**curve[4], "within_bound": True}
    assert choose(curve, 0.0) == {**curve[0], "within_bound": True}  # curve[1] breaks the bound
    # nothing within the bound: the least damage, then the better read, fewer steps, smaller lr
    worse = [_point(0.01, 10, 0.9, 0.3), _point(0.001, 10, 0.2, 0.1), _point(0.005, 5, 0.2, 0.1)]
    assert choose(worse, 0.05) == {**worse[2], "within_bound": False}
    assert choose(worse[:2], 0.05) == {**worse[1], "within_bound": False}
    with pytest.raises(ValueError, match="at least one"):
        choose([], 0.05)


def test_lora_doctests_run():
    result = doctest.testmod(lora_module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_tune_lora_curve(tiny_gemma):
    from analyses.capacity.lora.tune import TuneSet, tune_lora

    targets = _targets(tiny_gemma)[:4]
    held = RETAIN[3:]
    base = greedy(tiny_gemma, held, site="", max_new_tokens=2).tokens
    data = TuneSet(TEXTS[:4], targets, TEXTS[4:8], held, base)
    cfg = LoraConfig(lrs=(1e-3, 3e-2), step_grid=(1, 3), batch_size=4, retention_weight=1.0)
    retention = Retention.build(tiny_gemma, RETAIN[:3], 4)
    curve = tune_lora(tiny_gemma, data, 2, cfg, retention, max_new_tokens=2)
    assert [(p["lr"], p["steps"]) for p in curve] == [(1e-3, 1), (1e-3, 3), (3e-2, 1), (3e-2, 3)]
    for p in curve:
        assert 0.0 <= p["read"] <= 1.0 and 0.0 <= p["unrelated_changed"] <= 1.0
        assert math.isfinite(p["train_loss"])


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
