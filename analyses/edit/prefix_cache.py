"""Many prompts after one shared text prefix, whose keys and values are computed once.

``in_context`` states every held fact before every probe. Decoding ``prefix + prompt`` from
scratch runs the whole prefix again for every probe; here the prefix runs once (batch 1, no
hooks) into a per-layer key/value cache, and each batch of probes starts from a copy of it.

Exactness. A batch is laid out as plain left-padded decoding lays out ``prefix + prompt``:
row ``r`` is ``[pad] * p_r + prefix + prompt_r``, ``p_r`` the row's shortfall from the batch's
longest prompt. The first ``n`` columns (the prefix's length) are the cache, the rest are fed.
Row ``r``'s cache is the prefix's keys and values shifted right by ``p_r`` columns (zeros,
masked, in front), and the ``p_r`` prefix tokens pushed past column ``n`` are fed again with the
prompt. So every real token keeps its position (the mask's running count, as the bridge derives
it) and its column distance to every other real token, which is what a sliding-window layer
(Gemma-3) masks by; the cache is a plain full-length :class:`transformers.DynamicCache` per
layer, so no sliding layer drops a column a shifted row still needs. The shifted copy is also
why the prefix's own cache is never mutated: each batch writes into its own tensors.

A text whose tokens do not start with the prefix's tokens (a token merged across the boundary)
is decoded plainly, prefix and all, so the result is always that of
:func:`fmi.core.generate.decode` on ``prefix + text``, up to float rounding.

>>> from fmi.models.registry import load_model
>>> from analyses.edit.method import no_hooks
>>> model = load_model("tiny-gemma", announce=lambda _: None)
>>> texts = ["The capital of France is", "Once upon a"]
>>> cached = decode_with_prefix(model, texts, no_hooks, prefix="New fact: Rome is in Peru.\\n")
>>> plain = decode(model, ["New fact: Rome is in Peru.\\n" + t for t in texts], no_hooks)
>>> cached.tokens == plain.tokens
True
>>> context_length(model)
2048
>>> got = answer_logprobs(model, ["Rome is in"], [" Italy"], prefix="New fact: Rome is in Peru.\\n")
>>> len(got[0]) == len(model.tokenizer(" Italy")["input_ids"]) and got[0][0] < 0
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from fmi.core.generate import Generated, HooksFor, decode
from fmi.core.prompts import Encoded
from fmi.experiments.metrics import next_token_entropy
from fmi.memory.answers import answer_positions


class TooLong(Exception):
    """A prefix, with its prompts, longer than its budget or the model's context: the cell is not
    run (the reason says why)."""


def context_length(model) -> int:
    """The longest sequence the model takes: its HF config's ``max_position_embeddings``, else
    the bridge's ``n_ctx``."""
    n = getattr(getattr(model.hf_model, "config", None), "max_position_embeddings", None)
    return int(n or model.bridge.cfg.n_ctx)


class _Reserved(DynamicLayer):
    """A full-length cache layer with its columns allocated up front: each step writes its
    keys and values in place (a plain ``DynamicLayer`` concatenates, copying the whole cache
    every greedy step)."""

    def __init__(self, keys: Tensor, values: Tensor, filled: int) -> None:
        super().__init__()
        self.room_k, self.room_v, self.filled = keys, values, filled
        self.keys, self.values = keys, values
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs):
        end = self.filled + key_states.shape[-2]
        if end > self.room_k.shape[-2]:
            raise RuntimeError(f"cache room for {self.room_k.shape[-2]} columns, {end} asked")
        self.room_k[..., self.filled : end, :] = key_states
        self.room_v[..., self.filled : end, :] = value_states
        self.filled = end
        return self.room_k[..., :end, :], self.room_v[..., :end, :]

    def get_seq_length(self) -> int:
        return self.filled


