"""Setting every method up on the training part, each within a budget its entry records.

One training group (the first ``tune_edits`` training edits in seed-0 order, held at once, with
the first 60 training generic prompts) is the tuning set, the same for every tuned method
(equal tuning: the same edits, the same number of them, the same rule). A method with a grid
tries each setting on it and keeps the best by the mean of efficacy, generalization and
specificity among settings whose ``unrelated_changed`` is at most ``max_unrelated_changed``
(none within: the least changed); ties go to the earlier setting. Nothing here sees the
evaluation part.

- ``fast_memory``: :meth:`fmi.FastMemory.fit` (built-in recall training split), then the learned
  dual key's weights and the thresholds fitted on the tuning group
  (:func:`analyses.edit.fast.calibrated`), read in ``dual_key_learned``; alpha over
  ``ALPHA_MULTIPLES`` by the rule. ``dual_key``: the same memory read by the recall default's
  rule (symbol x context) with its own threshold.
- ``grace``: ``eps_init`` over 4 multiples of the training keys' median nearest-key distance.
- ``lora``: (learning rate, steps per edit) over 3 pairs.
- ``rome``: the edited layer over a sixth, a third and a half of the depth; ROME's published
  steps, learning rate, KL weight and clamp.
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
GRACE_EPS_MULTIPLES = (0.25, 0.5, 1.0, 2.0)
LORA_GRID = ((1e-3, 10), (1e-2, 10), (3e-2, 5))


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
            got, _ = score_group(
                model,
                held,
                self.probes,
                self.base,
                max_new_tokens=self.steps,
                batch_size=self.batch,
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
    memory, info = calibrated(fitted, model, edits, unrelated, choose_alpha=False)
    fit_seconds = time.perf_counter() - t0
    grid: list[Method] = [
        FastEdit(replace(memory, alpha=fitted.alpha * m), {**info, "alpha_multiple": m})
        for m in ALPHA_MULTIPLES
    ]
    method, record = _grid(model, tune, grid, cfg, progress)
    record["fit"] = (
        "FastMemory.fit on the built-in recall training split; then the dual key's weights "
        f"and thresholds on the {len(edits)} tuning edits (rewrites and paraphrases positive, "
        f"neighbours and {len(unrelated)} generic prompts negative); alpha by the grid"
    )
    record["fit_seconds"] = round(fit_seconds, 1)
    return method, record


def _grace(model, data, cfg: EditConfig, tune: TuneSet, progress: bool = False):
    from analyses.compare.grace import last_states
    from analyses.edit.grace import GraceEdit

    layer = (2 * int(model.bridge.cfg.n_layers)) // 3
    probe = GraceEdit(layer, 1.0)
    keys = last_states(model, [c.rewrite for c in data.train], probe.site, cfg.batch_size)
    inf = torch.full((len(keys),), float("inf"), device=keys.device)
    dist = torch.cdist(keys, keys) + torch.diag(inf)
    scale = float(dist.min(dim=1).values.median())
    grid: list[Method] = [GraceEdit(layer, round(m * scale, 4)) for m in GRACE_EPS_MULTIPLES]
    method, info = _grid(model, tune, grid, cfg, progress)
    info["eps_scale"] = {"median_nearest_key_distance": scale, "multiples": GRACE_EPS_MULTIPLES}
    return method, info


def _lora(model, data, cfg: EditConfig, tune: TuneSet, progress: bool = False):
    from analyses.edit.lora import LoraEdit

    retention = tuple(data.unrelated_train[TUNE_UNRELATED : TUNE_UNRELATED + 8])
    grid: list[Method] = [
        LoraEdit(lr=lr, steps=steps, retention_texts=retention) for lr, steps in LORA_GRID
    ]
    return _grid(model, tune, grid, cfg, progress)


def _rome(model, data, cfg: EditConfig, tune: TuneSet, progress: bool = False):
    from analyses.edit.rome.config import RomeConfig
    from analyses.edit.rome.method import Rome

    n = int(model.bridge.cfg.n_layers)
    texts: dict[str, list[str]] = {}
    layers = sorted({max(0, n // 6), n // 3, n // 2})
    grid: list[Method] = [Rome(RomeConfig(layer=layer), texts) for layer in layers]
    method, info = _grid(model, tune, grid, cfg, progress)
    info["fixed"] = "ROME's published steps, lr, KL weight and clamp; the layer is tuned"
    return method, info


def _memit(model, data, cfg: EditConfig, tune: TuneSet, progress: bool = False):
    raise NotImplementedError("memit: being written")


def _alphaedit(model, data, cfg: EditConfig, tune: TuneSet, progress: bool = False):
    raise NotImplementedError("alphaedit: being written")


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
        elif name in ("fast_memory", "dual_key"):
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
