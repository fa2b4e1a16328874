"""The relation key's training facts: known-cf's *training* edits (bundled in ``fmi/data/edit``,
built from ROME's known facts, MIT), as statements to write, prompts that must read them and
prompts that must read none. No evaluation edit is read here.

- positives: each edit's rewrite and paraphrases, with its own entry;
- negatives: up to ``per_kind`` neighbourhood prompts (other subjects, the same relation),
  prompts about the subject under another relation, and look-alike prompts (another training
  subject sharing the subject's first word, in the edit's template); a negative that states
  some edit is dropped.

>>> bank = relation_bank()
>>> len(bank.statements), bank.statements[0] in bank.positives
(215, True)
>>> look_alikes(["Windows 7"], ["Windows Media Player", "Windows 7", "Linux", "Windows XP"], 1)
[['Windows Media Player']]
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

PER_KIND = 3


def first_word(name: str) -> str:
    """The part of a name before its first space.

    >>> first_word("Windows Media Player"), first_word("Kenya")
    ('Windows', 'Kenya')
    """
    return name.split(" ", 1)[0]


def look_alikes(subjects: Sequence[str], pool: Sequence[str], limit: int) -> list[list[str]]:
    """Per subject, up to ``limit`` other names of ``pool`` (sorted) with the same first word."""
    by_word: dict[str, list[str]] = defaultdict(list)
    for s in sorted(set(pool)):
        by_word[first_word(s)].append(s)
    return [[s for s in by_word[first_word(x)] if s != x][:limit] for x in subjects]


@dataclass(frozen=True)
class RelationBank:
    """Facts to write (statement, answer, subject) and the prompts the relation key is fitted on:
    ``positives[i]`` must read entry ``owners[i]``, each of ``negatives`` none."""

    statements: list[str]
    answers: list[str]
    subjects: list[str]
    positives: list[str]
    owners: list[int]
    negatives: list[str]


def relation_bank(per_kind: int = PER_KIND) -> RelationBank:
    """known-cf's training edits as a :class:`RelationBank` (see the module)."""
    path = resources.files("fmi") / "data" / "edit" / "known-cf.json"
    records = [r for r in json.loads(path.read_text(encoding="utf-8")) if r["split"] == "train"]
    rewrites = [r["requested_rewrite"] for r in records]
    subjects = [w["subject"] for w in rewrites]
    statements = [w["prompt"].format(w["subject"]) for w in rewrites]
    positives, owners = [], []
    for i, (r, s) in enumerate(zip(records, statements, strict=True)):
        for p in dict.fromkeys([s, *r["paraphrase_prompts"]]):
            positives.append(p)
            owners.append(i)
    alikes = look_alikes(subjects, subjects, per_kind)
    negatives = [
        *(n["prompt"] for r in records for n in r["neighborhood_prompts"][:per_kind]),
        *(p["prompt"] for r in records for p in r["relation_specificity"][:per_kind]),
        *(w["prompt"].format(a) for w, names in zip(rewrites, alikes, strict=True) for a in names),
    ]
    stated = set(positives)
    return RelationBank(
        statements,
        [" " + w["target_new"]["str"].strip() for w in rewrites],
        subjects,
        positives,
        owners,
        [p for p in dict.fromkeys(negatives) if p not in stated],
    )
