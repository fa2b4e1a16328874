"""Several seeds: the recall experiment run once per seed (fresh symbols, labels, prompts and a
fresh fit each), reported per seed and as the mean and range over seeds.

>>> summarize_seeds({"101": {"results": {"dual_key": {"same": {"read": 1.0}}}},
...                  "102": {"results": {"dual_key": {"same": {"read": 0.9}}}}}, ("read",))
{'dual_key': {'same': {'read': {'mean': 0.95, 'min': 0.9, 'max': 1.0, 'per_seed': [1.0, 0.9]}}}}
"""

from __future__ import annotations

import time
from dataclasses import replace

from fmi.errors import ConfigError
from fmi.experiments.config import RecallConfig

# how every several-seed table labels its cells: each seed's rate has its own interval above
RANGE_NOTE = "mean over seeds (lowest–highest seed: a range, not an interval)"

SUMMARIZED = ("write", "read", "plain", "unrelated", "unrelated_changed", "retrieval")


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"101,102,103"`` -> ``(101, 102, 103)``; one clear error for anything else."""
    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


def summarize_seeds(per_seed: dict[str, dict], metrics=SUMMARIZED) -> dict:
    """Per mode, split and metric: the mean, min and max over seeds and each seed's figure."""
    docs = list(per_seed.values())
    out: dict = {}
    for mode, splits in docs[0]["results"].items():
        for split in splits:
            for metric in metrics:
                got = [d["results"][mode][split].get(metric) for d in docs]
                if not all(isinstance(g, float) for g in got):
                    continue
                row = out.setdefault(mode, {}).setdefault(split, {})
                row[metric] = {
                    "mean": round(sum(got) / len(got), 10),
                    "min": min(got),
                    "max": max(got),
                    "per_seed": got,
                }
    return out


def run_seeds(model, cfg: RecallConfig, seeds: tuple[int, ...], *, progress: bool = True) -> dict:
    """:func:`fmi.experiments.recall.run_recall` once per seed, and the summary over seeds."""
    from fmi.experiments.recall import run_recall, task_for
    from fmi.reporting.provenance import header

    start = time.perf_counter()
    per_seed = {}
    for seed in seeds:
        c = replace(cfg, seed=seed)
        per_seed[str(seed)] = run_recall(model, task_for(c), c, progress=progress)
    return {
        "model": model.name,
        "seeds": list(seeds),
        "summary": summarize_seeds(per_seed),
        "per_seed": per_seed,
        "config": cfg.to_dict(),
        "header": header(model, cfg.to_dict(), wall_seconds=round(time.perf_counter() - start, 1)),
    }


def seeds_report(doc: dict) -> str:
    """What ``fmi recall --seeds`` prints: each seed's header and tables, then the summary."""
    from fmi.experiments.table import recall_report

    parts = [recall_report(one) for one in doc["per_seed"].values()]
    return "\n\n".join([*parts, seeds_table(doc).rstrip("\n")])


def seeds_table(doc: dict, metrics=("read", "plain", "unrelated_changed", "retrieval")) -> str:
    """One block per split, one row per mode: each metric's mean over seeds and its range."""
    summary = doc["summary"]
    modes = list(summary)
    width = max(18, *(len(m) + 1 for m in modes))
    lines = [f"seeds {', '.join(map(str, doc['seeds']))}: {RANGE_NOTE}"]
    head = f"{'mode':<{width}}" + "".join(f"{m:>24}" for m in metrics)
    for split in summary[modes[0]]:
        lines += [f"[{split}]", head]
        for mode in modes:
            row = summary[mode].get(split, {})
            cells = "".join(
                f"{row[m]['mean']:>10.3f} ({row[m]['min']:.3f}–{row[m]['max']:.3f})"
                if m in row
                else f"{'-':>24}"
                for m in metrics
            )
            lines.append(f"{mode:<{width}}{cells}")
        lines.append("")
    return "\n".join(lines)
