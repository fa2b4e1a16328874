"""The value is the output correction in the space after the final norm, for the model as loaded."""

from __future__ import annotations

import re

import pytest
import torch

from fmi.core.prompts import encode
from fmi.core.sites import UNEMBED_IN, resid
from fmi.errors import ConfigError
from fmi.experiments.metrics import distribution
from fmi.experiments.tasks import Binding, Templates
from fmi.memory.values import correction_values, streamed_values, unembedding, values_from_probs
from fmi.memory.write import write


@pytest.mark.parametrize("fixture", ["tiny_pythia", "tiny_gemma", "tiny_neox"])
def test_final_norm_times_unembedding_is_the_logits(fixture, request):
    """``unembed.hook_in @ W_U + b_U == logits``: the space values live in (no weight
    processing: Pythia's untied ``embed_out`` with its final LayerNorm affine applied)."""
    model = request.getfixturevalue(fixture)
    enc = encode(model.tokenizer, ["In game A, blicket means"])
    with torch.inference_mode():
        logits, cache = model.bridge.run_with_cache(enc.tokens, names_filter=[UNEMBED_IN])
    w_u, b_u = unembedding(model.bridge)
    torch.testing.assert_close(cache[UNEMBED_IN] @ w_u + b_u, logits, rtol=1e-4, atol=1e-4)
    assert all(not v for v in model.processing.values())


def test_gemma_normalized_hook_is_before_the_norm_scale(tiny_gemma):
    """Why values use ``unembed.hook_in``: Gemma's ``ln_final.hook_normalized`` fires before the
    RMSNorm's ``(1 + w)`` scale, so it is not the unembedding's input."""
    enc = encode(tiny_gemma.tokenizer, ["In game A, blicket means"])
    names = [UNEMBED_IN, "ln_final.hook_normalized"]
    with torch.inference_mode():
        _, cache = tiny_gemma.bridge.run_with_cache(enc.tokens, names_filter=names)
    assert not torch.allclose(cache[names[0]], cache[names[1]], atol=1e-3)


def test_pythia_unembedding_is_untied(tiny_pythia):
    w_u, _ = unembedding(tiny_pythia.bridge)
    w_e = tiny_pythia.bridge.W_E.detach()
    assert w_u.shape == (512, 50304) and not torch.allclose(w_u, w_e.T)


def test_value_is_the_negative_cross_entropy_gradient(tiny_pythia):
    enc = encode(tiny_pythia.tokenizer, ["In game A, blicket means", "Question: what is dax?"])
    with torch.inference_mode():
        _, cache = tiny_pythia.bridge.run_with_cache(
            enc.tokens, attention_mask=enc.mask, names_filter=[UNEMBED_IN]
        )
    w_u, b_u = unembedding(tiny_pythia.bridge)
    h = cache[UNEMBED_IN][:, -1].clone().requires_grad_(True)
    targets = torch.tensor([tiny_pythia.tokenizer(" red")["input_ids"][0]] * 2)
    loss = torch.nn.functional.cross_entropy(h @ w_u + b_u, targets, reduction="sum")
    (grad,) = torch.autograd.grad(loss, h)
    values = correction_values(w_u, (h @ w_u + b_u).detach(), targets)
    torch.testing.assert_close(values, -grad, rtol=1e-4, atol=1e-5)


def test_vectorized_values_match_a_loop():
    gen = torch.Generator().manual_seed(0)
    w_u = torch.randn(8, 20, generator=gen)
    logits = torch.randn(5, 20, generator=gen)
    targets = torch.tensor([0, 3, 3, 19, 7])
    loop = torch.stack(
        [
            w_u[:, int(t)] - sum(torch.softmax(z, -1)[j] * w_u[:, j] for j in range(20))
            for z, t in zip(logits, targets, strict=True)
        ]
    )
    torch.testing.assert_close(correction_values(w_u, logits, targets), loop)


