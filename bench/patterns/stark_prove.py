"""stark_prove: one STARK proof over BabyBear, written as numpy prover
prototypes are (plain expressions: every operation a fresh temporary).

The trace has n = 2^size rows and 13 columns in three groups of widths 1, 4
and 8: a counter a (a[i] = i), four random columns b, and eight columns c
with c_j = b_{A(j)} * b_{B(j)} + a + j.  One round (one proof):

1. LDE: each column interpolated (inverse NTT of n points), its coefficients
   shifted to the coset 31*<w> and zero-padded to N = 8n, evaluated there
   (forward NTT of N points); the NTTs are ``zkalloc_np.ntt.NTT``'s.  Each
   group is one (width, N) array.
2. The trace committed: a Merkle tree over the rows of the 13 LDE columns.
3. Constraints on the LDE, combined with powers of a challenge alpha: the
   transition a(g x) = a(x) + 1 (times x - g^(n-1), where it wraps) and the
   eight c_j - b_{A(j)} b_{B(j)} - a - j = 0.  The quotient divides by the
   vanishing polynomial x^n - 1, whose inverse on the coset takes 8 values
   (a precomputed table).  Degree < n when the trace satisfies the constraints.
4. FRI on the quotient: each layer committed (a Merkle tree whose leaves are
   the 8 values that fold together), a challenge drawn from its root, folded
   by 8, until at most 256 values are left; the final layer is sent as is.
5. Queries: 16 positions opened in every tree (values and paths).

Every tree keeps all its levels, and every layer stays alive until the
queries are answered, so the working set grows through many sizes (13N,
8N, 4N, N, N/2, ... N/8, N/64 ...) and shrinks at the end of the proof.
Challenges come from the roots (Fiat-Shamir style, but the hash is not
cryptographic: see ``_merkle``).  Each round checks that its final layer
has the degree FRI promises; the tests check the LDE, the quotient, the
folds and the paths.  There is no preallocated form (``HAS_IDEAL = False``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zkalloc_np.ntt import GENERATOR, NTT, P, powers, random_field_elements

from . import _fri, _merkle
from ._pattern import Body, Pattern

TEST_SIZE = 9
BLOWUP = 8
SHIFT = GENERATOR     # the LDE coset: SHIFT * <w_N>, disjoint from every subgroup
WIDTHS = (1, 4, 8)
A_IDX = np.array([0, 1, 2, 3, 0, 1, 2, 3])   # c_j = b[A_IDX[j]] * b[B_IDX[j]] + a + j
B_IDX = np.array([1, 2, 3, 0, 2, 3, 0, 1])
FINAL_MAX = 256       # FRI stops folding at this many values
QUERIES = 16
U64 = np.uint64


def challenge(digest: int, tag: int) -> int:
    """A field element in [1, P) drawn from a digest (Fiat-Shamir style)."""
    return int(_merkle.mix(np.array([digest ^ tag], dtype=U64))[0]) % (P - 1) + 1


def make_trace(log_n: int, seed: int = 3) -> list[np.ndarray]:
    """The trace's three column groups, (1, n), (4, n), (8, n), satisfying the constraints."""
    n = 1 << log_n
    a = np.arange(n, dtype=U64)[None, :]
    b = random_field_elements(4 * n, seed).reshape(4, n)
    c = (b[A_IDX] * b[B_IDX] % P + a + np.arange(8, dtype=U64)[:, None]) % P
    return [a, b, c]


def interpolate(evals: np.ndarray, shift: int) -> np.ndarray:
    """Coefficients of the polynomial with these evaluations over shift*<w> (natural order)."""
    m = evals.size
    return NTT(m).inverse(evals) * powers(pow(shift, P - 2, P), m) % P


@dataclass
class Proof:
    """What one round produces."""

    trace_root: int
    alpha: int
    fri_roots: list[int]
    betas: list[int]
    final: np.ndarray
    degree_bound: int          # the final layer's polynomial has degree < this
    queries: np.ndarray
    openings: list[tuple[np.ndarray, np.ndarray]]   # (values, paths) per tree: trace, then FRI layers


