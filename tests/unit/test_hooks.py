"""Hook arithmetic: only the chosen site and positions change, by exactly the added vector."""

from __future__ import annotations

import pytest
import torch

from fmi.core.hooks import add_at_positions
from fmi.core.prompts import encode
from fmi.core.sites import UNEMBED_IN, check_site, resid

TEXTS = ["In game A, blicket means", "Question: in game A, what is blicket? Answer:"]
SITES = [resid(0, "pre"), resid(1, "pre"), resid(1, "post"), UNEMBED_IN]


def _all_resid(bridge, enc, hooks=()):
    names = set(SITES)
    with bridge.hooks(fwd_hooks=list(hooks)):
        logits, cache = bridge.run_with_cache(
            enc.tokens, attention_mask=enc.mask, names_filter=lambda n: n in names
        )
    return logits, {s: cache[s] for s in SITES}


@pytest.mark.parametrize("fixture", ["tiny_neox", "tiny_gemma"])
def test_add_changes_exactly_site_and_positions(fixture, request):
    model = request.getfixturevalue(fixture)
    bridge = model.bridge
    enc = encode(model.tokenizer, TEXTS)
    d = bridge.cfg.d_model
    delta = torch.randn(2, d, generator=torch.Generator().manual_seed(1))
    pos = torch.tensor([enc.tokens.shape[1] - 1, enc.tokens.shape[1] - 3])
    site = resid(1, "pre")
    _, clean = _all_resid(bridge, enc)
    _, hooked = _all_resid(bridge, enc, [(site, add_at_positions(delta, pos))])
    # the chosen site: clean + delta at exactly the chosen positions, identical elsewhere
    expected = clean[site].clone()
    expected[torch.arange(2), pos] += delta
    torch.testing.assert_close(hooked[site], expected, rtol=0, atol=1e-5)
    untouched = torch.ones(enc.tokens.shape, dtype=torch.bool)
    untouched[torch.arange(2), pos] = False
    # earlier sites are unchanged everywhere; later sites only at or after the chosen positions
    torch.testing.assert_close(hooked[resid(0, "pre")], clean[resid(0, "pre")], rtol=0, atol=0)
    for row in range(2):  # real tokens only: padding rows' outputs are never read
        before = slice(int(enc.pad[row]), int(pos[row]))
        for later in (resid(1, "post"), UNEMBED_IN):
            torch.testing.assert_close(
                hooked[later][row, before], clean[later][row, before], rtol=0, atol=1e-5
            )


def test_inactive_rows_are_untouched(tiny_neox):
    enc = encode(tiny_neox.tokenizer, TEXTS)
    delta = torch.ones(2, tiny_neox.bridge.cfg.d_model)
    pos = torch.full((2,), enc.tokens.shape[1] - 1)
    site = resid(1, "post")
    _, clean = _all_resid(tiny_neox.bridge, enc)
    active = torch.tensor([True, False])
    _, hooked = _all_resid(tiny_neox.bridge, enc, [(site, add_at_positions(delta, pos, active))])
    torch.testing.assert_close(hooked[site][1], clean[site][1], rtol=0, atol=0)
    torch.testing.assert_close(hooked[site][0, -1], clean[site][0, -1] + 1, rtol=0, atol=1e-5)


def test_kv_cache_steps_track_absolute_positions(tiny_neox):
    """Under KV-cached generation the hook sees [b, P, d] then [b, 1, d] per step; a vector aimed
    at the prompt's last position lands once, and one aimed at a generated position lands there."""
    bridge = tiny_neox.bridge
    enc = encode(tiny_neox.tokenizer, TEXTS[:1])
    width = enc.tokens.shape[1]
    site = resid(1, "post")
    seen = []
    inner = add_at_positions(torch.full((1, bridge.cfg.d_model), 5.0), torch.tensor([width + 1]))

    def spy(act, hook):
        out = inner(act, hook)
        seen.append((tuple(act.shape), float((out - act).abs().sum())))
        return out

    with bridge.hooks(fwd_hooks=[(site, spy)]):
        bridge.generate(
            enc.tokens,
            max_new_tokens=4,
            do_sample=False,
            verbose=False,
            stop_at_eos=False,
            use_past_kv_cache=True,
        )
    assert [s[0][1] for s in seen] == [width, 1, 1, 1]
    changed = [i for i, (_, diff) in enumerate(seen) if diff > 0]
    assert changed == [2]  # absolute position width + 1 is the second generated step's input


@pytest.mark.parametrize("fixture", ["tiny_neox", "tiny_pythia", "tiny_gemma"])
def test_kv_cache_and_full_recompute_agree(fixture, request):
    """Greedy output with injection is the same with and without the KV cache, and it is not the
    clean output: the vector lands once, at the answer position, in both. (transformers 5.24.0
    broke the Bridge's Gemma-3 KV cache: every cached step then ran without its context.)"""
    from fmi.memory.values import unembedding

    model = request.getfixturevalue(fixture)
    bridge = model.bridge
    enc = encode(model.tokenizer, TEXTS[:1])
    w_u, _ = unembedding(bridge)
    target = 1234
    delta = (40 * w_u[:, target] / w_u[:, target].norm())[None]
    pos = torch.tensor([enc.tokens.shape[1] - 1])
    kw = dict(max_new_tokens=4, do_sample=False, verbose=False, stop_at_eos=False)
    outs = []
    for cached in (True, False):
        with bridge.hooks(fwd_hooks=[(UNEMBED_IN, add_at_positions(delta, pos))]):
            outs.append(bridge.generate(enc.tokens, use_past_kv_cache=cached, **kw))
    clean = bridge.generate(enc.tokens, **kw)
    assert torch.equal(outs[0], outs[1])
    width = enc.tokens.shape[1]
    assert int(outs[0][0, width]) == target != int(clean[0, width])


