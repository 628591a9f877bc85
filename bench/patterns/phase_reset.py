"""phase_reset: what it costs to end a phase of `size` arrays.

Each round opens ``zkalloc.phase()``, allocates `size` arrays of 64 KiB and
writes one byte per page, frees them (``phase_reset``) or keeps them alive
across the end of the phase (``phase_reset_escaped``: all escape), and ends
the phase.  The time reported is the phase's exit alone.  A phase is an
accounted scope over the cache: its exit closes the scope and reads its
counters, never walking arrays, so 10 and 10,000 arrays should cost the
same (with the default on_escape="ignore"; "warn" and "raise" list the
escaped arrays, which does walk them).

Only zkalloc-phase runs it: no other allocator has a phase to end.
"""
from __future__ import annotations

import time

import numpy as np

from ._pattern import Body, Pattern

ARRAY_BYTES = 64 << 10


def _reset_body(size: int, escape: bool) -> Body:
    """One round: a phase of `size` arrays, freed or escaping; returns its exit's seconds."""
    import zkalloc_np as zk

    def body() -> float:
        with zk.phase("bench-reset") as ph:
            live = [np.empty(ARRAY_BYTES, np.uint8) for _ in range(size)]
            for a in live:
                a[::4096] = 1
            del a
            if not escape:
                del live
            start = time.perf_counter()
        seconds = time.perf_counter() - start
        if ph.stats.arrays < size or ph.stats.escaped_arrays != (size if escape else 0):
            raise AssertionError(f"phase_reset: expected {size} arrays, got {ph.stats}")
        return seconds
    return body


dead = Pattern("phase_reset", (10, 10_000), lambda size, ideal: _reset_body(size, escape=False), unit="arrays",
               tags=frozenset({"phase-exit"}), test_size=10)
escaped = Pattern("phase_reset_escaped", (10, 10_000), lambda size, ideal: _reset_body(size, escape=True),
                  unit="arrays", tags=frozenset({"phase-exit"}), test_size=10)
