"""What ``fmi bench`` measures: sizes, repeats, modes and bank sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fmi.errors import ConfigError, require_at_least
from fmi.experiments.config import RecallConfig
from fmi.memory.retrieve import (
    check_modes,
)


@dataclass(frozen=True)
class BenchConfig:
    """What ``fmi bench`` measures; ``to_dict()`` heads its JSON."""

    model: str = "auto"
    seed: int = 0
    prompts: int = 64
    batch_size: int = 16
    repeats: int = 5
    max_new_tokens: int = 3
    modes: tuple[str, ...] = ("both_top1", "dual_key")
    bank_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    query_batch: int = 64
    # the loaded case: the same figures again while one core is kept busy (0: idle only)
    loaded: bool = True
    busy_limit_s: float = 1800.0
    recall: RecallConfig = RecallConfig()

    def __post_init__(self) -> None:
        require_at_least(
            self, ("prompts", "batch_size", "repeats", "max_new_tokens", "query_batch")
        )
        check_modes(list(self.modes))
        if not self.bank_sizes or min(self.bank_sizes) < 1:
            raise ConfigError(f"bank_sizes must be positive, got {list(self.bank_sizes)}")
        if self.busy_limit_s <= 0:
            raise ConfigError(f"busy_limit_s must be positive, got {self.busy_limit_s}")
        if self.prompts % 2:
            raise ConfigError(f"prompts must be even (two contexts per word), got {self.prompts}")

    @classmethod
    def quick_config(cls, model: str = "tiny-neox", **overrides: Any) -> BenchConfig:
        """Tiny sizes for tests and smoke runs (seconds)."""

        small: dict[str, Any] = {
            "model": model,
            "prompts": 8,
            "repeats": 1,
            "bank_sizes": (100, 1000),
            "query_batch": 4,
            "recall": RecallConfig.quick(),
        }
        return cls(**{**small, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
