"""Injecting: the memory as hooks on the generation's own forward pass, which retrieve
(:mod:`fmi.memory.retrieve`) and add the chosen value in the same pass.

Key hooks at the key sites keep the prompt's content-token states as the prompt runs; when the
prompt pass reaches the injection site (later in the network), its hook scores those states
against the memory, decides per row (one matrix product per key channel), and adds the chosen
value at the answer position. No second forward computes the query keys, so reading costs one
greedy generation plus the retrieval.

This gives the same decisions and answers as the two-pass path (``score_queries`` on
``collect``-ed states, then ``greedy`` with the decided vectors); ``tests/unit/test_read_hooks.py``
checks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from fmi.core.generate import Generated, decode
from fmi.core.hooks import LOGITS_SITE, Follower, HookFn
from fmi.core.prompts import Encoded
from fmi.core.sites import UNEMBED_IN, layer_of
from fmi.errors import ConfigError
from fmi.memory.retrieve import CHANNELS, Decision, check_modes, read_decide
from fmi.memory.store import FastMemory


@dataclass
class ReadLog:
    """What the read hooks decided, batch by batch (entry -1: abstained)."""

    decisions: list[Decision] = field(default_factory=list)

    @property
    def entry(self) -> Int[Tensor, " n"]:
        return torch.cat([d.entry for d in self.decisions])


def _key_sites(memory: FastMemory, mode: str) -> dict[str, str]:
    """Which site feeds which side of ``score_queries`` for ``mode``: ``{"symbol": site, ...}``."""
    enc = memory.encoder
    need = CHANNELS[mode]
    sites = {}
    if {"raw", "projected"} & set(need):
        sites["symbol"] = enc.symbol_site
    if {"symbol", "context"} & set(need):
        sites["token"] = enc.token_site
    return sites


def check_order(memory: FastMemory, mode: str) -> None:
    """The key sites must run before the injection site, or the decision would come too late;
    the relation key is read at the injection site itself, which must be the unembedding's
    input (where it is written)."""
    if "relation" in CHANNELS[mode] and memory.inject_site != UNEMBED_IN:
        raise ConfigError(
            f"mode {mode} reads its relation key at {UNEMBED_IN}; this memory injects at "
            f"{memory.inject_site}"
        )
    inject = layer_of(memory.inject_site)
    for site in _key_sites(memory, mode).values():
        layer = layer_of(site)
        if layer is not None and (memory.inject_site == UNEMBED_IN or (inject or 0) > layer):
            continue
        raise ConfigError(
            f"one-pass reading needs key site {site} to run before the injection site "
            f"{memory.inject_site}; use the two-pass path (fmi.experiments.evaluate) for this "
            "memory"
        )


ContentFor = Callable[[int, int], Tensor]
"""``(batch, width) -> content mask`` for a prompt pass whose tokens the hooks cannot see."""


def _answer_steps(
    memory: FastMemory, mode: str, decision
) -> tuple[list[Tensor | None], list[list[int]]]:
    """Per row of a read decision: the vectors to add at each answer step (None where nothing
    was retrieved) and the stored answer tokens they follow."""
    deltas: list[Tensor | None] = []
    tokens: list[list[int]] = []
    for b, e in enumerate(decision.entry.tolist()):
        if e < 0:
            deltas.append(None)
            tokens.append([])
        elif mode == "average":  # a symbol's mean value: its first step only
            deltas.append(decision.vectors[b : b + 1])
            tokens.append(list(memory.entries[e].answer[:1]))
        else:
            later = memory.alpha * memory.sequence(e)[1:]
            deltas.append(torch.cat([decision.vectors[b : b + 1], later]))
            tokens.append(list(memory.entries[e].answer))
    return deltas, tokens


def memory_hooks(
    memory: FastMemory,
    mode: str,
    content: Bool[Tensor, "batch pos"] | ContentFor,
    log: ReadLog,
    gate: list[str | None] | None = None,
) -> list[tuple[str, HookFn]]:
    """Hooks that read ``memory`` under ``mode`` (``content``: each prompt's real, non-special
    tokens, or a function giving them from the batch's shape).

    A *prompt pass* is the first call after the hooks are made, or any call over more than one
    position; the key hooks keep its states, and at the injection site the memory decides per
    row and adds the chosen entry's first value at the last position. Later one-position calls
    (KV-cached generation steps) add the entry's next values while greedy decoding stays on its
    stored answer (:class:`fmi.core.hooks.Follower`), and nothing after a departure. A new prompt
    pass decides afresh, so one set of hooks serves any number of calls (``FastMemory.apply``).
    """
    check_modes([mode])
    check_order(memory, mode)
    sites = _key_sites(memory, mode)
    kept: dict[str, list[Tensor]] = {}
    state: dict = {"decided": False, "follower": None}

    def prompt_pass(act: Tensor) -> bool:
        return act.shape[1] > 1 or not state["decided"]

    def keep(side: str) -> HookFn:
        def hook(act: Tensor, hook: object) -> Tensor:
            if prompt_pass(act):
                kept[side] = list(act.float().unbind(0))
                state["decided"] = False
            return act

        return hook

    def inject(act: Tensor, hook: object) -> Tensor:
        if not prompt_pass(act):  # a KV-cached step after the prompt
            follower = state["follower"]
            return act if follower is None else follower.inject(act)
        if set(kept) != set(sites):
            raise ConfigError(f"key hooks at {sorted(sites.values())} did not run before reading")
        batch, width = act.shape[0], act.shape[1]
        mask = content(batch, width) if callable(content) else content
        rows = list(mask.to(act.device).unbind(0))
        empty = [torch.zeros(width, act.shape[-1])] * batch
        answer = act[:, -1].float() if "relation" in CHANNELS[mode] else None
        decision = read_decide(
            memory,
            mode,
            kept.get("symbol", empty),
            kept.get("token", empty),
            rows,
            gate=gate,
            answer_acts=answer,
        )
        kept.clear()
        state["decided"] = True
        log.decisions.append(decision)
        state["follower"] = Follower(*_answer_steps(memory, mode, decision))
        return state["follower"].inject(act)

    def follow(act: Tensor, hook: object) -> Tensor:
        if state["follower"] is not None:
            state["follower"].follow(act)
        return act

    hooks = [(site, keep(side)) for side, site in sites.items()]
    return [*hooks, (memory.inject_site, inject), (LOGITS_SITE, follow)]


def read_greedy(
    model,
    memory: FastMemory,
    mode: str,
    texts: list[str],
    *,
    gate: list[str | None] | None = None,
    label_ids: Int[Tensor, " k"] | None = None,
    max_new_tokens: int = 3,
    batch_size: int = 16,
) -> tuple[Generated, ReadLog]:
    """Greedy-decode ``texts`` reading ``memory`` under ``mode`` inside the same forward pass.

    ``gate`` (one context or ``None`` per text) is needed by ``context_gate`` only.
    """
    log = ReadLog()

    def hooks_for(enc: Encoded, start: int) -> list[tuple[str, HookFn]]:
        rows = None if gate is None else gate[start : start + enc.tokens.shape[0]]
        return memory_hooks(memory, mode, enc.content, log, rows)

    out = decode(
        model,
        texts,
        hooks_for,
        label_ids=label_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    return out, log
