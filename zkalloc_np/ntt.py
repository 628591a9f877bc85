"""A radix-2 number-theoretic transform over BabyBear, in plain numpy.

Written the way prover prototypes are: whole-array expressions, no ``out=``,
so every stage allocates fresh temporaries of half and full size.  That is
the allocation pattern zkalloc is for, and this module is shared by the
demo, the benchmarks and the examples.

BabyBear: p = 15 * 2^27 + 1 (31 bits), 31 generates its multiplicative group,
so transforms of up to 2^27 points exist.  Values stay below 2^31, so a
product of two fits in uint64.
"""
from __future__ import annotations

import numpy as np

P = 15 * 2**27 + 1
GENERATOR = 31
MAX_LOG_N = 27
DTYPE = np.uint64


def powers(base: int, count: int) -> np.ndarray:
    """[1, base, base^2, ..., base^(count-1)] mod P, by doubling."""
    out = np.empty(count, dtype=DTYPE)
    out[0] = 1
    filled = 1
    while filled < count:
        step = min(filled, count - filled)
        out[filled:filled + step] = out[:step] * DTYPE(pow(base, filled, P)) % P
        filled += step
    return out


def bit_reverse_permutation(n: int) -> np.ndarray:
    """Index array i -> bit-reverse(i) over log2(n) bits."""
    bits = n.bit_length() - 1
    idx = np.arange(n, dtype=np.int64)
    rev = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        rev |= ((idx >> b) & 1) << (bits - 1 - b)
    return rev


class NTT:
    """Forward and inverse transforms of size n (a power of two, <= 2^27)."""

    def __init__(self, n: int) -> None:
        if n < 2 or n & (n - 1) or n > 2**MAX_LOG_N:
            raise ValueError(f"NTT size must be a power of two in [2, 2^{MAX_LOG_N}], got {n}")
        self.n = n
        root = pow(GENERATOR, (P - 1) // n, P)
        self._forward = self._twiddles(root)
        self._inverse = self._twiddles(pow(root, P - 2, P))
        self._bitrev = bit_reverse_permutation(n)
        self._n_inv = DTYPE(pow(n, P - 2, P))

    def _twiddles(self, root: int) -> dict[int, np.ndarray]:
        """Per stage half-size h: the powers of a primitive 2h-th root of unity."""
        full = powers(root, self.n // 2)
        return {h: np.ascontiguousarray(full[:: self.n // (2 * h)]) for h in self._halves()}

    def _halves(self) -> list[int]:
        return [self.n >> s for s in range(1, self.n.bit_length())]

    def _dif(self, a: np.ndarray, twiddles: dict[int, np.ndarray]) -> np.ndarray:
        """Decimation in frequency, natural order in, bit-reversed order out."""
        x = a
        for h in self._halves():
            blocks = x.reshape(-1, 2, h)
            u, v = blocks[:, 0, :], blocks[:, 1, :]
            s = (u + v) % P
            d = (u + P - v) % P * twiddles[h] % P
            x = np.stack((s, d), axis=1).reshape(-1)
        return x

    def forward(self, coeffs: np.ndarray) -> np.ndarray:
        """Evaluations at the n-th roots of unity, in natural order."""
        out: np.ndarray = self._dif(self._check(coeffs), self._forward)[self._bitrev]
        return out

    def inverse(self, evals: np.ndarray) -> np.ndarray:
        """Coefficients from evaluations: forward(inverse(e)) == e."""
        out: np.ndarray = self._dif(self._check(evals), self._inverse)[self._bitrev] * self._n_inv % P
        return out

    def _check(self, a: np.ndarray) -> np.ndarray:
        if a.shape != (self.n,):
            raise ValueError(f"expected shape ({self.n},), got {a.shape}")
        return a.astype(DTYPE, copy=False)


def random_field_elements(n: int, seed: int = 0) -> np.ndarray:
    """n uniform elements of BabyBear."""
    return np.random.default_rng(seed).integers(0, P, size=n, dtype=DTYPE)


def multiply_polynomials(ntt: NTT, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cyclic product of two coefficient vectors by evaluation."""
    return ntt.inverse(ntt.forward(a) * ntt.forward(b) % P)


def naive_cyclic_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The same product by the schoolbook formula, for checking at small n."""
    n = len(a)
    out = [0] * n
    for i, ai in enumerate(a.tolist()):
        for j, bj in enumerate(b.tolist()):
            out[(i + j) % n] = (out[(i + j) % n] + ai * bj) % P
    return np.array(out, dtype=DTYPE)
