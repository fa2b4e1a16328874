"""The failure log: every probe that fails its greedy judgement, once per distinct trial, with
what the method retrieved for it.

An entry (JSON-ready) holds the probe's ``kind``, ``case_id`` (the first edit that lists it)
and ``case_ids`` (every edit that does: a neighbourhood prompt shared by several edits is one
trial), ``group`` (seed and group of held edits), ``prompt``, ``expected`` (the wanted answer,
or the unedited model's output for neighbourhood, relation and generic prompts), ``got`` (the
decoded output), ``explain`` (the dict ``held.explain([prompt])`` gave, verbatim; ``{}`` for a
method without retrieval) and, where the probe has whole-target probabilities,
``mean_logprob`` (``[better, worse]``). Nothing is sampled away: the log is as long as the
failing trials.

>>> from analyses.edit.rates import Outcome
>>> o = Outcome("rewrite", "3", False, output=" Paris", prompt="Rome is in", target="Italy",
...             expected="Italy", explain={"entry": None, "score": 0.2, "threshold": 0.5})
>>> failure_log([o, Outcome("rewrite", "4", True, prompt="Oslo is in")])[0]["explain"]
{'entry': None, 'score': 0.2, 'threshold': 0.5}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analyses.edit.rates import Outcome


def failure_log(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """One entry per failing greedy trial of ``outcomes``, in their order (see the module).

    >>> a = Outcome("neighbour", "0", False, output=" x", prompt="P is", expected=" y")
    >>> b = Outcome("neighbour", "1", False, output=" x", prompt="P is", expected=" y")
    >>> [(e["case_id"], e["case_ids"], e["got"]) for e in failure_log([a, b])]
    [('0', ['0', '1'], ' x')]
    """
    entries: dict[tuple, dict[str, Any]] = {}
    for o in outcomes:
        if not o.failed:
            continue
        entry = entries.get(o.greedy_key)
        if entry is not None:
            if o.case_id and o.case_id not in entry["case_ids"]:
                entry["case_ids"].append(o.case_id)
            continue
        entry = {
            "kind": o.kind,
            "case_id": o.case_id,
            "case_ids": [o.case_id] if o.case_id else [],
            "group": o.group,
            "prompt": o.prompt,
            "expected": o.expected,
            "got": o.output,
            "explain": {} if o.explain is None else o.explain,
        }
        if o.full is not None:
            entry["mean_logprob"] = list(o.full)
        entries[o.greedy_key] = entry
    return list(entries.values())
