"""The Hugging Face Hub: whether it answers, whether Pythia is cached, and loading Pythia-70M."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any
from urllib.parse import urlparse

from fmi.errors import ModelUnavailableError

PYTHIA_HUB_ID = "EleutherAI/pythia-70m"
OFFLINE_MODELS = ("gemma-3-270m", "smollm2-135m")
HUB_PROBE_TIMEOUT_S = 2.0


def _hub_host() -> tuple[str, int]:
    """Host and port of the Hugging Face endpoint (``$HF_ENDPOINT`` or huggingface.co)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub opens within ``timeout`` seconds (DNS included)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
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


def pythia_cached() -> bool:
    """Whether the local HF cache holds Pythia-70M's config and weights."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False

    def _has(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(PYTHIA_HUB_ID, filename), str)

    return _has("config.json") and (_has("model.safetensors") or _has("pytorch_model.bin"))


def _pythia_status() -> tuple[bool, str]:
    """(loadable, reason) for pythia-70m."""
    if pythia_cached():
        return True, "in the local Hugging Face cache"
    if hub_reachable():
        return True, "Hugging Face Hub reachable"
    return False, "not in the local Hugging Face cache and the Hub is unreachable"


def _load_pythia() -> tuple[Any, Any, str]:
    """(model, tokenizer, source) for Pythia-70M from the HF cache, else the Hub."""
    import torch

    cached = pythia_cached()
    online = hub_reachable()
    if not cached and not online:
        raise ModelUnavailableError(
            f"pythia-70m is unavailable: {PYTHIA_HUB_ID} is not in the local Hugging Face cache "
            f"and the Hub is unreachable; offline models: {', '.join(OFFLINE_MODELS)}"
        )
    if not online:
        # Keeps a name lookup from retrying the network for minutes (effective when
        # huggingface_hub has not been imported yet; local_files_only covers the rest).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"local_files_only": cached}
    tokenizer = AutoTokenizer.from_pretrained(PYTHIA_HUB_ID, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        PYTHIA_HUB_ID, dtype=torch.float32, attn_implementation="eager", **kwargs
    )
    return model, tokenizer, PYTHIA_HUB_ID
