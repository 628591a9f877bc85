"""expr_churn: modular arithmetic expressions over BabyBear on uint64 arrays
of `size` bytes (default 2^22 elements = 32 MiB), written the way prover
prototypes are: plain expressions, so each operator allocates a temporary of
the full size (numpy elides some of them in place when the left operand is
itself a temporary; that is part of real numpy behaviour and kept).

The ideal runs the same arithmetic with `out=` into two preallocated scratch
arrays.
"""
from __future__ import annotations

import numpy as np

from ._pattern import Body, Pattern

P = 15 * 2**27 + 1


def inputs(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three arrays of field elements of `size` bytes each."""
    rng = np.random.default_rng(1)
    n = size // 8
    return tuple(rng.integers(0, P, n, dtype=np.uint64) for _ in range(3))   # type: ignore[return-value]


def expressions(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """A constraint-like combination: ((a*b + c)^2 - a*c) * (b + 1), mod P."""
    t = (a * b + c) % P
    u = (t * t % P + P - a * c % P) % P
    return u * ((b + 1) % P) % P


def expressions_out(a: np.ndarray, b: np.ndarray, c: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The same as `expressions`, into the scratch arrays t and u (returns u)."""
    np.multiply(a, b, out=t)
    np.add(t, c, out=t)
    np.remainder(t, P, out=t)
    np.multiply(t, t, out=t)
    np.remainder(t, P, out=t)
    np.add(t, P, out=t)
    np.multiply(a, c, out=u)
    np.remainder(u, P, out=u)
    np.subtract(t, u, out=t)
    np.remainder(t, P, out=t)
    np.add(b, 1, out=u)
    np.remainder(u, P, out=u)
    np.multiply(t, u, out=u)
    np.remainder(u, P, out=u)
    return u


def prepare(size: int, ideal: bool) -> Body:
    """The body of one round."""
    a, b, c = inputs(size)
    if ideal:
        t, u = np.empty_like(a), np.empty_like(a)
        return lambda: expressions_out(a, b, c, t, u)
    return lambda: expressions(a, b, c)


PATTERN = Pattern("expr_churn", (2 << 20, 32 << 20), prepare, tags=frozenset({"ideal", "phase"}))
