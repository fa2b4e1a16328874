"""A user's own copy of the public editing datasets, read into
:class:`~analyses.edit.cases.EditCase`.

Three layouts, each a JSON list of records or JSON Lines (one record a line):

- ``counterfact`` (ROME's ``counterfact.json``): ``case_id``, ``requested_rewrite``
  {``prompt`` (``{}`` for the subject), ``subject``, ``target_new`` {``str``}, ``target_true``
  {``str``}, optional ``relation_id``}, ``paraphrase_prompts`` (whole prompts),
  ``neighborhood_prompts`` (prompts whose answer is ``target_true.str``), optional
  ``generation_prompts`` (unused) and optional ``split``. A neighbourhood entry may also be an
  object {``prompt``, ``answer``} with its own answer (``""``: none known), as the bundled
  benchmarks (:mod:`analyses.edit.bundled`) write it.
- ``zsre`` (MEND's and EasyEdit's layout): ``subject``, ``src`` (the question, holding the
  subject), ``alt`` (the new answer), ``answers`` (the true answers, the first one used),
  ``rephrase`` (one paraphrase), ``loc`` (an unrelated ``nq question: ...``) and ``loc_ans``,
  optional ``case_id`` or ``id`` (default: the record's index). The prompt is ``src`` with the
  subject's first occurrence (matched case-insensitively when the exact text is absent) made
  ``{}``; other braces in ``src`` are doubled so ``prompt.format(subject)`` gives ``src`` back.

- ``knowedit`` (EasyEdit's KnowEdit JSON, e.g. ``wiki_counterfact``, ``ZsRE``,
  ``wiki_recent``): ``subject``, ``prompt`` (the whole prompt, holding the subject, made a
  template as for ZsRE), ``target_new``, optional ``ground_truth`` (absent in ``wiki_recent``:
  ``target_true`` is then ``""`` and the probability scores skip the case), optional
  ``rephrase`` / ``rephrase_prompt`` (a string or a list: the paraphrases), optional
  ``portability`` {``Subject_Aliasing`` (kind ``alias``), ``Reasoning`` or ``reasoning`` and
  ``Logical_Generalization`` (kind ``one_hop``)} and optional ``locality``
  {``Relation_Specificity``, ``Forgetfulness``}, each a list of {``prompt``, ``ground_truth``},
  optional ``case_id`` or ``id``. Both locality lists become ``relation_probes``: they ask about
  the edit's own subject (Forgetfulness asks for the old answer beside the new one), and the
  unedited model's output there must stay; ``neighbourhood`` stays for other subjects, and is
  empty. Every answer (``target_new``, ``ground_truth``, an entry's ``ground_truth``) may be a
  string, a list of strings or a list of lists of aliases: the first string is used. An entry's
  ``prompt`` may be a list of prompts (one probe each). Other portability and locality keys are
  not read.

Every problem is one line naming the file, and for a record its index and the field:

>>> import json, tempfile
>>> rec = {"subject": "Watts Humphrey", "src": "What university did Watts Humphrey attend?",
...        "alt": "University of Michigan", "answers": ["Trinity College"],
...        "rephrase": "What university did Watts Humphrey take part in?",
...        "loc": "nq question: who played desmond doss father in hacksaw ridge",
...        "loc_ans": "Hugo Weaving"}
>>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
...     _ = f.write(json.dumps([rec]))
>>> case = load_cases(f.name)[0]
>>> case.prompt, case.target_true, case.neighbourhood[0].answer
('What university did {} attend?', 'Trinity College', 'Hugo Weaving')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analyses.edit.cases import EditCase, Portable, Probe
from analyses.edit.knowedit import _knowedit
from analyses.edit.record_fields import _kind, _Record, subject_template
from fmi.errors import ConfigError

FORMATS = ("auto", "counterfact", "zsre", "knowedit")


def _template(rec: _Record, name: str, prompt: str, subject: str) -> str:
    if "{}" not in prompt:
        raise rec.fail(name, f"has no {{}} for the subject: {prompt!r}")
    try:
        prompt.format(subject)
    except (IndexError, KeyError, ValueError):
        raise rec.fail(name, f"must hold one {{}} and no other braces: {prompt!r}") from None
    return prompt


def _counterfact(rec: _Record) -> EditCase:
    case_id = rec.identity(("case_id",), "")
    rewrite = "requested_rewrite"
    subject = rec.text(f"{rewrite}.subject")
    prompt = _template(rec, f"{rewrite}.prompt", rec.text(f"{rewrite}.prompt"), subject)
    target_true = rec.text(f"{rewrite}.target_true.str")
    neighbours = []
    name = "neighborhood_prompts"
    entries = rec.get(name)
    if not isinstance(entries, list):
        raise rec.fail(name, f"must be a list, got {_kind(entries)}")
    for j, entry in enumerate(entries):
        if isinstance(entry, dict):
            if "prompt" not in entry:
                raise rec.fail(f"{name}[{j}].prompt", "is missing")
            prompt_j = rec.text(f"{name}[{j}].prompt", entry["prompt"])
            answer = rec.text(f"{name}[{j}].answer", entry.get("answer", ""), empty=True)
            neighbours.append(Probe(prompt_j, answer))
        elif isinstance(entry, str):
            neighbours.append(Probe(rec.text(f"{name}[{j}]", entry), target_true))
        else:
            raise rec.fail(f"{name}[{j}]", f"must be a string or an object, got {_kind(entry)}")
    from analyses.edit.cases import PORTABILITY_KINDS

    # optional lists of objects: relation_specificity {prompt, answer ("" allowed),
    # relation_id (unread)} and portability {prompt, answer, kind}; absent: none
    extra: dict[str, list[Any]] = {"relation_specificity": [], "portability": []}
    for name, items in extra.items():
        entries = rec.get(name, [])
        if not isinstance(entries, list):
            raise rec.fail(name, f"must be a list, got {_kind(entries)}")
        for j, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise rec.fail(f"{name}[{j}]", f"must be an object, got {_kind(entry)}")
            for key in ("prompt", "answer", "kind")[: 3 if name == "portability" else 2]:
                if key not in entry:
                    raise rec.fail(f"{name}[{j}].{key}", "is missing")
            text = rec.text(f"{name}[{j}].prompt", entry["prompt"])
            if name == "relation_specificity":
                items.append(Probe(text, rec.text(f"{name}[{j}].answer", entry["answer"], True)))
                continue
            kind = rec.text(f"{name}[{j}].kind", entry["kind"])
            if kind not in PORTABILITY_KINDS:
                raise rec.fail(f"{name}[{j}].kind", f"must be one of {PORTABILITY_KINDS}: {kind!r}")
            items.append(Portable(text, rec.text(f"{name}[{j}].answer", entry["answer"]), kind))
    return EditCase(
        case_id=case_id,
        subject=subject,
        prompt=prompt,
        target_new=rec.text(f"{rewrite}.target_new.str"),
        target_true=target_true,
        paraphrases=tuple(rec.texts("paraphrase_prompts")),
        neighbourhood=tuple(neighbours),
        relation=rec.optional(f"{rewrite}.relation_id"),
        split=rec.optional("split"),
        relation_probes=tuple(extra["relation_specificity"]),
        portability=tuple(extra["portability"]),
    )


def _zsre(rec: _Record, index: int) -> EditCase:
    subject = rec.text("subject")
    src = rec.text("src")
    prompt = subject_template(rec, "src", src, subject)

    answers = rec.texts("answers")
    if not answers:
        raise rec.fail("answers", "is an empty list")
    return EditCase(
        case_id=rec.identity(("case_id", "id"), str(index)),
        subject=subject,
        prompt=prompt,
        target_new=rec.text("alt"),
        target_true=answers[0],
        paraphrases=(rec.text("rephrase"),),
        neighbourhood=(Probe(rec.text("loc"), rec.text("loc_ans")),),
        split=rec.optional("split"),
    )


def _records(path: Path) -> list[Any]:
    """The file's records: a JSON list, or JSON Lines (blank lines skipped)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read as UTF-8 text ({err})") from None
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
            ) from None
    else:
        records = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ConfigError(
                    f"{path}: line {n} is not valid JSON ({err.msg} at column {err.colno})"
                ) from None
    if not records:
        raise ConfigError(f"{path}: no records (expected a JSON list or JSON Lines of records)")
    return records


