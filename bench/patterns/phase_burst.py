"""phase_burst: a prover phase's scratch.  16 buffers of mixed sizes between
a third of `size` and `size` (default 2 to 6 MiB) are allocated with
np.empty and written, then all freed together at the end of the phase.  The
sizes change every round (a fixed random sequence), so an allocator cannot
simply hand back the same 16 blocks.

The ideal writes the same number of bytes into 16 preallocated buffers of
`size` bytes.
"""
from __future__ import annotations

import itertools

import numpy as np

from ._pattern import Body, Pattern

COUNT = 16


def burst_sizes(size: int, rounds: int, seed: int = 0) -> list[list[int]]:
    """Per round, COUNT uniformly drawn byte sizes in [size/3, size]."""
    rng = np.random.default_rng(seed)
    low = max(size // 3, 1)
    return [[int(s) for s in rng.integers(low, size + 1, COUNT)] for _ in range(rounds)]


def burst(sizes: list[int]) -> list[np.ndarray]:
    """Allocate and write one buffer per size (the phase's live set)."""
    live = []
    for s in sizes:
        a = np.empty(s, dtype=np.uint8)
        a.fill(1)
        live.append(a)
    return live


def prepare(size: int, ideal: bool) -> Body:
    """The body of one round (a cycle of 64 planned rounds)."""
    plan = itertools.cycle(burst_sizes(size, 64))
    if ideal:
        buffers = [np.ones(size, dtype=np.uint8) for _ in range(COUNT)]

        def body() -> None:
            for b, s in zip(buffers, next(plan)):
                b[:s].fill(1)
    else:
        def body() -> None:
            live = burst(next(plan))
            del live
    return body


PATTERN = Pattern("phase_burst", (6 << 20,), prepare, tags=frozenset({"ideal", "phase"}), test_size=1 << 18)
