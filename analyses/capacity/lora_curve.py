"""The parametric baseline's curve: LoRA adapters trained on the same bindings, read the same way.

Each adapter (rank r, on a frozen base) is trained on the statements of the first N bindings,
exactly the text the fast memory writes from, to predict the label after ``means``. It is then
read with the prompts sampled for size N (the memory's own), so the two curves share every
prompt. ``write`` is memorization of the training statements; ``read`` is the question.

The learning rate and step count are tuned once per rank on training data only
(:func:`lora_training_data`): the built-in task's training split, whose symbols are the ones the
memory was fitted on and never a capacity word, its own read questions, and its unrelated
prompts (the training question split, disjoint by question from the evaluation prompts the rows
report). Every step also pays ``retention_weight`` x KL on training unrelated prompts
(:func:`analyses.capacity.lora.retention.retention_kl`); the tuning's unrelated check uses the
other training unrelated prompts.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from analyses.capacity.config import CapacityConfig
from analyses.capacity.lora.adapter import lora_outputs
from analyses.capacity.lora.config import LoraConfig
from analyses.capacity.lora.retention import Retention
from analyses.capacity.lora.train import answer_loss, train_lora
from analyses.capacity.lora.tune import TuneSet, choose, tune_lora
from analyses.capacity.measure import Bank, base_of
from analyses.capacity.power_law import PowerLaw, fit_power_law
from fmi.core.generate import greedy
from fmi.errors import ConfigError
from fmi.experiments.evaluate import Outputs, hits, summarize
from fmi.experiments.queries import QuerySet

RULE = (
    "best first-token read accuracy among (lr, steps) whose unrelated_changed <= "
    "max_unrelated_changed; ties: fewer steps, then smaller lr; none within the bound: least "
    "unrelated_changed"
)


def lora_training_data(
    model, train_split, cfg: LoraConfig
) -> tuple[list[str], list[str], list[str], torch.Tensor, list[str]]:
    """What the LoRA probe may tune and regularize on, all from ``train_split``: (retention
    prompts, held-out unrelated prompts, tuning statements, their answer tokens, their read
    questions).

    The training unrelated prompts are shuffled (seeded by ``cfg.seed``): the first
    ``retention_prompts`` are the retention set, the rest check the tuning's unrelated changes.
    The tuning bindings are the first ``tune_size`` distinct (context, symbol) bindings of the
    split (word by word, each in both contexts, as a capacity bank is), read with their own
    training read questions.
    """
    from fmi.experiments.queries import unique_bindings
    from fmi.memory.write import label_token

    unrelated = list(train_split.unrelated)
    random.Random(f"lora-retention:{cfg.seed}").shuffle(unrelated)
    if len(unrelated) <= cfg.retention_prompts:
        raise ConfigError(
            f"retention_prompts ({cfg.retention_prompts}) must be below the "
            f"{len(unrelated)} training unrelated prompts: the rest check the tuning"
        )
    pool = unique_bindings(train_split.bindings)
    if len(pool) < cfg.tune_size:
        raise ConfigError(f"tune_size ({cfg.tune_size}) exceeds the {len(pool)} training bindings")
    chosen = pool[: cfg.tune_size]
    t = train_split.templates
    statements = [t.prompt("write", b) for b in chosen]
    targets = torch.tensor([label_token(model.tokenizer, t, b.label) for b in chosen])
    reads = [t.prompt("read", b) for b in chosen]
    return (
        unrelated[: cfg.retention_prompts],
        unrelated[cfg.retention_prompts :],
        statements,
        targets,
        reads,
    )


def tuned_settings(
    model, train_split, cfg: CapacityConfig, announce=print, progress: bool = False
) -> tuple[Retention | None, dict[int, dict]]:
    """The retention set, and per rank the (lr, steps) to train with and how they were chosen:
    ``{"lr", "steps", "tuning_budget", "tuning"}`` (the tuning curve, the choice, the rule).
    ``progress``: bars of the tuning runs' steps on stderr."""
    lc = cfg.lora
    retain, held, statements, targets, reads = lora_training_data(model, train_split, lc)
    retention = Retention.build(model, retain, lc.batch_size) if lc.retention_weight > 0 else None
    if not lc.tuned:
        return retention, {rank: fixed_setting(lc) for rank in lc.ranks}
    base = greedy(
        model, held, site="", max_new_tokens=cfg.recall.max_new_tokens, batch_size=cfg.batch_size
    )
    data = TuneSet(statements, targets, reads, held, base.tokens)
    n_cfg = len(lc.lrs) * len(lc.step_grid)
    budget = (
        f"{n_cfg} configurations ({len(lc.lrs)} lrs x {len(lc.step_grid)} step counts; "
        f"{len(lc.lrs)} training runs of {lc.steps} steps, read at each step count) at "
        f"N={lc.tune_size} on training bindings"
    )
    out = {
        rank: tuned_setting(model, data, rank, cfg, retention, budget, announce, progress)
        for rank in lc.ranks
    }
    return retention, out


