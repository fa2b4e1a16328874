"""Tuning a LoRA adapter: a learning rate x steps grid read on training data, and its choice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jaxtyping import Int
from torch import Tensor

from analyses.capacity.lora.adapter import lora_outputs
from analyses.capacity.lora.config import LoraConfig
from analyses.capacity.lora.retention import Retention
from analyses.capacity.lora.train import train_lora


def choose(curve: list[dict[str, Any]], bound: float) -> dict[str, Any]:
    """The (lr, steps) point of a tuning ``curve`` to use: the best ``read`` among the points
    whose ``unrelated_changed`` is at most ``bound``; ties go to fewer steps, then the smaller
    learning rate. If no point is within the bound, the least ``unrelated_changed`` wins (ties:
    better read, fewer steps, smaller lr). Returns a copy with ``within_bound`` added.

    >>> curve = [
    ...     {"lr": 0.001, "steps": 10, "read": 0.5, "unrelated_changed": 0.0},
    ...     {"lr": 0.001, "steps": 20, "read": 0.9, "unrelated_changed": 0.0},
    ...     {"lr": 0.01, "steps": 10, "read": 0.9, "unrelated_changed": 0.05},
    ...     {"lr": 0.01, "steps": 20, "read": 1.0, "unrelated_changed": 0.2},
    ... ]
    >>> choose(curve, 0.05)  # 1.0 breaks the bound; 0.9 twice: fewer steps wins
    {'lr': 0.01, 'steps': 10, 'read': 0.9, 'unrelated_changed': 0.05, 'within_bound': True}
    >>> choose(curve, 0.0)["lr"], choose(curve, 0.0)["steps"]
    (0.001, 20)
    """
    if not curve:
        raise ValueError("choose needs at least one tuning point")
    inside = [p for p in curve if p["unrelated_changed"] <= bound]
    if inside:
        best = min(inside, key=lambda p: (-p["read"], p["steps"], p["lr"]))
    else:
        best = min(curve, key=lambda p: (p["unrelated_changed"], -p["read"], p["steps"], p["lr"]))
    return {**best, "within_bound": bool(inside)}


@dataclass(frozen=True)
class TuneSet:
    """Training data to choose (lr, steps) on: statements to train on with their answer tokens,
    the read questions of the same bindings, and unrelated prompts (none a retention prompt)
    with their adapter-free greedy outputs."""

    texts: list[str]
    targets: Int[Tensor, " n"]
    reads: list[str]
    unrelated: list[str]
    base_unrelated: list[tuple[int, ...]]


def tune_lora(
    model,
    data: TuneSet,
    rank: int,
    cfg: LoraConfig,
    retention: Retention | None,
    *,
    max_new_tokens: int = 3,
    batch_size: int = 16,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The tuning curve of one rank: one run of ``cfg.steps`` steps per learning rate, read at
    every step count of ``cfg.step_grid`` (snapshots). ``read``: the first greedy token of each
    read question is its binding's answer token; ``unrelated_changed``: the greedy output
    (``max_new_tokens``) of an unrelated prompt differs from the adapter-free one;
    ``train_loss``: the minibatch cross-entropy at that step, before its update. ``progress``: a
    bar of each run's steps on stderr."""
    curve = []
    for lr in cfg.lrs:
        run = train_lora(
            model,
            data.texts,
            data.targets,
            rank,
            cfg,
            lr=lr,
            steps=cfg.steps,
            retention=retention,
            snapshots=cfg.step_grid,
            progress=progress,
        )
        for k in cfg.step_grid:
            adapter = run.snapshots[k]
            reads = lora_outputs(
                model, adapter, data.reads, max_new_tokens=1, batch_size=batch_size
            )
            got = [t[:1] == (y,) for t, y in zip(reads.tokens, data.targets.tolist(), strict=True)]
            out = lora_outputs(
                model, adapter, data.unrelated, max_new_tokens=max_new_tokens, batch_size=batch_size
            )
            changed = [a != b for a, b in zip(out.tokens, data.base_unrelated, strict=True)]
            curve.append(
                {
                    "lr": lr,
                    "steps": k,
                    "read": sum(got) / len(got),
                    "unrelated_changed": sum(changed) / len(changed),
                    "train_loss": round(run.losses[k - 1], 4),
                }
            )
    return curve
