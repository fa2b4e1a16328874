"""Integration on the real offline models (slow: minutes on a first load, seconds after).

``make test`` runs these too; ``make test-fast`` leaves them out during development.
"""

from __future__ import annotations

import pytest
import torch

from fmi.core.prompts import encode
from fmi.core.sites import UNEMBED_IN
from fmi.experiments.builtin_tasks import builtin_task
from fmi.experiments.config import RecallConfig
from fmi.experiments.labels import check_labels
from fmi.experiments.recall import run_recall, task_for
from fmi.memory.values import unembedding
from fmi.models.fingerprint import parameter_checksum
from fmi.models.registry import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["gemma-3-270m", "smollm2-135m"])
def real(request):
    lines: list[str] = []
    model = load_model(request.param, announce=lines.append)
    assert lines and all("\n" not in line for line in lines)
    return model


def test_loads_frozen_with_exact_unembedding_identity(real):
    assert real.to_dict()["tied_embeddings"] is True
    assert all(not p.requires_grad for p in real.bridge.parameters())
    enc = encode(real.tokenizer, ["In game A, blicket means"])
    with torch.inference_mode():
        logits, cache = real.bridge.run_with_cache(enc.tokens, names_filter=[UNEMBED_IN])
    w_u, b_u = unembedding(real.bridge)
    torch.testing.assert_close(cache[UNEMBED_IN] @ w_u + b_u, logits, rtol=1e-3, atol=1e-3)
    check_labels(builtin_task(seed=0), real.tokenizer)


def test_recall_on_gemma_reaches_its_targets():
    """A reduced run (10 held-out symbols per split): dual-key reads back what it wrote and
    leaves contextless and unrelated prompts alone; the model is bit-identical afterwards."""
    model = load_model("gemma-3-270m", announce=lambda _: None)
    before = parameter_checksum(model)
    cfg = RecallConfig(
        model="gemma-3-270m", modes=("both_top1", "dual_key"), n_eval=10, n_bootstrap=100
    )
    doc = run_recall(model, task_for(cfg), cfg, progress=False)
    assert parameter_checksum(model) == before
    for split in ("same", "new_game", "new_lab"):
        row = doc["results"]["dual_key"][split]
        assert row["retrieval"] >= 0.95 and row["first_token"]["read"] >= 0.9
        assert row["plain"] <= 0.05 and row["unrelated_changed"] <= 0.02
    assert doc["results"]["both_top1"]["same"]["read"] >= 0.7
    for split in ("multi_same", "multi_new_lab"):  # answers of 1 to 4 tokens, whole answer read
        row = doc["results"]["dual_key"][split]
        assert row["read"] >= 0.8 and row["answer_prefix"]["read"] >= row["read"]
        assert row["plain"] <= 0.05 and row["unrelated_changed"] <= 0.02


def test_the_plain_copy_folder_loads_the_registry_model():
    """``--model ~/.cache/fmi/plain/gemma-3-270m`` is ``--model gemma-3-270m``: the same
    parameters, architecture and logits; only the name and source differ."""
    from fmi.models.fingerprint import config_checksum
    from fmi.models.gguf import plain_dir

    registry = load_model("gemma-3-270m", announce=lambda _: None)
    folder = plain_dir("gemma-3-270m")
    local = load_model(str(folder), announce=lambda _: None)
    assert parameter_checksum(local) == parameter_checksum(registry)
    assert config_checksum(local) == config_checksum(registry)
    enc = encode(registry.tokenizer, ["In game A, blicket means", "The capital of France is"])
    with torch.inference_mode():
        torch.testing.assert_close(
            local.bridge(enc.tokens, attention_mask=enc.mask),
            registry.bridge(enc.tokens, attention_mask=enc.mask),
            rtol=0,
            atol=0,
        )
    differ = {k for k, v in local.to_dict().items() if registry.to_dict()[k] != v}
    assert differ == {"name", "requested", "source"}
    assert local.source == str(folder.resolve()) and local.slug == "gemma-3-270m"
