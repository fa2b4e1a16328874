"""Analysis 2 (injection- and key-layer sweeps): sites, known answers, and an end-to-end run."""

from __future__ import annotations

import json

import torch

from analyses import layer_sweep
from analyses.layer_sweep import compute as ls
from fmi.core.prompts import encode
from fmi.core.sites import UNEMBED_IN
from fmi.experiments.queries import build_queries, unique_bindings
from fmi.memory.entry import CONTEXT_ROLE, SYMBOL_ROLE
from fmi.memory.keys import maxsim_loop
from fmi.memory.retrieve import dual_key_scores, token_channels
from fmi.reporting.report import write_report


def test_sweep_sites_cover_every_distinct_point(tiny_gemma):
    sites = ls.sweep_sites(2)
    assert sites == [
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_pre",
        "blocks.1.hook_resid_post",
        UNEMBED_IN,
    ]
    # resid_post L is the same tensor as resid_pre L+1, which is why it is not swept twice
    enc = encode(tiny_gemma.tokenizer, ["In game A, blicket means"])
    _, cache = tiny_gemma.bridge.run_with_cache(enc.tokens, attention_mask=enc.mask)
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"])


def test_dual_key_channels_match_the_naive_loop():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(7, 6, generator=g)
    owner = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    role = torch.tensor(
        [
            SYMBOL_ROLE,
            CONTEXT_ROLE,
            CONTEXT_ROLE,
            SYMBOL_ROLE,
            CONTEXT_ROLE,
            SYMBOL_ROLE,
            CONTEXT_ROLE,
        ]
    )
    queries = [torch.randn(n, 6, generator=g) for n in (3, 5)]
    q = torch.zeros(2, 5, 6)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    for i, x in enumerate(queries):
        q[i, : len(x)], mask[i, : len(x)] = x, True
    got = dual_key_scores(*token_channels(q, mask, keys, owner, role, 3))
    sym = maxsim_loop(queries, keys[role == SYMBOL_ROLE], owner[role == SYMBOL_ROLE], 3)
    ctx = maxsim_loop(queries, keys[role == CONTEXT_ROLE], owner[role == CONTEXT_ROLE], 3)
    torch.testing.assert_close(got, sym.clamp_min(0) * ctx.clamp_min(0), atol=1e-5, rtol=1e-5)


def test_oracle_entries(quick_setup):
    split = quick_setup.task.split("same")
    entries = unique_bindings(split.bindings)
    qs = build_queries(split, entries)
    oracle = ls.oracle_entries(qs, entries)
    for q, kind in enumerate(qs.kinds):
        if kind in ("write", "read"):
            assert oracle[q] == qs.entry[q]
        elif kind == "plain":
            assert entries[oracle[q]].symbol == qs.symbol[q]
        else:
            assert 0 <= oracle[q] < len(entries)


def test_layer_sweep_report_end_to_end(quick_setup, tmp_path):
    rep = layer_sweep.report(quick_setup, progress=False)
    write_report(rep, tmp_path)
    d = json.loads((tmp_path / "layer_sweep.json").read_text())["data"]
    n_sites = quick_setup.n_layers + 2
    assert len(d["sites"]) == n_sites and len(d["site_norms"]) == n_sites
    assert all(n > 0 for n in d["site_norms"])
    for r in ls.RETRIEVALS:
        for m in ls.METRICS:
            grid = d["rates"][r][m]
            assert len(grid) == n_sites and all(len(row) == len(d["alphas"]) for row in grid)
            assert all(0 <= v <= 1 for row in grid for v in row)
    for rule in ("dual_key", "raw_symbol"):
        for split in ls.KEY_SPLITS:
            values = d["key_retrieval"][rule][split]
            assert len(values) == quick_setup.n_layers and all(0 <= v <= 1 for v in values)
    assert len(rep.panels) == 3 and "\n" not in rep.finding


def test_zero_alpha_limit_changes_nothing(quick_setup):
    """A vanishing injection leaves every output as the memory-free one (the sweep's baseline)."""
    from dataclasses import replace

    setup = replace(quick_setup, cfg=replace(quick_setup.cfg, alphas=(1e-9,)))
    sweep = ls.injection_sweep(setup, progress=False)
    for r in ls.RETRIEVALS:
        assert all(v == 0.0 for row in sweep["rates"][r]["unrelated_changed"] for v in row)
