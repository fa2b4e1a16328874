"""The capacity experiment's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from analyses.capacity.lora.config import LoraConfig
from fmi.errors import ConfigError, require_at_least
from fmi.experiments.config import RecallConfig
from fmi.memory.retrieve import check_modes


@dataclass(frozen=True)
class CapacityConfig:
    """Everything that decides ``fmi capacity``; ``to_dict()`` heads the report and the JSON.

    - ``sizes``: bank sizes N (bindings). Each bank is N/2 fresh invented words, each bound in
      ``game A`` and ``game B`` to different labels; smaller banks are prefixes of the largest,
      which is written once.
    - ``read_queries`` / ``plain_queries``: at most this many read prompts (bindings) and
      contextless prompts (words) are sampled per size from that size's bank.
    - ``lora_sizes``: the sizes (among ``sizes``) the LoRA probe trains on, each rank of
      ``lora.ranks``; empty skips the probe. Its learning rate and steps are tuned per rank on
      ``lora.tune_size`` training bindings (``lora.lrs`` x ``lora.step_grid``), with a retention
      KL on training unrelated prompts (:class:`analyses.capacity.lora.config.LoraConfig`).
    The memory itself is fitted exactly as ``fmi recall --seed-value`` fits it (``recall``:
    one-token bindings, the seed value).
    """

    model: str = "auto"
    seed: int = 0
    sizes: tuple[int, ...] = (10, 100, 1000, 10000)
    modes: tuple[str, ...] = ("both_top1", "dual_key")
    read_queries: int = 200
    plain_queries: int = 100
    lora_sizes: tuple[int, ...] = (10, 100, 1000, 10000)
    lora: LoraConfig = field(default_factory=LoraConfig)
    batch_size: int = 32
    quick: bool = False
    recall: RecallConfig = field(default_factory=RecallConfig.seed_value)

    def __post_init__(self) -> None:
        require_at_least(self, ("read_queries", "plain_queries", "batch_size"))
        check_modes(list(self.modes))
        if not self.sizes:
            raise ConfigError("sizes must name at least one bank size")
        for name in ("sizes", "lora_sizes"):
            bad = [n for n in getattr(self, name) if n < 2 or n % 2]
            if bad:
                raise ConfigError(
                    f"{name} must be even numbers >= 2 (each word is bound in two contexts), "
                    f"got {bad}"
                )
        if list(self.sizes) != sorted(set(self.sizes)):
            raise ConfigError(f"sizes must be increasing and distinct, got {list(self.sizes)}")
        missing = [n for n in self.lora_sizes if n not in self.sizes]
        if missing:
            raise ConfigError(
                f"lora_sizes {missing} are not among sizes {list(self.sizes)} (the LoRA probe is "
                "read with the prompts sampled for those sizes)"
            )

    @classmethod
    def quick_config(cls, model: str = "tiny-gemma", **overrides: Any) -> CapacityConfig:
        """A tiny configuration for tests and smoke runs: seconds, not minutes."""
        small: dict[str, Any] = {
            "model": model,
            "sizes": (4, 12, 40),
            "read_queries": 12,
            "plain_queries": 6,
            "lora_sizes": (4, 12),
            "lora": LoraConfig(
                ranks=(1, 4),
                lrs=(5e-3, 2e-2),
                step_grid=(4, 8),
                batch_size=8,
                retention_prompts=8,
                tune_size=4,
            ),
            "batch_size": 16,
            "quick": True,
            "recall": RecallConfig.quick(end=None, refine_grid=(1,)),
        }
        return cls(**{**small, **overrides})

    def with_model(self, model: str) -> CapacityConfig:
        return replace(self, model=model, recall=replace(self.recall, model=model, seed=self.seed))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
