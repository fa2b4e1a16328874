"""Teacher forcing a whole answer: one batch of ``prompt + answer`` and the NLL of every answer
token, the loss GRACE's values and LoRA's adapters train on (ROME's v* too).

>>> from fmi.models.registry import load_model
>>> model = load_model("tiny-neox", announce=lambda _: None)
>>> batch = forced(model.tokenizer, ["Alice's favourite drink is"], [" green tea"])
>>> batch.targets[0].tolist() == model.tokenizer(" green tea")["input_ids"]
True
>>> logits = model.bridge(batch.tokens, attention_mask=batch.mask)
>>> float(answer_nll(logits, batch)) > 0
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from fmi.core.prompts import encode
from fmi.memory.answers import answer_positions


@dataclass(frozen=True)
class Forced:
    """A left-padded batch of ``prompt + answer`` texts: per row the answer's token ids, the
    (padded) columns predicting them, and the column of the prompt's last token."""

    tokens: Int[Tensor, "batch pos"]
    mask: Int[Tensor, "batch pos"]
    targets: list[Int[Tensor, " t"]]
    predicting: list[Int[Tensor, " t"]]
    prompt_last: Int[Tensor, " batch"]


def forced(tokenizer, prompts: list[str], answers: list[str]) -> Forced:
    """The :class:`Forced` batch of ``prompts[i] + answers[i]`` (no end text)."""
    enc = encode(tokenizer, [p + a for p, a in zip(prompts, answers, strict=True)])
    targets, predicting, last = [], [], []
    for row, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        ids, pos, _ = answer_positions(tokenizer, p, a, "")
        pad = int(enc.pad[row])
        targets.append(torch.tensor(ids))
        predicting.append(torch.tensor(pos) + pad)
        last.append(pos[0] + pad)
    return Forced(enc.tokens, enc.mask, targets, predicting, torch.tensor(last))


def answer_nll(logits: Float[Tensor, "batch pos vocab"], batch: Forced) -> Tensor:
    """Mean over rows of each row's mean answer-token NLL (every token of the answer counts)."""
    logp = logits.float().log_softmax(-1)
    rows = [
        -logp[row, pos, ids.to(logp.device)].mean()
        for row, (pos, ids) in enumerate(zip(batch.predicting, batch.targets, strict=True))
    ]
    return torch.stack(rows).mean()
