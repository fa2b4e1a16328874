"""The editing benchmark's probes and metrics on hand-made cases: full-target log-probabilities
against a naive loop (with and without hooks), ROME's ES / PS / NS and magnitudes, trials
counted once with cluster intervals worked by hand, the failure log, the KnowEdit loader and the
tables."""

from __future__ import annotations

import doctest
import importlib
import json
import math

import pytest
import torch

from analyses.edit import cases as edit_cases
from analyses.edit.bundled.files import load_bundled
from analyses.edit.cases import EditCase, Portable
from analyses.edit.cases import Probe as Neighbour
from analyses.edit.failures import failure_log
from analyses.edit.figures import cell, columns, legacy, markdown_table, table_figure
from analyses.edit.loaders import detect_format, load_cases
from analyses.edit.method import Cost, Held
from analyses.edit.methods import InContext
from analyses.edit.probability import mean_logprob, target_ids, target_logprobs
from analyses.edit.rates import METRIC_LABELS, METRICS, Outcome, summary, trials
from analyses.edit.run import _cell
from analyses.edit.score import (
    Group,
    Probe,
    bystander,
    groups,
    judge,
    max_tokens,
    probes,
    score_group,
)
from fmi.core.hooks import add_at_positions, sequence_hooks
from fmi.errors import ConfigError
from fmi.experiments.intervals import (
    cluster_interval,
    cluster_mean,
    cluster_rate,
    design_effect,
    effective_n,
    wilson,
)
from fmi.models.tiny import neox_tokenizer

SITE = "blocks.0.hook_resid_post"
PROMPTS = ["Alice likes", "The capital of France is", "Bob", "A very long prompt about a town is"]
TARGETS = ["green tea", "Paris", "New York City", "x"]


# --- full-target log-probabilities against a naive loop ---------------------------------------


def _naive(model, text: str, target: str, adds=()) -> list[float]:
    """One prompt alone, no padding, no cache: the log-probability of each target token, with
    ``adds`` = ``[(position, vector)]`` added at ``SITE``."""
    full = model.tokenizer(text + " " + target)["input_ids"]
    ids = target_ids(model.tokenizer, text, target)
    start = len(full) - len(ids)
    assert full[start:] == ids

    def hook(act, hook):
        out = act.clone()
        for pos, vec in adds:
            out[0, pos] = out[0, pos] + vec.to(act.dtype)
        return out

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(SITE, hook)] if adds else []):
        logp = model.bridge(torch.tensor([full])).float().log_softmax(-1)[0]
    return [float(logp[start - 1 + s, ids[s]]) for s in range(len(ids))]


def _close(got: list[list[float]], want: list[list[float]]) -> None:
    assert [len(g) for g in got] == [len(w) for w in want]
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=1e-5)


def test_batched_logprobs_equal_a_naive_loop(tiny_gemma):
    got = target_logprobs(tiny_gemma, Held(), PROMPTS, TARGETS, batch_size=3)
    _close(got, [_naive(tiny_gemma, p, t) for p, t in zip(PROMPTS, TARGETS, strict=True)])
    assert [len(g) for g in got] == [len(target_ids(tiny_gemma.tokenizer, p, t)) for p, t in
                                     zip(PROMPTS, TARGETS, strict=True)]  # fmt: skip


def test_batched_logprobs_equal_a_naive_loop_with_a_prompt_hook(tiny_gemma):
    """A per-row vector at the prompt's last position (rows found by ``start``), and a prompt
    rewrite, as a method's ``hooks_for`` and ``prompts`` give them."""
    torch.manual_seed(0)
    deltas = torch.randn(len(PROMPTS), tiny_gemma.bridge.cfg.d_model) * 3

    def hooks_for(enc, start):
        n, width = enc.tokens.shape
        return [(SITE, add_at_positions(deltas[start : start + n], torch.full((n,), width - 1)))]

    held = Held(hooks_for=hooks_for, prompts=lambda texts: ["Note: " + t for t in texts])
    got = target_logprobs(tiny_gemma, held, PROMPTS, TARGETS, batch_size=2)
    want = []
    for i, (p, t) in enumerate(zip(PROMPTS, TARGETS, strict=True)):
        last = len(tiny_gemma.tokenizer("Note: " + p)["input_ids"]) - 1
        want.append(_naive(tiny_gemma, "Note: " + p, t, [(last, deltas[i])]))
    _close(got, want)
    plain = target_logprobs(tiny_gemma, Held(), ["Note: " + p for p in PROMPTS], TARGETS)
    assert all(abs(a[0] - b[0]) > 1e-3 for a, b in zip(got, plain, strict=True))  # it fired


