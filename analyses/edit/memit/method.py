"""MEMIT and AlphaEdit as editing methods: batches of edits spread over consecutive MLP layers,
the weights restored bit for bit on exit.

A batch (all edits, or ``batch_size`` of them in turn: sequential MEMIT) is written as the
authors' code writes it (github kmeng01/memit ``memit/memit_main.py`` execute_memit):

1. per edit, ``z``: the last edited block's residual output at the subject's last token that
   gives the target, optimised as ROME's v* (:func:`analyses.edit.rome.value.target_value`
   at :func:`analyses.edit.rome.value.at_residual`);
2. for each edited layer ``l`` in order (the ``i``-th of ``L``): the keys ``K`` at ``l``
   (:func:`.states.memit_keys`), the residual ``R = (z - h) / (L - i)`` with ``h`` the last
   layer's current residual at the bare prompt, and ``W_l += ΔW`` with
   :func:`.update.memit_delta` (MEMIT) or :func:`.update.alphaedit_delta` (AlphaEdit; then the
   batch's keys, read again after the write, join ``K_p``).

>>> import tempfile
>>> from fmi.models.registry import load_model
>>> from analyses.edit.cases import EditCase
>>> model = load_model("tiny-gemma", announce=lambda _: None)
>>> cases = [EditCase("0", "Paris", "{} is the capital of", "Italy", "France")]
>>> cfg = MemitConfig(steps=2, cov_samples=100, context_prefixes=1, early_stop=0.0)
>>> memit, cost = Memit(cfg, cache_root=tempfile.mkdtemp()), Cost()
>>> with memit.edited(model, cases, cost):
...     (cost.forward, cost.backward)
(6, 1)
>>> memit.settings()["resolved_layers"]
[0, 1]
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from analyses.capacity.lora.base import _frozen_base
from analyses.edit.cases import EditCase
from analyses.edit.memit.config import AlphaEditConfig, MemitConfig
from analyses.edit.memit.states import memit_keys, post_norm, subject_residuals, through_post_norm
from analyses.edit.memit.update import alphaedit_delta, memit_delta, null_space_projector
from analyses.edit.method import Cost, Held
from analyses.edit.rome.covariance import CovSpec, covariances, regularised
from analyses.edit.rome.keys import MEMIT_STARTS, context_prefixes, edited_linear, subject_keys
from analyses.edit.rome.method import checksum
from analyses.edit.rome.value import at_residual, target_value

_UPDATE_ONLY = frozenset(
    {"mom2_update_weight", "nullspace_threshold", "l2", "key_scaled", "batch_size", "layers"}
)
"""Config fields that change the solve but not a first batch's ``z`` (the last layer is in
the memo's key itself)."""


