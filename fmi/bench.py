"""``fmi bench``: what the fast memory costs, measured side by side in one run.

- write / forward: writing a batch of statements (keys at two sites, the correction value, key
  token positions) against the plain forward of the same batch that yields the answer-position
  logits (``logits_to_keep=1``); the two alternate, and the ratio is of the medians.
- memory generation / plain generation: one-pass reading (``fmi.read_hooks``: retrieval inside
  the generation's own forward, the value added at the answer position) against plain greedy
  generation of the same prompts, same batches, same number of new tokens.
- retrieval per query at 1k/10k/100k entries: ``score_queries`` + ``decide`` for a batch of
  queries on a bank of that size, on the model's device. Large banks are synthetic (random keys
  with the model's width, the written memory's tokens per entry, and real query lengths): the
  time of a matrix product does not depend on the numbers in it.
- throughput: prompts per second of one-pass memory reading; peak resident memory.

The memory's encoder here is fitted on the benchmark's own statements (standardizers) with a
random orthonormal projector: timing does not depend on how good the keys are.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from fmi.calibrate import make_memory
from fmi.capacity.bank import capacity_bindings
from fmi.config import RecallConfig
from fmi.errors import ConfigError, require_at_least
from fmi.generate import greedy
from fmi.keys import Standardizer
from fmi.memory import Entry, FastMemory, KeyEncoder
from fmi.prompts import encode
from fmi.read_hooks import read_greedy
from fmi.retrieval import check_modes, decide, score_queries
from fmi.tasks import Templates
from fmi.write import write


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _median_seconds(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall time of each ``fn``, calls interleaved so that drift hits all alike."""
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


@torch.inference_mode()
def plain_forward(model, texts: list[str], batch_size: int) -> None:
    """The model's forward over ``texts`` in left-padded batches, answer-position logits only."""
    for start in range(0, len(texts), batch_size):
        enc = encode(model.tokenizer, texts[start : start + batch_size])
        model.bridge(enc.tokens, attention_mask=enc.mask, logits_to_keep=1)


def bench_memory(model, bindings, cfg: BenchConfig) -> FastMemory:
    """A memory of ``bindings`` with an encoder fitted on their own keys (timing only)."""
    sym, tok = cfg.recall.sites(int(model.bridge.cfg.n_layers))
    kw = dict(symbol_site=sym, token_site=tok, inject_site=cfg.recall.inject_site)
    written = write(model, bindings, Templates(), batch_size=cfg.batch_size, **kw)
    gen = torch.Generator().manual_seed(cfg.seed)
    d = written.symbol_keys.shape[1]
    dim = min(cfg.recall.projector.dim, d)
    projector = torch.linalg.qr(torch.randn(d, dim, generator=gen)).Q
    encoder = KeyEncoder(
        sym,
        tok,
        Standardizer.fit(written.symbol_keys),
        Standardizer.fit(written.token_keys),
        projector,
    )
    scale = float(written.answer_norms.median() / written.values.norm(dim=-1).median())
    return make_memory(model, written, encoder, alpha=0.2 * scale, inject_site=kw["inject_site"])


def write_vs_forward(model, bindings, memory: FastMemory, cfg: BenchConfig) -> dict[str, float]:
    templates = Templates()
    texts = [templates.prompt("write", b) for b in bindings]
    enc = memory.encoder
    kw = dict(
        symbol_site=enc.symbol_site, token_site=enc.token_site, inject_site=memory.inject_site
    )
    t = _median_seconds(
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
    t = _median_seconds(fns, cfg.repeats)
    out: dict[str, Any] = {"plain_s": t["plain"], "prompts": len(texts)}
    for mode in cfg.modes:
        out[mode] = {
            "seconds": t[mode],
            "ratio": t[mode] / t["plain"],
            "prompts_per_s": len(texts) / t[mode],
        }
    return out


def synthetic_bank(memory: FastMemory, n: int, seed: int) -> FastMemory:
    """A bank of ``n`` random entries shaped like ``memory``'s (width, tokens per entry)."""
    gen = torch.Generator().manual_seed(seed)
    per = max(1, round(len(memory.token_keys) / len(memory)))
    d = memory.symbol_keys.shape[1]
    device = memory.values.device
    owner = torch.arange(n).repeat_interleave(per)
    role = torch.arange(per).repeat(n) % 2
    return replace(
        memory,
        entries=[Entry("game A", f"w{i}", "red", 0) for i in range(n)],
        values=torch.randn(n, d, generator=gen).to(device),
        symbol_keys=torch.randn(n, d, generator=gen).to(device),
        token_keys=torch.randn(n * per, d, generator=gen).to(device),
        token_owner=owner.to(device),
        token_role=role.to(device),
    )


def retrieval(memory: FastMemory, queries: dict[str, list[torch.Tensor]], cfg: BenchConfig) -> dict:
    """Milliseconds per query for each mode and bank size (median of ``repeats``)."""
    content = [torch.ones(len(q), dtype=torch.bool) for q in queries["symbol"]]
    out: dict[str, dict[int, float]] = {m: {} for m in cfg.modes}
    for n in cfg.bank_sizes:
        bank = synthetic_bank(memory, n, cfg.seed)
        for mode in cfg.modes:

            def run(bank=bank, mode=mode) -> None:
                s = score_queries(bank, queries["symbol"], queries["token"], content, (mode,))
                decide(mode, s, bank)

            seconds = _median_seconds({"r": run}, cfg.repeats)["r"]  # the warm-up builds the index
            out[mode][n] = 1000 * seconds / len(content)
    return out


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (and of the GPU, where one is used), MiB."""
    out = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def query_states(model, memory: FastMemory, texts: list[str], n: int) -> dict[str, list]:
    """Real read prompts' content-token states at both key sites, repeated up to ``n``."""
    from fmi.forward import collect

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
    from fmi.models import load_model
    from fmi.provenance import header

    torch.manual_seed(cfg.seed)
    if model is None:
        model = load_model(cfg.model, seed=cfg.seed, announce=announce)
    bindings = capacity_bindings(cfg.prompts, cfg.seed, skip=0)
    memory = bench_memory(model, bindings, cfg)
    announce(f"fmi: bench on {model.name}: {len(bindings)} prompts, batch {cfg.batch_size}")
    doc: dict[str, Any] = {"model": model.name, "threads": torch.get_num_threads()}
    doc["write"] = write_vs_forward(model, bindings, memory, cfg)
    announce(f"fmi: write/forward {doc['write']['ratio']:.3f}")
    doc["generation"] = generation(model, bindings, memory, cfg)
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
    for mode, by_size in doc["retrieval_ms_per_query"].items():
        cells = ", ".join(f"{n:,} keys {ms:.3f} ms" for n, ms in by_size.items())
        lines.append(f"{mode}: retrieval per query: {cells}")
    lines.append("peak memory: " + ", ".join(f"{k} {v:.0f}" for k, v in doc["peak_memory"].items()))
    return lines
