"""The soft prefix's tuning: ``K`` x ``lr`` x steps chosen on the training split only."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from analyses.compare.soft_prefix.config import SoftPrefixConfig
from analyses.compare.soft_prefix.read import prefix_greedy
from analyses.compare.soft_prefix.write import optimise
from fmi.experiments.config import RecallConfig
from fmi.memory.write import write_prompt


def tune(model, train_split, cfg: RecallConfig, pcfg: SoftPrefixConfig) -> tuple[dict, list[dict]]:
    """``K`` x ``lr`` x steps on the training split: a prefix written from the statements of the
    first ``tune_symbols`` training symbols, read back by each binding's own training read
    question, scored by the first greedy token. The best accuracy wins; ties go to fewer steps,
    then fewer tokens, then the smaller learning rate."""
    from fmi.experiments.queries import unique_bindings
    from fmi.memory.write import label_token

    symbols = list(dict.fromkeys(b.symbol for b in train_split.bindings))
    keep = set(symbols[: pcfg.tune_symbols])
    entries = [b for b in unique_bindings(train_split.bindings) if b.symbol in keep]
    t = train_split.templates
    texts = [write_prompt(t, b)[0] for b in entries]
    reads = [t.prompt("read", b) for b in entries]
    targets = torch.tensor([label_token(model.tokenizer, t, b.label) for b in entries])
    curve = []
    for k in pcfg.sizes:
        for lr in pcfg.lrs:
            fit = optimise(
                model,
                texts,
                targets,
                k,
                pcfg.steps,
                lr,
                init=pcfg.init,
                seed=pcfg.seed,
                batch_size=cfg.batch_size,
            )
            for s in sorted(fit.snapshots):
                out = prefix_greedy(
                    model, reads, fit.snapshots[s], max_new_tokens=1, batch_size=cfg.batch_size
                )
                got = [o[:1] == (y,) for o, y in zip(out.tokens, targets.tolist(), strict=True)]
                curve.append(
                    {
                        "K": k,
                        "lr": lr,
                        "steps": s,
                        "read": sum(got) / len(got),
                        "loss": fit.losses[s],
                    }
                )
    return pick(curve), curve


def pick(curve: list[dict]) -> dict:
    """The best point: highest ``read``; ties to fewer steps, fewer tokens, smaller ``lr``.

    >>> pick([{"read": 0.5, "steps": 5, "K": 8, "lr": 0.1},
    ...       {"read": 0.5, "steps": 2, "K": 16, "lr": 0.3},
    ...       {"read": 0.25, "steps": 1, "K": 8, "lr": 0.1}])["steps"]
    2
    """
    return max(curve, key=lambda p: (p["read"], -p["steps"], -p["K"], -p["lr"]))


@dataclass(frozen=True)
class Tuning:
    """What the training split chose for the rows: the best point and the whole curve (empty
    without a training split), the learning rate per ``K``, the budget as the rows state it,
    and the seconds it took."""

    best: dict
    curve: list[dict]
    lr_by_size: dict[int, float]
    budget: str
    seconds: float

    @property
    def choice(self) -> dict | None:
        """The tuned ``K``, steps and ``lr``; None when nothing was tuned."""
        return {x: self.best[x] for x in ("K", "steps", "lr")} if self.best else None

    def is_tuned(self, k: int, steps: int) -> bool:
        return bool(self.best) and (self.best["K"], self.best["steps"]) == (k, steps)

    def to_dict(self) -> dict:
        return {
            "best": self.best,
            "lr_by_size": self.lr_by_size,
            "curve": self.curve,
            "budget": self.budget,
            "seconds": self.seconds,
        }


def tuned_rates(model, cfg: RecallConfig, pcfg: SoftPrefixConfig, train_split=None) -> Tuning:
    """The learning rate of each ``K``: the best on ``train_split`` (:func:`tune`), or
    ``pcfg.lr`` for every ``K`` without one (timed)."""
    began = time.perf_counter()
    if train_split is not None:
        best, curve = tune(model, train_split, cfg, pcfg)
        lr_of = {k: pick([p for p in curve if p["K"] == k])["lr"] for k in pcfg.sizes}
    else:
        best, curve, lr_of = {}, [], dict.fromkeys(pcfg.sizes, pcfg.lr)
    tune_s = time.perf_counter() - began
    n_sym = pcfg.tune_symbols
    budget = (
        f"{len(curve)} configurations ({len(pcfg.sizes)} sizes x {len(pcfg.lrs)} learning rates "
        f"x {len(pcfg.steps)} step counts; {len(pcfg.sizes) * len(pcfg.lrs)} optimisation runs) "
        f"on {n_sym} training symbols"
        if curve
        else "none (fixed learning rate)"
    )
    return Tuning(best, curve, lr_of, budget, tune_s)
