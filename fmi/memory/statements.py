"""Free-form facts: a statement, an answer of any length, and the named spans that key it.

``FastMemory.write("Alice's favourite drink is", " green tea", spans={"symbol": "Alice"})`` runs
one teacher-forced frozen forward over statement + answer + the memory's end text
(:func:`fmi.memory.answers.answer_values`), refines every value in closed form
(:mod:`fmi.memory.refine`) and appends one entry. Its key channels are character spans of the
statement:

- ``symbol``: what the fact is about (an invented word, ``Alice``, ``the Eiffel Tower``);
- ``context``: its frame (``game A``).

A channel the caller leaves out is the rest of the statement (``'s favourite drink is`` above),
and with no spans at all the whole statement is both: the query rule never needs the answer or
the prompt's kind. An entry is identified by its spans' text; writing the same spans again
replaces the stored entry (latest wins).

>>> spans = key_spans("Alice's favourite drink is", {"symbol": "Alice"})
>>> spans.symbol_text, spans.context_text
('Alice', "'s favourite drink is")
>>> key_spans("In game A, the dax is", {"symbol": "dax", "context": "game A"}).context
((3, 9),)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from fmi.core.sites import UNEMBED_IN
from fmi.errors import ConfigError, MemoryMismatchError
from fmi.memory.answers import answer_values
from fmi.memory.entry import CONTEXT_ROLE, SYMBOL_ROLE, Entry
from fmi.memory.refine import refined_values
from fmi.memory.store import FastMemory
from fmi.memory.values import unembedding

SPAN_NAMES = ("symbol", "context")
Ranges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class KeySpans:
    """Where a statement's key sits: character ranges of each channel, and their text (the
    entry's identity for replacement)."""

    symbol: Ranges
    context: Ranges
    symbol_text: str
    context_text: str


@dataclass(frozen=True)
class Stored:
    """What a write did: the entry it stored (with its ``id``) and the entry it replaced.

    >>> import fmi
    >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
    >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
    >>> first = memory.write("Alice lives in", " Paris", spans={"symbol": "Alice"})
    >>> first.entry.id, first.replaced
    (0, None)
    """

    entry: Entry
    replaced: Entry | None = None


def _find(statement: str, name: str, text: object) -> tuple[int, int]:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"key span {name!r} must be non-empty text, got {text!r}")
    at = statement.find(text)
    if at < 0:
        raise ConfigError(f"{name} {text!r} is not in the statement {statement!r}")
    return at, at + len(text)


def _rest(statement: str, cut: tuple[int, int]) -> tuple[Ranges, str]:
    """The statement outside ``cut``: its non-blank ranges and their text."""
    ranges = tuple(
        (lo, hi) for lo, hi in ((0, cut[0]), (cut[1], len(statement))) if statement[lo:hi].strip()
    )
    return ranges, " ".join(statement[lo:hi].strip() for lo, hi in ranges)


def key_spans(statement: str, spans: dict | None = None) -> KeySpans:
    """The :class:`KeySpans` of ``statement`` for ``spans`` (``{"symbol": text, "context":
    text}``, either or both, or ``None``); each text must occur in the statement."""
    if not isinstance(statement, str) or not statement.strip():
        raise ConfigError(f"a statement must be non-empty text, got {statement!r}")
    spans = dict(spans or {})
    unknown = sorted(set(spans) - set(SPAN_NAMES))
    if unknown:
        raise ConfigError(f"unknown key span {unknown[0]!r}; spans are {', '.join(SPAN_NAMES)}")
    whole: Ranges = ((0, len(statement)),)
    if not spans:
        return KeySpans(whole, whole, statement.strip(), statement.strip())
    found = {name: _find(statement, name, text) for name, text in spans.items()}
    text = {name: statement[lo:hi] for name, (lo, hi) in found.items()}
    ranges: dict[str, Ranges] = {name: (span,) for name, span in found.items()}
    for name, other in (("symbol", "context"), ("context", "symbol")):
        if name not in found:
            rest, rest_text = _rest(statement, found[other])
            ranges[name], text[name] = (rest, rest_text) if rest else (ranges[other], text[other])
    return KeySpans(ranges["symbol"], ranges["context"], text["symbol"], text["context"])


def span_positions(offsets: list[tuple[int, int]], ranges: Ranges) -> list[int]:
    """Indices of the tokens (character ``offsets``; special tokens are empty) overlapping any
    of ``ranges``."""
    return [
        i
        for i, (a, b) in enumerate(offsets)
        if b > a and any(a < hi and b > lo for lo, hi in ranges)
    ]


