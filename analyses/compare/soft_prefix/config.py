"""The soft prefix's settings: memory-token counts, step counts, learning rates, initial draw."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fmi.errors import ConfigError

MAX_SIZE = 64


@dataclass(frozen=True)
class SoftPrefixConfig:
    """The soft prefix's sizes, steps, learning rates and initialisation.

    - ``sizes``: memory tokens ``K`` per prefix (each 1..64; the paper's range is 8-32).
    - ``steps``: Adam step counts reported, snapshots of one optimisation run per ``K``.
    - ``lr``: the Adam learning rate used without a training split, in units of the RMS
      coordinate of real token embeddings at ``hook_embed``; ``lrs`` are those tuning tries.
    - ``init``: the initial draw's spread, in units of the embeddings' per-coordinate std.
    - ``tune_symbols``: training symbols whose statements the tuning prefixes compress.
    - ``seed``: the initial draw's generator seed (the same ``P`` at step 0 for every ``lr``).

    The defaults (2 sizes x 2 step counts, 2 learning rates tried) keep a Gemma-3-270M split
    near ten minutes on 2 CPU cores: every row decodes every query with the prefix prepended.
    """

    sizes: tuple[int, ...] = (8, 32)
    steps: tuple[int, ...] = (2, 5)
    lr: float = 0.3
    lrs: tuple[float, ...] = (0.3, 1.0)
    init: float = 1.0
    tune_symbols: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sizes or any(not 1 <= k <= MAX_SIZE for k in self.sizes):
            raise ConfigError(f"sizes must be token counts in 1..{MAX_SIZE}, got {self.sizes}")
        if len(set(self.sizes)) != len(self.sizes):
            raise ConfigError(f"sizes must be distinct, got {self.sizes}")
        if not self.steps or min(self.steps) < 1 or len(set(self.steps)) != len(self.steps):
            raise ConfigError(f"steps must be distinct step counts >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not self.lrs or not min(self.lrs) > 0:
            raise ConfigError(f"lrs must be positive learning rates, got {self.lrs}")
        if not self.init > 0:
            raise ConfigError(f"init must be positive, got {self.init}")
        if self.tune_symbols < 1:
            raise ConfigError(f"tune_symbols must be >= 1, got {self.tune_symbols}")

    @classmethod
    def quick(cls, **overrides: Any) -> SoftPrefixConfig:
        """A tiny configuration for tests and smoke runs."""
        small: dict[str, Any] = {
            "sizes": (2, 4),
            "steps": (1, 3),
            "lrs": (0.3, 1.0),
            "tune_symbols": 3,
        }
        return cls(**{**small, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
