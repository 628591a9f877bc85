"""galois NTTs over BabyBear and Goldilocks, numpy's default allocator vs zkalloc.

    python examples/galois_fft.py --size 2^14 2^16 2^18 --rounds 5
    python -m zkalloc_np compare examples/galois_fft.py --size 2^16 --rounds 3 --single

One round is ``galois.ntt(x)`` then ``galois.intt`` back (checked equal to x).
galois's GF arrays are ndarray subclasses, so their data goes through numpy's
handler and so through zkalloc; the NTT kernel itself runs in numba, whose
own buffers come from numba's allocator (PyMem_RawMalloc), not from numpy's
handler.  The script measures both per transform and prints the share the
cache sees.

BabyBear, p = 15 * 2^27 + 1 = 0x78000001, runs in galois's "jit-calculate"
mode (uint32 arrays, numba kernels).  Goldilocks, p = 2^64 - 2^32 + 1, does
not fit int64 arithmetic: galois runs it in "python-calculate" mode over
object arrays of Python ints, 100x slower, and the cache only sees the arrays
of pointers; it is timed at small sizes for completeness.
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np
from _common import (add_common_arguments, compare, parse_size, print_table, refuse_under_process_wide_install,
                     size_label)

import zkalloc_np as zkalloc

BABYBEAR = 15 * 2**27 + 1
GOLDILOCKS = 2**64 - 2**32 + 1


def ntt_round(x):
    """Forward and inverse NTT; the round trip must give x back."""
    import galois
    y = galois.ntt(x)
    if not np.array_equal(galois.intt(y), x):
        raise AssertionError("galois NTT round trip failed")
    return y


def same(a, b) -> bool:
    return np.array_equal(a, b)


def allocation_share(field, n: int) -> tuple[int, int, int]:
    """(bytes the cache served, small requests it passed to numpy, peak bytes
    numba's kernel allocated itself) for one warm forward NTT of n points."""
    import galois
    x = field.Random(n, seed=3)
    with zkalloc.installed():
        galois.ntt(x)
        before = zkalloc.stats()
        galois.ntt(x)
        after = zkalloc.stats()
    earlier = {c.bytes: c.hits + c.misses for c in before.classes}
    served = sum((c.hits + c.misses - earlier.get(c.bytes, 0)) * c.bytes for c in after.classes)
    # the kernel on its own (its input prepared outside): numba allocates with
    # PyMem_RawMalloc, which tracemalloc sees
    kernel = field._fft.jit
    omega = np.int64(field.primitive_root_of_unity(n))
    factors = field._fft._prime_factors(n)
    x64 = x.view(np.ndarray).astype(np.int64)
    kernel(x64, omega, factors)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kernel(x64, omega, factors)
    numba_peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return served, after.small_allocs - before.small_allocs, numba_peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, ["2^14", "2^16", "2^18"])
    parser.add_argument("--goldilocks-size", type=parse_size, nargs="*", default=[parse_size("2^10")],
                        help="sizes for Goldilocks (python-calculate mode, slow; default 2^10; none to skip)")
    args = parser.parse_args(argv)
    refuse_under_process_wide_install(parser, args)
    import galois

    start = time.perf_counter()
    field = galois.GF(BABYBEAR)
    built = time.perf_counter() - start
    start = time.perf_counter()
    ntt_round(field.Random(16, seed=0))
    jit = time.perf_counter() - start
    print(f"galois {galois.__version__}, GF(0x{BABYBEAR:x}) ({field.ufunc_mode}, {field.dtypes[0].__name__} arrays): "
          f"built in {built:.2f} s; numba JIT warm-up of ntt+intt {jit:.2f} s (not timed below)")
    how = "under the allocator in effect" if args.single else "per allocator, alternating"
    print(f"{args.rounds} timed rounds {how}; median seconds of ntt + intt.\n")

    rows = []
    for n in args.size:
        x = field.Random(n, seed=n)
        rows.append(compare(f"BB {size_label(n)}", lambda: ntt_round(x), args.rounds, same, single=args.single))
    for n in args.goldilocks_size:
        gold = galois.GF(GOLDILOCKS)
        x = gold.Random(n, seed=n)
        rows.append(compare(f"GL {size_label(n)}", lambda: ntt_round(x), args.rounds, same, single=args.single))
    print_table(rows, "field/size", single=args.single)
    if args.goldilocks_size:
        print(f"GL: Goldilocks runs in galois's {galois.GF(GOLDILOCKS).ufunc_mode!r} mode (object arrays of Python "
              "ints); the cache sees only the arrays of pointers.")

    if args.single:
        print("\nchecked: every round's intt(ntt(x)) == x (--single: no comparison, and the share of the bytes "
              "the cache sees is not measured)")
        return 0
    print("\nwhat the cache sees of one BabyBear forward NTT (galois.ntt):")
    for n in args.size:
        served, small, numba_bytes = allocation_share(field, n)
        share = served / (served + numba_bytes) if served + numba_bytes else 0.0
        print(f"  {size_label(n)}: cache served {served / n:.0f} B/point ({served >> 10} KiB), "
              f"numba's kernel allocated {numba_bytes / n:.0f} B/point outside it: "
              f"the cache sees {share:.0%} of the bytes ({small} small requests left to numpy)")
    print("\nchecked: every round's intt(ntt(x)) == x and zkalloc results == default results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
