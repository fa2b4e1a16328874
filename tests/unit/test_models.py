"""The model registry: names, errors, offline behaviour, freezing, hooks, logits, checksums."""

from __future__ import annotations

import time

import pytest
import torch

from fmi.errors import ModelUnavailableError, UnknownModelError
from fmi.models import registry as models
from fmi.models.fingerprint import parameter_checksum
from fmi.models.registry import REGISTRY, list_models, load_model
from fmi.models.tiny import tiny_hf_model

TINY = ["tiny_neox", "tiny_pythia", "tiny_gemma"]
HELLO_IDS = [12092, 13, 309, 717]


def test_registry_lists_names() -> None:
    expected = {"pythia-70m", "gemma-3-270m", "smollm2-135m", "tiny-neox", "tiny-pythia-arch"}
    sizes = ("70m", "160m", "410m", "1b", "1.4b")
    pythia = {f"pythia-{s}{d}" for s in sizes for d in ("", "-deduped")}
    assert expected | pythia | {"tiny-gemma"} == set(REGISTRY)
    started = time.perf_counter()
    infos = list_models()
    assert time.perf_counter() - started < 5
    assert [i.name for i in infos] == list(REGISTRY)
    assert all(i.description and i.reason for i in infos)
    assert {i.name for i in infos if i.available} >= {"tiny-neox", "tiny-pythia-arch", "tiny-gemma"}


def test_unknown_name_lists_registered_names() -> None:
    with pytest.raises(UnknownModelError) as err:
        load_model("gpt-17", announce=lambda _: None)
    message = str(err.value)
    assert "gpt-17" in message and "\n" not in message
    assert all(name in message for name in REGISTRY)


def _pythia_loadable() -> bool:
    return models.model_status("pythia-70m")[0]


def test_pythia_unavailable_offline_fails_fast() -> None:
    if _pythia_loadable():
        pytest.skip("pythia-70m is loadable here (HF cache or Hub reachable)")
    started = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        load_model("pythia-70m", announce=lambda _: None)
    assert time.perf_counter() - started < 5
    message = str(err.value)
    assert "\n" not in message
    assert "gemma-3-270m" in message and "smollm2-135m" in message


def test_auto_announces_choice_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    chosen = models.resolve_auto(lines.append)
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("fmi: model auto -> ")
    assert chosen in ("pythia-70m", "gemma-3-270m")
    if chosen == "gemma-3-270m":
        assert "pythia-70m unavailable" in lines[0]

    # auto loads whatever it resolved to; stub the heavy load to check the bookkeeping only.
    monkeypatch.setattr(models, "resolve_auto", lambda announce: "tiny-neox")
    loaded = load_model("auto", announce=lines.append)
    assert loaded.requested == "auto" and loaded.name == "tiny-neox"


def test_explicit_name_does_not_fall_back() -> None:
    if _pythia_loadable():
        pytest.skip("pythia-70m is loadable here")
    lines: list[str] = []
    with pytest.raises(ModelUnavailableError):
        load_model("pythia-70m", announce=lines.append)
    assert not any("->" in line for line in lines)


@pytest.mark.parametrize("fixture", TINY)
def test_tiny_models_are_frozen(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    params = list(model.bridge.parameters())
    assert params and not any(p.requires_grad for p in params)
    assert not model.bridge.training
    assert not any(m.training for m in model.hf_model.modules())
    assert model.processing == dict.fromkeys(models.PROCESSING_FLAGS, False)


def test_tiny_pythia_has_pythia_config(tiny_pythia) -> None:
    info = tiny_pythia.to_dict()
    assert (info["n_layers"], info["d_model"], info["d_vocab"]) == (6, 512, 50304)
    cfg = tiny_pythia.bridge.cfg
    assert (cfg.n_heads, cfg.d_mlp) == (8, 2048)
    hf = tiny_pythia.hf_model.config
    assert hf.use_parallel_residual and hf.max_position_embeddings == 2048
    assert hf.layer_norm_eps == 1e-5 and hf.hidden_act == "gelu"
    assert hf.rope_parameters["partial_rotary_factor"] == 0.25
    assert info["tied_embeddings"] is False
    w_e, w_u = tiny_pythia.bridge.W_E, tiny_pythia.bridge.W_U
    assert w_u.shape == w_e.T.shape and not torch.equal(w_u, w_e.T)


def test_neox_tokenizer_matches_pythia(tiny_pythia) -> None:
    assert tiny_pythia.tokenizer("Hello, I am")["input_ids"] == HELLO_IDS


def test_bridge_hooks_exist_and_fire(tiny_pythia) -> None:
    names = ["blocks.0.hook_resid_pre", "blocks.5.hook_resid_post", "ln_final.hook_normalized"]
    tokens = torch.tensor([HELLO_IDS])
    _, cache = tiny_pythia.bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    for name in names:
        assert cache[name].shape == (1, len(HELLO_IDS), 512), name


@pytest.mark.parametrize(
    ("fixture", "name"),
    [("tiny_neox", "tiny-neox"), ("tiny_pythia", "tiny-pythia-arch"), ("tiny_gemma", "tiny-gemma")],
)
def test_bridge_logits_equal_hf(fixture: str, name: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    reference = tiny_hf_model(name, seed=0)  # an independent HF module, same seed
    tokens = torch.tensor([HELLO_IDS, [0, 1, 2, 3]])
    with torch.no_grad():
        bridge_logits = model.bridge(tokens)
        hf_logits = reference(tokens).logits
    assert torch.isfinite(bridge_logits).all()
    torch.testing.assert_close(bridge_logits, hf_logits, rtol=0, atol=1e-5)


def test_seed_changes_weights(tiny_neox) -> None:
    other = load_model("tiny-neox", seed=1, announce=lambda _: None)
    assert parameter_checksum(other) != parameter_checksum(tiny_neox)


def test_to_dict_fields(tiny_gemma) -> None:
    info = tiny_gemma.to_dict()
    assert info["name"] == "tiny-gemma" and info["requested"] == "tiny-gemma"
    assert info["tied_embeddings"] is True
    assert (info["n_layers"], info["d_model"], info["d_vocab"]) == (2, 64, 50304)
    assert "bridge" not in info and "tokenizer" not in info


def test_checksum_stable_and_sensitive() -> None:
    model = load_model("tiny-neox", seed=0, announce=lambda _: None)  # fresh: we mutate it
    first = parameter_checksum(model)
    assert parameter_checksum(model) == first
    with torch.no_grad():
        next(model.hf_model.parameters()).view(-1)[0] += 1.0
    assert parameter_checksum(model) != first
