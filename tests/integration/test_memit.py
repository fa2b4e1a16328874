"""MEMIT and AlphaEdit (analyses.edit.memit): the closed forms against naive ones and their
defining properties on hand-made matrices, the reads between writes, and the methods' writes
and exact undo on the tiny random models."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from helpers import no_hooks, weights_digest

from analyses.capacity.lora.adapter import lora_targets
from analyses.edit.cases import EditCase
from analyses.edit.memit.config import PAPER_VS_FMI, SOURCES, AlphaEditConfig, MemitConfig
from analyses.edit.memit.method import AlphaEdit, Memit
from analyses.edit.memit.states import (
    memit_keys,
    nearest_on_norm_surface,
    post_norm,
    subject_residuals,
    through_post_norm,
)
from analyses.edit.memit.update import alphaedit_delta, memit_delta, null_space_projector
from analyses.edit.method import Cost
from analyses.edit.rome import covariance as cov
from analyses.edit.rome.value import value_batch
from fmi.core.prompts import encode
from fmi.core.sites import resid
from fmi.errors import ConfigError

CASES = [
    EditCase("2", "Paris", "The city of {}", "Italy", "France"),
    EditCase("3", "Berlin", "The town of {}", "Spain", "Germany"),
    EditCase("4", "Tokyo", "I live in {}", "Canada", "Japan"),
]
FAST = MemitConfig(steps=3, cov_samples=1000, context_prefixes=2, early_stop=0.0)
LEARN = dataclasses.replace(FAST, steps=40, clamp=4.0, weight_decay=0.0)


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path_factory):
    """Every covariance of this module in one temporary folder, not the fmi cache."""
    root = tmp_path_factory.getbasetemp() / "rome-cov"
    monkeypatch.setattr(cov, "default_root", lambda: root)


def _problem(n=3, d_in=6, d_out=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    K = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
    R = torch.randn(n, d_out, generator=gen, dtype=torch.float64)
    A = torch.randn(d_in, 3 * d_in, generator=gen, dtype=torch.float64)
    return K, R, A @ A.T / (3 * d_in)


# --------------------------------------------------------------------------- closed forms


def test_memit_delta_is_the_naive_closed_form_and_solves_the_normal_equations():
    K, R, C = _problem()
    lam = 2.5
    delta = memit_delta(K, R, C, lam)
    # the paper's form, keys as columns, with an explicit inverse
    Kc, Rc = K.T, R.T
    naive = Rc @ Kc.T @ torch.linalg.inv(lam * C + Kc @ Kc.T)
    torch.testing.assert_close(delta, naive, rtol=1e-10, atol=1e-12)
    # the normal equations of min ||ΔW Kc - Rc||² + lam tr(ΔW C ΔWᵀ)
    residual = (delta @ Kc - Rc) @ Kc.T + lam * delta @ C
    assert float(residual.abs().max()) < 1e-10
    # a vanishing weight: the keys map exactly onto their residuals (n < d_in)
    exact = memit_delta(K, R, C, 1e-9)
    torch.testing.assert_close(exact @ Kc, Rc, rtol=1e-6, atol=1e-6)


def test_alphaedit_delta_is_the_naive_closed_form_and_spares_the_preserved_space():
    K, R, C = _problem(n=2, d_in=6)
    values, vectors = torch.linalg.eigh(C)
    threshold = float(values[2] + values[3]) / 2  # the 3 smallest: a 3-dimensional null space
    P = null_space_projector(C, threshold)
    gen = torch.Generator().manual_seed(1)
    Kp = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    earlier, l2 = Kp.T @ Kp, 0.7
    delta = alphaedit_delta(K, R, P, earlier, l2)
    Kc, Rc, Kpc = K.T, R.T, Kp.T
    naive = Rc @ Kc.T @ P @ torch.linalg.inv(Kpc @ Kpc.T @ P + Kc @ Kc.T @ P + l2 * torch.eye(6))
    torch.testing.assert_close(delta, naive, rtol=1e-6, atol=1e-8)
    # the preserved space: C's eigenvectors with the large eigenvalues
    preserved = vectors[:, values >= threshold]
    assert preserved.shape[1] == 3
    assert float((delta @ preserved).abs().max()) < 1e-10
    assert float((delta @ (torch.eye(6, dtype=torch.float64) - P)).abs().max()) < 1e-10
    assert float(delta.abs().max()) > 1e-3  # it does write something


def test_null_space_projector_properties():
    _, _, C = _problem(d_in=8)
    values = torch.linalg.eigvalsh(C)
    P = null_space_projector(C, float(values[4] + values[5]) / 2)
    torch.testing.assert_close(P @ P, P, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(P, P.T)
    assert round(float(P.trace())) == 5
    # what it keeps of C is C's 5 smallest eigenvalues' part
    assert float(torch.linalg.matrix_norm(P @ C @ P, ord=2)) <= float(values[4]) + 1e-12
    assert float(null_space_projector(C, 0.0).abs().max()) == 0.0
    torch.testing.assert_close(
        null_space_projector(C, float("inf")), torch.eye(8, dtype=torch.float64)
    )


def test_memit_keys_average_as_the_code():
    k = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    torch.testing.assert_close(memit_keys([k, k[:1]]), torch.tensor([[2.5, 1.5], [1.0, 0.0]]))


def test_through_post_norm_reaches_a_reachable_output(tiny_gemma):
    norm = post_norm(tiny_gemma, 0)
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(4, 64, generator=gen)  # rms 1: the norm's eps (1e-6) is negligible
    assert float(through_post_norm(norm, y, torch.zeros(4, 64)).abs().max()) == 0.0
    # r is the change to another down_proj output's normalised output: reachable exactly
    with torch.no_grad():
        o = norm(y).double()
        r = norm(y + torch.randn(4, 64, generator=gen)).double() - o
        o2 = norm((y.double() + through_post_norm(norm, y, r)).float()).double()
    torch.testing.assert_close(o2 - o, r, atol=1e-5 * float(o.abs().max()), rtol=0)
    assert post_norm(tiny_gemma, 1) is not None


def test_through_post_norm_beats_the_first_order_preimage_on_small_gains():
    """With some gains near zero, the closed form rms(y) (o + r) / gain - y (the first-order
    preimage) blows those components up and shrinks the whole output: the least-squares
    solution must land closer to o + r, and close to r on the components that can move."""
    d = 16
    norm = torch.nn.Module()
    norm.weight = torch.nn.Parameter(torch.cat([torch.zeros(d - 2), torch.full((2,), -0.999)]))
    norm.eps = 1e-6
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(3, d, generator=gen, dtype=torch.float64)
    r = 0.3 * torch.randn(3, d, generator=gen, dtype=torch.float64)

    def out(v):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + norm.weight.double())

    o = out(y)
    rms = (y.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
    first_order = rms * (o + r) / (1 + norm.weight.double()) - y
    err_first = (out(y + first_order) - (o + r)).norm(dim=-1)
    err_lsq = (out(y + through_post_norm(norm, y, r)) - (o + r)).norm(dim=-1)
    assert bool((err_lsq < 0.5 * err_first).all())


@pytest.mark.parametrize("gains", [(1.0, 0.01), (0.5, 2.0), (1.0, 1.0)])
def test_nearest_on_norm_surface_matches_a_search_of_the_circle(gains):
    """d = 2: mean(u²) = 1 is the circle of radius sqrt(2); a search over a million angles
    gives an upper bound on the least distance, within 1e-7 of it; the solver must reach it."""
    g = torch.tensor(gains, dtype=torch.float64)
    t = torch.tensor([[0.3, -1.7], [2.0, 0.1], [-0.2, -0.05]], dtype=torch.float64)
    u = nearest_on_norm_surface(g, t)
    torch.testing.assert_close(u.pow(2).mean(-1), torch.ones(3, dtype=torch.float64))
    angle = torch.linspace(0, 2 * math.pi, 1_000_001, dtype=torch.float64)
    circle = math.sqrt(2) * torch.stack([angle.cos(), angle.sin()], -1)
    for row in range(3):
        best = float(((g * circle - t[row]) ** 2).sum(-1).min())
        got = float(((g * u[row] - t[row]) ** 2).sum())
        assert best - 1e-7 <= got <= best + 1e-12


# --------------------------------------------------------------------------- reads


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_neox"])
def test_subject_residuals_read_the_subjects_last_token(fixture, request):
    model, layer = request.getfixturevalue(fixture), 0
    tok = model.tokenizer
    got = subject_residuals(model, layer, CASES[:2], batch_rows=1)
    for i, case in enumerate(CASES[:2]):
        enc = encode(tok, [case.rewrite])
        _, cache = model.bridge.run_with_cache(enc.tokens, names_filter=[resid(layer)])
        upto = case.rewrite[: case.rewrite.find(case.subject) + len(case.subject)]
        index = len(tok(upto)["input_ids"]) - 1
        torch.testing.assert_close(got[i], cache[resid(layer)][0, index].float())
    torch.testing.assert_close(
        subject_residuals(model, layer, CASES[:2]), got, rtol=1e-4, atol=1e-5
    )
    assert post_norm(request.getfixturevalue("tiny_neox"), 0) is None


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("layers", ()),
        ("layers", (1, 3)),
        ("layers", (-1, 0)),
        ("steps", 0),
        ("clamp", 0.0),
        ("mom2_update_weight", 0.0),
        ("cov_lambda", -1.0),
        ("batch_size", 0),
        ("cov_samples", 0),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"^{field} "):
        MemitConfig(**{field: value})


@pytest.mark.parametrize(("field", "value"), [("nullspace_threshold", -1.0), ("l2", float("nan"))])
def test_alphaedit_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"^{field} "):
        AlphaEditConfig(**{field: value})


def test_defaults_are_the_papers(tiny_gemma):
    cfg, alpha = MemitConfig(), AlphaEditConfig()
    assert (cfg.steps, cfg.lr, cfg.clamp, cfg.kl_weight, cfg.weight_decay) == (
        25,
        0.5,
        0.75,
        0.0625,
        0.5,
    )
    assert cfg.update_weight(16384) == 15000.0 and cfg.batch_size is None
    assert (cfg.context_prefixes, cfg.prefix_lengths) == (5, (10,))
    assert (alpha.nullspace_threshold, alpha.l2, alpha.batch_size) == (2e-2, 10.0, 100)
    assert cfg.resolved_layers(tiny_gemma) == (0, 1)

    class Deep:
        name = "deep"

        class bridge:  # noqa: N801
            class cfg:  # noqa: N801
                n_layers = 28

    assert cfg.resolved_layers(Deep) == (3, 4, 5, 6, 7, 8)
    Deep.bridge.cfg.n_layers = 18
    assert cfg.resolved_layers(Deep) == (2, 3, 4, 5)
    with pytest.raises(ConfigError, match="layers must be in 0..1"):
        MemitConfig(layers=(1, 2)).resolved_layers(tiny_gemma)
    assert set(SOURCES) <= set(alpha.to_dict()) and len(PAPER_VS_FMI) >= 5


# --------------------------------------------------------------------------- the methods


def _answer_nll(model, case) -> tuple[float, bool]:
    b = value_batch(model.tokenizer, case, [""])
    with torch.no_grad():
        out = model.bridge(b.tokens[:1], attention_mask=b.mask[:1]).float()
    lp = out[0, -b.targets.shape[1] :].log_softmax(-1)
    nll = -lp.gather(-1, b.targets[0].unsqueeze(-1)).mean()
    return float(nll), int(lp[0].argmax()) == int(b.targets[0, 0])


@pytest.mark.parametrize("method", ["memit", "alphaedit"])
@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_neox"])
def test_weights_restored_bit_for_bit_also_after_an_exception(fixture, method, request):
    model = request.getfixturevalue(fixture)
    digest = weights_digest(model.bridge)
    flags = [p.requires_grad for p in model.bridge.parameters()]
    edit = Memit(FAST) if method == "memit" else AlphaEdit(AlphaEditConfig(**_fast_alpha()))
    linears = {n: t for n, t in lora_targets(model.hf_model)}
    before = {n: t.weight.detach().clone() for n, t in linears.items()}
    cost = Cost()
    with edit.edited(model, CASES[:2], cost):
        changed = [n for n, t in linears.items() if not torch.equal(t.weight, before[n])]
        assert changed == list(linears)[: len(edit.settings()["resolved_layers"])]
    assert weights_digest(model.bridge) == digest
    with pytest.raises(KeyError), edit.edited(model, CASES, Cost()):
        raise KeyError("boom")
    assert weights_digest(model.bridge) == digest and no_hooks(model.bridge)
    assert [p.requires_grad for p in model.bridge.parameters()] == flags
    assert cost.seconds > 0 and cost.backward == 2 * (FAST.steps - 1)
    json.dumps(edit.settings())


def _fast_alpha(**extra):
    fields = {f.name for f in dataclasses.fields(MemitConfig)}
    out = {k: v for k, v in dataclasses.asdict(FAST).items() if k in fields}
    out.update(extra)
    return out


def test_memit_cost_counts_and_settings(tiny_gemma):
    memit, cost = Memit(FAST), Cost()
    with memit.edited(tiny_gemma, CASES, cost):
        pass
    # z: steps forwards each; per layer one keys and one residual forward (one batch of rows)
    assert cost.forward == 3 * FAST.steps + 2 * 2
    s = memit.settings()
    assert s["resolved_layers"] == [0, 1] and s["covariance"]["source"] == "model-text"
    assert s["covariance_tokens"] >= FAST.cov_samples
    assert s["mom2_update_weight_used"] == pytest.approx(15000 * 128 / 16384)
    assert s["setup_seconds"] >= 0 and s["context_prefixes_used"] == 2


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_neox"])
def test_batched_memit_makes_the_targets_greedy(fixture, request):
    """With the subject ending the prompt, a loose clamp and no weight decay the tiny random
    models can be taught all three targets at once."""
    model = request.getfixturevalue(fixture)
    before = [_answer_nll(model, c) for c in CASES]
    assert not any(top for _, top in before)
    memit = Memit(dataclasses.replace(LEARN, invert_post_norm=False))
    with memit.edited(model, CASES, Cost()):
        after = [_answer_nll(model, c) for c in CASES]
    assert all(top for _, top in after)
    assert all(a < b - 0.5 for (a, _), (b, _) in zip(after, before, strict=True))
    assert [_answer_nll(model, c) for c in CASES] == before


def test_memit_through_the_post_norm_moves_the_residual_to_z(tiny_gemma, monkeypatch):
    """Through Gemma's post-MLP norm the written layers must carry the last edited layer's
    residual at each subject towards its z, and lower every answer's NLL. (On Gemma-3-270M the
    old first-order preimage moved it at cos 0.07 to z - h, and no edit held.)"""
    import analyses.edit.memit.method as method

    zs: list[torch.Tensor] = []
    real = method.target_value

    def spy(*args, **kwargs):
        init, delta, info = real(*args, **kwargs)
        zs.append(init + delta)
        return init, delta, info

    monkeypatch.setattr(method, "target_value", spy)
    cfg = dataclasses.replace(FAST, steps=5)  # the published clamp and decay: a reachable z
    memit = Memit(cfg)
    last = cfg.resolved_layers(tiny_gemma)[-1]
    h0 = subject_residuals(tiny_gemma, last, CASES)
    before = [_answer_nll(tiny_gemma, c)[0] for c in CASES]
    with memit.edited(tiny_gemma, CASES, Cost()):
        h1 = subject_residuals(tiny_gemma, last, CASES)
        after = [_answer_nll(tiny_gemma, c)[0] for c in CASES]
    Z = torch.stack(zs)
    assert bool(((h1 - Z).norm(dim=-1) < 0.9 * (h0 - Z).norm(dim=-1)).all())
    assert all(a < b for a, b in zip(after, before, strict=True))


def test_sequential_memit_writes_batch_after_batch(tiny_neox):
    one = Memit(dataclasses.replace(LEARN, batch_size=1))
    cost = Cost()
    with one.edited(tiny_neox, CASES, cost):
        after = [_answer_nll(tiny_neox, c) for c in CASES]
    assert sum(top for _, top in after) >= 2
    # three batches: keys and residuals read per batch and layer
    assert cost.forward == 3 * LEARN.steps + 3 * 2 * 2


@pytest.mark.parametrize("key_scaled", [False, True])
def test_alphaedit_updates_stay_in_the_null_space(tiny_neox, key_scaled):
    model = tiny_neox
    cfg = AlphaEditConfig(**_fast_alpha(steps=6, batch_size=2, key_scaled=key_scaled, l2=1e-3))
    edit = AlphaEdit(cfg)
    linears = [t for _, t in lora_targets(model.hf_model)]
    before = [t.weight.detach().clone() for t in linears]
    with edit.edited(model, CASES, Cost()):
        for layer, dim in edit.null_dims.items():
            C = edit.covariances(model, [layer])[layer].double()
            scale = edit.key_scale[layer] if key_scaled else 1.0
            P = null_space_projector(C, cfg.nullspace_threshold * scale)
            assert 0 < dim < C.shape[0] and round(float(P.trace())) == dim
            update = (linears[layer].weight.detach() - before[layer]).double()
            assert float(update.abs().max()) > 0
            spared = update @ (torch.eye(C.shape[0], dtype=torch.float64) - P)
            assert float(spared.abs().max()) < 1e-5 * float(update.abs().max()) + 1e-7
    s = edit.settings()
    assert set(s["null_dims"]) == {"0", "1"} and s["batch_size"] == 2
    assert s["key_scaled"] is key_scaled


def test_alphaedit_with_the_papers_numbers_runs_on_gemma(tiny_gemma):
    """The paper's absolute threshold puts every direction of the tiny model's small keys in
    the null space; the method still runs and restores the weights."""
    digest = weights_digest(tiny_gemma.bridge)
    edit = AlphaEdit(AlphaEditConfig(**_fast_alpha()))
    with edit.edited(tiny_gemma, CASES[:1], Cost()):
        pass
    assert edit.null_dims == {0: 128, 1: 128}
    assert weights_digest(tiny_gemma.bridge) == digest


def test_quick_run_tunes_rome_memit_and_alphaedit(tmp_path):
    """``fmi edit --quick`` with the three locate-then-edit methods: each grid has its
    settings (conservative ones among them) and the covariance's source and size recorded."""
    from analyses.cli.main import main
    from analyses.edit.memit.config import ALPHAEDIT_SETTINGS, MEMIT_WEIGHT_MULTIPLES

    out = tmp_path / "edit.json"
    rc = main(
        [
            "edit",
            "--quick",
            "--methods",
            "none,rome,memit,alphaedit",
            "--out",
            str(tmp_path / "reports"),
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    for name in ("rome", "memit", "alphaedit"):
        entry = doc["methods"][name]
        tuning, settings = entry["tuning"], entry["settings"]
        size = {"rome": 3, "memit": len(MEMIT_WEIGHT_MULTIPLES) + 1}.get(
            name, len(ALPHAEDIT_SETTINGS)
        )
        assert len(tuning["grid"]) == len(tuning["grid_settings"]) == size
        assert "budget" in tuning and "tokens per layer" in tuning["budget"]
        assert tuning["covariance"]["source"] == "model-text"
        assert tuning["covariance"]["tokens"] >= 2000
        assert (
            settings["covariance"]["tokens"] >= 2000 and "build_seconds" in settings["covariance"]
        )
        assert set(doc["results"][name]) == {"1", "4"}
    grid = doc["methods"]["memit"]["tuning"]["grid_settings"]
    weights = [g["mom2_update_weight"] for g in grid[: len(MEMIT_WEIGHT_MULTIPLES)]]
    assert weights == [m * weights[0] for m in MEMIT_WEIGHT_MULTIPLES]
    assert [g["l2"] for g in doc["methods"]["alphaedit"]["tuning"]["grid_settings"]] == [
        s[2] for s in ALPHAEDIT_SETTINGS
    ]
    assert [g["settings"]["clamp"] for g in doc["methods"]["rome"]["tuning"]["grid"]] == [
        4.0,
        0.75,
        0.75,
    ]


def test_nearest_on_norm_surface_in_the_degenerate_case():
    """A target with nothing on the smallest gain's axis: no multiplier reaches mean(u²) = 1,
    and the rest of the norm goes on that axis. Known answer for gains (0.5, 2), target
    (0, 0.5): u = (sqrt(2 - (1 / 3.75)²), 1 / 3.75), a loss no point of the circle beats."""
    g = torch.tensor([0.5, 2.0], dtype=torch.float64)
    u = nearest_on_norm_surface(g, torch.tensor([[0.0, 0.5]], dtype=torch.float64))[0]
    want = torch.tensor([math.sqrt(2 - (1 / 3.75) ** 2), 1 / 3.75], dtype=torch.float64)
    torch.testing.assert_close(u, want, atol=1e-9, rtol=0)


def test_shared_z_memo_gives_the_same_write_and_the_same_charge(tiny_gemma, tmp_path):
    """Two settings that differ only in the update weight, sharing ``z_memo``: the second
    reads every edit's ``z`` from the memo, and its write and its charged forwards, backwards
    equal those of the same setting run without a memo."""
    from analyses.edit.rome.keys import edited_linear

    model = tiny_gemma
    cases = [
        EditCase("0", "Paris", "{} is the capital of", "Italy", "France"),
        EditCase("1", "Rome", "{} is the capital of", "Spain", "Italy"),
    ]
    cfg = MemitConfig(steps=2, cov_samples=100, context_prefixes=1, early_stop=0.0)
    memo: dict = {}

    def written(method):
        cost = Cost()
        with method.edited(model, cases, cost):
            lin = edited_linear(model, method.settings()["resolved_layers"][-1])
            return lin.weight.detach().clone(), cost

    written(Memit(cfg, cache_root=tmp_path, z_memo=memo))
    assert len(memo) == len(cases)
    heavy = dataclasses.replace(cfg, mom2_update_weight=50.0)
    w_memo, c_memo = written(Memit(heavy, cache_root=tmp_path, z_memo=memo))
    w_plain, c_plain = written(Memit(heavy, cache_root=tmp_path))
    assert len(memo) == len(cases)
    assert torch.equal(w_memo, w_plain)
    assert (c_memo.forward, c_memo.backward) == (c_plain.forward, c_plain.backward)
