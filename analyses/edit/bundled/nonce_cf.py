"""nonce-cf: cases about invented subjects with invented multi-word objects, on known phrasings.

The 31 relations with >= 2 phrasings get nonce cases under the same phrasing sides as known-cf
(:mod:`analyses.edit.bundled.split`): 6 train and 9 eval cases for each relation that has train
phrasings (23), 9 eval cases for the others (8): 138 train, 279 eval. Each has 3
relation-specificity probes (:mod:`.relation_probes`, answer ``""``: nothing is known of an
invented subject, which is the point: an edit keyed on the name must not answer every question
about it); ``portability`` is empty.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from typing import Any

from analyses.edit.bundled.records import MAX_PROBES, case_record, filled
from analyses.edit.bundled.relation_probes import ProbeTemplates, relation_probes
from analyses.edit.bundled.split import SPLITS, phrasing_sides
from fmi.experiments.known_facts import KnownFact, load_known_facts

NONCE_PER_RELATION = {"train": 6, "eval": 9}
NONCE_BYSTANDERS = 40  # neighbourhood names per side, none of them a case's subject

# Object shapes per kind; "{}" takes one invented word. Every shape gives 2 or 3 words.
OBJECT_SHAPES = {
    "place": ("{} Valley", "Port {}", "{} Springs", "{} Heights", "the {} Coast", "{} {} Bay"),
    "country": ("the {} Republic", "{} Federation", "the {} Isles", "{} {} Union"),
    "continent": ("{} Major", "the {} Expanse", "Greater {}", "the {} Landmass"),
    "organisation": ("{} Industries", "{} {} Group", "the {} Company", "{} Systems"),
    "network": ("{} TV", "{} Network", "{} {} Channel", "the {} Broadcaster"),
    "body": ("the {} League", "the {} Council", "{} Alliance", "the {} {} Guild"),
    "language": ("Old {}", "High {}", "{} Creole", "Low {}"),
    "field": ("{} studies", "{} theory", "{} mechanics", "{} {} chemistry"),
    "profession": ("{} surveyor", "{} engineer", "{} archivist", "{} broker"),
    "instrument": ("{} harp", "{} flute", "{} drum", "{} lute"),
    "genre": ("{} rock", "{} jazz", "{} folk", "{} opera"),
    "person": ("{} {}", "Saint {}", "{} {} the Elder"),
    "religion": ("the {} faith", "{} mysticism", "{} orthodoxy"),
    "office": ("{} chancellor", "High {} warden", "{} magistrate", "{} steward"),
    "position": ("{} back", "{} wing", "{} striker", "{} keeper"),
}
NONCE_KINDS = {
    "P101": "field",
    "P103": "language",
    "P106": "profession",
    "P108": "organisation",
    "P127": "organisation",
    "P1303": "instrument",
    "P131": "place",
    "P136": "genre",
    "P138": "person",
    "P140": "religion",
    "P1412": "language",
    "P159": "place",
    "P17": "country",
    "P176": "organisation",
    "P178": "organisation",
    "P19": "place",
    "P20": "place",
    "P27": "country",
    "P276": "place",
    "P30": "continent",
    "P36": "place",
    "P364": "language",
    "P37": "language",
    "P39": "office",
    "P407": "language",
    "P413": "position",
    "P449": "network",
    "P463": "body",
    "P495": "country",
    "P740": "place",
    "P937": "place",
}
NONCE_OBJECTS_PER_RELATION = 8
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gr", "kr", "tr", "th", "st", "")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "", "n", "r", "l", "s", "k", "m")


def known_words(facts: Iterable[KnownFact]) -> set[str]:
    """Every word (lower case) of the known facts' subjects, objects and prompts."""
    words: set[str] = set()
    for f in facts:
        for text in (f.subject, f.attribute, f.prompt):
            words.update(w.lower() for w in re.findall(r"\w+", text))
    return words


class NonceWords:
    """Pronounceable invented words (2 or 3 syllables), never repeated and never a word of
    the known facts.

    >>> words = NonceWords(random.Random(0), set())
    >>> a, b = words.word(), words.word()
    >>> a != b and a[0].isupper()
    True
    """

    def __init__(self, rng: random.Random, forbidden: set[str]) -> None:
        self.rng = rng
        self.used = set(forbidden)

    def word(self) -> str:
        while True:
            syllables = self.rng.choice((2, 2, 3))
            word = "".join(
                self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                for _ in range(syllables)
            )
            if len(word) >= 4 and word not in self.used:
                self.used.add(word)
                return word.capitalize()

    def name(self) -> str:
        """Two words: an invented person or thing."""
        return f"{self.word()} {self.word()}"

    def fill(self, shape: str) -> str:
        return shape.format(*(self.word() for _ in range(shape.count("{}"))))


def build_nonce_cf(facts: list[KnownFact] | None = None) -> list[dict[str, Any]]:
    """The nonce-cf records: per relation with >= 2 phrasings, cases about new invented
    subjects (two nonce words) on the relation's train and eval phrasings (cycled in sorted
    order), ``target_true`` and ``target_new`` two distinct invented objects of the relation's
    kind; paraphrases the relation's other phrasings on the same side (<= 3); neighbours 3
    invented bystanders of the same side (no case's subject) in the case's template, answer
    ``""``. Names draw from ``random.Random("nonce-cf names")``, cases from
    ``random.Random(f"nonce-cf {case_id}")``, relation probes from
    ``random.Random(f"nonce-cf relation probes {case_id}")``."""
    facts = load_known_facts() if facts is None else facts
    sides = phrasing_sides(facts)
    relations = [rel for rel, t in sides.items() if len(t) >= 2]
    if sorted(relations) != sorted(NONCE_KINDS):
        raise AssertionError(f"nonce kinds do not cover the relations {relations}")
    words = NonceWords(random.Random("nonce-cf names"), known_words(facts))
    bystanders = {side: [words.name() for _ in range(NONCE_BYSTANDERS)] for side in SPLITS}
    probe_templates = ProbeTemplates(facts, sides)
    records: list[dict[str, Any]] = []
    for rel in relations:
        shapes = OBJECT_SHAPES[NONCE_KINDS[rel]]
        objects = [words.fill(shapes[i % len(shapes)]) for i in range(NONCE_OBJECTS_PER_RELATION)]
        for side in SPLITS:
            templates = [t for t, s in sides[rel].items() if s == side]
            if not templates:
                continue
            for j in range(NONCE_PER_RELATION[side]):
                case_id = len(records)
                rng = random.Random(f"nonce-cf {case_id}")
                subject = words.name()
                template = templates[j % len(templates)]
                target_true, target_new = rng.sample(objects, 2)
                others = [t for t in templates if t != template]
                paraphrases = rng.sample(others, min(MAX_PROBES, len(others)))
                neighbours = rng.sample(bystanders[side], MAX_PROBES)
                records.append(
                    case_record(
                        case_id,
                        side,
                        rel,
                        subject,
                        template,
                        target_new,
                        target_true,
                        filled(paraphrases, subject),
                        [(template.format(n), "") for n in neighbours],
                        relation_specificity=relation_probes(
                            random.Random(f"nonce-cf relation probes {case_id}"),
                            probe_templates,
                            rel,
                            subject,
                            side,
                        ),
                        portability=[],
                    )
                )
    return records