class Memit:
    """MEMIT as a :class:`analyses.edit.method.Method` (see the module). ``C`` per layer comes
    from the shared covariance cache (:func:`analyses.edit.rome.covariance.covariances`); its
    seconds and the context prefixes' are in ``setup_seconds``, not charged to the edits.

    ``z_memo`` (optional, shared by a tuning grid): the first batch's targets ``z``, which
    depend only on the unedited model, the last edited layer, the case and the value settings,
    not on the update weight or the null space; a setting that finds its ``z`` there is
    charged the forwards, backwards and seconds its first computation took."""

    name = "memit"

    def __init__(
        self,
        config: MemitConfig | None = None,
        cache_root: str | Path | None = None,
        z_memo: dict | None = None,
    ) -> None:
        self.config = config if config is not None else self.default_config()
        self.cache_root = cache_root
        self.z_memo = z_memo
        self.setup_seconds = 0.0
        self._layers: tuple[int, ...] = ()
        self._cov_info: dict[str, Any] = {}
        self._C: dict[tuple[str, int], Tensor] = {}
        self._prefixes: list[str] = []
        self.last_values: list[dict[str, Any]] = []
        self._weight: float | None = None
        self._prepared: dict[tuple[str, tuple[int, ...]], dict[int, Any]] = {}

    @staticmethod
    def default_config() -> MemitConfig:
        return MemitConfig()

    def covariances(self, model, layers: Sequence[int]) -> dict[int, Tensor]:
        """Each layer's raw ``C`` (float32), from the cache; kept by this object after its
        first use (a later call needs no fingerprint of the weights)."""
        missing = [layer for layer in layers if (model.name, layer) not in self._C]
        if missing:
            spec = CovSpec(tokens=self.config.cov_samples, seed=self.config.seed)
            got = covariances(model, missing, spec, self.cache_root)
            self.setup_seconds += sum(info["seconds"] for _, info in got.values())
            info = got[missing[0]][1]
            self._cov_info = {k: v for k, v in info.items() if k not in ("from", "seconds")}
            self._C.update({(model.name, layer): C for layer, (C, _) in got.items()})
        return {layer: self._C[(model.name, layer)] for layer in layers}

    def prefixes(self, model) -> list[str]:
        """``""`` (the bare prompt) and MEMIT's context prefixes, made once per model."""
        cfg = self.config
        started = time.perf_counter()
        made = context_prefixes(
            model,
            cfg.context_prefixes,
            cfg.prefix_lengths,
            top_k=cfg.prefix_top_k,
            seed=cfg.seed,
            starts=MEMIT_STARTS,
        )
        self.setup_seconds += time.perf_counter() - started
        self._prefixes = ["", *made]
        return self._prefixes

    def _prepare(self, model, layers: tuple[int, ...]) -> dict[int, Any]:
        """Per layer, what the solve needs besides the batch: here ``C`` regularised."""
        covs = self.covariances(model, layers)
        return {layer: regularised(C, self.config.cov_lambda) for layer, C in covs.items()}

    def _fresh(self, prepared: dict[int, Any]) -> dict[int, Any]:
        """The per-call state of each layer (MEMIT: the prepared ``C`` itself)."""
        return dict(prepared)

    def _delta(self, layer: int, K: Tensor, V: Tensor, state: Any) -> Tensor:
        weight = self.config.update_weight(int(state.shape[0]))
        self._weight = weight
        return memit_delta(K, V, state, weight)

    @contextlib.contextmanager
    def edited(self, model, cases: Sequence[EditCase], cost: Cost) -> Iterator[Held]:
        """Write ``cases`` in batches of ``batch_size`` (all at once when None), each batch
        seeing the earlier ones, yield ``Held()``, and restore every edited weight on exit
        (RuntimeError if a checksum then differs)."""
        cfg = self.config
        layers = cfg.resolved_layers(model)
        self._layers = layers
        if (model.name, layers) not in self._prepared:  # once per model: not charged
            started = time.perf_counter()
            self._prepared[(model.name, layers)] = self._prepare(model, layers)
            self.setup_seconds += time.perf_counter() - started
        states = self._fresh(self._prepared[(model.name, layers)])
        prefixes = self.prefixes(model)
        linears = {layer: edited_linear(model, layer) for layer in layers}
        before = {layer: lin.weight.detach().clone() for layer, lin in linears.items()}
        digests = {layer: checksum(w) for layer, w in before.items()}
        self.last_values = []
        size = cfg.batch_size or max(1, len(cases))
        try:
            with _frozen_base(model):
                for start in range(0, len(cases), size):
                    started = time.perf_counter()
                    chunk = list(cases[start : start + size])
                    self._write(
                        model, chunk, layers, linears, states, prefixes, cost, first=start == 0
                    )
                    cost.seconds += time.perf_counter() - started
            yield Held()
        finally:
            with torch.no_grad():
                for layer, lin in linears.items():
                    lin.weight.copy_(before[layer])
            bad = [
                layer for layer, lin in linears.items() if checksum(lin.weight) != digests[layer]
            ]
            if bad:
                raise RuntimeError(f"{self.name}: layers {bad}' weights were not restored exactly")

    def _z(self, model, last: int, case: EditCase, prefixes, cost: Cost, first: bool) -> Tensor:
        """``z`` for ``case`` (from ``z_memo`` when this is the first batch and it is there)."""
        cfg = self.config
        value = {k: v for k, v in cfg.to_dict().items() if k not in _UPDATE_ONLY}
        key = (
            model.name,
            last,
            case.subject,
            case.prompt,
            case.target_new,
            tuple(prefixes),
            repr(sorted(value.items())),
        )
        memo = self.z_memo if first else None
        if memo is not None and key in memo:
            z, info, spent = memo[key]
            cost.forward, cost.backward = cost.forward + spent[0], cost.backward + spent[1]
            cost.seconds += spent[2]
        else:
            fwd, bwd, began = cost.forward, cost.backward, time.perf_counter()
            init, delta, info = target_value(model, at_residual, last, case, cfg, cost, prefixes)
            z = init + delta
            if memo is not None:
                spent = (cost.forward - fwd, cost.backward - bwd, time.perf_counter() - began)
                memo[key] = (z.clone(), info, spent)
        self.last_values.append(info)
        return z

    def _write(
        self, model, chunk, layers, linears, states, prefixes, cost: Cost, first: bool = False
    ) -> None:
        """One batch, as the module says."""
        cfg, last = self.config, layers[-1]
        zs = [self._z(model, last, case, prefixes, cost, first) for case in chunk]
        Z = torch.stack(zs)
        for i, layer in enumerate(layers):
            linear = linears[layer]
            per_case = subject_keys(model, layer, chunk, prefixes, cost)
            K = memit_keys(per_case).to(linear.weight.device)
            here = subject_residuals(model, last, chunk, cost).to(Z.device)
            R = (Z - here) / (len(layers) - i)
            norm = post_norm(model, layer) if cfg.invert_post_norm else None
            if norm is not None:
                with torch.no_grad():
                    y = linear(torch.stack([k[0] for k in per_case]).to(linear.weight.dtype))
                R = through_post_norm(norm, y.float(), R.to(y.device))
            with torch.no_grad():
                delta = self._delta(layer, K, R.to(K.device), states[layer])
                linear.weight.add_(delta.to(linear.weight.dtype))
        self._after(model, chunk, layers, states, prefixes, cost)

    def _after(self, model, chunk, layers, states, prefixes, cost: Cost) -> None:
        """What a written batch leaves for the next one: nothing for MEMIT."""

    def settings(self) -> dict[str, Any]:
        out = self.config.to_dict()
        out["resolved_layers"] = list(self._layers)
        out["covariance"] = dict(self._cov_info)
        out["covariance_tokens"] = self._cov_info.get("tokens")
        out["setup_seconds"] = round(self.setup_seconds, 3)
        out["context_prefixes_used"] = len(self._prefixes) - 1 if self._prefixes else None
        if self._weight is not None:
            out["mom2_update_weight_used"] = self._weight
        return out