@pytest.mark.parametrize("fixture", ["tiny_neox", "tiny_pythia", "tiny_gemma"])
def test_greedy_continues_as_the_frozen_model_after_the_injected_token(fixture, request):
    """Through ``greedy`` (left padding, KV cache, answer-position logits): after the injected
    first token, every later token is the frozen model's own greedy continuation of the prompt
    followed by that token, as a full forward with no cache computes it."""
    from fmi.core.generate import greedy
    from fmi.memory.values import unembedding

    model = request.getfixturevalue(fixture)
    w_u, _ = unembedding(model.bridge)
    delta = 40 * w_u[:, [1234, 777]].T / w_u[:, [1234, 777]].norm(dim=0)[:, None]
    got = greedy(model, TEXTS[:2], site=UNEMBED_IN, deltas=delta, max_new_tokens=4, batch_size=2)
    for text, new in zip(TEXTS[:2], got.tokens, strict=True):
        ids = torch.cat([encode(model.tokenizer, [text]).tokens, torch.tensor([new[:1]])], dim=1)
        for tok in new[1:]:
            with torch.inference_mode():
                assert int(model.bridge(ids)[0, -1].argmax()) == tok
            ids = torch.cat([ids, torch.tensor([[tok]])], dim=1)


def _n_hooks(bridge) -> int:
    return sum(len(hp._forward_hooks) for hp in bridge.hook_dict.values())


def test_no_hook_left_after_exception(tiny_neox):
    bridge = tiny_neox.bridge
    enc = encode(tiny_neox.tokenizer, TEXTS)
    before = _n_hooks(bridge)

    def boom(act, hook):
        raise RuntimeError("inside the hooked run")

    with (
        pytest.raises(RuntimeError, match="inside the hooked run"),
        bridge.hooks(fwd_hooks=[(resid(1, "post"), boom)]),
    ):
        bridge(enc.tokens, attention_mask=enc.mask)
    assert _n_hooks(bridge) == before
    # and the model runs clean afterwards
    torch.testing.assert_close(
        bridge(enc.tokens, attention_mask=enc.mask), bridge(enc.tokens, attention_mask=enc.mask)
    )


def test_bad_shapes_and_sites_are_named(tiny_neox):
    with pytest.raises(ValueError, match="delta must be"):
        add_at_positions(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    from fmi.errors import ConfigError

    with pytest.raises(ConfigError, match="blocks.99.hook_resid_post"):
        check_site(tiny_neox.bridge, "blocks.99.hook_resid_post")
    assert check_site(tiny_neox.bridge, UNEMBED_IN) == UNEMBED_IN


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_pythia"])
def test_greedy_injection_moves_step_one_logits_by_delta_times_unembedding(fixture, request):
    """Through ``greedy`` itself (KV cache, left padding, ``logits_to_keep``): the step-one label
    pick equals the argmax of ``clean_logits + delta @ W_U`` over the labels, row by row."""
    from fmi.core.generate import greedy
    from fmi.memory.values import unembedding

    model = request.getfixturevalue(fixture)
    enc = encode(model.tokenizer, TEXTS)
    with torch.inference_mode():
        clean = model.bridge(enc.tokens, attention_mask=enc.mask)[:, -1]
    w_u, _ = unembedding(model.bridge)
    gen = torch.Generator().manual_seed(3)
    labels = torch.randperm(w_u.shape[1], generator=gen)[:50]
    for scale in (0.5, 2.0, 8.0):
        delta = scale * torch.randn(2, w_u.shape[0], generator=gen)
        out = greedy(model, TEXTS, site=UNEMBED_IN, deltas=delta, label_ids=labels)
        expected = (clean + delta @ w_u)[:, labels].argmax(-1)
        assert out.label_pick == expected.tolist()
    base = greedy(model, TEXTS, site=UNEMBED_IN, label_ids=labels)
    assert base.label_pick == clean[:, labels].argmax(-1).tolist()
    # a vector along one label's unembedding column makes it the greedy token
    target = int(labels[7])
    push = 50 * w_u[:, target].repeat(2, 1) / w_u[:, target].norm()
    forced = greedy(model, TEXTS, site=UNEMBED_IN, deltas=push, max_new_tokens=2)
    assert [t[0] for t in forced.tokens] == [target, target]


def test_unembed_hook_in_misses_the_answer_position_under_logits_to_keep(tiny_gemma):
    """Why values are injected at ``ln_final.hook_out`` and not ``unembed.hook_in``: with
    ``logits_to_keep=1`` the latter sees one position on the prompt step, so a position-tracking
    hook there never reaches the answer position (if TransformerLens changes this, revisit)."""
    from fmi.core.generate import greedy
    from fmi.memory.values import unembedding

    w_u, _ = unembedding(tiny_gemma.bridge)
    push = 50 * w_u[:, 99].repeat(2, 1) / w_u[:, 99].norm()
    here = greedy(tiny_gemma, TEXTS, site=UNEMBED_IN, deltas=push, max_new_tokens=1)
    there = greedy(tiny_gemma, TEXTS, site="unembed.hook_in", deltas=push, max_new_tokens=1)
    clean = greedy(tiny_gemma, TEXTS, site=UNEMBED_IN, max_new_tokens=1)
    assert [t[0] for t in here.tokens] == [99, 99]
    assert there.tokens == clean.tokens
