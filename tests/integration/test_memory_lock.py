"""Writers of one memory file take turns: ``fmi.memory.file_format.locked`` serializes threads
and processes, and two ``fmi memory write`` started at once both land in the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

from analyses.cli.main import main
from fmi.errors import MemoryFileError
from fmi.memory.file_format import lock_path, locked, memory_metadata
from fmi.memory.store import FastMemory

ROOT = Path(__file__).resolve().parents[2]
HOLD = 0.4  # seconds each holder sleeps inside the lock


def _intervals_do_not_overlap(spans: list[tuple[float, float]]) -> bool:
    spans = sorted(spans)
    return all(a_end <= b_start for (_, a_end), (b_start, _) in pairwise(spans))


def test_the_overlap_check_sees_an_overlap():
    assert _intervals_do_not_overlap([(0, 1), (1, 2), (2.5, 3)])
    assert not _intervals_do_not_overlap([(0, 1), (0.5, 2)])


def test_threads_holding_the_lock_take_turns(tmp_path):
    path = tmp_path / "m.fmi"
    spans: list[tuple[float, float]] = []
    start = threading.Barrier(3)

    def hold() -> None:
        start.wait()
        with locked(path):
            began = time.monotonic()
            time.sleep(HOLD)
            spans.append((began, time.monotonic()))

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    assert len(spans) == 3 and _intervals_do_not_overlap(spans)
    assert time.monotonic() - t0 >= 3 * HOLD  # they waited for each other
    assert lock_path(path) == tmp_path / "m.fmi.lock" and lock_path(path).exists()


# Waits until every process of the test is ready (imports done), so that they ask at once.
BARRIER = """
import os, time
from pathlib import Path


def barrier():
    folder, n = Path(os.environ["READY"]), int(os.environ["N"])
    (folder / str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(list(folder.iterdir())) < n and time.time() < deadline:
        time.sleep(0.01)
"""
HOLDER = (
    BARRIER
    + """
import json, sys
from fmi.memory.file_format import locked
path, out, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
barrier()
asked = time.time()
with locked(path):
    got = time.time()
    time.sleep(hold)
    released = time.time()
open(out, "w").write(json.dumps([asked, got, released]))
"""
)


def _ready_env(tmp_path: Path, n: int, **extra: str) -> dict[str, str]:
    folder = tmp_path / "ready"
    folder.mkdir(exist_ok=True)
    return {**os.environ, "READY": str(folder), "N": str(n), **extra}


def test_processes_holding_the_lock_take_turns(tmp_path):
    path = tmp_path / "m.fmi"
    outs = [tmp_path / f"times-{i}.json" for i in range(2)]
    env = _ready_env(tmp_path, len(outs))
    procs = [
        subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(out), "1.0"], env=env)
        for out in outs
    ]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    # each: [asked, got, released]; first and second by when they got the lock
    first, second = sorted((json.loads(out.read_text()) for out in outs), key=lambda t: t[1])
    assert second[0] < first[2], "the second asked before the first released: they contended"
    assert second[1] >= first[2], "and it got the lock only after the first released it"


def test_the_lock_is_released_by_an_exception(tmp_path):
    path = tmp_path / "m.fmi"
    with pytest.raises(RuntimeError), locked(path):
        raise RuntimeError("boom")
    done = threading.Event()

    def again() -> None:
        with locked(path):
            done.set()

    t = threading.Thread(target=again)
    t.start()
    t.join(timeout=10)
    assert done.is_set()


def test_a_lock_in_a_missing_folder_is_a_one_line_error(tmp_path):
    path = tmp_path / "nowhere" / "m.fmi"
    with pytest.raises(MemoryFileError, match=f"^no memory file at {path} "), locked(path):
        pass


@pytest.fixture(scope="module")
def empty_memory(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lock") / "empty.fmi"
    assert main(["memory", "new", str(path), "--model", "tiny-gemma", "--quick"]) == 0
    return path


FACTS = [
    ["Alice's favourite drink is", " green tea", "--symbol", "Alice"],
    ["Bob lives in", " New York", "--symbol", "Bob"],
]


def _fmi(*argv: str) -> list[str]:
    return [sys.executable, "-m", "analyses.cli.main", "memory", *argv]


def _both_entries_are_there(path: Path, outs: list[str], tiny_gemma) -> None:
    assert sorted(outs) == ["0\n", "1\n"]  # the later write saw the earlier one's entry
    meta = memory_metadata(path)
    assert sorted(e["symbol"] for e in meta["entries"]) == ["Alice", "Bob"]
    assert meta["next_id"] == 2
    memory = FastMemory.load(path, tiny_gemma)
    assert len(memory) == 2 and len(memory.values) == 2
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")] == []


def test_two_fmi_memory_writes_at_once_both_land(empty_memory, tmp_path, tiny_gemma):
    path = tmp_path / "m.fmi"
    path.write_bytes(empty_memory.read_bytes())
    procs = [
        subprocess.Popen(
            _fmi("write", str(path), *fact), cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for fact in FACTS
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    _both_entries_are_there(path, outs, tiny_gemma)


# `fmi memory write` with a pause inside its read-modify-write (after reading the file, before
# saving it) and the times it asked for, got and released the lock: the two writers surely
# contend, and without the lock one entry would be lost.
SLOW_WRITER = (
    BARRIER
    + """
import contextlib, json, sys
import fmi.memory.file_format as file_format
from fmi.memory.store import FastMemory

real_locked, real_write = file_format.locked, FastMemory.write


@contextlib.contextmanager
def timed(path):
    barrier()
    asked = time.time()
    with real_locked(path) as lock:
        got = time.time()
        yield lock
        released = time.time()
    with open(os.environ["TIMES"], "w") as f:
        json.dump([asked, got, released], f)


def slow_write(self, *args, **kwargs):
    time.sleep(float(os.environ["HOLD"]))
    return real_write(self, *args, **kwargs)


file_format.locked, FastMemory.write = timed, slow_write
from analyses.cli.main import main
sys.exit(main(sys.argv[1:]))
"""
)


def test_two_contending_writes_take_turns_and_both_land(empty_memory, tmp_path, tiny_gemma):
    path = tmp_path / "m.fmi"
    path.write_bytes(empty_memory.read_bytes())
    times = [tmp_path / f"times-{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SLOW_WRITER, "memory", "write", str(path)] + fact,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env=_ready_env(tmp_path, len(FACTS), TIMES=str(out), HOLD="1"),
        )
        for fact, out in zip(FACTS, times, strict=True)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    first, second = sorted((json.loads(t.read_text()) for t in times), key=lambda t: t[1])
    assert second[0] < first[2], "the second asked for the lock while the first held it"
    assert second[1] >= first[2], "and got it only after the first had saved"
    _both_entries_are_there(path, outs, tiny_gemma)