def test_a_memory_style_hook_follows_the_forced_tokens(tiny_gemma):
    """:func:`sequence_hooks` (what a memory's hooks use) adds step ``s``'s vector while the
    tokens so far equal the stored answer: under teacher forcing the forced tokens are the
    picks it sees, so it stops exactly after the first forced token off the stored answer."""
    tok = tiny_gemma.tokenizer
    ids = [target_ids(tok, p, t) for p, t in zip(PROMPTS, TARGETS, strict=True)]
    stored = [list(ids[0]), [ids[1][0] + 1], list(ids[2][:1]) + [ids[2][1] + 1], list(ids[3])]
    torch.manual_seed(1)
    d = tiny_gemma.bridge.cfg.d_model
    vectors = [torch.randn(len(s), d) * 3 for s in stored]

    def hooks_for(enc, start):
        n = enc.tokens.shape[0]
        return sequence_hooks(SITE, vectors[start : start + n], stored[start : start + n])

    got = target_logprobs(tiny_gemma, Held(hooks_for=hooks_for), PROMPTS, TARGETS, batch_size=3)
    want = []
    for i, (p, t) in enumerate(zip(PROMPTS, TARGETS, strict=True)):
        last = len(tok(p)["input_ids"]) - 1
        adds = []
        for s in range(len(ids[i])):  # step s injects while every earlier token was stored
            if s < len(stored[i]) and ids[i][:s] == stored[i][:s]:
                adds.append((last + s, vectors[i][s]))
        want.append(_naive(tiny_gemma, p, t, adds))
    _close(got, want)


def test_in_context_prefix_gives_the_plain_values(tiny_gemma, monkeypatch):
    from analyses.edit import prefix_cache

    calls = []
    real = prefix_cache.answer_logprobs

    def counted(*args, **kwargs):
        calls.append(kwargs["prefix"])
        return real(*args, **kwargs)

    monkeypatch.setattr(prefix_cache, "answer_logprobs", counted)
    with InContext().edited(tiny_gemma, _cases()[:2], Cost()) as held:
        assert held.prefix
        cached = target_logprobs(tiny_gemma, held, PROMPTS, TARGETS, batch_size=3)
        plain = target_logprobs(tiny_gemma, Held(prompts=held.prompts), PROMPTS, TARGETS)
    assert calls == [held.prefix]  # the stated facts ran once, through the prefix cache
    _close(cached, plain)


def test_mean_logprob_is_the_per_token_mean_not_the_sum():
    assert mean_logprob([math.log(0.5), math.log(0.5)]) == pytest.approx(math.log(0.5))
    # ROME's comparison: a two-token 0.5 x 0.5 target beats a one-token 0.3 one by the mean
    # (0.5 > 0.3), though its whole-sequence probability (0.25) is lower
    s = summary([_rewrite("a", full=(math.log(0.5), math.log(0.3)))])
    assert s["es"] == 1.0 and s["em"] == pytest.approx(0.2)
    with pytest.raises(ValueError):
        mean_logprob([])


# --- ROME's scores and the greedy rates on hand-made outcomes ----------------------------------


def _rewrite(case_id, hit=True, full=None, margin=None, group="g", kind="rewrite", prompt=None):
    return Outcome(
        kind,
        case_id,
        hit,
        margin,
        prompt=prompt or f"{case_id} is in",
        group=group,
        target="New",
        versus=("New", "Old") if full else None,
        full=full,
    )


def _neighbour(case_id, prompt, hit=True, group="g", cluster=None, full=None, new="New"):
    return Outcome(
        "neighbour",
        case_id,
        hit,
        prompt=prompt,
        group=group,
        cluster=cluster or f"bystander {prompt}",
        versus=("Old", new) if full else None,
        full=full,
    )


