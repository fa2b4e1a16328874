"""Loading by registry name, Hugging Face id or local folder, at a revision, on a device, in a
dtype: names resolved without loading, devices and dtypes checked first, one-line refusals, and
a memory that follows its model's device and dtype."""

from __future__ import annotations

import time

import pytest
import torch

from fmi.errors import ConfigError, DeviceUnavailableError, ModelUnavailableError, UnknownModelError
from fmi.models import placement
from fmi.models.hub import hub_status
from fmi.models.registry import HUB_MODELS, load_model, report_name, resolve_name
from fmi.models.tiny import neox_tokenizer, tiny_hf_model


def _quiet(_: str) -> None:
    """Swallow load announcements."""


def available_devices() -> list[str]:
    """Every device this machine can run a model on: the CPU, then each CUDA device."""
    return ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


# --------------------------------------------------------------------------- names


def test_names_resolve_without_loading(tmp_path):
    assert resolve_name("gemma-3-270m") == ("registry", "gemma-3-270m")
    assert resolve_name("pythia-1.4b-deduped") == ("registry", "pythia-1.4b-deduped")
    assert resolve_name("EleutherAI/pythia-410m") == ("hub", "EleutherAI/pythia-410m")
    assert resolve_name(str(tmp_path)) == ("local", str(tmp_path.resolve()))
    assert HUB_MODELS["pythia-160m-deduped"] == "EleutherAI/pythia-160m-deduped"
    assert len(HUB_MODELS) == 10


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("gpt-17", "unknown model 'gpt-17'"),
        ("./missing/model", "no model directory at './missing/model'"),
        ("/no/such/dir", "no model directory at '/no/such/dir'"),
        ("a/b/c", "no model directory at 'a/b/c'"),
    ],
)
def test_a_name_that_is_nothing_is_refused_in_one_line(name, start):
    with pytest.raises(UnknownModelError) as err:
        resolve_name(name)
    assert str(err.value).startswith(start) and "\n" not in str(err.value)


def test_report_names():
    assert report_name("gemma-3-270m") == "gemma-3-270m"
    assert report_name("EleutherAI/pythia-70m", "step3000") == "EleutherAI--pythia-70m@step3000"
    assert report_name("/home/me/models/plain-gemma") == "plain-gemma"


# --------------------------------------------------------------------------- devices, dtypes


def test_devices_resolve_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement.resolve_device("auto") == "cpu"
    assert placement.resolve_device("CPU") == "cpu"
    for name in ("cuda", "cuda:0"):
        with pytest.raises(DeviceUnavailableError) as err:
            placement.resolve_device(name)
        message = str(err.value)
        assert message.startswith(f"device '{name}' needs CUDA") and "--device cpu" in message
    with pytest.raises(ConfigError, match="unknown device 'cuda:x'"):
        placement.resolve_device("cuda:x")


def test_devices_resolve_on_a_machine_with_two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert placement.resolve_device("auto") == "cuda:1"
    assert placement.resolve_device("cuda") == "cuda:1"
    assert placement.resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(DeviceUnavailableError, match="has 2 CUDA device"):
        placement.resolve_device("cuda:2")


