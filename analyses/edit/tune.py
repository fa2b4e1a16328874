"""Setting every method up on the training part, each within a budget its entry records.

One training group (the first ``tune_edits`` training edits in seed-0 order, held at once, with
the first 60 training generic prompts) is the tuning set, the same for every tuned method
(equal tuning: the same edits, the same number of them, the same rule). A method with a grid
tries each setting on it and keeps the best by the mean of efficacy, generalization and
specificity among settings whose ``unrelated_changed`` is at most ``max_unrelated_changed``
(none within: the least changed); ties go to the earlier setting. Nothing here sees the
evaluation part.

- ``fast_memory``: :meth:`fmi.FastMemory.fit` (built-in recall training split), then the learned
  dual key's weights and the thresholds fitted on the tuning group, and the relation key's
  weights and threshold on the whole training part (:func:`analyses.edit.fast.calibrated`,
  :func:`analyses.edit.fast.relation_fitted`), read in ``relation_key``; alpha over
  ``ALPHA_MULTIPLES`` by the rule. ``dual_key_learned`` (the editing rule before the relation
  key) and ``dual_key`` (the recall rule, symbol x context): the same memory read by those
  rules, each with its own threshold.
- ``grace``: the layer (two-thirds and five-sixths of the depth) x ``eps_init`` over
  ``GRACE_EPS_MULTIPLES`` of the layer's median nearest-key distance on the training rewrites;
  GRACE's published iteration budget, learning rate, replacement and value start otherwise.
- ``lora``: (learning rate, steps per edit, retention KL weight) over ``LORA_GRID``, from
  conservative (1e-5, 5 steps) to aggressive (3e-2).
- ``rome``: (layer, clamp) over the paper's (a third of the depth, 4) and two conservative
  settings (clamp 0.75 at a third and at half the depth); ROME's published settings otherwise.
- ``memit``: (layers, update weight) over GPT-J's layers with its weight times 1 to 100, and
  GPT-2 XL's layers; batched. ``alphaedit``: (threshold, l2) as published, conservative (10x
  l2; 10x and 100x smaller thresholds), and the published numbers in units of the keys' mean
  eigenvalue. Both grids compute each edit's ``z`` once and share it. The key covariance of
  every layer a grid needs is built once (cached on disk) before its settings are scored.
- ``in_context`` and ``none``: nothing to tune.

>>> pick([{"efficacy": 1.0, "generalization": 0.5, "specificity": 0.5, "unrelated_changed": 0.3},
...       {"efficacy": 0.5, "generalization": 0.5, "specificity": 1.0, "unrelated_changed": 0.0}],
...      bound=0.1)
1
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from tqdm import tqdm

from analyses.edit.config import EditConfig
from analyses.edit.method import Cost, Held, Method
from analyses.edit.score import groups, probes, score_group, summary

TUNE_UNRELATED = 60
GRACE_EPS_MULTIPLES = (0.5, 1.0, 2.0)
LORA_GRID = (
    (1e-5, 5, 1.0),
    (1e-4, 5, 1.0),
    (3e-4, 10, 1.0),
    (1e-3, 10, 1.0),
    (1e-2, 10, 1.0),
    (3e-2, 5, 1.0),
)
"""(learning rate, Adam steps per edit, retention KL weight): from very conservative (1e-5,
5 steps: 1e-4 with 5 steps already changed half the tuning group's generic prompts on
Gemma-3-270M) to as aggressive as the earlier grid (the last two)."""


def _objective(s: dict[str, Any]) -> float:
    parts = [s.get(k) for k in ("efficacy", "generalization", "specificity")]
    return sum(p for p in parts if p is not None) / 3


def pick(summaries: Sequence[dict[str, Any]], bound: float) -> int:
    """The index of the setting to keep (see the module)."""
    changed = [s.get("unrelated_changed") or 0.0 for s in summaries]
    within = [i for i, c in enumerate(changed) if c <= bound]
    if not within:
        least = min(changed)
        within = [i for i, c in enumerate(changed) if c == least]
    return max(within, key=lambda i: (_objective(summaries[i]), -i))


class TuneSet:
    """The tuning group, its probes and the unedited model's outputs on them."""

    def __init__(self, model, data, cfg: EditConfig, steps: int) -> None:
        size = min(cfg.tune_edits, len(data.train))
        self.group = groups(data.train, size, size, data.unrelated_train[:TUNE_UNRELATED], 0)[0]
        self.probes = probes(model.tokenizer, self.group)
        self.steps, self.batch = steps, cfg.batch_size
        _, self.base = score_group(
            model, Held(), self.probes, None, max_new_tokens=steps, batch_size=self.batch
        )

    def score(self, model, method: Method) -> dict[str, Any]:
        cost = Cost()
        with method.edited(model, self.group.edits, cost) as held:
            got, _ = score_group(  # the rule reads greedy rates only: no teacher forcing
                model,
                held,
                self.probes,
                self.base,
                max_new_tokens=self.steps,
                batch_size=self.batch,
                probabilities=False,
            )
        out = {k: v for k, v in summary(got).items() if not k.endswith(("_ci", "_n"))}
        out["seconds_per_edit"] = cost.seconds / len(self.group.edits)
        return out


