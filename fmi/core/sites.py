"""Naming hook sites. TransformerLens hook names are the only way a site is named in fmi."""

from __future__ import annotations

from transformer_lens.utilities import get_act_name

from fmi.errors import ConfigError

UNEMBED_IN = "ln_final.hook_out"
"""The unembedding's input: the final norm's output, scale included, so ``logits = h @ W_U + b_U``
(tested). Correction values live in this space. Two look-alikes are not it:
``ln_final.hook_normalized`` fires before Gemma-3's RMSNorm ``(1 + w)`` scale, and
``unembed.hook_in`` holds the same tensor but only the positions that get logits (one, under
``logits_to_keep=1``), so a position-tracking hook there would miss the answer position."""


def resid(layer: int, where: str = "post") -> str:
    """``blocks.{layer}.hook_resid_{where}`` for ``where`` in ``pre``/``post``."""
    if where not in ("pre", "post"):
        raise ConfigError(f"residual site must be 'pre' or 'post', got {where!r}")
    return get_act_name(f"resid_{where}", layer)


def layer_of(site: str) -> int | None:
    """The block index of a ``blocks.{L}.…`` site, ``None`` for sites outside the blocks."""
    parts = site.split(".")
    if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def check_site(bridge, site: str) -> str:
    """Return ``site`` if the model has it, else raise naming the residual sites that exist."""
    if site in bridge.hook_dict:
        return site
    n = bridge.cfg.n_layers
    raise ConfigError(
        f"unknown hook site {site!r}; this model has {UNEMBED_IN!r} and "
        f"'blocks.{{L}}.hook_resid_pre|post' for L in 0..{n - 1}"
    )
