"""The comparison's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from analyses.compare.soft_prefix.config import SoftPrefixConfig
from fmi.errors import ConfigError, require_at_least
from fmi.experiments.config import RecallConfig
from fmi.memory.projectors import ProjectorConfig

MEMORY_MODES = ("both_top1", "context_gate", "dual_key")


@dataclass(frozen=True)
class CompareConfig:
    """Everything that decides ``fmi compare``; ``to_dict()`` heads the report and the JSON.

    The memory is fitted exactly as ``fmi recall --seed-value`` fits it (``recall``, default
    :meth:`RecallConfig.seed_value`: the unrefined first-token value, which the iterated rows
    refine; its model, task, seed and sizes follow the fields here). Baselines are then scored
    on ``splits`` with the same prompts, metrics and 95% intervals (cluster over symbols for reads
    and writes, Wilson for plain and unrelated prompts).

    - ``steering_layers``: residual layers the steering sweep visits, evenly spaced (the final
      norm's output is always added); ``steering_alphas`` scale a unit steering vector to a
      fraction of the median residual norm at that site and the answer position;
      ``sweep_prompts`` training read prompts score each (site, alpha).
    - ``refine_steps``: closed-form refinement steps of the value reported (1 is the seed value).
    - ``gradmem_steps``/``gradmem_depth``/``gradmem_lr``: backprop-written vectors at the residual
      site at that fraction of depth, normalized-gradient steps of ``lr`` times the residual norm;
      ``gradmem_depths`` x ``gradmem_lrs`` x 1..``gradmem_steps`` is the tuning sweep on
      ``gradmem_tune_symbols`` training symbols (the fixed pair is used without a training split).
    - ``entropy_keep``: the entropy gate's threshold lets this fraction of training prompts fire.
    - ``soft_prefix``: GradMem as its paper describes it, ``K`` memory tokens prepended to every
      question (:mod:`analyses.compare.soft_prefix`, its sizes, steps and tuned learning rates).
    - ``grace_*``: GRACE's layer (fraction of depth), the initial radii tried on
      ``grace_tune_symbols`` training symbols (in units of the median key distance between the
      edits; the grid runs past 1 because on Gemma-3, seed 101, no training question fell
      within 0.8 of a code), and its value training (Adam steps, learning rate).
    """

    model: str = "auto"
    task: str = "builtin"
    seed: int = 0
    n_train: int = 150
    n_eval: int = 40
    splits: tuple[str, ...] = ("same",)
    batch_size: int = 16
    steering_layers: int = 6
    steering_alphas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    sweep_prompts: int = 24
    refine_steps: tuple[int, ...] = (1, 2, 5, 10)
    gradmem_steps: int = 5
    gradmem_depth: float = 0.66
    gradmem_lr: float = 0.15
    gradmem_depths: tuple[float, ...] = (0.33, 0.66, 0.9)
    gradmem_lrs: tuple[float, ...] = (0.05, 0.15, 0.5)
    gradmem_tune_symbols: int = 12
    entropy_keep: float = 0.99
    grace_depth: float = 0.5
    grace_eps_grid: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.2, 1.6, 2.4)
    grace_tune_symbols: int = 24
    grace_steps: int = 20
    grace_lr: float = 1.0
    soft_prefix: SoftPrefixConfig = field(default_factory=SoftPrefixConfig)
    quick: bool = False
    recall: RecallConfig = field(default_factory=RecallConfig.seed_value)

    def __post_init__(self) -> None:
        require_at_least(
            self,
            (
                "n_train",
                "n_eval",
                "batch_size",
                "steering_layers",
                "sweep_prompts",
                "gradmem_steps",
            ),
        )
        if not self.splits:
            raise ConfigError("splits must name at least one split")
        if not self.steering_alphas or min(self.steering_alphas) <= 0:
            raise ConfigError(f"steering_alphas must be positive, got {self.steering_alphas}")
        if not self.refine_steps or min(self.refine_steps) < 1:
            raise ConfigError(f"refine_steps must be >= 1, got {self.refine_steps}")
        if not 1 <= self.gradmem_steps <= 5:
            raise ConfigError(f"gradmem_steps must be in 1..5, got {self.gradmem_steps}")
        if not 0.0 <= self.gradmem_depth <= 1.0:
            raise ConfigError(f"gradmem_depth must be in [0, 1], got {self.gradmem_depth}")
        if self.gradmem_lr <= 0:
            raise ConfigError(f"gradmem_lr must be positive, got {self.gradmem_lr}")
        if not self.grace_eps_grid or min(self.grace_eps_grid) <= 0:
            raise ConfigError(f"grace_eps_grid must be positive, got {self.grace_eps_grid}")
        if not 0.0 <= self.grace_depth <= 1.0:
            raise ConfigError(f"grace_depth must be in [0, 1], got {self.grace_depth}")
        require_at_least(self, ("grace_steps", "grace_tune_symbols"))
        if self.grace_lr <= 0:
            raise ConfigError(f"grace_lr must be positive, got {self.grace_lr}")
        if not 0.0 < self.entropy_keep <= 1.0:
            raise ConfigError(f"entropy_keep must be in (0, 1], got {self.entropy_keep}")
        object.__setattr__(
            self,
            "recall",
            replace(
                self.recall,
                model=self.model,
                task=self.task,
                seed=self.seed,
                n_train=self.n_train,
                n_eval=self.n_eval,
                batch_size=self.batch_size,
            ),
        )

    @classmethod
    def quick_config(cls, model: str = "tiny-gemma", **overrides: Any) -> CompareConfig:
        """A tiny configuration for tests and smoke runs: seconds, not minutes."""
        small: dict[str, Any] = {
            "model": model,
            "n_train": 12,
            "n_eval": 6,
            "steering_layers": 2,
            "steering_alphas": (0.5, 2.0),
            "sweep_prompts": 6,
            "refine_steps": (1, 2, 3),
            "gradmem_steps": 2,
            "gradmem_depths": (0.5,),
            "gradmem_lrs": (0.15, 0.5),
            "gradmem_tune_symbols": 3,
            "grace_eps_grid": (0.2, 1.0),
            "grace_tune_symbols": 4,
            "grace_steps": 2,
            "soft_prefix": SoftPrefixConfig.quick(),
            "quick": True,
            "recall": RecallConfig.seed_value(
                n_unrelated=12,
                rho_grid=(0.2, 0.8),
                calibration_prompts=8,
                n_bootstrap=100,
                projector=ProjectorConfig(dim=16, steps=20),
            ),
        }
        return cls(**{**small, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
