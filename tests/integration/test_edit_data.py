"""The editing benchmark's data: both loaders on small good and malformed files, and the
bundled benchmarks (deterministic, split by subject and phrasing)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analyses.edit.bundled.build import built_files
from analyses.edit.bundled.files import data_dir, load_bundled, load_unrelated
from analyses.edit.bundled.known_cf import known_cf_plan
from analyses.edit.bundled.split import phrasing_sides
from analyses.edit.cases import EditCase, Probe
from analyses.edit.loaders import detect_format, load_cases
from fmi.errors import ConfigError
from fmi.experiments.known_facts import load_known_facts

ROOT = Path(__file__).resolve().parents[2]

CF = {
    "case_id": 7,
    "requested_rewrite": {
        "prompt": "{} is located in the continent of",
        "subject": "Vinson Massif",
        "target_new": {"str": "Europe"},
        "target_true": {"str": "Antarctica"},
        "relation_id": "P30",
    },
    "paraphrase_prompts": ["Vinson Massif belongs to the continent of"],
    "neighborhood_prompts": ["Mount Erebus is located in the continent of"],
    "generation_prompts": ["Vinson Massif's surroundings include"],
}

ZSRE = {
    "subject": "Watts Humphrey",
    "src": "What university did watts humphrey attend?",
    "alt": "University of Michigan",
    "answers": ["Trinity College", "TCD"],
    "rephrase": "What university did Watts Humphrey take part in?",
    "loc": "nq question: who played desmond doss father in hacksaw ridge",
    "loc_ans": "Hugo Weaving",
}


def write(tmp_path: Path, records, name="data.json", jsonl=False) -> Path:
    path = tmp_path / name
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def test_counterfact_record_reads_every_field(tmp_path):
    (case,) = load_cases(write(tmp_path, [CF]), "counterfact")
    assert case == EditCase(
        case_id="7",
        subject="Vinson Massif",
        prompt="{} is located in the continent of",
        target_new="Europe",
        target_true="Antarctica",
        paraphrases=("Vinson Massif belongs to the continent of",),
        neighbourhood=(Probe("Mount Erebus is located in the continent of", "Antarctica"),),
        relation="P30",
    )
    assert case.rewrite == "Vinson Massif is located in the continent of"


def test_zsre_record_reads_every_field(tmp_path):
    (case,) = load_cases(write(tmp_path, [ZSRE], jsonl=True), "zsre")
    # the subject is found ignoring case and the prompt gives src back
    assert case.prompt == "What university did {} attend?"
    assert case.rewrite == "What university did Watts Humphrey attend?"
    assert (case.case_id, case.target_new, case.target_true) == (
        "0",
        "University of Michigan",
        "Trinity College",
    )
    assert case.paraphrases == ("What university did Watts Humphrey take part in?",)
    assert case.neighbourhood == (
        Probe("nq question: who played desmond doss father in hacksaw ridge", "Hugo Weaving"),
    )


def test_zsre_braces_in_the_question_survive(tmp_path):
    rec = dict(ZSRE, src="Which {set} did Watts Humphrey attend?", subject="Watts Humphrey")
    (case,) = load_cases(write(tmp_path, [rec]), "zsre")
    assert case.rewrite == "Which {set} did Watts Humphrey attend?"


def test_auto_detects_each_layout(tmp_path):
    assert detect_format(CF) == "counterfact" and detect_format(ZSRE) == "zsre"
    assert load_cases(write(tmp_path, [CF], "a.json"))[0].target_new == "Europe"
    assert load_cases(write(tmp_path, [ZSRE], "b.json"))[0].target_new == "University of Michigan"


def _without(record: dict, dotted: str) -> dict:
    rec = json.loads(json.dumps(record))
    *path, last = dotted.split(".")
    node = rec
    for part in path:
        node = node[part]
    del node[last]
    return rec


@pytest.mark.parametrize(
    "record, field",
    [
        (_without(CF, "requested_rewrite.subject"), "requested_rewrite.subject"),
        (_without(CF, "requested_rewrite.target_new"), "requested_rewrite.target_new"),
        (_without(CF, "paraphrase_prompts"), "paraphrase_prompts"),
        (dict(CF, paraphrase_prompts="one string"), "paraphrase_prompts"),
        (dict(CF, neighborhood_prompts=[3]), "neighborhood_prompts[0]"),
        (
            dict(CF, requested_rewrite=dict(CF["requested_rewrite"], prompt="no slot here")),
            "requested_rewrite.prompt",
        ),
        (
            dict(CF, requested_rewrite=dict(CF["requested_rewrite"], target_true={"str": ""})),
            "requested_rewrite.target_true.str",
        ),
    ],
)
def test_malformed_counterfact_names_record_and_field(tmp_path, record, field):
    path = write(tmp_path, [CF, record])
    with pytest.raises(ConfigError) as err:
        load_cases(path, "counterfact")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: record 1: field {field!r}")


@pytest.mark.parametrize(
    "record, field",
    [
        (_without(ZSRE, "alt"), "alt"),
        (dict(ZSRE, answers=[]), "answers"),
        (dict(ZSRE, answers="Trinity"), "answers"),
        (dict(ZSRE, subject="Nobody"), "subject"),
        (dict(ZSRE, loc_ans=4), "loc_ans"),
    ],
)
def test_malformed_zsre_names_record_and_field(tmp_path, record, field):
    path = write(tmp_path, [ZSRE, ZSRE, record], jsonl=True)
    with pytest.raises(ConfigError) as err:
        load_cases(path, "zsre")
    assert str(err.value).startswith(f"{path}: record 2: field {field!r}")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "no records"),
        ("{not json", "line 1"),
        ("[1, 2", "JSON"),
        ('"a string"', "record 0"),
    ],
)
def test_unreadable_files_get_one_line(tmp_path, text, problem):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(problem)) as err:
        load_cases(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_cases(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="format"):
        load_cases(write(tmp_path, [CF]), "mquake")


def test_a_record_of_neither_layout_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"record 0"):
        load_cases(write(tmp_path, [{"question": "?"}]))


# --- bundled ---------------------------------------------------------------------------------


def test_builder_reproduces_the_committed_files_byte_for_byte():
    built = built_files()
    assert sorted(built) == ["known-cf.json", "nonce-cf.json", "unrelated.json"]
    for name, text in built.items():
        assert (data_dir() / name).read_bytes() == text.encode("utf-8"), name
    assert built == built_files()  # and again, in the same process


def test_the_build_script_checks_the_committed_files():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_edit_data.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", ["known-cf", "nonce-cf"])
def test_splits_are_disjoint_by_subject_and_phrasing(name):
    train, eval_ = load_bundled(name)
    assert train and eval_
    assert not {c.subject for c in train} & {c.subject for c in eval_}
    assert not {c.prompt for c in train} & {c.prompt for c in eval_}
    train_texts = {c.rewrite for c in train} | {p for c in train for p in c.paraphrases}
    eval_texts = {c.rewrite for c in eval_} | {p for c in eval_ for p in c.paraphrases}
    assert not train_texts & eval_texts
    # a neighbour is never about an edited subject, whatever is held at once
    neighbours = {n.prompt for c in train + eval_ for n in c.neighbourhood}
    assert not neighbours & (train_texts | eval_texts)
    edited = {c.subject for c in train + eval_}
    assert all(
        not any(n.prompt == c.prompt.format(s) for s in edited)
        for c in train + eval_
        for n in c.neighbourhood
    )
    for case in train + eval_:
        assert case.target_new != case.target_true
        assert case.rewrite not in case.paraphrases
        # neighbours are about other subjects (some names overlap: "Xbox" / "Xbox Game
        # Studios", hard neighbours as in CounterFact), never the edit's own prompts
        own = {case.rewrite, *case.paraphrases}
        assert not own & {n.prompt for n in case.neighbourhood}
        assert all(case.subject in p for p in case.paraphrases)


def test_known_cf_cases_come_from_the_known_facts():
    facts = load_known_facts()
    by_prompt = {(f.subject, f.template): f for f in facts}
    objects: dict[str, set[str]] = {}
    for f in facts:
        objects.setdefault(f.relation_id, set()).add(f.attribute)
    train, eval_ = load_bundled("known-cf")
    assert (len(train), len(eval_)) == (215, 807)
    kept, dropped = known_cf_plan(facts)
    assert len(kept) + len(dropped) == len(facts) == 1209
    for case in train + eval_:
        fact = by_prompt[(case.subject, case.prompt)]
        assert case.target_true == fact.attribute
        # target_new is another object of the same relation
        assert case.target_new in objects[fact.relation_id] - {fact.attribute}
        # paraphrases use the relation's other phrasings, neighbours other subjects
        assert all(n.answer for n in case.neighbourhood)
    sides = phrasing_sides(facts)
    for case in train + eval_:
        assert sides[case.relation][case.prompt] == case.split


def test_nonce_cf_objects_are_multi_word_and_invented():
    train, eval_ = load_bundled("nonce-cf")
    assert (len(train), len(eval_)) == (138, 279)
    known_words = {w.lower() for f in load_known_facts() for w in f.subject.split()}
    assert all(len(c.target_new.split()) >= 2 for c in train + eval_)
    assert all(c.subject.split()[0].lower() not in known_words for c in train + eval_)


def test_unrelated_prompts_are_split_and_name_no_subject():
    train, eval_ = load_unrelated()
    assert (len(train), len(eval_)) == (200, 455)
    assert not set(train) & set(eval_)
    subjects = sorted({f.subject for f in load_known_facts()})
    # one pattern for all subjects: a regex per (prompt, subject) pair took a minute
    any_subject = re.compile("|".join(rf"(?<!\w){re.escape(s)}(?!\w)" for s in subjects))
    for prompt in train + eval_:
        assert any_subject.search(prompt) is None, prompt
