"""Where a memory's tensors live: on its model's device, keys and values in float32 whatever
the model's dtype, so that reading never mixes devices or precisions."""

from __future__ import annotations

from typing import Any

import torch

# The tensor fields of a FastMemory, each with one row per entry (or per key row / answer step).
TENSOR_FIELDS = (
    "values",
    "symbol_keys",
    "token_keys",
    "token_owner",
    "token_role",
    "dual_weights",
    "tail_values",
    "tail_owner",
    "answer_keys",
    "relation_weights",
)
HALF = (torch.bfloat16, torch.float16)


def memory_device(model: Any, values: torch.Tensor) -> torch.device:
    """The device a memory belongs on: its bound model's (``LoadedModel.device``), else where
    its values are.

    >>> memory_device(None, torch.zeros(1)), memory_device(type("M", (), {"device": "meta"}), None)
    (device(type='cpu'), device(type='meta'))
    """
    return torch.device(getattr(model, "device", None) or values.device)


def placed(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """``t`` on ``device``, a half-precision ``t`` in float32 (itself when it is so already).

    >>> placed(torch.ones(2, dtype=torch.bfloat16), torch.device("cpu")).dtype
    torch.float32
    >>> t = torch.ones(2, dtype=torch.long)
    >>> placed(t, torch.device("cpu")) is t, placed(None, torch.device("cpu"))
    (True, None)
    """
    if t is None or (t.device == device and t.dtype not in HALF):
        return t
    return t.to(device, torch.float32 if t.dtype in HALF else t.dtype)
