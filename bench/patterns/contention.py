"""contention: T threads at once (1, 2, 4, 8, ... up to the core count or
``--threads``), each allocating a 64 MiB array, writing every page of it
(a full fill) and freeing it, ITERATIONS times per round.  The threads live
in a pool started once; a round is one barrier-to-join pass of all T.
Reported as aggregate GB/s (T x ITERATIONS x 64 MiB / round time) next to
the time.  numpy's fill releases the GIL, so the writes run in parallel.

Under scoped zkalloc (``installed()``) each pool thread enters
``installed()`` itself, as a user has to: a new thread does not inherit the
handler's contextvar.  The ideal: each thread fills its own preallocated
64 MiB buffer.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._pattern import Body, Pattern

ARRAY_BYTES = 64 << 20
ITERATIONS = 4
MAX_THREADS = os.cpu_count() or 1

# Set by bench.allocators: the context a new thread enters to use the
# allocator under test (zkalloc.installed() for the scoped zkalloc).
thread_context: Callable[[], object] | None = None


def sizes_up_to(threads: int) -> list[int]:
    """1, 2, 4, ... up to `threads` (and `threads` itself)."""
    out = [t for t in (1, 2, 4, 8, 16, 32, 64, 128) if t < threads]
    return out + [threads]


def bytes_per_round(size: int, array_bytes: int = ARRAY_BYTES) -> int:
    """Bytes written per round by `size` threads."""
    return size * ITERATIONS * array_bytes


def _work(array_bytes: int, buffer: np.ndarray | None) -> None:
    for _ in range(ITERATIONS):
        if buffer is not None:
            buffer.fill(1)
        else:
            a = np.empty(array_bytes, dtype=np.uint8)
            a.fill(1)
            del a


def prepare(size: int, ideal: bool = False, array_bytes: int = ARRAY_BYTES) -> Body:
    """The body of one round: all `size` threads do their work once."""
    if size < 1:
        raise ValueError(f"thread count must be at least 1, got {size}")
    local = threading.local()
    enter = thread_context

    def init() -> None:
        if enter is not None:
            local.ctx = enter()
            local.ctx.__enter__()   # held for the pool thread's life
        local.buffer = np.ones(array_bytes, dtype=np.uint8) if ideal else None

    pool = ThreadPoolExecutor(max_workers=size, initializer=init)
    barrier = threading.Barrier(size)

    def task() -> None:
        barrier.wait()
        _work(array_bytes, local.buffer)

    def body() -> None:
        for f in [pool.submit(task) for _ in range(size)]:
            f.result()
    body()   # start every thread (and run init) before timing
    return body


PATTERN = Pattern("contention", tuple(t for t in (1, 2, 4, 8, 16, 32, 64) if t <= MAX_THREADS) or (1,), prepare,
                  unit="threads", tags=frozenset({"ideal"}), test_size=2, bytes_per_round=bytes_per_round)
