"""``fmi inspect``: the page opens offline with circuitsvis views, the per-position effect equals a
loop over positions, and bad requests name the problem."""

from __future__ import annotations

import re

import pytest
import torch

from analyses.cli.main import main
from analyses.inspect.compute import inspect_prompt, per_position_logits
from analyses.inspect.figures import write_inspection
from analyses.inspect.run import inspect_from_setup, memory_from_setup
from fmi.core.hooks import add_at_positions
from fmi.core.prompts import encode
from fmi.core.sites import UNEMBED_IN, resid
from fmi.errors import ConfigError, LabelError
from fmi.experiments.builtin_tasks import builtin_task
from fmi.memory.retrieve import MODES

NETWORK_REF = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", re.IGNORECASE)


@pytest.fixture(scope="module")
def binding(quick_setup):
    return quick_setup.task.split("same").bindings[0]


@pytest.fixture(scope="module")
def inspection(quick_setup, binding):
    """Forced, so that a vector is injected whatever the random model's scores are."""
    return inspect_from_setup(quick_setup, binding.context, binding.symbol, force=True)


def _loop_logits(bridge, tokens, site, vector):
    """The naive reference: one forward per position, the vector added there alone."""
    rows = []
    for p in range(tokens.shape[1]):
        hook = add_at_positions(vector[None], torch.tensor([p]))
        with torch.inference_mode(), bridge.hooks(fwd_hooks=[(site, hook)]):
            rows.append(bridge(tokens)[0, p].float())
    return torch.stack(rows)


@pytest.mark.parametrize("layer", [None, 0])
def test_per_position_logits_equal_a_loop(tiny_gemma, layer):
    """One forward at ``ln_final.hook_out``; one batch row per position at a block's output."""
    site = UNEMBED_IN if layer is None else resid(layer, "post")
    tokens = encode(tiny_gemma.tokenizer, ["Question: in game A, what is dax? Answer:"]).tokens
    vector = torch.randn(tiny_gemma.bridge.cfg.d_model, generator=torch.Generator().manual_seed(0))
    fast = per_position_logits(tiny_gemma.bridge, tokens, site, vector)
    slow = _loop_logits(tiny_gemma.bridge, tokens, site, vector)
    assert fast.shape == (tokens.shape[1], slow.shape[1])
    assert torch.allclose(fast, slow, atol=1e-4, rtol=1e-4)


def test_delta_logprob_equals_a_loop(quick_setup, inspection):
    bridge = quick_setup.model.bridge
    tokens = torch.tensor([inspection.token_ids])
    assert inspection.retrieval.injected and inspection.injected_norm > 0
    with torch.inference_mode():
        before = torch.log_softmax(bridge(tokens)[0].float(), -1)
    after = torch.log_softmax(
        _loop_logits(bridge, tokens, inspection.inject_site, inspection.vector), -1
    )
    nxt = torch.tensor([*inspection.token_ids[1:], inspection.target])
    rows = torch.arange(len(nxt))
    want = after[rows, nxt] - before[rows, nxt]
    assert torch.allclose(inspection.delta_logprob, want, atol=1e-4)
    assert inspection.target_prob_after == pytest.approx(float(after[-1, nxt[-1]].exp()), abs=1e-5)


def test_inspection_numbers(inspection, binding):
    n = len(inspection.token_ids)
    assert inspection.patterns.shape[0] == 2 and inspection.patterns.shape[2:] == (n, n)
    assert torch.allclose(inspection.patterns.sum(-1), torch.ones(inspection.patterns.shape[:3]))
    assert inspection.delta_logprob.shape == (n,)
    assert inspection.target_text.strip() == binding.label
    assert len(inspection.top_before) == len(inspection.top_after) == 10
    scores = [c.score for c in inspection.retrieval.candidates]
    assert scores == sorted(scores, reverse=True) and 1 <= len(scores) <= 5
    assert binding.symbol in inspection.summary() or "abstained" in inspection.summary()
    assert "\n" not in inspection.summary()


def test_views_display_offline(inspection):
    for view in (inspection.attention, inspection.delta_tokens):
        src = view._repr_html_()
        assert "CircuitsVis.render(" in src and "unpkg.com" not in src
    assert "AttentionPatterns" in inspection.attention.local_src
    assert "ColoredTokens" in inspection.delta_tokens.local_src


