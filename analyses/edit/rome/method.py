"""ROME as an editing method: rank-one updates written in turn, the weight restored on exit."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from analyses.capacity.lora.base import _frozen_base
from analyses.edit.cases import EditCase
from analyses.edit.method import Cost, Held
from analyses.edit.rome.config import RomeConfig
from analyses.edit.rome.covariance import CovSpec, covariances, regularised
from analyses.edit.rome.keys import context_prefixes, edited_linear, subject_keys
from analyses.edit.rome.update import rank_one_update
from analyses.edit.rome.value import at_linear, target_value


def checksum(t: Tensor) -> str:
    """sha256 of a tensor's bytes (to check a restored weight)."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class Rome:
    """ROME as a :class:`analyses.edit.method.Method`: each case, in order, a rank-one update of
    one block's MLP output projection; the weight is restored bit for bit on exit.

    ``C`` comes from :func:`analyses.edit.rome.covariance.covariances` (cached on disk under
    ``cache_root``, default ``<fmi cache>/rome-cov``); its seconds and the context prefixes'
    are in ``setup_seconds``, not charged to the edits.

    >>> import tempfile
    >>> from fmi.models.registry import load_model
    >>> model = load_model("tiny-gemma", announce=lambda _: None)
    >>> case = EditCase("0", "Paris", "{} is the capital of", "Italy", "France")
    >>> cfg = RomeConfig(steps=3, cov_samples=100, context_prefixes=2, early_stop=0.0)
    >>> rome, cost = Rome(cfg, cache_root=tempfile.mkdtemp()), Cost()
    >>> with rome.edited(model, [case], cost):
    ...     (cost.forward, cost.backward)
    (4, 2)
    >>> rome.settings()["covariance"]["source"]
    'model-text'
    """

    name = "rome"

    def __init__(
        self,
        config: RomeConfig = RomeConfig(),  # noqa: B008 (a frozen dataclass)
        cache_root: str | Path | None = None,
    ) -> None:
        self.config = config
        self.cache_root = cache_root
        self.setup_seconds = 0.0
        self._layer: int | None = None
        self._cov_info: dict[str, Any] = {}
        self._C: dict[tuple[str, int], Tensor] = {}
        self._prefixes: list[str] = []
        self.last_values: list[dict[str, Any]] = []

    @property
    def spec(self) -> CovSpec:
        return CovSpec(tokens=self.config.cov_samples, seed=self.config.seed)

    def covariance(self, model, layer: int) -> Tensor:
        """``C + cov_lambda * mean(diag C) * I`` (float64) of (model, layer), from the cache;
        kept by this object after its first use (so that a later call, even while edits are
        held, needs no fingerprint of the weights)."""
        key = (model.name, layer)
        if key not in self._C:
            C, info = covariances(model, [layer], self.spec, self.cache_root)[layer]
            self.setup_seconds += info["seconds"]
            self._cov_info = info
            self._C[key] = regularised(C, self.config.cov_lambda)
        return self._C[key]

    def prefixes(self, model) -> list[str]:
        """``""`` (the bare prompt) and the context prefixes, made once per model."""
        cfg = self.config
        started = time.perf_counter()
        made = context_prefixes(
            model, cfg.context_prefixes, cfg.prefix_lengths, top_k=cfg.prefix_top_k, seed=cfg.seed
        )
        self.setup_seconds += time.perf_counter() - started
        self._prefixes = ["", *made]
        return self._prefixes

    @contextlib.contextmanager
    def edited(self, model, cases: Sequence[EditCase], cost: Cost) -> Iterator[Held]:
        """Write ``cases`` one after another (each sees the earlier ones), yield ``Held()``,
        and restore the weight on exit (RuntimeError if its checksum then differs)."""
        cfg = self.config
        layer = cfg.resolved_layer(model)
        self._layer = layer
        linear = edited_linear(model, layer)
        C = self.covariance(model, layer)
        prefixes = self.prefixes(model)
        before = linear.weight.detach().clone()
        digest = checksum(before)
        self.last_values = []
        try:
            with _frozen_base(model):
                for case in cases:
                    started = time.perf_counter()
                    keys = subject_keys(model, layer, [case], prefixes, cost)[0]
                    init, delta, info = target_value(
                        model, at_linear, layer, case, cfg, cost, prefixes
                    )
                    with torch.no_grad():
                        update = rank_one_update(
                            linear.weight, C, keys[0], init + delta, linear.bias, keys.mean(0)
                        )
                        linear.weight.add_(update)
                    self.last_values.append(info)
                    cost.seconds += time.perf_counter() - started
            yield Held()
        finally:
            with torch.no_grad():
                linear.weight.copy_(before)
            if checksum(linear.weight) != digest:
                raise RuntimeError(f"rome: layer {layer}'s weight was not restored exactly")

    def settings(self) -> dict[str, Any]:
        out = self.config.to_dict()
        out["resolved_layer"] = self._layer
        out["covariance"] = {
            k: v for k, v in self._cov_info.items() if k not in ("from", "seconds")
        }
        out["covariance_tokens"] = self._cov_info.get("tokens")
        out["setup_seconds"] = round(self.setup_seconds, 3)
        out["context_prefixes_used"] = len(self._prefixes) - 1 if self._prefixes else None
        return out
