"""Refined values: the closed-form steps against a naive loop, and calibration's choice."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from fmi.memory.refine import refine, refined_values
from fmi.memory.values import correction_values


def _naive(h, w_u, b_u, t, alpha, steps):
    """One row, one step at a time, with the softmax written out."""
    out = []
    for row in range(h.shape[0]):
        delta = torch.zeros(h.shape[1])
        for _ in range(steps):
            z = (h[row] + delta) @ w_u + b_u
            p = torch.exp(z - z.max()) / torch.exp(z - z.max()).sum()
            delta = delta + alpha * (w_u[:, t[row]] - w_u @ p)
        out.append(delta)
    return torch.stack(out)


def test_refine_matches_the_naive_loop():
    g = torch.Generator().manual_seed(0)
    h, w_u, b_u = torch.randn(4, 8, generator=g), torch.randn(8, 20, generator=g), torch.randn(20)
    t = torch.tensor([0, 5, 19, 5])
    got, seconds = refine(h, w_u, b_u, t, 0.7, [1, 3, 6])
    for k in (1, 3, 6):
        assert torch.allclose(got[k], _naive(h, w_u, b_u, t, 0.7, k), atol=1e-5)
    assert seconds[1] <= seconds[3] <= seconds[6]


def test_refined_values_are_stored_unscaled_and_one_step_is_the_seed():
    g = torch.Generator().manual_seed(1)
    h, w_u, b_u = torch.randn(3, 8, generator=g), torch.randn(8, 12, generator=g), torch.zeros(12)
    t = torch.tensor([1, 2, 3])
    seed = correction_values(w_u, h @ w_u + b_u, t)
    assert refined_values(h, seed, w_u, b_u, t, 2.5, 1) is seed  # bit for bit: not recomputed
    five = refined_values(h, seed, w_u, b_u, t, 2.5, 5)
    assert torch.allclose(2.5 * five, _naive(h, w_u, b_u, t, 2.5, 5), atol=1e-4)
    # more steps raise the target's probability (monotone on this convex objective's path)
    p = [torch.softmax((h + 2.5 * v) @ w_u, -1)[torch.arange(3), t] for v in (seed, five)]
    assert bool((p[1] > p[0]).all())


def test_fit_chooses_and_records_the_steps(tiny_gemma):
    from fmi.experiments.builtin_tasks import builtin_task
    from fmi.experiments.config import RecallConfig
    from fmi.memory.fit import fit

    cfg = RecallConfig.quick()
    task = builtin_task(seed=0, n_train=cfg.n_train, n_eval=cfg.n_eval)
    fitted = fit(tiny_gemma, task.train, cfg)
    curve = fitted.refine_curve
    assert set(curve) == set(cfg.refine_grid)
    best = max(curve.values())
    assert fitted.refine_steps == min(k for k in curve if curve[k] >= best - 0.01)
    assert fitted.to_dict()["refine_steps"] == fitted.refine_steps
    one = fit(tiny_gemma, task.train, RecallConfig.quick(refine_grid=(1,)))
    assert one.refine_steps == 1 and one.alpha == fitted.alpha


def _written(with_tail: bool = True):
    from fmi.memory.write import Written

    g = torch.Generator().manual_seed(2)
    entries = [
        SimpleNamespace(target=1, answer=(1, 4, 2)),
        SimpleNamespace(target=3, answer=(3,)),
        SimpleNamespace(target=0, answer=(0, 5)),
    ]
    w_u = torch.randn(6, 7, generator=g)
    h, tail_h = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    later = torch.tensor([4, 2, 5])  # the answers' later tokens, entry by entry
    written = Written(
        entries=entries,
        values=correction_values(w_u, h @ w_u, torch.tensor([1, 3, 0])),
        symbol_keys=torch.zeros(3, 6),
        token_keys=torch.zeros(0, 6),
        token_owner=torch.zeros(0, dtype=torch.long),
        token_role=torch.zeros(0, dtype=torch.long),
        answer_states=h,
        answer_entropy=torch.zeros(3),
        tail_values=correction_values(w_u, tail_h @ w_u, later) if with_tail else None,
        tail_owner=torch.tensor([0, 0, 2]) if with_tail else None,
        tail_states=tail_h if with_tail else None,
    )
    return written, w_u, later


def test_refine_written_refines_every_value_through_the_linear_unembedding(monkeypatch):
    from fmi.core.sites import UNEMBED_IN
    from fmi.memory import values
    from fmi.memory.refine import refine_written

    written, w_u, later = _written()
    b_u = torch.zeros(7)
    seen = {}

    def unembedding(bridge, linear_only=False):
        seen["bridge"], seen["linear_only"] = bridge, linear_only
        return w_u, b_u

    monkeypatch.setattr(values, "unembedding", unembedding)
    model = SimpleNamespace(bridge="the bridge")
    assert refine_written(model, written, UNEMBED_IN, 2.0, 1) is written  # one step: unchanged
    got = refine_written(model, written, UNEMBED_IN, 2.0, 4)
    assert seen == {"bridge": "the bridge", "linear_only": True}
    first = torch.tensor([1, 3, 0])
    want = refined_values(written.answer_states, written.values, w_u, b_u, first, 2.0, 4)
    assert torch.equal(got.values, want)
    assert torch.allclose(2.0 * got.values, _naive(written.answer_states, w_u, b_u, first, 2.0, 4))
    tail = _naive(written.tail_states, w_u, b_u, later, 2.0, 4) / 2.0
    assert torch.allclose(got.tail_values, tail, atol=1e-5)
    assert got.entries is written.entries and torch.equal(got.tail_owner, written.tail_owner)
    assert not torch.equal(got.values, written.values)

    bare, _, _ = _written(with_tail=False)
    got = refine_written(model, bare, UNEMBED_IN, 2.0, 4)
    assert got.tail_values is None and not torch.equal(got.values, bare.values)


def test_refine_written_refuses_a_site_before_the_unembedding():
    from fmi.errors import ConfigError
    from fmi.memory.refine import refine_written

    written, _, _ = _written()
    want = (
        "refined values need injection at 'ln_final.hook_out', not 'blocks.1.hook_resid_pre'; "
        "use refine_steps=(1,)"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(want)}$"):
        refine_written(None, written, "blocks.1.hook_resid_pre", 2.0, 3)


def test_refined_values_edge_cases():
    g = torch.Generator().manual_seed(3)
    h, w_u, b_u = torch.randn(1, 4, generator=g), torch.randn(4, 5, generator=g), torch.zeros(5)
    t = torch.tensor([2])
    seed = correction_values(w_u, h @ w_u, t)
    one_row = refined_values(h, seed, w_u, b_u, t, 1.5, 3)  # a single row is refined too
    assert torch.allclose(1.5 * one_row, _naive(h, w_u, b_u, t, 1.5, 3), atol=1e-5)
    empty = torch.zeros(0, 4)
    assert refined_values(empty, empty, w_u, b_u, t[:0], 1.5, 3) is empty
    with pytest.raises(ValueError, match="^refinement needs at least one step, got 0$"):
        refined_values(h, seed, w_u, b_u, t, 1.5, 0)


def test_refine_seconds_are_elapsed_times():
    h, w_u, b_u = torch.zeros(2, 3), torch.eye(3), torch.zeros(3)
    _, seconds = refine(h, w_u, b_u, torch.tensor([0, 1]), 1.0, [1, 2])
    assert set(seconds) == {1, 2} and 0 <= seconds[1] <= seconds[2] < 60


def test_refine_written_edge_cases(monkeypatch):
    from dataclasses import replace

    from fmi.core.sites import UNEMBED_IN
    from fmi.memory import values
    from fmi.memory.refine import refine_written

    written, w_u, _ = _written()
    unembed = (w_u, torch.zeros(7))
    monkeypatch.setattr(values, "unembedding", lambda bridge, linear_only=False: unembed)
    model = SimpleNamespace(bridge=None)
    # tail values without the states they came from: left as they are
    no_states = replace(written, tail_states=None)
    assert refine_written(model, no_states, UNEMBED_IN, 2.0, 3).tail_values is written.tail_values
    # states without tail values: nothing to refine
    no_tail = replace(written, tail_values=None)
    assert refine_written(model, no_tail, UNEMBED_IN, 2.0, 3).tail_values is None
    # no later answer tokens: an empty tail stays the same empty tail, not None
    entries = [SimpleNamespace(target=e.target, answer=(e.target,)) for e in written.entries]
    empty = torch.zeros(0, 6)
    one_token = replace(written, entries=entries, tail_values=empty, tail_states=empty)
    assert refine_written(model, one_token, UNEMBED_IN, 2.0, 3).tail_values is empty
    # an empty memory stays empty
    empty = replace(written, entries=[], values=torch.zeros(0, 6), answer_states=torch.zeros(0, 6))
    got = refine_written(
        model, replace(empty, tail_values=None, tail_states=None), UNEMBED_IN, 2.0, 3
    )
    assert got.values.shape == (0, 6)
