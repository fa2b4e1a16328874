"""The prompts a memory is read with: write, read, plain and unrelated, with their answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fmi.experiments.tasks import Binding

KINDS = ("write", "read", "plain", "unrelated")


@dataclass(frozen=True)
class QuerySet:
    """Parallel lists, one item per prompt."""

    texts: list[str]
    kinds: list[str]
    entry: list[int]  # index of the binding it asks for (write/read), else -1
    symbol: list[str | None]  # the invented word it mentions (write/read/plain), else None
    gate: list[str | None]  # the context the prompt mentions (an oracle gate's pick), or None

    def index(self, kind: str) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == kind]

    def subset(self, rows: list[int]) -> QuerySet:
        """The prompts ``rows``, in that order (entry indices still point into the same bank)."""
        return QuerySet(
            [self.texts[i] for i in rows],
            [self.kinds[i] for i in rows],
            [self.entry[i] for i in rows],
            [self.symbol[i] for i in rows],
            [self.gate[i] for i in rows],
        )


def unique_bindings(bindings) -> list:
    """One binding per (context, symbol): what gets written. Paraphrased reads share an entry."""
    seen: dict[tuple[str, str], object] = {}
    for b in bindings:
        seen.setdefault((b.context, b.symbol), b)
    return list(seen.values())


def mentioned(text: str, contexts: list[str]) -> str | None:
    """The longest stored context named in ``text`` (an oracle gate's view), else None."""
    hits = [c for c in contexts if c in text]
    return max(hits, key=len) if hits else None


def build_queries(split, entries) -> QuerySet:
    """Write prompts per entry, read prompts per binding, plain per symbol, the unrelated ones."""
    t = split.templates
    where = {(b.context, b.symbol): i for i, b in enumerate(entries)}
    contexts = list(dict.fromkeys(b.context for b in entries))
    rows: list[tuple[str, str, int, str | None, str | None]] = []
    rows += [(t.prompt("write", b), "write", i, b.symbol, b.context) for i, b in enumerate(entries)]
    rows += [
        (t.prompt("read", b), "read", where[(b.context, b.symbol)], b.symbol, b.context)
        for b in split.bindings
    ]
    first: dict[str, Binding] = {}
    for b in entries:
        first.setdefault(b.symbol, b)
    rows += [(t.prompt("plain", b), "plain", -1, s, None) for s, b in first.items()]
    rows += [(u, "unrelated", -1, None, mentioned(u, contexts)) for u in split.unrelated]
    texts, kinds, entry, symbol, gate = (list(x) for x in zip(*rows, strict=True))
    return QuerySet(texts, kinds, entry, symbol, gate)
