"""Fingerprint of a fit: sha256 prefixes of the projector, standardizers and dual-key weights,
plus every fitted number, as one JSON line. Two fits with equal fingerprints are bit-identical.

    python scripts/fit_fingerprint.py gemma-3-270m 2
    ATEN_CPU_CAPABILITY=avx2 python scripts/fit_fingerprint.py gemma-3-270m 2

(The reproducibility section of docs/results.md compares those two runs.)
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import torch

from fmi.experiments.config import RecallConfig
from fmi.experiments.recall import task_for
from fmi.memory.fit import fit
from fmi.models.registry import load_model


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def main() -> None:
    name, threads = sys.argv[1], int(sys.argv[2])
    model = load_model(name, announce=lambda _: None)
    small = name.startswith("tiny")
    cfg = (RecallConfig.quick if small else RecallConfig)(model=name, threads=threads)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    fitted = fit(model, task_for(cfg).train, cfg)
    enc = fitted.encoder
    assert enc.projector is not None
    print(
        json.dumps(
            {
                "threads": threads,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "projector": _sha(enc.projector),
                "symbol_mean": _sha(enc.symbol_std.mean),
                "token_mean": _sha(enc.token_std.mean),
                "dual_weights_sha": _sha(fitted.dual_weights),
                **fitted.to_dict(),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
