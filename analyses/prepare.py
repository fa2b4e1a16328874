"""What every analysis shares: the configuration, the loaded model, the task and the fitted memory.

The memory is fitted once (training symbols only, exactly as ``fmi recall --seed-value`` does:
:meth:`RecallConfig.seed_value`, the value the analyses study) and reused by
every analysis, so that ``make analyses`` pays for one fit.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from types import ModuleType
from typing import Any

import torch

from fmi.errors import ConfigError, require_at_least
from fmi.experiments.config import RecallConfig
from fmi.experiments.labels import check_labels
from fmi.experiments.recall import task_for
from fmi.experiments.tasks import Task
from fmi.memory.fit import Fitted, fit
from fmi.memory.projectors import ProjectorConfig
from fmi.models.registry import LoadedModel, load_model
from fmi.reporting.provenance import header
from fmi.reporting.report import Report


@dataclass(frozen=True)
class AnalysisConfig:
    """Everything that decides ``fmi analyses``; ``to_dict()`` heads every report.

    ``alphas`` scale an injected direction to a fraction of the residual norm at the injection
    site and answer position. ``sweep_prompts`` and ``probe_prompts`` cap the prompts per kind
    (the full held-out split is used when it is smaller). ``key_layers=None`` means every layer.
    """

    model: str = "auto"
    seed: int = 0
    n_train: int = 150
    n_eval: int = 40
    projector_steps: int = 300
    key_layers: tuple[int, ...] | None = None
    alphas: tuple[float, ...] = (0.1, 0.3, 1.0)
    sweep_prompts: int = 16
    probe_prompts: int = 40
    probe_folds: int = 5
    max_new_tokens: int = 1
    batch_size: int = 32
    quick: bool = False
    recall: RecallConfig = field(default_factory=RecallConfig.seed_value)

    def __post_init__(self) -> None:
        require_at_least(
            self,
            (
                "n_train",
                "n_eval",
                "projector_steps",
                "sweep_prompts",
                "probe_prompts",
                "max_new_tokens",
                "batch_size",
            ),
        )
        if self.probe_folds < 2:
            raise ConfigError(f"probe_folds must be >= 2, got {self.probe_folds}")
        if not self.alphas or min(self.alphas) <= 0:
            raise ConfigError(f"alphas must be positive, got {self.alphas}")
        if self.key_layers is not None and (not self.key_layers or min(self.key_layers) < 0):
            raise ConfigError(
                f"key_layers must be non-negative layer indices, got {self.key_layers}"
            )
        # The recall configuration the memory is fitted with follows this one's sizes and seed.
        object.__setattr__(
            self,
            "recall",
            replace(
                self.recall,
                model=self.model,
                seed=self.seed,
                n_train=self.n_train,
                n_eval=self.n_eval,
                batch_size=self.batch_size,
                projector=replace(self.recall.projector, steps=self.projector_steps),
            ),
        )

    @classmethod
    def quick_config(cls, model: str = "tiny-gemma", **overrides: Any) -> AnalysisConfig:
        """A tiny configuration for tests and smoke runs: seconds, not minutes."""
        small = {
            "model": model,
            "n_train": 12,
            "n_eval": 6,
            "projector_steps": 20,
            "alphas": (0.2, 0.8),
            "sweep_prompts": 6,
            "probe_prompts": 12,
            "probe_folds": 3,
            "quick": True,
            "recall": RecallConfig.seed_value(
                rho_grid=(0.2, 0.8),
                calibration_prompts=8,
                projector=ProjectorConfig(dim=16),
                n_unrelated=12,
            ),
        }
        return cls(**{**small, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Setup:
    """A loaded model, its task and the memory fitted on the training split."""

    cfg: AnalysisConfig
    model: LoadedModel
    task: Task
    fitted: Fitted

    @property
    def n_layers(self) -> int:
        return int(self.model.bridge.cfg.n_layers)

    def key_layers(self) -> list[int]:
        """The layers the key analyses visit (``cfg.key_layers``, or all), checked."""
        layers = list(self.cfg.key_layers) if self.cfg.key_layers else list(range(self.n_layers))
        bad = [layer for layer in layers if layer >= self.n_layers]
        if bad:
            raise ConfigError(
                f"key_layers {bad} do not exist: {self.model.name} has layers "
                f"0..{self.n_layers - 1}"
            )
        return layers

    def header(self, wall_seconds: float, **extra: Any) -> dict[str, Any]:
        """The provenance header of one report: model, flags, sites, alpha, seeds, sizes, time."""
        fitted = self.fitted.to_dict()
        return header(
            self.model,
            self.cfg.to_dict(),
            sites={
                "symbol_key": fitted["symbol_site"],
                "token_key": fitted["token_site"],
                "inject": self.cfg.recall.inject_site,
            },
            alpha={"alpha": fitted["alpha"], "rho": fitted["rho"]},
            seeds={"seed": self.cfg.seed, "task_seed": self.task.seed},
            task_sizes={s.name: len(s.bindings) for s in (self.task.train, *self.task.splits)},
            fitted=fitted,
            wall_seconds=round(wall_seconds, 1),
            **extra,
        )


def make_report(
    setup: Setup,
    compute: ModuleType,
    figures: ModuleType,
    *,
    progress: bool = True,
) -> Report:
    """Run an analysis' ``compute`` module on ``setup`` and wrap what its ``figures`` module builds
    (figures and finding) in a :class:`Report` whose header records the analysis' own wall
    time."""
    start = time.perf_counter()
    data = compute.compute(setup, progress=progress)
    return Report(
        compute.NAME,
        compute.TITLE,
        figures.finding(data),
        tuple(figures.figures(data)),
        setup.header(time.perf_counter() - start),
        data.to_dict(),
    )


def prepare(
    cfg: AnalysisConfig, *, model: LoadedModel | None = None, announce=print
) -> tuple[Setup, float]:
    """Load the model (unless given), build the task and fit the memory; returns the seconds."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if model is None:
        model = load_model(cfg.model, seed=cfg.seed, announce=announce)
    task = task_for(cfg.recall)
    check_labels(task, model.tokenizer)
    fitted = fit(model, task.train, cfg.recall)
    return Setup(cfg, model, task, fitted), time.perf_counter() - start
