"""phase_reset: what it costs to end a phase of `size` arrays.

Each round opens ``zkalloc.phase()`` with a capacity that holds the whole
round (one chunk, so the arena's shape does not change with the count),
allocates `size` arrays of 64 KiB and writes one byte per page, frees them,
and ends the phase.  The time reported is the reset alone (the phase's own
``stats.reset_seconds``): it must not grow with the number of arrays, so
10 and 10,000 arrays should cost the same.  A second variant,
``phase_reset_escaped``, keeps every array alive across the end of the
phase (all escape, so the chunk is pinned rather than given back).

Only zkalloc-phase runs it: no other allocator has a phase to end.
"""
from __future__ import annotations

import numpy as np

from ._timing import Body, runner

ARRAY_BYTES = 64 << 10
HEADER = 64


class _Reset:
    UNIT = "arrays"
    SIZES = [10, 10_000]
    TEST_SIZE = 10
    HAS_IDEAL = False
    ONLY = ("zkalloc-phase",)

    def __init__(self, pattern: str, escape: bool) -> None:
        self.PATTERN = pattern
        self.escape = escape
        self.run = runner(self.prepare)

    def prepare(self, size: int, ideal: bool) -> Body:
        import zkalloc_np as zk
        capacity = size * (ARRAY_BYTES + HEADER) + (1 << 20)

        def body() -> float:
            with zk.phase("bench-reset", capacity=capacity) as ph:
                live = [np.empty(ARRAY_BYTES, np.uint8) for _ in range(size)]
                for a in live:
                    a[::4096] = 1
                if not self.escape:
                    del live
            if ph.stats.arrays < size or ph.stats.chunks != 1:
                raise AssertionError(f"phase_reset: expected {size} arrays in one chunk, got {ph.stats}")
            return ph.stats.reset_seconds
        return body


dead = _Reset("phase_reset", escape=False)
escaped = _Reset("phase_reset_escaped", escape=True)
