"""EasyEdit's KnowEdit layout read into :class:`~analyses.edit.cases.EditCase`: ``subject``,
``prompt``, ``target_new``, ``ground_truth``, ``rephrase``, ``portability`` {``Subject_Aliasing``,
``reasoning`` / ``Reasoning``, ``Logical_Generalization``} and ``locality``
{``Relation_Specificity``, ``Forgetfulness``}, each a list of {``prompt``, ``ground_truth``}.

Both locality lists become relation-specificity prompts (they ask about the same subject, judged
by whether the unedited output stays); aliasing becomes ``alias`` portability, reasoning and
logical generalization ``one_hop``.
"""

from __future__ import annotations

from typing import Any

from analyses.edit.cases import EditCase, Portable, Probe
from analyses.edit.record_fields import _kind, _Record, subject_template

KNOWEDIT_PORTABILITY = {
    "Subject_Aliasing": "alias",
    "Reasoning": "one_hop",
    "reasoning": "one_hop",
    "Logical_Generalization": "one_hop",
}
"""KnowEdit's ``portability`` keys read, and the :class:`Portable` kind each becomes (EasyEdit
writes ``Reasoning`` in the files and ``reasoning`` in its scripts; both are read)."""
KNOWEDIT_LOCALITY = ("Relation_Specificity", "Forgetfulness")
"""KnowEdit's ``locality`` keys read; both become ``relation_probes`` (the edit's own subject,
whose unedited output must stay)."""


def _answers(rec: _Record, name: str, value: Any) -> list[str]:
    """A KnowEdit answer: a string, a list of strings, or a list of lists of strings (groups of
    aliases), flattened in order; at least one non-empty string."""
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list):
        items = []
        for j, group in enumerate(value):
            if isinstance(group, str):
                items.append(group)
            elif isinstance(group, list):
                items.extend(rec.text(f"{name}[{j}][{k}]", a, True) for k, a in enumerate(group))
            else:
                raise rec.fail(
                    f"{name}[{j}]", f"must be a string or a list of strings, got {_kind(group)}"
                )
    else:
        raise rec.fail(
            name, f"must be a string or a list (of lists) of strings, got {_kind(value)}"
        )
    items = [a for a in items if a.strip()]
    if not items:
        raise rec.fail(name, "holds no non-empty answer")
    return items


def _knowedit_probes(rec: _Record, name: str) -> list[tuple[str, str]]:
    """``(prompt, first answer)`` for each entry of the list at ``name`` (an entry's ``prompt``
    may be a list of prompts: one pair each)."""
    entries = rec.get(name)
    if not isinstance(entries, list):
        raise rec.fail(name, f"must be a list of objects, got {_kind(entries)}")
    out: list[tuple[str, str]] = []
    for j, entry in enumerate(entries):
        where = f"{name}[{j}]"
        if not isinstance(entry, dict):
            raise rec.fail(where, f"must be an object, got {_kind(entry)}")
        for key in ("prompt", "ground_truth"):
            if key not in entry:
                raise rec.fail(f"{where}.{key}", "is missing")
        prompts = entry["prompt"]
        if isinstance(prompts, list):
            if not prompts:
                raise rec.fail(f"{where}.prompt", "is an empty list")
            prompts = [rec.text(f"{where}.prompt[{k}]", p) for k, p in enumerate(prompts)]
        else:
            prompts = [rec.text(f"{where}.prompt", prompts)]
        answer = _answers(rec, f"{where}.ground_truth", entry["ground_truth"])[0]
        out.extend((p, answer) for p in prompts)
    return out


def _section(rec: _Record, name: str) -> dict[str, Any]:
    value = rec.get(name, None)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise rec.fail(name, f"must be an object, got {_kind(value)}")
    return value


def _knowedit(rec: _Record, index: int) -> EditCase:
    subject = rec.text("subject")
    text = rec.text("prompt")
    prompt = subject_template(rec, "prompt", text, subject)

    truth = rec.get("ground_truth", None)
    rephrase: list[str] = []
    for name in ("rephrase", "rephrase_prompt"):
        value = rec.get(name, None)
        if isinstance(value, list):
            rephrase.extend(rec.texts(name))
        elif value is not None:
            rephrase.append(rec.text(name, value))
    portability = _section(rec, "portability")
    locality = _section(rec, "locality")
    return EditCase(
        case_id=rec.identity(("case_id", "id"), str(index)),
        subject=subject,
        prompt=prompt,
        target_new=_answers(rec, "target_new", rec.get("target_new"))[0],
        target_true="" if truth is None else _answers(rec, "ground_truth", truth)[0],
        paraphrases=tuple(rephrase),
        relation_probes=tuple(
            Probe(p, a)
            for key in KNOWEDIT_LOCALITY
            if key in locality
            for p, a in _knowedit_probes(rec, f"locality.{key}")
        ),
        portability=tuple(
            Portable(p, a, kind)
            for key, kind in KNOWEDIT_PORTABILITY.items()
            if key in portability
            for p, a in _knowedit_probes(rec, f"portability.{key}")
        ),
        split=rec.optional("split"),
    )
