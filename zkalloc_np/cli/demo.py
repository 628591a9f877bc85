"""The newcomer's demo: a numpy NTT prover loop, numpy's default allocator
against zkalloc, in one run."""
from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np

from .. import installed, is_installed, reset_stats, stats
from ..ntt import NTT, multiply_polynomials, random_field_elements
from .ab import ABResult, compare


#: Why the demo cannot run under install() (one line, for the user).
PROCESS_WIDE = ("zkalloc is installed process-wide here (python -m zkalloc_np run?), so the demo's "
                "'numpy default' rounds would run under zkalloc too; run the demo on its own: "
                "python -m zkalloc_np demo")


def prover_round(ntt: NTT, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Commit to two polynomials and multiply them: 3 NTTs of size n."""
    return multiply_polynomials(ntt, a, b)


def measure(log_n: int, rounds: int) -> ABResult:
    """Alternate default and zkalloc rounds (after one warm-up each), so both
    see the same machine state, and judge them as compare does
    (zkalloc_np.compare).  RuntimeError when zkalloc is installed
    process-wide: the default rounds would be zkalloc's."""
    if is_installed():
        raise RuntimeError(PROCESS_WIDE)
    n = 1 << log_n
    ntt = NTT(n)
    a, b = random_field_elements(n, seed=1), random_field_elements(n, seed=2)
    expected = prover_round(ntt, a, b)
    with installed():
        if not np.array_equal(prover_round(ntt, a, b), expected):
            raise RuntimeError("zkalloc changed the result of the NTT round: please report this")
    return compare(prover_round, ntt, a, b, rounds=rounds, name=f"2^{log_n}")


def _ms(values: tuple[float, ...]) -> str:
    ms = sorted(v * 1e3 for v in values)
    return f"{statistics.median(ms):.1f} ({ms[0]:.1f}-{ms[-1]:.1f})"


def run(log_sizes: tuple[int, ...] = (20, 22), rounds: int = 5, echo: Callable[[str], None] = print) -> list[ABResult]:
    """Run the demo and print a table (median and min-max per side, the
    speedup and the verdict, each verdict's reason) and zkalloc's stats;
    returns the results."""
    echo("zkalloc-np demo: polynomial multiplication by NTT over BabyBear (p = 15*2^27+1),")
    echo(f"plain numpy expressions, {rounds} round{'s' if rounds != 1 else ''} per allocator, alternating; "
         "milliseconds per round, median (min-max).\n")
    head = f"{'points':>8}  {'numpy default':>22}  {'zkalloc':>22}  {'speedup':>7}  verdict"
    echo(head)
    reset_stats()
    results = []
    for log_n in log_sizes:
        r = measure(log_n, rounds)
        results.append(r)
        echo(f"{'2^' + str(log_n):>8}  {_ms(r.default.wall_s):>22}  {_ms(r.zkalloc.wall_s):>22}  "
             f"{r.speedup:>6.2f}x  {r.verdict.word}")
    echo("")
    for r in results:
        echo(f"{r.name}: {r.verdict.word}: {r.verdict.reason}")
    echo("results checked: every zkalloc round equals the numpy-default round bit for bit")
    echo("")
    echo(str(stats()))
    return results