def test_es_ps_ns_and_their_magnitudes_follow_rome():
    lg = math.log
    outs = [
        _rewrite("a", full=(lg(0.6), lg(0.2))),  # P(new) > P(true): an ES success
        _rewrite("b", full=(lg(0.1), lg(0.4))),
        _rewrite("c", full=(lg(0.3), lg(0.3))),  # a tie is not P(new) > P(true)
        _rewrite("a", kind="paraphrase", prompt="a lies in", full=(lg(0.5), lg(0.25))),
        _neighbour("a", "X is in", full=(lg(0.7), lg(0.2))),  # P(true) > P(new): an NS success
        _neighbour("a", "Y is in", full=(lg(0.1), lg(0.2))),
    ]
    s = summary(outs)
    assert s["es"] == pytest.approx(1 / 3) and s["es_n"] == 3 and s["es_clusters"] == 3
    assert s["em"] == pytest.approx((0.4 - 0.3 + 0.0) / 3)
    assert s["ps"] == 1.0 and s["pm"] == pytest.approx(0.25) and s["pm_ci"] is None
    assert s["ns"] == 0.5 and s["nm"] == pytest.approx((0.5 - 0.1) / 2)
    lo, hi = s["nm_ci"]  # two bystanders: a percentile cluster bootstrap
    assert [lo, hi] == pytest.approx(list(cluster_mean([0.5, -0.1], ["X", "Y"])[1]))
    assert s["es_ci"] == list(cluster_interval([1.0, 0.0, 0.0], ["a", "b", "c"], 2000, 0))
    assert s["rewrite_score"] is None  # no first-token margin given


def test_first_token_scores_count_positive_margins_only():
    outs = [
        _rewrite("a", margin=0.5),
        _rewrite("b", margin=0.0),  # a tie
        _rewrite("c", margin=-1.0),
        _rewrite("d"),  # no first-token score
        _neighbour("a", "X"),
    ]
    s = summary(outs)
    assert s["rewrite_score"] == pytest.approx(1 / 3) and s["rewrite_score_n"] == 3
    assert s["neighbourhood_score_n"] == 0 and s["neighbourhood_score"] is None


def test_every_kind_has_its_rate():
    outs = [
        _rewrite("a", True),
        _rewrite("a", False, kind="paraphrase", prompt="a lies in"),
        _neighbour("a", "X", True),
        Outcome("relation", "a", False, prompt="a was born in", group="g"),
        Outcome("relation", "a", True, prompt="a died in", group="g"),
        Outcome("alias", "a", True, prompt="A' is in", group="g", target="New"),
        Outcome("one_hop", "a", False, prompt="a's capital", group="g", target="Rome"),
        Outcome("unrelated", "", True, prompt="Hi", group="g"),
        Outcome("unrelated", "", False, prompt="Ho", group="g"),
        Outcome("unrelated", "", False, prompt="Ha", group="g"),
    ]
    s = summary(outs)
    assert (s["efficacy"], s["generalization"], s["specificity"]) == (1.0, 0.0, 1.0)
    assert s["relation_specificity"] == 0.5 and s["relation_specificity_n"] == 2
    assert s["relation_specificity_clusters"] == 1  # both probes are edit a's
    assert s["portability_alias"] == 1.0 and s["portability_one_hop"] == 0.0
    assert s["unrelated_changed"] == pytest.approx(1 / 3) and s["unrelated_changed_clusters"] == 3
    assert set(METRICS) <= set(s) and set(METRICS) == set(METRIC_LABELS)
    for m in METRICS:
        assert {f"{m}_ci", f"{m}_n", f"{m}_clusters"} <= set(s)
    with pytest.raises(ValueError, match="unknown probe kind"):
        summary([Outcome("nope", "a", True)])


def test_judge_relation_and_portability_kinds():
    rel = Probe("relation", "7", "Rome was founded by")
    assert judge(rel, "x", (3, 4), (3, 4), None).hit
    assert not judge(rel, "x", (3, 5), (3, 4), None).hit
    with pytest.raises(ValueError, match="unedited"):
        judge(rel, "x", (3,), None, None)
    alias = Probe("alias", "7", "The Eternal City is in", "France")
    assert judge(alias, " France, a", (1,), None, None).hit
    assert not judge(alias, " Frances", (1,), None, None).hit
    hop = Probe("one_hop", "7", "The capital of Rome's country is", "Paris")
    out = judge(hop, " Paris.", (1,), None, None)
    assert out.hit and out.target == "Paris" and out.expected == "Paris"
    assert judge(Probe("neighbour", "7", "P"), "", (1,), (2,), None).target == ""


# --- trials counted once, clusters, and the intervals worked by hand ---------------------------


