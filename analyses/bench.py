"""``fmi bench``: what the fast memory costs, measured side by side in one run.

- write / forward: writing a batch of statements (keys at two sites, the correction value and
  the entropy, key-token positions) against the plain forward of the same batches that yields
  the answer-position logits (``logits_to_keep=answer_only(tokens)``, the cheapest forward that
  predicts the answer); the two alternate, and the ratio is of the medians.
- memory generation / plain generation: one-pass reading (``fmi.memory.inject``: retrieval inside
  the generation's own forward, the value added at the answer position) against plain greedy
  generation of the same prompts, same batches, same number of new tokens.
- retrieval per query at 1k/10k/100k entries, for a batch of real read prompts' states on a
  bank of that size, on the model's device: the full score matrix (``score_queries`` +
  ``decide``) and the exact search (``read_decide``: an int8 prefilter, float32 rescoring of
  what its bound cannot rule out), which must choose the same entries. The banks hold the
  written entries among synthetic ones (:func:`synthetic_bank`): a matrix product's time does
  not depend on the numbers in it, but the search's does, so ``fmi capacity`` also times both
  on a bank that is written whole.
- answers of 3 tokens (:func:`multi_token`): the teacher-forced write against the plain
  forward of the same texts with logits at the same positions, and memory generation (values
  following the stored answer, then the end value) against plain greedy generation.
- throughput: prompts per second of one-pass memory reading; peak resident memory.

The memory is fitted as ``fmi recall`` fits it (training split of the built-in task), so the
projector and the thresholds the search uses are the real ones.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from analyses.capacity.bank import capacity_bindings
from analyses.timing import median_seconds
from fmi.core.forward import answer_only
from fmi.core.generate import greedy
from fmi.core.prompts import encode
from fmi.errors import ConfigError, require_at_least
from fmi.experiments.config import RecallConfig
from fmi.experiments.tasks import Templates
from fmi.memory.inject import read_greedy
from fmi.memory.keys import Standardizer
from fmi.memory.retrieve import (
    SEARCHED,
    Decision,
    check_modes,
    decide,
    read_decide,
    score_queries,
    searched_top1,
)
from fmi.memory.store import CONTEXT_ROLE, SYMBOL_ROLE, Entry, FastMemory
from fmi.memory.write import write


@dataclass(frozen=True)
class BenchConfig:
    """What ``fmi bench`` measures; ``to_dict()`` heads its JSON."""

    model: str = "auto"
    seed: int = 0
    prompts: int = 64
    batch_size: int = 16
    repeats: int = 5
    max_new_tokens: int = 3
    modes: tuple[str, ...] = ("both_top1", "dual_key")
    bank_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    query_batch: int = 64
    recall: RecallConfig = RecallConfig()

    def __post_init__(self) -> None:
        require_at_least(
            self, ("prompts", "batch_size", "repeats", "max_new_tokens", "query_batch")
        )
        check_modes(list(self.modes))
        if not self.bank_sizes or min(self.bank_sizes) < 1:
            raise ConfigError(f"bank_sizes must be positive, got {list(self.bank_sizes)}")
        if self.prompts % 2:
            raise ConfigError(f"prompts must be even (two contexts per word), got {self.prompts}")

    @classmethod
    def quick_config(cls, model: str = "tiny-neox", **overrides: Any) -> BenchConfig:
        """Tiny sizes for tests and smoke runs (seconds)."""

        small: dict[str, Any] = {
            "model": model,
            "prompts": 8,
            "repeats": 1,
            "bank_sizes": (100, 1000),
            "query_batch": 4,
            "recall": RecallConfig.quick(),
        }
        return cls(**{**small, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def plain_forward(model, texts: list[str], batch_size: int) -> None:
    """The model's forward over ``texts`` in left-padded batches, answer-position logits only."""
    for start in range(0, len(texts), batch_size):
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        model.bridge(enc.tokens, attention_mask=enc.mask, logits_to_keep=answer_only(enc.tokens))


def bench_memory(model, bindings, cfg: BenchConfig) -> tuple[FastMemory, float, Any]:
    """A memory of ``bindings`` read the way ``fmi recall`` reads (fitted on the built-in
    task's training split: standardizers, projector, thresholds, alpha), the fit's seconds, and
    the fit."""
    from fmi.experiments.recall import task_for
    from fmi.memory.fit import fit, write_memory

    start = time.perf_counter()
    fitted = fit(model, task_for(cfg.recall).train, cfg.recall)
    seconds = time.perf_counter() - start
    _, memory = write_memory(model, bindings, Templates(), fitted, cfg.recall)
    return memory, seconds, fitted


