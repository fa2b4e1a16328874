"""A bundled case's record: the CounterFact layout, plus its ``split`` and relation.

The case files are in the CounterFact layout that :func:`analyses.edit.loaders.load_cases` reads,
plus ``split`` (``"train"`` or ``"eval"``) and ``requested_rewrite.relation_id`` per record;
their neighbourhood entries are objects {``prompt``, ``answer``}. Two lists follow KnowEdit:
``relation_specificity`` (prompts about the same subject under other relations, objects
{``prompt``, ``answer`` (``""``: not known), ``relation_id``}) and ``portability`` (objects
{``prompt``, ``answer``, ``kind``}, ``kind`` ``"alias"`` or ``"one_hop"``).
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
    relation_specificity: list[tuple[str, str, str]] | None = None,
    portability: list[tuple[str, str, str]] | None = None,
) -> dict[str, Any]:
    """One case in the CounterFact layout (plus ``split``); ``relation_specificity`` holds
    (prompt, answer, relation) and ``portability`` (prompt, answer, kind), each written when
    given (an empty list included).

    >>> rec = case_record(3, "eval", "P36", "Peru", "The capital of {} is", "Quito", "Lima",
    ...                   [], [], [("The continent of Peru is", "South America", "P30")], [])
    >>> rec["relation_specificity"], rec["portability"]
    ([{'prompt': 'The continent of Peru is', 'answer': 'South America', 'relation_id': 'P30'}], [])
    """
    record = {
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
    if relation_specificity is not None:
        record["relation_specificity"] = [
            {"prompt": p, "answer": a, "relation_id": r} for p, a, r in relation_specificity
        ]
    if portability is not None:
        record["portability"] = [{"prompt": p, "answer": a, "kind": k} for p, a, k in portability]
    return record
