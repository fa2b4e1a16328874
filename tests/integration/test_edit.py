"""The editing benchmark: metrics on hand-made cases, the group plan, teacher forcing against a
naive loop, every method leaving the weights bit-identical, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import no_hooks, weights_digest

from analyses.cli.main import main
from analyses.edit.bundled.files import load_bundled, load_unrelated
from analyses.edit.cases import EditCase, Probe
from analyses.edit.config import EditConfig
from analyses.edit.figures import markdown_table
from analyses.edit.grace import GraceEdit
from analyses.edit.lora import LoraEdit
from analyses.edit.method import Cost, Held
from analyses.edit.methods import InContext, NoEdit, TooLong, stated
from analyses.edit.rome.config import RomeConfig
from analyses.edit.rome.method import Rome
from analyses.edit.score import (
    Outcome,
    groups,
    judge,
    probes,
    score_group,
    summary,
)
from analyses.edit.score import Probe as Scored
from analyses.edit.teacher import answer_nll, forced
from analyses.edit.tune import pick
from fmi.errors import ConfigError
from fmi.experiments.intervals import cluster_interval, wilson
from fmi.models.registry import load_model


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-gemma", announce=lambda _: None)


@pytest.fixture(scope="module")
def cases():
    train, _ = load_bundled("known-cf")
    return train[:3]


# --- metrics on hand-made cases --------------------------------------------------------------


def test_judge_each_kind_exactly():
    rewrite = Scored("rewrite", "7", "Rome is in", "New York")
    assert judge(rewrite, " New York, USA", (1,), None, None).hit
    assert judge(rewrite, "New York", (1,), None, None).hit
    assert not judge(rewrite, " New Yorker", (1,), None, None).hit
    assert not judge(rewrite, " New", (1,), None, None).hit
    para = Scored("paraphrase", "7", "Rome lies in", "New York")
    assert not judge(para, " Old York", (1,), None, None).hit
    neighbour = Scored("neighbour", "7", "Paris is in")
    assert judge(neighbour, "x", (3, 4, 5), (3, 4, 5), None).hit
    assert not judge(neighbour, "x", (3, 4, 6), (3, 4, 5), None).hit
    assert not judge(neighbour, "x", (3, 4), (3, 4, 5), None).hit
    generic = Scored("unrelated", "", "Hello")
    assert not judge(generic, "", (1, 2), (1, 2), None).hit
    assert judge(generic, "", (2, 1), (1, 2), None).hit
    with pytest.raises(ValueError):
        judge(neighbour, "", (1,), None, None)


def test_summary_counts_rates_scores_and_intervals():
    def out(kind, case, hit, margin=None, prompt=None):
        return Outcome(kind, case, hit, margin, prompt=prompt or f"{kind} {case}", group="g")

    outs = [
        out("rewrite", "a", True, 0.5),
        out("rewrite", "b", False, -1.0),
        out("rewrite", "c", True, None),  # no probability score for this one
        out("paraphrase", "a", True, 0.0),  # a tie is not P(new) > P(true)
        out("neighbour", "a", False, 2.0, "Paris is in"),
        out("neighbour", "b", True, 1.0, "Oslo is in"),
        out("neighbour", "b", True, -3.0, "Rome is in"),
        out("unrelated", "", True, prompt="u1"),
        out("unrelated", "", False, prompt="u2"),
        out("unrelated", "", False, prompt="u3"),
        out("unrelated", "", False, prompt="u4"),
    ]
    s = summary(outs)
    assert s["efficacy"] == pytest.approx(2 / 3) and s["efficacy_n"] == 3
    # three edits, one prompt each: the cluster interval is Wilson's (the hull with the bootstrap)
    assert s["efficacy_ci"] == list(cluster_interval([1, 0, 1], ["a", "b", "c"], 2000, 0))
    assert s["efficacy_ci"][0] <= wilson(2, 3)[0] and s["efficacy_ci"][1] >= wilson(2, 3)[1]
    assert s["generalization"] == 1.0 and s["generalization_n"] == 1
    assert s["specificity"] == pytest.approx(2 / 3) and s["specificity_clusters"] == 2
    assert s["unrelated_changed"] == 0.25 and s["unrelated_changed_n"] == 4
    assert s["rewrite_score"] == 0.5 and s["rewrite_score_n"] == 2
    assert s["paraphrase_score"] == 0.0 and s["paraphrase_score_n"] == 1
    assert s["neighbourhood_score"] == pytest.approx(2 / 3)
    assert s["es"] is None and s["es_n"] == 0  # no whole-target probabilities given
    lo, hi = s["unrelated_changed_ci"]
    assert lo == 0.0 and 0.25 < hi < 1  # a bootstrap of 4 prompts draws none changed


def test_groups_score_the_same_edits_at_every_t():
    cases = [EditCase(str(i), f"S{i}", "{} is in", "A", "B") for i in range(30)]
    unrelated = [f"u{i}" for i in range(7)]
    scored_sets = []
    for t in (1, 3, 10, 50):
        plan = groups(cases, t, 10, unrelated, seed=4)
        ids = [g.edits[r].case_id for g in plan for r in g.scored]
        scored_sets.append(ids)
        assert len(ids) == len(set(ids)) == 10
        held = [c.case_id for g in plan for c in g.edits]
        assert len(held) == len(set(held))  # disjoint groups
        assert all(len(g.edits) == min(t, 30) for g in plan[:-1])
        assert sorted(u for g in plan for u in g.unrelated) == sorted(unrelated)
    assert all(set(s) == set(scored_sets[0]) for s in scored_sets)
    assert groups(cases, 3, 10, [], seed=5)[0].edits != groups(cases, 3, 10, [], seed=4)[0].edits


def test_probes_drop_first_token_ties(model):
    tok = model.tokenizer
    case = EditCase(
        "0",
        "Bob",
        "{} lives in",
        "New York",
        "New Delhi",
        paraphrases=("Bob's home is",),
        neighbourhood=(Probe("Ann lives in", "Paris"),),
    )
    found = probes(tok, groups([case], 1, 1, ["Once upon"], 0)[0])
    kinds = [p.kind for p in found]
    assert kinds == ["rewrite", "paraphrase", "neighbour", "unrelated"]
    assert found[0].pair is None  # " New" starts both targets
    assert found[2].pair is not None and found[3].pair is None


def test_answer_nll_equals_a_naive_loop(model):
    prompts, answers = ["Alice likes", "The capital of France is"], [" green tea", " Paris"]
    batch = forced(model.tokenizer, prompts, answers)
    logits = model.bridge(batch.tokens, attention_mask=batch.mask)
    want = []
    for p, a in zip(prompts, answers, strict=True):
        ids = model.tokenizer(p + a)["input_ids"]
        n_answer = len(model.tokenizer(p + a)["input_ids"]) - len(model.tokenizer(p)["input_ids"])
        alone = model.bridge(torch.tensor([ids])).log_softmax(-1)[0]
        terms = [-alone[i - 1, ids[i]] for i in range(len(ids) - n_answer, len(ids))]
        want.append(torch.stack(terms).mean())
    assert float(answer_nll(logits, batch)) == pytest.approx(
        float(torch.stack(want).mean()), abs=1e-4
    )


def test_pick_keeps_the_bound_then_the_best():
    a = {"efficacy": 1.0, "generalization": 1.0, "specificity": 1.0, "unrelated_changed": 0.5}
    b = {"efficacy": 0.2, "generalization": 0.2, "specificity": 1.0, "unrelated_changed": 0.0}
    c = {"efficacy": 0.4, "generalization": 0.2, "specificity": 1.0, "unrelated_changed": 0.01}
    assert pick([a, b, c], bound=0.02) == 2
    assert pick([a, b, c], bound=1.0) == 0
    assert pick([a, dict(a, unrelated_changed=0.4)], bound=0.1) == 1  # none within: least changed
    assert pick([b, dict(b)], bound=0.1) == 0  # ties: the earlier


def test_config_rejects_bad_values():
    for bad in (
        {"methods": ("rome", "wise")},
        {"edits": ()},
        {"scored": 0},
        {"seeds": (-1,)},
        {"format": "mquake"},
        {"cell_budget_s": 0},
        {"unrelated": -1},
    ):
        with pytest.raises(ConfigError):
            EditConfig(**bad)
    assert EditConfig().methods == (
        "none",
        "in_context",
        "fast_memory",
        "dual_key_learned",
        "dual_key",
        "grace",
        "lora",
        "rome",
        "memit",
        "alphaedit",
    )
    assert EditConfig().tune_edits == 50 and EditConfig().cell_budget_s == 3600.0


# --- methods ---------------------------------------------------------------------------------


def test_in_context_states_the_facts_and_refuses_a_long_prefix(model, cases):
    with InContext(4096).edited(model, cases, Cost()) as held:
        assert held.prompts(["Q"]) == [stated(cases) + "Q"]
        assert held.prefix == stated(cases)  # one prefix, decoded after its cached keys
    with (
        pytest.raises(TooLong, match="over the prefix budget of 5"),
        InContext(5).edited(model, cases, Cost()),
    ):
        pass


def _methods():
    return [
        NoEdit(),
        InContext(),
        GraceEdit(layer=1, eps_init=1.0, n_iter=2),
        LoraEdit(steps=2, retention_texts=("Once upon a time",)),
        Rome(RomeConfig(steps=2, cov_samples=64)),
    ]


@pytest.mark.parametrize("method", _methods(), ids=lambda m: m.name)
def test_weights_bit_identical_and_no_hook_after_every_method(model, cases, method):
    before = weights_digest(model.bridge)
    flags = [p.requires_grad for p in model.bridge.parameters()]
    cost = Cost()
    with method.edited(model, cases, cost) as held:
        found = probes(model.tokenizer, groups(cases, 3, 3, ["Once upon a time"], 0)[0])
        score_group(model, held, found, None, max_new_tokens=2, batch_size=4)
    assert weights_digest(model.bridge) == before
    assert no_hooks(model.bridge)
    assert [p.requires_grad for p in model.bridge.parameters()] == flags
    with pytest.raises(RuntimeError, match="inside"), method.edited(model, cases, Cost()):
        raise RuntimeError("inside")
    assert weights_digest(model.bridge) == before and no_hooks(model.bridge)
    if method.name in ("grace", "lora", "rome"):
        assert cost.backward > 0 and cost.seconds > 0


def test_lora_removed_gives_the_unedited_logits(model, cases):
    tokens = model.tokenizer(cases[0].rewrite, return_tensors="pt")["input_ids"]
    clean = model.bridge(tokens)
    with LoraEdit(steps=3, lr=0.05).edited(model, cases[:1], Cost()):
        edited = model.bridge(tokens)
    assert not torch.equal(edited, clean)
    assert torch.equal(model.bridge(tokens), clean)


def test_unedited_scoring_is_its_own_reference(model, cases):
    found = probes(model.tokenizer, groups(cases, 3, 3, ["Once upon a time"], 0)[0])
    _, base = score_group(model, Held(), found, None, max_new_tokens=3, batch_size=2)
    outs, _ = score_group(model, Held(), found, base, max_new_tokens=3, batch_size=5)
    s = summary(outs)
    assert s["specificity"] == 1.0 and s["unrelated_changed"] == 0.0


# --- end to end ------------------------------------------------------------------------------


def test_quick_run_writes_json_and_html(tmp_path, capsys):
    out = tmp_path / "reports"
    rc = main(
        [
            "edit",
            "--quick",
            "--methods",
            "none,in_context,fast_memory,grace,rome",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "edit.json"),
        ]
    )
    assert rc == 0
    doc = json.loads((tmp_path / "edit.json").read_text())
    assert set(doc["results"]) == {"none", "in_context", "fast_memory", "grace", "rome"}
    for by_t in doc["results"].values():
        assert set(by_t) == {"1", "4"}
        for cell in by_t.values():
            assert cell["n"] == 4
            for metric in ("efficacy", "generalization", "specificity", "unrelated_changed", "es"):
                lo, hi = cell[f"{metric}_ci"]
                assert lo <= cell[metric] <= hi and hi - lo > 0
                assert 0 < cell[f"{metric}_clusters"] <= cell[f"{metric}_n"]
            assert cell["es_n"] == 4 and isinstance(cell["failures"], list)
            assert all({"kind", "prompt", "expected", "got", "explain"} <= set(f)
                       for f in cell["failures"])  # fmt: skip
            assert math.isfinite(cell["seconds_per_edit"])
    assert doc["results"]["none"]["4"]["specificity"] == 1.0
    assert doc["results"]["rome"]["1"]["backward_per_edit"] > 0
    assert doc["header"]["config"]["methods"] == [
        "none",
        "in_context",
        "fast_memory",
        "grace",
        "rome",
    ]
    assert (out / "edit_known_cf.html").is_file()
    printed = capsys.readouterr().out
    assert markdown_table(doc).splitlines()[0] in printed

    from fmi.reporting.browser import BrowserUnavailableError, check_pages

    try:
        checks = check_pages([out / "edit_known_cf.html"])
    except (BrowserUnavailableError, ImportError) as err:  # pragma: no cover - environment
        pytest.skip(f"headless browser unavailable: {err}")
    check = checks[out / "edit_known_cf.html"]
    assert check.ok, (check.errors, check.failed_requests)
    assert check.plots >= 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "nothing.txt"], "--data must be"),
        (["--methods", "wise"], "methods must be"),
        (["--edits", "1,x"], "--edits must be"),
        (["--seeds", "a"], "--seeds must be"),
    ],
)
def test_bad_options_get_one_line_and_exit_2(args, message, capsys):
    assert main(["edit", "--quick", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_malformed_record_gets_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "cf.json"
    path.write_text(
        json.dumps([{"case_id": 1, "requested_rewrite": {"prompt": "{} is", "subject": "X"}}])
    )
    assert main(["edit", "--quick", "--data", str(path), "--methods", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "record 0: field 'requested_rewrite.target_true'" in err
    assert len(err.splitlines()) == 1


def test_unrelated_prompts_are_bundled_for_both_parts():
    train, eval_ = load_unrelated()
    assert len(train) == 200 and len(eval_) == 455


def test_a_zsre_file_runs_whole_and_tunes_on_the_bundled_part(tmp_path):
    _, eval_ = load_bundled("known-cf")
    records = [
        {
            "subject": c.subject,
            "src": c.rewrite,
            "alt": c.target_new,
            "answers": [c.target_true],
            "rephrase": c.paraphrases[0],
            "loc": "nq question: " + c.neighbourhood[0].prompt,
            "loc_ans": c.neighbourhood[0].answer,
        }
        for c in eval_
        if c.paraphrases
    ][:5]
    path = tmp_path / "zsre.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "edit.json"
    argv = ["edit", "--quick", "--data", str(path), "--methods", "none,fast_memory"]
    argv += ["--edits", "5", "--scored", "5", "--out", str(tmp_path), "--json", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["data"] == "zsre" and doc["header"]["data"]["format"] == "zsre"
    assert doc["header"]["data"]["eval_cases"] == 5
    assert doc["header"]["data"]["train_source"] == "known-cf"
    assert doc["results"]["none"]["5"]["n"] == 5
    assert (tmp_path / "edit_zsre.html").is_file()


def test_fast_memory_explains_which_edit_fired(model, cases):
    """The failure log's entry for the memory names the edit whose entry scored best, its
    score against the threshold, and whether it fired: the same decision reading makes."""
    from dataclasses import replace

    import fmi
    from analyses.edit.fast import FastEdit

    fitted = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
    method = FastEdit(replace(fitted, thresholds={**fitted.thresholds, fitted.mode: -1.0}))
    prompts = [c.rewrite for c in cases] + ["An unrelated prompt about nothing"]
    cost = Cost()
    with method.edited(model, cases, cost) as held:
        why = held.explain(prompts)
    assert all(w["fired"] for w in why)  # threshold -1: every prompt fires
    assert [w["entry"] for w in why[:3]] == [c.case_id for c in cases]
    assert all(w["threshold"] == -1.0 and w["score"] >= -1.0 for w in why)
    assert cost.extra["single_seconds"][1] == len(cases)  # the one-at-a-time write was timed


def test_each_finished_cell_is_handed_over_as_a_partial_document(model):
    from analyses.edit.run import run_edit

    cfg = EditConfig(
        model="tiny-gemma", methods=("none", "in_context"), edits=(1, 4), scored=4,
        tune_edits=4, unrelated=12,
    )  # fmt: skip
    got: list[dict] = []
    final = run_edit(model, cfg, announce=lambda _: None, partial=got.append)
    assert [d["partial"] for d in got] == [
        f"{k} of 4 cells done; examples not decoded" for k in (1, 2, 3, 4)
    ]
    assert [sorted(d["results"]["none"]) for d in got[:2]] == [["1"], ["1", "4"]]
    assert got[1]["results"]["in_context"] == {} and got[2]["results"]["in_context"].keys() == {"1"}
    assert all(d["examples"] == {} and d["methods"] == final["methods"] for d in got)
    assert json.dumps(got[-1]["results"], sort_keys=True) == json.dumps(
        final["results"], sort_keys=True
    )
    assert "partial" not in final and final["examples"]
