"""The bundled split: each relation's phrasings (templates) on the train or the eval side.

**The split** is by relation phrasing (template), so that no training phrasing is scored:

1. A relation with at most 3 phrasings goes wholly to eval (its eval cases still get
   paraphrases from its other phrasings).
2. A relation with n >= 4 phrasings gives floor(n/3) of them to train and the rest (>= 3) to
   eval: of the subsets of that size, the one whose records come closest to 40% of the
   relation's records (ties: the first in sorted order). Relations are taken in sorted order,
   and a phrasing that an earlier relation already placed (the same text, e.g. ``{} is in``
   of P131 and P276) must keep its side, so no template text sits on both sides.
3. Each record goes to its template's side. A subject with records on both sides keeps its
   train records (train is the smaller part) and loses its eval ones
   (:func:`analyses.edit.bundled.known_cf.known_cf_plan`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from itertools import combinations

from fmi.experiments.known_facts import KnownFact

SPLITS = ("train", "eval")
TRAIN_RECORD_SHARE = 0.4


def facts_by_relation(facts: Iterable[KnownFact]) -> dict[str, list[KnownFact]]:
    """Relation -> its facts in ``known_id`` order, relations in sorted order."""
    grouped: dict[str, list[KnownFact]] = defaultdict(list)
    for fact in sorted(facts, key=lambda f: f.known_id):
        grouped[fact.relation_id].append(fact)
    return {rel: grouped[rel] for rel in sorted(grouped)}


def phrasing_sides(facts: Iterable[KnownFact]) -> dict[str, dict[str, str]]:
    """Relation -> template -> ``"train"`` or ``"eval"``, by the rule in the module docstring.

    >>> from fmi.experiments.known_facts import load_known_facts
    >>> sides = phrasing_sides(load_known_facts())
    >>> sides["P17"]
    {'{} is located in the country of': 'eval', '{}, in': 'eval'}
    >>> sorted(t for t, s in sides["P36"].items() if s == "train")
    ['The capital city of {} is']
    """
    by_relation = facts_by_relation(facts)
    counts = {
        rel: {t: sum(f.template == t for f in rows) for t in sorted({f.template for f in rows})}
        for rel, rows in by_relation.items()
    }
    placed: dict[str, str] = {}  # template text -> side, across relations
    for templates in counts.values():
        if len(templates) <= 3:
            placed.update(dict.fromkeys(templates, "eval"))
    sides: dict[str, dict[str, str]] = {}
    for rel, templates in counts.items():
        names = list(templates)
        train: tuple[str, ...] = ()
        if len(names) >= 4:
            target = TRAIN_RECORD_SHARE * sum(templates.values())

            def allowed(chosen: tuple[str, ...], names: list[str] = names) -> bool:
                return all(placed.get(t, "train") == "train" for t in chosen) and all(
                    placed.get(t, "eval") == "eval" for t in names if t not in chosen
                )

            for k in range(len(names) // 3, 0, -1):
                options = [c for c in combinations(names, k) if allowed(c)]
                if options:
                    train = min(options, key=lambda c: abs(sum(templates[t] for t in c) - target))
                    break
        sides[rel] = {t: "train" if t in train else "eval" for t in names}
        placed.update(sides[rel])
    return sides
