"""zeros: np.zeros of `size` bytes, then a write every `stride` bytes, freed.

Two patterns from one function: zeros_dense writes every byte (trace
columns, accumulators), zeros_sparse writes one word per 32 KiB (MSM bucket
arrays).  They decide calloc's zeroing policy: memset of a reused region
against MADV_DONTNEED (zkalloc-lazy), whose pages fault back on first touch.
The ideal variant zeroes one preallocated buffer with fill(0).
"""
from __future__ import annotations

import numpy as np

from ._timing import Body, timed

SIZES = [6 << 20, 64 << 20, 256 << 20]


def _touch(a: np.ndarray, stride: int) -> None:
    if stride == 1:
        a.fill(1)
    else:
        a[::stride] = 1


def prepare_with_stride(size: int, ideal: bool, stride: int) -> Body:
    """The body of one round."""
    if ideal:
        buffer = np.zeros(size, dtype=np.uint8)

        def body() -> None:
            buffer.fill(0)
            _touch(buffer, stride)
        return body

    def fresh() -> None:
        a = np.zeros(size, dtype=np.uint8)
        _touch(a, stride)
        del a
    return fresh


class _Variant:
    USES_ZEROS = True
    TEST_SIZE = 1 << 16

    def __init__(self, name: str, stride: int) -> None:
        self.PATTERN, self.SIZES, self._stride = name, SIZES, stride

    def prepare(self, size: int, ideal: bool = False) -> Body:
        """The body of one round."""
        return prepare_with_stride(size, ideal, self._stride)

    def run(self, size: int, rounds: int, ideal: bool = False) -> list[float]:
        """Seconds per round."""
        return timed(self.prepare(size, ideal), rounds)


dense = _Variant("zeros_dense", 1)
sparse = _Variant("zeros_sparse", 32 << 10)
