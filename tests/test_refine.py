"""Refined values: the closed-form steps against a naive loop, and calibration's choice."""

from __future__ import annotations

import torch

from fmi.refine import refine, refined_values
from fmi.values import correction_values


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
    from fmi.calibrate import fit
    from fmi.config import RecallConfig
    from fmi.tasks import builtin_task

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
