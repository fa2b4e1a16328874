"""The memory file: one safetensors file whose tensors are the keys, values and standardizers,
and whose metadata names the model, the sites, alpha, the key encoder and the calibrated
thresholds. Writes are atomic; reads name the file and what is wrong with it.

The safetensors metadata holds one key, ``fmi``: a JSON object with the memory's fields
(:meth:`fmi.memory.store.FastMemory.metadata`) and, from format version 2 on,

- ``format_version``: :data:`FORMAT_VERSION` (a file without one is version 1, read unchecked);
- ``fingerprint``: the model it was written with, ``name``, ``d_model``, ``config_sha256``
  and ``weights_sha256`` (:func:`fmi.models.fingerprint.model_fingerprint`; only ``name`` and
  ``d_model`` where the memory had no model bound when saved);
- ``checksums``: ``tensors_sha256`` (:func:`tensors_checksum`) and ``metadata_sha256``
  (:func:`metadata_checksum`, over every other field), so that a flipped byte anywhere in the
  file is refused.

Writers of one file serialize on :func:`locked` (POSIX ``flock`` on ``FILE.lock``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load as load_tensors
from safetensors.torch import save_file
from torch import Tensor

from fmi.errors import MemoryFileError, MemoryMismatchError
from fmi.memory.entry import KeyEncoder
from fmi.memory.keys import Standardizer
from fmi.models.fingerprint import tensors_sha256
from fmi.reporting.atomic import write_atomically

if TYPE_CHECKING:
    from fmi.memory.store import FastMemory

FORMAT_VERSION = 2  # 2: format_version, fingerprint and checksums; 1: none of them
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on its JSON header
REQUIRED_TENSORS = (
    "values",
    "symbol_keys",
    "token_keys",
    "token_owner",
    "token_role",
    "symbol_std.mean",
    "symbol_std.std",
    "token_std.mean",
    "token_std.std",
)
REQUIRED_META = (
    "model_name",
    "d_model",
    "inject_site",
    "alpha",
    "symbol_site",
    "token_site",
    "thresholds",
    "entries",
)


def tensors_checksum(tensors: dict[str, Tensor]) -> str:
    """The checksum of a memory file's tensors: :func:`fmi.models.fingerprint.tensors_sha256`,
    the same routine as a model's parameter checksum.

    >>> tensors_checksum({"a": torch.zeros(2)}) == tensors_checksum({"a": torch.zeros(2)})
    True
    >>> tensors_checksum({"a": torch.zeros(2)}) == tensors_checksum({"a": torch.zeros(1, 2)})
    False
    """
    return tensors_sha256(tensors)


def metadata_checksum(meta: dict) -> str:
    """sha256 of ``meta`` without its ``checksums`` field, as sorted, compact JSON."""
    rest = {k: v for k, v in meta.items() if k != "checksums"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _unreadable(path: str | Path, reason: str) -> MemoryFileError:
    return MemoryFileError(f"{path} is not a readable fmi memory file ({reason})")


def _one_line(err: object) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise MemoryFileError(f"no memory file at {path}") from None
    except IsADirectoryError:
        raise MemoryFileError(f"{path} is a folder, not a memory file") from None
    except OSError as err:
        raise MemoryFileError(f"cannot read memory file {path}: {err.strerror or err}") from None


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def _header(path: str | Path, data: bytes) -> dict:
    """The safetensors header of ``data`` (tensor entries and ``__metadata__``), checked against
    the file's length."""
    if not data:
        raise _unreadable(path, "the file is empty")
    n = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else None
    if n is None or n > MAX_HEADER_BYTES or 8 + n > len(data):
        if _is_json(data):
            raise _unreadable(path, "it holds JSON text, not safetensors data")
        if n is None:
            raise _unreadable(path, f"only {len(data)} bytes long")
        if n > MAX_HEADER_BYTES:
            raise _unreadable(path, "no safetensors header: not a memory file, or garbage")
        raise _unreadable(path, f"truncated: a {n}-byte header, but only {len(data)} bytes")
    try:
        header = json.loads(data[8 : 8 + n])
        ends = [e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"]
        if not all(isinstance(x, int) for x in ends):
            raise TypeError("bad data offsets")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise _unreadable(path, "unreadable safetensors header: corrupted?") from None
    stored, needed = len(data) - 8 - n, max(ends, default=0)
    if stored < needed:
        raise _unreadable(path, f"truncated: {len(data)} bytes, its tensors need {8 + n + needed}")
    if stored > needed:
        raise _unreadable(path, f"{stored - needed} stray bytes after the tensor data")
    return header


def _fmi_metadata(path: str | Path, header: dict) -> dict:
    """The ``fmi`` metadata of a header, its format version checked."""
    extra = header.get("__metadata__")
    if not isinstance(extra, dict) or "fmi" not in extra:
        raise _unreadable(path, "a safetensors file without fmi's metadata")
    try:
        meta = json.loads(extra["fmi"])
    except (ValueError, TypeError):
        meta = None
    if not isinstance(meta, dict):
        raise _unreadable(path, "its fmi metadata is not a JSON object: corrupted?")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _unreadable(path, f"format version {version!r} is not a version")
    if version > FORMAT_VERSION:
        raise MemoryFileError(
            f"{path} has memory format version {version}, newer than this fmi reads "
            f"(up to {FORMAT_VERSION}); upgrade fmi to read it"
        )
    return meta


def _checksums(path: str | Path, meta: dict) -> dict:
    """The checksums a file records: none in version 1, both in version 2."""
    if meta.get("format_version", 1) < 2:
        return {}
    checks = meta.get("checksums")
    if not isinstance(checks, dict) or not {"metadata_sha256", "tensors_sha256"} <= set(checks):
        raise _unreadable(path, "a version-2 file without its checksums")
    return checks


def _corrupted(path: str | Path, what: str, recorded: object, found: str) -> MemoryFileError:
    return MemoryFileError(
        f"{path} is corrupted: its {what} does not match the checksum saved with it "
        f"(sha256 {str(recorded)[:12]}... saved, {found[:12]}... now)"
    )


def read_memory_file(path: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """The metadata and tensors of the memory file at ``path`` (read once, so that a
    concurrent atomic replace is seen whole or not at all), its format version and checksums
    verified; ``MemoryFileError`` naming the file and the reason for a missing, empty,
    truncated, corrupted, foreign, incomplete or too new one."""
    data = _read_bytes(path)
    meta = _fmi_metadata(path, _header(path, data))
    checks = _checksums(path, meta)
    if checks and checks["metadata_sha256"] != (found := metadata_checksum(meta)):
        raise _corrupted(path, "metadata", checks["metadata_sha256"], found)
    try:
        t = load_tensors(data)
    except Exception as err:  # safetensors raises its own error type on bad data
        raise _unreadable(path, _one_line(err)) from None
    if checks and checks["tensors_sha256"] != (found := tensors_checksum(t)):
        raise _corrupted(path, "tensor data", checks["tensors_sha256"], found)
    missing = [k for k in REQUIRED_TENSORS if k not in t]
    missing += [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise MemoryFileError(f"{path} is not a complete fmi memory file (no {missing[0]})")
    return meta, t


def memory_metadata(path: str | Path) -> dict:
    """The metadata of the memory file at ``path`` (its model, sites, entries...), read without
    loading a model but with every check of :func:`read_memory_file`, whose errors it raises."""
    return read_memory_file(path)[0]


def check_model(path: str | Path, meta: dict, model: Any) -> None:
    """``MemoryMismatchError`` naming the file unless ``model`` (a ``LoadedModel``) is the one
    the memory ``meta`` was written with: same name and d_model, and where the file records
    them, the same config hash and parameter checksum."""
    from fmi.models.fingerprint import cached_parameter_checksum, config_checksum

    name, d = meta["model_name"], meta["d_model"]
    this_d = int(model.bridge.cfg.d_model)
    written = f"memory {path} was written with model {name!r}"
    if name != model.name or d != this_d:
        raise MemoryMismatchError(
            f"{written} (d_model {d}); this is {model.name!r} (d_model {this_d}); "
            "refusing to load it"
        )
    fingerprint = meta.get("fingerprint") or {}
    for key, what, checksum in (
        ("config_sha256", "config", config_checksum),
        ("weights_sha256", "weights", cached_parameter_checksum),
    ):
        if key in fingerprint and fingerprint[key] != (this := checksum(model)):
            raise MemoryMismatchError(
                f"{written} ({what} sha256 {str(fingerprint[key])[:12]}...); this is "
                f"{model.name!r} with {what} sha256 {this[:12]}..., other {what}; "
                "refusing to load it"
            )


def file_encoder(meta: dict, t: dict[str, Tensor]) -> KeyEncoder:
    """The key encoder a memory file's metadata and tensors describe."""

    def std(name: str) -> Standardizer | None:
        return Standardizer(t[f"{name}.mean"], t[f"{name}.std"]) if f"{name}.mean" in t else None

    symbol, token = std("symbol_std"), std("token_std")
    assert symbol is not None and token is not None  # required tensors, checked on reading
    return KeyEncoder(
        meta["symbol_site"],
        meta["token_site"],
        symbol,
        token,
        t.get("projector"),
        std("answer_std"),
    )


def memory_tensors(memory: FastMemory) -> dict[str, Tensor]:
    """The tensors a memory file holds, by name: keys, values, standardizers and, where the
    memory has them, the projector, dual-key weights and answer tails."""
    tensors = {
        "values": memory.values,
        "symbol_keys": memory.symbol_keys,
        "token_keys": memory.token_keys,
        "token_owner": memory.token_owner,
        "token_role": memory.token_role,
        "symbol_std.mean": memory.encoder.symbol_std.mean,
        "symbol_std.std": memory.encoder.symbol_std.std,
        "token_std.mean": memory.encoder.token_std.mean,
        "token_std.std": memory.encoder.token_std.std,
    }
    if memory.encoder.projector is not None:
        tensors["projector"] = memory.encoder.projector
    if memory.dual_weights is not None:
        tensors["dual_weights"] = memory.dual_weights
    if memory.encoder.answer_std is not None:
        tensors["answer_std.mean"] = memory.encoder.answer_std.mean
        tensors["answer_std.std"] = memory.encoder.answer_std.std
    for name in ("answer_keys", "relation_weights"):
        if getattr(memory, name) is not None:
            tensors[name] = getattr(memory, name)
    if memory.tail_values is not None and memory.tail_owner is not None:
        tensors["tail_values"] = memory.tail_values
        tensors["tail_owner"] = memory.tail_owner
    return tensors


def save_memory_file(
    path: str | Path, tensors: dict[str, Tensor], metadata: dict, model: Any = None
) -> None:
    """Write ``tensors`` and ``metadata`` (under the ``fmi`` key, with the format version,
    ``model``'s fingerprint where one is given, and the checksums) to ``path`` atomically."""
    # clone: safetensors refuses two names for one storage (e.g. a shared standardizer)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {**metadata, "format_version": FORMAT_VERSION}
    if model is not None:
        from fmi.models.fingerprint import model_fingerprint

        if model.name != meta["model_name"]:
            raise MemoryMismatchError(
                f"cannot save {path}: the memory is for {meta['model_name']!r}, "
                f"the model is {model.name!r}"
            )
        meta["fingerprint"] = model_fingerprint(model)
    else:
        meta["fingerprint"] = {"name": meta["model_name"], "d_model": meta["d_model"]}
    meta = json.loads(json.dumps(meta))  # what a reader parses: lists for tuples, str keys
    meta["checksums"] = {
        "metadata_sha256": metadata_checksum(meta),
        "tensors_sha256": tensors_checksum(tensors),
    }
    text = json.dumps(meta)
    write_atomically(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata={"fmi": text}))


def lock_path(path: str | Path) -> Path:
    """The lock file of the memory file ``path``: ``FILE.lock`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextmanager
def locked(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on the memory file ``path`` for a read-modify-write: ``flock`` on
    the sidecar ``FILE.lock`` (created, and left in place: removing it would let a waiting
    writer lock a file no one else sees). A lock on ``FILE`` itself would not serialize, as
    every save replaces ``FILE``'s inode. POSIX only; elsewhere it locks nothing. Released on
    exit, also after an exception or when the process dies.

    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/m.fmi"
    >>> with locked(path) as lock:
    ...     lock.name
    'm.fmi.lock'
    """
    lock = lock_path(path)
    if os.name != "posix":
        yield lock
        return
    import fcntl

    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:
        raise MemoryFileError(f"no memory file at {path} (no folder {lock.parent})") from None
    except OSError as err:
        raise MemoryFileError(f"cannot lock {path}: {lock}: {err.strerror or err}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield lock
    finally:
        os.close(fd)  # releases the lock
