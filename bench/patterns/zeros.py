"""zeros: np.zeros of `size` bytes, then a write every `stride` bytes, freed.

Two patterns from one function: zeros_dense writes every byte (trace
columns, accumulators), zeros_sparse writes one word per 32 KiB (MSM bucket
arrays).  They decide calloc's zeroing policy: memset of a reused region
against MADV_DONTNEED (zkalloc-lazy), whose pages fault back on first touch.
The ideal variant zeroes one preallocated buffer with fill(0).
"""
from __future__ import annotations

import functools

import numpy as np

from ._pattern import Body, Pattern

SIZES = (6 << 20, 64 << 20, 256 << 20)


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


dense = Pattern("zeros_dense", SIZES, functools.partial(prepare_with_stride, stride=1),
                tags=frozenset({"ideal", "zeros"}))
sparse = Pattern("zeros_sparse", SIZES, functools.partial(prepare_with_stride, stride=32 << 10),
                 tags=frozenset({"ideal", "zeros"}))