def test_a_shared_neighbour_prompt_is_one_trial_per_held_state():
    same = [_neighbour(c, "Lufkin, in", cluster="bystander Lufkin") for c in "abc"]
    s = summary(same + [_neighbour("d", "Paris is in", hit=False)])
    assert s["specificity_n"] == 2 and s["specificity"] == 0.5  # not 3/4
    assert s["specificity_clusters"] == 2
    # in two groups (two held states, T < scored) the same prompt is two trials, one bystander
    twice = same[:1] + [_neighbour("b", "Lufkin, in", group="h", cluster="bystander Lufkin")]
    s = summary(twice)
    assert s["specificity_n"] == 2 and s["specificity_clusters"] == 1
    # two targets compared on one prompt are two probability trials, one greedy trial
    lg = math.log
    two = [
        _neighbour("a", "Lufkin, in", full=(lg(0.5), lg(0.1)), new="Asia"),
        _neighbour("b", "Lufkin, in", full=(lg(0.5), lg(0.6)), new="Peru"),
    ]
    s = summary(two)
    assert s["specificity_n"] == 1 and s["ns_n"] == 2 and s["ns"] == 0.5
    # the same rewrite prompt with another target is another trial
    other = Outcome("rewrite", "b", False, prompt="a is in", group="g", target="Old")
    assert summary([_rewrite("a", prompt="a is in"), other])["efficacy_n"] == 2


def test_a_trial_judged_two_ways_is_refused():
    with pytest.raises(ValueError, match="judged twice"):
        summary([_neighbour("a", "P", True), _neighbour("b", "P", False)])


def test_cluster_interval_worked_by_hand():
    # three edits, two probes each: (1, 1), (1, 0), (0, 0): icc 0.5, deff 1.5, n_eff 4
    outs = [
        _rewrite("a", True, kind="paraphrase", prompt="a1"),
        _rewrite("a", True, kind="paraphrase", prompt="a2"),
        _rewrite("b", True, kind="paraphrase", prompt="b1"),
        _rewrite("b", False, kind="paraphrase", prompt="b2"),
        _rewrite("c", False, kind="paraphrase", prompt="c1"),
        _rewrite("c", False, kind="paraphrase", prompt="c2"),
    ]
    hits, labels = [1, 1, 1, 0, 0, 0], ["a", "a", "b", "b", "c", "c"]
    assert design_effect(hits, labels) == pytest.approx(1.5)
    assert effective_n(hits, labels) == pytest.approx(4.0)
    s = summary(outs)
    assert s["generalization"] == 0.5 and s["generalization_n"] == 6
    assert s["generalization_clusters"] == 3
    lo, hi = s["generalization_ci"]
    assert [lo, hi] == list(cluster_interval(hits, [f"edit {c}" for c in labels], 2000, 0))
    wl, wh = wilson(2, 4)  # Wilson at k = 0.5 * 4 of n_eff = 4, within the hull
    assert lo <= wl and hi >= wh
    r = cluster_rate(hits, labels, 2000, 0)
    assert (r.rate, r.n, r.clusters, r.deff) == (0.5, 6, 3, pytest.approx(1.5))


@pytest.mark.parametrize("hit", [True, False])
def test_all_or_nothing_is_wilson_at_the_number_of_clusters(hit):
    # 4 distinct trials in 2 clusters, all equal: icc taken as 1, so each cluster counts once
    outs = [_rewrite(c, hit, kind="paraphrase", prompt=f"{c}{i}") for c in "ab" for i in "12"]
    s = summary(outs)
    assert s["generalization_ci"] == pytest.approx(list(wilson(2 if hit else 0, 2)))
    lo, hi = s["generalization_ci"]
    assert hi - lo > 0.5  # two edits say little, however many prompts
    # 5 edits, one prompt each: Wilson of 5/5 or 0/5 exactly
    five = summary([_rewrite(c, hit) for c in "abcde"])
    assert five["efficacy_ci"] == pytest.approx(list(wilson(5 if hit else 0, 5)))


def test_known_cf_neighbours_are_counted_by_distinct_prompt_and_bystander():
    _, eval_ = load_bundled("known-cf")
    tok = neox_tokenizer()
    for t in (807, 10):
        plan = groups(eval_, t, 50, [], 0)
        found = [p for g in plan for p in probes(tok, g) if p.kind == "neighbour"]
        outs = [
            Outcome("neighbour", p.case_id, True, prompt=p.prompt, group=p.group, cluster=p.cluster)
            for p in found
        ]
        s = summary(outs)
        # counted naively: (group, prompt) pairs; subjects by the edit's template, by hand
        assert s["specificity_n"] == len({(p.group, p.prompt) for p in found})
        subjects = set()
        for g in plan:
            for row in g.scored:
                c = g.edits[row]
                head, tail = c.prompt.split("{}")
                for n in c.neighbourhood:
                    ok = n.prompt.startswith(head) and n.prompt.endswith(tail)
                    subjects.add(
                        n.prompt[len(head) : len(n.prompt) - len(tail)] if ok else n.prompt
                    )
        assert s["specificity_clusters"] == len(subjects)
        if t == 807:  # one group: every shared prompt once (142 probes, 101 prompts, 92 subjects)
            assert s["specificity_n"] == len({p.prompt for p in found}) < len(found)


