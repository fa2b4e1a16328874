"""The editing benchmark's data: both loaders on small good and malformed files, and the
bundled benchmarks (deterministic, split by subject and phrasing)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from analyses.edit.bundled.build import built_files
from analyses.edit.bundled.files import data_dir, load_bundled, load_unrelated
from analyses.edit.bundled.geo_cf import geo_cf_plan
from analyses.edit.bundled.geo_source import LANGUAGES, load_geonames
from analyses.edit.bundled.geo_templates import PHRASINGS
from analyses.edit.bundled.known_cf import known_cf_plan
from analyses.edit.bundled.relation_probes import SAME_QUESTION
from analyses.edit.bundled.split import phrasing_sides
from analyses.edit.cases import EditCase, Portable, Probe
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


def test_counterfact_reads_relation_probes_and_portability(tmp_path):
    rec = dict(
        CF,
        relation_specificity=[
            {"prompt": "Vinson Massif is a mountain in", "answer": "", "relation_id": "P31"},
            {"prompt": "The height of Vinson Massif is", "answer": "4,892 m"},
        ],
        portability=[
            {"prompt": "Mount Vinson is located in the continent of", "answer": "Europe",
             "kind": "alias"},
        ],
    )  # fmt: skip
    (case,) = load_cases(write(tmp_path, [rec]), "counterfact")
    assert case.relation_probes == (
        Probe("Vinson Massif is a mountain in", ""),
        Probe("The height of Vinson Massif is", "4,892 m"),
    )
    assert case.portability == (
        Portable("Mount Vinson is located in the continent of", "Europe", "alias"),
    )
    # both are optional: absent, they are empty
    (plain,) = load_cases(write(tmp_path, [CF], "plain.json"), "counterfact")
    assert plain.relation_probes == () and plain.portability == ()


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"relation_specificity": "a prompt"}, "relation_specificity"),
        ({"relation_specificity": ["a prompt"]}, "relation_specificity[0]"),
        ({"relation_specificity": [{"prompt": "p"}]}, "relation_specificity[0].answer"),
        ({"portability": [{"prompt": "p", "answer": "a"}]}, "portability[0].kind"),
        ({"portability": [{"prompt": "p", "answer": "a", "kind": "two_hop"}]},
         "portability[0].kind"),
        ({"portability": [{"prompt": "p", "answer": "", "kind": "alias"}]},
         "portability[0].answer"),
    ],
)  # fmt: skip
def test_malformed_probe_lists_name_record_and_field(tmp_path, extra, field):
    path = write(tmp_path, [CF, dict(CF, **extra)])
    with pytest.raises(ConfigError) as err:
        load_cases(path, "counterfact")
    assert str(err.value).startswith(f"{path}: record 1: field {field!r}")


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
    assert sorted(built) == ["geo-cf.json", "known-cf.json", "nonce-cf.json", "unrelated.json"]
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


@pytest.mark.parametrize("name", ["known-cf", "nonce-cf", "geo-cf"])
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
    templates = {c.prompt for c in train + eval_}
    assert not neighbours & {t.format(s) for t in templates for s in edited}
    # no relation probe is what a case edits, whatever is held at once
    probes = {p.prompt for c in train + eval_ for p in c.relation_probes}
    assert not probes & (train_texts | eval_texts | neighbours)
    for case in train + eval_:
        assert case.target_new != case.target_true
        assert case.rewrite not in case.paraphrases
        # neighbours are about other subjects (some names overlap: "Xbox" / "Xbox Game
        # Studios", hard neighbours as in CounterFact), never the edit's own prompts
        own = {case.rewrite, *case.paraphrases}
        assert not own & {n.prompt for n in case.neighbourhood}
        assert all(case.subject in p for p in case.paraphrases)
        assert len(case.relation_probes) >= 2
        assert all(case.subject in p.prompt for p in case.relation_probes)


def test_known_cf_keeps_its_cases_as_they_were():
    """The relation probes were added to known-cf and nonce-cf: without them (and the empty
    portability), each file is byte for byte the one built before they existed."""
    old = {
        "known-cf.json": "1294bf97625d672cafb004edadffaa0045627a686e2dfd647bf0676364257fc3",
        "nonce-cf.json": "441570a2d7bd49df4e768552f2c8f939a165b937c166fa8110f7cc666d8e732d",
    }
    for name, digest in old.items():
        records = json.loads((data_dir() / name).read_text(encoding="utf-8"))
        for r in records:
            assert r.pop("portability") == []
            assert len(r.pop("relation_specificity")) == 3
        text = json.dumps(records, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == digest, name


@pytest.mark.parametrize("name", ["known-cf", "nonce-cf"])
def test_known_relation_probes_ask_other_questions(name):
    train, eval_ = load_bundled(name)
    records = json.loads((data_dir() / f"{name}.json").read_text(encoding="utf-8"))
    for rec in records:
        rel = rec["requested_rewrite"]["relation_id"]
        asked = [p["relation_id"] for p in rec["relation_specificity"]]
        assert len(asked) == len(set(asked)) == 3
        assert all(r != rel and not any({r, rel} <= g for g in SAME_QUESTION) for r in asked)
    answered = [
        (c.subject, p.prompt, p.answer)
        for c in train + eval_
        for p in c.relation_probes
        if p.answer
    ]
    if name == "nonce-cf":
        assert answered == []
    else:
        assert sorted(answered) == [
            ("La Fontaine's Fables", "The original language of La Fontaine's Fables is", "French"),
            ("United Kingdom of the Netherlands",
             "United Kingdom of the Netherlands belongs to the continent of", "Europe"),
            ("Windows Media Player", "Windows Media Player is developed by", "Microsoft"),
        ]  # fmt: skip
    assert all(c.portability == () for c in train + eval_)


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


# --- geo-cf ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def geo():
    return load_bundled("geo-cf")


@pytest.fixture(scope="module")
def plan():
    return geo_cf_plan()


def test_geo_cf_counts_per_split_and_relation(geo):
    train, eval_ = geo
    assert (len(train), len(eval_)) == (1391, 10135)
    assert Counter((c.split, c.relation) for c in train + eval_) == {
        ("train", "P17"): 1366, ("train", "P36"): 7, ("train", "P30"): 6,
        ("train", "P37"): 6, ("train", "P38"): 6,
        ("eval", "P17"): 9958, ("eval", "P36"): 45, ("eval", "P30"): 44,
        ("eval", "P37"): 44, ("eval", "P38"): 44,
    }  # fmt: skip
    kinds = Counter((c.split, p.kind) for c in train + eval_ for p in c.portability)
    assert kinds == {
        ("train", "alias"): 36, ("train", "one_hop"): 1350,
        ("eval", "alias"): 288, ("eval", "one_hop"): 9819,
    }  # fmt: skip
    probes = Counter(len(c.relation_probes) for c in train + eval_)
    assert probes == {2: 11324, 3: 202}  # cities 2, countries 3
    assert all(len(c.paraphrases) == 2 for c in train + eval_)
    assert Counter(len(c.neighbourhood) for c in train + eval_) == {3: 11517, 1: 9}
    assert (data_dir() / "geo-cf.json").stat().st_size == 10005063


def test_geo_cf_example_cases(geo):
    train, eval_ = geo
    by_subject = {c.subject: c for c in train + eval_}
    assert by_subject["Mumbai"] == EditCase(
        case_id="7",
        subject="Mumbai",
        prompt="{} is a city in the country of",
        target_new="Oman",
        target_true="India",
        paraphrases=("Mumbai is located in the country of", "Mumbai lies in the country of"),
        neighbourhood=(
            Probe("Kanigiri U is a city in the country of", "India"),
            Probe("Jamkhandi is a city in the country of", "India"),
            Probe("Vaniyambadi is a city in the country of", "India"),
        ),
        relation="P17",
        split="eval",
        relation_probes=(
            Probe("Mumbai is a city on the continent of", "Asia"),
            Probe("The population of Mumbai is", "12,691,836"),
        ),
        portability=(
            Portable("Bombay is a city in the country of", "Oman", "alias"),
            Portable("The capital of the country where Mumbai is located is", "Muscat", "one_hop"),
        ),
    )
    belgium = by_subject["Belgium"]
    assert (belgium.split, belgium.relation, belgium.rewrite) == (
        "train", "P36", "Belgium has its capital in",
    )  # fmt: skip
    assert (belgium.target_true, belgium.target_new) == ("Brussels", "Santo Domingo")
    assert belgium.relation_probes == (
        Probe("The continent of Belgium is", "Europe"),
        Probe("The name of the currency of Belgium is the", "Euro"),
        Probe("The most widely used language in Belgium is", "Dutch"),
    )
    assert belgium.portability == (
        Portable("The capital of Belgium is a city in the country of", "Dominican Republic",
                 "one_hop"),
    )  # fmt: skip


def _subject_of(template: str, prompt: str) -> str:
    """The text ``prompt`` holds where ``template`` has ``{}``."""
    head, tail = template.split("{}")
    assert prompt.startswith(head) and prompt.endswith(tail), (template, prompt)
    return prompt[len(head) : len(prompt) - len(tail)]


def test_geo_cf_plan_keeps_sides_bystanders_and_aliases_apart(geo, plan):
    train, eval_ = geo
    cases = train + eval_
    key = {c.name: c.geonameid for c in plan.cities} | {
        k.name: k.iso for k in plan.countries.values()
    }
    true = {c.name: plan.countries[c.country].name for c in plan.cities}
    aside = {name for name, k in key.items() if k in plan.bystanders}
    # a subject is edited once, on its planned side; a bystander never
    assert len({c.subject for c in cases}) == len(cases) == len(key) - len(aside)
    assert all(plan.side[key[c.subject]] == c.split for c in cases)
    # every neighbour is a bystander of the case's side, answered with its true object,
    # sharing the case's true object when the side has such a bystander (cities: its country)
    for case in cases:
        subjects = [_subject_of(case.prompt, n.prompt) for n in case.neighbourhood]
        assert all(s in aside and plan.side[key[s]] == case.split for s in subjects)
        if case.relation == "P17":
            assert [n.answer for n in case.neighbourhood] == [true[s] for s in subjects]
            same = [n.answer == case.target_true for n in case.neighbourhood]
            assert same == sorted(same, reverse=True)
    # aliases: never a name of the other side, its aliases, a subject or a bystander
    aliases = {
        side: {_subject_of(c.prompt, p.prompt) for c in part for p in c.portability
               if p.kind == "alias"}
        for side, part in (("train", train), ("eval", eval_))
    }  # fmt: skip
    subjects = {"train": {c.subject for c in train}, "eval": {c.subject for c in eval_}}
    assert not aliases["train"] & (aliases["eval"] | subjects["eval"] | set(key))
    assert not aliases["eval"] & (aliases["train"] | subjects["train"] | set(key))
    assert (len(aliases["train"]), len(aliases["eval"])) == (36, 288)
    assert {"Bombay", "Petrograd", "Krung Thep"} <= aliases["eval"] | aliases["train"]


def test_geo_cf_phrasings_and_probes_follow_the_edit(geo, plan):
    train, eval_ = geo
    countries = {k.name: k for k in plan.countries.values()}
    for case in train + eval_:
        phrasing = PHRASINGS[case.relation][case.split]
        assert case.prompt == phrasing.rewrite
        assert {p.replace(case.subject, "{}", 1) for p in case.paraphrases} <= set(
            phrasing.paraphrases
        )
        assert all(p.answer for p in case.relation_probes)
        if case.relation == "P17":
            new, old = countries[case.target_new], countries[case.target_true]
            assert new.continent == old.continent  # the continent probe stays true
            assert case.relation_probes[0].answer == old.continent
            for p in case.portability:
                if p.kind == "one_hop":
                    hop = {new.capital: old.capital, new.currency: old.currency,
                           new.language: old.language}  # fmt: skip
                    assert p.answer in hop and hop[p.answer] != p.answer
    # the train side's phrasings never reach the eval side
    for sides in PHRASINGS.values():
        assert not set(sides["train"].all) & set(sides["eval"].all)


def test_geo_cf_language_table_is_the_codes_used(plan):
    countries, _, _ = load_geonames()
    used = {countries[iso]["languages"].split(",")[0].split("-")[0] for iso in plan.countries}
    assert used == set(LANGUAGES) and len(used) == 87
