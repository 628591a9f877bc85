"""fill: np.empty of `size` bytes, filled with nonzero data, freed, every round.

The ideal variant fills one preallocated buffer: no allocator can beat it.
"""
from __future__ import annotations

import time

import numpy as np

PATTERN = "fill"
SIZES = [8 << 20, 32 << 20, 128 << 20, 512 << 20]


def _round(size: int) -> None:
    a = np.empty(size, dtype=np.uint8)
    a.fill(1)
    del a


def run(size: int, rounds: int, ideal: bool = False) -> list[float]:
    """Seconds per round."""
    times = []
    if ideal:
        buffer = np.empty(size, dtype=np.uint8)
        buffer.fill(0)   # fault it in before timing, like a warm cache
        for _ in range(rounds):
            start = time.perf_counter()
            buffer.fill(1)
            times.append(time.perf_counter() - start)
        return times
    for _ in range(rounds):
        start = time.perf_counter()
        _round(size)
        times.append(time.perf_counter() - start)
    return times
