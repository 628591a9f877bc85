"""Pippenger-style MSM bucket accumulation, numpy's default allocator vs zkalloc.

    python examples/msm_buckets.py --size 2^18 2^20 --rounds 3
    python -m zkalloc_np compare examples/msm_buckets.py --size 2^18 --rounds 3 --single

Real MSM points (BLS12-381, BN254) do not fit numpy dtypes, so this uses
integer stand-ins of the same shape: a "point" is LIMBS independent residues
mod the BabyBear prime (a product group, added limb by limb), a scalar is a
64-bit integer.  The work and the memory traffic follow Pippenger's method:
for each window of C scalar bits, the window's digits, a fresh ``np.zeros``
bucket array of 2^C x LIMBS, accumulation of every point into its digit's
bucket, and the running-sum reduction sum_j j * B_j.

Checked every run: the bucket result equals the direct sum sum_i s_i * P_i,
and the zkalloc round equals the default round.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import (add_common_arguments, compare, positive_int, print_table, refuse_under_process_wide_install,
                     size_label)

import zkalloc_np as zkalloc
from zkalloc_np.ntt import P

LIMBS = 4          # a 4 x 64-bit limb "point", like a 254-bit coordinate
SCALAR_BITS = 64


def random_instance(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(points: LIMBS x n residues mod P, scalars: n uint64)."""
    rng = np.random.default_rng(seed)
    points = rng.integers(0, P, size=(LIMBS, n), dtype=np.uint64)
    scalars = rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)
    return points, scalars


def window_sum(points: np.ndarray, digits: np.ndarray, window_bits: int) -> np.ndarray:
    """sum_j j * (sum of the points whose digit is j), per limb, mod P."""
    buckets = np.zeros((LIMBS, 1 << window_bits), dtype=np.uint64)
    for limb in range(LIMBS):
        np.add.at(buckets[limb], digits, points[limb])   # < n * 2^31: no overflow below n = 2^33
    buckets %= P
    # sum_j j B_j = sum_k S_k, S_k = sum_{j >= k} B_j (bucket 0 drops out)
    suffix = np.cumsum(buckets[:, :0:-1], axis=1) % P
    return suffix.sum(axis=1) % P


def msm_pippenger(points: np.ndarray, scalars: np.ndarray, window_bits: int) -> tuple[int, ...]:
    """sum_i s_i P_i by buckets, one window of `window_bits` at a time."""
    total = [0] * LIMBS
    mask = np.uint64((1 << window_bits) - 1)
    for shift in range(0, SCALAR_BITS, window_bits):
        digits = ((scalars >> np.uint64(shift)) & mask).astype(np.intp)
        partial = window_sum(points, digits, window_bits)
        weight = pow(2, shift, P)
        total = [(t + int(w) * weight) % P for t, w in zip(total, partial)]
    return tuple(total)


def msm_direct(points: np.ndarray, scalars: np.ndarray) -> tuple[int, ...]:
    """The same sum directly: (s_i mod P) * P_i mod P, summed."""
    s = scalars % np.uint64(P)
    return tuple(int((s * points[limb] % P).sum() % P) for limb in range(LIMBS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, ["2^18", "2^20"])
    parser.add_argument("--window", type=positive_int, default=16, help="window bits C (default 16)")
    args = parser.parse_args(argv)
    if SCALAR_BITS % args.window:
        parser.error(f"--window must divide {SCALAR_BITS}")
    refuse_under_process_wide_install(parser, args)
    how = "under the allocator in effect" if args.single else "per allocator, alternating"
    print(f"Pippenger bucket accumulation: {LIMBS}-limb stand-in points, {SCALAR_BITS}-bit scalars, "
          f"{args.window}-bit windows ({SCALAR_BITS // args.window} bucket arrays of 2^{args.window} x {LIMBS} "
          f"per MSM);\n{args.rounds} timed rounds {how}; median seconds per MSM.\n")
    zkalloc.reset_stats()
    rows = []
    for n in args.size:
        points, scalars = random_instance(n, seed=n)
        direct = msm_direct(points, scalars)
        if msm_pippenger(points, scalars, args.window) != direct:
            raise AssertionError("bucket sum differs from the direct sum")
        print(f"{size_label(n)}: bucket sum equals the direct sum")
        rows.append(compare(size_label(n), lambda: msm_pippenger(points, scalars, args.window), args.rounds,
                            single=args.single))
    print_table(rows, "points", single=args.single)
    if not args.single:
        print("\nchecked: zkalloc result == default result, every round")
    print(zkalloc.stats())
    return 0


if __name__ == "__main__":
    sys.exit(main())
