"""The LoRA probe's settings: ranks, the (lr, steps) grid, the retention term, the tuning rule."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fmi.errors import ConfigError, require_at_least


@dataclass(frozen=True)
class LoraConfig:
    """Ranks to probe, the optimiser's grid, the retention term and the tuning rule.

    - ``lrs`` x ``step_grid``: the learning rates and step counts tried. One training run per
      learning rate, read at each step count of the grid (snapshots of that run, not retrained);
      the pair chosen on training bindings (:func:`analyses.capacity.lora.tune.choose`) trains
      every size's adapter. A grid of one learning rate and one step count is not tuned: that
      pair is used as it is.
    - ``retention_weight`` (0 disables) x ``KL(p_base || p_adapted)`` at the last position of
      ``retention_prompts`` unrelated training prompts (the training question split) is added to
      every step's loss (:func:`analyses.capacity.lora.retention.retention_kl`).
    - ``tune_size``: how many training bindings the tuning adapters learn;
      ``max_unrelated_changed``: the bound of :func:`analyses.capacity.lora.tune.choose` on the
      fraction of held-out training unrelated prompts whose greedy output changes.

    Cost on Gemma-3-270M, 2 CPU cores: a step of 32 prompts takes about 3.1 s, so 50 steps take
    2.6 minutes per adapter; retention adds one forward and backward of ``retention_prompts``
    short prompts per step (about half a step at 16), and tuning adds ``len(lrs)`` runs of
    ``max(step_grid)`` steps on ``tune_size`` prompts per rank.
    """

    ranks: tuple[int, ...] = (1, 4, 16)
    lrs: tuple[float, ...] = (1e-3, 5e-3, 2e-2)
    step_grid: tuple[int, ...] = (10, 25, 50)
    batch_size: int = 32
    seed: int = 0
    retention_weight: float = 1.0
    retention_prompts: int = 16
    tune_size: int = 10
    max_unrelated_changed: float = 0.05

    def __post_init__(self) -> None:
        if not self.ranks or min(self.ranks) < 1:
            raise ConfigError(f"ranks must be a non-empty tuple of ints >= 1, got {self.ranks}")
        require_at_least(self, ("batch_size", "retention_prompts"))
        require_at_least(self, ("seed",), 0)
        bad = [x for x in self.lrs if not (math.isfinite(x) and x > 0)]
        if not self.lrs or bad or len(set(self.lrs)) != len(self.lrs):
            raise ConfigError(f"lrs must be distinct learning rates > 0, got {self.lrs}")
        grid = list(self.step_grid)
        if not grid or min(grid) < 1 or grid != sorted(set(grid)):
            raise ConfigError(
                f"step_grid must be increasing, distinct step counts >= 1, got {self.step_grid}"
            )
        if not (math.isfinite(self.retention_weight) and self.retention_weight >= 0):
            raise ConfigError(f"retention_weight must be >= 0, got {self.retention_weight}")
        if self.tune_size < 2 or self.tune_size % 2:
            raise ConfigError(
                f"tune_size must be an even number >= 2 (each word is bound in two contexts), "
                f"got {self.tune_size}"
            )
        if not 0 <= self.max_unrelated_changed <= 1:
            raise ConfigError(
                f"max_unrelated_changed must be in [0, 1], got {self.max_unrelated_changed}"
            )

    @property
    def steps(self) -> int:
        """The longest run of the grid."""
        return self.step_grid[-1]

    @property
    def tuned(self) -> bool:
        """Whether there is anything to choose: more than one (lr, steps) pair."""
        return len(self.lrs) * len(self.step_grid) > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
