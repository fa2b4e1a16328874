"""The editing benchmark's configuration (``fmi edit``), validated when built.

>>> cfg = EditConfig(edits=(1, 10), methods=("none", "fast_memory"))
>>> cfg.to_dict()["edits"], cfg.scored
([1, 10], 100)
>>> EditConfig(edits=(0,))
Traceback (most recent call last):
...
fmi.errors.ConfigError: edits must be positive edit counts, got (0,)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from analyses.edit.loaders import FORMATS
from fmi.errors import ConfigError

METHODS = (
    "none",
    "in_context",
    "fast_memory",
    "dual_key_learned",
    "dual_key",
    "grace",
    "lora",
    "rome",
    "memit",
    "alphaedit",
)


@dataclass(frozen=True)
class EditConfig:
    """What ``fmi edit`` runs.

    - ``data``: a bundled benchmark (``known-cf``, ``nonce-cf``) or a CounterFact / ZsRE file
      (``format``), evaluated whole; fitting and tuning always use the bundled ``known-cf``
      training part (or ``nonce-cf``'s, for ``nonce-cf``).
    - ``edits``: the numbers T of edits held at once (capped at the evaluation part's size);
      ``scored``: how many edits are scored at every T, the same ones (the first in the seeded
      order): T < scored runs ceil(scored / T) disjoint groups of T edits.
    - ``max_new_tokens``: greedy tokens per prompt (0: the longest target's tokens + 2).
    - ``in_context_tokens``: the longest stated-facts prefix ``in_context`` may use (0: the
      model's context less 64 tokens for the probe); a larger T is not run, with that reason.
    - ``cell_budget_s``: wall seconds a (method, T) cell may spend writing edits; a cell whose
      estimate (from the method's seconds per edit so far) exceeds it is not run, with that
      reason, and a running cell stops after the group that crosses it.
    - ``unrelated``: how many evaluation generic prompts to score (0: all 455).
    - ``tune_edits``: the size of the training group every method's settings are chosen on.
    """

    model: str = "auto"
    data: str = "known-cf"
    format: str = "auto"
    methods: tuple[str, ...] = METHODS
    edits: tuple[int, ...] = (1, 10, 100, 1000)
    seeds: tuple[int, ...] = (0,)
    scored: int = 100
    max_new_tokens: int = 0
    batch_size: int = 16
    in_context_tokens: int = 0
    cell_budget_s: float = 3600.0
    tune_edits: int = 50
    unrelated: int = 0
    max_unrelated_changed: float = 0.02

    def __post_init__(self) -> None:
        for name in ("methods", "edits", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ConfigError(
                f"methods must be distinct names among {', '.join(METHODS)}, got "
                f"{', '.join(map(str, self.methods)) or 'none'}"
            )
        if not self.edits or any(not _count(t) for t in self.edits):
            raise ConfigError(f"edits must be positive edit counts, got {self.edits}")
        if not self.seeds or any(not _count(s, 0) for s in self.seeds):
            raise ConfigError(f"seeds must be integers >= 0, got {self.seeds}")
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        for name, low in (
            ("scored", 1),
            ("max_new_tokens", 0),
            ("batch_size", 1),
            ("unrelated", 0),
            ("in_context_tokens", 0),
        ):
            if not _count(getattr(self, name), low):
                raise ConfigError(f"{name} must be an integer >= {low}, got {getattr(self, name)}")
        for name in ("tune_edits",):
            if not _count(getattr(self, name), 2):
                raise ConfigError(f"{name} must be an integer >= 2, got {getattr(self, name)}")
        if not (isinstance(self.cell_budget_s, (int, float)) and self.cell_budget_s > 0):
            raise ConfigError(f"cell_budget_s must be > 0 seconds, got {self.cell_budget_s}")
        bound = self.max_unrelated_changed
        if not (isinstance(bound, (int, float)) and math.isfinite(bound) and 0 <= bound <= 1):
            raise ConfigError(f"max_unrelated_changed must be in [0, 1], got {bound}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _count(value: Any, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low
