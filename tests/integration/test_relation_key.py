"""Known-answer tests of the relation-key study (analyses/edit/relation_key.py)."""

from __future__ import annotations

import pytest
import torch

from analyses.edit import relation_key as rk
from analyses.edit.cases import EditCase, Probe

CASES = [
    EditCase(
        "0",
        "Windows 7",
        "{} was made by",
        "Apple",
        "Microsoft",
        paraphrases=("Windows 7 is a product of",),
        neighbourhood=(Probe("Linux was made by", "Linus"),),
        relation_probes=(Probe("Windows 7 was released in", "2009"),),
    ),
    EditCase("1", "Windows XP", "{} was made by", "IBM", "Microsoft"),
]


def test_terms_and_design_are_the_products_asked_for():
    assert rk.terms_of("symbol*context,subject*relation") == (
        ("symbol",),
        ("context",),
        ("symbol", "context"),
        ("subject",),
        ("relation",),
        ("subject", "relation"),
    )
    assert rk.terms_of("relation+symbol") == (("relation",), ("symbol",))
    with pytest.raises(ValueError, match="unknown feature"):
        rk.terms_of("subject*kind")
    feats = torch.tensor([[[2.0, 3.0, 5.0, 7.0]]])
    got = rk.design(feats, rk.terms_of("subject*relation,symbol"))
    assert got[0, 0].tolist() == [5.0, 7.0, 35.0, 2.0]


def test_queries_and_who_states_them():
    qs = rk.queries(CASES, ["Hello there"], per_kind=2)
    assert [(q.kind, q.prompt, q.case) for q in qs] == [
        ("rewrite", "Windows 7 was made by", 0),
        ("paraphrase", "Windows 7 is a product of", 0),
        ("neighbourhood", "Linux was made by", 0),
        ("relation", "Windows 7 was released in", 0),
        ("look_alike", "Windows XP was made by", 0),
        ("rewrite", "Windows XP was made by", 1),
        ("look_alike", "Windows 7 was made by", 1),
        ("generic", "Hello there", -1),
    ]
    stated = rk.stated_by(CASES, qs)
    # a look-alike prompt that is another edit's own rewrite is stated by that edit
    assert stated.tolist() == [
        [True, False],
        [True, False],
        [False, False],
        [False, False],
        [False, True],
        [False, True],
        [True, False],
        [False, False],
    ]


def test_rates_on_hand_made_scores():
    """score = sigmoid(relation), threshold 0.6: the rewrite fires its entry, the paraphrase
    fires the other one, the generic prompt stays below, the neighbour fires an entry."""
    rule = rk.Rule((("relation",),), (1.0, 0.0), 0.6)
    rel = torch.tensor([[2.0, 0.0], [1.0, 0.5], [0.0, -1.0], [0.1, 3.0]])
    feats = torch.zeros(4, 2, 4)
    feats[..., 3] = rel
    stated = torch.tensor([[True, False], [False, True], [False, False], [False, False]])
    kinds = ["rewrite", "paraphrase", "generic", "neighbourhood"]
    got = rk.rates(rule, feats, stated, kinds)
    assert {k: v[0] for k, v in got.items()} == {
        "rewrite": 1.0,
        "paraphrase": 0.0,
        "neighbourhood": 0.0,
        "generic": 1.0,
    }
    assert all(v[3] == 1 and v[1] <= v[0] <= v[2] and v[1] < v[2] for v in got.values())


