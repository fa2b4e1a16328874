"""One row of the comparison: a method's outputs scored like the memory's, with its write cost.

Every method hands per-query greedy outputs on the same :class:`~fmi.experiments.evaluate.SplitRun`
to
:func:`score`, which applies the recall experiment's own metrics
(:func:`fmi.experiments.evaluate.hits`) and
95% intervals, clustered by symbol for reads (:func:`fmi.experiments.evaluate.summarize`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from fmi.core.generate import Generated, greedy
from fmi.experiments.config import RecallConfig
from fmi.experiments.evaluate import Outputs, SplitRun, misses, summarize
from fmi.experiments.metrics import rate


@dataclass(frozen=True)
class Cost:
    """What writing costs: frozen forward passes and backward passes per written binding (or,
    for per-label steering vectors, in all), and the measured wall time of the write."""

    forward: float
    backward: float
    seconds: float
    note: str = ""


@dataclass(frozen=True)
class Row:
    """One method on one split: the recall summary (same metrics and CIs), its cost, extras."""

    method: str
    family: str
    summary: dict[str, Any]
    cost: Cost
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "family": self.family,
            "summary": self.summary,
            "cost": asdict(self.cost),
            "detail": self.detail,
        }


def inject(
    model,
    run: SplitRun,
    cfg: RecallConfig,
    site: str,
    deltas: Float[Tensor, "q d"],
    active: Bool[Tensor, " q"] | None = None,
) -> Outputs:
    """Greedy outputs with ``deltas[q]`` added at ``site`` (answer position) where ``active``;
    the other queries keep their memory-free output, which is what they would decode."""
    on = torch.ones(len(run.qs.texts), dtype=torch.bool) if active is None else active
    return on_active(
        run,
        on,
        lambda rows: greedy(
            model,
            [run.qs.texts[q] for q in rows],
            site=site,
            deltas=deltas[rows],
            label_ids=run.label_ids,
            max_new_tokens=run.max_new_tokens,
            batch_size=cfg.batch_size,
        ),
    )


def on_active(
    run: SplitRun, active: Bool[Tensor, " q"], generate: Callable[[list[int]], Generated]
) -> Outputs:
    """``generate(rows)``'s outputs for the active queries (``rows``, in order), the memory-free
    outputs for the others: a method decodes only where it acts."""
    rows = active.nonzero().squeeze(-1).tolist()
    tokens, picks = list(run.base.tokens), list(run.base.label_pick)
    if rows:
        gen = generate(rows)
        for j, q in enumerate(rows):
            tokens[q], picks[q] = gen.tokens[j], gen.label_pick[j]
    return Outputs(tokens, picks)


def mix(active: Bool[Tensor, " q"], injected: Outputs, base: Outputs) -> Outputs:
    """Injected outputs where ``active``, memory-free ones elsewhere."""
    on = active.tolist()
    return Outputs(
        [a if o else b for o, a, b in zip(on, injected.tokens, base.tokens, strict=True)],
        [a if o else b for o, a, b in zip(on, injected.picks, base.picks, strict=True)],
    )


def entries_in_play(run: SplitRun, own_only: bool) -> list[list[int]]:
    """Per query, the entries a method without retrieval acts on (indices into ``run.entries``).

    ``own_only``: a write or read prompt's own entry, any other prompt its symbol's first entry.
    Otherwise every entry of the prompt's symbol (both conflicting contexts). Unrelated prompts
    name no symbol and take the symbols in turn: what is on cannot be switched off for them.
    """
    by_symbol: dict[str, list[int]] = {}
    for i, e in enumerate(run.entries):
        by_symbol.setdefault(e.symbol, []).append(i)
    symbols = list(by_symbol)
    out, unrelated_seen = [], 0
    for q, kind in enumerate(run.qs.kinds):
        symbol = run.qs.symbol[q]
        if symbol is None:
            symbol = symbols[unrelated_seen % len(symbols)]
            unrelated_seen += 1
        if not own_only:
            out.append(by_symbol[symbol])
        elif kind in ("write", "read"):
            out.append([run.qs.entry[q]])
        else:
            out.append(by_symbol[symbol][:1])
    return out


def fired(run: SplitRun, active: Bool[Tensor, " q"]) -> dict[str, float]:
    """The fraction of each kind of prompt on which a method intervened."""
    kinds = ("write", "read", "plain", "unrelated")
    return {k: rate([bool(active[q]) for q in run.qs.index(k)]) for k in kinds}


def score(
    model,
    run: SplitRun,
    cfg: RecallConfig,
    method: str,
    family: str,
    out: Outputs,
    cost: Cost,
    *,
    active: Bool[Tensor, " q"] | None = None,
    detail: dict[str, Any] | None = None,
) -> Row:
    """Score ``out`` with the recall metrics and intervals; ``active`` adds the fired rates."""
    summary = summarize(run.hits(model, out), run.qs, cfg)
    summary["read_misses"] = misses(model, run.qs, run.entries, out)
    if active is not None:
        summary["fired"] = fired(run, active)
    return Row(method, family, summary, cost, dict(detail or {}))
