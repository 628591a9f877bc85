"""small: arrays below min_bytes, which zkalloc hands to numpy's own
allocator.  Measures what the routing costs: 1000 expressions of two small
temporaries per round.  No ideal variant (every allocator does the same work)."""
from __future__ import annotations

import time

import numpy as np

PATTERN = "small"
HAS_IDEAL = False
SIZES = [800, 8192]
EXPRESSIONS = 1000


def run(size: int, rounds: int, ideal: bool = False) -> list[float]:
    times = []
    n = size // 8
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(EXPRESSIONS):
            a = np.ones(n)
            b = a + 1.0
            del a, b
        times.append(time.perf_counter() - start)
    return times