def appended(memory: FastMemory, other: FastMemory) -> FastMemory:
    """``memory``'s entries followed by ``other``'s (keys, values and answer steps), read
    ``memory``'s way."""
    n, d = len(memory), memory.values.shape[1]

    def tails(m: FastMemory) -> tuple[Tensor, Tensor]:
        if m.tail_values is None or m.tail_owner is None:
            dev = m.values.device
            return torch.zeros(0, d, device=dev), torch.zeros(0, dtype=torch.long, device=dev)
        return m.tail_values, m.tail_owner

    (tv, to), (ov, oo) = tails(memory), tails(other)
    return replace(
        memory,
        entries=[*memory.entries, *other.entries],
        values=torch.cat([memory.values, other.values]),
        symbol_keys=torch.cat([memory.symbol_keys, other.symbol_keys]),
        token_keys=torch.cat([memory.token_keys, other.token_keys]),
        token_owner=torch.cat([memory.token_owner, other.token_owner + n]),
        token_role=torch.cat([memory.token_role, other.token_role]),
        tail_values=torch.cat([tv, ov]),
        tail_owner=torch.cat([to, oo + n]),
        answer_keys=_answer_keys(memory, other),
    )


def _answer_keys(memory: FastMemory, other: FastMemory) -> Tensor | None:
    """Both memories' relation keys, in order; None unless both have them (an empty memory's
    absent keys count as none to add)."""
    got = [m.answer_keys for m in (memory, other) if len(m) or m.answer_keys is not None]
    parts = [p for p in got if p is not None]
    return torch.cat(parts) if parts and len(parts) == len(got) else None


def fit_empty(model, config=None) -> FastMemory:
    """:meth:`FastMemory.fit`: fit on the built-in training split, return an empty memory."""
    from fmi.experiments.builtin_tasks import builtin_task
    from fmi.experiments.config import RecallConfig
    from fmi.memory.fit import fit

    cfg = config if config is not None else RecallConfig(model=model.name)
    task = builtin_task(seed=cfg.seed, n_train=cfg.n_train, n_eval=cfg.n_eval)
    fitted = fit(model, task.train, cfg)
    d = int(model.bridge.cfg.d_model)
    return FastMemory(
        model_name=model.name,
        d_model=d,
        inject_site=cfg.inject_site,
        alpha=fitted.alpha,
        encoder=fitted.encoder,
        entries=[],
        values=torch.zeros(0, d),
        symbol_keys=torch.zeros(0, d),
        token_keys=torch.zeros(0, d),
        token_owner=torch.zeros(0, dtype=torch.long),
        token_role=torch.zeros(0, dtype=torch.long),
        answer_keys=torch.zeros(0, d) if fitted.relation_weights is not None else None,
        thresholds=dict(fitted.thresholds),
        dual_weights=fitted.dual_weights,
        relation_weights=fitted.relation_weights,
        end=cfg.end,
        refine_steps=fitted.refine_steps,
        fit_info={"config": cfg.to_dict(), "fitted": fitted.to_dict()},
        _model=model,
    )


def _refine(model, memory: FastMemory, states, values, targets):
    if memory.refine_steps == 1 or memory.inject_site != UNEMBED_IN:
        return values
    w_u, b_u = unembedding(model.bridge, linear_only=True)
    return refined_values(states, values, w_u, b_u, targets, memory.alpha, memory.refine_steps)


def fact_memory(memory: FastMemory, model, statement: str, answer: str, spans=None) -> FastMemory:
    """A one-entry memory (read ``memory``'s way) holding ``statement + answer``, keyed by
    ``spans``, from one frozen forward pass; the entry gets id ``memory.next_id``."""
    return facts_memory(memory, model, [statement], [answer], [spans])


WRITE_CHUNK = 256
"""Facts per chunk of a batched write: activations are kept for one chunk at a time."""


def facts_memory(
    memory: FastMemory,
    model,
    statements: list[str],
    answers: list[str],
    spans: list[dict | None] | None = None,
    *,
    batch_size: int = 16,
) -> FastMemory:
    """A memory (read ``memory``'s way) holding every ``statements[i] + answers[i]``, keyed by
    ``spans[i]``, from batched frozen forwards (``batch_size`` facts a forward; the values of a
    chunk share one streamed read of ``W_U``); the entries get ids ``memory.next_id`` onwards,
    in order. Entry for entry it equals writing the facts one at a time (up to float rounding of
    batched products).

    >>> import fmi
    >>> model = fmi.load_model("tiny-gemma", announce=lambda _: None)
    >>> memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
    >>> two = facts_memory(memory, model, ["Ann lives in", "Bob lives in"], [" Rome", " Oslo"])
    >>> [e.id for e in two.entries], [e.label for e in two.entries]
    ([0, 1], [' Rome', ' Oslo'])
    """
    if model.name != memory.model_name:
        raise MemoryMismatchError(
            f"this memory was written with model {memory.model_name!r}, not {model.name!r}"
        )
    spans = list(spans) if spans is not None else [None] * len(statements)
    if not (len(statements) == len(answers) == len(spans)):
        raise ConfigError(
            f"{len(statements)} statements, {len(answers)} answers and {len(spans)} spans: "
            "give one of each per fact"
        )
    for statement, answer in zip(statements, answers, strict=True):
        if not isinstance(answer, str) or not answer.strip():
            raise ConfigError(f"the answer to {statement!r} must be non-empty text, got {answer!r}")
    keyed = [key_spans(s, sp) for s, sp in zip(statements, spans, strict=True)]
    out = memory.select([])
    for lo in range(0, len(statements), WRITE_CHUNK):
        hi = min(lo + WRITE_CHUNK, len(statements))
        chunk = _chunk_memory(
            memory, model, statements[lo:hi], answers[lo:hi], keyed[lo:hi], lo, batch_size
        )
        out = appended(out, chunk)
    return out


