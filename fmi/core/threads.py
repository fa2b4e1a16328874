"""How many CPU threads a kernel-heavy step should use right now, and a context manager that
uses them.

On a shared CPU, a torch op that runs on more threads than there are free cores waits at every
parallel region for a thread the scheduler has taken off its core. The int8 search of issue 20
ran at 12 ms per query at 100,000 entries on 2 threads with one core busy, and at 1.8 ms on
one thread (``fmi bench``). The rule here reads how many threads of other processes are
runnable at this instant (Linux: ``procs_running`` of ``/proc/stat`` minus this process's own
running threads) and gives the step the cores that are left, at least one, at most torch's
setting. Where that cannot be read (another OS), torch's setting stands.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


def _procs_running(stat: str) -> int | None:
    for line in stat.splitlines():
        if line.startswith("procs_running "):
            return int(line.split()[1])
    return None


def _own_running(task_dir: Path) -> int:
    running = 0
    for task in task_dir.iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        running += text[text.rindex(")") + 2] == "R"  # the state follows "(comm) "
    return running


def other_running(proc: Path = Path("/proc")) -> int | None:
    """Threads of other processes runnable right now, or ``None`` where ``proc`` cannot tell.

    >>> n = other_running()
    >>> n is None or n >= 0
    True
    """
    try:
        total = _procs_running((proc / "stat").read_text())
        own = _own_running(proc / "self" / "task")
    except OSError:
        return None
    return None if total is None else max(0, total - own)


_SEEN: list[tuple[float, int | None]] = []  # (when, other_running) of the last reading
FRESH_S = 0.1


def other_running_recently(now: float | None = None) -> int | None:
    """:func:`other_running`, read again only if the last reading is older than ``FRESH_S``
    (a reading costs about 0.3 ms; a read call of many queries takes milliseconds or more).

    >>> first = other_running_recently(now=1e9)
    >>> other_running_recently(now=1e9 + 0.05) == first   # within FRESH_S: not read again
    True
    """
    now = time.monotonic() if now is None else now
    if not _SEEN or not 0 <= now - _SEEN[0][0] <= FRESH_S:
        _SEEN[:] = [(now, other_running())]
    return _SEEN[0][1]


def free_threads(cores: int, others: int | None, limit: int) -> int:
    """The rule: the cores ``others`` leave free, at least 1, at most ``limit``; ``limit`` where
    ``others`` is unknown.

    >>> free_threads(2, 0, 2), free_threads(2, 1, 2), free_threads(2, 5, 2), free_threads(16, 1, 8)
    (2, 1, 1, 8)
    >>> free_threads(2, None, 2)
    2
    """
    if others is None:
        return limit
    return max(1, min(limit, cores - others))


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run the block on ``n`` torch threads (default: :func:`free_threads` now), restoring
    torch's setting afterwards, also after an exception; yields the number used.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1) as n:
    ...     inside = torch.get_num_threads()
    >>> (n, inside, torch.get_num_threads() == before)
    (1, 1, True)
    """
    before = torch.get_num_threads()
    use = free_threads(available_cores(), other_running_recently(), before) if n is None else n
    if use != before:
        torch.set_num_threads(use)
    try:
        yield use
    finally:
        if use != before:
            torch.set_num_threads(before)