class AlphaEdit(Memit):
    """AlphaEdit (Fang et al. 2025) as a :class:`analyses.edit.method.Method`: MEMIT's batches
    with the update projected onto the null space of the preserved keys (``P``, from ``C``'s
    eigenvalues below ``nullspace_threshold``) and solved with the keys of every earlier batch
    (:func:`.update.alphaedit_delta`). ``null_dims``: per layer, the rank of ``P``."""

    name = "alphaedit"
    config: AlphaEditConfig

    def __init__(
        self,
        config: AlphaEditConfig | None = None,
        cache_root: str | Path | None = None,
        z_memo: dict | None = None,
    ) -> None:
        super().__init__(config, cache_root, z_memo)
        self.null_dims: dict[int, int] = {}
        self.key_scale: dict[int, float] = {}

    @staticmethod
    def default_config() -> AlphaEditConfig:
        return AlphaEditConfig()

    def _prepare(self, model, layers: tuple[int, ...]) -> dict[int, Any]:
        """Per layer ``(P, l2)``, the threshold and l2 scaled when asked."""
        cfg = self.config
        out = {}
        for layer, C in self.covariances(model, layers).items():
            scale = float(C.double().diagonal().mean()) if cfg.key_scaled else 1.0
            self.key_scale[layer] = float(C.double().diagonal().mean())
            P = null_space_projector(C, cfg.nullspace_threshold * scale)
            self.null_dims[layer] = int(round(float(P.trace())))
            out[layer] = (P, cfg.l2 * scale)
        return out

    def _fresh(self, prepared: dict[int, Any]) -> dict[int, Any]:
        """Per layer ``(P, K_pᵀ K_p, l2)`` with no earlier keys yet."""
        return {layer: (P, torch.zeros_like(P), l2) for layer, (P, l2) in prepared.items()}

    def _delta(self, layer: int, K: Tensor, V: Tensor, state: Any) -> Tensor:
        P, earlier, l2 = state
        return alphaedit_delta(K, V, P, earlier, l2)

    def _after(self, model, chunk, layers, states, prefixes, cost: Cost) -> None:
        """The batch's keys at every layer, read after its write, join ``K_p``."""
        for layer in layers:
            P, earlier, l2 = states[layer]
            K = memit_keys(subject_keys(model, layer, chunk, prefixes, cost)).double()
            states[layer] = (P, earlier + K.T.to(earlier.device) @ K.to(earlier.device), l2)

    def settings(self) -> dict[str, Any]:
        out = super().settings()
        out["null_dims"] = {str(k): v for k, v in self.null_dims.items()}
        out["key_scale"] = {str(k): v for k, v in self.key_scale.items()}  # mean eigenvalue of C
        return out
