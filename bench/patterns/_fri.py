"""FRI folding by 8 over BabyBear cosets, in plain numpy (every step a fresh
temporary), for the bench's STARK pattern.

A layer holds the evaluations of f over a coset c*<w> of size m, in natural
order (entry i is f(c w^i)).  Writing f(x) = sum_{j<8} x^j f_j(x^8), one fold
with challenge beta gives sum_j beta^j f_j over the coset c^8 <w^8> of size
m/8: its degree bound is divided by 8.
"""
from __future__ import annotations

import numpy as np

from zkalloc_np.ntt import GENERATOR, P, powers

FOLD = 8
U64 = np.uint64
ZETA = pow(GENERATOR, (P - 1) // FOLD, P)     # a primitive 8th root of unity: w^(m/8) on any coset
INV_FOLD = U64(pow(FOLD, P - 2, P))
#: (8, 8): entry (j, k) is zeta^-(jk), the inverse 8-point DFT without its 1/8.
INV_DFT = np.array([[pow(ZETA, (P - 1 - j * k) % (P - 1), P) for k in range(FOLD)] for j in range(FOLD)],
                   dtype=U64)


def inverse_points(m: int, shift: int) -> np.ndarray:
    """1 / (shift * w^i) for i < m/8, w a primitive m-th root: the factors a
    fold of a layer of m values over shift*<w> needs."""
    w = pow(GENERATOR, (P - 1) // m, P)
    return powers(pow(w, P - 2, P), m // FOLD) * U64(pow(shift, P - 2, P)) % P


def fold(evals: np.ndarray, beta: int, inv_x: np.ndarray) -> np.ndarray:
    """One fold by 8 of a layer (see the module docstring); `inv_x` from
    `inverse_points`.  Entries i + k*m/8 (k < 8) share x^8 and fold into i."""
    rows = evals.reshape(FOLD, -1)                      # rows[k, i] = f(x_i zeta^k)
    # g[j, i] = x_i^j f_j(x_i^8) = 1/8 sum_k zeta^-jk f(x_i zeta^k)
    g = (INV_DFT[:, :, None] * rows[None, :, :] % P).sum(axis=1) % P * INV_FOLD % P
    t = inv_x * U64(beta) % P                           # beta / x_i
    out = g[FOLD - 1]
    for j in range(FOLD - 2, -1, -1):                   # Horner: sum_j g_j t^j
        out = (out * t + g[j]) % P
    return out