def _grid(
    model, tune: TuneSet, candidates: list[Method], cfg: EditConfig, progress: bool = False
) -> tuple[Method, dict]:
    t0 = time.perf_counter()
    tried = [
        tune.score(model, m)
        for m in tqdm(candidates, desc="edit: tuning grid", disable=not progress, leave=False)
    ]
    best = pick(tried, cfg.max_unrelated_changed)
    return candidates[best], {
        "grid": [
            {"settings": m.settings(), "train": s} for m, s in zip(candidates, tried, strict=True)
        ],
        "chosen": best,
        "rule": "best mean(efficacy, generalization, specificity) with unrelated_changed <= "
        f"{cfg.max_unrelated_changed} on {len(tune.group.edits)} training edits held at once",
        "budget": f"{len(candidates)} settings x {len(tune.group.edits)} training edits",
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _fast(model, data, cfg: EditConfig, tune: TuneSet, progress: bool = False):
    """The memory fitted on the built-in recall split, its key weights and thresholds fitted
    on the tuning group (the same edits and generic prompts every baseline tunes on), and
    alpha chosen from ``ALPHA_MULTIPLES`` by the shared rule."""
    from analyses.edit.fast import ALPHA_MULTIPLES, FastEdit, calibrated
    from fmi.experiments.config import RecallConfig
    from fmi.memory.store import FastMemory

    t0 = time.perf_counter()
    recall = (
        RecallConfig.quick() if model.name.startswith("tiny") else RecallConfig(model=model.name)
    )
    fitted = FastMemory.fit(model, recall)
    edits, unrelated = list(tune.group.edits), list(tune.group.unrelated)
    memory, info = calibrated(
        fitted, model, edits, unrelated, choose_alpha=False, relation_train=list(data.train)
    )
    fit_seconds = time.perf_counter() - t0
    grid: list[Method] = [
        FastEdit(replace(memory, alpha=fitted.alpha * m), {**info, "alpha_multiple": m})
        for m in ALPHA_MULTIPLES
    ]
    method, record = _grid(model, tune, grid, cfg, progress)
    record["fit"] = (
        "FastMemory.fit on the built-in recall training split; then the dual key's weights "
        f"and thresholds on the {len(edits)} tuning edits (rewrites and paraphrases positive, "
        f"neighbours and {len(unrelated)} generic prompts negative); the relation key's on "
        f"the {len(data.train)} training edits ({info.get('relation_fit', '')}); alpha by the grid"
    )
    record["fit_seconds"] = round(fit_seconds, 1)
    return method, record


FAST_RULES = ("fast_memory", "dual_key_learned", "dual_key")
"""``fast_memory`` reads by its own mode (``relation_key``); the others are its older rules."""


def _grace(model, data, cfg: EditConfig, tune: TuneSet, progress: bool = False):
    """GRACE at two layers x ``GRACE_EPS_MULTIPLES`` of each layer's median nearest-key
    distance (the training rewrites' keys); the settings share one memo of trained values, so
    each edit's value is trained once per layer (a new code's value does not depend on
    ``eps_init``)."""
    from analyses.compare.grace import last_states
    from analyses.edit.grace import GraceEdit, sites

    n = int(model.bridge.cfg.n_layers)
    layers = sorted({min(n - 1, (2 * n) // 3), min(n - 1, (5 * n) // 6)})
    memo: dict = {}
    grid: list[GraceEdit] = []
    scales: dict[str, float] = {}
    for layer in layers:
        key_site = sites(layer, "mlp")[0]
        keys = last_states(model, [c.rewrite for c in data.train], key_site, cfg.batch_size)
        inf = torch.full((len(keys),), float("inf"), device=keys.device)
        dist = torch.cdist(keys.float(), keys.float()) + torch.diag(inf)
        scales[key_site] = scale = float(dist.min(dim=1).values.median())
        grid += [GraceEdit(layer, round(m * scale, 4), memo=memo) for m in GRACE_EPS_MULTIPLES]
    candidates: list[Method] = list(grid)
    method, info = _grid(model, tune, candidates, cfg, progress)
    assert isinstance(method, GraceEdit)
    for row, tried in zip(info["grid"], grid, strict=True):
        steps = tried.steps_taken or [0]
        row["steps_taken"] = {
            "mean": sum(steps) / len(steps),
            "max": max(steps),
            "at_budget": sum(s >= tried.n_iter for s in steps),
        }
    info["eps_scale"] = {"median_nearest_key_distance": scales, "multiples": GRACE_EPS_MULTIPLES}
    info["fixed"] = (
        f"GRACE's published budget: up to n_iter {method.n_iter} Adam steps per edit at edit_lr "
        f"{method.lr}, stopping once the edit holds; cold values, replace_last, the MLP down "
        "projection; the layer and eps_init tuned"
    )
    info["budget"] += f"; up to {method.n_iter} steps per edit"
    return replace(method, memo=None), info


def _lora(model, data, cfg: EditConfig, tune: TuneSet, progress: bool = False):
    """LoRA over ``LORA_GRID`` (learning rate, steps per edit, retention KL weight), the KL on
    8 training generic prompts outside the tuning group."""
    from analyses.edit.lora import LoraEdit

    retention = tuple(data.unrelated_train[TUNE_UNRELATED : TUNE_UNRELATED + 8])
    grid: list[Method] = [
        LoraEdit(lr=lr, steps=steps, retention_weight=kl, retention_texts=retention)
        for lr, steps, kl in LORA_GRID
    ]
    method, info = _grid(model, tune, grid, cfg, progress)
    info["budget"] += f"; {sum(steps for _, steps, _ in LORA_GRID)} steps per edit over the grid"
    return method, info


def _rome(model, data, cfg: EditConfig, tune: TuneSet, progress: bool = False):
    """ROME with the paper's settings (GPT-2 XL's, at a third of the depth like its layer 17
    of 48), then two conservative ones: MEMIT's clamp 0.75 at the same layer and at half the
    depth. C from 100,000 tokens (2,000 on the tiny random models), built once for the grid."""
    from analyses.edit.rome.config import RomeConfig
    from analyses.edit.rome.covariance import warm_up
    from analyses.edit.rome.method import Rome

    n, base = int(model.bridge.cfg.n_layers), RomeConfig()
    tokens = 2000 if str(model.name).startswith("tiny") else base.cov_samples
    settings = [(n // 3, base.clamp), (n // 3, 0.75), (n // 2, 0.75)]
    covariance = warm_up(model, [layer for layer, _ in settings], tokens, base.seed)
    grid: list[Method] = [
        Rome(RomeConfig(layer=layer, clamp=clamp, cov_samples=tokens)) for layer, clamp in settings
    ]
    method, info = _grid(model, tune, grid, cfg, progress)
    info["budget"] += (
        f"; v*: up to {base.steps} steps on {base.context_prefixes + 1} prompts per edit; C: "
        f"{tokens} tokens per layer, once per model (cached on disk, not charged)"
    )
    info["fixed"] = "ROME's published GPT-2 XL settings except (layer, clamp)"
    info["grid_settings"] = [{"layer": layer, "clamp": clamp} for layer, clamp in settings]
    info["covariance"] = covariance
    return method, info


def _memit(model, data, cfg: EditConfig, tune: TuneSet, progress: bool = False):
    """MEMIT batched (every tuning edit in one batch) over
    :func:`analyses.edit.memit.config.memit_grid`: GPT-J's layers with a ladder of update
    weights from the published one (scaled to the keys' width) to 100x it (conservative), and
    GPT-2 XL's layers. The settings share their ``z`` (one per edit, computed once)."""
    from analyses.edit.memit.config import MemitConfig, memit_grid
    from analyses.edit.memit.method import Memit
    from analyses.edit.rome.covariance import warm_up

    base = MemitConfig()
    tokens = 2000 if str(model.name).startswith("tiny") else base.cov_samples
    settings = memit_grid(model)
    covariance = warm_up(model, [x for layers, _ in settings for x in layers], tokens, base.seed)
    memo: dict = {}
    grid: list[Method] = [
        Memit(MemitConfig(layers=layers, mom2_update_weight=w, cov_samples=tokens), z_memo=memo)
        for layers, w in settings
    ]
    method, info = _grid(model, tune, grid, cfg, progress)
    info["budget"] += (
        f"; z: up to {base.steps} steps on {base.context_prefixes + 1} prompts per edit, one "
        f"batch; C: {tokens} tokens per layer, once per model (cached on disk, not charged)"
    )
    info["fixed"] = "MEMIT's published GPT-J settings except (layers, mom2_update_weight)"
    info["grid_settings"] = [
        {"layers": list(layers), "mom2_update_weight": w} for layers, w in settings
    ]
    info["covariance"] = covariance
    return method, info


def _alphaedit(model, data, cfg: EditConfig, tune: TuneSet, progress: bool = False):
    """AlphaEdit at GPT-J's layers, in batches of 100, over
    :data:`analyses.edit.memit.config.ALPHAEDIT_SETTINGS` (the published threshold and l2,
    conservative ones, and the published numbers key-scaled); the settings share their ``z``."""
    from analyses.edit.memit.config import ALPHAEDIT_SETTINGS, AlphaEditConfig
    from analyses.edit.memit.method import AlphaEdit
    from analyses.edit.rome.covariance import warm_up

    base = AlphaEditConfig()
    tokens = 2000 if str(model.name).startswith("tiny") else base.cov_samples
    covariance = warm_up(model, base.resolved_layers(model), tokens, base.seed)
    memo: dict = {}
    grid: list[Method] = [
        AlphaEdit(
            AlphaEditConfig(key_scaled=scaled, nullspace_threshold=t, l2=l2, cov_samples=tokens),
            z_memo=memo,
        )
        for scaled, t, l2 in ALPHAEDIT_SETTINGS
    ]
    method, info = _grid(model, tune, grid, cfg, progress)
    info["budget"] += (
        f"; z: up to {base.steps} steps on {base.context_prefixes + 1} prompts per edit, "
        f"batches of {base.batch_size}; C and P: {tokens} tokens per layer, once per model"
    )
    info["fixed"] = "AlphaEdit's published GPT-J settings except the null-space threshold's scale"
    info["grid_settings"] = [
        {"key_scaled": scaled, "nullspace_threshold": t, "l2": l2}
        for scaled, t, l2 in ALPHAEDIT_SETTINGS
    ]
    info["covariance"] = covariance
    return method, info


TUNED = {
    "grace": _grace,
    "lora": _lora,
    "rome": _rome,
    "memit": _memit,
    "alphaedit": _alphaedit,
}
"""The methods with a grid: name -> its set-up on the shared tuning group."""


def set_up(
    model,
    cfg: EditConfig,
    data,
    steps: int,
    announce: Callable[[str], None],
    progress: bool = False,
) -> tuple[dict[str, Method], dict[str, dict[str, Any]]]:
    """Every method of ``cfg.methods``, set up on the training part, and its tuning record
    (``progress``: bars of the methods and of each tuning grid, on stderr)."""
    from analyses.edit.methods import InContext, NoEdit

    methods: dict[str, Method] = {}
    tuning: dict[str, dict[str, Any]] = {}
    tune: TuneSet | None = None
    shared: dict[str, Any] = {}
    bar = tqdm(cfg.methods, desc="edit: set up", disable=not progress, leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        if name in TUNED and tune is None:
            tune = TuneSet(model, data, cfg, steps)
        if name == "none":
            methods[name], tuning[name] = NoEdit(), {"budget": "nothing to tune"}
        elif name == "in_context":
            methods[name] = InContext(cfg.in_context_tokens)
            tuning[name] = {"budget": "nothing to tune"}
        elif name in FAST_RULES:
            if "fast" not in shared:
                if tune is None:
                    tune = TuneSet(model, data, cfg, steps)
                shared["fast"] = _fast(model, data, cfg, tune, progress)
            fast, record = shared["fast"]
            methods[name] = replace(fast, name=name, mode="" if name == "fast_memory" else name)
            tuning[name] = record
        else:
            assert tune is not None
            methods[name], tuning[name] = TUNED[name](model, data, cfg, tune, progress)
        announce(f"fmi edit: {name} set up in {time.perf_counter() - t0:.0f} s")
    return methods, tuning
