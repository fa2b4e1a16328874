"""``fmi compare``: each baseline's mechanics on tiny models, and the report end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import no_hooks, weights_digest

from analyses.cli.main import main
from analyses.compare import (
    entropy_gate,
    grace,
    gradmem,
    in_context,
    iterated,
    rows,
    steering_baseline,
)
from analyses.compare.config import CompareConfig
from analyses.compare.run import memory_rows, run_compare
from fmi.core.hooks import add_at_positions
from fmi.core.prompts import encode
from fmi.errors import ConfigError
from fmi.experiments.evaluate import Outputs
from fmi.memory.retrieve import decide
from fmi.memory.values import unembedding


def _quiet(_: str) -> None:
    """Swallow announcements."""


@pytest.fixture(scope="module")
def prepared(quick_compare):
    return quick_compare


# --- steering -----------------------------------------------------------------------------------


def test_inject_adds_exactly_each_active_querys_vector_at_its_site(
    tiny_gemma, prepared, monkeypatch
):
    cfg, _, _, run = prepared
    seen = {}

    def fake_greedy(model, texts, *, site, deltas, **kw):
        seen.update(texts=texts, site=site, deltas=deltas.clone())
        return run.base.__class__([(7,)] * len(texts), [0] * len(texts), [0.0] * len(texts))

    monkeypatch.setattr(rows, "greedy", fake_greedy)
    n = len(run.qs.texts)
    deltas = torch.randn(n, tiny_gemma.bridge.cfg.d_model)
    active = torch.zeros(n, dtype=torch.bool)
    active[[0, 3]] = True
    out = rows.inject(tiny_gemma, run, cfg.recall, "blocks.1.hook_resid_post", deltas, active)
    assert seen["site"] == "blocks.1.hook_resid_post"
    assert seen["texts"] == [run.qs.texts[0], run.qs.texts[3]]
    torch.testing.assert_close(seen["deltas"], deltas[[0, 3]], rtol=0, atol=0)
    assert out.tokens[0] == (7,) and out.tokens[3] == (7,)
    assert all(out.tokens[q] == run.base.tokens[q] for q in range(n) if q not in (0, 3))


def test_steering_vectors_per_variant(prepared):
    _, _, _, run = prepared
    labels = sorted({e.label for e in run.entries})
    vecs = torch.eye(len(labels))
    oracle = steering_baseline.query_vectors(run, vecs, labels, "oracle label")
    both = steering_baseline.query_vectors(run, vecs, labels, "both edits on")
    for q in run.qs.index("read"):
        e = run.entries[run.qs.entry[q]]
        torch.testing.assert_close(oracle[q], vecs[labels.index(e.label)])
        own = [x for x in run.entries if x.symbol == e.symbol]
        assert len(own) == 2  # both contexts, conflicting labels
        want = vecs[[labels.index(x.label) for x in own]].mean(0)
        torch.testing.assert_close(both[q], want)
    # always on: unrelated prompts get a vector too
    assert all(oracle[q].abs().sum() > 0 for q in run.qs.index("unrelated"))
    with pytest.raises(ValueError, match="variant"):
        steering_baseline.query_vectors(run, vecs, labels, "nope")


def test_steering_sites_and_pick():
    sites = steering_baseline.steering_sites(18, 4)
    assert sites == [
        "blocks.0.hook_resid_post",
        "blocks.6.hook_resid_post",
        "blocks.11.hook_resid_post",
        "blocks.17.hook_resid_post",
        "ln_final.hook_out",
    ]
    acc = torch.tensor([[0.2, 0.9, 0.9], [0.9, 0.5, 0.1]])
    assert steering_baseline.pick(acc, [1.0, 0.5, 2.0]) == (0, 0.5)  # ties: smallest alpha first
    assert steering_baseline.pick(acc, [0.1, 0.5, 2.0]) == (1, 0.1)


# --- in-context ---------------------------------------------------------------------------------


def test_in_context_prompts_hold_the_right_statements(prepared):
    _, _, _, run = prepared
    right = in_context.context_prompts(run, "right")
    both = in_context.context_prompts(run, "both")
    templates = run.split.templates
    for q in run.qs.index("read"):
        e = run.entries[run.qs.entry[q]]
        mine = in_context.statement(templates, e)
        others = [in_context.statement(templates, x) for x in run.entries if x.symbol == e.symbol]
        assert right[q] == f"{mine}.\n{run.qs.texts[q]}"
        assert all(s in both[q] for s in others) and both[q].endswith(run.qs.texts[q])
    for q in run.qs.index("unrelated"):
        assert right[q].endswith("\n" + run.qs.texts[q]) and " means " in right[q]


def test_few_shot_prompts_are_training_examples_then_both_statements(prepared):
    _, task, _, run = prepared
    few = in_context.context_prompts(run, "few-shot", task.train)
    both = in_context.context_prompts(run, "both")
    head = in_context.shots(task.train)
    assert all(f == head + b for f, b in zip(few, both, strict=True))
    train_symbols = {b.symbol for b in task.train.bindings}
    shown = [w for w in train_symbols if w in head]
    assert len(shown) == in_context.SHOTS and head.count("Answer:") == in_context.SHOTS
    assert not {e.symbol for e in run.entries} & set(shown)  # no evaluation symbol in the shots
    with pytest.raises(ValueError, match="training split"):
        in_context.context_prompts(run, "few-shot")


# --- GRACE -------------------------------------------------------------------------------------


def test_grace_codebook_adds_expands_and_splits_by_the_published_rules():
    keys = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.5, 0.0], [1.5, 0.0], [10.0, 3.0]])
    labels = [7, 8, 7, 9, 8]
    book = grace.build(keys, labels, eps_init=1.0)
    # edit 0: first code; edit 1: far (10 > 1 + 1): new code; edit 2: 0.5 from code 0, same
    # label: expand to 1.0 (max(1.0, 0.5)); edit 3: 1.5 from code 0 (<= 1 + 1), other label:
    # split, both radii 0.75; edit 4: 3 from code 1 (> 1 + 1): new code
    assert book.labels == [7, 8, 9, 8] and book.owner == [0, 1, 3, 4]
    assert book.code_of == [0, 1, 0, 2, 3]
    assert book.radii.tolist() == [0.75, 1.0, 0.75, 1.0]
    code, on = book.lookup(torch.tensor([[0.2, 0.0], [1.4, 0.0], [5.0, 0.0], [10.0, 0.9]]))
    assert code.tolist() == [0, 2, 2, 1] and on.tolist() == [True, True, False, True]


def test_grace_replaces_the_last_position_on_the_prompt_pass_only():
    value = torch.full((2, 3), 7.0)
    hook = grace.replace_last(value, torch.tensor([True, False]))
    act = torch.zeros(2, 4, 3)
    out = hook(act, None)
    assert torch.equal(out[0, -1], value[0]) and torch.equal(out[0, :-1], act[0, :-1])
    assert torch.equal(out[1], act[1])
    step = torch.zeros(2, 1, 3)
    assert hook(step, None) is step  # a cached step after the prompt is left alone


def test_grace_trained_values_lower_the_edit_loss_and_leave_weights_alone(tiny_gemma, prepared):
    _, task, _, run = prepared
    site = "blocks.0.hook_resid_post"
    texts, keys, targets = grace.edit_keys(tiny_gemma, task.split("same"), site, 8)
    targets = torch.tensor(targets[:4])
    before = weights_digest(tiny_gemma.bridge)
    values = grace.train_values(tiny_gemma, texts[:4], targets, site, 5, 1.0, 4)
    assert weights_digest(tiny_gemma.bridge) == before and no_hooks(tiny_gemma.bridge)

    def loss(v):
        enc = encode(tiny_gemma.tokenizer, texts[:4])
        on = torch.ones(4, dtype=torch.bool)
        with (
            torch.inference_mode(),
            tiny_gemma.bridge.hooks(fwd_hooks=[(site, grace.replace_last(v, on))]),
        ):
            logits = tiny_gemma.bridge(enc.tokens, attention_mask=enc.mask)
        return torch.nn.functional.cross_entropy(logits[:, -1].float(), targets)

    assert float(loss(values)) < float(loss(keys[:4]))  # keys are the untouched states


def test_grace_rows_fire_where_the_codebook_does(tiny_gemma, prepared):
    cfg, task, fitted, run = prepared
    got, curve = grace.grace_rows(tiny_gemma, task.train, run, fitted, cfg.recall, cfg)
    assert [r.method for r in got] == ["GRACE (trained values)", "GRACE (correction values)"]
    detail = got[0].detail
    assert detail["eps_init"] == curve["chosen"] and "configurations" in detail["tuning_budget"]
    assert len(curve["curve"]) == len(cfg.grace_eps_grid)
    assert curve["chosen"] in [p["eps_init"] for p in curve["curve"]]
    assert got[0].summary["fired"] == got[1].summary["fired"]  # one codebook, two values
    assert no_hooks(tiny_gemma.bridge)


# --- iterated value -----------------------------------------------------------------------------


def test_first_refinement_step_is_the_memory_value(tiny_gemma, prepared):
    _, _, _, run = prepared
    w_u, b_u = unembedding(tiny_gemma.bridge)
    targets = torch.tensor([e.target for e in run.entries])
    out, _ = iterated.refine(run.written.answer_states, w_u, b_u, targets, run.memory.alpha, [1])
    torch.testing.assert_close(out[1], run.memory.alpha * run.written.values, rtol=1e-4, atol=1e-5)


def test_refinement_matches_autograd_and_lowers_the_loss(tiny_gemma, prepared):
    """The closed-form step against a naive loop of autograd steps, one row at a time."""
    _, _, _, run = prepared
    w_u, b_u = unembedding(tiny_gemma.bridge)
    h = run.written.answer_states[:3]
    targets = torch.tensor([e.target for e in run.entries[:3]])
    alpha = 0.7
    fast, seconds = iterated.refine(h, w_u, b_u, targets, alpha, [1, 2, 3])
    assert seconds[1] <= seconds[2] <= seconds[3]
    for i in range(3):
        delta = torch.zeros(h.shape[1])
        losses = []
        for k in (1, 2, 3):
            delta = delta.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(
                ((h[i] + delta) @ w_u + b_u)[None], targets[i : i + 1]
            )
            (g,) = torch.autograd.grad(loss, delta)
            losses.append(float(loss.detach()))
            delta = (delta - alpha * g).detach()
            torch.testing.assert_close(fast[k][i], delta, rtol=1e-4, atol=1e-5)
        assert losses[2] < losses[0]


def test_iterated_value_needs_the_unembedding_site(tiny_gemma, prepared):
    cfg, _, _, run = prepared
    from dataclasses import replace

    moved = replace(run, memory=replace(run.memory, inject_site="blocks.1.hook_resid_post"))
    dual = decide("dual_key", run.scores, run.memory, gate=run.qs.gate)
    with pytest.raises(ConfigError, match="needs injection at 'ln_final.hook_out'"):
        iterated.iterated_rows(tiny_gemma, moved, cfg.recall, [1], dual)


def test_one_step_row_equals_the_dual_key_row(tiny_gemma, prepared):
    cfg, _, _, run = prepared
    mem, (dual, _) = memory_rows(tiny_gemma, run, cfg, rows.Cost(1, 0, 0.0))
    one = iterated.iterated_rows(tiny_gemma, run, cfg.recall, [1], dual)[0]
    dual_row = next(r for r in mem if r.method == "fast memory: dual_key")
    for metric in ("write", "read", "plain", "unrelated", "unrelated_changed"):
        assert one.summary[metric] == dual_row.summary[metric], metric


# --- GradMem ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_neox", "tiny_gemma"])
def test_gradmem_leaves_weights_bit_identical_and_lowers_the_loss(fixture, request):
    model = request.getfixturevalue(fixture)
    bridge = model.bridge
    before = weights_digest(bridge)
    texts = ["In game A, blicket means", "In the lab, dax means"]
    targets = torch.tensor([model.tokenizer(" red")["input_ids"][-1]] * 2)
    site = gradmem.gradmem_site(int(bridge.cfg.n_layers), 0.5)
    vectors, seconds = gradmem.optimise(model, texts, targets, site, 3, 0.5, batch_size=2)
    assert weights_digest(bridge) == before
    assert all(p.grad is None for p in bridge.parameters())
    assert no_hooks(bridge)
    assert sorted(vectors) == [1, 2, 3] and seconds[1] <= seconds[3]
    # the first step has length lr * |h| at the site (answer position)
    from fmi.core.forward import collect

    got = collect(bridge, model.tokenizer, texts, [site])
    norms = got.stack_last(site).norm(dim=-1)
    torch.testing.assert_close(vectors[1].norm(dim=-1), 0.5 * norms, rtol=1e-4, atol=1e-4)

    enc = encode(model.tokenizer, texts)
    pos = torch.full((2,), enc.tokens.shape[1] - 1)

    def loss(delta):
        with torch.inference_mode(), bridge.hooks(fwd_hooks=[(site, add_at_positions(delta, pos))]):
            logits = bridge(enc.tokens, attention_mask=enc.mask)
        return float(torch.nn.functional.cross_entropy(logits[:, -1].float(), targets))

    assert loss(vectors[3]) < loss(torch.zeros_like(vectors[3]))


# --- entropy gate -------------------------------------------------------------------------------


def test_entropy_threshold_keeps_the_asked_fraction():
    e = torch.arange(100, dtype=torch.float32)
    tau = entropy_gate.threshold(e, 0.9)
    assert float(entropy_gate.gate(e, tau).float().mean()) == pytest.approx(0.9, abs=0.011)
    assert entropy_gate.gate(e, entropy_gate.threshold(e, 1.0)).all()


def test_entropy_gate_shut_is_no_memory_and_open_is_dual_key(tiny_gemma, prepared):
    cfg, _, _, run = prepared
    mem, (dual, dual_out) = memory_rows(tiny_gemma, run, cfg, rows.Cost(1, 0, 0.0))
    cost = rows.Cost(1, 0, 0.0)
    shut = entropy_gate.gated_row(
        tiny_gemma, run, cfg.recall, {"write": 0.0, "read": float("inf")}, dual, dual_out, cost
    )
    assert shut.summary["fired"]["read"] == 0.0
    base = Outputs(run.base.tokens, run.base.label_pick)
    assert (
        shut.summary["read"]
        == rows.score(tiny_gemma, run, cfg.recall, "none", "none", base, cost).summary["read"]
    )
    wide = {"write": float("-inf"), "read": float("-inf")}
    opened = entropy_gate.gated_row(tiny_gemma, run, cfg.recall, wide, dual, dual_out, cost)
    dual_row = next(r for r in mem if r.method == "fast memory: dual_key")
    assert opened.summary["read"] == dual_row.summary["read"]
    assert opened.detail["retrievals_saved"] == 0.0


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_pythia"])
def test_run_compare_writes_report_and_json(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    cfg = CompareConfig.quick_config(model=model.name)
    doc, path = run_compare(
        cfg,
        tmp_path,
        model=model,
        json_path=tmp_path / "c.json",
        progress=False,
        announce=_quiet,
    )
    assert path == tmp_path / "compare.html" and path.exists()
    saved = json.loads((tmp_path / "c.json").read_text())
    families = {r["family"] for r in saved["splits"]["same"]["rows"]}
    assert families == {
        "none",
        "in-context",
        "steering",
        "codebook",
        "iterated value",
        "gradient-written",
        "gradient-written prefix",
        "entropy gate",
        "fast memory",
    }
    for key in ("model", "config", "versions", "git", "sites", "seeds"):
        assert key in saved["header"]
    html = path.read_text()
    assert "GRACE" in html and "refinement steps" in html
    assert any(r["method"] == "GRACE (trained values)" for r in saved["splits"]["same"]["rows"])
    assert "src='http" not in html and 'src="http' not in html
    assert no_hooks(model.bridge)
    assert doc["splits"]["same"]["rows"][0]["method"] == "no memory"


def test_unknown_split_is_named(tiny_gemma, tmp_path):
    cfg = CompareConfig.quick_config(splits=("nope",))
    with pytest.raises(ConfigError, match="no split 'nope': available splits are train, same"):
        run_compare(cfg, tmp_path, model=tiny_gemma, progress=False, announce=_quiet)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("gradmem_steps", 6, "gradmem_steps must be in 1..5"),
        ("refine_steps", (0, 1), "refine_steps must be >= 1"),
        ("entropy_keep", 0.0, "entropy_keep must be in"),
        ("splits", (), "splits must name"),
        ("steering_alphas", (-1.0,), "steering_alphas must be positive"),
    ],
)
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        CompareConfig(**{field: value})


def test_cli_quick_compare(tmp_path, capsys):
    assert main(["compare", "--quick", "--quiet", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| fast memory: dual_key |" in out and "| CAA (both edits on) |" in out
    assert (tmp_path / "compare.json").exists()
    assert main(["compare", "--quick", "--quiet", "--splits", "nope", "--out", str(tmp_path)]) == 2


def test_cli_compare_on_a_task_file_uses_its_split(tmp_path, capsys):
    example = Path(__file__).resolve().parents[2] / "examples" / "task_file.json"
    args = ["compare", "--quick", "--quiet", "--task", str(example), "--out", str(tmp_path)]
    assert main(args) == 0
    assert "| split file |" in capsys.readouterr().out


def test_gradmem_tuning_sweeps_its_budget_and_picks_the_best(tiny_gemma, prepared):
    cfg, task, _, _ = prepared
    best, curve = gradmem.tune(tiny_gemma, task.train, cfg.recall, cfg)
    n = len(cfg.gradmem_depths) * len(cfg.gradmem_lrs) * cfg.gradmem_steps
    assert len(curve) == n
    assert {(p["depth"], p["lr"], p["steps"]) for p in curve} == {
        (d, lr, k)
        for d in cfg.gradmem_depths
        for lr in cfg.gradmem_lrs
        for k in range(1, cfg.gradmem_steps + 1)
    }
    top = max(p["read"] for p in curve)
    assert best["read"] == top
    assert best["steps"] == min(p["steps"] for p in curve if p["read"] == top)
