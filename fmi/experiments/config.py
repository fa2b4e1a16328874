"""The recall experiment's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fmi.core.sites import UNEMBED_IN, resid
from fmi.errors import ConfigError, require_at_least
from fmi.memory.projectors import ProjectorConfig
from fmi.memory.retrieve import MODES


@dataclass(frozen=True)
class RecallConfig:
    """Everything that decides a recall run; ``to_dict()`` goes into every JSON and report.

    Key sites default to fractions of depth: symbol keys (projected/raw modes) at the middle of
    the network, token keys (dual-key modes) early, where the residual still carries token
    identity. Explicit ``*_site`` strings override the fractions.

    >>> import fmi
    >>> cfg = fmi.RecallConfig.quick(seed=3)
    >>> cfg.seed, cfg.n_train, cfg.to_dict()["inject_site"]
    (3, 12, 'ln_final.hook_out')
    >>> fmi.RecallConfig(n_train=0)
    Traceback (most recent call last):
    ...
    fmi.errors.ConfigError: n_train must be >= 1, got 0
    """

    model: str = "auto"
    task: str = "builtin"
    modes: tuple[str, ...] = MODES
    seed: int = 0
    symbol_depth: float = 0.5
    token_depth: float = 0.15
    symbol_site: str | None = None
    token_site: str | None = None
    inject_site: str = UNEMBED_IN
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    rho_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8)
    # Closed-form refinement steps of the value (fmi.memory.refine) calibration chooses among, on
    # training prompts, as it chooses rho; (1,) keeps the seed value.
    refine_grid: tuple[int, ...] = (1, 2, 3, 5)
    calibration_prompts: int = 64
    false_accept: float = 0.01
    max_new_tokens: int = 3
    batch_size: int = 16
    n_bootstrap: int = 1000
    n_train: int = 150
    n_eval: int = 40
    # Unrelated prompts per evaluation split (built-in task); None: every evaluation question
    # of fmi.experiments.questions (over 300), disjoint from the training questions.
    n_unrelated: int | None = None
    # Intra-op threads for the whole run (fmi.core.numerics.fixed_numerics): bits do not depend on
    # the machine's core count. 2 is the reference machine's; the documented figures use it.
    threads: int = 2
    # Text that follows an answer when it is read: the write runs teacher-forced over
    # statement + answer + end, with a value for every answer token and for the end token
    # ("": no end value). None: one value per entry, at the answer's first token, as the seed
    # experiment wrote (RecallConfig.seed_value; labels must then be one token).
    end: str | None = "\n"
    splits: tuple[str, ...] = ()  # evaluation splits to run; () runs every split of the task

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ConfigError(f"unknown mode(s) {bad}; modes are {', '.join(MODES)}")
        for name in ("symbol_depth", "token_depth"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.false_accept < 1.0:
            raise ConfigError(f"false_accept must be in [0, 1), got {self.false_accept}")
        if self.n_unrelated is not None and self.n_unrelated < 1:
            raise ConfigError(f"n_unrelated must be >= 1 or None, got {self.n_unrelated}")
        if self.end is not None and not isinstance(self.end, str):
            raise ConfigError(f"end must be a string or None, got {self.end!r}")
        if not self.refine_grid or min(self.refine_grid) < 1:
            raise ConfigError(f"refine_grid must be step counts >= 1, got {self.refine_grid}")
        if not self.rho_grid or min(self.rho_grid) <= 0:
            raise ConfigError(f"rho_grid must be positive values, got {self.rho_grid}")
        require_at_least(
            self,
            (
                "max_new_tokens",
                "batch_size",
                "n_bootstrap",
                "n_train",
                "n_eval",
                "calibration_prompts",
                "threads",
            ),
        )

    def sites(self, n_layers: int) -> tuple[str, str]:
        """``(symbol_site, token_site)`` for a model with ``n_layers`` blocks."""
        sym = self.symbol_site or resid(round(self.symbol_depth * (n_layers - 1)), "post")
        tok = self.token_site or resid(round(self.token_depth * (n_layers - 1)), "post")
        return sym, tok

    @classmethod
    def quick(cls, **overrides) -> RecallConfig:
        """A tiny fit for tests and smoke runs (12 training symbols, a 16-dim projector)."""
        small = {
            "n_train": 12,
            "n_eval": 6,
            "n_unrelated": 12,
            "n_bootstrap": 50,
            "rho_grid": (0.2, 0.8),
            "calibration_prompts": 8,
            "projector": ProjectorConfig(dim=16, steps=20),
        }
        return cls(**{**small, **overrides})

    @classmethod
    def seed_value(cls, **overrides) -> RecallConfig:
        """The seed experiment's write: one unrefined value per binding, at the answer's first
        token (``end=None``, ``refine_grid=(1,)``). ``fmi compare``, ``fmi capacity`` and the
        analyses study this value; ``fmi recall --seed-value`` reads with it.

        >>> cfg = RecallConfig.seed_value(n_train=12)
        >>> cfg.end, cfg.refine_grid, cfg.n_train
        (None, (1,), 12)
        """
        return cls(**{"end": None, "refine_grid": (1,), **overrides})

    def to_dict(self) -> dict:
        return asdict(self)
