"""A frozen model's fingerprint: a checksum over every parameter, to show that nothing changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

import hashlib

from fmi.models.registry import LoadedModel


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """Raw bytes of a tensor, contiguous on the CPU (any dtype)."""
    import torch

    flat = t.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def parameter_checksum(model: LoadedModel) -> str:
    """sha256 over every parameter and buffer of the wrapped model (names sorted)."""
    module = model.hf_model
    tensors = dict(module.named_buffers())
    tensors.update(dict(module.named_parameters()))
    digest = hashlib.sha256()
    for tensor_name in sorted(tensors):
        t = tensors[tensor_name]
        digest.update(f"{tensor_name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(_tensor_bytes(t))
    return digest.hexdigest()
