"""Multi-token reading: value t is added at generation step t, and nothing after a departure."""

from __future__ import annotations

import pytest
import torch

from fmi.core.generate import decode, greedy, greedy_sequences
from fmi.core.hooks import LOGITS_SITE, sequence_hooks
from fmi.core.sites import UNEMBED_IN, resid
from fmi.memory.values import unembedding

PROMPTS = ["In game A, blicket means", "Alice's favourite drink is", "Hello"]
STEPS = 4


def _run(model, site, deltas, tokens):
    """Greedy decode with the sequence hooks between two recorders at ``site``: per step, the
    activation at the last position before and after the injection."""
    pre: list[torch.Tensor] = []
    post: list[torch.Tensor] = []
    picks: list[list[int]] = []

    def record(into):
        def hook(act, hook):
            into.append(act[:, -1].detach().clone())
            return act

        return hook

    def pick(act, hook):
        picks.append(act[:, -1].argmax(-1).tolist())
        return act

    def hooks_for(enc, start):
        (s, inject), (logit_site, follow) = sequence_hooks(site, deltas, tokens)
        return [
            (s, record(pre)),
            (s, inject),
            (s, record(post)),
            (logit_site, follow),
            (LOGITS_SITE, pick),
        ]

    out = decode(model, PROMPTS, hooks_for, max_new_tokens=STEPS, batch_size=len(PROMPTS))
    return out, pre, post, picks


def _pushing(model, targets: list[list[int]], scale: float = 200.0) -> list[torch.Tensor]:
    """Vectors along ``W_U[:, t]``, large enough that greedy picks ``t``."""
    w_u, _ = unembedding(model.bridge)
    return [scale * torch.nn.functional.normalize(w_u[:, t].T, dim=-1) for t in targets]


@pytest.mark.parametrize("site", [UNEMBED_IN, "last_resid"])
def test_value_t_lands_at_step_t_while_on_track(tiny_neox, site):
    if site == "last_resid":
        site = resid(int(tiny_neox.bridge.cfg.n_layers) - 1, "post")
    tokens = [[11, 12, 13], [21, 22], []]
    deltas = _pushing(tiny_neox, tokens[:2]) + [None]
    out, pre, post, picks = _run(tiny_neox, site, deltas, tokens)
    assert [list(t[:3]) for t in out.tokens[:1]] == [[11, 12, 13]]
    assert list(out.tokens[1][:2]) == [21, 22]
    assert [p for p in zip(*picks, strict=True)][0][:STEPS] == out.tokens[0]  # the hook's picks
    for step in range(STEPS):
        for row in range(len(PROMPTS)):
            d = deltas[row]
            if d is not None and step < len(tokens[row]):
                assert torch.equal(post[step][row], pre[step][row] + d[step]), (step, row)
            else:
                assert torch.equal(post[step][row], pre[step][row]), (step, row)


def test_nothing_is_added_after_the_first_departure(tiny_neox):
    w_u, _ = unembedding(tiny_neox.bridge)
    # row 0 is pushed to 11 at step 0, but its stored second token (99) is never produced: the
    # zero second vector lets the model pick its own token, which departs, so step 2 gets nothing
    stored = [[11, 99, 13], [21, 22, 23], [31]]
    push = _pushing(tiny_neox, stored)
    push[0][1] = 0.0
    out, pre, post, _ = _run(tiny_neox, UNEMBED_IN, push, stored)
    assert out.tokens[0][0] == 11 and out.tokens[0][1] != 99
    assert torch.equal(post[2][0], pre[2][0])  # departed at step 1: no vector at step 2
    assert torch.equal(post[1][0], pre[1][0] + push[0][1])  # step 1 itself still got its vector
    assert list(out.tokens[1][:3]) == [21, 22, 23]
    assert torch.equal(post[3][1], pre[3][1])  # past the end of the stored answer
    assert out.tokens[2][0] == 31 and torch.equal(post[1][2], pre[1][2])


def test_no_hook_remains_after_generation_or_an_exception(tiny_neox):
    bridge = tiny_neox.bridge
    tokens = [[11], [21], [31]]
    _run(tiny_neox, UNEMBED_IN, _pushing(tiny_neox, tokens), tokens)

    def hooks_for(enc, start):
        def boom(act, hook):
            raise RuntimeError("boom")

        return [
            *sequence_hooks(UNEMBED_IN, _pushing(tiny_neox, tokens), tokens),
            (UNEMBED_IN, boom),
        ]

    with pytest.raises(RuntimeError, match="boom"):
        decode(tiny_neox, PROMPTS, hooks_for, max_new_tokens=2, batch_size=3)
    assert all(not h._forward_hooks for h in bridge.hook_dict.values())


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="2 delta sequences but 1"):
        sequence_hooks(UNEMBED_IN, [None, None], [[1]])
    with pytest.raises(ValueError, match=r"\[len\(tokens\), d\]"):
        sequence_hooks(UNEMBED_IN, [torch.zeros(3, 4)], [[1, 2]])


def test_one_step_sequences_decode_exactly_as_greedy_with_a_delta(tiny_neox):
    g = torch.Generator().manual_seed(0)
    deltas = 30 * torch.randn(len(PROMPTS), int(tiny_neox.bridge.cfg.d_model), generator=g)
    active = torch.tensor([True, False, True])
    plain = greedy(
        tiny_neox,
        PROMPTS,
        site=UNEMBED_IN,
        deltas=deltas,
        active=active,
        max_new_tokens=3,
        batch_size=2,
    )
    seqs = [deltas[i : i + 1] if bool(active[i]) else None for i in range(len(PROMPTS))]
    firsts = [[plain.tokens[i][0]] for i in range(len(PROMPTS))]
    got = greedy_sequences(
        tiny_neox,
        PROMPTS,
        site=UNEMBED_IN,
        sequences=seqs,
        tokens=firsts,
        max_new_tokens=3,
        batch_size=2,
    )
    assert got.tokens == plain.tokens and got.entropy == plain.entropy


def test_greedy_sequences_follow_a_pushed_answer_and_check_lengths(tiny_neox):
    stored = [[11, 12, 13], [21, 22, 23], [31, 32, 33]]
    got = greedy_sequences(
        tiny_neox,
        PROMPTS,
        site=UNEMBED_IN,
        sequences=_pushing(tiny_neox, stored),
        tokens=stored,
        max_new_tokens=3,
        batch_size=2,
    )
    assert [list(t) for t in got.tokens] == stored
    with pytest.raises(ValueError, match="3 texts, 1 sequences"):
        greedy_sequences(tiny_neox, PROMPTS, site=UNEMBED_IN, sequences=[None], tokens=[[1]])
