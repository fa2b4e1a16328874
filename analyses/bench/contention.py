"""The bench's loaded case: a background process of its own making keeps one core busy for a
bounded time while the same figures are measured again."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

# A pure-Python spin: one runnable thread, no memory traffic, no torch. It ends by itself at the
# deadline even if this process is killed before it can stop it.
_SPIN = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def one_core_busy(limit_s: float) -> Iterator[dict]:
    """Keep one core busy (a spinning child process) for the block, at most ``limit_s``
    seconds; yields a record of it (pid, limit, and on exit the seconds it ran and whether it
    was still spinning at the end of the block, i.e. the whole block was measured loaded).

    >>> with one_core_busy(5.0) as busy:
    ...     pass
    >>> busy["limit_s"], busy["alive_at_end"], busy["seconds"] < 5.0
    (5.0, True, True)
    """
    child = subprocess.Popen([sys.executable, "-c", _SPIN.format(limit=float(limit_s))])
    record: dict = {"pid": child.pid, "limit_s": float(limit_s)}
    start = time.perf_counter()
    time.sleep(0.2)  # let it reach its loop
    try:
        yield record
    finally:
        record["alive_at_end"] = child.poll() is None
        child.kill()
        child.wait()
        record["seconds"] = time.perf_counter() - start
