"""Analysis 3 (correction vs steering vectors): known answers and an end-to-end tiny run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from analyses import correction_vs_steering
from analyses.correction_vs_steering import compute as st
from analyses.correction_vs_steering import vector_math as vm
from fmi.core.sites import UNEMBED_IN
from fmi.reporting.report import write_report


def test_cosine_known_answers():
    v = torch.tensor([3.0, 4.0, 0.0])
    assert float(vm.cosine(v, v)) == pytest.approx(1.0)
    assert float(vm.cosine(v, -2 * v)) == pytest.approx(-1.0)
    assert float(vm.cosine(v, torch.tensor([-4.0, 3.0, 7.0]))) == pytest.approx(0.0, abs=1e-7)
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    assert float(vm.cosine(a, b)) == pytest.approx(1 / math.sqrt(2))
    assert float(vm.cosine(torch.zeros(3), v)) == 0.0
    # broadcasting: [k, s, d] against [k, 1, d], and every vector with itself
    x = torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(0)) * 1e3
    got = vm.cosine(x, x[:, :1])
    assert got.shape == (4, 5)
    torch.testing.assert_close(got[:, 0], torch.ones(4))
    assert ((got >= -1) & (got <= 1)).all()
    torch.testing.assert_close(vm.cosine(x, x), torch.ones(4, 5))


def test_lens_top_known_answer():
    w_u = torch.eye(4, 6)  # token j < 4 is dimension j; tokens 4, 5 never score
    w_u[:, 5] = torch.tensor([0.0, 0.0, 0.5, 0.5])
    vectors = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    top, rank = vm.lens_top(vectors, w_u, torch.tensor([3, 5]), k=3)
    assert top[0].tolist() == [2, 5, 3]  # 2.0, 1.5, 1.0
    assert rank.tolist() == [2, 1]  # token 3 after 2 and 5; token 5 (0.0) after token 0 only


def test_through_final_norm_is_gemmas_scaled_rmsnorm(tiny_gemma):
    bridge = tiny_gemma.bridge
    w = bridge.ln_final.original_component.weight.detach()
    v = torch.randn(3, 2, bridge.cfg.d_model, generator=torch.Generator().manual_seed(1))
    got = vm.through_final_norm(bridge, v)
    assert got.shape == v.shape
    torch.testing.assert_close(vm.cosine(got, v * (1 + w)), torch.ones(3, 2))
    torch.testing.assert_close(vm.through_final_norm(bridge, 7 * v), got, atol=1e-4, rtol=1e-4)


def test_rate_ci_and_sites():
    rate, low, high = vm.rate_ci(torch.tensor([True, True, False, False]))
    assert rate == 0.5 and 0 < low < 0.5 < high < 1
    assert all(math.isnan(x) for x in vm.rate_ci(torch.tensor([], dtype=torch.bool)))
    assert st.vector_sites(2) == [
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
        UNEMBED_IN,
    ]
    assert st.inject_sites(18) == [
        "blocks.8.hook_resid_post",
        "blocks.17.hook_resid_post",
        UNEMBED_IN,
    ]
    assert [st.site_label(s) for s in st.vector_sites(2)] == ["embed", "L0", "L1", "ln_final"]


def test_eval_prompts_inject_known_labels(quick_setup):
    split = quick_setup.task.split(st.SPLIT)
    labels = list(split.labels())
    texts, kinds, idx = st.eval_prompts(quick_setup, labels)
    assert len(texts) == len(kinds) == len(idx)
    reads = [i for i, k in enumerate(kinds) if k == "read"]
    read_label = {split.templates.prompt("read", b): b.label for b in split.bindings}
    assert all(labels[idx[i]] == read_label[texts[i]] for i in reads)
    assert kinds.count("plain") == len(split.symbols())
    assert kinds.count("unrelated") == min(len(split.unrelated), st.MAX_PROMPTS)


def test_steering_report_end_to_end(quick_setup, tmp_path):
    rep = correction_vs_steering.report(quick_setup, progress=False)
    path = write_report(rep, tmp_path)
    assert path.exists() and (tmp_path / "plotly.min.js").exists()
    doc = json.loads((tmp_path / "steering.json").read_text())
    d = doc["data"]
    n_labels, n_sites = len(d["labels"]), quick_setup.n_layers + 2
    assert n_labels >= 2 and d["sites"] == st.vector_sites(quick_setup.n_layers)
    assert set(d["labels"]) | set(d["skipped_labels"]) == set(
        quick_setup.task.split(st.SPLIT).labels()
    )
    for ref in st.REFERENCES:
        c = np.array(d["cosines"][ref])
        assert c.shape == (n_labels, n_sites, len(st.METHODS))
        assert ((c >= -1) & (c <= 1)).all()
        # at ln_final the "normed" variants are the raw vectors
        np.testing.assert_allclose(c[:, -1, 0], c[:, -1, 2], atol=1e-4)
    for per_label in (d["correction_vs_wu"], *d["individual_vs_wu"], *d["individual_vs_mean"]):
        assert all(-1 <= x <= 1 for x in np.atleast_1d(per_label))
    assert [len(v) for v in d["individual_vs_mean"]] == d["n_statements"]
    assert len(d["lens"]) == n_labels and all(len(r) == len(d["lens_vectors"]) for r in d["lens"])
    for row in d["lens"]:
        for cell in row:
            assert len(cell["top"]) == st.LENS_K
            assert cell["label_in_top"] == (cell["label_rank"] < st.LENS_K)
    # a label's own W_U column through W_U: the tiny model's tied embeddings make it rank first
    wu = d["lens_vectors"].index("W_U column")
    assert all(row[wu]["label_in_top"] for row in d["lens"])
    n_inject = len(d["inject_sites"])
    assert d["inject_sites"][-1] == UNEMBED_IN and len(d["inject_norms"]) == n_inject
    for metric in st.RATE_METRICS:
        g = {f: np.array(v) for f, v in d["rates"][metric].items()}
        assert g["rate"].shape == (n_inject, len(st.INJECT_METHODS))
        assert ((g["ci_low"] >= 0) & (g["ci_low"] <= g["rate"] + 1e-9)).all()
        assert ((g["rate"] <= g["ci_high"] + 1e-9) & (g["ci_high"] <= 1)).all()
    # "none" injects nothing: the same at every site
    for metric in st.RATE_METRICS:
        assert len({row[0] for row in d["rates"][metric]["rate"]}) == 1
    assert d["n_prompts"]["read"] > 0 and d["rho"] == quick_setup.fitted.rho
    assert len(rep.panels) == 5 and all(p.caption for p in rep.panels)
    assert rep.finding and "\n" not in rep.finding
    html = path.read_text()
    assert "https://" not in html and "<script src='plotly.min.js'>" in html
