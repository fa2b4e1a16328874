"""GRACE (Hartvigsen et al., NeurIPS 2023) as an editor on free-form answers, run as its code
runs: a codebook on one MLP down projection, each edit's value trained until the edit holds.

Followed: Thartvigsen/GRACE ``grace/editors/grace.py`` and ``grace/config/editor/grace.yaml``
(``n_iter: 100``, ``edit_lr: 1.0``, ``eps: 1.0``, ``dist_fn: euc``, ``val_init: cold``,
``eps_expand: coverage``), and zjunlp/EasyEdit ``easyeditor/models/grace/GRACE.py`` with its
decoder-LM hparams (``hparams/GRACE/*.yaml``: ``inner_params: model.layers[L].mlp.down_proj``,
``replacement: replace_last``, ``edit_lr: 1.0``, ``n_iter`` 50 to 200).

- Site (``at="mlp"``): the key is the down projection's input at the prompt's last token
  (``blocks.L.mlp.out.hook_in``), the value replaces its output there
  (``blocks.L.mlp.out.hook_out``), as GRACE wraps ``mlp.down_proj``. ``at="resid"`` keys and
  replaces ``blocks.L.hook_resid_post`` instead (with the state itself as the warm start).
- Codebook: :func:`analyses.compare.grace.build` (add / expand / split, Euclidean, label = the
  target text); the edits are written in order and each one trains the value of the code it
  maps to (a new code, or the code it expanded or split), as GRACE trains ``chosen_key``.
- Value: starts at ``torch.rand`` (GRACE's ``val_init: cold``; seeded per case) or, with
  ``init="warm"``, at the site's own output; then Adam at ``lr`` on the mean NLL of every answer
  token, teacher-forced, with the value at the prompt's last position only (``replace_last``),
  weights frozen. Training stops once the edit holds, checked before every step: every answer
  token is the teacher-forced argmax (so greedy decoding writes the answer) and, when
  ``stop_nll`` is set, the answer's mean NLL is at most that; else after ``n_iter`` steps.
  (GRACE's config names ``reg: early_stop``, but its loop runs all ``n_iter`` iterations.)
- Reading: on the prompt pass the last position's key is looked up; within the nearest code's
  radius its value replaces the output there; the KV-cached greedy steps run untouched (GRACE
  under EasyEdit also looks every generated token up).

``eps_init`` and the layer are chosen on the training part (:mod:`analyses.edit.tune`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from analyses.capacity.lora.base import _frozen_base
from analyses.compare.grace import Codebook, build, last_states
from analyses.edit.cases import EditCase, answer_text
from analyses.edit.method import Cost, Held
from analyses.edit.teacher import Forced, answer_nll, forced
from fmi.core.prompts import Encoded
from fmi.core.sites import resid
from fmi.errors import ConfigError

SITES = ("mlp", "resid")
INITS = ("cold", "warm")


def sites(layer: int, at: str) -> tuple[str, str]:
    """``(key site, value site)`` of GRACE at block ``layer``.

    >>> sites(3, "mlp")
    ('blocks.3.mlp.out.hook_in', 'blocks.3.mlp.out.hook_out')
    >>> sites(3, "resid")
    ('blocks.3.hook_resid_post', 'blocks.3.hook_resid_post')
    """
    if at == "mlp":
        return f"blocks.{layer}.mlp.out.hook_in", f"blocks.{layer}.mlp.out.hook_out"
    if at == "resid":
        return resid(layer, "post"), resid(layer, "post")
    raise ConfigError(f"GRACE's site must be one of {', '.join(SITES)}, got {at!r}")


def _put(value: Tensor, columns: Tensor):
    """A hook that writes ``value[0]`` at column ``columns[b]`` of every row ``b``."""

    def hook(act: Tensor, hook: object) -> Tensor:
        out = act.clone()
        out[torch.arange(act.shape[0]), columns] = value[0].to(act.dtype)
        return out

    return hook


def holds(logits: Tensor, batch: Forced) -> bool:
    """Whether every answer token is the teacher-forced argmax, in every row: greedy decoding
    from the prompt then writes the whole answer.

    >>> batch = Forced(torch.zeros(1, 3).long(), torch.ones(1, 3).long(),
    ...                [torch.tensor([2, 0])], [torch.tensor([1, 2])], torch.tensor([1]))
    >>> logits = torch.zeros(1, 3, 4)
    >>> logits[0, 1, 2] = logits[0, 2, 0] = 1.0
    >>> holds(logits, batch)
    True
    >>> logits[0, 2, 3] = 2.0  # the answer's second token is no longer the pick
    >>> holds(logits, batch)
    False
    """
    return all(
        bool((logits[row, pos].argmax(-1).cpu() == ids).all())
        for row, (pos, ids) in enumerate(zip(batch.predicting, batch.targets, strict=True))
    )


def train_value(
    model,
    site: str,
    batch: Forced,
    init: Tensor,
    n_iter: int,
    lr: float,
    stop_nll: float | None = None,
) -> tuple[Tensor, int]:
    """``init`` trained by Adam (``lr``) on the answer NLL with the value at ``site``'s
    prompt-last position, until the edit holds (:func:`holds`, and NLL <= ``stop_nll`` when
    given) or after ``n_iter`` steps; returns the value and the steps taken."""
    dev = model.bridge.cfg.device
    value = init.detach().clone().float().to(dev)[None].requires_grad_(True)
    opt = torch.optim.Adam([value], lr=lr)
    steps = 0
    with _frozen_base(model), torch.enable_grad():
        while True:
            with model.bridge.hooks(fwd_hooks=[(site, _put(value, batch.prompt_last))]):
                logits = model.bridge(batch.tokens, attention_mask=batch.mask)
            loss = answer_nll(logits, batch)
            nll = float(loss.detach())
            done = holds(logits.detach(), batch) and (stop_nll is None or nll <= stop_nll)
            if done or steps == n_iter:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    return value.detach()[0], steps


def lookup_hooks(key_site: str, value_site: str, book: Codebook, values: Tensor) -> list:
    """The read hooks: on the prompt pass (each hook's first call), look the last position's key
    up and, where it lies within the nearest code's radius, replace the value site's output
    there by that code's value."""
    state: dict[str, Any] = {"reads": 0, "writes": 0}

    def read(act: Tensor, hook: object) -> Tensor:
        state["reads"] += 1
        if state["reads"] == 1 and len(book.labels):
            idx, fire = book.lookup(act[:, -1].float())
            state["hit"] = (idx, fire) if bool(fire.any()) else None
        return act

    def write(act: Tensor, hook: object) -> Tensor:
        state["writes"] += 1
        hit = state.pop("hit", None) if state["writes"] == 1 else None
        if hit is None:
            return act
        idx, fire = hit
        out = act.clone()
        rows = fire.nonzero().squeeze(-1)
        out[rows, -1] = values[idx[rows].to(values.device)].to(act.device, act.dtype)
        return out

    if key_site == value_site:
        return [(key_site, lambda act, hook: write(read(act, hook), hook))]
    return [(key_site, read), (value_site, write)]


@dataclass
class GraceEdit:
    """GRACE at block ``layer`` (site ``at``) with initial radius ``eps_init`` (see the module).

    ``memo`` (optional, shared by a tuning grid): trained values of edits that open a new code,
    keyed by site and case; such training does not depend on ``eps_init``, so the grid's
    settings at one layer train each edit once. The cost of a reused value (its seconds and
    passes) is counted again, as if trained."""

    layer: int
    eps_init: float
    n_iter: int = 100
    lr: float = 1.0
    stop_nll: float | None = None
    at: str = "mlp"
    init: str = "cold"
    seed: int = 0
    name: str = "grace"
    memo: dict | None = field(default=None, repr=False, compare=False)
    steps_taken: list[int] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        sites(self.layer, self.at)
        if self.init not in INITS:
            raise ConfigError(f"GRACE's init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.n_iter < 0 or self.lr <= 0 or (self.stop_nll is not None and self.stop_nll < 0):
            raise ConfigError(
                f"GRACE needs n_iter >= 0, lr > 0 and stop_nll >= 0, got {self.n_iter}, "
                f"{self.lr}, {self.stop_nll}"
            )

    @property
    def site(self) -> str:
        """The value site."""
        return sites(self.layer, self.at)[1]

    def _init(self, model, case: EditCase, warm: Tensor | None, row: int) -> Tensor:
        """A new code's starting value: the site's own output (warm) or ``torch.rand``, seeded
        by the case (cold)."""
        if warm is not None:
            return warm[row]
        width = int(model.bridge.cfg.d_model)
        gen = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{case.case_id}".encode()))
        return torch.rand(width, generator=gen)

    @contextmanager
    def edited(self, model: Any, cases: Sequence[EditCase], cost: Cost) -> Iterator[Held]:
        t0 = time.perf_counter()
        key_site, value_site = sites(self.layer, self.at)
        texts = [c.rewrite for c in cases]
        keys = last_states(model, texts, key_site, 16)
        warm = last_states(model, texts, value_site, 16) if self.init == "warm" else None
        cost.forward += -(-len(cases) // 16) * (1 + (warm is not None))
        names = sorted({c.target_new for c in cases})
        book = build(keys, [names.index(c.target_new) for c in cases], self.eps_init)
        values = torch.zeros(len(book.labels), int(model.bridge.cfg.d_model), device=keys.device)
        trained = [False] * len(book.labels)
        extra_s = 0.0
        self.steps_taken = []
        for e, c in enumerate(cases):
            code = book.code_of[e]
            start = values[code] if trained[code] else self._init(model, c, warm, e)
            memo_key = (value_site, self.at, self.init, self.seed, c.rewrite, c.target_new)
            if not trained[code] and self.memo is not None and memo_key in self.memo:
                values[code], steps, seconds = self.memo[memo_key]
                extra_s += seconds
            else:
                began = time.perf_counter()
                batch = forced(model.tokenizer, [c.rewrite], [answer_text(c.target_new)])
                values[code], steps = train_value(
                    model, value_site, batch, start, self.n_iter, self.lr, self.stop_nll
                )
                if not trained[code] and self.memo is not None:
                    self.memo[memo_key] = (values[code].clone(), steps, time.perf_counter() - began)
            trained[code] = True
            self.steps_taken.append(steps)
            cost.forward += steps + 1
            cost.backward += steps
        cost.seconds += time.perf_counter() - t0 + extra_s

        def hooks_for(enc: Encoded, start: int) -> list:
            return lookup_hooks(key_site, value_site, book, values)

        yield Held(hooks_for=hooks_for)

    def settings(self) -> dict[str, Any]:
        key_site, value_site = sites(self.layer, self.at)
        return {
            "key_site": key_site,
            "value_site": value_site,
            "eps_init": self.eps_init,
            "n_iter": self.n_iter,
            "lr": self.lr,
            "optimizer": "adam",
            "stop": "the answer is the teacher-forced argmax"
            + ("" if self.stop_nll is None else f" and its NLL <= {self.stop_nll}"),
            "replacement": "replace_last",
            "val_init": self.init,
            "distance": "euclidean",
        }