def fixed_setting(lc: LoraConfig) -> dict:
    """The setting of an untuned grid: its one learning rate and step count."""
    return {
        "lr": lc.lrs[0],
        "steps": lc.step_grid[0],
        "tuning_budget": "none: 1 configuration (fixed lr and steps), not tuned",
        "tuning": None,
    }


def tuned_setting(
    model,
    data: TuneSet,
    rank: int,
    cfg: CapacityConfig,
    retention: Retention | None,
    budget: str,
    announce=print,
    progress: bool = False,
) -> dict:
    """Rank ``rank``'s (lr, steps), chosen on ``data`` by :data:`RULE` (timed, announced)."""
    lc = cfg.lora
    start = time.perf_counter()
    curve = tune_lora(
        model,
        data,
        rank,
        lc,
        retention,
        max_new_tokens=cfg.recall.max_new_tokens,
        batch_size=cfg.batch_size,
        progress=progress,
    )
    best = choose(curve, lc.max_unrelated_changed)
    seconds = time.perf_counter() - start
    announce(
        f"fmi: LoRA r={rank} tuned on {lc.tune_size} training bindings: lr {best['lr']:g}, "
        f"{best['steps']} steps (read {best['read']:.3f}, unrelated changed "
        f"{best['unrelated_changed']:.3f}"
        f"{'' if best['within_bound'] else ', none within the bound'}; {seconds:.0f} s)"
    )
    return {
        "lr": best["lr"],
        "steps": best["steps"],
        "tuning_budget": budget,
        "tuning": {
            "size": lc.tune_size,
            "rule": RULE,
            "max_unrelated_changed": lc.max_unrelated_changed,
            "read_prompts": len(data.reads),
            "unrelated_prompts": len(data.unrelated),
            "chosen": best,
            "curve": curve,
            "seconds": round(seconds, 1),
        },
    }


@dataclass(frozen=True)
class SizeData:
    """What every rank's adapter at size ``n`` trains on and is read with: the first ``n``
    entries, their statements and answer tokens, and that size's sampled queries (``rows``
    into the bank's)."""

    n: int
    entries: list
    statements: list[str]
    targets: torch.Tensor
    rows: list[int]
    qs: QuerySet


