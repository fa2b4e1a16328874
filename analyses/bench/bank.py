"""Synthetic banks: ``n`` entries shaped like a written memory's, its own among them."""

from __future__ import annotations

from dataclasses import replace

import torch

from fmi.memory.entry import CONTEXT_ROLE, SYMBOL_ROLE, Entry
from fmi.memory.keys import Standardizer
from fmi.memory.store import FastMemory

BANKS = ("written", "random")


def bench_bank(memory: FastMemory, kind: str, n: int, seed: int) -> FastMemory:
    """The bench's bank of ``kind``: ``written`` (:func:`synthetic_bank`, the read prompts'
    bindings among entries shaped like written ones) or ``random`` (:func:`random_bank`, where
    the int8 bound prunes poorly)."""
    if kind == "written":
        return synthetic_bank(memory, n, seed)
    if kind == "random":
        return random_bank(memory, n, seed)
    raise ValueError(f"unknown bank {kind!r}; banks: {', '.join(BANKS)}")


def random_bank(memory: FastMemory, n: int, seed: int) -> FastMemory:
    """An adversarial bank of ``n`` entries: every key row random (standard normal once
    standardized, so random directions), every entry with contexts of its own, none of
    ``memory``'s entries, and no thresholds. The benchmark's read prompts then match nothing,
    every entry's score sits in the same narrow band of noise, and none may abstain: the
    search's bound prunes poorly and it must rank the whole bank, the case where the full
    score matrix is cheaper (the rule of :mod:`fmi.memory.plan` is what keeps reading no
    slower than it)."""
    bank = synthetic_bank(memory, n, seed, entries_per_context=1, own=False)
    return replace(bank, thresholds={})


def synthetic_bank(
    memory: FastMemory, n: int, seed: int, entries_per_context: int = 100, own: bool = True
) -> FastMemory:
    """A bank of ``n`` entries: ``memory``'s own (up to ``n``, at seeded positions) among random
    ones shaped like them, so that the benchmark's read prompts have their binding in the bank
    (``own=False``: random entries only).

    A random entry has the written entries' mean number of symbol-token and context-token rows.
    Its symbol rows are random (each dimension drawn with the written keys' mean and spread, so
    that standardized they are standard normal); its context rows are those of one of
    ``n // entries_per_context`` random contexts, as in a written bank, where a context's tokens
    come before the symbol and so have the same states in every statement of that context."""
    gen = torch.Generator().manual_seed(seed)
    device = memory.values.device
    real = min(n, len(memory)) if own else 0
    place = torch.randperm(n, generator=gen)[:real]  # memory's entry i sits at place[i]
    fake = torch.ones(n, dtype=torch.bool)
    fake[place] = False
    fake_ids = fake.nonzero().flatten()
    role = memory.token_role.cpu()
    n_sym = max(1, round(int((role == SYMBOL_ROLE).sum()) / len(memory)))
    n_ctx = max(1, round(int((role == CONTEXT_ROLE).sum()) / len(memory)))
    enc = memory.encoder

    def draw(rows: int, std: Standardizer) -> torch.Tensor:
        # drawn on the CPU (the seeded generator's device), moved with the rest at the end
        noise = torch.randn(rows, std.mean.shape[0], generator=gen)
        return std.mean.cpu() + std.std.cpu() * noise

    contexts = draw(max(1, n // entries_per_context) * n_ctx, enc.token_std).view(
        -1, n_ctx, enc.token_std.mean.shape[0]
    )
    which = (
        torch.arange(len(fake_ids)) % len(contexts)  # every entry a context of its own
        if entries_per_context == 1
        else torch.randint(0, len(contexts), (len(fake_ids),), generator=gen)
    )
    fake_rows = torch.cat(
        [
            draw(len(fake_ids) * n_sym, enc.token_std).view(len(fake_ids), n_sym, -1),
            contexts[which],
        ],
        dim=1,
    )
    fake_role = torch.tensor([SYMBOL_ROLE] * n_sym + [CONTEXT_ROLE] * n_ctx).repeat(len(fake_ids))
    symbol_keys = draw(n, enc.symbol_std)
    symbol_keys[place] = memory.symbol_keys[:real].cpu()
    values = torch.randn(n, memory.values.shape[1], generator=gen)
    values[place] = memory.values[:real].cpu()
    mine = memory.token_owner.cpu() < real
    token_keys = torch.cat([fake_rows.flatten(0, 1), memory.token_keys.cpu()[mine]])
    owner = torch.cat(
        [fake_ids.repeat_interleave(n_sym + n_ctx), place[memory.token_owner.cpu()[mine]]]
    )
    entries = [Entry("game A", f"w{i}", "red", 0) for i in range(n)]
    for i, at in enumerate(place.tolist()):
        entries[at] = memory.entries[i]
    return replace(
        memory,
        entries=entries,
        values=values.to(device),
        symbol_keys=symbol_keys.to(device),
        token_keys=token_keys.to(device),
        token_owner=owner.to(device),
        token_role=torch.cat([fake_role, role[mine]]).to(device),
    )
