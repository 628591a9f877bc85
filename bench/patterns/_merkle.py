"""Merkle trees over uint64 digests for the bench's STARK pattern, in plain numpy.

The hash is NOT cryptographic: it is splitmix64's finaliser (xor-shift and
multiply over uint64, wrapping), chained over the words of a leaf and over
the two children of a node.  It stands in for a real hash's memory traffic
(one pass over the committed data, a tree whose levels halve), not for its
security.  Every level of a tree stays alive until the proof is done, as a
prover keeps them for the openings.
"""
from __future__ import annotations

import numpy as np

U64 = np.uint64
M1, M2 = U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)
K = U64(0x9E3779B97F4A7C15)   # the golden-ratio increment of splitmix64
S1, S2, S3 = U64(30), U64(27), U64(31)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise (a bijection of uint64)."""
    x = (x ^ (x >> S1)) * M1
    x = (x ^ (x >> S2)) * M2
    return x ^ (x >> S3)


def hash_leaves(words: np.ndarray) -> np.ndarray:
    """One digest per column of a (width, m) uint64 array: the column's words
    absorbed in row order."""
    digest = mix(words[0] + K)
    for row in words[1:]:
        digest = mix(digest ^ row) + K
    return mix(digest)


def compress(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Parent digests of two equally long arrays of children (order matters)."""
    return mix(left ^ mix(right + K))


def tree(leaves: np.ndarray) -> list[np.ndarray]:
    """All levels, leaves first and root (one digest) last; the leaf count
    must be a power of two."""
    if leaves.ndim != 1 or leaves.size & (leaves.size - 1) or leaves.size == 0:
        raise ValueError(f"need a power-of-two count of leaves, got shape {leaves.shape}")
    levels = [leaves]
    while levels[-1].size > 1:
        level = levels[-1]
        levels.append(compress(level[0::2], level[1::2]))
    return levels


def root(levels: list[np.ndarray]) -> int:
    """The root digest of a tree."""
    return int(levels[-1][0])


def open_paths(levels: list[np.ndarray], indices: np.ndarray) -> np.ndarray:
    """The authentication paths of the leaves at `indices`: (len(indices),
    depth) sibling digests, bottom up."""
    idx = np.asarray(indices, dtype=np.int64)
    return np.stack([level[(idx >> d) ^ 1] for d, level in enumerate(levels[:-1])], axis=1)


def verify(root_digest: int, leaf: int, index: int, path: np.ndarray) -> bool:
    """Whether `path` leads from `leaf` at `index` to `root_digest`."""
    node = np.array([leaf], dtype=U64)
    for depth, sibling in enumerate(path.tolist()):
        other = np.array([sibling], dtype=U64)
        node = compress(other, node) if (index >> depth) & 1 else compress(node, other)
    return int(node[0]) == root_digest
