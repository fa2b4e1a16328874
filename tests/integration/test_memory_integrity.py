"""The memory file's integrity: format version, model fingerprint and checksums are written and
checked; every damaged, foreign or too new file is refused in one line naming the file and the
reason, by the API, by ``memory_metadata`` and by ``fmi memory``."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from analyses.cli.main import main
from fmi.errors import FmiError, MemoryFileError, MemoryMismatchError
from fmi.memory.entry import Entry, KeyEncoder
from fmi.memory.file_format import (
    FORMAT_VERSION,
    memory_metadata,
    memory_tensors,
    metadata_checksum,
    tensors_checksum,
)
from fmi.memory.keys import Standardizer
from fmi.memory.store import FastMemory
from fmi.models.fingerprint import (
    cached_parameter_checksum,
    config_checksum,
    model_fingerprint,
    parameter_checksum,
)
from fmi.models.registry import load_model

D = 64  # tiny-gemma's and tiny-neox's d_model


def _memory(name: str = "tiny-gemma", model=None) -> FastMemory:
    g = torch.Generator().manual_seed(0)
    std = Standardizer(torch.zeros(D), torch.ones(D))
    return FastMemory(
        model_name=name,
        d_model=D,
        inject_site="ln_final.hook_out",
        alpha=2.0,
        encoder=KeyEncoder(
            "blocks.1.hook_resid_post",
            "blocks.0.hook_resid_post",
            std,
            Standardizer(torch.randn(D, generator=g), torch.rand(D, generator=g) + 0.5),
            torch.randn(D, 16, generator=g),
        ),
        entries=[
            Entry("game A", "blicket", "red", 7),
            Entry("", "Alice", "green tea", 11, (11, 12, 13), True),
        ],
        values=torch.randn(2, D, generator=g),
        symbol_keys=torch.randn(2, D, generator=g),
        token_keys=torch.randn(4, D, generator=g),
        token_owner=torch.tensor([0, 0, 1, 1]),
        token_role=torch.tensor([0, 1, 0, 1]),
        thresholds={"dual_key": 0.5, "raw": 0.25},
        dual_weights=torch.tensor([0.1, 0.2, 0.3, 0.4]),
        tail_values=torch.randn(2, D, generator=g),
        tail_owner=torch.tensor([1, 1]),
        end="\n",
        next_id=2,
        fit_info={"note": "test"},
        _model=model,
    )


@pytest.fixture
def saved(tiny_gemma, tmp_path) -> Path:
    """A memory saved for ``tiny_gemma`` (bound, so with its full fingerprint)."""
    path = tmp_path / "m.fmi"
    _memory(model=tiny_gemma).save(path)
    return path


def _header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def _fmi_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["fmi"])


def _rewrite(path: Path, change, *, keep_checksum: bool = True, drop: str | None = None) -> None:
    """Rewrite the file's fmi metadata with ``change(meta)`` (and its tensors without ``drop``),
    re-signing the metadata unless told not to."""
    meta, tensors = _fmi_meta(path), load_file(str(path))
    change(meta)
    if drop:
        del tensors[drop]
        meta["checksums"]["tensors_sha256"] = tensors_checksum(tensors)
    if keep_checksum and "checksums" in meta:
        meta["checksums"]["metadata_sha256"] = metadata_checksum(meta)
    save_file(tensors, str(path), metadata={"fmi": json.dumps(meta)})


# ------------------------------------------------------------------ what a file records


def test_round_trip_keeps_everything(tiny_gemma, saved):
    mem = _memory(model=tiny_gemma)
    back = FastMemory.load(saved, tiny_gemma)
    assert back.metadata() == mem.metadata()
    want, got = memory_tensors(mem), memory_tensors(back)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name
    assert back._model is tiny_gemma


def test_the_metadata_records_version_fingerprint_and_checksums(tiny_gemma, saved):
    meta = _fmi_meta(saved)
    assert meta["format_version"] == FORMAT_VERSION == 2
    assert meta["fingerprint"] == {
        "name": "tiny-gemma",
        "d_model": 64,
        "config_sha256": config_checksum(tiny_gemma),
        "weights_sha256": parameter_checksum(tiny_gemma),  # the uncached function's answer
    }
    assert meta["checksums"] == {
        "metadata_sha256": metadata_checksum(meta),
        "tensors_sha256": tensors_checksum(load_file(str(saved))),
    }
    assert memory_metadata(saved) == meta


def test_an_unbound_memory_records_name_and_d_model_only(tiny_gemma, tmp_path):
    path = tmp_path / "m.fmi"
    _memory().save(path)
    assert _fmi_meta(path)["fingerprint"] == {"name": "tiny-gemma", "d_model": 64}
    assert len(FastMemory.load(path, tiny_gemma)) == 2


def test_a_version_1_file_still_loads(tiny_gemma, tiny_neox, saved):
    def to_v1(meta):
        for key in ("format_version", "fingerprint", "checksums"):
            del meta[key]

    _rewrite(saved, to_v1)
    back = FastMemory.load(saved, tiny_gemma)
    assert back.metadata() == _memory().metadata()
    with pytest.raises(MemoryMismatchError, match="'tiny-gemma'.*'tiny-neox'"):
        FastMemory.load(saved, tiny_neox)


def test_saving_with_another_model_bound_is_refused(tiny_neox, tmp_path):
    with pytest.raises(MemoryMismatchError, match="for 'tiny-gemma', the model is 'tiny-neox'"):
        _memory(model=tiny_neox).save(tmp_path / "m.fmi")
    assert not (tmp_path / "m.fmi").exists()


# ------------------------------------------------------------------ checksums


def _naive_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """The tensor checksum spelled out: names sorted, each ``name|dtype|shape|`` then its bytes
    via numpy (little-endian on every machine this runs on)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        as_numpy = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        digest.update(as_numpy.contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_tensors_checksum_equals_a_naive_recomputation():
    tensors = memory_tensors(_memory())
    tensors["bf16"] = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    tensors["flags"] = torch.tensor([True, False])
    tensors["scalar"] = torch.tensor(3.5)
    tensors["empty"] = torch.zeros(0, D)
    assert tensors_checksum(tensors) == _naive_checksum(tensors)
    assert tensors_checksum(dict(reversed(tensors.items()))) == _naive_checksum(tensors)
    known = hashlib.sha256(b"a|torch.float32|(2,)|" + b"\x00" * 4 + b"\x00\x00\x80\x3f").hexdigest()
    assert tensors_checksum({"a": torch.tensor([0.0, 1.0])}) == known


def test_tensors_checksum_sees_names_dtypes_shapes_and_values():
    base = {"a": torch.arange(6.0).reshape(2, 3)}
    assert tensors_checksum({"a": base["a"].t().contiguous().t()}) == tensors_checksum(base)
    others = [
        {"b": base["a"]},
        {"a": base["a"].double()},
        {"a": base["a"].reshape(3, 2)},
        {"a": base["a"] + torch.tensor([[0, 0, 0], [0, 0, 1e-6]])},
    ]
    assert len({tensors_checksum(t) for t in [base, *others]}) == 1 + len(others)


def test_metadata_checksum_is_sorted_compact_json_without_the_checksums():
    meta = {"b": [1, 2.5], "a": "x", "checksums": {"metadata_sha256": "anything"}}
    want = hashlib.sha256(b'{"a":"x","b":[1,2.5]}').hexdigest()
    assert metadata_checksum(meta) == want == metadata_checksum({"a": "x", "b": [1, 2.5]})


def test_the_parameter_checksum_is_cached_per_model_until_a_weight_changes(monkeypatch):
    import fmi.models.fingerprint as fingerprint

    model = load_model("tiny-neox", seed=0, announce=lambda _: None)  # fresh: we mutate it
    calls = []
    real = fingerprint.parameter_checksum
    monkeypatch.setattr(fingerprint, "parameter_checksum", lambda m: calls.append(1) or real(m))
    first = cached_parameter_checksum(model)
    assert first == real(model) and cached_parameter_checksum(model) == first
    assert model_fingerprint(model)["weights_sha256"] == first and len(calls) == 1
    with torch.no_grad():
        next(model.hf_model.parameters()).view(-1)[0] += 1.0
    changed = cached_parameter_checksum(model)
    assert changed != first and changed == real(model) and len(calls) == 2


# ------------------------------------------------------------------ refusals


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _data_start(data: bytes) -> int:
    return 8 + _header_length(data)


def _in_metadata_text(data: bytes) -> int:
    """The offset of a letter inside an entry's text in the header (JSON stays valid)."""
    return data.index(b"blicket") + 3


def _plain_safetensors(path: Path) -> None:
    save_file({"values": torch.zeros(2, D)}, str(path))


def _other_metadata(path: Path) -> None:
    save_file({"values": torch.zeros(2, D)}, str(path), metadata={"format": "pt"})


# name: (how the file is damaged, the reason its message gives)
DAMAGES = {
    "truncated by 1 byte": (lambda d: d[:-1], "not a readable fmi memory file (truncated: "),
    "truncated by half": (lambda d: d[: len(d) // 2], "not a readable fmi memory file (truncated"),
    "truncated in the header": (lambda d: d[:100], "(truncated: a "),
    "cut to 5 bytes": (lambda d: d[:5], "(only 5 bytes long)"),
    "first data byte flipped": (
        lambda d: _flip(d, _data_start(d)),
        "is corrupted: its tensor data does not match the checksum",
    ),
    "middle data byte flipped": (
        lambda d: _flip(d, (_data_start(d) + len(d)) // 2),
        "is corrupted: its tensor data does not match the checksum",
    ),
    "last byte flipped": (
        lambda d: _flip(d, len(d) - 1),
        "is corrupted: its tensor data does not match the checksum",
    ),
    "metadata text flipped": (
        lambda d: _flip(d, _in_metadata_text(d)),
        "is corrupted: its metadata does not match the checksum",
    ),
    "header structure flipped": (lambda d: _flip(d, 8), "(unreadable safetensors header"),
    "header length flipped": (lambda d: _flip(d, 7), "(no safetensors header"),
    "stray bytes appended": (lambda d: d + b"xyz", "(3 stray bytes after the tensor data)"),
    "garbage": (lambda d: b"\x00\x01not a safetensors file" * 10, "(no safetensors header"),
    "zeros": (lambda d: b"\x00" * 40, "(unreadable safetensors header"),
    "a JSON file": (lambda d: b'{"entries": [], "model_name": "tiny-gemma"}\n', "(it holds JSON"),
    "an empty file": (lambda d: b"", "not a readable fmi memory file (the file is empty)"),
}
# name: (how the file is made, the exception, the reason)
BAD_FILES = {
    "a safetensors file without metadata": (
        _plain_safetensors,
        MemoryFileError,
        "not a readable fmi memory file (a safetensors file without fmi's metadata)",
    ),
    "a safetensors file with other metadata": (
        _other_metadata,
        MemoryFileError,
        "(a safetensors file without fmi's metadata)",
    ),
    "a newer format version": (
        lambda p: _rewrite(p, lambda m: m.update(format_version=FORMAT_VERSION + 1)),
        MemoryFileError,
        "has memory format version 3, newer than this fmi reads (up to 2); upgrade fmi",
    ),
    "a newer format version, checksum not updated": (
        lambda p: _rewrite(p, lambda m: m.update(format_version=99), keep_checksum=False),
        MemoryFileError,
        "has memory format version 99, newer than this fmi reads",
    ),
    "a format version that is no number": (
        lambda p: _rewrite(p, lambda m: m.update(format_version="two")),
        MemoryFileError,
        "(format version 'two' is not a version)",
    ),
    "version 2 without checksums": (
        lambda p: _rewrite(p, lambda m: m.pop("checksums")),
        MemoryFileError,
        "(a version-2 file without its checksums)",
    ),
    "metadata changed, checksum not": (
        lambda p: _rewrite(p, lambda m: m.update(alpha=3.0), keep_checksum=False),
        MemoryFileError,
        "is corrupted: its metadata does not match the checksum saved with it (sha256 ",
    ),
    "fmi metadata that is not JSON": (
        lambda p: save_file({"values": torch.zeros(1)}, str(p), metadata={"fmi": "{oops"}),
        MemoryFileError,
        "(its fmi metadata is not a JSON object: corrupted?)",
    ),
    "a tensor missing": (
        lambda p: _rewrite(p, lambda m: None, drop="values"),
        MemoryFileError,
        "is not a complete fmi memory file (no values)",
    ),
    "no file": (lambda p: p.unlink(), MemoryFileError, "no memory file at "),
    "a folder": (lambda p: (p.unlink(), p.mkdir()), MemoryFileError, "is a folder, not a memory"),
}


def _damage(path: Path, name: str) -> tuple[type[FmiError], str]:
    """Damage the saved file at ``path`` as ``name`` says: the exception and reason expected."""
    if name in DAMAGES:
        damage, reason = DAMAGES[name]
        path.write_bytes(damage(path.read_bytes()))
        return MemoryFileError, reason
    make, error, reason = BAD_FILES[name]
    make(path)
    return error, reason


def _one_line_naming(err: Exception, path: Path, reason: str) -> None:
    message = str(err)
    assert str(path) in message and reason in message, message
    assert "\n" not in message


@pytest.mark.parametrize("name", [*DAMAGES, *BAD_FILES])
def test_a_damaged_file_is_refused_in_one_line(tiny_gemma, saved, name):
    error, reason = _damage(saved, name)
    with pytest.raises(error) as caught:
        FastMemory.load(saved, tiny_gemma)
    assert type(caught.value) is error
    _one_line_naming(caught.value, saved, reason)
    with pytest.raises(error) as listed:  # without a model, `fmi memory list`'s way
        memory_metadata(saved)
    assert str(listed.value) == str(caught.value)


def _other_config(meta: dict) -> None:
    meta["fingerprint"]["config_sha256"] = "ab12" * 16


def _weights_reason(model, written_with) -> str:
    return (
        f"was written with model 'tiny-gemma' (weights sha256 "
        f"{parameter_checksum(written_with)[:12]}...); this is 'tiny-gemma' with weights sha256 "
        f"{parameter_checksum(model)[:12]}..., other weights; refusing to load it"
    )


# name: (model, seed, the reason given its message, from the model and the file's model)
FOREIGN = {
    "another model": (
        "tiny-neox",
        0,
        lambda model, written_with: (
            "was written with model 'tiny-gemma' (d_model 64); this "
            "is 'tiny-neox' (d_model 64); refusing to load it"
        ),
    ),
    "the same model with other weights": ("tiny-gemma", 1, _weights_reason),
}


@pytest.mark.parametrize("name", FOREIGN)
def test_a_foreign_model_is_refused_in_one_line(tiny_gemma, saved, name):
    model_name, seed, reason = FOREIGN[name]
    model = load_model(model_name, seed=seed, announce=lambda _: None)
    assert parameter_checksum(model) != _fmi_meta(saved)["fingerprint"]["weights_sha256"]
    with pytest.raises(MemoryMismatchError) as caught:
        FastMemory.load(saved, model)
    _one_line_naming(caught.value, saved, reason(model, tiny_gemma))


def test_another_architecture_under_the_same_name_is_refused(tiny_gemma, saved):
    _rewrite(saved, _other_config)
    with pytest.raises(MemoryMismatchError) as caught:
        FastMemory.load(saved, tiny_gemma)
    reason = (
        "(config sha256 ab12ab12ab12...); this is 'tiny-gemma' with config sha256 "
        f"{config_checksum(tiny_gemma)[:12]}..., other config; refusing to load it"
    )
    _one_line_naming(caught.value, saved, reason)


# ------------------------------------------------------------------ the command line

CLI_CASES = [
    "truncated by 1 byte",
    "truncated by half",
    "middle data byte flipped",
    "metadata text flipped",
    "header structure flipped",
    "garbage",
    "a JSON file",
    "an empty file",
    "a safetensors file without metadata",
    "a newer format version",
    "no file",
]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["memory", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", ["list", "ask", "write", "delete"])
@pytest.mark.parametrize("name", CLI_CASES)
def test_fmi_memory_refuses_a_bad_file_in_one_line(capsys, saved, name, command):
    _, reason = _damage(saved, name)
    args = {
        "list": [],
        "ask": ["Bob lives in"],
        "write": ["Bob lives in", " Paris"],
        "delete": ["0"],
    }
    code, out, err = _cli(capsys, command, str(saved), *args[command])
    assert code == 2 and out == ""
    assert err.startswith("fmi: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert str(saved) in err and reason in err and "Traceback" not in err
    if command in ("write", "delete") and name == "no file":
        assert list(saved.parent.iterdir()) == []  # no stray lock file beside a missing one


@pytest.mark.parametrize("command", ["ask", "write"])
def test_fmi_memory_refuses_a_file_of_other_weights_in_one_line(capsys, saved, command):
    # the file says tiny-gemma's weights had another checksum: what a file written with
    # another seed of the same model says (the CLI loads seed 0)
    _rewrite(saved, lambda m: m["fingerprint"].update(weights_sha256="03a34734873b" + "0" * 52))
    before = saved.read_bytes()
    args = {"ask": ["Bob lives in"], "write": ["Bob lives in", " Paris"]}[command]
    code, out, err = _cli(capsys, command, str(saved), *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"fmi: error: memory {saved} was written with model 'tiny-gemma' ")
    assert "(weights sha256 03a34734873b...); this is 'tiny-gemma' with weights sha256" in err
    assert saved.read_bytes() == before
