"""ROME's hyperparameters, their published values and where each comes from, and what fmi does
differently from the paper and its code (:data:`PAPER_VS_FMI`).

The defaults are the authors' GPT-2 XL run (github kmeng01/rome, ``hparams/ROME/gpt2-xl.json``
and ``rome/rome_main.py``, ``rome/compute_v.py``, ``rome/compute_u.py``); :data:`SOURCES` names
the field of each.

>>> RomeConfig().steps, RomeConfig().context_prefixes, RomeConfig().cov_samples
(20, 20, 100000)
>>> RomeConfig(clamp=0.0)
Traceback (most recent call last):
...
fmi.errors.ConfigError: clamp must be a finite float > 0, got 0.0
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fmi.errors import ConfigError

SOURCES = {
    "layer": "hparams/ROME/gpt2-xl.json layers [17] of 48 (None here: n_layers // 3)",
    "steps": "gpt2-xl.json v_num_grad_steps 20",
    "lr": "gpt2-xl.json v_lr 5e-1",
    "kl_weight": "gpt2-xl.json kl_factor 0.0625",
    "weight_decay": "gpt2-xl.json v_weight_decay 0.5",
    "clamp": "gpt2-xl.json clamp_norm_factor 4",
    "early_stop": "rome/compute_v.py: `if loss < 5e-2: break`",
    "cov_samples": "gpt2-xl.json mom2_n_samples 100000 (Wikipedia articles there; tokens here)",
    "context_prefixes": "gpt2-xl.json context_template_length_params [[5, 10], [10, 10]]",
    "prefix_lengths": "the same: 10 prefixes of 5 tokens and 10 of 10 (the start token included)",
    "prefix_top_k": "util/generate.py generate_fast top_k=5",
}
"""Where each default comes from (github kmeng01/rome)."""

PAPER_VS_FMI = (
    "Covariance text: ROME takes C = E[k kᵀ] over 100,000 Wikipedia articles (mom2_n_samples "
    "counts dataset rows, each up to n_ctx tokens: millions of tokens); no Wikipedia ships "
    "offline here, so C comes from cov_samples tokens the model samples itself (temperature 1, "
    "64 rows x 128 new tokens from neutral starts, seeded; special tokens left out), cached on "
    "disk per (model fingerprint, layer, source, token count, seed).",
    "Covariance inverse: ROME inverts C exactly (torch.inverse); fmi solves with C + cov_lambda "
    "* mean(diag C) * I, cov_lambda 1e-6 by default (a guard against a singular sample, "
    "numerically the same on a full-rank C).",
    "Context prefixes: ROME's are unseeded samples of GPT-2 from <|endoftext|>; fmi's are "
    "seeded samples (top-k 5) from the tokenizer's BOS token (EOS where there is none), made "
    "once per model and reused by every edit, as ROME's CONTEXT_TEMPLATES_CACHE is.",
    "Weight decay: implemented as in the code, v_weight_decay * ||delta|| / ||v_init||^2 (the "
    "norm of delta, not its square; the paper's text has no such term).",
    "KL term: as in the code: KL(p_edited || p_init) of the next-token distribution at the "
    "subject's last token of '{subject} is a' (the paper says the prompt '{subject} is a'; the "
    "code reads the position right after the subject), delta added there too.",
    "Key mapped: as in the code, u = C⁻¹ k_avg (k averaged over the 21 prompts), and the update "
    "maps the bare prompt's key exactly: dW = delta uᵀ / (uᵀ k_bare); the paper writes "
    "(v* - W k*) (C⁻¹ k*)ᵀ / ((C⁻¹ k*)ᵀ k*) with the averaged k* on both sides.",
    "Target tokens: the whole of answer_text(target_new) (a leading space, as the code adds), "
    "tokenized without special tokens (the code tokenizes with GPT-2, which adds none).",
    "Loss layer: v_loss_layer is GPT-2 XL's last block; fmi takes the model's own logits, the "
    "same thing.",
)
"""Each difference between ROME's paper / code and this implementation, one sentence each."""


@dataclass(frozen=True)
class RomeConfig:
    """ROME's hyperparameters (see :data:`SOURCES` for each default's origin).

    ``layer``: the edited block (None: ``n_layers // 3``, an early-middle MLP). v*: at most
    ``steps`` forwards (Adam at ``lr`` between them, so ``steps - 1`` updates) on the target's
    NLL over the bare prompt and the ``context_prefixes`` generated prefixes, plus ``kl_weight``
    x the KL on ``"{subject} is a"``, plus ``weight_decay`` x ``||delta|| / ||v_init||²``; it
    stops once that loss is below ``early_stop``; ``||delta|| <= clamp * ||v_init||`` after each
    step. The prefixes are sampled (top-k ``prefix_top_k``) with the lengths of
    ``prefix_lengths`` in turn, in equal numbers. ``cov_samples`` tokens of model-written text
    give ``C``, solved as ``C + cov_lambda * mean(diag C) * I``; ``seed`` seeds both samples.
    """

    layer: int | None = None
    steps: int = 20
    lr: float = 0.5
    kl_weight: float = 0.0625
    weight_decay: float = 0.5
    clamp: float = 4.0
    early_stop: float = 5e-2
    cov_samples: int = 100_000
    cov_lambda: float = 1e-6
    context_prefixes: int = 20
    prefix_lengths: tuple[int, ...] = (5, 10)
    prefix_top_k: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix_lengths", tuple(self.prefix_lengths))
        if self.layer is not None and (isinstance(self.layer, bool) or self.layer < 0):
            raise ConfigError(f"layer must be None or an int >= 0, got {self.layer}")
        check_value_fields(self)
        for name in ("cov_samples", "prefix_top_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.cov_lambda) and self.cov_lambda >= 0):
            raise ConfigError(f"cov_lambda must be a finite float >= 0, got {self.cov_lambda}")

    def resolved_layer(self, model) -> int:
        """The edited block of ``model``; ConfigError when outside its blocks."""
        n = int(model.bridge.cfg.n_layers)
        layer = n // 3 if self.layer is None else self.layer
        if not 0 <= layer < n:
            raise ConfigError(f"layer must be in 0..{n - 1} for {model.name}, got {layer}")
        return layer

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def check_value_fields(cfg: Any) -> None:
    """ConfigError unless the v* fields every locate-then-edit config shares (``steps``,
    ``lr``, ``kl_weight``, ``weight_decay``, ``clamp``, ``early_stop``, ``context_prefixes``,
    ``prefix_lengths``, ``seed``) are valid."""
    if cfg.steps < 1:
        raise ConfigError(f"steps must be >= 1, got {cfg.steps}")
    for name in ("context_prefixes", "seed"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    for name in ("lr", "clamp"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a finite float > 0, got {value}")
    for name in ("kl_weight", "weight_decay", "early_stop"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a finite float >= 0, got {value}")
    lengths = cfg.prefix_lengths
    if not lengths or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in lengths):
        raise ConfigError(f"prefix_lengths must be ints >= 2, got {lengths}")
