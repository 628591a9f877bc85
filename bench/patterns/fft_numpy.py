"""fft_numpy: ``np.fft.irfft(np.fft.rfft(x) * np.fft.rfft(x))`` over 2^20 and
2^22 float64 (8 and 32 MiB), every round.

numpy's arrays (the spectra, their product, the result) go through its data
handler; pocketfft's scratch is libc ``malloc``, which glibc unmaps at free
above its mmap threshold and faults afresh every round.  zkalloc reaches the
scratch only under ``install()`` with ``libc=keep`` (glibc keeps it
resident); the scoped ``installed()`` serves the arrays alone.

The ideal writes every array with ``out=`` into buffers allocated once
(pocketfft's own scratch is still allocated inside each call: no numpy API
preallocates it).
"""
from __future__ import annotations

import numpy as np

from ._pattern import Body, Pattern



def signal(log2n: int) -> np.ndarray:
    """The input: 2^log2n float64 in [0, 1), fixed seed."""
    return np.random.default_rng(24).random(1 << log2n)


def round_trip(x: np.ndarray) -> np.ndarray:
    """irfft(rfft(x) * rfft(x)): x's cyclic autoconvolution."""
    return np.fft.irfft(np.fft.rfft(x) * np.fft.rfft(x), n=x.size)


def prepare(size: int, ideal: bool) -> Body:
    """The body of one round."""
    x = signal(size)
    if not ideal:
        return lambda: round_trip(x)
    a = np.empty(x.size // 2 + 1, dtype=np.complex128)
    b = np.empty_like(a)
    out = np.empty_like(x)

    def preallocated() -> np.ndarray:
        np.fft.rfft(x, out=a)
        np.fft.rfft(x, out=b)
        np.multiply(a, b, out=a)
        return np.fft.irfft(a, n=x.size, out=out)
    return preallocated


PATTERN = Pattern("fft_numpy", (20, 22), prepare, unit="log2n", tags=frozenset({"ideal", "libc"}), test_size=12)
