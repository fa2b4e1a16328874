"""The frozen forward's two shortcuts change no number: the answer-position index and no head."""

from __future__ import annotations

import pytest
import torch

from fmi.core.forward import NO_LOGITS, answer_only, collect
from fmi.core.prompts import encode
from fmi.core.sites import UNEMBED_IN, resid

TEXTS = ["In game A, blicket means", "Question: what is dax?", "hi"]


@pytest.mark.parametrize("fixture", ["tiny_pythia", "tiny_gemma", "tiny_neox"])
def test_answer_index_gives_the_last_columns_logits(fixture, request):
    """``logits_to_keep=answer_only(tokens)`` returns exactly the answer column of the full
    logits, for every row of a left-padded batch."""
    model = request.getfixturevalue(fixture)
    enc = encode(model.tokenizer, TEXTS)
    with torch.inference_mode():
        full = model.bridge(enc.tokens, attention_mask=enc.mask)
        one = model.bridge(
            enc.tokens, attention_mask=enc.mask, logits_to_keep=answer_only(enc.tokens)
        )
    assert one.shape == (len(TEXTS), 1, full.shape[-1])
    torch.testing.assert_close(one[:, 0], full[:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_pythia", "tiny_gemma"])
def test_skipping_the_head_leaves_every_site_unchanged(fixture, request):
    """``NO_LOGITS`` skips the unembedding; the final norm and the blocks see the same states."""
    model = request.getfixturevalue(fixture)
    enc = encode(model.tokenizer, TEXTS)
    sites = [resid(0), UNEMBED_IN]
    with torch.inference_mode():
        logits, none = model.bridge.run_with_cache(
            enc.tokens, attention_mask=enc.mask, names_filter=sites, logits_to_keep=NO_LOGITS
        )
        _, full = model.bridge.run_with_cache(
            enc.tokens, attention_mask=enc.mask, names_filter=sites
        )
    assert logits.shape[1] == 0
    for site in sites:
        torch.testing.assert_close(none[site], full[site], rtol=1e-5, atol=1e-5)
    got = collect(model.bridge, model.tokenizer, TEXTS, sites, batch_size=2)
    for i, n in enumerate(enc.lengths):
        torch.testing.assert_close(got.acts[UNEMBED_IN][i], full[UNEMBED_IN][i, -n:].float())
