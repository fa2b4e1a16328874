"""Analysis 4 (context probes): known answers on synthetic data and an end-to-end tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from analyses import probes, probing
from analyses.probes import compute as pr
from fmi.errors import ConfigError
from fmi.reporting.report import write_report


def _planted(n_groups: int, n_classes: int, d: int, shift: float, seed: int):
    """Each group (symbol) once per class; class k shifts dimension k by ``shift``."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_groups)
    groups = np.tile(np.arange(n_groups), n_classes)
    x = rng.normal(size=(len(y), d))
    x[np.arange(len(y)), y] += shift
    return x, y, groups


def test_wilson_interval_known_values():
    low, high = probing.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert probing.wilson_interval(0, 20)[0] == 0.0 and probing.wilson_interval(20, 20)[1] == 1.0
    with pytest.raises(ConfigError, match="correct <= n"):
        probing.wilson_interval(3, 2)


def test_binary_probe_finds_a_planted_feature_and_shuffled_sits_at_chance():
    x, y, groups = _planted(60, 2, 32, shift=4.0, seed=0)
    real = probing.probe_accuracy(x, y, groups, folds=5, seed=0)
    assert real.accuracy >= 0.95 and real.ci_low <= real.accuracy <= real.ci_high
    assert real.n == 120 and real.chance == 0.5
    # one shuffle can land a few standard errors off (it partly correlates with the planted
    # labels); the mean over seeds must sit at chance
    ctrl = [probing.shuffled_accuracy(x, y, groups, folds=5, seed=s).accuracy for s in range(5)]
    assert abs(np.mean(ctrl) - 0.5) <= 0.1 and all(abs(a - 0.5) <= 0.2 for a in ctrl)
    # tensors work the same as arrays
    same = probing.probe_accuracy(torch.tensor(x), y, groups, folds=5, seed=0)
    assert same.accuracy == pytest.approx(real.accuracy, abs=0.02)


def test_six_way_probe_and_noise():
    x, y, groups = _planted(40, 6, 24, shift=5.0, seed=1)
    real = probing.probe_accuracy(x, y, groups, folds=5, seed=0)
    assert real.accuracy >= 0.95
    ctrl = [probing.shuffled_accuracy(x, y, groups, folds=5, seed=s).accuracy for s in range(5)]
    assert abs(np.mean(ctrl) - 1 / 6) <= 0.06 and all(abs(a - 1 / 6) <= 0.12 for a in ctrl)
    noise = np.random.default_rng(2).normal(size=x.shape)
    assert abs(probing.probe_accuracy(noise, y, groups, folds=5, seed=0).accuracy - 1 / 6) <= 0.12


def test_grouped_folds_prevent_symbol_leakage():
    """Features = symbol identity only: grouped CV cannot use it, so A/B sits at chance."""
    rng = np.random.default_rng(3)
    words = rng.normal(size=(30, 16))
    groups = np.tile(np.arange(30), 2)
    y = np.repeat([0, 1], 30)
    # class 0 and class 1 share each symbol's vector exactly: nothing separates them
    res = probing.probe_accuracy(words[groups], y, groups, folds=5, seed=0)
    assert res.accuracy == pytest.approx(0.5, abs=0.1)


def test_probe_accuracy_rejects_bad_input():
    x, y, groups = _planted(3, 2, 4, shift=1.0, seed=0)
    with pytest.raises(ConfigError, match="at least 5 groups"):
        probing.probe_accuracy(x, y, groups, folds=5, seed=0)
    with pytest.raises(ConfigError, match="labels"):
        probing.probe_accuracy(x, y[:-1], groups, folds=2, seed=0)
    with pytest.raises(ConfigError, match="two classes"):
        probing.probe_accuracy(x, np.zeros_like(y), groups, folds=2, seed=0)


def test_auc_matches_sklearn_and_bootstrap_matches_a_loop():
    rng = np.random.default_rng(4)
    scores = np.round(rng.normal(size=50), 1)  # ties included
    y = (rng.random(50) < 0.4).astype(int)
    assert probing.auc(scores, y) == pytest.approx(roc_auc_score(y, scores))
    boots = probing.bootstrap_auc(scores, y, seed=0, n_boot=20)
    # the same resamples, one by one
    rng2 = np.random.default_rng(0)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    p, q = rng2.choice(pos, (20, len(pos))), rng2.choice(neg, (20, len(neg)))
    loop = [
        roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], scores[np.r_[p[b], q[b]]])
        for b in range(20)
    ]
    np.testing.assert_allclose(boots, loop)