def test_bystander_reads_the_subject_off_the_template():
    case = EditCase("0", "X", "The mother tongue of {} is", "French", "Dutch")
    assert bystander(case, "The mother tongue of Jan Smit is") == "bystander Jan Smit"
    assert bystander(case, "The mother tongue of is") == "bystander The mother tongue of is"
    braces = EditCase("1", "X", "What is {{}} {}?", "a", "b")
    assert bystander(braces, "What is {} Y?") == "bystander Y"


# --- probes, score_group and the failure log on a tiny model -----------------------------------


def _cases() -> list[EditCase]:
    return [
        EditCase(
            "0",
            "Bob",
            "{} lives in",
            "New York",
            "Paris",
            paraphrases=("Bob's home is in",),
            neighbourhood=(Neighbour("Ann lives in", "Rome"), Neighbour("Eve lives in")),
            relation_probes=(Neighbour("Bob works for", "Acme"),),
            portability=(
                Portable("Robert lives in", "New York", "alias"),
                Portable("The country Bob lives in is", "USA", "one_hop"),
            ),
        ),
        EditCase(
            "1",
            "Ann",
            "{} lives in",
            "Berlin",
            "Rome",
            neighbourhood=(Neighbour("Bob lives in", "Paris"),),
        ),
    ]


def test_probes_carry_kinds_clusters_groups_and_answers():
    group = Group(tuple(_cases()), (0,), ("Once upon",), "seed 3 group 1")
    found = probes(neox_tokenizer(), group)
    assert [p.kind for p in found] == [
        "rewrite",
        "paraphrase",
        "neighbour",
        "neighbour",
        "relation",
        "alias",
        "one_hop",
        "unrelated",
    ]
    assert {p.group for p in found} == {"seed 3 group 1"}
    assert [p.cluster for p in found[:2]] == ["", ""]  # the edit's own
    assert found[2].cluster == "bystander Ann" and found[-1].cluster == "prompt Once upon"
    assert found[0].versus == ("New York", "Paris") and found[2].versus == ("Rome", "New York")
    assert found[3].versus is None and found[3].pair is None  # no known answer
    assert found[4].versus is None and found[4].want == ""
    assert (found[5].want, found[6].want) == ("New York", "USA")


def test_score_group_scores_every_probe_against_a_naive_loop(tiny_gemma):
    group = groups(_cases(), 2, 2, ["Once upon a time"], 0)[0]
    found = probes(tiny_gemma.tokenizer, group)
    steps = max_tokens(tiny_gemma.tokenizer, _cases())
    _, base = score_group(tiny_gemma, Held(), found, None, max_new_tokens=steps, batch_size=3)
    outs, _ = score_group(tiny_gemma, Held(), found, base, max_new_tokens=steps, batch_size=2)
    assert len(outs) == len(found)
    for p, o in zip(found, outs, strict=True):
        assert (o.kind, o.case_id, o.prompt, o.group) == (p.kind, p.case_id, p.prompt, p.group)
        if p.versus is None:
            assert o.full is None and o.margin is None
            continue
        better = _naive(tiny_gemma, p.prompt, p.versus[0])
        worse = _naive(tiny_gemma, p.prompt, p.versus[1])
        want = (sum(better) / len(better), sum(worse) / len(worse))
        assert o.full == pytest.approx(want, abs=1e-5)
        if p.pair:
            assert o.margin == pytest.approx(better[0] - worse[0], abs=1e-5)
    s = summary(outs)
    assert s["specificity"] == 1.0 and s["relation_specificity"] == 1.0
    assert s["unrelated_changed"] == 0.0 and (s["es_n"], s["ps_n"]) == (2, 1)
    assert s["ns_n"] == 2  # Ann's and Bob's neighbours with an answer
    # the unedited run is judged against itself and has no probabilities
    own, _ = score_group(tiny_gemma, Held(), found, None, max_new_tokens=steps, batch_size=3)
    assert all(o.full is None for o in own)


def _noisy(enc, start):
    torch.manual_seed(start)

    def hook(act, hook):
        return act + 50 * torch.randn_like(act)

    return [(SITE, hook)]