def answers_of(tokenizer, length: int) -> list[str]:
    """The built-in multi-token labels that are exactly ``length`` tokens after a space."""
    from fmi.experiments.tasks import MULTI_CATEGORIES

    labels = [label for cat in MULTI_CATEGORIES for label in cat]
    return [
        x
        for x in labels
        if len(tokenizer(" " + x, add_special_tokens=False)["input_ids"]) == length
    ]


def multi_token(model, bindings, fitted, cfg: BenchConfig, length: int = 3) -> dict[str, Any]:
    """The write and generation ratios for answers of ``length`` tokens (plus the end token).

    The bindings are ``bindings`` with labels drawn in turn from :func:`answers_of`. The write
    (one teacher-forced forward over statement + answer + end, a value per answer token and for
    the end token) is timed against the plain forward of the same texts that yields the logits
    at the same positions; memory generation (``dual_key``, values following the stored answer)
    against plain greedy generation of ``length + 1`` tokens.
    """
    from fmi.memory.fit import write_memory

    pool = answers_of(model.tokenizer, length)
    if not pool:
        return {"skipped": f"no built-in label is {length} tokens for this tokenizer"}
    if cfg.recall.end is None:
        return {"skipped": "the recall configuration writes no answer sequence (end=None)"}
    multi = [replace(b, label=pool[i % len(pool)]) for i, b in enumerate(bindings)]
    templates = Templates()
    _, memory = write_memory(model, multi, templates, fitted, cfg.recall)
    end = cfg.recall.end
    texts = [templates.prompt("write", b) + templates.target("write", b.label) + end for b in multi]
    steps = length + (1 if end else 0)
    enc = memory.encoder
    kw = dict(
        symbol_site=enc.symbol_site, token_site=enc.token_site, inject_site=memory.inject_site
    )

    @torch.inference_mode()
    def forward() -> None:
        for start in range(0, len(texts), cfg.batch_size):
            batch = encode(model.tokenizer, texts[start : start + cfg.batch_size])
            width = batch.tokens.shape[1]
            keep = torch.arange(width - 1 - steps, width - 1)  # the positions that predict
            model.bridge(batch.tokens, attention_mask=batch.mask, logits_to_keep=keep)

    def written() -> Any:
        return write(model, multi, templates, batch_size=cfg.batch_size, end=end, **kw)

    reads = [templates.prompt("read", b) for b in multi]

    def plain() -> Any:
        return greedy(
            model, reads, site=memory.inject_site, max_new_tokens=steps, batch_size=cfg.batch_size
        )

    def read() -> Any:
        return read_greedy(
            model, memory, "dual_key", reads, max_new_tokens=steps, batch_size=cfg.batch_size
        )

    t = median_seconds(
        {"forward": forward, "write": written, "plain": plain, "read": read}, cfg.repeats
    )
    out, _ = read_greedy(
        model, memory, "dual_key", reads, max_new_tokens=steps, batch_size=cfg.batch_size
    )
    right = [
        tuple(o[:length]) == e.answer_tokens
        for o, e in zip(out.tokens, memory.entries, strict=True)
    ]
    return {
        "answer_tokens": length,
        "labels": pool,
        "forward_s": t["forward"],
        "write_s": t["write"],
        "write_ratio": t["write"] / t["forward"],
        "plain_s": t["plain"],
        "memory_s": t["read"],
        "generation_ratio": t["read"] / t["plain"],
        "read_exact": sum(right) / len(right),
    }


def write_vs_forward(model, bindings, memory: FastMemory, cfg: BenchConfig) -> dict[str, float]:
    templates = Templates()
    texts = [templates.prompt("write", b) for b in bindings]
    enc = memory.encoder
    kw = dict(
        symbol_site=enc.symbol_site, token_site=enc.token_site, inject_site=memory.inject_site
    )
    t = median_seconds(
        {
            "forward": lambda: plain_forward(model, texts, cfg.batch_size),
            "write": lambda: write(model, bindings, templates, batch_size=cfg.batch_size, **kw),
        },
        cfg.repeats,
    )
    return {"forward_s": t["forward"], "write_s": t["write"], "ratio": t["write"] / t["forward"]}


