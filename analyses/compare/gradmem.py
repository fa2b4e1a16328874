"""Gradient-written memory (GradMem-style): a vector optimised by backprop through the frozen
model at the write prompt, stored and injected at the same site when the binding is read.

The site and the step size are tuned on training symbols (:func:`tune`, a site x step size x
steps sweep with oracle retrieval, like steering's). Per binding, ``delta`` starts at zero at a
residual site (``blocks.{L}.hook_resid_post``, answer position) and takes ``k <= 5``
normalized gradient steps on the write prompt's cross-entropy of the label, each of length
``lr`` times that prompt's residual norm there. Gradients flow through every block above ``L``
and the unembedding into ``delta`` alone: the model's parameters are frozen and never receive a
gradient (tests check they stay bit-identical). Reads use the memory's ``dual_key`` retrieval
and inject the retrieved binding's ``delta``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analyses.compare.rows import Cost, Row, inject, score
from fmi.core.forward import answer_only
from fmi.core.generate import greedy
from fmi.core.hooks import add_at_positions
from fmi.core.prompts import encode
from fmi.core.sites import resid
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import SplitRun
from fmi.memory.retrieve import Decision
from fmi.memory.write import write_prompt


def gradmem_site(n_layers: int, depth: float) -> str:
    """The residual site at ``depth`` (a fraction of the network) where vectors are written."""
    return resid(round(depth * (n_layers - 1)), "post")


def _capture(store: dict[str, Tensor]):
    def hook(act: Tensor, hook: object) -> Tensor:
        store["act"] = act.detach()
        return act

    return hook


def optimise(
    model,
    texts: list[str],
    targets: Int[Tensor, " n"],
    site: str,
    steps: int,
    lr: float,
    batch_size: int = 16,
) -> tuple[dict[int, Float[Tensor, "n d"]], dict[int, float]]:
    """The vector after each step 1..``steps`` for every text, and the seconds spent up to each
    step (left-padded batches: the answer position is the last column)."""
    bridge = model.bridge
    snapshots: dict[int, list[Tensor]] = {k: [] for k in range(1, steps + 1)}
    seconds = dict.fromkeys(range(1, steps + 1), 0.0)
    for start in range(0, len(texts), batch_size):
        began = time.perf_counter()
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        n, width = enc.tokens.shape
        pos = torch.full((n,), width - 1)
        y = targets[start : start + n].to(model.device)
        seen: dict[str, Tensor] = {}
        delta = torch.zeros(n, int(bridge.cfg.d_model), device=model.device)
        for k in range(1, steps + 1):
            delta = delta.detach().requires_grad_(True)
            hooks = [(site, add_at_positions(delta, pos))]
            if k == 1:  # delta is zero: the residual norm the step lengths are scaled by
                hooks.insert(0, (site, _capture(seen)))
            with torch.enable_grad(), bridge.hooks(fwd_hooks=hooks):
                keep = answer_only(enc.tokens)
                logits = bridge(enc.tokens, attention_mask=enc.mask, logits_to_keep=keep)
                loss = torch.nn.functional.cross_entropy(logits[:, -1].float(), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, delta)
            scale = seen["act"][:, -1].float().norm(dim=-1, keepdim=True)
            step = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            delta = (delta - lr * scale * step).detach()
            snapshots[k].append(delta.clone())
            seconds[k] += time.perf_counter() - began
    return {k: torch.cat(v) for k, v in snapshots.items()}, seconds


def tune(model, train_split, cfg: RecallConfig, ccfg) -> tuple[dict, list[dict]]:
    """Site x step size x steps chosen on training data, as steering's sweep is: vectors
    written for the first ``gradmem_tune_symbols`` training symbols' statements, each read back
    by its own training question (oracle retrieval), scored by the first greedy token. The best
    accuracy wins; ties go to fewer steps, then the smaller step, then the earlier site."""
    from fmi.experiments.queries import unique_bindings
    from fmi.memory.write import label_token

    symbols = list(dict.fromkeys(b.symbol for b in train_split.bindings))
    keep = set(symbols[: ccfg.gradmem_tune_symbols])
    entries = [b for b in unique_bindings(train_split.bindings) if b.symbol in keep]
    t = train_split.templates
    texts = [write_prompt(t, b)[0] for b in entries]
    reads = [t.prompt("read", b) for b in entries]
    targets = torch.tensor([label_token(model.tokenizer, t, b.label) for b in entries])
    n_layers = int(model.bridge.cfg.n_layers)
    curve = []
    for depth in ccfg.gradmem_depths:
        site = gradmem_site(n_layers, depth)
        for lr in ccfg.gradmem_lrs:
            vectors, _ = optimise(
                model, texts, targets, site, ccfg.gradmem_steps, lr, cfg.batch_size
            )
            for k, v in vectors.items():
                out = greedy(
                    model, reads, site=site, deltas=v, max_new_tokens=1, batch_size=cfg.batch_size
                )
                acc = float(
                    np.mean([o[0] == y for o, y in zip(out.tokens, targets.tolist(), strict=True)])
                )
                curve.append({"depth": depth, "site": site, "lr": lr, "steps": k, "read": acc})
    best = max(curve, key=lambda p: (p["read"], -p["steps"], -p["lr"], -p["depth"]))
    return best, curve


def gradmem_rows(
    model, run: SplitRun, cfg: RecallConfig, ccfg, dual: Decision, train_split=None
) -> tuple[list[Row], dict]:
    """Rows for 1..``gradmem_steps`` steps at the site and step size tuned on ``train_split``
    (:func:`tune`; without it, ``gradmem_depth`` and ``gradmem_lr``), read with ``dual``'s
    retrieval decisions."""
    began = time.perf_counter()
    if train_split is not None:
        best, curve = tune(model, train_split, cfg, ccfg)
        depth, lr = best["depth"], best["lr"]
    else:
        best, curve, depth, lr = {}, [], ccfg.gradmem_depth, ccfg.gradmem_lr
    tune_s = time.perf_counter() - began
    budget = tuning_budget(ccfg, len(curve))
    site = gradmem_site(int(model.bridge.cfg.n_layers), depth)
    templates = run.split.templates  # type: ignore[attr-defined]
    texts = [write_prompt(templates, e)[0] for e in run.entries]
    targets = torch.tensor([e.target for e in run.entries])
    vectors, seconds = optimise(model, texts, targets, site, ccfg.gradmem_steps, lr, cfg.batch_size)
    entry = dual.entry.clamp_min(0)
    tuning = {"tuning_budget": budget, "tuned_steps": best.get("steps"), "tuning_seconds": tune_s}
    rows = [
        gradmem_row(model, run, cfg, site, lr, k, vectors[k][entry], seconds[k], dual, tuning)
        for k in sorted(vectors)
    ]
    return rows, {
        "site": site,
        "lr": lr,
        "seconds": seconds,
        "forward_write_seconds": run.write_seconds,
        "tuning": {"best": best, "curve": curve, "budget": budget},
    }


def tuning_budget(ccfg, configurations: int) -> str:
    """The tuning budget as the rows state it (``configurations`` 0: nothing was tuned)."""
    if not configurations:
        return "none (fixed site and step size)"
    return (
        f"{configurations} configurations ({len(ccfg.gradmem_depths)} sites x "
        f"{len(ccfg.gradmem_lrs)} step sizes x {ccfg.gradmem_steps} steps) on "
        f"{ccfg.gradmem_tune_symbols} training symbols"
    )


def gradmem_row(
    model,
    run: SplitRun,
    cfg: RecallConfig,
    site: str,
    lr: float,
    k: int,
    deltas: Float[Tensor, "q d"],
    seconds: float,
    dual: Decision,
    tuning: dict,
) -> Row:
    """The row of the vectors after ``k`` steps (``deltas``: each query's retrieved one, written
    in ``seconds``), injected where ``dual`` retrieves; ``tuning`` ends its detail."""
    out = inject(model, run, cfg, site, deltas, dual.active)
    cost = Cost(
        1 + k,
        k,
        run.write_seconds + seconds,
        f"the key-writing forward, then {k} forward+backward step(s) through the blocks "
        f"above {site}",
    )
    ratio = seconds / max(run.write_seconds, 1e-9)
    return score(
        model,
        run,
        cfg,
        f"GradMem ({k} step{'s' if k > 1 else ''})",
        "gradient-written",
        out,
        cost,
        active=dual.active,
        detail={"site": site, "lr": lr, "steps": k, "seconds_vs_forward_write": ratio, **tuning},
    )