def detect_format(record: Any) -> str:
    """``"counterfact"``, ``"zsre"`` or ``"knowedit"`` from a record's keys, else ``""``.

    >>> detect_format({"requested_rewrite": {}}), detect_format({"src": "", "alt": ""})
    ('counterfact', 'zsre')
    >>> detect_format({"subject": "", "prompt": "", "target_new": ""})
    'knowedit'
    >>> detect_format({"question": ""})
    ''
    """
    if isinstance(record, dict):
        if "requested_rewrite" in record:
            return "counterfact"
        if "src" in record and "alt" in record:
            return "zsre"
        if all(k in record for k in ("subject", "prompt", "target_new")):
            return "knowedit"
    return ""


def load_cases(path: str | Path, format: str = "auto") -> list[EditCase]:
    """Every record of ``path`` as an :class:`EditCase`. ``format`` is ``"counterfact"``,
    ``"zsre"``, ``"knowedit"`` or ``"auto"`` (told from the first record's keys:
    ``requested_rewrite`` means CounterFact, ``src`` and ``alt`` mean ZsRE, ``subject``,
    ``prompt`` and ``target_new`` mean KnowEdit). See the module's docstring for an example."""
    if format not in FORMATS:
        raise ConfigError(
            f"unknown edit-case format {format!r}; expected one of "
            + ", ".join(repr(f) for f in FORMATS)
        )
    source = Path(path)
    records = _records(source)
    if format == "auto":
        format = detect_format(records[0])
        if not format:
            raise ConfigError(
                f"{source}: record 0: cannot tell the format: looked for key "
                "'requested_rewrite' (counterfact), keys 'src' and 'alt' (zsre) or keys "
                "'subject', 'prompt' and 'target_new' (knowedit)"
            )
    cases = []
    for i, data in enumerate(records):
        rec = _Record(source, i, data)
        if format == "counterfact":
            cases.append(_counterfact(rec))
        elif format == "zsre":
            cases.append(_zsre(rec, i))
        else:
            cases.append(_knowedit(rec, i))
    return cases
