"""A prover-shaped numpy round over BabyBear, numpy's default allocator vs zkalloc.

    python examples/ntt_prover.py --size 2^18 2^20 --rounds 3
    python -m zkalloc_np compare examples/ntt_prover.py --size 2^18 --rounds 3 --single

One round, at n points (rate 1/2, as a STARK's low-degree extension):
  1. two random polynomials of n/4 coefficients, evaluated on n points (NTT);
  2. their product by evaluation (pointwise product, inverse NTT);
  3. a Merkle commitment (hashlib.sha256) over the rows of the evaluations;
  4. FRI: fold the evaluations in half with a random challenge, committing to
     every layer, down to a small domain, then check the last layer is of low
     degree.
Everything is plain numpy expressions (no ``out=``), so each step allocates
fresh temporaries: the pattern zkalloc is for.

Checked every run: NTT round-trip, the product against a direct convolution
(at small sizes, up to 2^14 points), the final FRI layer's degree, and the
zkalloc round equal to the default round bit for bit (Merkle roots included).
"""
from __future__ import annotations

import argparse
import hashlib
import sys

import numpy as np
from _common import add_common_arguments, compare, print_table, refuse_under_process_wide_install, size_label

import zkalloc_np as zkalloc
from zkalloc_np.ntt import GENERATOR, NTT, P, powers, random_field_elements

FINAL_DOMAIN = 64        # FRI folds down to this many points
MERKLE_LEAVES = 1024     # rows of one committed layer
DIRECT_CHECK_MAX = 1 << 14
INV2 = (P + 1) // 2


def merkle_root(values: np.ndarray) -> bytes:
    """sha256 Merkle root over the rows of `values` reshaped to at most
    MERKLE_LEAVES rows."""
    rows = values.reshape(min(MERKLE_LEAVES, len(values)), -1)
    level = [hashlib.sha256(row.tobytes()).digest() for row in rows]
    while len(level) > 1:
        level = [hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


def fri_fold(evals: np.ndarray, inv_x: np.ndarray, beta: int) -> np.ndarray:
    """One FRI fold: from f on {w^i} (n points) to g on {w^2i} (n/2 points),
    g(x^2) = (f(x) + f(-x))/2 + beta (f(x) - f(-x))/(2x); -w^i = w^(i+n/2)."""
    half = len(evals) // 2
    lo, hi = evals[:half], evals[half:]
    even = (lo + hi) % P * INV2 % P
    odd = (lo + P - hi) % P * INV2 % P * inv_x[:half] % P
    return (even + np.uint64(beta) * odd % P) % P


def direct_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Linear convolution mod P, exact: 16-bit limbs, np.convolve in int64."""
    a0, a1 = (a & 0xFFFF).astype(np.int64), (a >> 16).astype(np.int64)
    b0, b1 = (b & 0xFFFF).astype(np.int64), (b >> 16).astype(np.int64)
    parts = [np.convolve(x, y) % P for x, y in ((a0, b0), (a0, b1), (a1, b0), (a1, b1))]
    c = (parts[0] + (parts[1] + parts[2]) % P * (1 << 16) % P + parts[3] * ((1 << 32) % P) % P) % P
    return c.astype(np.uint64)


class ProverRound:
    """Everything one size needs, built once (twiddles, challenges, inputs)."""

    def __init__(self, n: int) -> None:
        if n < 4 * FINAL_DOMAIN:
            raise ValueError(f"size must be at least {4 * FINAL_DOMAIN}, got {n}")
        self.n = n
        self.ntt = NTT(n)
        self.small_ntt = NTT(FINAL_DOMAIN)
        quarter = n // 4
        self.a = np.concatenate([random_field_elements(quarter, 1), np.zeros(n - quarter, np.uint64)])
        self.b = np.concatenate([random_field_elements(quarter, 2), np.zeros(n - quarter, np.uint64)])
        root_inv = pow(pow(GENERATOR, (P - 1) // n, P), P - 2, P)
        self.inv_x = powers(root_inv, n // 2)     # 1 / w^i for the first fold
        rng = np.random.default_rng(7)
        self.betas = [int(rng.integers(1, P)) for _ in range(n.bit_length())]

    def __call__(self) -> tuple[bytes, ...]:
        """One prover round; returns the commitments (Merkle roots)."""
        fa, fb = self.ntt.forward(self.a), self.ntt.forward(self.b)
        if not np.array_equal(self.ntt.inverse(fa), self.a):
            raise AssertionError("NTT round trip failed")
        product_evals = fa * fb % P
        del fa, fb   # dead from here: 2 x 8 MiB less at the peak (docs: When it does not fit)
        product = self.ntt.inverse(product_evals)
        if np.any(product[self.n // 2:]):
            raise AssertionError("the product has degree >= n/2")
        roots = [merkle_root(product_evals)]
        layer, inv_x, fold = product_evals, self.inv_x, 0
        while len(layer) > FINAL_DOMAIN:
            layer = fri_fold(layer, inv_x, self.betas[fold])
            inv_x = inv_x[::2]                        # 1/y on the halved domain: y = x^2
            roots.append(merkle_root(layer))
            fold += 1
        # degree < n/2 folded `fold` times: < n/2^(fold+1) = half the final domain
        if np.any(self.small_ntt.inverse(layer)[FINAL_DOMAIN // 2:]):
            raise AssertionError("FRI: the last layer is not of low degree")
        self.product = product
        return tuple(roots)

    def check_against_direct_convolution(self) -> None:
        """The product by evaluation equals a direct convolution (small n)."""
        quarter = self.n // 4
        self()
        expected = direct_product(self.a[:quarter], self.b[:quarter])
        if not np.array_equal(self.product[: len(expected)], expected):
            raise AssertionError("product by NTT differs from the direct convolution")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, ["2^18", "2^20"])
    args = parser.parse_args(argv)
    refuse_under_process_wide_install(parser, args)
    how = "under the allocator in effect" if args.single else "per allocator, alternating"
    print("numpy prover round over BabyBear: NTT, product by evaluation, Merkle commitments, FRI folding to "
          f"{FINAL_DOMAIN} points;\n{args.rounds} timed rounds {how}; median seconds per round.\n")
    zkalloc.reset_stats()
    rows = []
    for n in args.size:
        prover = ProverRound(n)
        if n <= DIRECT_CHECK_MAX:
            prover.check_against_direct_convolution()
            print(f"{size_label(n)}: product equals the direct convolution")
        rows.append(compare(size_label(n), prover, args.rounds, single=args.single))
    print_table(rows, "points", single=args.single)
    print("\nchecked: NTT round trip, FRI low degree" + ("" if args.single else ", zkalloc roots == default roots")
          + ", every round")
    print(zkalloc.stats())
    return 0


if __name__ == "__main__":
    sys.exit(main())
