"""The memory file: one safetensors file whose tensors are the keys, values and standardizers,
and whose metadata names the model, the sites, alpha, the key encoder and the calibrated
thresholds. Writes are atomic; reads name the file and what is wrong with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, save_file
from torch import Tensor

from fmi.errors import MemoryFileError
from fmi.reporting.atomic import write_atomically

if TYPE_CHECKING:
    from fmi.memory.store import FastMemory

REQUIRED_TENSORS = (
    "values",
    "symbol_keys",
    "token_keys",
    "token_owner",
    "token_role",
    "symbol_std.mean",
    "symbol_std.std",
    "token_std.mean",
    "token_std.std",
)
REQUIRED_META = (
    "model_name",
    "d_model",
    "inject_site",
    "alpha",
    "symbol_site",
    "token_site",
    "thresholds",
    "entries",
)


def memory_metadata(path: str | Path) -> dict:
    """The metadata of the memory file at ``path`` (its model, sites, entries...), read without
    loading a model; ``MemoryFileError`` for a missing or unreadable file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["fmi"])
    except FileNotFoundError:
        raise MemoryFileError(f"no memory file at {path}") from None
    except Exception as err:  # safetensors raises its own error type on bad headers
        raise MemoryFileError(f"{path} is not a readable fmi memory file ({err})") from None
    if not isinstance(meta, dict):
        raise MemoryFileError(f"{path} is not a readable fmi memory file (bad metadata)")
    return meta


def memory_tensors(memory: FastMemory) -> dict[str, Tensor]:
    """The tensors a memory file holds, by name: keys, values, standardizers and, where the
    memory has them, the projector, dual-key weights and answer tails."""
    tensors = {
        "values": memory.values,
        "symbol_keys": memory.symbol_keys,
        "token_keys": memory.token_keys,
        "token_owner": memory.token_owner,
        "token_role": memory.token_role,
        "symbol_std.mean": memory.encoder.symbol_std.mean,
        "symbol_std.std": memory.encoder.symbol_std.std,
        "token_std.mean": memory.encoder.token_std.mean,
        "token_std.std": memory.encoder.token_std.std,
    }
    if memory.encoder.projector is not None:
        tensors["projector"] = memory.encoder.projector
    if memory.dual_weights is not None:
        tensors["dual_weights"] = memory.dual_weights
    if memory.tail_values is not None and memory.tail_owner is not None:
        tensors["tail_values"] = memory.tail_values
        tensors["tail_owner"] = memory.tail_owner
    return tensors


def save_memory_file(path: str | Path, tensors: dict[str, Tensor], metadata: dict) -> None:
    """Write ``tensors`` and ``metadata`` (under the ``fmi`` key) to ``path`` atomically."""
    # clone: safetensors refuses two names for one storage (e.g. a shared standardizer)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    write_atomically(
        Path(path),
        lambda tmp: save_file(tensors, str(tmp), metadata={"fmi": json.dumps(metadata)}),
    )


def read_memory_file(path: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """The metadata and tensors of the memory file at ``path``; ``MemoryFileError`` naming the
    file for a missing, unreadable or incomplete one."""
    meta = memory_metadata(path)
    try:
        t = load_file(str(path))
    except Exception as err:  # safetensors raises its own error type on bad data
        raise MemoryFileError(f"{path} is not a readable fmi memory file ({err})") from None
    missing = [k for k in REQUIRED_TENSORS if k not in t]
    missing += [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise MemoryFileError(f"{path} is not a complete fmi memory file (no {missing[0]})")
    return meta, t
