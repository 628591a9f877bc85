"""fill: np.empty of `size` bytes, filled with nonzero data, freed, every round.

The ideal variant fills one preallocated buffer: no allocator can beat it.
fft_rounds covers 8-128 MiB with the same shape; fill runs the 512 MiB case
by default (``--sizes`` takes any).
"""
from __future__ import annotations

import numpy as np

from ._pattern import Body, Pattern



def _round(size: int) -> None:
    a = np.empty(size, dtype=np.uint8)
    a.fill(1)
    del a


def prepare(size: int, ideal: bool) -> Body:
    """The body of one round."""
    if ideal:
        buffer = np.empty(size, dtype=np.uint8)
        buffer.fill(0)   # fault it in before timing, like a warm cache
        return lambda: buffer.fill(1)
    return lambda: _round(size)


PATTERN = Pattern("fill", (512 << 20,), prepare, tags=frozenset({"ideal"}))
