"""The relation-geometry analysis: known-answer checks of its pieces and an end-to-end run on a
tiny model."""

from __future__ import annotations

import json
import random

import torch

from analyses import relation_geometry
from analyses.edit.cases import EditCase, Probe
from analyses.relation_geometry import compute as rg
from fmi.reporting.report import write_report


def test_pair_cosines_match_a_loop():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(7, 5, generator=gen)
    pairs = [rg.Pair(0, "paraphrase", a, b) for a, b in ((0, 1), (2, 6), (3, 3), (5, 4))]
    want = [
        float(torch.dot(v[a], v[b]) / (v[a].norm() * v[b].norm()))
        for a, b in ((0, 1), (2, 6), (3, 3), (5, 4))
    ]
    torch.testing.assert_close(rg.pair_cosines(v, pairs), torch.tensor(want))


def test_separation_is_the_share_of_pairs_ranked_right():
    rng = random.Random(0)
    cos = torch.tensor([round(rng.random(), 1) for _ in range(30)])  # ties included
    kinds = [rng.choice(rg.KINDS) for _ in range(30)]
    for neg in rg.NEGATIVES:
        pos = [float(c) for c, k in zip(cos, kinds, strict=True) if k == "paraphrase"]
        bad = [float(c) for c, k in zip(cos, kinds, strict=True) if k == neg]
        wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in bad)
        got, lo, hi = rg.separation(cos, kinds, neg, seed=0)
        assert abs(got - wins / (len(pos) * len(bad))) < 1e-12
        assert lo <= got <= hi and lo < hi


def test_prompt_set_pairs_each_kind_and_drops_prompts_without_their_subject():
    cases = [
        EditCase(
            "0",
            "Kenya",
            "The capital of {} is",
            "Delhi",
            "Nairobi",
            paraphrases=("Kenya's capital city is", "The capital city of Kenya is", "x"),
            relation_probes=(
                Probe("The official language of Kenya is", " English"),
                Probe("It is spoken there", " Swahili"),
            ),
        ),
        EditCase("1", "Kenya Airways", "{} is based in", "Paris", "Nairobi"),
    ]
    ps = rg.prompt_set(cases, per_kind=2)
    got = [(p.case, p.kind, ps.prompts[p.anchor], ps.prompts[p.other]) for p in ps.pairs]
    assert got == [
        (0, "paraphrase", "The capital of Kenya is", "Kenya's capital city is"),
        (0, "paraphrase", "The capital of Kenya is", "The capital city of Kenya is"),
        (0, "other_relation", "The capital of Kenya is", "The official language of Kenya is"),
        (0, "look_alike", "The capital of Kenya is", "The capital of Kenya Airways is"),
        (1, "look_alike", "Kenya Airways is based in", "Kenya is based in"),
    ]
    # the look-alike prompt names the other subject, and its subject row is that name's
    assert ps.subjects[ps.prompts.index("The capital of Kenya Airways is")] == "Kenya Airways"


def test_site_rows_point_at_the_subjects_last_token(tiny_gemma):
    tok = tiny_gemma.tokenizer
    prompts = ["The capital of Kenya Airways is", "Kenya is based in"]
    rows = rg.site_rows(tok, prompts, ["Kenya Airways", "Kenya"])
    assert rows["prompt_last"] == [-1, -1]
    for text, at, subject in zip(
        prompts, rows["subject_last"], ["Kenya Airways", "Kenya"], strict=True
    ):
        ids = tok(text)["input_ids"]
        assert tok.decode(ids[: at + 1]).endswith(subject)
        assert not tok.decode(ids[:at]).endswith(subject)


def test_relation_geometry_report_end_to_end(quick_setup, tmp_path):
    rep = relation_geometry.report(quick_setup, progress=False)
    path = write_report(rep, tmp_path)
    d = json.loads((tmp_path / "relation_geometry.json").read_text())["data"]
    n_layers = quick_setup.model.bridge.cfg.n_layers
    assert d["layers"] == [*quick_setup.key_layers(), n_layers]  # the last: the final norm
    assert d["edits"] == rg.MAX_CASES and all(d["counts"][k] > 0 for k in rg.KINDS)
    for site in rg.SITES:
        for neg in rg.NEGATIVES:
            rows = d["auc"][site][neg]
            assert len(rows) == len(d["layers"])
            assert all(0 <= lo <= a <= hi <= 1 for a, lo, hi in rows)
        assert all(0 <= lo <= a <= hi <= 1 for a, lo, hi in d["probe"][site])
    paraphrases = d["counts"]["paraphrase"] / sum(d["counts"].values())
    assert d["probe_chance"] == max(paraphrases, 1 - paraphrases)
    assert d["best"]["site"] in rg.SITES and d["best"]["layer"] in d["layers"]
    assert sum(len(v) for v in d["best"]["cosines"].values()) == sum(d["counts"].values())
    assert len(rep.panels) == 3 and rep.finding and "\n" not in rep.finding
    assert "https://" not in path.read_text()
