"""Timing helpers shared by the patterns.

A pattern's ``prepare(size, ideal)`` does the untimed setup (inputs,
preallocated buffers, JIT warm-up) and returns the body of one round;
``bench.worker`` times the calls of that body.  ``runner(prepare)`` builds
the module-level ``run(size, rounds, ideal)`` every pattern also exposes.
"""
from __future__ import annotations

import time
from collections.abc import Callable

Body = Callable[[], object]


def timed(body: Body, rounds: int) -> list[float]:
    """Call `body` `rounds` times; seconds of each call (perf_counter)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        body()
        times.append(time.perf_counter() - start)
    return times


def runner(prepare: Callable[[int, bool], Body]) -> Callable[..., list[float]]:
    """``run(size, rounds, ideal=False)``: prepare once, then time `rounds` rounds."""
    def run(size: int, rounds: int, ideal: bool = False) -> list[float]:
        """Seconds per round."""
        return timed(prepare(size, ideal), rounds)
    return run
