"""The newcomer's demo: a numpy NTT prover loop, numpy's default allocator
against zkalloc, in one run."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import installed, is_installed, reset_stats, stats
from ..ntt import NTT, multiply_polynomials, random_field_elements


#: Why the demo cannot run under install() (one line, for the user).
PROCESS_WIDE = ("zkalloc is installed process-wide here (python -m zkalloc_np run?), so the demo's "
                "'numpy default' rounds would run under zkalloc too; run the demo on its own: "
                "python -m zkalloc_np demo")


@dataclass(frozen=True)
class DemoRow:
    """Median seconds of one prover round at one size, per allocator."""

    log_n: int
    default_s: float
    zkalloc_s: float

    @property
    def speedup(self) -> float:
        return self.default_s / self.zkalloc_s


def prover_round(ntt: NTT, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Commit to two polynomials and multiply them: 3 NTTs of size n."""
    return multiply_polynomials(ntt, a, b)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(log_n: int, rounds: int) -> DemoRow:
    """Alternate default and zkalloc rounds (after one warm-up each), so both
    see the same machine state; medians of each.  RuntimeError when zkalloc is
    installed process-wide: the default rounds would be zkalloc's."""
    if is_installed():
        raise RuntimeError(PROCESS_WIDE)
    n = 1 << log_n
    ntt = NTT(n)
    a, b = random_field_elements(n, seed=1), random_field_elements(n, seed=2)
    expected = prover_round(ntt, a, b)
    with installed():
        if not np.array_equal(prover_round(ntt, a, b), expected):
            raise RuntimeError("zkalloc changed the result of the NTT round: please report this")
    default_times, zk_times = [], []
    for _ in range(rounds):
        default_times.append(_timed(lambda: prover_round(ntt, a, b)))
        with installed():
            zk_times.append(_timed(lambda: prover_round(ntt, a, b)))
    return DemoRow(log_n, statistics.median(default_times), statistics.median(zk_times))


def run(log_sizes: tuple[int, ...] = (20, 22), rounds: int = 3, echo: Callable[[str], None] = print) -> list[DemoRow]:
    """Run the demo and print a table and zkalloc's stats; returns the rows."""
    echo("zkalloc-np demo: polynomial multiplication by NTT over BabyBear (p = 15*2^27+1),")
    echo(f"plain numpy expressions, {rounds} round{'s' if rounds != 1 else ''} per allocator, alternating; "
         "median seconds per round.\n")
    echo(f"{'points':>8}  {'numpy default':>14}  {'zkalloc':>10}  {'speedup':>8}")
    reset_stats()
    rows = []
    for log_n in log_sizes:
        row = measure(log_n, rounds)
        rows.append(row)
        echo(f"{'2^' + str(log_n):>8}  {row.default_s:>13.3f}s  {row.zkalloc_s:>9.3f}s  {row.speedup:>7.2f}x")
    echo("\nresults checked: every zkalloc round equals the numpy-default round bit for bit")
    echo("")
    echo(str(stats()))
    return rows