def generation(model, bindings, memory: FastMemory, cfg: BenchConfig) -> dict[str, Any]:
    """Plain greedy vs one-pass memory reading per mode, and prompts per second."""
    texts = [Templates().prompt("read", b) for b in bindings]
    n, b = cfg.max_new_tokens, cfg.batch_size

    def plain() -> Any:
        return greedy(model, texts, site=memory.inject_site, max_new_tokens=n, batch_size=b)

    def read(mode: str) -> Callable[[], Any]:
        return lambda: read_greedy(model, memory, mode, texts, max_new_tokens=n, batch_size=b)

    fns: dict[str, Callable[[], Any]] = {"plain": plain, **{m: read(m) for m in cfg.modes}}
    t = median_seconds(fns, cfg.repeats)
    out: dict[str, Any] = {"plain_s": t["plain"], "prompts": len(texts)}
    for mode in cfg.modes:
        out[mode] = {
            "seconds": t[mode],
            "ratio": t[mode] / t["plain"],
            "prompts_per_s": len(texts) / t[mode],
        }
    return out


def synthetic_bank(
    memory: FastMemory, n: int, seed: int, entries_per_context: int = 100
) -> FastMemory:
    """A bank of ``n`` entries: ``memory``'s own (up to ``n``, at seeded positions) among random
    ones shaped like them, so that the benchmark's read prompts have their binding in the bank.

    A random entry has the written entries' mean number of symbol-token and context-token rows.
    Its symbol rows are random (each dimension drawn with the written keys' mean and spread, so
    that standardized they are standard normal); its context rows are those of one of
    ``n // entries_per_context`` random contexts, as in a written bank, where a context's tokens
    come before the symbol and so have the same states in every statement of that context."""
    gen = torch.Generator().manual_seed(seed)
    device = memory.values.device
    real = min(n, len(memory))
    place = torch.randperm(n, generator=gen)[:real]  # memory's entry i sits at place[i]
    fake = torch.ones(n, dtype=torch.bool)
    fake[place] = False
    fake_ids = fake.nonzero().flatten()
    role = memory.token_role.cpu()
    n_sym = max(1, round(int((role == SYMBOL_ROLE).sum()) / len(memory)))
    n_ctx = max(1, round(int((role == CONTEXT_ROLE).sum()) / len(memory)))
    enc = memory.encoder

    def draw(rows: int, std: Standardizer) -> torch.Tensor:
        return std.mean + std.std * torch.randn(rows, std.mean.shape[0], generator=gen)

    contexts = draw(max(1, n // entries_per_context) * n_ctx, enc.token_std).view(
        -1, n_ctx, enc.token_std.mean.shape[0]
    )
    which = torch.randint(0, len(contexts), (len(fake_ids),), generator=gen)
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


def retrieval(memory: FastMemory, queries: dict[str, list[torch.Tensor]], cfg: BenchConfig) -> dict:
    """Per mode and bank size: milliseconds per query for the full score matrix
    (``score_queries`` + ``decide``) and for the exact search (``read_decide``, int8 prefilter
    and float32 rescoring; medians of ``repeats``), whether both chose the same entries, and the
    median number of entries the search rescored."""
    content = [torch.ones(len(q), dtype=torch.bool) for q in queries["symbol"]]
    args = (queries["symbol"], queries["token"], content)
    out: dict[str, dict[int, dict[str, float]]] = {m: {} for m in cfg.modes}
    for n in cfg.bank_sizes:
        bank = synthetic_bank(memory, n, cfg.seed)
        for mode in cfg.modes:

            def full(bank=bank, mode=mode) -> Decision:
                return decide(mode, score_queries(bank, *args, (mode,)), bank)

            def searched(bank=bank, mode=mode) -> Decision:
                return read_decide(bank, mode, *args, min_search=0)

            # the warm-up call builds the key indexes
            t = median_seconds({"matrix": full, "search": searched}, cfg.repeats)
            row = {k: 1000 * v / len(content) for k, v in t.items()}
            row["same_entries"] = float((full().entry == searched().entry).float().mean())
            if mode in SEARCHED:
                thr = bank.thresholds.get(mode, float("-inf"))
                got = searched_top1(bank, mode, *args, threshold=thr)
                row["rescored"] = float(got[2].float().median())
            out[mode][n] = row
    return out


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (and of the GPU, where one is used), MiB."""
    out = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def query_states(model, memory: FastMemory, texts: list[str], n: int) -> dict[str, list]:
    """Real read prompts' content-token states at both key sites, repeated up to ``n``."""
    from fmi.core.forward import collect

    enc = memory.encoder
    sites = list(dict.fromkeys([enc.symbol_site, enc.token_site]))
    got = collect(model.bridge, model.tokenizer, texts, sites)
    rows = [i % len(texts) for i in range(n)]
    pick = [got.content[i] for i in rows]
    return {
        "symbol": [got.acts[enc.symbol_site][i][c] for i, c in zip(rows, pick, strict=True)],
        "token": [got.acts[enc.token_site][i][c] for i, c in zip(rows, pick, strict=True)],
    }


def run_bench(cfg: BenchConfig, *, model=None, announce: Callable[[str], None] = print) -> dict:
    """Every figure of the benchmark, measured in this process, in one document."""
    from fmi.models.registry import load_model
    from fmi.reporting.provenance import header

    torch.manual_seed(cfg.seed)
    if model is None:
        model = load_model(cfg.model, seed=cfg.seed, announce=announce)
    rc = cfg.recall
    bindings = capacity_bindings(cfg.prompts, cfg.seed, skip=rc.n_train + rc.n_eval)
    memory, fit_seconds, fitted = bench_memory(model, bindings, cfg)
    announce(f"fmi: bench on {model.name}: {len(bindings)} prompts, batch {cfg.batch_size}")
    doc: dict[str, Any] = {
        "model": model.name,
        "threads": torch.get_num_threads(),
        "fit_s": fit_seconds,
        "thresholds": memory.thresholds,
    }
    doc["write"] = write_vs_forward(model, bindings, memory, cfg)
    announce(f"fmi: write/forward {doc['write']['ratio']:.3f}")
    doc["generation"] = generation(model, bindings, memory, cfg)
    doc["multi_token"] = multi_token(model, bindings, fitted, cfg)
    texts = [Templates().prompt("read", b) for b in bindings]
    queries = query_states(model, memory, texts, cfg.query_batch)
    doc["retrieval_ms_per_query"] = retrieval(memory, queries, cfg)
    doc["peak_memory"] = peak_memory()
    doc["header"] = header(model, cfg.to_dict(), device=str(memory.values.device))
    return doc


def summary_lines(doc: dict) -> list[str]:
    """The benchmark as plain lines, the way ``fmi bench`` prints it."""
    w, g = doc["write"], doc["generation"]
    lines = [
        f"model {doc['model']} | {doc['threads']} threads | {g['prompts']} prompts",
        f"write / forward: {w['write_s']:.3f} s / {w['forward_s']:.3f} s = {w['ratio']:.3f}",
    ]
    for mode, r in g.items():
        if isinstance(r, dict):
            lines.append(
                f"{mode}: memory generation / plain generation: {r['seconds']:.3f} s / "
                f"{g['plain_s']:.3f} s = {r['ratio']:.3f}; {r['prompts_per_s']:.1f} prompts/s"
            )
    m = doc.get("multi_token", {})
    if "skipped" in m:
        lines.append(f"multi-token: skipped ({m['skipped']})")
    elif m:
        n = m["answer_tokens"]
        lines.append(
            f"{n}-token answers: write / forward: {m['write_s']:.3f} s / {m['forward_s']:.3f} s"
            f" = {m['write_ratio']:.3f}; memory generation / plain generation: "
            f"{m['memory_s']:.3f} s / {m['plain_s']:.3f} s = {m['generation_ratio']:.3f} "
            f"(dual_key, {n + 1} tokens; whole answer read {m['read_exact']:.2f})"
        )
    for mode, by_size in doc["retrieval_ms_per_query"].items():
        for n, r in by_size.items():
            rescored = f", {r['rescored']:g} rescored" if "rescored" in r else ""
            lines.append(
                f"{mode}: retrieval per query at {int(n):,} entries: score matrix "
                f"{r['matrix']:.3f} ms, search {r['search']:.3f} ms "
                f"(same entry {r['same_entries']:.2f}{rescored})"
            )
    lines.append("peak memory: " + ", ".join(f"{k} {v:.0f}" for k, v in doc["peak_memory"].items()))
    return lines
