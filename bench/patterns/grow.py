"""grow: a working set that grows into fresh memory, is freed, and grows again
with another size mix.

One round allocates arrays of mixed sizes between 256 KiB and 32 MiB, fills
each once and keeps all of them alive until they add up to `size` bytes
(512 MiB by default), then frees them all.  Every round draws a new mix: the
log2 of each size comes from a triangular distribution over [18, 25] whose
mode moves with the round (seeded by the round's index, so every allocator
sees the same sequence).  A cache that keeps idle memory in the size class
it was freed from finds the wrong classes idle each round; one that can
reuse idle memory for any size faults only when the working set outgrows
what it holds.

The ideal carves the same arrays out of one resident buffer (views) and
fills them: the allocation-free limit.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ._pattern import Body, Pattern

LOW, HIGH = 256 << 10, 32 << 20   # bytes: the smallest and largest array of a mix
MIXES = 32                        # distinct mixes, cycled (more than any worker runs rounds)
GOLDEN = (math.sqrt(5) - 1) / 2   # the mode's step per round: spreads modes evenly


def mix_sizes(total: int, index: int, low: int = LOW, high: int = HIGH) -> list[int]:
    """Round `index`'s array sizes in bytes (multiples of 8): drawn until they
    add up to at least `total`; the last is cut so the sum stays below
    `total + low`."""
    if not 8 <= low < high:
        raise ValueError(f"need 8 <= low < high, got {low}, {high}")
    rng = np.random.default_rng(index)
    lo, hi = math.log2(low), math.log2(high)
    mode = lo + (hi - lo) * (((index + 1) * GOLDEN) % 1.0)   # round 0 (the cold one): mode near 5 MiB
    sizes: list[int] = []
    filled = 0
    while filled < total:
        size = int(2.0 ** rng.triangular(lo, mode, hi)) // 8 * 8
        size = min(size, max(total - filled, low) // 8 * 8)
        sizes.append(size)
        filled += size
    return sizes


def grow(sizes: list[int], value: int) -> list[np.ndarray]:
    """The working set: one uint64 array per size, each filled once with `value`."""
    live = []
    for size in sizes:
        a = np.empty(size // 8, dtype=np.uint64)
        a.fill(value)
        live.append(a)
    return live


def bytes_per_round(size: int) -> int:
    """Bytes written per round (at least `size`; the last array may add a little)."""
    return size


def prepare(size: int, ideal: bool) -> Body:
    """The body of one round: grow to `size` bytes with the next mix, free."""
    plans = itertools.cycle(enumerate(mix_sizes(size, i) for i in range(MIXES)))
    if ideal:
        buffer = np.ones((size + LOW) // 8, dtype=np.uint64)   # resident: faulted before timing

        def body() -> None:
            index, sizes = next(plans)
            start = 0
            for s in sizes:
                buffer[start:start + s // 8].fill(index)
                start += s // 8
    else:
        def body() -> None:
            index, sizes = next(plans)
            live = grow(sizes, index)
            del live
    return body


PATTERN = Pattern("grow", (512 << 20,), prepare, tags=frozenset({"ideal"}), test_size=8 << 20,
                  quick_size=128 << 20,   # --quick: a smoke run, not a measurement
                  bytes_per_round=bytes_per_round)
