"""Greedy generation with a vector added at each prompt's answer position."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from fmi.core.forward import answer_only
from fmi.core.hooks import HookFn, add_at_positions, sequence_hooks
from fmi.core.prompts import Encoded, encode
from fmi.experiments.metrics import next_token_entropy


@dataclass(frozen=True)
class Generated:
    """Greedy continuations (new token ids) and the first step's pick among given labels."""

    tokens: list[tuple[int, ...]]
    label_pick: list[int]  # index into ``label_ids`` of the best-scoring label at step one
    entropy: list[float]  # the first step's next-token entropy (nats), injection included
    # per text, the first step's log-probabilities of its own ``score_ids`` row (when asked)
    scores: list[list[float]] = field(default_factory=list)


HooksFor = Callable[[Encoded, int], list[tuple[str, HookFn]]]


@torch.inference_mode()
def decode(
    model,
    texts: list[str],
    hooks_for: HooksFor,
    *,
    label_ids: Int[Tensor, " k"] | None = None,
    score_ids: Int[Tensor, "n k"] | None = None,
    max_new_tokens: int = 3,
    batch_size: int = 16,
) -> Generated:
    """Greedy-decode ``texts`` in left-padded batches under ``hooks_for(batch, first_row)``.

    Left padding puts every prompt's answer position in the last prompt column; the attention
    mask gives each row its own positions, so a padded row decodes as it would alone.
    ``score_ids`` (one row of token ids per text) asks for the first step's log-probabilities
    of those ids (``Generated.scores``).
    """
    tokens: list[tuple[int, ...]] = []
    picks: list[int] = []
    entropy: list[float] = []
    scores: list[list[float]] = []
    bridge = model.bridge
    for start in range(0, len(texts), batch_size):
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        width = enc.tokens.shape[1]
        with bridge.hooks(fwd_hooks=hooks_for(enc, start)):
            out = bridge.generate(
                enc.tokens,
                attention_mask=enc.mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                stop_at_eos=False,
                output_logits=True,
                verbose=False,
                logits_to_keep=answer_only(enc.tokens),  # the prompt step: answer position only
            )
        tokens.extend(tuple(row[width:].tolist()) for row in out.sequences)
        first = out.logits[0].float()
        entropy.extend(next_token_entropy(first).tolist())
        if label_ids is not None:
            picks.extend(first[:, label_ids.to(first.device)].argmax(-1).tolist())
        if score_ids is not None:
            ids = score_ids[start : start + len(first)].to(first.device)
            scores.extend(first.log_softmax(-1).gather(1, ids).tolist())
    return Generated(tokens, picks, entropy, scores)


def greedy(
    model,
    texts: list[str],
    *,
    site: str,
    deltas: Float[Tensor, "n d"] | None = None,
    active: Bool[Tensor, " n"] | None = None,
    label_ids: Int[Tensor, " k"] | None = None,
    max_new_tokens: int = 3,
    batch_size: int = 16,
) -> Generated:
    """Greedy-decode ``texts``; where ``active``, add ``deltas[i]`` at ``site``, last prompt token.

    The hook counts absolute positions, so KV-cached steps after the prompt are left untouched.
    """

    def hooks_for(enc: Encoded, start: int) -> list[tuple[str, HookFn]]:
        n, width = enc.tokens.shape
        if deltas is None:
            return []
        on = active[start : start + n] if active is not None else None
        if on is not None and not bool(on.any()):
            return []
        pos = torch.full((n,), width - 1)
        return [(site, add_at_positions(deltas[start : start + n], pos, on))]

    return decode(
        model,
        texts,
        hooks_for,
        label_ids=label_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )


def greedy_sequences(
    model,
    texts: list[str],
    *,
    site: str,
    sequences: list[Float[Tensor, "t d"] | None],
    tokens: list[list[int]],
    label_ids: Int[Tensor, " k"] | None = None,
    max_new_tokens: int = 3,
    batch_size: int = 16,
) -> Generated:
    """Greedy-decode ``texts``, adding ``sequences[i][s]`` at ``site`` at step ``s`` while text
    ``i``'s greedy picks follow ``tokens[i]`` (:func:`fmi.core.hooks.sequence_hooks`); ``None``: no
    vector. A one-row sequence is :func:`greedy` with that row as the delta.
    """
    if not len(texts) == len(sequences) == len(tokens):
        raise ValueError(
            f"{len(texts)} texts, {len(sequences)} sequences and {len(tokens)} token lists"
        )

    def hooks_for(enc: Encoded, start: int) -> list[tuple[str, HookFn]]:
        rows = slice(start, start + enc.tokens.shape[0])
        if all(s is None for s in sequences[rows]):
            return []
        return sequence_hooks(site, sequences[rows], tokens[rows])

    return decode(
        model,
        texts,
        hooks_for,
        label_ids=label_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
