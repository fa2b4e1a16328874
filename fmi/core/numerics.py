"""Reproducible numerics: a fixed thread count and torch's deterministic algorithms for a run,
and a record of everything else that decides its floating-point bits.

A fit trains a projector for 300 AdamW steps on residual states and then sets thresholds on
the scores it gives. That chain amplifies a difference in the last bit of one residual into a
different projector, and different projected-mode figures (``both_top1``, ``context_gate``).
The training-free ``dual_key`` modes do not amplify it. Bits are a function of the weights,
the package versions, the CPU kernels torch and MKL dispatch to, and the thread count. So a run
fixes the thread count (``RecallConfig.threads``) and records the rest (:func:`numerics`) in
its header: two runs whose ``numerics`` and ``model.weights_sha256`` agree give the same JSON.

>>> import torch
>>> before = torch.get_num_threads()
>>> with fixed_numerics(1):
...     torch.get_num_threads()
1
>>> torch.get_num_threads() == before
True
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Environment variables that change which kernels run, or how they reduce.
KERNEL_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_CBWR",
    "MKL_DYNAMIC",
    "ATEN_CPU_CAPABILITY",
    "OPENBLAS_CORETYPE",
)


@contextmanager
def fixed_numerics(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads and deterministic algorithms on.

    Both settings are restored on exit, also after an exception.
    """
    import torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def numerics() -> dict:
    """What decides the floating-point bits besides weights and versions: CPU, kernels, threads.

    >>> sorted(numerics())[:3]
    ['cpu', 'cpu_capability', 'deterministic_algorithms']
    """
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
    }
