"""Hugging Face models: whether the Hub answers, whether a model id is cached, and loading a
Hub id (at a revision) or a local directory in Hugging Face format."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from fmi.errors import ModelUnavailableError

if TYPE_CHECKING:
    import torch

OFFLINE_MODELS = ("gemma-3-270m", "smollm2-135m")
HUB_PROBE_TIMEOUT_S = 1.0
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _hub_host() -> tuple[str, int]:
    """Host and port of the Hugging Face endpoint (``$HF_ENDPOINT`` or huggingface.co)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub opens within ``timeout`` seconds (DNS included);
    False at once under ``HF_HUB_OFFLINE=1``."""
    if _offline():
        return False
    result: list[bool] = []

    def _probe() -> None:
        try:
            with socket.create_connection(_hub_host(), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=_probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def hub_cached(repo_id: str, revision: str | None = None) -> bool:
    """Whether the local HF cache holds ``repo_id``'s config and weights at ``revision``.

    >>> hub_cached("nobody/no-such-model")
    False
    """
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False

    def _has(filename: str) -> bool:
        try:
            found = try_to_load_from_cache(repo_id, filename, revision=revision)
        except ValueError:  # not a valid repo id
            return False
        return isinstance(found, str)

    return _has("config.json") and any(_has(f) for f in WEIGHT_FILES)


def _label(repo_id: str, revision: str | None) -> str:
    return repo_id if revision is None else f"{repo_id}@{revision}"


def hub_status(
    repo_id: str, revision: str | None = None, online: bool | None = None
) -> tuple[bool, str]:
    """(loadable, reason) for a Hub id: cached, or the Hub reachable (probed unless ``online``
    says). ``online=False`` answers without touching the network.

    >>> hub_status("nobody/no-such-model", online=False)
    (False, 'not in the local Hugging Face cache and the Hub is unreachable')
    """
    if hub_cached(repo_id, revision):
        return True, "in the local Hugging Face cache"
    if online is None:
        online = hub_reachable()
    if online:
        return True, "Hugging Face Hub reachable"
    return False, "not in the local Hugging Face cache and the Hub is unreachable"


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _pretrained(source: str | Path, dtype: torch.dtype, **kwargs: Any) -> tuple[Any, Any]:
    """(model, tokenizer) by ``from_pretrained`` (eager attention: the bridge's hooks need it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=dtype, attn_implementation="eager", **kwargs
    )
    return model, tokenizer


def load_hub(
    repo_id: str, revision: str | None, dtype: torch.dtype, name: str | None = None
) -> tuple[Any, Any, str]:
    """(model, tokenizer, source) for a Hub id at ``revision`` from the HF cache, else the Hub;
    a one-line ``ModelUnavailableError`` (within about a second offline) when neither has it.
    ``name`` is what the message calls the model (a registry shortcut)."""
    what = _label(repo_id, revision)
    cached = hub_cached(repo_id, revision)
    online = False if cached else hub_reachable()
    if not cached and not online:
        raise ModelUnavailableError(
            f"{name or what} is unavailable: {what} is not in the local Hugging Face cache "
            f"and the Hub is unreachable; offline models: {', '.join(OFFLINE_MODELS)}"
        )
    if not online:
        # Keeps a name lookup from retrying the network for minutes (effective when
        # huggingface_hub has not been imported yet; local_files_only covers the rest).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        model, tokenizer = _pretrained(repo_id, dtype, revision=revision, local_files_only=cached)
    except (OSError, ValueError) as err:
        raise ModelUnavailableError(f"{what} could not be loaded: {_one_line(err)}") from None
    return model, tokenizer, what


def load_local(path: Path, dtype: torch.dtype) -> tuple[Any, Any, str]:
    """(model, tokenizer, source) from a local directory in Hugging Face format (config,
    weights and tokenizer files); a one-line ``ModelUnavailableError`` when it lacks one."""
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(f"{path} has no config.json: not a Hugging Face model folder")
    try:
        model, tokenizer = _pretrained(path, dtype, local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise ModelUnavailableError(f"{path} could not be loaded: {_one_line(err)}") from None
    return model, tokenizer, str(path)
