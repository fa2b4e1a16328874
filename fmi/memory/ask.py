"""Asking a memory: greedy generation with its read hooks, and the hooks for any model call.

:func:`ask` decodes prompts in left-padded batches with :func:`fmi.memory.inject.memory_hooks`
(retrieval decides once per prompt at the answer position, then an entry's later values follow
greedy decoding along its stored answer) and reports, per prompt, which entry fired and its
score against the mode's threshold. :func:`applied` puts the same hooks on a model for any
TransformerLens call inside a ``with`` block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from fmi.core.generate import decode
from fmi.core.prompts import Encoded
from fmi.errors import MemoryMismatchError
from fmi.memory.entry import Entry
from fmi.memory.inject import ReadLog, memory_hooks
from fmi.memory.store import FastMemory


@dataclass(frozen=True)
class Answer:
    """One prompt's greedy continuation, and what the memory decided for it.

    >>> import fmi
    >>> from fmi.memory.ask import ask
    >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
    >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
    >>> answer = ask(memory, model, ["Where does Bob live?"], max_new_tokens=2)[0]
    >>> answer.explain().startswith("no entry fired")   # an empty memory
    True
    """

    text: str
    tokens: tuple[int, ...]
    entry: Entry | None  # the entry that fired, or None (every score below the threshold)
    score: float  # the best entry's score under the memory's mode (-inf: empty memory)
    threshold: float

    def explain(self) -> str:
        """One line: which entry fired (score vs threshold), or that none did."""
        if self.entry is None:
            return f"no entry fired (best score {self.score:.3f} < threshold {self.threshold:.3f})"
        e = self.entry
        return (
            f"entry {e.id} fired (score {self.score:.3f} >= threshold {self.threshold:.3f}): "
            f"{e.statement or e.symbol!r} -> {e.label!r}"
        )


def _check(memory: FastMemory, model) -> None:
    if model.name != memory.model_name:
        raise MemoryMismatchError(
            f"this memory was written with model {memory.model_name!r}, not {model.name!r}"
        )


def _cut(text: str, until: str | None) -> str:
    if until and until in text:
        return text[: text.index(until)]
    return text


def ask(
    memory: FastMemory,
    model,
    prompts: list[str],
    *,
    max_new_tokens: int = 16,
    until: str | None = None,
    batch_size: int = 16,
) -> list[Answer]:
    """Greedy-decode ``prompts`` reading ``memory`` and say what fired for each; texts are cut
    at the first ``until``.

    >>> import fmi
    >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
    >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
    >>> ask(memory, model, ["Where does Bob live?"])[0].entry is None   # an empty memory
    True
    """
    _check(memory, model)
    log = ReadLog()
    mode = memory.mode

    def hooks_for(enc: Encoded, start: int):
        return memory_hooks(memory, mode, enc.content, log) if len(memory) else []

    out = decode(model, prompts, hooks_for, max_new_tokens=max_new_tokens, batch_size=batch_size)
    threshold = memory.thresholds.get(mode, float("-inf"))
    if len(memory):
        entry, score = log.entry.tolist(), torch.cat([d.score for d in log.decisions]).tolist()
    else:
        entry, score = [-1] * len(prompts), [float("-inf")] * len(prompts)
    tok = model.tokenizer
    return [
        Answer(
            _cut(tok.decode(list(t), skip_special_tokens=True), until),
            t,
            memory.entries[e] if e >= 0 else None,
            float(s),
            threshold,
        )
        for t, e, s in zip(out.tokens, entry, score, strict=True)
    ]


@contextmanager
def applied(memory: FastMemory, model) -> Iterator[ReadLog]:
    """:meth:`FastMemory.apply`: the memory's read hooks on ``model.bridge`` inside the block,
    yielding the :class:`fmi.memory.inject.ReadLog` of their decisions.

    The hooks cannot see token ids, so every position is a query token except the first when
    the tokenizer prepends a special token (Gemma-3's ``<bos>``): give them unpadded prompts
    (one, or several of one length); :func:`ask` handles padded batches.
    """
    _check(memory, model)
    log = ReadLog()
    if not len(memory):
        yield log
        return
    tok = model.tokenizer
    leading = tok("x")["input_ids"][:1]
    skip_first = bool(leading) and leading[0] in set(tok.all_special_ids)

    def content(batch: int, width: int) -> Tensor:
        mask = torch.ones(batch, width, dtype=torch.bool)
        if skip_first and width > 1:
            mask[:, 0] = False
        return mask

    with model.bridge.hooks(fwd_hooks=memory_hooks(memory, memory.mode, content, log)):
        yield log
