"""MEMIT's and AlphaEdit's hyperparameters, their published values and sources, and what fmi
does differently (:data:`PAPER_VS_FMI`).

The defaults are the authors' GPT-J runs: MEMIT github kmeng01/memit
``hparams/MEMIT/EleutherAI_gpt-j-6B.json`` (with ``memit/memit_main.py``,
``memit/compute_z.py``, ``memit/compute_ks.py``), AlphaEdit github jianghoucheng/AlphaEdit
``hparams/AlphaEdit/EleutherAI_gpt-j-6B.json`` (with ``AlphaEdit/AlphaEdit_main.py`` and
``experiments/evaluate.py``); :data:`SOURCES` names the field of each.

>>> MemitConfig().update_weight(16384), MemitConfig().update_weight(2048)
(15000.0, 1875.0)
>>> AlphaEditConfig().nullspace_threshold, AlphaEditConfig().batch_size
(0.02, 100)
>>> MemitConfig(layers=(3, 2))
Traceback (most recent call last):
...
fmi.errors.ConfigError: layers must be consecutive increasing block indices, got (3, 2)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from analyses.edit.rome.config import check_value_fields
from fmi.errors import ConfigError

SOURCES = {
    "layers": "EleutherAI_gpt-j-6B.json layers [3..8] of 28 blocks (None here: the same "
    "fractions of the depth, round(3/28 n)..round(8/28 n))",
    "steps": "EleutherAI_gpt-j-6B.json v_num_grad_steps 25",
    "lr": "v_lr 5e-1",
    "kl_weight": "kl_factor 0.0625",
    "weight_decay": "v_weight_decay 0.5",
    "clamp": "clamp_norm_factor 0.75",
    "early_stop": "memit/compute_z.py: `if loss < 5e-2: break`",
    "mom2_update_weight": "mom2_update_weight 15000 for GPT-J's fc_out keys of d_in 16384, "
    "times C as the mean E[k kᵀ] (memit_main.py get_cov: stat.mom2.moment()); None here: "
    "15000 * d_in / 16384",
    "cov_samples": "mom2_n_samples 100000 (Wikipedia articles there; tokens here)",
    "context_prefixes": "memit_main.py get_context_templates: [(10, 5)], one per start",
    "prefix_lengths": "the same: max_out_len 10",
    "prefix_top_k": "util/generate.py generate_fast top_k=5",
    "batch_size": "MEMIT: every edit in one batch; AlphaEdit: 100 per batch (its paper's "
    "sequential setting, experiments/evaluate.py --num_edits)",
    "nullspace_threshold": "AlphaEdit EleutherAI_gpt-j-6B.json nullspace_threshold 2e-2",
    "l2": "AlphaEdit EleutherAI_gpt-j-6B.json L2 10",
}
"""Where each default comes from."""

PAPER_VS_FMI = (
    "Covariance: as ROME's here (analyses.edit.rome.config.PAPER_VS_FMI): model-written text, "
    "cov_samples tokens, cached on disk, one C per edited layer, shared with ROME.",
    "Context prefixes: MEMIT's code samples 5 (top-k 5, 10 tokens, from 'The', 'Therefore', "
    "'Because', 'I', 'You'); fmi does the same, seeded. Keys are averaged as the code does: "
    "the mean of the bare prompt's key and the prefixes' mean key.",
    "z (the target residual of the last edited layer), its KL and weight decay: as ROME's v* "
    "here, at the block's residual output (clamp 0.75 x ||z_init||).",
    "Post-MLP norm: MEMIT writes dW K = R with the MLP's output added to the residual as is "
    "(GPT-J, GPT-NeoX). Gemma-3 has an RMSNorm after the MLP; there fmi writes, per edit, the "
    "down_proj change whose normalised output comes nearest (least squares) to o + r, o = "
    "norm(y), the nearest point of the norm's output surface, solved exactly "
    "(analyses.edit.memit.states.through_post_norm; invert_post_norm; off: dW K = R as in the "
    "code). Before 2026-12-07 fmi used the first-order preimage rms(y) (o + r) / (1 + w) - y, "
    "which on Gemma-3-270M moved the residual at cos 0.07 to r: no edit held.",
    "Sequential MEMIT: batches of batch_size edits written one after another into the same "
    "weights, each seeing the earlier ones (the AlphaEdit code's MEMIT_seq also adds the "
    "earlier batches' keys to the solve; fmi's memit does not, its alphaedit does).",
    "AlphaEdit's projector: P = U Uᵀ over C's eigenvectors with eigenvalue < nullspace_threshold "
    "(absolute, as in the code's get_project: the code takes singular values of the same "
    "symmetric C). Its solve is the code's: dW = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + l2 I)⁻¹, K_p the "
    "keys of every earlier batch, read after that batch was written.",
    "mom2_update_weight: GPT-J's 15000 belongs to its keys' width d_in = 16384; a key drawn "
    "like C's gets kᵀ (λ C)⁻¹ k ≈ d_in / λ, the share of its residual the solve writes, so fmi "
    "keeps d_in / λ: λ = 15000 d_in / 16384 (1875 for Gemma-3-270M's 2048, 117 for the tiny "
    "models' 128) unless mom2_update_weight is given.",
    "AlphaEdit's nullspace_threshold (2e-2) and L2 (10) are absolute numbers for GPT-J's key "
    "scale; fmi uses them as they are by default and reports the null space's rank per layer "
    "(null_dims); key_scaled multiplies both by C's mean eigenvalue tr(C) / d_in (an fmi "
    "variant, for the tuning grid).",
    "Biases: none is edited, as in both codes (GPT-NeoX's dense_4h_to_h bias stays).",
)
"""Each difference between the papers / codes and this implementation."""


@dataclass(frozen=True)
class MemitConfig:
    """MEMIT's hyperparameters (see :data:`SOURCES`).

    ``layers``: the consecutive edited blocks (None: GPT-J's 3..8 of 28 as fractions of the
    depth). z: the last layer's residual output target, optimised as ROME's v* (``steps``,
    ``lr``, ``kl_weight``, ``weight_decay``, ``clamp``, ``early_stop``, ``context_prefixes``
    of ``prefix_lengths`` tokens, top-k ``prefix_top_k``). The write at each layer solves with
    ``λ C + K Kᵀ``, ``λ`` = ``mom2_update_weight`` (None: :meth:`update_weight`; ``C`` from
    ``cov_samples`` tokens, regularised by ``cov_lambda``). ``batch_size``: edits per write
    (None: all at once, batched MEMIT; b: sequential MEMIT). ``invert_post_norm``: see
    :data:`PAPER_VS_FMI`.
    """

    layers: tuple[int, ...] | None = None
    steps: int = 25
    lr: float = 0.5
    kl_weight: float = 0.0625
    weight_decay: float = 0.5
    clamp: float = 0.75
    early_stop: float = 5e-2
    mom2_update_weight: float | None = None
    cov_samples: int = 100_000
    cov_lambda: float = 1e-6
    context_prefixes: int = 5
    prefix_lengths: tuple[int, ...] = (10,)
    prefix_top_k: int = 5
    batch_size: int | None = None
    invert_post_norm: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix_lengths", tuple(self.prefix_lengths))
        if self.layers is not None:
            layers = tuple(self.layers)
            object.__setattr__(self, "layers", layers)
            ok = bool(layers) and all(isinstance(x, int) and x >= 0 for x in layers)
            if not ok or any(b != a + 1 for a, b in zip(layers, layers[1:], strict=False)):
                raise ConfigError(
                    f"layers must be consecutive increasing block indices, got {self.layers}"
                )
        check_value_fields(self)
        for name in ("cov_samples", "prefix_top_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be None or >= 1, got {self.batch_size}")
        weight = self.mom2_update_weight
        if weight is not None and not (math.isfinite(weight) and weight > 0):
            raise ConfigError(
                f"mom2_update_weight must be None or a finite float > 0, got {weight}"
            )
        if not (math.isfinite(self.cov_lambda) and self.cov_lambda >= 0):
            raise ConfigError(f"cov_lambda must be a finite float >= 0, got {self.cov_lambda}")

    def update_weight(self, d_in: int) -> float:
        """``λ`` for keys of width ``d_in``: ``mom2_update_weight``, or GPT-J's 15000 scaled by
        ``d_in / 16384`` (see :data:`PAPER_VS_FMI`)."""
        if self.mom2_update_weight is not None:
            return float(self.mom2_update_weight)
        return 15000.0 * d_in / 16384

    def resolved_layers(self, model) -> tuple[int, ...]:
        """The edited blocks of ``model``; ConfigError when outside its blocks."""
        n = int(model.bridge.cfg.n_layers)
        if self.layers is None:
            lo, hi = round(3 * n / 28), max(round(3 * n / 28), round(8 * n / 28))
            return tuple(range(min(lo, n - 1), min(hi, n - 1) + 1))
        if self.layers[-1] >= n:
            raise ConfigError(f"layers must be in 0..{n - 1} for {model.name}, got {self.layers}")
        return self.layers

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class AlphaEditConfig(MemitConfig):
    """AlphaEdit's hyperparameters: MEMIT's (GPT-J's, the same numbers in AlphaEdit's file)
    with the null-space projector's ``nullspace_threshold`` (on C's eigenvalues) and the
    solve's ``l2``, both times C's mean eigenvalue when ``key_scaled``; ``batch_size`` 100
    (sequential); ``mom2_update_weight`` unused."""

    batch_size: int | None = 100
    nullspace_threshold: float = 2e-2
    l2: float = 10.0
    key_scaled: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("nullspace_threshold", "l2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite float >= 0, got {value}")


MEMIT_WEIGHT_MULTIPLES = (1.0, 3.0, 10.0, 30.0, 100.0)
"""MEMIT's update weights in the grid, in units of GPT-J's scaled weight: a larger weight
gives a smaller update (more of ``λ C`` in the solve), so the ladder runs from the published
strength to a conservative end."""

ALPHAEDIT_SETTINGS = (
    (False, 2e-2, 10.0),
    (False, 2e-2, 100.0),
    (False, 2e-3, 10.0),
    (False, 2e-4, 10.0),
    (True, 2e-2, 10.0),
)
"""AlphaEdit's grid, ``(key_scaled, nullspace_threshold, l2)``: the published numbers, then
conservative ones (a 10x larger l2, a 10x and 100x smaller absolute threshold: a smaller null
space), and the published numbers in units of the keys' mean eigenvalue."""


def memit_grid(model) -> list[tuple[tuple[int, ...], float]]:
    """MEMIT's tuning settings ``(layers, mom2_update_weight)`` for ``model``: GPT-J's layers
    (3..8 of 28, as fractions of the depth) with its weight scaled to the keys' width times
    each of :data:`MEMIT_WEIGHT_MULTIPLES` (from the published strength to conservative), and
    GPT-2 XL's layers (13..17 of 48) with the scaled weight."""
    from analyses.edit.rome.keys import edited_linear

    n = int(model.bridge.cfg.n_layers)
    base = MemitConfig()
    weight = base.update_weight(int(edited_linear(model, 0).in_features))
    gptj = base.resolved_layers(model)
    lo, hi = min(round(13 * n / 48), n - 1), min(round(17 * n / 48), n - 1)
    gpt2 = tuple(range(lo, max(lo, hi) + 1))
    return [(gptj, m * weight) for m in MEMIT_WEIGHT_MULTIPLES] + [(gpt2, weight)]