def test_failure_log_keeps_explain_verbatim_and_every_failing_trial(tiny_gemma):
    group = groups(_cases(), 2, 2, ["Once upon a time"], 0)[0]
    found = probes(tiny_gemma.tokenizer, group)
    steps = 4
    _, base = score_group(tiny_gemma, Held(), found, None, max_new_tokens=steps, batch_size=4)
    asked: list[list[str]] = []

    def explain(prompts):
        asked.append(list(prompts))
        return [
            {"entry": "0" if "Bob" in p else None, "score": 0.25 * i, "threshold": 0.5, "p": p}
            for i, p in enumerate(prompts)
        ]

    held = Held(hooks_for=_noisy, explain=explain)
    outs, _ = score_group(tiny_gemma, held, found, base, max_new_tokens=steps, batch_size=4)
    log = failure_log(outs)
    failing = [o for o in outs if o.failed]
    assert failing and len(asked) == 1  # one explain call for all failing prompts
    given = dict(zip(asked[0], explain(asked[0]), strict=True))
    assert len(log) == len({o.greedy_key for o in failing})
    for entry in log:
        assert entry["explain"] == given[entry["prompt"]]  # verbatim
    by_kind = {e["kind"]: e for e in log}
    assert by_kind["rewrite"]["expected"] in ("New York", "Berlin")
    n = next(e for e in log if e["kind"] == "neighbour")
    decode = tiny_gemma.tokenizer.decode
    assert n["expected"] == decode(list(base[n["prompt"]]), skip_special_tokens=True)
    json.dumps(log)  # JSON-ready
    cell = _cell(outs, Cost(), 2, {})
    assert cell["failures"] == log and cell["n"] == 2
    json.dumps(cell)


def test_failure_log_merges_shared_prompts_and_skips_passes():
    a = Outcome("neighbour", "0", False, output=" x", prompt="P", group="g", expected=" y",
                explain={"entry": "5", "score": 0.9, "threshold": 0.5})  # fmt: skip
    b = Outcome("neighbour", "1", False, output=" x", prompt="P", group="g", expected=" y")
    c = Outcome("unrelated", "", False, prompt="Hi", group="g")  # unchanged: passes
    d = Outcome("unrelated", "", True, output=" z", prompt="Ho", group="g", expected=" w")
    e = Outcome("rewrite", "2", True, prompt="R", group="g")
    log = failure_log([a, b, c, d, e])
    assert log == [
        {
            "kind": "neighbour",
            "case_id": "0",
            "case_ids": ["0", "1"],
            "group": "g",
            "prompt": "P",
            "expected": " y",
            "got": " x",
            "explain": {"entry": "5", "score": 0.9, "threshold": 0.5},
        },
        {
            "kind": "unrelated",
            "case_id": "",
            "case_ids": [],
            "group": "g",
            "prompt": "Ho",
            "expected": " w",
            "got": " z",
            "explain": {},
        },
    ]
    f = Outcome("rewrite", "3", False, prompt="S", full=(-1.0, -2.0))
    assert failure_log([f])[0]["mean_logprob"] == [-1.0, -2.0]


def test_trials_keep_the_first_cluster():
    a = _neighbour("0", "P", cluster="bystander A")
    b = _neighbour("1", "P", cluster="bystander B")
    assert list(trials([a, b])["specificity"].values()) == [(1.0, "bystander A")]


# --- KnowEdit ---------------------------------------------------------------------------------


