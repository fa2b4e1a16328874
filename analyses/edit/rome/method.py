"""ROME as an editing method: rank-one updates written in turn, the weight restored on exit."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from analyses.capacity.lora.base import _frozen_base
from analyses.edit.cases import EditCase
from analyses.edit.method import Cost, Held
from analyses.edit.rome.config import RomeConfig
from analyses.edit.rome.keys import (
    context_prefixes,
    edited_linear,
    key_covariance,
    neutral_text,
    subject_key,
)
from analyses.edit.rome.update import rank_one_update
from analyses.edit.rome.value import target_value


def _checksum(t: Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class Rome:
    """ROME as a :class:`analyses.edit.method.Method`: each case, in order, a rank-one update of
    one block's MLP output projection; the weight is restored bit for bit on exit.

    The covariance is computed once per (model, layer) and cached; its seconds are in
    ``covariance_seconds``, not charged to the edits.

    >>> from fmi.models.registry import load_model
    >>> model = load_model("tiny-gemma", announce=lambda _: None)
    >>> case = EditCase("0", "Paris", "{} is the capital of", "Italy", "France")
    >>> rome, cost = Rome(RomeConfig(steps=3, cov_samples=100)), Cost()
    >>> with rome.edited(model, [case], cost):
    ...     (cost.forward, cost.backward)
    (5, 3)
    """

    name = "rome"

    def __init__(
        self,
        config: RomeConfig = RomeConfig(),  # noqa: B008 (a frozen dataclass)
        texts: dict[str, list[str]] | None = None,
    ) -> None:
        self.config = config
        # model name -> the covariance text; pass one dict to share it between settings
        self._texts: dict[str, list[str]] = {} if texts is None else texts
        self.covariance_seconds = 0.0
        self._cov: dict[tuple[str, int], Tensor] = {}
        self._tokens: dict[tuple[str, int], int] = {}
        self._layer: int | None = None
        self._used: tuple[str, int] | None = None

    def covariance(self, model, layer: int) -> Tensor:
        """The regularised ``C + cov_lambda * mean(diag C) * I`` of (model, layer), cached."""
        key = (model.name, layer)
        if key not in self._cov:
            started = time.perf_counter()
            if model.name not in self._texts:  # one text per model, shared by its layers
                self._texts[model.name] = neutral_text(
                    model, self.config.cov_samples, self.config.seed
                )
            texts = self._texts[model.name]
            C = key_covariance(model, layer, texts)
            C = C + self.config.cov_lambda * C.diagonal().mean() * torch.eye(C.shape[0]).to(C)
            self._cov[key] = C
            self._tokens[key] = sum(len(model.tokenizer(t)["input_ids"]) for t in texts)
            self.covariance_seconds += time.perf_counter() - started
        return self._cov[key]

    @contextlib.contextmanager
    def edited(self, model, cases: Sequence[EditCase], cost: Cost) -> Iterator[Held]:
        """Write ``cases`` one after another (each sees the earlier ones), yield ``Held()``,
        and restore the weight on exit (RuntimeError if its checksum then differs)."""
        cfg = self.config
        layer = cfg.resolved_layer(model)
        self._layer, self._used = layer, (model.name, layer)
        linear = edited_linear(model, layer)
        C = self.covariance(model, layer)
        prefixes = context_prefixes(model, cfg)
        before = linear.weight.detach().clone()
        digest = _checksum(before)
        try:
            with _frozen_base(model):
                for case in cases:
                    started = time.perf_counter()
                    k = subject_key(model, layer, case, prefixes, cost)
                    v = target_value(model, layer, case, k, cfg, cost, prefixes)
                    with torch.no_grad():
                        update = rank_one_update(linear.weight, C, k, v, linear.bias)
                        linear.weight.copy_(linear.weight + update)
                    cost.seconds += time.perf_counter() - started
            yield Held()
        finally:
            with torch.no_grad():
                linear.weight.copy_(before)
            if _checksum(linear.weight) != digest:
                raise RuntimeError(f"rome: layer {layer}'s weight was not restored exactly")

    def settings(self) -> dict[str, Any]:
        out = self.config.to_dict()
        out["resolved_layer"] = self._layer
        out["covariance_tokens"] = self._tokens.get(self._used) if self._used else None
        out["covariance_seconds"] = self.covariance_seconds
        return out
