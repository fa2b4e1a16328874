"""The editing baselines run as their authors would: GRACE's values trained until the edit holds
(within the published budget) and looked up exactly, LoRA's grid reaching conservative
settings with the weights untouched, and in-context facts as one cached prefix that decodes
exactly as the plain prefix + prompt does."""

from __future__ import annotations

import pytest
import torch
from helpers import no_hooks, weights_digest

from analyses.compare.grace import Codebook, build, last_states
from analyses.edit.cases import EditCase, answer_text
from analyses.edit.config import EditConfig
from analyses.edit.grace import GraceEdit, holds, lookup_hooks, sites, train_value
from analyses.edit.lora import LoraEdit
from analyses.edit.method import Cost
from analyses.edit.method import no_hooks as no_hook_fn
from analyses.edit.methods import InContext, TooLong, stated
from analyses.edit.prefix_cache import answer_logprobs, context_length, decode_with_prefix
from analyses.edit.teacher import forced
from analyses.edit.tune import GRACE_EPS_MULTIPLES, LORA_GRID
from fmi.core.generate import decode
from fmi.errors import ConfigError
from fmi.models.registry import load_model


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-gemma", announce=lambda _: None)


# one-token targets: at the last block's output a value sets the next-token logits directly
CASES = [
    EditCase("0", "Japan", "The capital of {} is", "Paris", "Tokyo"),
    EditCase("1", "Alice", "{}'s favourite drink is", "the", "tea"),
    EditCase("2", "Bob", "{} was born in", "Seoul", "Oslo"),
]


def _last(model) -> int:
    return int(model.bridge.cfg.n_layers) - 1


# --- GRACE -----------------------------------------------------------------------------------


def test_grace_stops_once_the_edit_holds_and_its_prompt_gives_the_target(model):
    grace = GraceEdit(_last(model), eps_init=1e-3, at="resid", init="warm")
    cost = Cost()
    with grace.edited(model, CASES, cost) as held:
        out = decode(model, [c.rewrite for c in CASES], held.hooks_for, max_new_tokens=2)
    assert all(1 <= s < grace.n_iter for s in grace.steps_taken)  # early, not the budget
    assert cost.backward == sum(grace.steps_taken)
    # one check per step and a last one per edit, and the key and warm-start passes
    assert cost.forward == sum(grace.steps_taken) + len(CASES) + 2
    for case, tokens in zip(CASES, out.tokens, strict=True):
        want = model.tokenizer(answer_text(case.target_new))["input_ids"]
        assert list(tokens[: len(want)]) == want


def test_grace_training_stops_at_the_first_step_that_holds(model):
    key_site, value_site = sites(_last(model), "resid")
    case = CASES[0]
    batch = forced(model.tokenizer, [case.rewrite], [answer_text(case.target_new)])
    init = last_states(model, [case.rewrite], value_site, 1)[0]
    value, steps = train_value(model, value_site, batch, init, 100, 1.0)
    assert 1 <= steps < 100

    def held_with(v):
        from analyses.edit.grace import _put

        with model.bridge.hooks(fwd_hooks=[(value_site, _put(v[None], batch.prompt_last))]):
            return holds(model.bridge(batch.tokens, attention_mask=batch.mask), batch)

    assert held_with(value)
    short, taken = train_value(model, value_site, batch, init, steps - 1, 1.0)
    assert taken == steps - 1 and not held_with(short)  # one step fewer: not yet held
    _, none = train_value(model, value_site, batch, init, 0, 1.0)
    assert none == 0


def test_grace_budget_caps_the_steps_and_settings_record_it(model):
    grace = GraceEdit(0, eps_init=1e-3, n_iter=2, stop_nll=0.0)  # NLL 0 is never reached
    cost = Cost()
    with grace.edited(model, CASES, cost):
        pass
    assert grace.steps_taken == [2, 2, 2] and cost.backward == 6
    s = grace.settings()
    assert (s["n_iter"], s["lr"], s["val_init"]) == (2, 1.0, "cold")
    assert s["replacement"] == "replace_last"
    assert s["key_site"] == "blocks.0.mlp.out.hook_in"
    assert s["value_site"] == "blocks.0.mlp.out.hook_out"
    assert GraceEdit(0, 1.0).n_iter == 100 and GraceEdit(0, 1.0).lr == 1.0
    assert len(GRACE_EPS_MULTIPLES) * 2 <= 6
    for bad in ({"at": "attn"}, {"init": "hot"}, {"lr": 0.0}, {"n_iter": -1}):
        with pytest.raises(ConfigError):
            GraceEdit(0, 1.0, **bad)