def test_streamed_values_equal_the_full_softmax():
    """The online-softmax stream (blocks that do not divide the vocabulary or the batch) gives
    the same values and entropies as one softmax over the materialized logits."""
    gen = torch.Generator().manual_seed(1)
    w_u = torch.randn(16, 1000, generator=gen)
    b_u = torch.randn(1000, generator=gen)
    h = 2.0 * torch.randn(9, 16, generator=gen)  # peaked and flat rows alike
    targets = torch.randint(0, 1000, (9,), generator=gen)
    probs, entropy = distribution(h @ w_u + b_u)
    values, ent = streamed_values(h, w_u, b_u, targets, chunk=77, rows=4)
    torch.testing.assert_close(values, values_from_probs(w_u, probs, targets), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ent, entropy, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_pythia", "tiny_gemma", "tiny_neox"])
def test_written_values_equal_the_models_own_logits(fixture, request):
    """``write`` skips the model's unembedding; its values and entropies still equal those
    computed from the logits the model itself returns for the statements."""
    model = request.getfixturevalue(fixture)
    bindings = [Binding("game A", "blicket", "red"), Binding("game B", "dax wug", "blue")]
    got = write(
        model,
        bindings,
        Templates(),
        symbol_site=resid(0),
        token_site=resid(0),
        inject_site=UNEMBED_IN,
        batch_size=1,
    )
    texts = [Templates().prompt("write", b) for b in bindings]
    enc = encode(model.tokenizer, texts)
    with torch.inference_mode():
        logits = model.bridge(enc.tokens, attention_mask=enc.mask)[:, -1]
    w_u, _ = unembedding(model.bridge)
    targets = torch.tensor([e.target for e in got.entries])
    probs, entropy = distribution(logits)
    torch.testing.assert_close(
        got.values, values_from_probs(w_u, probs, targets), rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(got.answer_entropy, entropy, rtol=1e-4, atol=1e-4)


def test_a_soft_capped_head_is_refused(tiny_gemma, monkeypatch):
    monkeypatch.setattr(tiny_gemma.hf_model.config, "final_logit_softcapping", 30.0)
    want = (
        "this model soft-caps its logits (final_logit_softcapping=30.0), so they are not "
        "h @ W_U + b_U and the streamed correction value would be wrong for it"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(want)}$"):
        unembedding(tiny_gemma.bridge, linear_only=True)
    w_u, _ = unembedding(tiny_gemma.bridge)  # by default a soft-capped head is read as it is
    assert torch.equal(w_u, tiny_gemma.bridge.W_U.float())


def test_unembedding_reads_the_bias_or_gives_zeros():
    from types import SimpleNamespace

    w = torch.arange(6.0).reshape(2, 3)
    got = unembedding(SimpleNamespace(W_U=w, b_U=torch.tensor([1.0, -2.0, 3.0])))
    assert torch.equal(got[0], w) and torch.equal(got[1], torch.tensor([1.0, -2.0, 3.0]))
    assert torch.equal(unembedding(SimpleNamespace(W_U=w, b_U=None))[1], torch.zeros(3))
    assert torch.equal(unembedding(SimpleNamespace(W_U=w))[1], torch.zeros(3))  # no bias at all
    no_config = SimpleNamespace(W_U=w, original_model=SimpleNamespace())
    assert torch.equal(unembedding(no_config, linear_only=True)[1], torch.zeros(3))


def test_streamed_values_cover_every_row_and_every_column():
    """More rows than dimensions, blocks of 3 rows, and most of the mass on column 0."""
    gen = torch.Generator().manual_seed(2)
    w_u, h = torch.randn(4, 50, generator=gen), torch.randn(20, 4, generator=gen)
    b_u = torch.zeros(50)
    b_u[0] = 12.0
    targets = torch.randint(0, 50, (20,), generator=gen)
    probs, entropy = distribution(h @ w_u + b_u)
    values, ent = streamed_values(h, w_u, b_u, targets, chunk=7, rows=3)
    torch.testing.assert_close(values, values_from_probs(w_u, probs, targets), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ent, entropy, rtol=1e-4, atol=1e-5)


def test_streamed_values_stay_on_the_inputs_device():
    """``meta`` stands in for a second device on a CPU-only machine."""
    h, w_u, b_u = torch.zeros(3, 4), torch.zeros(4, 10), torch.zeros(10)
    values, ent = streamed_values(
        h.to("meta"), w_u.to("meta"), b_u.to("meta"), torch.tensor([0, 1, 2]).to("meta"), chunk=4
    )
    assert values.device.type == "meta" and ent.device.type == "meta"


def test_streamed_values_shift_each_row_by_its_own_max():
    """Rows whose logits sit hundreds of nats apart: one shared shift would underflow the lower
    row's exponentials to 0 (and its value to nan)."""
    w_u = torch.tensor([[1.0, 0.5, 0.2, 0.1]])  # row 1's logits peak at -30, row 0's at +300
    h = torch.tensor([[300.0], [-300.0]])
    targets = torch.tensor([0, 2])
    probs, entropy = distribution(h @ w_u)
    values, ent = streamed_values(h, w_u, torch.zeros(4), targets, chunk=2)
    assert torch.isfinite(values).all() and torch.isfinite(ent).all()
    torch.testing.assert_close(values, values_from_probs(w_u, probs, targets))
    torch.testing.assert_close(ent, entropy, rtol=1e-4, atol=1e-5)
