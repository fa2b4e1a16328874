"""Atomic writes: a writer that dies half-way leaves the old file intact and no temporary file;
output paths that cannot be written are refused in one line before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fmi.errors import OutputPathError
from fmi.reporting import atomic


def _half_then(exc: BaseException):
    def write(tmp: Path) -> None:
        data = b"new contents " * 100
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            raise exc

    return write


@pytest.mark.parametrize("exc", [RuntimeError("disk died"), KeyboardInterrupt()])
def test_a_writer_killed_half_way_leaves_the_old_file(tmp_path, exc):
    path = tmp_path / "doc.json"
    atomic.write_text(path, "old")
    with pytest.raises(type(exc)):
        atomic.write_atomically(path, _half_then(exc))
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"], "no temporary file left"


def test_a_failed_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "doc.json"
    atomic.write_text(path, "old")

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OutputPathError, match="No space left on device"):
        atomic.write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_writes_are_whole_and_recorded(tmp_path):
    before = len(atomic.WRITTEN)
    atomic.write_json(tmp_path / "sub" / "a.json", {"x": [1, 2]})
    assert (tmp_path / "sub" / "a.json").read_text() == '{\n "x": [\n  1,\n  2\n ]\n}\n'
    assert atomic.WRITTEN[before:] == [tmp_path / "sub" / "a.json"]


def test_the_write_is_synced_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    atomic.write_text(tmp_path / "f.txt", "x")
    assert calls == ["fsync", "replace"]


def test_unwritable_output_paths_are_refused(tmp_path):
    (tmp_path / "a_file").write_text("x")
    cases = {
        tmp_path: "is a directory",
        tmp_path / "a_file" / "r.json": "is a file, not a folder",
        tmp_path / "a_file" / "deeper" / "r.json": "is a file, not a folder",
    }
    for path, reason in cases.items():
        with pytest.raises(OutputPathError, match=reason):
            atomic.check_output_path(path)
    assert atomic.check_output_path(tmp_path / "new" / "r.json") == tmp_path / "new" / "r.json"


@pytest.mark.skipif(os.geteuid() == 0 and not Path("/proc").exists(), reason="no /proc")
def test_proc_is_refused_in_one_line(tmp_path):
    with pytest.raises(OutputPathError) as err:
        atomic.write_text("/proc/fmi-test.json", "x")
    assert "/proc/fmi-test.json" in str(err.value) and "\n" not in str(err.value)


def test_unwritable_output_folders_are_refused(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputPathError, match=r"a_file is a file, not a folder$"):
        atomic.check_output_folder(tmp_path / "a_file")
    with pytest.raises(OutputPathError, match=r"x: .*a_file is a file, not a folder$"):
        atomic.check_output_folder(tmp_path / "a_file" / "x")
    assert atomic.check_output_folder(tmp_path / "new" / "x") == tmp_path / "new" / "x"
    assert atomic.check_output_folder(tmp_path) == tmp_path
