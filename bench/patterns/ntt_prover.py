"""ntt_prover: the demo's numpy NTT prover loop plus FRI folding, over BabyBear.

One round commits to two polynomials of n = 2^size coefficients and
multiplies them (forward NTT of both, pointwise product, inverse NTT: the
loop of ``python -m zkalloc_np demo``, from ``zkalloc_np/ntt.py``), then
folds the product's evaluations FRI-style, halving them with a random
challenge until 2^8 values are left.  Written with plain expressions, as
prover prototypes are, so every NTT stage and every fold allocates fresh
full- and half-size temporaries.

The ideal is the same arithmetic with `out=` into buffers preallocated
once (``NTTOut``, ``fold_out``): the allocation-free limit.
"""
from __future__ import annotations

import numpy as np

from zkalloc_np.ntt import GENERATOR, NTT, P, powers, random_field_elements

from ._pattern import Body, Pattern

FINAL_LOG_N = 8
INV2 = (P + 1) // 2
U64 = np.uint64


def inverse_domain(n: int) -> np.ndarray:
    """omega_n^-i for i < n/2: the 1/x factors of a fold of n evaluations."""
    root = pow(GENERATOR, (P - 1) // n, P)
    return powers(pow(root, P - 2, P), n // 2)


def challenges(count: int, seed: int = 7) -> list[int]:
    """The verifier's random folding challenges (fixed for repeatability)."""
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(1, P, count)]


def fold(evals: np.ndarray, beta: int, inv_x: np.ndarray) -> np.ndarray:
    """One FRI fold: evaluations of f over the n-th roots of unity (natural
    order) to those of f_even + beta * f_odd over the (n/2)-th roots."""
    h = evals.size // 2
    lo, hi = evals[:h], evals[h:]
    even = (lo + hi) % P * INV2 % P
    odd = (lo + P - hi) % P * INV2 % P * inv_x % P
    return (even + odd * U64(beta)) % P


def fold_out(evals: np.ndarray, beta: int, inv_x: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """`fold` into preallocated `out` and `scratch` (both n/2 long)."""
    h = evals.size // 2
    lo, hi = evals[:h], evals[h:]
    np.add(lo, P, out=scratch)
    np.subtract(scratch, hi, out=scratch)
    np.remainder(scratch, P, out=scratch)
    np.multiply(scratch, INV2, out=scratch)
    np.remainder(scratch, P, out=scratch)
    np.multiply(scratch, inv_x, out=scratch)
    np.remainder(scratch, P, out=scratch)
    np.multiply(scratch, U64(beta), out=scratch)
    np.add(lo, hi, out=out)
    np.remainder(out, P, out=out)
    np.multiply(out, INV2, out=out)
    np.remainder(out, P, out=out)
    np.add(out, scratch, out=out)
    np.remainder(out, P, out=out)
    return out


class NTTOut:
    """The transforms of `zkalloc_np.ntt.NTT`, written into preallocated buffers."""

    def __init__(self, ntt: NTT) -> None:
        self.ntt = ntt
        n = ntt.n
        self._ping, self._pong = np.empty(n, U64), np.empty(n, U64)
        self._tmp = np.empty(n // 2, U64)

    def _dif(self, a: np.ndarray, twiddles: dict[int, np.ndarray]) -> np.ndarray:
        src, dst = a, self._ping
        for h in self.ntt._halves():
            blocks, outs = src.reshape(-1, 2, h), dst.reshape(-1, 2, h)
            u, v = blocks[:, 0, :], blocks[:, 1, :]
            s, d = outs[:, 0, :], outs[:, 1, :]
            np.add(u, P, out=d)
            np.subtract(d, v, out=d)
            np.remainder(d, P, out=d)
            np.multiply(d, twiddles[h], out=d)
            np.remainder(d, P, out=d)
            np.add(u, v, out=s)
            np.remainder(s, P, out=s)
            src, dst = dst, (self._pong if dst is self._ping else self._ping)
        return src

    def forward(self, coeffs: np.ndarray, out: np.ndarray) -> np.ndarray:
        """NTT.forward(coeffs), into `out`."""
        return np.take(self._dif(coeffs, self.ntt._forward), self.ntt._bitrev, out=out)

    def inverse(self, evals: np.ndarray, out: np.ndarray) -> np.ndarray:
        """NTT.inverse(evals), into `out`."""
        np.take(self._dif(evals, self.ntt._inverse), self.ntt._bitrev, out=out)
        np.multiply(out, self.ntt._n_inv, out=out)
        return np.remainder(out, P, out=out)


class Prover:
    """Inputs and precomputed tables for rounds at n = 2^log_n."""

    def __init__(self, log_n: int) -> None:
        if not FINAL_LOG_N < log_n <= 27:
            raise ValueError(f"log_n must be in ({FINAL_LOG_N}, 27], got {log_n}")
        self.n = 1 << log_n
        self.ntt = NTT(self.n)
        self.a, self.b = random_field_elements(self.n, seed=1), random_field_elements(self.n, seed=2)
        sizes = [self.n >> k for k in range(log_n - FINAL_LOG_N)]
        self.inv_x = {m: inverse_domain(m) for m in sizes}
        self.betas = challenges(len(sizes))

    def round(self) -> tuple[np.ndarray, np.ndarray]:
        """Product coefficients and the final folded layer (plain expressions)."""
        evals = self.ntt.forward(self.a) * self.ntt.forward(self.b) % P
        product = self.ntt.inverse(evals)
        layer = evals
        for beta in self.betas:
            layer = fold(layer, beta, self.inv_x[layer.size])
        return product, layer


class IdealProver(Prover):
    """The same round with every buffer preallocated."""

    def __init__(self, log_n: int) -> None:
        super().__init__(log_n)
        self.out = NTTOut(self.ntt)
        n = self.n
        self.ea, self.eb, self.product = np.empty(n, U64), np.empty(n, U64), np.empty(n, U64)
        self.layers = {m // 2: (np.empty(m // 2, U64), np.empty(m // 2, U64)) for m in self.inv_x}

    def round(self) -> tuple[np.ndarray, np.ndarray]:
        self.out.forward(self.a, self.ea)
        self.out.forward(self.b, self.eb)
        np.multiply(self.ea, self.eb, out=self.ea)
        np.remainder(self.ea, P, out=self.ea)
        self.out.inverse(self.ea, self.product)
        layer = self.ea
        for beta in self.betas:
            out, scratch = self.layers[layer.size // 2]
            layer = fold_out(layer, beta, self.inv_x[layer.size], out, scratch)
        return self.product, layer


def prepare(size: int, ideal: bool) -> Body:
    """The body of one round."""
    return (IdealProver(size) if ideal else Prover(size)).round


PATTERN = Pattern("ntt_prover", (18, 20),   # 2^22 (~2-5 s a round here) with --sizes 22
                  prepare, unit="log2n", tags=frozenset({"ideal", "phase"}), test_size=10)