def lora_rows(
    model,
    bank: Bank,
    bindings,
    templates,
    done: dict,
    cfg: CapacityConfig,
    announce=print,
    train_split=None,
    progress: bool = False,
) -> list[dict]:
    """One row per (size, rank): recall metrics with intervals, final training loss, seconds,
    the (lr, steps) tuned on training data with its budget and curve, and the retention
    settings. ``done`` holds the memory-free outputs (``curve_rows``), for
    ``unrelated_changed``. ``train_split``: the task's training split (default: rebuilt from
    ``cfg.recall``, as ``fmi capacity`` fits the memory on it). ``progress``: bars of the
    (size, rank) rows and of each training run's steps, on stderr."""
    if not cfg.lora_sizes:
        return []
    if train_split is None:
        from fmi.experiments.recall import task_for

        train_split = task_for(cfg.recall).train
    retention, settings = tuned_settings(model, train_split, cfg, announce, progress)
    out = []
    bar = tqdm(
        total=len(cfg.lora_sizes) * len(cfg.lora.ranks),
        desc="LoRA rows",
        disable=not progress,
        leave=False,
    )
    for n in cfg.lora_sizes:
        entries = bank.memory.entries[:n]
        size = SizeData(
            n,
            entries,
            [templates.prompt("write", b) for b in bindings[:n]],
            torch.tensor([e.target for e in entries]),
            bank.rows[n],
            bank.qs.subset(bank.rows[n]),
        )
        for rank in cfg.lora.ranks:
            bar.set_postfix_str(f"N={n} r={rank}")
            chosen = settings[rank]
            out.append(
                lora_row(model, bank, size, rank, chosen, retention, done, cfg, announce, progress)
            )
            bar.update()
    bar.close()
    return out


def lora_row(
    model,
    bank: Bank,
    size: SizeData,
    rank: int,
    chosen: dict,
    retention: Retention | None,
    done: dict,
    cfg: CapacityConfig,
    announce=print,
    progress: bool = False,
) -> dict:
    """The row of a rank-``rank`` adapter trained on ``size``'s statements at ``chosen``'s
    (lr, steps), read with its queries (announced; ``progress``: a bar of the steps)."""
    lc = cfg.lora
    start = time.perf_counter()
    run = train_lora(
        model,
        size.statements,
        size.targets,
        rank,
        lc,
        lr=chosen["lr"],
        steps=chosen["steps"],
        retention=retention,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    adapter = run.adapter
    gen = lora_outputs(
        model,
        adapter,
        size.qs.texts,
        max_new_tokens=cfg.recall.max_new_tokens,
        batch_size=cfg.batch_size,
        label_ids=bank.label_ids,
    )
    outputs = Outputs(gen.tokens, gen.label_pick)
    h = hits(model, size.qs, size.entries, bank.labels, outputs, base_of(done, size.rows))
    row = summarize(h, size.qs, cfg.recall)
    loss = answer_loss(model, size.statements, size.targets, adapter, cfg.batch_size)
    row.update(
        size=size.n,
        rank=rank,
        parameters=adapter.n_parameters,
        loss=loss,
        train_losses=[round(x, 4) for x in run.losses],
        seconds=round(seconds, 1),
        **chosen,
        retention=retention_info(lc, retention, run.retention),
    )
    announce(
        f"fmi: LoRA r={rank} N={size.n} (lr {chosen['lr']:g}, {chosen['steps']} steps): "
        f"write {row['write']:.3f} read {row['read']:.3f} loss {loss:.3f} "
        f"({seconds:.0f} s)"
    )
    return row


def retention_info(lc: LoraConfig, retention: Retention | None, kl: list[float]) -> dict:
    """How a row's adapter was held to the base: the term's weight and prompts, and the KL of
    each training step (``kl``, to 4 significant digits)."""
    return {
        "weight": lc.retention_weight,
        "prompts": retention.n_prompts if retention is not None else 0,
        "source": "training unrelated prompts (training question split)",
        "divergence": "KL(p_base || p_adapted), next token at the last position",
        "kl": [float(f"{x:.4g}") for x in kl],
    }


MEMORIZED = 0.01  # nats: below this an adapter has memorized its bindings; no law describes 0


def loss_law(rows: list[dict]) -> PowerLaw | str:
    """``loss = c · N^a · r^b`` over the LoRA rows that did not memorize their bindings (final
    loss above :data:`MEMORIZED`), or why it could not be fitted."""
    rows = [r for r in rows if r["loss"] > MEMORIZED]
    if not rows:
        return f"no LoRA row with loss above {MEMORIZED} nats"
    y = np.array([r["loss"] for r in rows])
    try:
        return fit_power_law(
            y,
            N=np.array([r["size"] for r in rows], float),
            r=np.array([r["rank"] for r in rows], float),
        )
    except ValueError as err:
        return str(err)