def test_transfer_along_a_shared_direction():
    """A/B and C/D differ along the same dimension (C/D elsewhere too): high AUC, and the
    mapping A->C holds; a flipped pair keeps the AUC but loses the mapped accuracy."""
    rng = np.random.default_rng(5)
    n, d = 60, 32
    y_train = np.repeat([0, 1], n)
    x_train = rng.normal(size=(2 * n, d))
    x_train[:, 0] += 5 * y_train
    y_test = np.repeat([0, 1], n)
    x_test = rng.normal(size=(2 * n, d)) + 2.0  # offset: a different context family
    x_test[:, 0] += 5 * y_test
    res = probing.probe_transfer(x_train, y_train, x_test, y_test, seed=0)
    assert res.auc >= 0.95 and res.auc_low <= res.auc <= res.auc_high
    assert 0.7 <= res.ci_low <= res.accuracy <= res.ci_high <= 1
    flipped = probing.probe_transfer(x_train, y_train, x_test, 1 - y_test, seed=0)
    assert flipped.auc == pytest.approx(res.auc) and flipped.accuracy <= 0.5
    assert flipped.auc_low <= flipped.auc <= flipped.auc_high
    ctrl = probing.shuffled_transfer(x_train, y_train, x_test, y_test, seed=0)
    assert ctrl.auc < 0.8
    # an orthogonal difference does not transfer
    x_other = rng.normal(size=(2 * n, d))
    x_other[:, 1] += 3 * y_test
    assert probing.probe_transfer(x_train, y_train, x_other, y_test, seed=0).auc < 0.8


def test_positions_point_at_the_context_and_symbol_tokens(quick_setup):
    tok = quick_setup.model.tokenizer
    split = quick_setup.task.split("new_lab")
    b = split.bindings[0]
    text, (ctx, sym, last) = pr.probe_positions(tok, split.templates, b)
    assert text == split.templates.prompt("read", b)
    ids = tok(text)["input_ids"]
    assert last == len(ids) - 1
    assert tok.decode(ids[: ctx + 1]).endswith(b.read_context)  # "... lab north"
    assert b.read_context.endswith(tok.decode(ids[ctx]).strip())
    assert tok.decode(ids[: sym + 1]).endswith(b.symbol)
    assert b.symbol.endswith(tok.decode(ids[sym]).strip())
    assert ctx < sym < last


def test_probes_report_end_to_end(quick_setup, tmp_path):
    rep = probes.report(quick_setup, progress=False)
    path = write_report(rep, tmp_path)
    assert path.exists() and (tmp_path / "plotly.min.js").exists()
    d = json.loads((tmp_path / "probes.json").read_text())["data"]
    n_sites = quick_setup.n_layers + 1
    assert d["sites"][0] == "blocks.0.hook_resid_pre" and len(d["sites"]) == n_sites
    assert d["positions"] == list(pr.POSITIONS) and len(d["contexts"]) == 6
    assert d["n_per_context"] >= quick_setup.cfg.probe_folds
    grids = [d["ab"][v] for v in pr.VARIANTS] + [d["six"][v] for v in pr.VARIANTS]
    grids += [d["transfer"][p][v] for p in pr.TRANSFER_PAIRS for v in pr.VARIANTS]
    for g in grids:
        acc, low, high = (np.array(g[f]) for f in ("accuracy", "ci_low", "ci_high"))
        assert acc.shape == (n_sites, 3)
        assert ((low >= 0) & (low <= acc + 1e-9) & (acc <= high + 1e-9) & (high <= 1)).all()
        if "auc" in g:
            auc, a_lo, a_hi = (np.array(g[f]) for f in ("auc", "auc_low", "auc_high"))
            assert auc.shape == (n_sites, 3) and (auc >= 0.5).all() and (auc <= 1).all()
            assert ((a_lo <= auc + 1e-9) & (auc <= a_hi + 1e-9)).all()
    # at the embeddings the symbol and last tokens are the same in game A and game B
    ab = np.array(d["ab"]["probe"]["accuracy"])
    assert ab[0, 1] == pytest.approx(0.5) and ab[0, 2] == pytest.approx(0.5)
    assert ab[0, 0] == pytest.approx(1.0)  # the context token itself: " A" vs " B"
    assert len(rep.panels) == 3 and all(p.caption for p in rep.panels)
    assert rep.finding and "\n" not in rep.finding
    html = path.read_text()
    assert "https://" not in html and "<script src='plotly.min.js'>" in html
