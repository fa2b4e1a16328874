"""Where a model runs and in which precision: the ``device`` and ``dtype`` options of
:func:`fmi.models.registry.load_model`, checked before anything is loaded."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fmi.errors import ConfigError, DeviceUnavailableError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(device: str) -> str:
    """The device ``device`` names on this machine: ``auto`` is ``cuda:<current>`` when CUDA is
    available, else ``cpu``; ``cuda`` gets its index. A device this machine lacks is refused
    (:class:`fmi.errors.DeviceUnavailableError`), an unknown name too (``ConfigError``).

    >>> resolve_device("cpu")
    'cpu'
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    fmi.errors.ConfigError: unknown device 'tpu'; devices: auto, cpu, cuda, cuda:N, mps
    """
    import torch

    text = device.strip().lower() if isinstance(device, str) else ""
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if text not in ("auto", "cpu", "mps") and match is None:
        raise ConfigError(f"unknown device {device!r}; devices: {', '.join(DEVICES)}")
    if text == "cpu" or (text == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceUnavailableError("device 'mps' is not available on this machine")
        return "mps"
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device {device!r} needs CUDA, which this machine's torch does not see "
            f"(torch {torch.__version__}); use --device cpu"
        )
    index = torch.cuda.current_device() if match is None or match[1] is None else int(match[1])
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return f"cuda:{index}"


def resolve_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of ``dtype`` (``float32``, ``bfloat16`` or ``float16``).

    >>> resolve_dtype("bfloat16")
    torch.bfloat16
    >>> resolve_dtype("float8")
    Traceback (most recent call last):
    ...
    fmi.errors.ConfigError: unknown dtype 'float8'; dtypes: float32, bfloat16, float16
    """
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; dtypes: {', '.join(DTYPES)}")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def place(module: Any, device: str, dtype: torch.dtype) -> Any:
    """Cast ``module``'s floating parameters to ``dtype`` (buffers keep theirs, as
    ``from_pretrained(dtype=...)`` keeps float32 rotary frequencies) and move it to ``device``.
    Tied parameters are one object and are cast once. Returns the module."""
    for param in module.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    return module.to(device)


def inputs_follow(module: Any, device: str) -> None:
    """Move the tensors a call of ``module`` gets (tokens, masks, positions: built on the CPU by
    the tokenizer) to ``device`` first, so that no caller has to; nothing for the CPU."""
    if device == "cpu":
        return

    def move(x: Any) -> Any:
        return x.to(device) if hasattr(x, "to") and hasattr(x, "device") else x

    def hook(_: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}

    module.register_forward_pre_hook(hook, with_kwargs=True)
