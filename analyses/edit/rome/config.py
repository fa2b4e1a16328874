"""ROME's hyperparameters: the edited block, the value's optimisation, the covariance sample."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fmi.errors import ConfigError


@dataclass(frozen=True)
class RomeConfig:
    """ROME's hyperparameters.

    ``layer``: the edited block (None: ``n_layers // 3``, an early-middle MLP); ``steps`` Adam
    steps at ``lr`` on ``delta``; ``kl_weight`` x the essence prompt's KL; ``clamp``: the largest
    ``||delta||`` relative to ``||W k + b||``; ``cov_samples`` tokens of neutral text for ``C``,
    regularised as ``C + cov_lambda * mean(diag C) * I``; ``context_prefixes``: how many short
    generated prefixes the key is averaged over and the NLL is taken on (0: the bare prompt).
    """

    layer: int | None = None
    steps: int = 20
    lr: float = 0.5
    kl_weight: float = 0.0625
    clamp: float = 4.0
    cov_samples: int = 2000
    cov_lambda: float = 1e-2
    context_prefixes: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.layer is not None and (isinstance(self.layer, bool) or self.layer < 0):
            raise ConfigError(f"layer must be None or an int >= 0, got {self.layer}")
        for name in ("steps", "cov_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("context_prefixes", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "clamp", "cov_lambda"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite float > 0, got {value}")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ConfigError(f"kl_weight must be a finite float >= 0, got {self.kl_weight}")

    def resolved_layer(self, model) -> int:
        """The edited block of ``model``; ConfigError when outside its blocks."""
        n = int(model.bridge.cfg.n_layers)
        layer = n // 3 if self.layer is None else self.layer
        if not 0 <= layer < n:
            raise ConfigError(f"layer must be in 0..{n - 1} for {model.name}, got {layer}")
        return layer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
