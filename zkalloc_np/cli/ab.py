"""In-process A/B: a function with and without the cache (``zkalloc.compare``),
judged by the same rule as ``python -m zkalloc_np compare`` (wall time, CPU
time, page faults, and the machine's load: zkalloc_np._verdict.judge).

Rounds alternate numpy's default and zkalloc (``installed()``, in this
thread), the order reversed every other round, after `warmup` rounds of
each.  Each round is measured: wall time, this process's CPU time (user +
system) and its minor page faults.  The machine's load is sampled around
all of it.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._verdict import FASTER, SLOWER, Load, Samples, Verdict, judge
from .process import load_during, read_own, sample_machine

#: Why compare() cannot run under a process-wide install() (one line, for the user).
PROCESS_WIDE = ("zkalloc is installed process-wide here (python -m zkalloc_np run?), so the 'numpy default' "
                "rounds would run under zkalloc too: compare outside it")


@dataclass(frozen=True)
class Side:
    """One side's rounds: wall and CPU seconds and minor faults, per round."""

    wall_s: tuple[float, ...]
    cpu_s: tuple[float, ...]
    minor_faults: tuple[int, ...]

    @property
    def samples(self) -> Samples:
        """As the verdict takes them."""
        return Samples(self.wall_s, self.cpu_s, self.minor_faults)

    def spread(self) -> str:
        """Median (min-max) wall time, in ms."""
        ms = [w * 1e3 for w in self.wall_s]
        return f"{statistics.median(ms):.1f} ms ({min(ms):.1f}-{max(ms):.1f})"


@dataclass(frozen=True)
class ABResult:
    """What ``zkalloc.compare`` measured, and the verdict for zkalloc
    against numpy's default."""

    name: str
    rounds: int
    default: Side
    zkalloc: Side
    load: Load
    verdict: Verdict

    @property
    def speedup(self) -> float:
        """numpy default's median wall time over zkalloc's."""
        return statistics.median(self.default.wall_s) / max(statistics.median(self.zkalloc.wall_s), 1e-12)

    def summary(self) -> str:
        """One line: the two sides' spreads, the speedup and the verdict."""
        return (f"{self.name}: numpy default {self.default.spread()}, zkalloc {self.zkalloc.spread()}, "
                f"{self.speedup:.2f}x, {self.verdict.word}")

    def __repr__(self) -> str:
        return f"<zkalloc.compare {self.summary()} ({self.rounds} rounds each)>"

    def __str__(self) -> str:
        faults = (f"minor faults per round: numpy default {statistics.median(self.default.minor_faults):.0f}, "
                  f"zkalloc {statistics.median(self.zkalloc.minor_faults):.0f}")
        return "\n".join([self.summary(), f"  {faults}", f"  why: {self.verdict.reason}"])

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self) if cycle else str(self))

    @property
    def faster(self) -> bool:
        """The verdict says zkalloc is faster."""
        return self.verdict.word == FASTER

    @property
    def slower(self) -> bool:
        """The verdict says zkalloc is slower."""
        return self.verdict.word == SLOWER


def _timed(fn: Callable[[], object]) -> tuple[float, float, int]:
    """Wall and CPU seconds (time.process_time: this process, every thread,
    at nanosecond resolution, where /proc's ticks are 10 ms) and minor faults."""
    before, _ = read_own()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return wall, cpu, read_own()[0].minor_faults - before.minor_faults


def compare(fn: Callable[..., object], *args: Any, rounds: int = 5, warmup: int = 1, name: str | None = None,
            **kwargs: Any) -> ABResult:
    """Run ``fn(*args, **kwargs)`` `rounds` times with numpy's default and
    `rounds` times with zkalloc (``installed()``: this thread only),
    alternating, after `warmup` rounds of each; measure every round and
    judge.  RuntimeError under a process-wide install (both sides would be
    zkalloc's); ValueError for rounds < 1."""
    from .. import installed, is_installed
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"compare(rounds): expected a positive int, got {rounds!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"compare(warmup): expected a non-negative int, got {warmup!r}")
    if is_installed():
        raise RuntimeError(PROCESS_WIDE)

    def call() -> object:
        return fn(*args, **kwargs)

    def with_zkalloc() -> object:
        with installed():
            return call()

    for _ in range(warmup):
        call()
        with_zkalloc()
    sides: dict[str, list[tuple[float, float, int]]] = {"default": [], "zkalloc": []}
    machine0, (own0, _) = sample_machine(), read_own()
    for i in range(rounds):
        order = (("default", call), ("zkalloc", with_zkalloc))
        for side, run in (order if i % 2 == 0 else order[::-1]):
            sides[side].append(_timed(run))
    spent = read_own()[0].since(own0)
    load = load_during(machine0, sample_machine(), spent.wall_s, spent.cpu_s)
    default, zk = (Side(*(tuple(col) for col in zip(*sides[s]))) for s in ("default", "zkalloc"))
    return ABResult(name=name or str(getattr(fn, "__name__", "fn")), rounds=rounds, default=default, zkalloc=zk,
                    load=load, verdict=judge(default.samples, zk.samples, load))
