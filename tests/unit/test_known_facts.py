"""The vendored known facts: the bytes the provenance names, and their known structure."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import pytest

from fmi.errors import ConfigError
from fmi.experiments.known_facts import known_facts_path, load_known_facts


def test_the_vendored_file_is_the_one_the_provenance_names():
    data = known_facts_path().read_bytes()
    assert len(data) == 652_834
    want = "7ccd1d2649eaa94db24bdf2bcc19f6305bdd51ff47bc981641ed8bd973f9d5e2"
    assert hashlib.sha256(data).hexdigest() == want
    licence = known_facts_path().with_name("LICENSE").read_text()
    assert licence.startswith("MIT License")


def test_known_structure():
    facts = load_known_facts()
    assert len(facts) == 1209 and len({f.known_id for f in facts}) == 1209
    phrasings = Counter()
    for rel in {f.relation_id for f in facts}:
        phrasings[rel] = len({f.template for f in facts if f.relation_id == rel})
    assert len(phrasings) == 33 and min(phrasings.values()) == 1 and max(phrasings.values()) == 12
    # the prompt is the template filled with the subject
    assert all(f.prompt.startswith(f.template.format(f.subject)) for f in facts)


@pytest.mark.parametrize(
    "record, message",
    [
        ({"subject": "x"}, "known fact 0: missing field 'known_id'"),
        (["a list"], "known fact 0: not a JSON object"),
        (
            {
                "known_id": 0,
                "subject": "x",
                "attribute": "y",
                "template": "no slot",
                "prompt": "p",
                "relation_id": "P1",
            },
            "known fact 0: field 'template' has no {} for the subject",
        ),
    ],
)
def test_a_malformed_record_is_named(tmp_path, record, message):
    path = tmp_path / "facts.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_known_facts(path)
