"""Write cost per edit, side by side in one run: the fast memory's batched write, its
one-at-a-time write, and ROME with its published settings, on the same known-cf edits.

    python scripts/edit_write_cost.py --model gemma-3-270m --rome-edits 3 \
        --json results/gemma-3-270m/edit-write-cost.json

The first ``--rome-edits`` evaluation edits (seed-0 order) are written by every way; the batched
write is also timed on ``--batched-edits`` edits. ROME's covariance (cached per model) is built
before the clock starts and is not charged, as in ``fmi edit``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-gemma")
    parser.add_argument("--rome-edits", type=int, default=3)
    parser.add_argument("--batched-edits", type=int, default=800)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.rome_edits < 1 or args.batched_edits < 1:
        print("--rome-edits and --batched-edits must be >= 1", file=sys.stderr)
        return 2

    import fmi
    from analyses.edit.bundled.files import load_bundled
    from analyses.edit.fast import write_edits
    from analyses.edit.method import Cost
    from analyses.edit.rome.config import RomeConfig
    from analyses.edit.rome.method import Rome
    from fmi.reporting.atomic import write_json
    from fmi.reporting.provenance import header

    torch.manual_seed(0)
    model = fmi.load_model(args.model)
    _, cases = load_bundled("known-cf")
    random.Random(0).shuffle(cases)
    some, many = cases[: args.rome_edits], cases[: args.batched_edits]
    quick = fmi.RecallConfig.quick() if model.name.startswith("tiny") else None
    memory = fmi.FastMemory.fit(model, quick)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    write_edits(memory, model, some[:1])  # warm-up: first-call allocations
    single = timed(lambda: write_edits(memory, model, some, batched=False)) / len(some)
    batched_few = timed(lambda: write_edits(memory, model, some)) / len(some)
    batched_many = timed(lambda: write_edits(memory, model, many)) / len(many)
    tokens = 2000 if model.name.startswith("tiny") else RomeConfig().cov_samples
    rome = Rome(RomeConfig(cov_samples=tokens))
    rome.covariance(model, RomeConfig().resolved_layer(model))  # built or loaded, not charged
    cost = Cost()
    with rome.edited(model, some, cost):
        pass
    rome_per_edit = cost.seconds / len(some)
    figures = {
        "fast_memory_single_s_per_edit": round(single, 4),
        "fast_memory_batched_s_per_edit": round(batched_few, 4),
        f"fast_memory_batched_s_per_edit_{len(many)}": round(batched_many, 4),
        "rome_s_per_edit": round(rome_per_edit, 4),
        "rome_forward_per_edit": cost.forward / len(some),
        "rome_backward_per_edit": cost.backward / len(some),
        "batched_over_rome": round(batched_many / rome_per_edit, 5),
        "single_over_rome": round(single / rome_per_edit, 5),
    }
    for name, value in figures.items():
        print(f"{name:40s} {value}")
    if args.json:
        doc = {
            "header": header(model, {"rome_edits": len(some), "batched_edits": len(many)}),
            "rome": rome.settings(),
            "figures": figures,
        }
        write_json(args.json, doc)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