def test_grace_memo_reuses_a_new_codes_value_exactly(model):
    memo: dict = {}
    a, b = GraceEdit(0, 1e-3, n_iter=5, memo=memo), GraceEdit(0, 2e-3, n_iter=5, memo=memo)
    prompts = [c.rewrite for c in CASES]
    outs = []
    for grace in (a, b):
        with grace.edited(model, CASES, Cost()) as held:
            outs.append(decode(model, prompts, held.hooks_for, score_ids=torch.ones(3, 1).long()))
    assert len(memo) == 3 and a.steps_taken == b.steps_taken
    assert outs[0].tokens == outs[1].tokens and outs[0].scores == outs[1].scores


def test_grace_codebook_lookup_is_exact(model):
    key_site, value_site = sites(0, "mlp")
    prompts = [c.rewrite for c in CASES[:2]]
    keys = last_states(model, prompts, key_site, 4)
    book = build(keys, [0, 1], 1e-3)
    assert book.code_of == [0, 1] and book.radii.tolist() == pytest.approx([1e-3, 1e-3])
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(2, int(model.bridge.cfg.d_model), generator=gen)
    far = "Once upon a time"
    seen: list[torch.Tensor] = []

    def capture(act, hook):
        seen.append(act[:, -1].clone())
        return act

    for text, want in ((prompts[0], values[0]), (prompts[1], values[1]), (far, None)):
        tokens = model.tokenizer(text, return_tensors="pt")["input_ids"]
        seen.clear()
        with model.bridge.hooks(fwd_hooks=[(value_site, capture)]):
            clean = model.bridge(tokens)
        plain_out = seen[0]
        seen.clear()
        hooks = lookup_hooks(key_site, value_site, book, values) + [(value_site, capture)]
        with model.bridge.hooks(fwd_hooks=hooks):
            edited = model.bridge(tokens)
        if want is None:  # outside every radius: the model runs untouched
            assert torch.equal(seen[0], plain_out) and torch.equal(edited, clean)
        else:
            assert torch.equal(seen[0][0], want.to(seen[0].dtype))
            assert not torch.equal(edited, clean)
    # a query exactly on the radius fires, just beyond does not (GRACE's ``<=``)
    one = Codebook(torch.zeros(1, 2), torch.tensor([1.0]), [0], [0], [0])
    assert one.lookup(torch.tensor([[1.0, 0.0], [1.001, 0.0]]))[1].tolist() == [True, False]


# --- LoRA ------------------------------------------------------------------------------------


def test_lora_grid_reaches_conservative_settings_with_the_kl_term():
    assert 1 <= len(LORA_GRID) <= 6
    assert all(kl > 0 for _, _, kl in LORA_GRID)
    assert min(LORA_GRID) == (1e-5, 5, 1.0)  # within the bound on Gemma-3-270M's tuning group
    assert (1e-4, 5, 1.0) in LORA_GRID
    assert (3e-4, 10, 1.0) in LORA_GRID and (1e-3, 10, 1.0) in LORA_GRID
    assert max(lr for lr, _, _ in LORA_GRID) >= 1e-2  # the aggressive end stays


def test_conservative_lora_leaves_the_weights_bit_identical(model):
    before = weights_digest(model.bridge)
    tokens = model.tokenizer("Once upon a time", return_tensors="pt")["input_ids"]
    clean = model.bridge(tokens)
    lora = LoraEdit(lr=1e-4, steps=5, retention_weight=1.0, retention_texts=("Hello there",))
    cost = Cost()
    with lora.edited(model, CASES, cost):
        changed = model.bridge(tokens)
    assert cost.backward == 15 and cost.forward == 30  # 5 steps x 3 edits, retention pass each
    assert not torch.equal(changed, clean)
    assert (changed - clean).abs().max() < 0.1  # small steps: a small change
    assert weights_digest(model.bridge) == before and no_hooks(model.bridge)
    assert torch.equal(model.bridge(tokens), clean)


# --- in_context: one cached prefix -----------------------------------------------------------


def _long_prefix(n_facts: int) -> str:
    many = [
        EditCase(str(i), f"Person {i}", "{} lives in", f"City {7 * i}", "Rome")
        for i in range(n_facts)
    ]
    return stated(many)


def _flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea, there",
    "Rome",
    "\nA prompt whose newline merges with the prefix's",  # decoded plainly, still equal
    "Alice's favourite drink is",
]


