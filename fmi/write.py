"""Writing: one batched frozen forward pass over write statements gives keys and values."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from fmi.forward import collect
from fmi.memory import CONTEXT_ROLE, SYMBOL_ROLE, Entry
from fmi.prompts import prompt_spans, span_tokens
from fmi.values import correction_values, unembedding


@dataclass(frozen=True)
class Written:
    """Raw material of a memory, before any standardization or projection."""

    entries: list[Entry]
    values: Float[Tensor, "n d"]
    symbol_keys: Float[Tensor, "n d"]  # symbol_site, the invented word's last token
    token_keys: Float[Tensor, "m d"]  # token_site, every token of the symbol and the context
    token_owner: Tensor
    token_role: Tensor
    answer_norms: Float[Tensor, " n"]  # |h| at the injection site, answer position


def label_token(tokenizer, templates, label: str) -> int:
    """The single token id of ``label`` as it follows the write prompt."""
    return tokenizer(templates.target("write", label), add_special_tokens=False)["input_ids"][0]


def write_prompt(templates, binding) -> tuple[str, dict[str, tuple[int, int]]]:
    """The write prompt and the character spans of its context and symbol."""
    return prompt_spans(templates, "write", binding)


def write(
    model,
    bindings,
    templates,
    *,
    symbol_site: str,
    token_site: str,
    inject_site: str,
    batch_size: int = 16,
) -> Written:
    """Keys and values for ``bindings`` from one frozen forward pass per batch of statements."""
    tok = model.tokenizer
    prompts, spans = zip(*(write_prompt(templates, b) for b in bindings), strict=True)
    targets = torch.tensor([label_token(tok, templates, b.label) for b in bindings])
    w_u, _ = unembedding(model.bridge)

    def values_of(last_logits: Tensor, rows: slice) -> Tensor:
        return correction_values(w_u, last_logits, targets[rows])

    sites = list(dict.fromkeys([symbol_site, token_site, inject_site]))
    got = collect(
        model.bridge, tok, list(prompts), sites, batch_size=batch_size, reduce_last=values_of
    )
    sym_keys, tok_keys, owner, role = [], [], [], []
    for i, (text, span) in enumerate(zip(prompts, spans, strict=True)):
        sym_idx = span_tokens(tok, text, span["symbol"])
        ctx_idx = span_tokens(tok, text, span["context"])
        sym_keys.append(got.acts[symbol_site][i][sym_idx[-1]])
        for idx, r in [(j, SYMBOL_ROLE) for j in sym_idx] + [(j, CONTEXT_ROLE) for j in ctx_idx]:
            tok_keys.append(got.acts[token_site][i][idx])
            owner.append(i)
            role.append(r)
    entries = [
        Entry(b.context, b.symbol, b.label, int(t)) for b, t in zip(bindings, targets, strict=True)
    ]
    return Written(
        entries=entries,
        values=torch.cat(got.last),
        symbol_keys=torch.stack(sym_keys),
        token_keys=torch.stack(tok_keys),
        token_owner=torch.tensor(owner),
        token_role=torch.tensor(role),
        answer_norms=got.stack_last(inject_site).norm(dim=-1),
    )
