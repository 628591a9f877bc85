"""first_touch: the cost of a miss.  Every round starts with an empty cache
(zkalloc's idle regions released), allocates `size` bytes and fills them, so
every page faults.  Decides the hugepages default: MADV_HUGEPAGE makes each
fault map (and zero) 2 MiB at once.  The ideal is a resident buffer."""
from __future__ import annotations

import time

import numpy as np

PATTERN = "first_touch"
SIZES = [32 << 20, 256 << 20]


def _release() -> None:
    import sys
    if "zkalloc_np" in sys.modules:
        sys.modules["zkalloc_np"].release()


def run(size: int, rounds: int, ideal: bool = False) -> list[float]:
    times = []
    buffer = np.ones(size, dtype=np.uint8) if ideal else None
    for _ in range(rounds):
        _release()
        start = time.perf_counter()
        if ideal:
            buffer.fill(1)
        else:
            a = np.empty(size, dtype=np.uint8)
            a.fill(1)
            del a
        times.append(time.perf_counter() - start)
    return times
