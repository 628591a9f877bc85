"""galois_ntt: ``galois.ntt`` / ``galois.intt`` round trips over GF(p), for
the NTT-friendly 31-bit prime p = 15 * 2^27 + 1 (BabyBear), at 2^16 and 2^20
points by default.  galois converts its inputs and outputs with numpy (through
the data memory handler: about 4n, 8n and 4n bytes per call) and runs numba
kernels whose own scratch comes from numba, not numpy.

Skipped, with a message, when galois is not installed.  ``prepare`` builds
GF(p) and runs one round trip untimed, so numba's JIT compilation is never
timed.  No ideal variant: galois has no ``out=``.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from ._pattern import Body, Pattern

P = 15 * 2**27 + 1


def unavailable() -> str | None:
    """Why this pattern cannot run here, or None."""
    if importlib.util.find_spec("galois") is None:
        return "galois is not installed (pip install galois, or pip install -e '.[bench]')"
    return None


def round_trip(x: Any) -> Any:
    """intt(ntt(x)) over GF(P): equals x."""
    import galois
    return galois.intt(galois.ntt(x, modulus=P), modulus=P)


def prepare(size: int, ideal: bool = False) -> Body:
    """The body of one round (GF(p) built and the kernels compiled first)."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    import galois
    field = galois.GF(P)
    x = field(np.random.default_rng(3).integers(0, P, 1 << size, dtype=np.int64))
    if not np.array_equal(round_trip(x), x):   # also the untimed JIT warm-up
        raise AssertionError("galois NTT round trip changed the data")
    return lambda: round_trip(x)


PATTERN = Pattern("galois_ntt", (16, 20), prepare, unit="log2n", test_size=10,
                  max_passes=2,   # every worker pays ~7 s for import, GF(p) and JIT
                  unavailable=unavailable)
