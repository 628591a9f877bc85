"""zeros: np.zeros of `size` bytes, then a write every `stride` bytes, freed.

Two patterns from one function: zeros_dense writes every byte (trace
columns, accumulators), zeros_sparse writes one word per 32 KiB (MSM bucket
arrays).  They decide calloc's zeroing policy: memset of a reused region
against MADV_DONTNEED (zkalloc-lazy), whose pages fault back on first touch.
The ideal variant zeroes one preallocated buffer with fill(0).
"""
from __future__ import annotations

import time

import numpy as np

SIZES = [6 << 20, 64 << 20, 256 << 20]


def _touch(a: np.ndarray, stride: int) -> None:
    if stride == 1:
        a.fill(1)
    else:
        a[::stride] = 1


def run_with_stride(size: int, rounds: int, ideal: bool, stride: int) -> list[float]:
    times = []
    buffer = np.zeros(size, dtype=np.uint8) if ideal else None
    for _ in range(rounds):
        start = time.perf_counter()
        if ideal:
            buffer.fill(0)
            _touch(buffer, stride)
        else:
            a = np.zeros(size, dtype=np.uint8)
            _touch(a, stride)
            del a
        times.append(time.perf_counter() - start)
    return times


class _Variant:
    def __init__(self, name: str, stride: int) -> None:
        self.PATTERN, self.SIZES, self._stride = name, SIZES, stride

    def run(self, size: int, rounds: int, ideal: bool = False) -> list[float]:
        return run_with_stride(size, rounds, ideal, self._stride)


dense = _Variant("zeros_dense", 1)
sparse = _Variant("zeros_sparse", 32 << 10)