def _knowedit_records():
    counterfact = {
        "subject": "Frederic Piesch",
        "prompt": "The name of the position held by Frederic Piesch is",
        "target_new": "Archbishop of León, Mexico",
        "ground_truth": "mayor of Vienna",
        "rephrase": "Frederic Piesch held the position of",
        "portability": {
            "Subject_Aliasing": [
                {
                    "prompt": "The name of the position held by Frederic of Pieschen is",
                    "ground_truth": "Archbishop of León, Mexico",
                }
            ]
        },
        "locality": {
            "Relation_Specificity": [
                {"prompt": "The gender of Frederic Piesch is", "ground_truth": "male"}
            ],
            "Forgetfulness": [
                {
                    "prompt": "The position held by Frederic Piesch, which is not the new one, is",
                    "ground_truth": "mayor of Vienna",
                }
            ],
        },
    }
    recent = {
        "subject": "Leo Arons",
        "prompt": "The place of death of Leo Arons is",
        "target_new": "Berlin",
        "portability": {
            "Logical_Generalization": [
                {"prompt": "Is Leo Arons still alive?", "ground_truth": [["no"], ["false"]]}
            ],
            "Reasoning": [
                {
                    "prompt": "The continent of the place of death of Leo Arons is",
                    "ground_truth": [["Europe", "European continent"]],
                }
            ],
            "Subject_Aliasing": [
                {
                    "prompt": "The place of death of Martin Leo Arons is",
                    "ground_truth": [["Berlin", "Berlin, Germany"]],
                }
            ],
        },
        "locality": {
            "Relation_Specificity": [
                {
                    "prompt": ["The father of Leo Arons is", "Leo Arons's father is"],
                    "ground_truth": [["Albert Arons"]],
                }
            ]
        },
    }
    zsre = {
        "subject": "Epaspidoceras",
        "target_new": "Noctuidae",
        "prompt": "Which family does Epaspidoceras belong to?",
        "ground_truth": ["Aspidoceratidae"],
        "rephrase_prompt": "What family are Epaspidoceras?",
        "locality": {
            "Relation_Specificity": [
                {"prompt": "The taxon rank of Epaspidoceras is", "ground_truth": ["genus"]}
            ]
        },
        "portability": {
            "reasoning": [
                {
                    "prompt": "What is the common name for the family Epaspidoceras belongs to?",
                    "ground_truth": "Owlet moths",
                }
            ]
        },
    }
    return [counterfact, recent, zsre]


def test_knowedit_records_become_cases(tmp_path):
    path = tmp_path / "knowedit.json"
    path.write_text(json.dumps(_knowedit_records()))
    assert detect_format(_knowedit_records()[0]) == "knowedit"
    cf, recent, zsre = load_cases(path)  # told from the keys
    assert cf == load_cases(path, "knowedit")[0]
    assert cf.case_id == "0" and cf.prompt == "The name of the position held by {} is"
    assert cf.rewrite == _knowedit_records()[0]["prompt"]
    assert (cf.target_new, cf.target_true) == ("Archbishop of León, Mexico", "mayor of Vienna")
    assert cf.paraphrases == ("Frederic Piesch held the position of",)
    assert cf.neighbourhood == ()
    assert cf.relation_probes == (
        edit_cases.Probe("The gender of Frederic Piesch is", "male"),
        edit_cases.Probe(
            "The position held by Frederic Piesch, which is not the new one, is", "mayor of Vienna"
        ),
    )
    assert cf.portability == (
        Portable(
            "The name of the position held by Frederic of Pieschen is",
            "Archbishop of León, Mexico",
            "alias",
        ),
    )
    assert recent.target_true == "" and recent.paraphrases == ()
    assert [(q.kind, q.answer) for q in recent.portability] == [
        ("alias", "Berlin"),
        ("one_hop", "Europe"),
        ("one_hop", "no"),
    ]
    assert [p.prompt for p in recent.relation_probes] == [
        "The father of Leo Arons is",
        "Leo Arons's father is",
    ]
    assert {p.answer for p in recent.relation_probes} == {"Albert Arons"}
    assert zsre.target_true == "Aspidoceratidae" and zsre.paraphrases == (
        "What family are Epaspidoceras?",
    )
    assert zsre.portability[0] == Portable(
        "What is the common name for the family Epaspidoceras belongs to?", "Owlet moths", "one_hop"
    )
    assert zsre.prompt == "Which family does {} belong to?"


