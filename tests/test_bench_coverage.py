"""The coverage bench patterns (fft_numpy, merkle_bytes) compute what they claim (never their timings),
and the zkalloc-global-leave allocator runs where it should."""
from __future__ import annotations

import hashlib
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import allocators   # noqa: E402
from bench.patterns import PATTERNS, fft_numpy, merkle_bytes   # noqa: E402


def test_fft_numpy_is_the_cyclic_autoconvolution_in_both_forms():
    x = fft_numpy.signal(8)
    expected = np.array([sum(x[j] * x[(k - j) % x.size] for j in range(x.size)) for k in range(x.size)])
    for ideal in (False, True):
        assert np.allclose(fft_numpy.prepare(8, ideal)(), expected)


def test_merkle_bytes_root_is_the_blake2b_tree_of_the_column():
    x = merkle_bytes.leaves(12)
    data = (x * np.uint64(3)).tobytes()
    level = [hashlib.blake2b(data[i:i + 8192], digest_size=32).digest() for i in range(0, len(data), 8192)]
    while len(level) > 1:
        level = [hashlib.blake2b(level[i] + level[i + 1], digest_size=32).digest() for i in range(0, len(level), 2)]
    for ideal in (False, True):
        assert merkle_bytes.prepare(12, ideal)() == level[0]


def test_the_leave_variant_runs_on_the_libc_patterns_only():
    assert allocators.runs_by_default("zkalloc-global-leave", PATTERNS["fft_numpy"])
    assert allocators.runs_by_default("zkalloc-global-leave", PATTERNS["merkle_bytes"])
    assert not allocators.runs_by_default("zkalloc-global-leave", PATTERNS["fft_rounds"])
    assert allocators.thread_entry("zkalloc-global-leave") is None
    assert allocators.ALLOCATORS["zkalloc-global-leave"].env == {"ZKALLOC_LIBC": "leave"}
