"""Measure candidate read rules for a key that knows the relation (issue: "A key that knows the
relation"), on a bundled editing set: each fitted on the training edits only, then read on the
evaluation edits held at once.

    python scripts/relation_key_study.py --model gemma-3-270m --json PATH

Prints, per candidate and relation layer, the rates of :func:`analyses.edit.relation_key.rates`
(rewrite and paraphrase fire right; neighbourhood, relation, look-alike and generic prompts fire
nothing wrong) and writes them, with the fitted weights and thresholds, to ``--json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CANDIDATES = (
    ("symbol*context", False),  # today's editing rule, today's negatives
    ("symbol*context", True),
    ("relation", True),
    ("subject*relation", False),
    ("subject*relation", True),
    ("symbol*relation", True),
    ("symbol*context,subject*relation", False),
    ("symbol*context,subject*relation", True),
)
"""(terms, contrastive) of every candidate."""


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--data", default="known-cf", help="a bundled editing set")
    p.add_argument("--token-layer", type=int, default=3, help="the memory's token site")
    p.add_argument("--subject-layer", type=int, default=8, help="the subject key's layer")
    p.add_argument("--relation-layers", default="4,6,8,10,12")
    p.add_argument("--spaces", default="raw,lda,metric", help="relation spaces to try")
    p.add_argument("--per-kind", type=int, default=3, help="negatives of each kind per edit")
    p.add_argument("--json", default=None)
    p.add_argument("--states", default=None, help="a file to keep the read states in (reused)")
    args = p.parse_args(argv)
    try:
        args.relation_layers = tuple(int(x) for x in args.relation_layers.split(","))
    except ValueError:
        p.exit(
            2,
            f"relation_key_study: --relation-layers must be integers, got "
            f"{args.relation_layers!r}\n",
        )
    if not set(args.spaces.split(",")) <= {"raw", "lda", "metric"}:
        p.exit(2, f"relation_key_study: --spaces are raw, lda, metric; got {args.spaces!r}\n")
    if args.per_kind < 1:
        p.exit(2, "relation_key_study: --per-kind must be >= 1\n")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    import torch

    from analyses.edit import relation_key as rk
    from analyses.edit.bundled.files import BUNDLED
    from fmi.models.registry import load_model
    from fmi.reporting.atomic import write_json
    from fmi.reporting.provenance import header

    if args.data not in BUNDLED:
        print(
            f"relation_key_study: --data must be one of {sorted(BUNDLED)}, got {args.data!r}",
            file=sys.stderr,
        )
        return 2
    torch.manual_seed(0)
    started = time.perf_counter()
    model = load_model(args.model)
    n = int(model.bridge.cfg.n_layers)
    bad = [
        x for x in (args.token_layer, args.subject_layer, *args.relation_layers) if not 0 <= x < n
    ]
    if bad:
        print(f"relation_key_study: layers {bad} are outside 0..{n - 1}", file=sys.stderr)
        return 2
    sites = rk.Sites(args.token_layer, args.subject_layer, args.relation_layers)
    parts = _parts(model, args, sites)
    rows, spread = _study(model, args, sites, parts)
    if args.json:
        cfg = {**{k: v for k, v in vars(args).items() if k != "json"}, "seed": 0}
        write_json(
            args.json,
            dict(
                header=header(model, cfg, seconds=round(time.perf_counter() - started, 1)),
                data=dict(
                    set=args.data,
                    counts={
                        k: {kind: p["kinds"].count(kind) for kind in sorted(set(p["kinds"]))}
                        for k, p in parts.items()
                    },
                    rule="fit on train (query, entry) pairs; rates on eval, every eval edit held",
                    candidates=rows,
                    relation_feature_own_entry_q10_q50_q90=spread,
                ),
            ),
        )
    return 0


def _parts(model, args: argparse.Namespace, sites) -> dict[str, dict[str, Any]]:
    """Per part (train, eval): its cases, queries, who states each query, and the read states
    of the queries and of the entries (from ``--states`` when it holds them, else read and kept
    there)."""
    import torch

    from analyses.edit import relation_key as rk
    from analyses.edit.bundled.files import load_bundled, load_unrelated

    train, evals = load_bundled(args.data)
    gen_train, gen_eval = load_unrelated()
    kept = Path(args.states) if args.states else None
    read = torch.load(kept, weights_only=False) if kept is not None and kept.exists() else {}
    parts = {}
    for name, cases, generic in (("train", train, gen_train), ("eval", evals, gen_eval)):
        qs = rk.queries(cases, generic, args.per_kind)
        key = (name, tuple(q.prompt for q in qs), tuple(sites.names()))
        if key not in read:
            read[key] = (
                rk.read_states(model, [q.prompt for q in qs], sites),
                rk.read_states(model, [c.rewrite for c in cases], sites),
            )
        parts[name] = dict(
            cases=cases,
            qs=qs,
            kinds=[q.kind for q in qs],
            stated=rk.stated_by(cases, qs),
            states=read[key][0],
            entries=read[key][1],
        )
        print(f"{name}: {len(cases)} edits, {len(qs)} queries", flush=True)
    if kept is not None:
        torch.save(read, kept)
    return parts


def _study(model, args: argparse.Namespace, sites, parts) -> tuple[list[dict], dict[str, dict]]:
    """Every candidate at every relation layer and space, fitted on train and rated on eval;
    and the relation feature's own-entry quantiles per layer and space."""
    from analyses.edit import relation_key as rk

    t, e = parts["train"], parts["eval"]
    stds = rk.standardizers(t["states"])
    positive = [i for i, q in enumerate(t["qs"]) if q.kind in rk.POSITIVE]
    labels = [t["cases"][t["qs"][i].case].relation for i in positive]
    pairs, owners, same = rk.metric_pairs(t["qs"])
    rows: list[dict] = []
    spread: dict[str, dict] = {}
    spaces = args.spaces.split(",")
    for layer, space_name in [(x, s) for x in args.relation_layers for s in spaces]:
        space = None
        if space_name == "lda":
            space = rk.relation_space(rk.last_states(t["states"], stds, layer)[positive], labels)
        if space_name == "metric":
            q = rk.last_states(t["states"], stds, layer)[pairs]
            space = rk.relation_metric(q, rk.last_states(t["entries"], stds, layer)[owners], same)
        feats = {
            k: rk.features(
                model, p["cases"], p["qs"], p["states"], stds, sites, layer, p["entries"], space
            )
            for k, p in parts.items()
        }
        spread[f"L{layer} {space_name}"] = {
            kind: rk.own_quantiles(feats["eval"], e["qs"], kind, "relation")
            for kind in ("paraphrase", "relation", "look_alike")
        }
        first = layer == args.relation_layers[0] and space_name == spaces[0]
        for spec, contrastive in CANDIDATES:
            if "relation" not in spec and not first:
                continue
            rule = rk.fit_rule(
                feats["train"], t["stated"], t["kinds"], rk.terms_of(spec), contrastive
            )
            got = rk.rates(rule, feats["eval"], e["stated"], e["kinds"])
            row = dict(
                terms=spec,
                contrastive=contrastive,
                relation_layer=layer if "relation" in spec else None,
                relation_space=space_name if "relation" in spec else None,
                weights=rule.weights,
                threshold=rule.threshold,
                eval=got,
                train=rk.rates(rule, feats["train"], t["stated"], t["kinds"]),
            )
            rows.append(row)
            shown = "  ".join(f"{k} {v[0]:.3f}" for k, v in got.items())
            print(
                f"{spec:34s} {'contrastive' if contrastive else 'plain':11s} "
                f"L{row['relation_layer']} {row['relation_space']}: {shown}",
                flush=True,
            )
    return rows, spread


if __name__ == "__main__":
    sys.exit(main())
