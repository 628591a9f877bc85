"""MSM bucket arrays: zero-initialised (np.zeros), sparsely touched, freed together.

Three patterns:

- ``msm_buckets``: 16 bucket arrays of `size` bytes (default 6 MiB), a few
  words (4 x uint64) written per 32 KiB, all freed together, every round.
- ``msm_windows``: the windowed Pippenger shape.  For window bits c (10, 14,
  16) each of the 26 / 19 / 16 windows of a 254-bit scalar gets 2^c buckets
  of 96 bytes (a projective point as 12 uint64 limbs); the first and last
  bucket of every window are touched, then all windows are freed together.
- ``msm_compute``: ``msm_buckets`` with a fixed slice of compute (modular
  products over preallocated buffers, no allocation) after the buckets are
  freed, so the round is compute + zeroing.  An allocator that zeroed
  regions off the critical path (in the background while the prover
  computes) would show it here; one that zeroes on allocation pays in full.

The ideal zeroes preallocated buffers with fill(0): memset speed, which is
the limit for any allocator that zeroes eagerly.
"""
from __future__ import annotations

import numpy as np

from ._pattern import Body, Pattern

COUNT = 16
WORDS_PER_TOUCH = 4
TOUCH_STRIDE = 32 << 10          # bytes between touched spots
BUCKET_LIMBS = 12                 # 96 bytes: a projective point, 3 x 4 limbs
WINDOWS = {10: 26, 14: 19, 16: 16}   # window bits -> windows for 254-bit scalars
COMPUTE_POINTS = 1 << 20
P = 15 * 2**27 + 1


def make_buckets(count: int, nbytes: int) -> list[np.ndarray]:
    """`count` zeroed uint64 bucket arrays of `nbytes` each (np.zeros)."""
    return [np.zeros(nbytes // 8, dtype=np.uint64) for _ in range(count)]


def touch_sparse(bucket: np.ndarray) -> None:
    """Write WORDS_PER_TOUCH words every TOUCH_STRIDE bytes."""
    words = TOUCH_STRIDE // 8
    usable = bucket.size // words * words
    if usable:
        bucket[:usable].reshape(-1, words)[:, :WORDS_PER_TOUCH] += 1
    else:
        bucket[:WORDS_PER_TOUCH] += 1


def make_windows(c: int) -> list[np.ndarray]:
    """One zeroed (2^c, 12) uint64 bucket array per window of a c-bit Pippenger MSM."""
    if c not in WINDOWS:
        raise ValueError(f"window bits must be one of {sorted(WINDOWS)}, got {c}")
    return [np.zeros((1 << c, BUCKET_LIMBS), dtype=np.uint64) for _ in range(WINDOWS[c])]


def touch_ends(window: np.ndarray) -> None:
    """Accumulate into the first and the last bucket."""
    window[0] += 1
    window[-1] += 1


class _Compute:
    """A fixed amount of prover work that allocates nothing."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.x = rng.integers(0, P, COMPUTE_POINTS, dtype=np.uint64)
        self.y = rng.integers(0, P, COMPUTE_POINTS, dtype=np.uint64)
        self.t = np.empty_like(self.x)

    def __call__(self) -> None:
        for _ in range(4):
            np.multiply(self.x, self.y, out=self.t)
            np.remainder(self.t, P, out=self.t)


def _buckets_body(size: int, ideal: bool) -> Body:
    """The body of one msm_buckets round."""
    if ideal:
        buffers = make_buckets(COUNT, size)

        def reuse() -> None:
            for b in buffers:
                b.fill(0)
                touch_sparse(b)
        return reuse

    def fresh() -> None:
        for b in make_buckets(COUNT, size):
            touch_sparse(b)
    return fresh


def _windows_body(size: int, ideal: bool) -> Body:
    """The body of one msm_windows round."""
    if ideal:
        windows = make_windows(size)

        def reuse() -> None:
            for w in windows:
                w.fill(0)
                touch_ends(w)
        return reuse

    def fresh() -> None:
        for w in make_windows(size):
            touch_ends(w)
    return fresh


def _compute_body(size: int, ideal: bool) -> Body:
    """The body of one msm_compute round: the buckets, then the compute."""
    buckets_round, compute = _buckets_body(size, ideal), _Compute()

    def body() -> None:
        buckets_round()
        compute()
    return body


_TAGS = frozenset({"ideal", "phase", "zeros"})
buckets = Pattern("msm_buckets", (6 << 20,), _buckets_body, tags=_TAGS)
windows = Pattern("msm_windows", tuple(sorted(WINDOWS)), _windows_body, unit="c", tags=_TAGS, test_size=10)
compute = Pattern("msm_compute", (6 << 20,), _compute_body, tags=_TAGS)
