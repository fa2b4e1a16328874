"""The failure log sorted into classes: why each failing probe failed, as far as the log tells.

A class is named by the probe's kind and, where the method explains its retrieval (the memory's
``explain``: the best-scoring edit, its score, whether it fired), by what the retrieval did:

- ``fired on its own edit``: the edit's own entry fired on a probe that should have been left
  alone (a relation-specificity prompt about the edited subject) or answered right (a rewrite
  or paraphrase whose output still missed the target);
- ``fired on another edit``: another held edit's entry fired (a paraphrase that read the wrong
  entry);
- ``fired on a held edit``: a neighbour (a never-edited bystander) or a generic prompt made an
  entry fire, e.g. a name that shares tokens with an edited subject;
- ``did not fire``: no entry passed the threshold (a paraphrase or portability probe the key
  did not recognise, or a change that came from elsewhere);
- ``no retrieval``: a method without one (weight editors, in-context).

>>> log = [
...     {"kind": "relation", "case_ids": ["7"], "explain": {"entry": "7", "fired": True}},
...     {"kind": "neighbour", "case_ids": ["7"], "explain": {"entry": "9", "fired": True}},
...     {"kind": "paraphrase", "case_ids": ["9"], "explain": {"entry": "9", "fired": False}},
...     {"kind": "rewrite", "case_ids": ["3"], "explain": {}},
... ]
>>> [failure_class(e) for e in log]
['relation: fired on its own edit', 'neighbour: fired on a held edit', \
'paraphrase: did not fire', 'rewrite: no retrieval']
>>> class_counts(log + log[:1])[0]
('relation: fired on its own edit', 2)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any


def failure_class(entry: dict[str, Any]) -> str:
    """The class of one failure-log entry (see the module)."""
    why = entry.get("explain") or {}
    kind = entry.get("kind", "?")
    if "fired" not in why:
        return f"{kind}: no retrieval"
    if not why["fired"]:
        return f"{kind}: did not fire"
    if kind in ("neighbour", "unrelated"):
        return f"{kind}: fired on a held edit"
    own = why.get("entry") in set(entry.get("case_ids") or [entry.get("case_id")])
    return f"{kind}: fired on its own edit" if own else f"{kind}: fired on another edit"


def class_counts(log: Iterable[dict[str, Any]]) -> list[tuple[str, int]]:
    """``(class, count)`` over ``log``, the largest first (ties by name)."""
    counts = Counter(failure_class(e) for e in log)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