def test_page_is_self_contained(quick_setup, inspection, tmp_path):
    path = write_inspection(inspection, tmp_path / "sub" / "page.html", quick_setup.header(0.0))
    page = path.read_text()
    assert not NETWORK_REF.search(page), NETWORK_REF.search(page)
    assert "<link" not in page and "unpkg.com" not in page and "sourceMappingURL" not in page
    assert page.count("var CircuitsVis=") == 1  # the bundle once, not once per view
    assert page.count("CircuitsVis.AttentionPatterns") == 2  # one per layer
    assert page.count("CircuitsVis.ColoredTokens") == 1
    assert "/>" not in re.sub(r"<script.*?</script>", "", page, flags=re.DOTALL)
    for section in ("Retrieval", "Next token", "Effect of the memory", "Attention patterns"):
        assert section in page


def test_page_opens_in_a_browser_offline(quick_setup, inspection, tmp_path):
    browser = pytest.importorskip("fmi.reporting.browser")
    try:
        browser.chromium_path()
        pytest.importorskip("playwright")
    except browser.BrowserUnavailableError as err:
        pytest.skip(str(err))
    path = write_inspection(inspection, tmp_path / "page.html", quick_setup.header(0.0))
    check = browser.check_pages([path], settle_ms=800)[path]
    assert check.ok, (check.errors, check.failed_requests)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode(quick_setup, binding, mode):
    ins = inspect_from_setup(quick_setup, binding.context, binding.symbol, mode=mode)
    r = ins.retrieval
    assert r.mode == mode and r.candidates and r.top == r.candidates[0].entry
    assert r.fired == (r.score >= r.threshold)
    if not r.injected:
        assert ins.injected_norm == 0 and torch.all(ins.delta_logprob == 0)
        assert ins.greedy_after == ins.greedy_before


def test_label_writes_a_new_binding(quick_setup):
    ins = inspect_from_setup(quick_setup, "game A", "blicket", "red", prompt="blicket? Answer:")
    assert ins.prompt == "blicket? Answer:" and ins.target_text == " red"
    assert ins.memory_size == len(memory_from_setup(quick_setup, "game A", "blicket")[0]) + 1


def test_unknown_symbol_names_the_problem(quick_setup, binding):
    with pytest.raises(ConfigError) as err:
        inspect_from_setup(quick_setup, "game A", "blicket")
    msg = str(err.value)
    assert "'blicket'" in msg and "'game A'" in msg and "label" in msg
    assert f"({binding.context}, {binding.symbol})" in msg


def test_bad_label_names_the_problem(quick_setup, binding):
    with pytest.raises(LabelError, match="'turquoise' is not one token"):
        inspect_from_setup(quick_setup, binding.context, binding.symbol, "turquoise")
    memory, _ = memory_from_setup(quick_setup, binding.context, binding.symbol)
    with pytest.raises(LabelError, match="turquoise"):
        inspect_prompt(quick_setup.model, memory, "x", target_label="turquoise")
    with pytest.raises(ConfigError, match="nearest"):
        inspect_prompt(quick_setup.model, memory, "x", mode="nearest")


def test_cli_fits_and_writes_the_page(tmp_path, capsys):
    b = builtin_task(seed=0, n_train=12, n_eval=3).split("same").bindings[0]
    out = tmp_path / "page.html"
    argv = ["inspect", "--model", "tiny-gemma", "--n-train", "12", "--n-eval", "3"]
    code = main([*argv, "--context", b.context, "--symbol", b.symbol, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and out.exists() and f"wrote {out}" in printed
    assert "CircuitsVis.AttentionPatterns" in out.read_text()


def test_cli_loads_a_saved_memory(quick_setup, binding, tmp_path, capsys, monkeypatch):
    memory, _ = memory_from_setup(quick_setup, binding.context, binding.symbol)
    memory.save(tmp_path / "memory.safetensors")
    monkeypatch.chdir(tmp_path)
    base = ["inspect", "--model", "tiny-gemma", "--memory", "memory.safetensors"]
    code = main([*base, "--context", "game A", "--symbol", "blicket", "--label", "red"])
    assert code == 0
    assert (tmp_path / "reports" / "tiny-gemma" / "inspect-game-a-blicket.html").exists()
    code = main([*base, "--context", "game A", "--symbol", "blicket"])
    err = capsys.readouterr().err
    assert code == 2 and "'blicket'" in err and "Traceback" not in err
    code = main([*base, "--context", "game A", "--symbol", "blicket", "--label", "turquoise"])
    assert code == 2 and "one token" in capsys.readouterr().err
