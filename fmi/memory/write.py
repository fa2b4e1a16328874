"""Writing: one batched frozen forward pass over write statements gives keys and values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from fmi.core.forward import collect
from fmi.core.prompts import prompt_spans, span_tokens
from fmi.core.sites import UNEMBED_IN
from fmi.memory.answers import answer_values
from fmi.memory.entry import CONTEXT_ROLE, SYMBOL_ROLE, Entry, KeyEncoder
from fmi.memory.refine import refine_written
from fmi.memory.store import FastMemory
from fmi.memory.values import streamed_values, unembedding

if TYPE_CHECKING:
    from fmi.experiments.config import RecallConfig
    from fmi.memory.fit import Fitted


@dataclass(frozen=True)
class Written:
    """Raw material of a memory, before any standardization or projection."""

    entries: list[Entry]
    values: Float[Tensor, "n d"]
    symbol_keys: Float[Tensor, "n d"]  # symbol_site, the invented word's last token
    token_keys: Float[Tensor, "m d"]  # token_site, every token of the symbol and the context
    token_owner: Tensor
    token_role: Tensor
    answer_states: Float[Tensor, "n d"]  # h at the injection site, answer position
    answer_entropy: Float[Tensor, " n"]  # the frozen model's next-token entropy there (nats)
    tail_values: Float[Tensor, "m d"] | None = None  # later answer steps (write(..., end=...))
    tail_owner: Tensor | None = None
    tail_states: Float[Tensor, "m d"] | None = None  # h at UNEMBED_IN predicting each tail step

    @property
    def answer_norms(self) -> Float[Tensor, " n"]:
        """|h| at the injection site, answer position."""
        return self.answer_states.norm(dim=-1)


def label_token(tokenizer, templates, label: str) -> int:
    """The single token id of ``label`` as it follows the write prompt."""
    return tokenizer(templates.target("write", label), add_special_tokens=False)["input_ids"][0]


def write_prompt(templates, binding) -> tuple[str, dict[str, tuple[int, int]]]:
    """The write prompt and the character spans of its context and symbol."""
    return prompt_spans(templates, "write", binding)


@dataclass(frozen=True)
class KeyTokens:
    """Where entries' keys sit in their write prompts (unpadded indices): the symbol's last token,
    and every token of the symbol and of the context, in that order, with its prompt and role."""

    symbol_last: list[int]
    prompt: list[int]
    index: list[int]
    role: list[int]

    def symbol_keys(self, acts: list[Tensor]) -> Float[Tensor, "n d"]:
        return torch.stack([a[i] for a, i in zip(acts, self.symbol_last, strict=True)])

    def token_keys(self, acts: list[Tensor]) -> Float[Tensor, "m d"]:
        return torch.stack([acts[p][i] for p, i in zip(self.prompt, self.index, strict=True)])


def key_tokens(tokenizer, prompts: list[str], spans: list[dict]) -> KeyTokens:
    """The :class:`KeyTokens` of ``prompts`` whose field spans are ``spans``."""
    out = KeyTokens([], [], [], [])
    for p, (text, span) in enumerate(zip(prompts, spans, strict=True)):
        sym = span_tokens(tokenizer, text, span["symbol"])
        ctx = span_tokens(tokenizer, text, span["context"])
        out.symbol_last.append(sym[-1])
        for idx, role in [(j, SYMBOL_ROLE) for j in sym] + [(j, CONTEXT_ROLE) for j in ctx]:
            out.prompt.append(p)
            out.index.append(idx)
            out.role.append(role)
    return out


def write(
    model,
    bindings,
    templates,
    *,
    symbol_site: str,
    token_site: str,
    inject_site: str,
    batch_size: int = 16,
    end: str | None = None,
) -> Written:
    """Keys and values for ``bindings`` from one frozen forward pass per batch of statements.

    The forward runs to the final norm and skips the model's own unembedding: the value and the
    entropy come from the answer position's unembedding input, streamed over ``W_U`` once for
    all statements (:func:`fmi.memory.values.streamed_values`), which costs about what the logits
    would.

    With ``end`` (the text that follows an answer when it is read, e.g. ``"\\n"``), the one
    forward runs teacher-forced over statement + answer + ``end`` instead
    (:func:`fmi.memory.answers.answer_values`): labels may have any number of tokens, and each entry
    also stores a value for every later answer token and for the end token (its tail).
    """
    if end is not None:
        return _write_answers(
            model, bindings, templates, end, symbol_site, token_site, inject_site, batch_size
        )
    tok = model.tokenizer
    prompts, spans = zip(*(write_prompt(templates, b) for b in bindings), strict=True)
    targets = torch.tensor([label_token(tok, templates, b.label) for b in bindings])
    w_u, b_u = unembedding(model.bridge, linear_only=True)
    sites = list(dict.fromkeys([symbol_site, token_site, inject_site, UNEMBED_IN]))
    got = collect(model.bridge, tok, list(prompts), sites, batch_size=batch_size)
    values, entropy = streamed_values(got.stack_last(UNEMBED_IN), w_u, b_u, targets)
    where = key_tokens(tok, list(prompts), list(spans))
    entries = [
        Entry(b.context, b.symbol, b.label, int(t)) for b, t in zip(bindings, targets, strict=True)
    ]
    return Written(
        entries=entries,
        values=values,
        symbol_keys=where.symbol_keys(got.acts[symbol_site]),
        token_keys=where.token_keys(got.acts[token_site]),
        token_owner=torch.tensor(where.prompt),
        token_role=torch.tensor(where.role),
        answer_states=got.stack_last(inject_site),
        answer_entropy=entropy,
    )


def _write_answers(
    model, bindings, templates, end: str, symbol_site, token_site, inject_site, batch_size
) -> Written:
    """:func:`write` with answer sequences: one teacher-forced forward per batch."""
    tok = model.tokenizer
    prompts, spans = zip(*(write_prompt(templates, b) for b in bindings), strict=True)
    answers = [templates.target("write", b.label) for b in bindings]
    sites = (symbol_site, token_site, inject_site)
    got, acts = answer_values(
        model, list(prompts), answers, end=end, batch_size=batch_size, sites=sites
    )
    where = key_tokens(tok, list(prompts), list(spans))
    entries = [
        Entry(b.context, b.symbol, b.label, ids[0], tuple(ids), ends)
        for b, ids, ends in zip(bindings, got.tokens, got.has_end, strict=True)
    ]
    first = [pos[0] for pos in got.predicting]  # the statement's last token
    tails = [v[1:] for v in got.values]
    tail_states = [h[1:] for h in got.states]
    return Written(
        entries=entries,
        values=torch.stack([v[0] for v in got.values]),
        symbol_keys=where.symbol_keys(acts.acts[symbol_site]),
        token_keys=where.token_keys(acts.acts[token_site]),
        token_owner=torch.tensor(where.prompt),
        token_role=torch.tensor(where.role),
        answer_states=acts.stack_at(inject_site, first),
        answer_entropy=torch.stack([e[0] for e in got.entropy]),
        tail_values=torch.cat(tails),
        tail_owner=torch.tensor([i for i, t in enumerate(tails) for _ in range(t.shape[0])]),
        tail_states=torch.cat(tail_states),
    )


def make_memory(
    model,
    written: Written,
    fitted_encoder: KeyEncoder,
    *,
    alpha: float,
    inject_site: str,
    thresholds: dict[str, float] | None = None,
    dual_weights: Tensor | None = None,
    relation_weights: Tensor | None = None,
) -> FastMemory:
    """Assemble a ``FastMemory`` from written keys and values and a fitted encoder (the
    relation keys: the answer-position states, where they are taken at the unembedding's
    input)."""
    return FastMemory(
        model_name=model.name,
        d_model=int(model.bridge.cfg.d_model),
        inject_site=inject_site,
        alpha=alpha,
        encoder=fitted_encoder,
        entries=written.entries,
        values=written.values,
        symbol_keys=written.symbol_keys,
        token_keys=written.token_keys,
        token_owner=written.token_owner,
        token_role=written.token_role,
        thresholds=dict(thresholds or {}),
        dual_weights=dual_weights,
        tail_values=written.tail_values,
        tail_owner=written.tail_owner,
        answer_keys=written.answer_states if inject_site == UNEMBED_IN else None,
        relation_weights=relation_weights,
        _model=model,
    )


def write_memory(
    model, bindings, templates, fitted: Fitted, cfg: RecallConfig
) -> tuple[Written, FastMemory]:
    """Write ``bindings`` (one frozen forward per batch) into a memory read the fitted way."""
    enc = fitted.encoder
    written = write(
        model,
        bindings,
        templates,
        symbol_site=enc.symbol_site,
        token_site=enc.token_site,
        inject_site=cfg.inject_site,
        batch_size=cfg.batch_size,
        end=cfg.end,
    )
    written = refine_written(model, written, cfg.inject_site, fitted.alpha, fitted.refine_steps)
    memory = make_memory(
        model,
        written,
        enc,
        alpha=fitted.alpha,
        inject_site=cfg.inject_site,
        thresholds=fitted.thresholds,
        dual_weights=fitted.dual_weights,
        relation_weights=fitted.relation_weights,
    )
    return written, memory
