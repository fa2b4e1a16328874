"""known-cf: CounterFact-style cases from the known facts, split by phrasing, with bystanders.

For known-cf the split (:mod:`analyses.edit.bundled.split`) drops 5 facts: P190's only fact (its
relation has no second object for ``target_new``) and the eval records of 4 subjects that also
have a train record. Of the 1,204 kept, 179 subjects are bystanders (:func:`bystanders`): never
edited, they are the neighbourhood prompts, so no number of edits held at once edits a
neighbour. That leaves 215 train and 807 eval cases; every case has a neighbour, and every eval
case but the 32 of P641 (one phrasing only) has a paraphrase (train phrasings are few: 149 train
cases have none). Each case has 3 relation-specificity probes (:mod:`.relation_probes`), 3 of
the 3,066 with a known answer (the subject's unedited fact in another relation). Its
``portability`` is empty: the known facts hold no aliases, and the objects a one-hop question
would need (the capital, language or continent of a case's ``target_new``) are known only
where another case edits them, but for 17 hops from Paris to Europe, whose true objects'
continents are unknown.

>>> from analyses.edit.bundled.files import load_bundled
>>> train, eval_ = load_bundled("known-cf")
>>> len(train), len(eval_)
(215, 807)
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from analyses.edit.bundled.records import MAX_PROBES, case_record, filled
from analyses.edit.bundled.relation_probes import ProbeTemplates, relation_probes
from analyses.edit.bundled.split import facts_by_relation, phrasing_sides
from fmi.experiments.known_facts import KnownFact, load_known_facts


def known_cf_plan(
    facts: list[KnownFact] | None = None,
) -> tuple[list[tuple[KnownFact, str]], list[tuple[KnownFact, str]]]:
    """The facts known-cf keeps, each with its side, and the facts it drops, each with why.

    >>> kept, dropped = known_cf_plan()
    >>> len(kept), [(f.relation_id, why) for f, why in dropped][:1]
    (1204, [('P190', 'no second object in its relation')])
    """
    facts = load_known_facts() if facts is None else facts
    by_relation = facts_by_relation(facts)
    sides = phrasing_sides(facts)
    dropped: list[tuple[KnownFact, str]] = []
    placed: list[tuple[KnownFact, str]] = []
    for rel, rows in by_relation.items():
        for fact in rows:
            if len({f.attribute for f in rows}) < 2:
                dropped.append((fact, "no second object in its relation"))
            else:
                placed.append((fact, sides[rel][fact.template]))
    train_subjects = {f.subject for f, side in placed if side == "train"}
    kept = []
    for fact, side in placed:
        if side == "eval" and fact.subject in train_subjects:
            dropped.append((fact, "its subject has a train record"))
        else:
            kept.append((fact, side))
    kept.sort(key=lambda pair: pair[0].known_id)
    return kept, dropped


def bystanders(kept: list[tuple[KnownFact, str]]) -> set[str]:
    """The subjects that serve only as neighbours (never edited): per relation and side with
    n >= 3 subjects, max(1, n // 6) of them, drawn by ``random.Random("known-cf bystanders
    <relation> <side>")``. Holding many edits at once then never edits a neighbour's subject.

    >>> len(bystanders(known_cf_plan()[0]))
    179
    """
    subjects: dict[tuple[str, str], set[str]] = defaultdict(set)
    for fact, side in kept:
        subjects[fact.relation_id, side].add(fact.subject)
    chosen: set[str] = set()
    for (rel, side), names in sorted(subjects.items()):
        if len(names) >= 3:
            rng = random.Random(f"known-cf bystanders {rel} {side}")
            chosen.update(rng.sample(sorted(names), max(1, len(names) // 6)))
    return chosen


def build_known_cf(facts: list[KnownFact] | None = None) -> list[dict[str, Any]]:
    """The known-cf records: per kept fact (see :func:`known_cf_plan`) whose subject is not a
    bystander (:func:`bystanders`), ``target_new`` another object of its relation; paraphrases
    its relation's other phrasings on its side (<= 3); neighbours bystanders of its relation on
    its side in its own template (<= 3, those whose object is this case's true object first),
    each with its own object as the answer. Each case draws from
    ``random.Random(f"known-cf {known_id}")``, its relation probes (:mod:`.relation_probes`:
    the subject's unedited facts in other relations first) from
    ``random.Random(f"known-cf relation probes {known_id}")``; ``portability`` is empty."""
    facts = load_known_facts() if facts is None else facts
    kept, _ = known_cf_plan(facts)
    aside = bystanders(kept)
    sides = phrasing_sides(facts)
    objects = {
        rel: sorted({f.attribute for f in rows}) for rel, rows in facts_by_relation(facts).items()
    }
    peers: dict[tuple[str, str], dict[str, KnownFact]] = defaultdict(dict)
    for fact, side in kept:  # one fact per bystander: its first
        if fact.subject in aside:
            peers[fact.relation_id, side].setdefault(fact.subject, fact)
    cases = [(fact, side) for fact, side in kept if fact.subject not in aside]
    case_ids = {fact.known_id for fact, _ in cases}
    by_subject: dict[str, list[KnownFact]] = defaultdict(list)
    for fact in facts:
        by_subject[fact.subject].append(fact)
    probe_templates = ProbeTemplates(facts, sides)
    records = []
    for fact, side in cases:
        rng = random.Random(f"known-cf {fact.known_id}")
        rel = fact.relation_id
        target_new = rng.choice([o for o in objects[rel] if o != fact.attribute])
        others = [t for t, s in sides[rel].items() if s == side and t != fact.template]
        paraphrases = rng.sample(others, min(MAX_PROBES, len(others)))
        pool = [p for _, p in sorted(peers[rel, side].items())]
        same = [p for p in pool if p.attribute == fact.attribute]
        rest = [p for p in pool if p.attribute != fact.attribute]
        rng.shuffle(same)
        rng.shuffle(rest)
        neighbours = [
            (fact.template.format(p.subject), p.attribute) for p in (same + rest)[:MAX_PROBES]
        ]
        same_subject = [f for f in by_subject[fact.subject] if f.known_id != fact.known_id]
        probes = relation_probes(
            random.Random(f"known-cf relation probes {fact.known_id}"),
            probe_templates,
            rel,
            fact.subject,
            side,
            known=[f for f in same_subject if f.known_id not in case_ids],
            edited=[f.relation_id for f in same_subject if f.known_id in case_ids],
        )
        records.append(
            case_record(
                fact.known_id,
                side,
                rel,
                fact.subject,
                fact.template,
                target_new,
                fact.attribute,
                filled(paraphrases, fact.subject),
                neighbours,
                relation_specificity=probes,
                portability=[],
            )
        )
    return records