def test_knowedit_cases_are_scored_with_their_new_probes(tmp_path):
    path = tmp_path / "knowedit.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _knowedit_records()))
    loaded = load_cases(path)
    tok = neox_tokenizer()
    found = probes(tok, groups(loaded, 3, 3, [], 0)[0])
    kinds = {p.kind for p in found}
    assert {"relation", "alias", "one_hop", "rewrite"} <= kinds and "neighbour" not in kinds
    recent = next(p for p in found if p.kind == "rewrite" and p.case_id == "1")
    assert recent.versus is None and recent.pair is None  # no old answer to compare
    assert max_tokens(tok, loaded) == len(tok(" Archbishop of León, Mexico")["input_ids"]) + 2
    long = EditCase(
        "9", "A", "{} is", "B", "C", portability=(Portable("A' is", "x y z w v", "alias"),)
    )
    assert max_tokens(tok, [long]) == len(tok(" x y z w v")["input_ids"]) + 2
    assert max_tokens(tok, [EditCase("8", "A", "{} is", "B", "")]) == 3  # no old answer: skipped


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda r: r.update(ground_truth=3), "field 'ground_truth' must be a string or a list"),
        (lambda r: r.update(ground_truth=[]), "field 'ground_truth' holds no non-empty answer"),
        (lambda r: r.update(ground_truth=[["a", 2]]), "field 'ground_truth[0][1]' must be a str"),
        (lambda r: r.update(subject="Nobody"), "field 'subject' 'Nobody' does not occur"),
        (lambda r: r.update(portability=[]), "field 'portability' must be an object"),
        (
            lambda r: r["locality"].update(Relation_Specificity={}),
            "field 'locality.Relation_Specificity' must be a list of objects",
        ),
        (
            lambda r: r["locality"]["Relation_Specificity"][0].pop("ground_truth"),
            "field 'locality.Relation_Specificity[0].ground_truth' is missing",
        ),
        (
            lambda r: r["portability"]["Subject_Aliasing"][0].update(prompt=[]),
            "field 'portability.Subject_Aliasing[0].prompt' is an empty list",
        ),
        (
            lambda r: r["locality"]["Forgetfulness"][0].update(prompt=5),
            "field 'locality.Forgetfulness[0].prompt' must be a string",
        ),
        (lambda r: r.update(rephrase=[""]), "field 'rephrase[0]' is an empty string"),
        (lambda r: r.pop("target_new"), "field 'target_new' is missing"),
    ],
)
def test_a_malformed_knowedit_record_gets_one_line(tmp_path, change, field):
    records = _knowedit_records()
    change(records[0])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ConfigError) as err:
        load_cases(path, "knowedit")
    message = str(err.value)
    assert f"{path}: record 0: {field}" in message and len(message.splitlines()) == 1


# --- tables -----------------------------------------------------------------------------------


def _doc(cells: dict) -> dict:
    return {"data": "x", "results": {"none": cells}}


def test_tables_label_greedy_and_full_target_columns_and_drop_absent_ones():
    ran = {
        "efficacy": 1.0,
        "efficacy_ci": [0.5, 1.0],
        "generalization": None,
        "specificity": 0.5,
        "specificity_ci": [0.1, 0.9],
        "relation_specificity": None,
        "unrelated_changed": 0.0,
        "unrelated_changed_ci": [0.0, 0.2],
        "es": 0.25,
        "es_ci": [0.05, 0.6],
        "em": -0.125,
        "em_ci": None,
        "seconds_per_edit": 0.5,
        "forward_per_edit": 1.0,
        "backward_per_edit": 0.0,
        "n": 4,
        "failures": [{"kind": "rewrite"}],
    }
    doc = _doc({"1": ran, "10": {"not_run": "too slow"}})
    assert not legacy(doc)
    head = markdown_table(doc).splitlines()[0]
    assert head == (
        "| method | T | efficacy (greedy) | specificity (greedy) | unrelated changed (greedy) "
        "| ES (full target) | s/edit | fwd/edit | bwd/edit | n |"
    )
    assert "| none | 1 | 1.000 [0.50, 1.00] | 0.500 [0.10, 0.90] |" in markdown_table(doc)
    assert columns(doc, ("efficacy", "em", "relation_specificity")) == ["efficacy", "em"]
    table = table_figure(doc).data[0]
    assert "EM (full target)" in table.header.values and "failing" in table.header.values
    assert list(table.cells.values[-1]) == ["1", "0"] and cell(ran, "em") == "-0.125"


def test_a_document_from_before_renders_its_original_table():
    old = {
        m: 0.5
        for m in (
            "efficacy",
            "generalization",
            "specificity",
            "unrelated_changed",
            "rewrite_score",
            "paraphrase_score",
            "neighbourhood_score",
        )
    }
    old.update({f"{m}_ci": [0.25, 0.75] for m in list(old)})
    old.update(seconds_per_edit=0.0, forward_per_edit=0, backward_per_edit=0, n=3)
    doc = _doc({"1": old})
    assert legacy(doc)
    assert markdown_table(doc).splitlines()[0] == (
        "| method | T | efficacy | generalization | specificity | unrelated_changed | "
        "rewrite_score | paraphrase_score | neighbourhood_score | s/edit | fwd/edit | bwd/edit "
        "| n |"
    )


# --- the new modules' examples (tests/integration/test_doctests.py lists the older ones) -------


@pytest.mark.parametrize(
    "name",
    [
        "analyses.edit.rates",
        "analyses.edit.failures",
        "analyses.edit.probability",
        "analyses.edit.plan",
        "analyses.edit.score",
        "analyses.edit.loaders",
        "analyses.edit.figures",
        "fmi.experiments.intervals",
    ],
)
def test_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
