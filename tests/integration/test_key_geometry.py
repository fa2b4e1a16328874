"""Analysis 1 (key geometry): known-answer checks and an end-to-end run on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import torch

from analyses import key_geometry
from analyses.key_geometry import compute as kg
from fmi.reporting.report import write_report


def _nearest_loop(queries, keys, query_ids, key_ids):
    sym, bind = [], []
    for q in range(len(queries)):
        cos = [float(torch.cosine_similarity(queries[q], keys[k], dim=0)) for k in range(len(keys))]
        k = int(np.argmax(cos))
        sym.append(query_ids[q][1] == key_ids[k][1])
        bind.append(query_ids[q] == key_ids[k])
    return float(np.mean(sym)), float(np.mean(bind))


def test_nearest_accuracy_matches_loop_and_known_answers():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(6, 8, generator=g)
    key_ids = [(c, s) for c in ("A", "B") for s in ("x", "y", "z")]
    # queries: exact copies of the keys -> perfect; one query moved onto the other context's key
    queries = keys.clone()
    queries[0] = keys[3] + 1e-3  # asks for (A, x), lands on (B, x): right symbol, wrong binding
    assert kg.nearest_accuracy(queries, keys, key_ids, key_ids) == (1.0, 5 / 6)
    noisy = torch.randn(20, 8, generator=g)
    ids = [key_ids[i % 6] for i in range(20)]
    assert kg.nearest_accuracy(noisy, keys, ids, key_ids) == _nearest_loop(
        noisy, keys, ids, key_ids
    )


def test_context_silhouette_separated_vs_mixed():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(30, 5, generator=g) * 0.05 + torch.tensor([5.0, 0, 0, 0, 0])
    b = torch.randn(30, 5, generator=g) * 0.05 + torch.tensor([0, 5.0, 0, 0, 0])
    contexts = ["A"] * 30 + ["B"] * 30
    assert kg.context_silhouette(torch.cat([a, b]), contexts) > 0.9
    mixed = torch.randn(60, 5, generator=g)
    assert abs(kg.context_silhouette(mixed, contexts)) < 0.1
    assert np.isnan(kg.context_silhouette(a, ["A"] * 30))


def test_symbol_keys_sit_at_the_symbol_token(quick_setup):
    split = quick_setup.task.split("same")
    ks = kg.symbol_keys(quick_setup, split, [0])
    tok = quick_setup.model.tokenizer
    b = split.bindings[0]
    text = split.templates.prompt("read", b)
    from fmi.core.forward import collect
    from fmi.core.sites import resid

    got = collect(quick_setup.model.bridge, tok, [text], [resid(0)])
    ids = tok(text)["input_ids"]
    rows = [i for i, r in enumerate(ks.role) if r == "read"]
    key = ks.keys[0][rows[0]]
    matches = [i for i in range(len(ids)) if torch.allclose(got.acts[resid(0)][0][i], key)]
    assert len(matches) == 1
    assert tok.decode(ids[: matches[0] + 1]).endswith(b.symbol)


def test_key_geometry_report_end_to_end(quick_setup, tmp_path):
    rep = key_geometry.report(quick_setup, progress=False)
    path = write_report(rep, tmp_path)
    assert path.exists() and (tmp_path / "plotly.min.js").exists()
    doc = json.loads((tmp_path / "key_geometry.json").read_text())
    d = doc["data"]
    n_layers = quick_setup.n_layers
    assert d["layers"] == list(range(n_layers))
    for kind in kg.KINDS:
        for split in kg.SPLITS:
            for what in ("symbol", "binding"):
                values = d["retrieval"][kind][split][what]
                assert len(values) == n_layers and all(0 <= v <= 1 for v in values)
            # the right binding implies the right symbol
            pairs = zip(
                d["retrieval"][kind][split]["binding"],
                d["retrieval"][kind][split]["symbol"],
                strict=True,
            )
            assert all(b <= s for b, s in pairs)
            assert all(-1 <= v <= 1 for v in d["silhouette"][kind][split])
        m = d["cosine"][kind]["matrix"]
        assert len(m) == len(d["cosine"][kind]["rows"])
        assert all(-1.0001 <= v <= 1.0001 for row in m for v in row)
        assert len(d["pca"][kind]["x"]) == len(d["pca"][kind]["context"])
    assert len(rep.panels) == 4 and all(p.caption for p in rep.panels)
    assert rep.finding and "\n" not in rep.finding
    html = path.read_text()
    assert "https://" not in html and "<script src='plotly.min.js'>" in html
