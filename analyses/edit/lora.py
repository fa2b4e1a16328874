"""LoRA fine-tuning as an editor: one adapter on every block's MLP output projection, trained
edit after edit on the whole answer, with a retention term; the weights are never touched.

Writing edit ``i`` takes ``steps`` Adam steps (``lr``) on the teacher-forced NLL of every token of
its answer after its rewrite prompt, plus ``retention_weight`` x ``KL(p_base || p)`` at the last
position of training generic prompts (:func:`analyses.capacity.lora.retention.retention_kl`).
The adapter is a forward hook (:func:`analyses.capacity.lora.adapter.applied`), so removing it
leaves the model bit-identical; it is applied while the held edits are scored and removed on exit.
One adapter and one Adam state run through all the held edits (sequential editing): the adapter
after T edits has taken ``T x steps`` steps, which is why the grid
(:data:`analyses.edit.tune.LORA_GRID`) reaches down to 1e-4 and 5 steps per edit.

Against EasyEdit's LoRA baseline (zjunlp/EasyEdit ``hparams/LoRA/llama-7b.yaml``: AdaLoRA, rank
8, alpha 32, dropout 0.1, ``q_proj`` / ``v_proj``, Adam lr 5e-3, 70 steps, ``kl_factor: 0``):
plain LoRA of rank 4, no scaling or dropout, on every block's MLP output projection; the
learning rate and steps come from the grid; and a retention KL term that EasyEdit's recipe
leaves at 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from analyses.capacity.lora.adapter import LoraAdapter, applied
from analyses.capacity.lora.base import _frozen_base
from analyses.capacity.lora.retention import Retention, retention_kl
from analyses.edit.cases import EditCase, answer_text
from analyses.edit.method import Cost, Held
from analyses.edit.teacher import answer_nll, forced


@dataclass
class LoraEdit:
    """Rank-``rank`` LoRA, ``steps`` steps per edit at ``lr``, retention on ``retention``."""

    rank: int = 4
    lr: float = 1e-2
    steps: int = 10
    retention_weight: float = 1.0
    retention_texts: tuple[str, ...] = ()
    seed: int = 0
    name: str = "lora"
    _retention: dict[str, Retention] = field(default_factory=dict, repr=False)

    def retention(self, model: Any) -> Retention | None:
        if not self.retention_texts or self.retention_weight == 0:
            return None
        if model.name not in self._retention:
            texts = list(self.retention_texts)
            self._retention[model.name] = Retention.build(model, texts, len(texts))
        return self._retention[model.name]

    @contextmanager
    def edited(self, model: Any, cases: Sequence[EditCase], cost: Cost) -> Iterator[Held]:
        keep = self.retention(model)
        adapter = LoraAdapter.init(model.hf_model, self.rank, self.seed)
        opt = torch.optim.Adam(adapter.parameters(), lr=self.lr)
        with applied(model.hf_model, adapter):
            t0 = time.perf_counter()
            with _frozen_base(model), torch.enable_grad():
                for c in cases:
                    batch = forced(model.tokenizer, [c.rewrite], [answer_text(c.target_new)])
                    for _ in range(self.steps):
                        logits = model.bridge(batch.tokens, attention_mask=batch.mask)
                        loss = answer_nll(logits, batch)
                        if keep is not None:
                            kl = retention_kl(model, keep.batches[0], keep.base[0])
                            loss = loss + self.retention_weight * kl
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                        cost.forward += 1 + (keep is not None)
                        cost.backward += 1
            for p in adapter.parameters():
                p.grad = None
            cost.seconds += time.perf_counter() - t0
            yield Held()

    def settings(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "lr": self.lr,
            "steps_per_edit": self.steps,
            "retention_weight": self.retention_weight,
            "retention_prompts": len(self.retention_texts),
            "targets": "every block's MLP output projection",
            "seed": self.seed,
        }
