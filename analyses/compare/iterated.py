"""Iterated value: the memory's value refined by gradient steps on the output cross-entropy.

At the unembedding's input (``ln_final.hook_out``) the write prompt's logits with an injected
vector ``delta`` are ``(h + delta) @ W_U + b_U``, so the gradient of the cross-entropy of target
``t`` with respect to ``delta`` has a closed form, and no backward pass through the transformer
is needed:

    delta_{k+1} = delta_k + alpha * (W_U[:, t] - W_U @ softmax((h + delta_k) @ W_U + b_U))

From ``delta_0 = 0`` the first step is ``alpha * v``, exactly what the memory injects (tested).
Later steps keep pushing until the target dominates; the refined vector is stored in place of
the seed's and read back with the same retrieval (``dual_key``).
"""

from __future__ import annotations

import torch

from analyses.compare.rows import Cost, Row, inject, score
from fmi.core.sites import UNEMBED_IN
from fmi.errors import ConfigError
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import SplitRun
from fmi.memory.refine import refine
from fmi.memory.retrieve import Decision
from fmi.memory.values import unembedding


def iterated_rows(
    model, run: SplitRun, cfg: RecallConfig, steps: list[int], dual: Decision
) -> list[Row]:
    """One row per number of steps, read with ``dual``'s retrieval decisions."""
    if run.memory.inject_site != UNEMBED_IN:
        raise ConfigError(
            f"the iterated value's closed form needs injection at {UNEMBED_IN!r}; this memory "
            f"injects at {run.memory.inject_site!r}"
        )
    w_u, b_u = unembedding(model.bridge)
    targets = torch.tensor([e.target for e in run.entries])
    refined, seconds = refine(run.written.answer_states, w_u, b_u, targets, run.memory.alpha, steps)
    rows = []
    entry = dual.entry.clamp_min(0)
    for k in sorted(refined):
        deltas = refined[k][entry]
        out = inject(model, run, cfg, run.memory.inject_site, deltas, dual.active)
        cost = Cost(
            1,
            0,
            run.write_seconds + seconds[k],
            f"one forward; {k} closed-form step(s) through the unembedding, no backward",
        )
        rows.append(
            score(
                model,
                run,
                cfg,
                f"iterated value ({k} step{'s' if k > 1 else ''})",
                "iterated value",
                out,
                cost,
                active=dual.active,
                detail={"steps": k, "mean_norm": float(refined[k].norm(dim=-1).mean())},
            )
        )
    return rows
