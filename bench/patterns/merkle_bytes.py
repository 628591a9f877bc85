"""merkle_bytes: a Merkle commitment over the bytes of 2^20 to 2^23 uint64
leaves (8 to 64 MiB), hashed with hashlib, every round.

One round: the committed column ``(x * 3)`` (a numpy temporary), its
``tobytes()`` (a bytes object: CPython's raw domain, PyMem_RawMalloc), then a
tree of BLAKE2b digests: one per chunk of 1024 leaves (8 KiB), and each level
above from the concatenated digests of its two children, up to the root.
This is how numpy provers commit (serialise, then hash), and the bytes
object is the buffer zkalloc serves only under ``install()``.

The ideal multiplies into a preallocated buffer and hashes its memory in
place (no bytes copy).
"""
from __future__ import annotations

import hashlib

import numpy as np

from ._pattern import Body, Pattern

CHUNK_LEAVES = 1024
DIGEST = 32


def leaves(log2n: int) -> np.ndarray:
    """2^log2n uint64 leaves, fixed seed."""
    return np.random.default_rng(23).integers(0, 2**63, 1 << log2n, dtype=np.uint64)


def merkle_root(data: bytes | memoryview, chunk_bytes: int = CHUNK_LEAVES * 8) -> bytes:
    """The root of a BLAKE2b tree over `data` cut into chunks of `chunk_bytes`
    (a power-of-two count of chunks; one chunk is its own root's leaf)."""
    view = memoryview(data)
    level = [hashlib.blake2b(view[i:i + chunk_bytes], digest_size=DIGEST).digest()
             for i in range(0, len(view), chunk_bytes)]
    while len(level) > 1:
        joined = b"".join(level)
        level = [hashlib.blake2b(joined[i:i + 2 * DIGEST], digest_size=DIGEST).digest()
                 for i in range(0, len(joined), 2 * DIGEST)]
    return level[0]


def prepare(size: int, ideal: bool) -> Body:
    """The body of one round."""
    x = leaves(size)
    if not ideal:
        return lambda: merkle_root((x * np.uint64(3)).tobytes())
    column = np.empty_like(x)

    def preallocated() -> bytes:
        np.multiply(x, np.uint64(3), out=column)
        return merkle_root(column.data.cast("B"))
    return preallocated


PATTERN = Pattern("merkle_bytes", (20, 23), prepare, unit="log2n", tags=frozenset({"ideal", "libc"}), test_size=12)