def test_cached_prefix_decodes_as_plain_prefix_plus_prompt(model):
    prefix = _long_prefix(50)  # 550 tokens: past tiny-gemma's 512-token sliding window
    assert len(model.tokenizer(prefix)["input_ids"]) > 512
    ids = torch.tensor([[1, 2]] * len(PROMPTS))
    labels = torch.tensor([5, 6, 7])
    kw = {"score_ids": ids, "label_ids": labels, "max_new_tokens": 4, "batch_size": 3}
    cached = decode_with_prefix(model, PROMPTS, no_hook_fn, prefix=prefix, **kw)
    plain = decode(model, [prefix + p for p in PROMPTS], no_hook_fn, **kw)
    assert cached.tokens == plain.tokens and cached.label_pick == plain.label_pick
    assert _flat(cached.scores) == pytest.approx(_flat(plain.scores), abs=1e-4)
    assert cached.entropy == pytest.approx(plain.entropy, abs=1e-4)


def test_cached_prefix_runs_hooks_on_the_prompt_pass(model):
    site = "blocks.0.hook_resid_post"
    push = torch.randn(int(model.bridge.cfg.d_model), generator=torch.Generator().manual_seed(1))

    def hooks_for(enc, start):
        calls = {"n": 0}

        def hook(act, hook):
            calls["n"] += 1
            if calls["n"] > 1:
                return act
            out = act.clone()
            out[:, -1] += 5 * push.to(act.dtype)
            return out

        return [(site, hook)]

    prefix = _long_prefix(3)
    kw = {"max_new_tokens": 3, "batch_size": 2, "score_ids": torch.ones(3, 1).long()}
    texts = PROMPTS[:3]
    cached = decode_with_prefix(model, texts, hooks_for, prefix=prefix, **kw)
    plain = decode(model, [prefix + t for t in texts], hooks_for, **kw)
    unhooked = decode(model, [prefix + t for t in texts], no_hook_fn, **kw)
    assert cached.tokens == plain.tokens
    assert _flat(cached.scores) == pytest.approx(_flat(plain.scores), abs=1e-4)
    # and the hook did something
    assert _flat(plain.scores) != pytest.approx(_flat(unhooked.scores), abs=1e-4)


def test_cached_prefix_teacher_forcing_equals_the_plain_forward(model):
    prefix = _long_prefix(50)
    prompts, answers = ["Bob was born in", "The capital of Japan is"], [" Seoul", " green tea"]
    cached = answer_logprobs(model, prompts, answers, prefix=prefix)
    plain = answer_logprobs(model, [prefix + p for p in prompts], answers)
    assert [len(r) for r in cached] == [len(model.tokenizer(a)["input_ids"]) for a in answers]
    for c, p in zip(cached, plain, strict=True):
        assert c == pytest.approx(p, abs=1e-4)


def test_in_context_holds_one_prefix_and_refuses_only_what_does_not_fit(model):
    cases = CASES
    with InContext().edited(model, cases, Cost()) as held:
        assert held.prefix == stated(cases)
        assert held.prompts(["Q"]) == [stated(cases) + "Q"]
    budget = context_length(model) - 64
    assert InContext().budget(model) == budget == 2048 - 64
    long = [EditCase(str(i), f"Person {i}", "{} lives in", f"City {i}", "Rome") for i in range(300)]
    with (
        pytest.raises(TooLong, match=f"over the prefix budget of {budget}"),
        InContext().edited(model, long, Cost()),
    ):
        pass
    with (
        pytest.raises(TooLong, match="over the prefix budget of 5"),
        InContext(5).edited(model, cases, Cost()),
    ):
        pass
    near = _long_prefix(172)  # fits the budget, but not with a long probe after it
    assert len(model.tokenizer(near)["input_ids"]) <= budget
    with pytest.raises(TooLong, match="over the model's context of 2048"):
        decode_with_prefix(model, [" word" * 100], no_hook_fn, prefix=near, max_new_tokens=2)
    assert EditConfig(in_context_tokens=0).in_context_tokens == 0
    with pytest.raises(ConfigError, match="in_context_tokens"):
        EditConfig(in_context_tokens=-1)


def test_a_prefix_built_in_chunks_equals_one_pass(model):
    from analyses.edit.prefix_cache import Prefix

    prefix = _long_prefix(50)
    whole, parts = Prefix.build(model, prefix, chunk=4096), Prefix.build(model, prefix, chunk=100)
    assert whole.ids == parts.ids and len(whole.kv) == int(model.bridge.cfg.n_layers)
    for (k1, v1), (k2, v2) in zip(whole.kv, parts.kv, strict=True):
        assert k1.shape == k2.shape == (1, 1, len(whole.ids), 16)
        assert torch.allclose(k1, k2, atol=1e-5) and torch.allclose(v1, v2, atol=1e-5)