def _chunk_memory(
    memory: FastMemory,
    model,
    statements: list[str],
    answers: list[str],
    keyed: list[KeySpans],
    first: int,
    batch_size: int,
) -> FastMemory:
    """:func:`facts_memory` of one chunk whose first fact is fact ``first`` of the write."""
    enc = memory.encoder
    end = memory.end or ""
    got, acts = answer_values(
        model,
        statements,
        answers,
        end=end,
        batch_size=batch_size,
        sites=(enc.symbol_site, enc.token_site),
    )
    ids = torch.tensor([t for row in got.tokens for t in row])
    values = _refine(model, memory, torch.cat(got.states), torch.cat(got.values), ids)
    per_fact = values.split([len(row) for row in got.tokens])
    entries, symbol_keys, token_keys, owner, role, tails, tail_owner = [], [], [], [], [], [], []
    for i, (statement, answer, ks) in enumerate(zip(statements, answers, keyed, strict=True)):
        text = statement + answer + end
        offsets = model.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        offsets = [(a, b) if b <= len(statement) else (0, 0) for a, b in offsets]
        sym, ctx = span_positions(offsets, ks.symbol), span_positions(offsets, ks.context)
        entries.append(
            Entry(
                ks.context_text,
                ks.symbol_text,
                answer,
                got.tokens[i][0],
                tuple(got.tokens[i]),
                got.has_end[i],
                statement,
                memory.next_id + first + i,
            )
        )
        token_acts = acts.acts[enc.token_site][i]
        symbol_keys.append(acts.acts[enc.symbol_site][i][sym[-1]])
        token_keys.append(torch.cat([token_acts[sym], token_acts[ctx]]))
        owner += [i] * (len(sym) + len(ctx))
        role += [SYMBOL_ROLE] * len(sym) + [CONTEXT_ROLE] * len(ctx)
        tails.append(per_fact[i][1:])
        tail_owner += [i] * (per_fact[i].shape[0] - 1)
    return replace(
        memory,
        entries=entries,
        values=torch.stack([v[0] for v in per_fact]),
        symbol_keys=torch.stack(symbol_keys),
        token_keys=torch.cat(token_keys),
        token_owner=torch.tensor(owner, dtype=torch.long),
        token_role=torch.tensor(role, dtype=torch.long),
        tail_values=torch.cat(tails),
        tail_owner=torch.tensor(tail_owner, dtype=torch.long),
        answer_keys=torch.stack([h[0] for h in got.states]),
    )


def write_fact(memory: FastMemory, model, statement: str, answer: str, spans=None) -> Stored:
    """:meth:`FastMemory.write`: append the fact, replacing an entry with the same key spans."""
    return write_facts(memory, model, [statement], [answer], [spans])[0]


def write_facts(
    memory: FastMemory,
    model,
    statements: list[str],
    answers: list[str],
    spans: list[dict | None] | None = None,
    *,
    batch_size: int = 16,
) -> list[Stored]:
    """:meth:`FastMemory.write_many`: append every fact from batched frozen forwards
    (:func:`facts_memory`); each replaces a stored entry with the same key spans, and a later
    fact of the same call replaces an earlier one (latest wins, as writing them in turn)."""
    new = facts_memory(memory, model, statements, answers, spans, batch_size=batch_size)
    stored: list[Stored] = []
    current = {(e.symbol, e.context): e for e in memory.entries}
    for entry in new.entries:
        key = (entry.symbol, entry.context)
        stored.append(Stored(entry, current.get(key)))
        current[key] = entry
    last = {(e.symbol, e.context): row for row, e in enumerate(new.entries)}
    keep_new = [row for row, e in enumerate(new.entries) if last[(e.symbol, e.context)] == row]
    kept = memory.select(
        [i for i, e in enumerate(memory.entries) if (e.symbol, e.context) not in last]
    )
    memory._become(appended(kept, new.select(keep_new)))
    if new.entries:
        memory.next_id = new.entries[-1].id + 1
    return stored
