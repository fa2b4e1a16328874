"""ROME's known facts, vendored in ``fmi/data/known_facts`` with their licence and provenance.

>>> facts = load_known_facts()
>>> len(facts), len({f.relation_id for f in facts})
(1209, 33)
>>> facts[0].template.format(facts[0].subject), facts[0].attribute
('Vinson Massif is located in the continent', 'Antarctica')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fmi.errors import ConfigError

FIELDS = ("known_id", "subject", "attribute", "template", "prompt", "relation_id")


@dataclass(frozen=True)
class KnownFact:
    """One fact: ``template.format(subject)`` is completed by ``attribute`` (the true object)."""

    known_id: int
    subject: str
    attribute: str
    template: str
    prompt: str
    relation_id: str


def known_facts_path() -> Path:
    """The vendored ``known_1000.json``."""
    return Path(str(resources.files("fmi") / "data" / "known_facts" / "known_1000.json"))


def load_known_facts(path: str | Path | None = None) -> list[KnownFact]:
    """Every record of ``path`` (default: the vendored file) as a :class:`KnownFact`. A record
    that lacks a field, or whose template has no ``{}`` for the subject, is refused in one line
    naming its index and the field."""
    source = Path(path) if path is not None else known_facts_path()
    records = json.loads(source.read_text())
    if not isinstance(records, list):
        raise ConfigError(f"{source}: known facts must be a JSON list of records")
    facts = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ConfigError(f"known fact {i}: not a JSON object")
        for name in FIELDS:
            if name not in rec:
                raise ConfigError(f"known fact {i}: missing field {name!r}")
        if "{}" not in rec["template"]:
            raise ConfigError(f"known fact {i}: field 'template' has no {{}} for the subject")
        facts.append(KnownFact(**{name: rec[name] for name in FIELDS}))
    return facts
