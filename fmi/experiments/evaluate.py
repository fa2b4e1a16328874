"""Evaluating one split: write its bindings, read them back in every mode, and score the
outputs (:mod:`fmi.experiments.recall` runs this over every split).

Generation is shared across modes: a prompt's greedy output depends only on the vector injected
into it, so each distinct (prompt, retrieved entry) pair is decoded once, and abstentions reuse
the memory-free output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from fmi.core.generate import Generated, greedy, greedy_sequences
from fmi.core.sites import UNEMBED_IN
from fmi.experiments.config import RecallConfig
from fmi.experiments.intervals import cluster_interval, wilson_rate
from fmi.experiments.metrics import answer_prefix, rate, text_matches
from fmi.experiments.queries import QuerySet, build_queries, unique_bindings
from fmi.memory.fit import Fitted
from fmi.memory.relation import reads_relation, scored
from fmi.memory.retrieve import (
    Decision,
    QueryScores,
    decide,
    read_queries,
    retrieved_right,
)
from fmi.memory.store import FastMemory
from fmi.memory.write import Written, write_memory

METRICS = ("write", "read", "plain", "unrelated", "unrelated_changed")


@dataclass(frozen=True)
class Outputs:
    """Per query: greedy tokens and the step-one label pick (index into the split's labels)."""

    tokens: list[tuple[int, ...]]
    picks: list[int]


def _injected_outputs(
    model,
    qs: QuerySet,
    decisions: dict[str, Decision],
    base: Generated,
    memory,
    label_ids: torch.Tensor,
    cfg: RecallConfig,
    max_new_tokens: int | None = None,
) -> dict[str, Outputs]:
    """Decode each distinct (query, injected entry) once and assemble every mode's outputs.

    An entry with an answer sequence (``FastMemory.sequence``) gets its later values at later
    steps while greedy follows its stored tokens; ``average`` injects its first step only.
    """
    symbols = memory.symbols()
    jobs: dict[tuple[int, str], tuple[torch.Tensor, list[int]]] = {}
    keys: dict[str, list[tuple[int, str] | None]] = {}
    for mode, d in decisions.items():
        keys[mode] = []
        for q, e in enumerate(d.entry.tolist()):
            if e < 0:
                keys[mode].append(None)
                continue
            key = (q, f"avg:{symbols[e]}" if mode == "average" else f"e:{e}")
            if key not in jobs:
                first = d.vectors[q : q + 1]
                if mode == "average":
                    jobs[key] = (first, list(memory.entries[e].answer[:1]))
                else:
                    later = memory.alpha * memory.sequence(e)[1:]
                    jobs[key] = (torch.cat([first, later]), list(memory.entries[e].answer))
            keys[mode].append(key)
    order = list(jobs)
    done: dict[tuple[int, str], tuple[tuple[int, ...], int]] = {}
    if order:
        gen = greedy_sequences(
            model,
            [qs.texts[q] for q, _ in order],
            site=memory.inject_site,
            sequences=[jobs[k][0] for k in order],
            tokens=[jobs[k][1] for k in order],
            label_ids=label_ids,
            max_new_tokens=max_new_tokens or cfg.max_new_tokens,
            batch_size=cfg.batch_size,
        )
        done = {k: (t, p) for k, t, p in zip(order, gen.tokens, gen.label_pick, strict=True)}
    out = {}
    for mode, ks in keys.items():
        toks = [base.tokens[q] if k is None else done[k][0] for q, k in enumerate(ks)]
        picks = [base.label_pick[q] if k is None else done[k][1] for q, k in enumerate(ks)]
        out[mode] = Outputs(toks, picks)
    return out


def hits(
    model, qs: QuerySet, entries, labels: list[str], out: Outputs, base: Generated
) -> dict[str, list[bool]]:
    """0/1 outcomes per metric for one mode's outputs.

    ``write``/``read`` are greedy exact match of the whole answer, word-bounded
    (:func:`fmi.experiments.metrics.answer_match`: `` pig`` followed by ``let`` is a miss, `` New
    York.`` a
    hit for `` New York``). ``*_token`` is the first greedy token alone; ``*_label`` the step-one
    argmax over the split's labels (their first tokens). ``*_prefix`` holds the fraction of the
    answer's tokens produced before the first departure (a rate, not a 0/1 outcome).
    """
    tok = model.tokenizer
    texts = [tok.decode(list(t), skip_special_tokens=True) for t in out.tokens]
    bound: dict[str, set[str]] = {}
    for b in entries:
        bound.setdefault(b.symbol, set()).add(b.label)
    every = sorted(set(labels))
    hits: dict[str, list] = {m: [] for m in METRICS}
    for kind in ("write", "read"):
        hits[f"{kind}_label"], hits[f"{kind}_token"], hits[f"{kind}_prefix"] = [], [], []
    for q, kind in enumerate(qs.kinds):
        if kind in ("write", "read"):
            entry = entries[qs.entry[q]]
            label = entry.label
            hits[kind].append(text_matches(texts[q], label))
            hits[f"{kind}_label"].append(labels[out.picks[q]] == label)
            hits[f"{kind}_token"].append(out.tokens[q][:1] == (entry.target,))
            hits[f"{kind}_prefix"].append(answer_prefix(out.tokens[q], entry.answer_tokens))
        elif kind == "plain":
            symbol = qs.symbol[q]
            assert symbol is not None  # plain prompts always name a symbol
            hits["plain"].append(any(text_matches(texts[q], lab) for lab in bound[symbol]))
        else:
            hits["unrelated"].append(any(text_matches(texts[q], lab) for lab in every))
            hits["unrelated_changed"].append(out.tokens[q] != base.tokens[q])
    return hits


def misses(model, qs: QuerySet, entries, out: Outputs, limit: int = 5) -> list[dict]:
    """The first ``limit`` read prompts answered wrongly: prompt, label, greedy output."""
    found = []
    for q in qs.index("read"):
        label = entries[qs.entry[q]].label
        text = model.tokenizer.decode(list(out.tokens[q]), skip_special_tokens=True)
        if not text_matches(text, label):
            found.append({"prompt": qs.texts[q], "label": label, "output": text})
            if len(found) == limit:
                break
    return found


CI_METHOD = {
    "write": "cluster (symbols): hull of a cluster bootstrap and Wilson at n/deff",
    "read": "cluster (symbols): hull of a cluster bootstrap and Wilson at n/deff",
    "plain": "Wilson",
    "unrelated": "Wilson",
    "unrelated_changed": "Wilson",
}


def intervals(
    hits: dict[str, list[bool]], qs: QuerySet, cfg: RecallConfig
) -> tuple[dict[str, tuple[float, float]], dict[str, int]]:
    """95% intervals of every rate, and the number of clusters (symbols) behind each.

    Write and read prompts come one per context of a symbol, so they are clustered by symbol
    (:func:`fmi.experiments.intervals.cluster_interval`); the first-token and label-restricted
    rates too.
    Plain prompts (one per symbol) and unrelated prompts get Wilson intervals. None is ever
    zero-width (``n >= 1``).
    """
    out: dict[str, tuple[float, float]] = {}
    clusters: dict[str, int] = {}
    for kind in ("write", "read"):
        symbols = [qs.symbol[q] for q in qs.index(kind)]
        clusters[kind] = len(set(symbols))
        for name in (kind, f"{kind}_token", f"{kind}_label"):
            key = {kind: kind, f"{kind}_token": f"first_token.{kind}"}.get(name, f"label.{kind}")
            got = [float(h) for h in hits[name]]
            out[key] = cluster_interval(got, symbols, cfg.n_bootstrap, cfg.seed)
    for m in ("plain", "unrelated", "unrelated_changed"):
        out[m] = wilson_rate(hits[m])
        clusters[m] = len(hits[m])
    return out, clusters


def summarize(
    hits: dict[str, list[bool]],
    qs: QuerySet,
    cfg: RecallConfig,
    decision: Decision | None = None,
    right: list[bool] | None = None,
) -> dict:
    row: dict = {m: rate(hits[m]) for m in METRICS}
    row["label_restricted"] = {k: rate(hits[f"{k}_label"]) for k in ("write", "read")}
    row["first_token"] = {k: rate(hits[f"{k}_token"]) for k in ("write", "read")}
    row["answer_prefix"] = {k: rate(hits[f"{k}_prefix"]) for k in ("write", "read")}
    row["n"] = len(hits["read"])
    row["n_by_metric"] = {m: len(hits[m]) for m in METRICS}
    row["ci95"], row["clusters"] = intervals(hits, qs, cfg)
    row["ci_method"] = dict(CI_METHOD)
    if decision is not None:
        row["retrieval"] = rate(right or [])  # read prompts that retrieved their binding
        row["fired"] = {
            k: rate([bool(decision.entry[q] >= 0) for q in qs.index(k)])
            for k in ("read", "plain", "unrelated")
        }
    return row


@dataclass(frozen=True)
class SplitRun:
    """One split written into a memory and read once without it: what every method reuses.

    ``write_seconds`` is the wall time of the batched frozen forward that wrote the memory.
    """

    split: object
    written: Written
    memory: FastMemory
    qs: QuerySet
    scores: QueryScores
    labels: list[str]
    label_ids: torch.Tensor
    base: Generated
    write_seconds: float
    max_new_tokens: int  # decoding steps: enough for the longest answer and one token after it

    @property
    def entries(self) -> list:
        return self.written.entries

    def hits(self, model, out: Outputs) -> dict[str, list[bool]]:
        return hits(model, self.qs, self.entries, self.labels, out, self.base)

    @property
    def base_outputs(self) -> Outputs:
        return Outputs(self.base.tokens, self.base.label_pick)


def prepare_split(model, split, fitted: Fitted, cfg: RecallConfig) -> SplitRun:
    """Write ``split``'s bindings, score every query against them, decode every query plainly."""
    entries = unique_bindings(split.bindings)
    enc = fitted.encoder
    start = time.perf_counter()
    written, memory = write_memory(model, entries, split.templates, fitted, cfg)
    write_seconds = time.perf_counter() - start
    qs = build_queries(split, entries)
    relation = (
        (UNEMBED_IN,) if reads_relation(memory) and fitted.relation_weights is not None else ()
    )
    got = read_queries(model, qs, (enc.symbol_site, enc.token_site, *relation), cfg.batch_size)
    scores = scored(memory, got)
    steps = decode_steps(written.entries, cfg)
    labels = sorted({e.label for e in written.entries})
    target_of = {e.label: e.target for e in written.entries}
    label_ids = torch.tensor([target_of[lab] for lab in labels])
    base = greedy(
        model,
        qs.texts,
        site=cfg.inject_site,
        label_ids=label_ids,
        max_new_tokens=steps,
        batch_size=cfg.batch_size,
    )
    return SplitRun(
        split, written, memory, qs, scores, labels, label_ids, base, write_seconds, steps
    )


def decode_steps(entries, cfg: RecallConfig) -> int:
    """``cfg.max_new_tokens``, or more where an answer needs it: its tokens and one after.

    >>> from fmi.memory.store import Entry
    >>> decode_steps([Entry("c", "s", "New York", 1, (1, 2, 3), ends=True)], RecallConfig())
    3
    >>> decode_steps([Entry("c", "s", "x", 1, (1, 2, 3, 4, 5), ends=True)], RecallConfig())
    5
    """
    return max(cfg.max_new_tokens, *(len(e.answer_tokens) + 1 for e in entries))


def mode_outputs(
    model, run: SplitRun, cfg: RecallConfig, modes: tuple[str, ...]
) -> tuple[dict[str, Decision], dict[str, Outputs]]:
    """Each mode's decisions on a prepared split and the greedy outputs they lead to."""
    decisions = {m: decide(m, run.scores, run.memory, gate=run.qs.gate) for m in modes}
    outputs = _injected_outputs(
        model, run.qs, decisions, run.base, run.memory, run.label_ids, cfg, run.max_new_tokens
    )
    return decisions, outputs


def mode_summaries(
    model,
    run: SplitRun,
    cfg: RecallConfig,
    decisions: dict[str, Decision],
    outputs: dict[str, Outputs],
) -> dict[str, dict]:
    """Each mode's summary row (metrics, intervals, retrieval, fired rates, first read misses)
    from its decisions and outputs on a prepared split."""
    qs = run.qs
    reads = qs.index("read")
    results = {}
    for mode, decision in decisions.items():
        chosen = decision.entry[reads]
        right = retrieved_right(mode, chosen, [qs.entry[q] for q in reads], run.memory).tolist()
        results[mode] = summarize(run.hits(model, outputs[mode]), qs, cfg, decision, right)
        results[mode]["read_misses"] = misses(model, qs, run.entries, outputs[mode])
    return results


def mode_rows(model, run: SplitRun, cfg: RecallConfig, modes: tuple[str, ...]) -> dict[str, dict]:
    """Each retrieval mode's summary row on a prepared split."""
    return mode_summaries(model, run, cfg, *mode_outputs(model, run, cfg, modes))


def evaluate_split(
    model, split, fitted: Fitted, cfg: RecallConfig, modes: tuple[str, ...]
) -> dict[str, dict]:
    """Every mode's metrics on one split, plus the memory-free baseline as mode ``none``."""
    run = prepare_split(model, split, fitted, cfg)
    return {
        "none": summarize(run.hits(model, run.base_outputs), run.qs, cfg),
        **mode_rows(model, run, cfg, modes),
    }
