"""What a benchmark pattern is: a name, its sizes and their unit, its tags,
and ``prepare(size, ideal)``, which does the untimed setup (inputs,
preallocated buffers, JIT warm-up) and returns the body of one round;
``bench.worker`` times the calls of that body.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Body = Callable[[], object]

#: Every tag a pattern may carry, and what it means.  The allocators of
#: bench.allocators that are variants run, by default, only on the patterns
#: carrying one of their tags (Allocator.runs_on).
TAGS: dict[str, str] = {
    "ideal": "has a preallocated form (out=, one buffer reused): the `ideal` allocator runs it",
    "zeros": "its buffers come from np.zeros: the zkalloc-lazy variants run it",
    "phase": "each round can run inside zkalloc.phase(): the zkalloc-phase variants run it",
    "phase-exit": "a round is a phase's exit: only zkalloc-phase runs it, no other allocator has a phase",
    "libc": "buffers numpy's handler does not see: zkalloc-global-leave (libc=leave) runs it",
    "first-touch": "the cost of a miss: zkalloc-nothp runs it",
}
#: Tags that keep the general allocators (those without runs_on) off a pattern.
EXCLUSIVE = frozenset({"phase-exit"})


def timed(body: Body, rounds: int) -> list[float]:
    """Call `body` `rounds` times; seconds of each call (perf_counter)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        body()
        times.append(time.perf_counter() - start)
    return times


@dataclass(frozen=True)
class Pattern:
    """One benchmark pattern.

    `unit` is what a size counts: "bytes" (``--sizes`` in MiB), "log2n"
    (points = 2^size), "c" (MSM window bits), "threads", or any other word
    (a plain count, shown as "<size> <unit>").  A body may return a float:
    the seconds to report for that round (a self-timed pattern)."""

    name: str
    sizes: tuple[int, ...]
    prepare: Callable[[int, bool], Body]
    unit: str = "bytes"
    tags: frozenset[str] = frozenset()
    test_size: int = 1 << 16          # small enough for the unit tests
    quick_size: int | None = None     # what --quick runs (default: the first size)
    max_passes: int | None = None     # for patterns whose workers are slow to start
    zkalloc_settings: Mapping[str, Any] = field(default_factory=dict)   # configure(**) before prepare
    unavailable: Callable[[], str | None] = lambda: None                  # why it cannot run here
    bytes_per_round: Callable[[int], int] | None = None                  # for a GB/s column
    after_rounds: Callable[[int, Body], dict[str, Any]] | None = None    # fields joining the record

    def __post_init__(self) -> None:
        unknown = self.tags - set(TAGS)
        if unknown:
            raise ValueError(f"pattern {self.name}: unknown tag(s) {', '.join(sorted(unknown))}")

    @property
    def has_ideal(self) -> bool:
        """Whether the pattern has a preallocated (ideal) form."""
        return "ideal" in self.tags

    def run(self, size: int, rounds: int, ideal: bool = False) -> list[float]:
        """Prepare once, then the seconds of `rounds` rounds."""
        return timed(self.prepare(size, ideal), rounds)
