"""fft_rounds: a coefficient vector of n x 32 bytes (four uint64 limbs per
element: 2^18, 2^20, 2^22 points = 8, 32, 128 MiB) allocated with np.empty,
filled with nonzero data, freed, every round: the buffer an FFT/NTT round
allocates for its output.

The ideal fills one preallocated vector: no allocator can beat it.
"""
from __future__ import annotations

import numpy as np

from ._pattern import Body, Pattern

LIMBS = 4
FILL = 0x5EED_0F_F1E1D   # any nonzero limb value


def new_vector(nbytes: int) -> np.ndarray:
    """A fresh (points, 4) uint64 vector of `nbytes`, every limb nonzero."""
    v = np.empty((max(nbytes // (8 * LIMBS), 1), LIMBS), dtype=np.uint64)
    v.fill(FILL)
    return v


def prepare(size: int, ideal: bool) -> Body:
    """The body of one round."""
    if ideal:
        buffer = new_vector(size)   # resident before timing, like a warm cache
        return lambda: buffer.fill(FILL)
    return lambda: new_vector(size)


PATTERN = Pattern("fft_rounds", (8 << 20, 32 << 20, 128 << 20),   # 2^18, 2^20, 2^22 points x 32 bytes
                  prepare, tags=frozenset({"ideal", "phase"}))