@dataclass(frozen=True)
class Prefix:
    """A text's token ids and, per layer, its keys and values (``[1, heads, n, d_head]``)."""

    text: str
    ids: tuple[int, ...]
    kv: tuple[tuple[Tensor, Tensor], ...]

    @classmethod
    @torch.inference_mode()
    def build(cls, model, text: str, chunk: int = 1024) -> Prefix:
        """Batch-1 forwards of ``text`` (no hooks), ``chunk`` tokens at a time into one cache
        (the attention scores of a long prefix never held at once), keeping every layer's
        keys and values."""
        ids = tuple(model.tokenizer(text)["input_ids"])
        if not ids:
            raise ValueError("the prefix has no tokens")
        tokens = torch.tensor([ids], device=model.bridge.cfg.device)
        cache = DynamicCache()  # no config: full-length layers, none cropped to a window
        for lo in range(0, len(ids), chunk):
            part = tokens[:, lo : lo + chunk]
            _, cache = model.bridge(
                part,
                attention_mask=torch.ones_like(tokens[:, : lo + part.shape[1]]),
                position_ids=torch.arange(lo, lo + part.shape[1], device=tokens.device)[None],
                past_key_values=cache,
                return_type="logits_and_cache",
                logits_to_keep=torch.tensor([part.shape[1] - 1], device=tokens.device),
            )
        kv = []
        for layer in cache.layers:
            keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
            if not (isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor)):
                raise TypeError(f"a cache layer without key and value tensors: {type(layer)}")
            kv.append((keys, values))
        return cls(text, ids, tuple(kv))

    def suffix(self, tokenizer, text: str) -> list[int] | None:
        """``text``'s tokens after the prefix's, in the tokenization of ``prefix + text``
        (``None``: they do not start with the prefix's tokens, or ``text`` adds none)."""
        full = tokenizer(self.text + text)["input_ids"]
        n = len(self.ids)
        if len(full) <= n or tuple(full[:n]) != self.ids:
            return None
        return list(full[n:])

    def row_bytes(self, room: int) -> int:
        """Bytes one batch row's cache takes with ``room`` columns after the prefix."""
        n = len(self.ids) + room
        return sum(2 * k.shape[1] * n * k.shape[3] * k.element_size() for k, _ in self.kv)

    def batch_cache(self, shifts: list[int], room: int) -> Cache:
        """A fresh cache for a batch: row ``r`` holds the prefix shifted right by
        ``shifts[r]`` columns (zeros in front), with ``room`` columns reserved after it."""
        n = len(self.ids)
        layers: list[Any] = []
        for keys, values in self.kv:
            pair = []
            for t in (keys, values):
                out = t.new_zeros((len(shifts), t.shape[1], n + room, t.shape[3]))
                for row, p in enumerate(shifts):
                    if p < n:
                        out[row, :, p:n] = t[0, :, : n - p]
                pair.append(out)
            layers.append(_Reserved(pair[0], pair[1], n))
        return Cache(layers=layers)

    def window(self, suffixes: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor, list[int]]:
        """A batch's fed columns (its last ``m``, ``m`` the longest suffix), its mask over all
        ``n + m`` columns, and each row's shift (see the module)."""
        n, m = len(self.ids), max(len(s) for s in suffixes)
        shifts = [m - len(s) for s in suffixes]
        rows = [[pad_id] * p + list(self.ids) + s for p, s in zip(shifts, suffixes, strict=True)]
        mask = [[0] * p + [1] * (n + len(s)) for p, s in zip(shifts, suffixes, strict=True)]
        return torch.tensor(rows)[:, n:], torch.tensor(mask), shifts


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _positions(mask: Tensor) -> Tensor:
    """Each column's position: the mask's running count, as the bridge derives it."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


def _fed(model, prefix: Prefix, suffixes: list[list[int]], new_tokens: int = 0):
    """A batch after ``prefix``: its fed tokens and full mask (on the model's device), its
    positions for the fed columns, its fresh cache, and the fed columns as an
    :class:`Encoded` (what ``hooks_for`` sees)."""
    dev = model.bridge.cfg.device
    fed, mask, shifts = prefix.window(suffixes, _pad_id(model.tokenizer))
    m = fed.shape[1]
    special = torch.tensor(list(model.tokenizer.all_special_ids) or [-1])
    own = mask[:, -m:]
    enc = Encoded(fed, own, own.bool() & ~torch.isin(fed, special), tuple(own.sum(1).tolist()))
    pos = _positions(mask)[:, -m:]
    cache = prefix.batch_cache(shifts, m + new_tokens)
    return fed.to(dev), mask.to(dev), pos.to(dev), cache, enc


@torch.inference_mode()
def _greedy_batch(model, batch: tuple, hooks: list, max_new_tokens: int):
    """One batch's (:func:`_fed`) greedy new tokens ``[b, max_new_tokens]`` and first-step
    logits (float)."""
    bridge = model.bridge
    step, mask, pos, cache, _ = batch
    picks, first = [], None
    with bridge.hooks(fwd_hooks=hooks):
        for _ in range(max_new_tokens):
            logits, cache = bridge(
                step,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                return_type="logits_and_cache",
                logits_to_keep=torch.tensor([step.shape[1] - 1], device=step.device),
            )
            last = logits[:, -1]
            first = last.float() if first is None else first
            pick = last.argmax(-1)
            picks.append(pick)
            step, pos = pick[:, None], pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    assert first is not None
    return torch.stack(picks, dim=1), first


KV_BYTES = 1 << 30
"""The most bytes one batch's copy of the prefix cache may take: a long prefix gets fewer rows
per batch (Gemma-3-270M keeps about 37 KB per token per row, so 2,000 tokens allow 14 rows)."""


def _rows(prefix: Prefix, batch_size: int, room: int) -> int:
    return max(1, min(batch_size, KV_BYTES // max(1, prefix.row_bytes(room))))


def _suffixes(model, prefix: Prefix, texts: list[str], extra: int) -> list[list[int] | None]:
    """Every text's tokens after the prefix (:meth:`Prefix.suffix`), refusing a text that would
    run past the model's context with ``extra`` new tokens."""
    limit, n = context_length(model), len(prefix.ids)
    out = [prefix.suffix(model.tokenizer, t) for t in texts]
    for t, s in zip(texts, out, strict=True):
        total = n + len(s) if s is not None else len(model.tokenizer(prefix.text + t)["input_ids"])
        if total + extra > limit:
            raise TooLong(
                f"the prefix ({n} tokens) and {t!r} with {extra} new tokens take "
                f"{total + extra} tokens, over the model's context of {limit}"
            )
    return out


def decode_with_prefix(
    model,
    texts: list[str],
    hooks_for: HooksFor,
    *,
    prefix: str,
    label_ids: Int[Tensor, " k"] | None = None,
    score_ids: Int[Tensor, "n k"] | None = None,
    max_new_tokens: int = 3,
    batch_size: int = 16,
) -> Generated:
    """:func:`fmi.core.generate.decode` of ``[prefix + t for t in texts]``, the prefix's keys
    and values computed once (see the module); the same arguments and result.

    ``hooks_for(batch, first_row)`` gets the batch's fed columns (left-padded, the last column
    every prompt's last token) and is live for the batch's prompt pass and greedy steps, as in
    ``decode``; the prefix itself runs without hooks. A batch with a text whose tokens do not
    start with the prefix's is decoded plainly. Batches are cut to fit :data:`KV_BYTES`. A text
    that would run past the model's context (:func:`context_length`) raises :class:`TooLong`.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not prefix:
        return decode(
            model, texts, hooks_for, label_ids=label_ids, score_ids=score_ids,
            max_new_tokens=max_new_tokens, batch_size=batch_size,
        )  # fmt: skip
    cached = Prefix.build(model, prefix)
    every = _suffixes(model, cached, texts, max_new_tokens)
    room = max((len(s) for s in every if s is not None), default=1) + max_new_tokens
    size = _rows(cached, batch_size, room)
    tokens: list[tuple[int, ...]] = []
    picks: list[int] = []
    entropy: list[float] = []
    scores: list[list[float]] = []
    for lo in range(0, len(texts), size):
        chunk, suffixes = texts[lo : lo + size], every[lo : lo + size]
        ids = None if score_ids is None else score_ids[lo : lo + len(chunk)]
        if any(s is None for s in suffixes):

            def shifted(enc: Encoded, start: int, lo: int = lo) -> list:
                return hooks_for(enc, lo + start)

            out = decode(
                model, [prefix + t for t in chunk], shifted, label_ids=label_ids, score_ids=ids,
                max_new_tokens=max_new_tokens, batch_size=len(chunk),
            )  # fmt: skip
            tokens += out.tokens
            picks += out.label_pick
            entropy += out.entropy
            scores += out.scores
            continue
        batch = _fed(model, cached, suffixes, max_new_tokens)  # type: ignore[arg-type]
        new, first = _greedy_batch(model, batch, hooks_for(batch[-1], lo), max_new_tokens)
        tokens += [tuple(row) for row in new.tolist()]
        entropy += next_token_entropy(first).tolist()
        if label_ids is not None:
            picks += first[:, label_ids.to(first.device)].argmax(-1).tolist()
        if ids is not None:
            scores += first.log_softmax(-1).gather(1, ids.to(first.device)).tolist()
    return Generated(tokens, picks, entropy, scores)


@torch.inference_mode()
def answer_logprobs(
    model, prompts: list[str], answers: list[str], *, prefix: str = "", batch_size: int = 16
) -> list[list[float]]:
    """Teacher forcing after the cached prefix: per row, the log-probability of each token of
    ``answers[i]`` after ``prefix + prompts[i]`` (the tokens
    :func:`fmi.memory.answers.answer_positions` finds in ``prefix + prompt + answer``); equal,
    up to float rounding, to one forward of :func:`analyses.edit.teacher.forced`'s batch of
    ``prefix + prompt``. No hooks.
    """
    from analyses.edit.teacher import forced

    tok, bridge = model.tokenizer, model.bridge
    cached = Prefix.build(model, prefix) if prefix else None
    every = (
        _suffixes(model, cached, [p + a for p, a in zip(prompts, answers, strict=True)], 0)
        if cached
        else [None] * len(prompts)
    )
    size = batch_size
    if cached:
        size = _rows(cached, batch_size, max((len(s) for s in every if s), default=1))
    out: list[list[float]] = []
    for lo in range(0, len(prompts), size):
        ps, ans, suffixes = prompts[lo : lo + size], answers[lo : lo + size], every[lo : lo + size]
        if cached is None or any(s is None for s in suffixes):
            batch = forced(tok, [prefix + p for p in ps], list(ans))
            logp = bridge(batch.tokens, attention_mask=batch.mask).float().log_softmax(-1)
            cols = batch.predicting
            targets = batch.targets
        else:
            step, mask, pos, cache, _ = _fed(model, cached, suffixes)  # type: ignore[arg-type]
            logits, _ = bridge(
                step,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                return_type="logits_and_cache",
            )
            logp = logits.float().log_softmax(-1)
            n, m = len(cached.ids), step.shape[1]
            cols, targets = [], []
            for p, a, s in zip(ps, ans, suffixes, strict=True):
                ids, predicting, _ = answer_positions(tok, prefix + p, a, "")
                cols.append(torch.tensor(predicting) + (m - len(s)) - n)  # type: ignore[arg-type]
                targets.append(torch.tensor(ids))
        for row, (c, t) in enumerate(zip(cols, targets, strict=True)):
            out.append(logp[row, c.to(logp.device), t.to(logp.device)].tolist())
    return out
