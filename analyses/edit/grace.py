"""GRACE as an editor on free-form answers: the codebook of :mod:`analyses.compare.grace` at one
residual site, with values trained on the whole answer.

Each edit's key is the site's state at the rewrite prompt's last token; codes are added with
GRACE's add / expand / split rules (:func:`analyses.compare.grace.build`, labels = target text). A
new
code's value starts at its key and takes ``steps`` Adam steps (``lr``) on the NLL of every token
of the answer, teacher-forced, with the value in place of the site's output at the prompt's last
position (frozen weights, no gradient to them). While decoding, the prompt pass looks the last
position's state up; within a code's radius the state is replaced by the code's value, and the
KV-cached steps run untouched. ``eps_init`` is chosen on the training part.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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


def _put(values: Tensor, columns: Tensor):
    """A hook that writes ``values[b]`` at column ``columns[b]`` of every row."""

    def hook(act: Tensor, hook: object) -> Tensor:
        out = act.clone()
        out[torch.arange(act.shape[0]), columns] = values.to(act.dtype)
        return out

    return hook


def train_value(model, site: str, batch: Forced, init: Tensor, steps: int, lr: float) -> Tensor:
    """One edit's value: ``init`` after ``steps`` Adam steps on the answer NLL with the value at
    the site's prompt-last position."""
    value = init.detach().clone()[None].requires_grad_(True)
    opt = torch.optim.Adam([value], lr=lr)
    with _frozen_base(model), torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            hooks = [(site, _put(value, batch.prompt_last))]
            with model.bridge.hooks(fwd_hooks=hooks):
                logits = model.bridge(batch.tokens, attention_mask=batch.mask)
            answer_nll(logits, batch).backward()
            opt.step()
    return value.detach()[0]


def lookup_hook(book: Codebook, values: Tensor):
    """The read hook: on the prompt pass (the first call), replace the last position's state by
    the nearest code's value where it lies within the code's radius."""
    state = {"calls": 0}

    def hook(act: Tensor, hook: object) -> Tensor:
        state["calls"] += 1
        if state["calls"] > 1 or not len(book.labels):
            return act
        idx, fire = book.lookup(act[:, -1].float())
        if not bool(fire.any()):
            return act
        out = act.clone()
        rows = fire.nonzero().squeeze(-1)
        out[rows, -1] = values[idx[rows]].to(act.dtype)
        return out

    return hook


@dataclass
class GraceEdit:
    """GRACE at ``blocks.{layer}.hook_resid_post`` with initial radius ``eps_init``."""

    layer: int
    eps_init: float
    steps: int = 10
    lr: float = 1.0
    name: str = "grace"

    @property
    def site(self) -> str:
        return resid(self.layer, "post")

    @contextmanager
    def edited(self, model: Any, cases: Sequence[EditCase], cost: Cost) -> Iterator[Held]:
        t0 = time.perf_counter()
        keys = last_states(model, [c.rewrite for c in cases], self.site, 16)
        cost.forward += -(-len(cases) // 16)
        names = sorted({c.target_new for c in cases})
        book = build(keys, [names.index(c.target_new) for c in cases], self.eps_init)
        values = keys[torch.tensor(book.owner)].clone()
        for code, owner in enumerate(book.owner):
            c = cases[owner]
            batch = forced(model.tokenizer, [c.rewrite], [answer_text(c.target_new)])
            values[code] = train_value(model, self.site, batch, keys[owner], self.steps, self.lr)
            cost.forward += self.steps
            cost.backward += self.steps
        cost.seconds += time.perf_counter() - t0

        def hooks_for(enc: Encoded, start: int) -> list:
            return [(self.site, lookup_hook(book, values))]

        yield Held(hooks_for=hooks_for)

    def settings(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "eps_init": self.eps_init,
            "steps": self.steps,
            "lr": self.lr,
            "distance": "euclidean",
        }
