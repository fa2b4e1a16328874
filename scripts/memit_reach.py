"""How far a MEMIT write carries the last edited layer's residual towards its target ``z``,
with Gemma-3's post-MLP norm inverted exactly (fmi's way) and by the first-order preimage
``rms(y) (o + r) / (1 + w) - y`` (fmi's first port), side by side in one run on the same
edits, covariance and ``z``.

    python scripts/memit_reach.py --model gemma-3-270m --layers 5,6 --edits 3

For each edit and way: ``cos`` between the residual's move ``h1 - h0`` and ``z - h0`` at the
subject's last token, the share of ``|z - h0|`` it covers along that direction, and whether
``target_new``'s first token is then the greedy next token of the rewrite prompt. The
covariance is small (``--cov-tokens``, cached under ``--cache``): the write's direction, not
its specificity, is what is measured. Edits: the first ``--edits`` known-cf training edits
in seed-0 order (``--seed``), so no evaluation edit is looked at.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import torch

WAYS = ("exact", "first_order")


def first_order(norm: torch.nn.Module, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The first port's preimage: ``rms(y) (o + r) / (1 + w) - y``."""
    y64, r64 = y.double(), r.double()
    gain = 1.0 + norm.weight.detach().double()
    eps = float(getattr(norm, "eps", 1e-6))
    rms = (y64.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return rms * (y64 / rms * gain + r64) / gain - y64


def reach(h0: torch.Tensor, h1: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    """``(cos, share)`` of the move ``h1 - h0`` against the wanted move ``z - h0``.

    >>> reach(torch.zeros(2), torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0]))
    (1.0, 0.5)
    """
    move, want = (h1 - h0).double(), (z - h0).double()
    cos = float(torch.nn.functional.cosine_similarity(move, want, dim=0))
    return round(cos, 6), round(float(move @ want / want.norm().pow(2)), 6)


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--layers", default="5,6", help="consecutive edited layers, e.g. 2,3,4,5")
    p.add_argument("--edits", type=int, default=3)
    p.add_argument("--cov-tokens", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="covariance cache (default: a temp folder)")
    args = p.parse_args(argv)
    try:
        args.layers = tuple(int(x) for x in args.layers.split(","))
    except ValueError:
        p.exit(2, f"memit_reach: --layers must be comma-separated integers, got {args.layers!r}\n")
    if args.edits < 1 or args.cov_tokens < 1:
        p.exit(2, "memit_reach: --edits and --cov-tokens must be >= 1\n")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    from analyses.edit.bundled.files import load_bundled
    from analyses.edit.memit import method
    from analyses.edit.memit.config import MemitConfig
    from analyses.edit.memit.states import subject_residuals
    from analyses.edit.method import Cost
    from analyses.edit.probability import target_ids
    from fmi.core.prompts import encode
    from fmi.errors import ConfigError
    from fmi.models.registry import load_model

    train, _ = load_bundled("known-cf")
    random.Random(args.seed).shuffle(train)
    cases = train[: args.edits]
    model = load_model(args.model)
    try:
        cfg = MemitConfig(layers=args.layers, cov_samples=args.cov_tokens, seed=args.seed)
        cfg.resolved_layers(model)
    except ConfigError as err:
        print(f"memit_reach: {err}", file=sys.stderr)
        return 2
    zs: dict[str, torch.Tensor] = {}
    real = method.target_value

    def cached_z(model_, site, layer, case, cfg_, cost, prefixes):  # one z per edit, both ways
        if case.case_id not in zs:
            zs[case.case_id] = real(model_, site, layer, case, cfg_, cost, prefixes)
        return zs[case.case_id]

    method.target_value = cached_z
    exact = method.through_post_norm
    cache = args.cache or tempfile.mkdtemp()
    last = args.layers[-1]
    tok = model.tokenizer
    rows: list[dict[str, Any]] = []
    try:
        for case in cases:
            h0 = subject_residuals(model, last, [case])[0]
            first = target_ids(tok, case.rewrite, case.target_new)[0]
            for way in WAYS:
                method.through_post_norm = exact if way == "exact" else first_order
                memit = method.Memit(cfg, cache_root=cache)
                with memit.edited(model, [case], Cost()):
                    h1 = subject_residuals(model, last, [case])[0]
                    enc = encode(tok, [case.rewrite])
                    with torch.no_grad():
                        top = int(model.bridge(enc.tokens, attention_mask=enc.mask)[0, -1].argmax())
                init, delta, _ = zs[case.case_id]
                cos, share = reach(h0, h1, init + delta)
                held = top == first
                rows.append(dict(case=case.case_id, way=way, cos=cos, share=share, top1=held))
                print(
                    f"{case.rewrite!r} -> {case.target_new!r}  {way:11s} cos {cos:+.3f}  "
                    f"share {share:+.3f}  target top-1 {held}"
                )
    finally:
        method.target_value, method.through_post_norm = real, exact
    for way in WAYS:
        mine = [r for r in rows if r["way"] == way]
        mean_cos = sum(r["cos"] for r in mine) / len(mine)
        held = sum(r["top1"] for r in mine)
        print(f"{way}: mean cos {mean_cos:+.3f}, target top-1 {held}/{len(mine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
