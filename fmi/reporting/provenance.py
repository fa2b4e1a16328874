"""The header every JSON and report carries: what ran, on what, with which versions."""

from __future__ import annotations

import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "fmi",
    "torch",
    "transformer-lens",
    "transformers",
    "numpy",
    "scikit-learn",
    "gguf",
    "plotly",
    "circuitsvis",
    "safetensors",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision() -> str:
    """``<sha>`` of the checkout fmi runs from, with ``-dirty`` when it has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def header(model, config: dict, **extra) -> dict:
    """Model (with a sha256 of its weights), weight-processing flags, config (with seeds),
    versions, git revision, machine, and the numerics that decide a run's bits
    (:func:`fmi.core.numerics.numerics`: CPU, kernel capability, threads)."""
    from fmi.core.numerics import numerics
    from fmi.models.fingerprint import parameter_checksum

    return {
        "model": {**model.to_dict(), "weights_sha256": parameter_checksum(model)},
        "config": config,
        "versions": package_versions(),
        "git": git_revision(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()}",
        "numerics": numerics(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