class Prover:
    """Trace, domains and tables for proofs of 2^log_n rows (the untimed setup)."""

    def __init__(self, log_n: int) -> None:
        if not 6 <= log_n <= 24:
            raise ValueError(f"log_n must be in [6, 24], got {log_n}")
        self.n, self.big_n = 1 << log_n, (1 << log_n) * BLOWUP
        self.trace = make_trace(log_n)
        self.ntt_n, self.ntt_big = NTT(self.n), NTT(self.big_n)
        self.coset_powers = powers(SHIFT, self.n)              # coefficient i times SHIFT^i
        w = pow(GENERATOR, (P - 1) // self.big_n, P)
        self.xs = powers(w, self.big_n) * U64(SHIFT) % P      # the LDE domain, natural order
        self.g_last = pow(w, BLOWUP * (self.n - 1), P)         # g^(n-1), g = w^BLOWUP
        # 1 / (x^n - 1) on the coset: x_i^n = SHIFT^n w^(n i) takes BLOWUP values, i mod BLOWUP
        w_n, s_n = pow(w, self.n, P), pow(SHIFT, self.n, P)
        z_inv = [pow((s_n * pow(w_n, r, P) - 1) % P, P - 2, P) for r in range(BLOWUP)]
        self.z_inv = np.tile(np.array(z_inv, dtype=U64), self.n)
        self.fri_tables: list[np.ndarray] = []
        m, shift = self.big_n, SHIFT
        while m > FINAL_MAX:
            self.fri_tables.append(_fri.inverse_points(m, shift))
            m, shift = m // _fri.FOLD, pow(shift, _fri.FOLD, P)
        self.final_ntt = NTT(m)

    def lde(self, group: np.ndarray) -> np.ndarray:
        """(width, n) trace columns to their (width, N) evaluations on the coset."""
        coeffs = np.stack([self.ntt_n.inverse(col) for col in group]) * self.coset_powers % P
        padded = np.pad(coeffs, ((0, 0), (0, self.big_n - self.n)))
        return np.stack([self.ntt_big.forward(row) for row in padded])

    @staticmethod
    def groups(columns: np.ndarray) -> list[np.ndarray]:
        """The three column groups of a (13, m) array, as views."""
        ends = np.cumsum(WIDTHS)
        return [columns[end - w:end] for w, end in zip(WIDTHS, ends)]

    def quotient(self, lde: list[np.ndarray], alpha: int) -> np.ndarray:
        """The constraints, combined with alpha^1..alpha^9, divided by x^n - 1."""
        (a,), b, c = lde
        trans = (np.roll(a, -BLOWUP) + (2 * P - 1) - a) % P * ((self.xs + P - self.g_last) % P) % P
        cons = (c + 3 * P - b[A_IDX] * b[B_IDX] % P - a - np.arange(8, dtype=U64)[:, None]) % P
        alphas = powers(alpha, 10)[1:]
        combined = (trans * alphas[0] % P + (cons * alphas[1:, None] % P).sum(axis=0)) % P
        return combined * self.z_inv % P

    def fri(self, layer: np.ndarray, seed: int) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[int]]:
        """FRI layers (the first is `layer`, the last the final one), the trees
        of all but the final one, and the challenges (each drawn from `seed`
        and the roots so far)."""
        layers: list[np.ndarray] = [layer]
        trees: list[list[np.ndarray]] = []
        betas: list[int] = []
        for inv_x in self.fri_tables:
            trees.append(_merkle.tree(_merkle.hash_leaves(layer.reshape(_fri.FOLD, -1))))
            seed ^= _merkle.root(trees[-1])   # the transcript so far: `seed`, then every root
            betas.append(challenge(seed, len(betas)))
            layer = _fri.fold(layer, betas[-1], inv_x)
            layers.append(layer)
        return layers, trees, betas

    def prove(self) -> Proof:
        """One proof (one round of the pattern)."""
        trace_lde = np.concatenate([self.lde(group) for group in self.trace])   # (13, N)
        trace_tree = _merkle.tree(_merkle.hash_leaves(trace_lde))
        trace_root = _merkle.root(trace_tree)
        alpha = challenge(trace_root, 0xA1)
        q = self.quotient(self.groups(trace_lde), alpha)
        layers, trees, betas = self.fri(q, trace_root)
        final = layers[-1]
        bound = self.n >> (3 * len(betas))
        if self.final_ntt.inverse(final)[bound:].any():
            raise AssertionError("FRI's final layer is not of low degree: the proof is wrong")
        queries = _merkle.mix(np.arange(QUERIES, dtype=U64) + U64(int(final[0]))) % U64(self.big_n)
        openings = [(trace_lde[:, queries], _merkle.open_paths(trace_tree, queries))]
        for layer, levels in zip(layers, trees):
            leaves = queries % U64(layer.size // _fri.FOLD)
            openings.append((layer.reshape(_fri.FOLD, -1)[:, leaves], _merkle.open_paths(levels, leaves)))
        return Proof(trace_root, alpha, [_merkle.root(t) for t in trees], betas, final, bound, queries, openings)


def prepare(size: int, ideal: bool = False) -> Body:
    """The body of one round: one proof."""
    if ideal:
        raise ValueError("stark_prove has no preallocated form")
    return Prover(size).prove


PATTERN = Pattern("stark_prove", (14, 16),   # trace rows; LDE of 2^17 and 2^19 points
                  prepare, unit="log2n", tags=frozenset({"phase"}), test_size=TEST_SIZE)
