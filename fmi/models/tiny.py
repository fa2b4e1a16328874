"""Tiny random-weight models for tests, built from a config: no download, seeded, frozen.

``tiny-neox`` (GPT-NeoX, 2 layers, d_model 64), ``tiny-pythia-arch`` (Pythia-70M's exact
architecture) and ``tiny-gemma`` (Gemma-3 text, 2 layers), all with Pythia's offline tokenizer.
"""

from __future__ import annotations

from typing import Any

from fmi.errors import UnknownModelError
from fmi.models import assets

TINY_MODELS = ("tiny-neox", "tiny-pythia-arch", "tiny-gemma")


def neox_tokenizer() -> Any:
    """Pythia's tokenizer, loaded from the offline directory."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(assets.neox_tokenizer_dir(), local_files_only=True)


def _tiny_config(name: str) -> Any:
    """The HF config of one tiny model."""
    from transformers import Gemma3TextConfig, GPTNeoXConfig

    neox: dict[str, Any] = {
        "vocab_size": 50304,
        "rotary_pct": 0.25,
        "max_position_embeddings": 2048,
        "layer_norm_eps": 1e-5,
        "hidden_act": "gelu",
        "use_parallel_residual": True,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "attn_implementation": "eager",
    }
    if name == "tiny-neox":
        return GPTNeoXConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=256,
            **neox,
        )
    if name == "tiny-pythia-arch":
        return GPTNeoXConfig(
            hidden_size=512,
            num_hidden_layers=6,
            num_attention_heads=8,
            intermediate_size=2048,
            **neox,
        )
    # attn_implementation is not a dataclass field: transformers wraps the config's __init__ to
    # forward extra kwargs to __post_init__, which mypy cannot see.
    return Gemma3TextConfig(  # type: ignore[call-arg]
        vocab_size=50304,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        intermediate_size=128,
        query_pre_attn_scalar=16,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=512,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
        attn_implementation="eager",
    )


def tiny_hf_model(name: str, seed: int = 0) -> Any:
    """A tiny model's HF module with weights drawn after ``torch.manual_seed(seed)``, frozen.

    Norm weights are drawn too (see ``_randomize_norms``). The global torch RNG state is
    restored afterwards.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if name not in TINY_MODELS:
        raise UnknownModelError(
            f"{name!r} is not a tiny model; tiny models: {', '.join(TINY_MODELS)}"
        )
    config = _tiny_config(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        _randomize_norms(model)
    return freeze(model)


def _randomize_norms(model: Any) -> None:
    """Give every norm a non-trivial affine (HF initialises weight 1 / 0 for LayerNorm and 0 for
    Gemma's ``1 + w`` RMSNorm), so that tests can tell a site before the norm's scale from one
    after it."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name.lower() or "layernorm" in name.lower():
                param.add_(0.3 * torch.randn_like(param))


def freeze(module: Any) -> Any:
    """Set every parameter to requires_grad=False and the module to eval mode; return it."""
    module.requires_grad_(False)
    module.eval()
    return module
