"""Relation-specificity probes for known-cf and nonce-cf: the same subject under other relations.

The 33 relations of the known facts, grouped by hand by the kind of subject most of their
facts have (reviewed on the subjects themselves: P17's are clubs, councils, airports and
schools, places in the wide sense; P101's are mostly people, a few societies; P463's teams
and federations; P495's works, genres and products):

- person: field of work, native language, profession, employer, instrument, genre, religion,
  languages spoken, birthplace, place of death, citizenship, position held, playing position,
  sport, work location;
- place: located in (P131), named after, country, twin city, location (P276), continent,
  capital, official language;
- organisation: owned by, headquarters, member of, formed in;
- work or product: manufacturer, developer, original language, language of work, original
  network, country of origin.

A case's probes ask its subject the relations of its kind but its own, leaving out the ones
that ask the same question in other words or follow from it (:data:`SAME_QUESTION`: an edit
there is meant to carry over, a ripple, not to stay), and any relation another case edits
for the same subject. A relation in which the subject has an unedited known fact comes first,
with that fact's phrasing and object as the answer; the others are drawn, answer ``""``.

>>> probe_relations("P36")
['P131', 'P138', 'P17', 'P190', 'P276', 'P30', 'P37']
>>> probe_relations("P30")
['P138', 'P190', 'P36', 'P37']
>>> probe_relations("P641")[:4]
['P101', 'P103', 'P106', 'P108']
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from analyses.edit.bundled.records import MAX_PROBES
from fmi.experiments.known_facts import KnownFact

ENTITY_RELATIONS = {
    "person": ("P101", "P103", "P106", "P108", "P1303", "P136", "P140", "P1412", "P19", "P20",
               "P27", "P39", "P413", "P641", "P937"),
    "place": ("P131", "P138", "P17", "P190", "P276", "P30", "P36", "P37"),
    "organisation": ("P127", "P159", "P463", "P740"),
    "work": ("P176", "P178", "P364", "P407", "P449", "P495"),
}  # fmt: skip
SAME_QUESTION = (
    frozenset({"P176", "P178"}),  # manufacturer / developer
    frozenset({"P364", "P407"}),  # original language / language of work
    frozenset({"P103", "P1412"}),  # native language / languages spoken
    frozenset({"P413", "P641"}),  # a playing position implies its sport
    frozenset({"P131", "P17", "P276", "P30"}),  # where it is: region, country, continent
)
RELATION_KIND = {rel: kind for kind, rels in ENTITY_RELATIONS.items() for rel in rels}


def _related(a: str, b: str) -> bool:
    return a == b or any(a in group and b in group for group in SAME_QUESTION)


def probe_relations(relation: str) -> list[str]:
    """The relations a case of ``relation`` may be probed in, sorted."""
    kind = RELATION_KIND[relation]
    return sorted(r for r in ENTITY_RELATIONS[kind] if not _related(r, relation))


class ProbeTemplates:
    """Each relation's probe phrasing: its commonest template on a side (ties: sorted order),
    else its commonest anywhere, never a phrasing of the case's own relation."""

    def __init__(self, facts: Iterable[KnownFact], sides: dict[str, dict[str, str]]) -> None:
        self.counts: dict[str, Counter[str]] = {}
        for f in facts:
            self.counts.setdefault(f.relation_id, Counter())[f.template] += 1
        self.sides = sides

    def template(self, relation: str, side: str, own: str) -> str:
        avoid = set(self.counts[own])
        ranked = sorted(self.counts[relation].items(), key=lambda kv: (-kv[1], kv[0]))
        options = [t for t, _ in ranked if t not in avoid]
        on_side = [t for t in options if self.sides[relation].get(t) == side]
        return (on_side or options)[0]


def relation_probes(
    rng: random.Random,
    templates: ProbeTemplates,
    relation: str,
    subject: str,
    side: str,
    known: Iterable[KnownFact] = (),
    edited: Iterable[str] = (),
) -> list[tuple[str, str, str]]:
    """<= :data:`MAX_PROBES` (prompt, answer, relation) probes of ``subject``: first its
    ``known`` unedited facts in other relations (their phrasing, their object), then relations
    drawn from :func:`probe_relations` (answer ``""``), none of them in ``edited`` (relations
    another case edits for this subject) or asking ``relation``'s question.

    >>> from fmi.experiments.known_facts import load_known_facts
    >>> from analyses.edit.bundled.split import phrasing_sides
    >>> facts = load_known_facts()
    >>> t = ProbeTemplates(facts, phrasing_sides(facts))
    >>> for probe in relation_probes(random.Random(0), t, "P36", "Peru", "eval"):
    ...     print(probe)
    ('In Peru, the language spoken is', '', 'P37')
    ('Peru is a twin city of', '', 'P190')
    ('Peru belongs to the continent of', '', 'P30')
    """
    skip = set(edited)
    probes = [
        (f.template.format(subject), f.attribute, f.relation_id)
        for f in sorted(known, key=lambda f: f.known_id)
        if not _related(f.relation_id, relation) and f.relation_id not in skip
    ][:MAX_PROBES]
    taken = skip | {r for _, _, r in probes}
    options = [r for r in probe_relations(relation) if r not in taken]
    drawn = rng.sample(options, min(MAX_PROBES - len(probes), len(options)))
    probes += [(templates.template(r, side, relation).format(subject), "", r) for r in drawn]
    return probes
