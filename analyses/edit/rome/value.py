"""The target value of ROME (``v*``, an MLP output) and MEMIT (``z``, a block's residual output):
the vector that, added at the subject's last token, makes the model give the edit's target.

Both are one optimisation (github kmeng01/rome ``rome/compute_v.py``, kmeng01/memit
``memit/compute_z.py``): one ``delta`` is added to the site's output at the subject's last token
of every row of one batch, the bare rewrite prompt and each context prefix before it (the
target teacher-forced after it), and the essence prompt ``"{subject} is a"``. The loss is the
target's NLL (per row the mean over its tokens, then the mean over rows), plus ``kl_weight`` x
``KL(p_edited || p_init)`` of the essence row's next token at the subject's last token, plus
``weight_decay`` x ``||delta|| / ||v_init||²`` (``v_init``: the site's output on the bare
prompt). Adam at ``lr``; the loop stops when the loss is below ``early_stop``, and the last of
``steps`` forwards takes no step; after each step ``||delta|| <= clamp * ||v_init||``.
``cfg`` is any config with those fields (:class:`analyses.edit.rome.config.RomeConfig`,
:class:`analyses.edit.memit.config.MemitConfig`).

>>> from fmi.models.registry import load_model
>>> from analyses.edit.rome.config import RomeConfig
>>> model = load_model("tiny-gemma", announce=lambda _: None)
>>> case = EditCase("0", "Paris", "{} is the capital of", "Italy", "France")
>>> value_batch(model.tokenizer, case, ["", "A day. "]).rows  # two prompts and the essence row
3
>>> cfg = RomeConfig(steps=3, early_stop=0.0)
>>> init, delta, info = target_value(model, at_linear, 0, case, cfg)
>>> init.shape == delta.shape, info["steps"]
(True, 3)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from analyses.edit.cases import EditCase, answer_text
from analyses.edit.method import Cost
from analyses.edit.rome.keys import edited_linear, subject_row
from fmi.core.sites import resid

KL_PROMPT = "{} is a"


def left_padded(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor, list[int]]:
    """``rows`` left-padded with ``pad_id``: tokens, mask, and each row's padding."""
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, r in enumerate(rows):
        tokens[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return tokens, mask, [width - len(r) for r in rows]


@dataclass(frozen=True)
class ValueBatch:
    """What one v* optimisation runs: each ``prefix + rewrite`` with the answer teacher-forced
    (its last token dropped), then the essence prompt ``"{subject} is a"``, left-padded.

    ``where``: (row, column) of each row's subject's last token, where delta goes (row 0: the
    bare prompt when the first prefix is ``""``); ``keep``: the columns whose logits are read,
    the answer-predicting ones (``answer``: their indices into ``keep``) and the essence row's
    subject column (``kl``); ``targets``: the answer's tokens, one row per prompt row (the
    first ``prompts`` rows)."""

    tokens: Tensor
    mask: Tensor
    where: tuple[Tensor, Tensor]
    keep: Tensor
    answer: Tensor
    kl: int
    targets: Tensor
    prompts: int

    @property
    def rows(self) -> int:
        return int(self.tokens.shape[0])


def value_batch(tok, case: EditCase, prefixes: Sequence[str]) -> ValueBatch:
    """The :class:`ValueBatch` of ``case``'s rewrite after each of ``prefixes``."""
    answer = list(tok(answer_text(case.target_new), add_special_tokens=False)["input_ids"])
    prompts = [subject_row(tok, case.rewrite, case.subject, p) for p in prefixes]
    essence = subject_row(tok, KL_PROMPT.format(case.subject), case.subject)
    rows = [r.ids + answer[:-1] for r in prompts] + [essence.ids]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    tokens, mask, pads = left_padded(rows, pad_id)
    width, n_ans = tokens.shape[1], len(answer)
    cols = [p + r.subject_last for p, r in zip(pads, [*prompts, essence], strict=True)]
    where = (torch.arange(len(rows)), torch.tensor(cols))
    answer_cols = list(range(width - n_ans, width))
    keep = sorted({*answer_cols, cols[-1]})
    return ValueBatch(
        tokens,
        mask,
        where,
        torch.tensor(keep),
        torch.tensor([keep.index(c) for c in answer_cols]),
        keep.index(cols[-1]),
        torch.tensor(answer).expand(len(prompts), n_ans),
        len(prompts),
    )


def _adder(delta: Tensor, where: tuple[Tensor, Tensor], seen: dict[str, Tensor]):
    """``out`` with ``delta`` added at ``where``; the first call records row 0's output there."""

    def add(out: Tensor) -> Tensor:
        rows, cols = (i.to(out.device) for i in where)
        if "init" not in seen:
            seen["init"] = out[rows[0], cols[0]].detach().float().clone()
        return out.index_put((rows, cols), out[rows, cols] + delta.to(out.dtype))

    return add


@contextlib.contextmanager
def at_linear(model, layer: int, add: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """``add`` applied to block ``layer``'s MLP output projection output (ROME's site)."""
    handle = edited_linear(model, layer).register_forward_hook(lambda m, i, out: add(out))
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def at_residual(model, layer: int, add: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """``add`` applied to block ``layer``'s residual output (MEMIT's site)."""
    with model.bridge.hooks(fwd_hooks=[(resid(layer), lambda act, hook: add(act))]):
        yield


def target_value(
    model,
    site: Callable[[Any, int, Callable[[Tensor], Tensor]], contextlib.AbstractContextManager],
    layer: int,
    case: EditCase,
    cfg: Any,
    cost: Cost | None = None,
    prefixes: Sequence[str] = ("",),
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """``(v_init, delta, info)`` for ``case`` at ``site`` (:func:`at_linear` or
    :func:`at_residual`) of block ``layer``: the target is ``v_init + delta``. ``prefixes``
    must start with ``""`` (the bare prompt is row 0). ``info``: ``steps`` (forwards run),
    ``nll`` (first and last) and ``delta_norm``."""
    cost = cost if cost is not None else Cost()
    if not prefixes or prefixes[0] != "":
        raise ValueError('target_value: prefixes must start with "" (the bare prompt)')
    batch = value_batch(model.tokenizer, case, prefixes)
    d, device = _site_width(model, site, layer)
    delta = torch.zeros(d, device=device, requires_grad=True)
    seen: dict[str, Tensor] = {}
    with site(model, layer, _adder(delta, batch.where, seen)), torch.enable_grad():
        info = optimise(model, batch, delta, seen, cfg, cost)
    return seen["init"], delta.detach(), info


def _site_width(model, site, layer: int) -> tuple[int, torch.device]:
    """The width of ``site``'s output and the device of the block's weights."""
    linear = edited_linear(model, layer)
    if site is at_linear:
        return int(linear.out_features), linear.weight.device
    return int(model.bridge.cfg.d_model), linear.weight.device


def optimise(
    model, batch: ValueBatch, delta: Tensor, seen: dict[str, Tensor], cfg: Any, cost: Cost
) -> dict[str, Any]:
    """The loop of the module's docstring, ``delta`` changed in place (its hook installed)."""
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    keep = batch.keep
    kl_init: Tensor | None = None
    nll_first = nll_last = float("nan")
    run = 0
    for it in range(cfg.steps):
        out = model.bridge(batch.tokens, attention_mask=batch.mask, logits_to_keep=keep).float()
        cost.forward += 1
        run += 1
        logp = out[: batch.prompts, batch.answer.to(out.device)].log_softmax(-1)
        targets = batch.targets.to(out.device).unsqueeze(-1)
        nll = -logp.gather(-1, targets).squeeze(-1).mean(1).mean()
        kl_logp = out[-1, batch.kl].log_softmax(-1)
        if kl_init is None:
            kl_init = kl_logp.detach()
        kl = torch.nn.functional.kl_div(kl_init, kl_logp, log_target=True, reduction="sum")
        init = seen["init"].to(delta.device)
        decay = cfg.weight_decay * delta.norm() / init.norm().clamp_min(1e-12) ** 2
        loss = nll + cfg.kl_weight * kl + decay
        nll_last = float(nll.detach())
        if it == 0:
            nll_first = nll_last
        if float(loss.detach()) < cfg.early_stop or it == cfg.steps - 1:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        cost.backward += 1
        with torch.no_grad():
            limit = cfg.clamp * float(init.norm())
            norm = float(delta.norm())
            if norm > limit:
                delta.mul_(limit / norm)
    return {"steps": run, "nll": [nll_first, nll_last], "delta_norm": float(delta.detach().norm())}
