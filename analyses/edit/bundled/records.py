"""A bundled case's record: the CounterFact layout, plus its ``split`` and relation.

The case files are in the CounterFact layout that :func:`analyses.edit.loaders.load_cases` reads,
plus ``split`` (``"train"`` or ``"eval"``) and ``requested_rewrite.relation_id`` per record;
their neighbourhood entries are objects {``prompt``, ``answer``}.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_PROBES = 3
"""At most this many paraphrases, and this many neighbours, per case."""


def filled(templates: Iterable[str], subject: str) -> list[str]:
    """Each template with ``subject`` in its ``{}``."""
    return [t.format(subject) for t in templates]


def case_record(
    case_id: int,
    split: str,
    relation: str,
    subject: str,
    template: str,
    target_new: str,
    target_true: str,
    paraphrases: list[str],
    neighbours: list[tuple[str, str]],
) -> dict[str, Any]:
    """One case in the CounterFact layout (plus ``split``)."""
    return {
        "case_id": case_id,
        "split": split,
        "requested_rewrite": {
            "prompt": template,
            "subject": subject,
            "target_new": {"str": target_new},
            "target_true": {"str": target_true},
            "relation_id": relation,
        },
        "paraphrase_prompts": paraphrases,
        "neighborhood_prompts": [{"prompt": p, "answer": a} for p, a in neighbours],
    }