def test_a_missing_device_is_refused_before_anything_loads(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded: list[str] = []
    monkeypatch.setattr("fmi.models.registry._load_hf", lambda *a: loaded.append("x"))
    with pytest.raises(DeviceUnavailableError):
        load_model("tiny-gemma", device="cuda", announce=_quiet)
    with pytest.raises(ConfigError, match="unknown dtype"):
        load_model("tiny-gemma", dtype="float64", announce=_quiet)
    assert loaded == []


def test_place_casts_floating_parameters_only():
    module = torch.nn.Embedding(4, 3)
    module.register_buffer("freq", torch.ones(2))
    placement.place(module, "cpu", torch.bfloat16)
    assert module.weight.dtype == torch.bfloat16 and module.freq.dtype == torch.float32


# --------------------------------------------------------------------------- sources


def test_a_revision_is_for_hub_models_only(tmp_path):
    with pytest.raises(ConfigError, match="tiny-gemma has no revisions"):
        load_model("tiny-gemma", revision="step1000", announce=_quiet)
    with pytest.raises(ConfigError, match="local directory has no revisions"):
        load_model(str(tmp_path), revision="main", announce=_quiet)
    with pytest.raises(ConfigError, match="non-empty string"):
        load_model("tiny-gemma", revision=" ", announce=_quiet)


def _hub_answers() -> bool:
    return hub_status("EleutherAI/pythia-160m", "step1000")[0]


def test_an_uncached_hub_id_offline_fails_in_about_a_second():
    if _hub_answers():
        pytest.skip("the Hub answers here (or the checkpoint is cached)")
    started = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        load_model("EleutherAI/pythia-160m", revision="step1000", announce=_quiet)
    assert time.perf_counter() - started < 3
    message = str(err.value)
    assert message.startswith(
        "EleutherAI/pythia-160m is unavailable: EleutherAI/pythia-160m@step1000 is not in the "
        "local Hugging Face cache and the Hub is unreachable"
    )
    assert "\n" not in message and "gemma-3-270m" in message


def test_a_folder_without_a_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailableError) as err:
        load_model(str(tmp_path), announce=_quiet)
    assert str(err.value).startswith(f"{tmp_path} could not be loaded: ")
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def saved_tiny_gemma(tmp_path_factory):
    """tiny-gemma (seed 0) saved as a Hugging Face model folder."""
    folder = tmp_path_factory.mktemp("models") / "my-gemma"
    tiny_hf_model("tiny-gemma", seed=0).save_pretrained(folder)
    neox_tokenizer().save_pretrained(folder)
    return folder


def test_a_local_folder_loads_the_same_model(saved_tiny_gemma, tiny_gemma):
    model = load_model(str(saved_tiny_gemma), announce=_quiet)
    assert model.name == str(saved_tiny_gemma.resolve()) and model.slug == "my-gemma"
    info = model.to_dict()
    assert info["source"] == str(saved_tiny_gemma.resolve()) and info["revision"] is None
    assert (info["device"], info["dtype"]) == ("cpu", "float32")
    tokens = torch.tensor([[12092, 13, 309, 717]])
    with torch.no_grad():
        torch.testing.assert_close(model.bridge(tokens), tiny_gemma.bridge(tokens), rtol=0, atol=0)


# --------------------------------------------------------------------------- memory placement


def _facts(model):
    import fmi

    memory = fmi.FastMemory.fit(model, fmi.RecallConfig.quick())
    memory.write("Alice's favourite drink is", " green tea", spans={"symbol": "Alice"})
    (answer,) = memory.ask(model, ["Question: what is Alice's favourite drink? Answer:"])
    return memory, answer


@pytest.mark.parametrize("device", available_devices())
def test_a_memory_lives_on_its_model_device(device, tiny_gemma):
    model = tiny_gemma if device == "cpu" else load_model("tiny-gemma", device=device)
    memory, answer = _facts(model)
    tensors = [memory.values, memory.symbol_keys, memory.token_keys, memory.encoder.token_std.mean]
    assert {t.device for t in tensors} == {torch.device(device)}
    if device != "cpu":  # the same memory as on the CPU, up to float rounding
        cpu_memory, cpu_answer = _facts(tiny_gemma)
        torch.testing.assert_close(memory.values.cpu(), cpu_memory.values, rtol=1e-4, atol=1e-4)
        assert answer.text == cpu_answer.text


def test_a_bfloat16_model_keeps_float32_keys_and_values():
    model = load_model("tiny-gemma", dtype="bfloat16", announce=_quiet)
    assert {p.dtype for p in model.hf_model.parameters()} == {torch.bfloat16}
    assert model.to_dict()["dtype"] == "bfloat16"
    memory, answer = _facts(model)
    assert memory.values.dtype == memory.symbol_keys.dtype == torch.float32
    assert torch.isfinite(memory.values).all() and isinstance(answer.text, str)
