"""The fast memory's capacity curve: read / plain / unrelated vs bank size, retrieval apart.

The largest bank is written once; the bank of size N is its first N entries (``FastMemory.head``;
an entry's keys and value come from its own statement, so this equals writing N alone). Query
states do not depend on the bank either, so every sampled query is run once and scored against
the largest bank, and size N keeps the first N columns. Greedy decoding is shared as in
``fmi.experiments.evaluate``: each distinct (prompt, injected entry) pair is decoded once.

Per size and mode the row separates the two ways a read can fail:
- ``retrieval``: the read prompt's top entry (above threshold) is its own binding;
- ``injection``: read accuracy when the right value is injected regardless (oracle retrieval),
  which does not depend on N;
- ``read_if_retrieved``: read accuracy on the prompts whose retrieval was right.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from analyses.capacity.config import CapacityConfig
from fmi.core.generate import Generated, greedy
from fmi.experiments.evaluate import Outputs, hits, summarize
from fmi.experiments.metrics import rate
from fmi.experiments.queries import QuerySet
from fmi.memory.fit import Fitted
from fmi.memory.retrieve import (
    Decision,
    QueryScores,
    decide,
    read_queries,
    retrieved_right,
    score_queries,
)
from fmi.memory.store import FastMemory
from fmi.memory.write import write_memory


@dataclass(frozen=True)
class Bank:
    """The largest bank written once, the sampled prompts, and their scores against it."""

    memory: FastMemory
    qs: QuerySet
    rows: dict[int, list[int]]  # size -> the rows of ``qs`` sampled for that size
    scores: QueryScores
    labels: list[str]
    label_ids: torch.Tensor
    write_seconds: float
    acts: dict[str, list[torch.Tensor]]  # per sampled row: "symbol", "token" states, "content"


def sample_queries(bindings, templates, unrelated, cfg: CapacityConfig) -> tuple[QuerySet, dict]:
    """Write and read prompts of up to ``read_queries`` bindings and contextless prompts of up to
    ``plain_queries`` words per size (seeded, from that size's bank), plus every unrelated
    prompt; one row per distinct prompt."""
    rng = random.Random(cfg.seed)
    index: dict[tuple[str, int], int] = {}
    rows_of: dict[int, list[int]] = {}
    spec: list[tuple[str, str, int, str | None, str | None]] = []

    def row(kind: str, i: int, item) -> int:
        if (kind, i) not in index:
            index[(kind, i)] = len(spec)
            spec.append(item)
        return index[(kind, i)]

    for n in cfg.sizes:
        reads = sorted(rng.sample(range(n), min(n, cfg.read_queries)))
        words = sorted(rng.sample(range(n // 2), min(n // 2, cfg.plain_queries)))
        rows = [row("write", i, _prompt(templates, "write", bindings[i], i)) for i in reads]
        rows += [row("read", i, _prompt(templates, "read", bindings[i], i)) for i in reads]
        rows += [row("plain", w, _plain(templates, bindings[2 * w])) for w in words]
        rows += [
            row("unrelated", u, (t, "unrelated", -1, None, None)) for u, t in enumerate(unrelated)
        ]
        rows_of[n] = rows
    texts, kinds, entry, symbol, gate = (list(x) for x in zip(*spec, strict=True))
    return QuerySet(texts, kinds, entry, symbol, gate), rows_of


def _prompt(templates, kind: str, b, i: int) -> tuple:
    return (templates.prompt(kind, b), kind, i, b.symbol, b.context)


def _plain(templates, b) -> tuple:
    return (templates.prompt("plain", b), "plain", -1, b.symbol, None)


def write_bank(
    model, bindings, split, fitted: Fitted, cfg: CapacityConfig, *, progress: bool = False
) -> Bank:
    """Write ``bindings`` (the largest size) once and score every sampled prompt against it
    (``progress``: a bar of the three stages on stderr)."""
    rc = cfg.recall
    bar = tqdm(total=3, desc=f"capacity: write {len(bindings)}", disable=not progress, leave=False)
    start = time.perf_counter()
    written, memory = write_memory(model, bindings, split.templates, fitted, rc)
    seconds = time.perf_counter() - start
    bar.update()
    bar.set_description("capacity: read the sampled prompts")
    qs, rows = sample_queries(bindings, split.templates, split.unrelated, cfg)
    enc = fitted.encoder
    got = read_queries(model, qs, (enc.symbol_site, enc.token_site), cfg.batch_size)
    bar.update()
    bar.set_description("capacity: score them")
    scores = score_queries(
        memory, got.acts[enc.symbol_site], got.acts[enc.token_site], got.content, cfg.modes
    )
    bar.update()
    bar.close()
    labels = sorted({e.label for e in written.entries})
    target = {e.label: e.target for e in written.entries}
    ids = torch.tensor([target[lab] for lab in labels])
    acts = {
        "symbol": got.acts[enc.symbol_site],
        "token": got.acts[enc.token_site],
        "content": got.content,
    }
    return Bank(memory, qs, rows, scores, labels, ids, seconds, acts)


def _head(scores: QueryScores, rows: list[int], n: int) -> QueryScores:
    def cut(x):
        return None if x is None else x[rows, :n]

    return QueryScores(
        cut(scores.raw), cut(scores.projected), cut(scores.symbol), cut(scores.context)
    )


def decisions(bank: Bank, cfg: CapacityConfig) -> dict[tuple[int, str], Decision]:
    """``(size, mode) -> decision per sampled row of that size`` (entry -1: abstain)."""
    out = {}
    for n in cfg.sizes:
        head = bank.memory.head(n)
        qs = bank.qs.subset(bank.rows[n])
        for mode in cfg.modes:
            out[(n, mode)] = decide(mode, _head(bank.scores, bank.rows[n], n), head, gate=qs.gate)
    return out


def decode_jobs(
    model, bank: Bank, jobs: set[tuple[int, int]], cfg: CapacityConfig, progress: bool = False
) -> dict:
    """Greedy outputs of each (row, entry) pair with that entry's value injected (entry -1:
    nothing injected). ``progress``: a bar of the prompts decoded, on stderr; greedy runs one
    call per batch then, the same batches as one call makes."""
    order = sorted(jobs)
    plain = [j for j in order if j[1] < 0]
    inject = [j for j in order if j[1] >= 0]
    done: dict[tuple[int, int], tuple[tuple[int, ...], int]] = {}
    bar = tqdm(total=len(order), desc="capacity: decode", disable=not progress, leave=False)
    step = cfg.batch_size if progress else max(1, len(order))
    for part, deltas in ((plain, None), (inject, True)):
        for lo in range(0, len(part), step):
            chunk = part[lo : lo + step]
            vectors = None
            if deltas:
                vectors = bank.memory.alpha * bank.memory.values[[e for _, e in chunk]]
            gen: Generated = greedy(
                model,
                [bank.qs.texts[q] for q, _ in chunk],
                site=bank.memory.inject_site,
                deltas=vectors,
                label_ids=bank.label_ids,
                max_new_tokens=cfg.recall.max_new_tokens,
                batch_size=cfg.batch_size,
            )
            got = zip(chunk, gen.tokens, gen.label_pick, strict=True)
            done.update({j: (t, p) for j, t, p in got})
            bar.update(len(chunk))
    bar.close()
    return done


def base_of(done: dict, rows: list[int]) -> Generated:
    """The memory-free outputs of ``rows`` (what ``unrelated_changed`` compares against)."""
    return Generated([done[(q, -1)][0] for q in rows], [done[(q, -1)][1] for q in rows], [])


def curve_rows(
    model, bank: Bank, cfg: CapacityConfig, progress: bool = False
) -> tuple[list[dict], dict]:
    """One row per (size, mode): the recall metrics with intervals, retrieval and injection;
    and every decoded output (``(row, entry) -> (tokens, label pick)``, entry -1: no memory).
    ``progress``: bars of the decoding and of the sizes scored, on stderr."""
    chosen = decisions(bank, cfg)
    jobs = {(q, -1) for q in range(len(bank.qs.texts))}
    jobs |= {(q, e) for q, e in enumerate(bank.qs.entry) if e >= 0}  # oracle retrieval
    for (n, _), d in chosen.items():
        jobs |= {(q, int(e)) for q, e in zip(bank.rows[n], d.entry.tolist(), strict=True)}
    done = decode_jobs(model, bank, jobs, cfg, progress)
    out = []
    for n in tqdm(cfg.sizes, desc="capacity: bank sizes", disable=not progress, leave=False):
        rows = bank.rows[n]
        qs = bank.qs.subset(rows)
        entries = bank.memory.entries[:n]
        base = base_of(done, rows)
        oracle = _outputs(done, rows, [bank.qs.entry[q] for q in rows])
        injection = hits(model, qs, entries, bank.labels, oracle, base)["read"]
        for mode in cfg.modes:
            d = chosen[(n, mode)]
            outputs = _outputs(done, rows, d.entry.tolist())
            h = hits(model, qs, entries, bank.labels, outputs, base)
            reads = qs.index("read")
            right = retrieved_right(mode, d.entry[reads], [qs.entry[q] for q in reads], bank.memory)
            row = summarize(h, qs, cfg.recall, d, right.tolist())
            row["injection"] = rate(injection)
            kept = [h["read"][i] for i, r in enumerate(right.tolist()) if r]
            row["read_if_retrieved"] = rate(kept)
            out.append({"size": n, "mode": mode, **row})
    return out, done


def _outputs(done: dict, rows: list[int], entries: list[int]) -> Outputs:
    """Outputs of ``rows`` where row ``i`` had ``entries[i]`` injected (-1: nothing; also used
    for prompts with no binding, whose oracle entry is -1)."""
    picked = [done[(q, e if e >= 0 else -1)] for q, e in zip(rows, entries, strict=True)]
    return Outputs([t for t, _ in picked], [p for _, p in picked])