def test_fit_rule_separates_separable_pairs_and_leaves_out_what_it_must():
    """Relation 1 on stated pairs and 0 elsewhere: the fitted rule fires right on every
    positive and on no negative. Without ``contrastive`` the relation queries (here the only
    ones with a tempting score) leave the fit: its threshold then sits lower."""
    q, n = 6, 3
    feats = torch.zeros(q, n, 4)
    stated = torch.zeros(q, n, dtype=torch.bool)
    for i in range(3):
        stated[i, i] = True
        feats[i, i, 3] = 1.0
    feats[3, 0, 3], feats[4, 1, 3] = 0.8, 0.9  # relation probes close to their subject's entry
    kinds = ["rewrite", "rewrite", "paraphrase", "relation", "relation", "generic"]
    rule = rk.fit_rule(feats, stated, kinds, rk.terms_of("relation"), contrastive=True)
    got = rk.rates(rule, feats, stated, kinds)
    assert {k: v[0] for k, v in got.items()} == {
        "rewrite": 1.0,
        "paraphrase": 1.0,
        "relation": 1.0,
        "generic": 1.0,
    }
    plain = rk.fit_rule(feats, stated, kinds, rk.terms_of("relation"), contrastive=False)
    assert plain.threshold < rule.threshold


def test_features_match_a_naive_loop(tiny_gemma):
    sites = rk.Sites(token=0, subject=1, relation=(1,))
    qs = rk.queries(CASES, ["Hello there"], per_kind=2)
    states = rk.read_states(tiny_gemma, [q.prompt for q in qs], sites)
    entries = rk.read_states(tiny_gemma, [c.rewrite for c in CASES], sites)
    stds = rk.standardizers(states)
    got = rk.features(tiny_gemma, CASES, qs, states, stds, sites, 1, entries)
    subj, rest = rk._subject_rows(tiny_gemma, CASES)
    t, u = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"
    cos = torch.nn.functional.cosine_similarity

    def s(site, x):
        return stds[site](x.float())

    for qi in range(len(qs)):
        for e in range(len(CASES)):
            qt, et = s(t, states.acts[t][qi]), s(t, entries.acts[t][e])
            want = []
            for rows in (subj[e], rest[e]):
                want.append(
                    sum(max(float(cos(et[r], x, dim=0)) for x in qt) for r in rows) / len(rows)
                )
            qu, eu = s(u, states.acts[u][qi]), s(u, entries.acts[u][e])
            want.append(max(float(cos(eu[subj[e][-1]], x, dim=0)) for x in qu))
            want.append(float(cos(qu[-1], eu[-1], dim=0)))
            assert got[qi, e].tolist() == pytest.approx(want, abs=1e-5)
    # the subject rows are the subject's tokens: "Windows 7" is more than one token here
    assert len(subj[0]) >= 1 and len(subj[0]) + len(rest[0]) == len(entries.acts[t][0])


def test_relation_space_puts_one_relation_together():
    """Two relations apart along one axis and noisy in the others: in the LDA space (one
    direction for two labels) rows of one relation share a sign, the other's the opposite."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    labels = ["capital"] * 20 + ["language"] * 20
    x[:20, 0] += 6.0
    space = rk.relation_space(x, labels)
    assert tuple(space.directions.shape) == (5, 1)
    z = space(x)[:, 0]
    assert bool((z[:20].sign() == z[0].sign()).all()) and bool((z[20:].sign() != z[0].sign()).all())


def test_relation_bank_is_known_cf_training_only_and_disjoint():
    from analyses.edit.bundled.files import load_bundled
    from fmi.memory.relation_train import look_alikes, relation_bank

    bank = relation_bank()
    train, evals = load_bundled("known-cf")
    assert bank.statements == [c.rewrite for c in train]
    assert bank.answers == [" " + c.target_new.strip() for c in train]
    assert len(bank.positives) == len(bank.owners)
    for p, o in zip(bank.positives, bank.owners, strict=True):
        assert p in (train[o].rewrite, *train[o].paraphrases)
    assert not set(bank.negatives) & set(bank.positives)
    assert len(set(bank.negatives)) == len(bank.negatives)
    eval_prompts = {p for c in evals for p in (c.rewrite, *c.paraphrases)}
    assert not eval_prompts & set(bank.positives)
    relation = {r.prompt for c in train for r in c.relation_probes}
    assert relation & set(bank.negatives)  # the subject's other relations are negatives
    pool = ["Windows XP", "Windows 7", "Windows 10", "Kenya"]
    assert look_alikes(["Windows 7", "Kenya"], pool, 2) == [["Windows 10", "Windows XP"], []]
