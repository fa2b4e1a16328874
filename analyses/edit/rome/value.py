"""ROME's target value ``v*``: the edited Linear's output that makes the model give the edit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from analyses.edit.cases import EditCase, answer_text
from analyses.edit.method import Cost
from analyses.edit.rome.config import RomeConfig
from analyses.edit.rome.keys import edited_linear, subject_row

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
    """What :func:`target_value` runs: each ``prefix + rewrite`` with the answer teacher-forced
    (its last token dropped), then the essence prompt ``"{subject} is a"``, left-padded.

    ``where``: (row, column) of each row's subject's last token, where the value goes;
    ``keep``: the answer-predicting columns (the last is the KL's); ``targets``: the answer's
    tokens, one row per prompt (the first ``prompts`` rows)."""

    tokens: Tensor
    mask: Tensor
    where: tuple[Tensor, Tensor]
    keep: Tensor
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
    where = (
        torch.arange(len(rows)),
        torch.tensor([p + r.subject_last for p, r in zip(pads, [*prompts, essence], strict=True)]),
    )
    keep = torch.arange(width - n_ans, width)  # answer-predicting columns; the last is the KL's
    targets = torch.tensor(answer).expand(len(prompts), n_ans)
    return ValueBatch(tokens, mask, where, keep, targets, len(prompts))


def target_value(
    model,
    layer: int,
    case: EditCase,
    key: Tensor,
    cfg: RomeConfig,
    cost: Cost | None = None,
    prefixes: Sequence[str] = ("",),
) -> Tensor:
    """``v*`` ``[d_out]``: the output the edited Linear should give for ``key``, ``W k + b +
    delta``. ``delta`` takes ``cfg.steps`` Adam steps (``cfg.lr``) on the mean NLL of every
    token of ``answer_text(case.target_new)`` teacher-forced after each ``prefix + rewrite``,
    plus ``cfg.kl_weight`` x ``KL(p_orig || p_edited)`` of the next token after
    ``"{subject} is a"``; in every row the Linear's output at the subject's last token is
    replaced by ``W k + b + delta``. After each step ``||delta|| <= cfg.clamp * ||W k + b||``."""
    cost = cost if cost is not None else Cost()
    linear = edited_linear(model, layer)
    batch = value_batch(model.tokenizer, case, prefixes)
    with torch.no_grad():
        base = linear(key.to(linear.weight.dtype)).float()
    delta = torch.zeros_like(base, requires_grad=True)
    where = tuple(i.to(base.device) for i in batch.where)

    def hook(module: torch.nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
        value = (base + delta).to(out.dtype).expand(batch.rows, -1)
        return out.index_put(where, value)

    def logits() -> Tensor:
        return model.bridge(
            batch.tokens, attention_mask=batch.mask, logits_to_keep=batch.keep
        ).float()

    with torch.no_grad():
        kl_base = logits()[-1, -1].log_softmax(-1)
        cost.forward += 1
    limit = cfg.clamp * float(base.norm())
    handle = linear.register_forward_hook(hook)
    try:
        optimise_delta(delta, logits, kl_base, batch, cfg, limit, cost)
    finally:
        handle.remove()
    return (base + delta).detach()


def optimise_delta(
    delta: Tensor,
    logits: Callable[[], Tensor],
    kl_base: Tensor,
    batch: ValueBatch,
    cfg: RomeConfig,
    limit: float,
    cost: Cost,
) -> None:
    """``cfg.steps`` Adam steps on ``delta`` (in place): the answer's mean NLL over the prompt
    rows of ``logits()`` plus ``cfg.kl_weight`` x the essence row's KL from ``kl_base``, with
    ``||delta||`` clamped to ``limit`` after each step; each step one forward and backward."""
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    for _ in range(cfg.steps):
        out = logits()
        logp = out[: batch.prompts].log_softmax(-1)
        nll = -logp.gather(-1, batch.targets.unsqueeze(-1).to(logp.device)).mean()
        kl = torch.nn.functional.kl_div(
            out[-1, -1].log_softmax(-1), kl_base, log_target=True, reduction="sum"
        )
        loss = nll + cfg.kl_weight * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        cost.forward += 1
        cost.backward += 1
        with torch.no_grad():
            norm = float(delta.norm())
            if norm > limit:
                delta.mul_(limit / norm)
