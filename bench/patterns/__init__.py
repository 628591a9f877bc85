"""Benchmark patterns.

A pattern is a `Pattern` (``_pattern.py``): a name, its default sizes and
their unit, its tags (``_pattern.TAGS`` says what each means, and which
allocator variants run on the patterns carrying it), and
``prepare(size, ideal) -> body``: the untimed setup, returning the body of
one round (with ``ideal=True`` the same work written with preallocated
buffers, for a pattern tagged "ideal").  The optional fields (a test size,
a --quick size, at most so many passes, zkalloc settings, why it cannot run
here, bytes per round, fields measured after the rounds) are documented on
the dataclass.

A new pattern is one more module defining a `Pattern`, plus one line in
``PATTERNS`` below.
"""
from __future__ import annotations

from . import (
    contention,
    expr_churn,
    fft_numpy,
    fft_rounds,
    fill,
    first_touch,
    galois_ntt,
    grow,
    idle,
    merkle_bytes,
    msm_buckets,
    ntt_prover,
    phase_burst,
    phase_reset,
    small,
    stark_prove,
    zeros,
)

from ._pattern import Pattern

PATTERNS: dict[str, Pattern] = {
    p.name: p
    for p in (fft_rounds.PATTERN, fill.PATTERN, zeros.dense, zeros.sparse, first_touch.PATTERN, small.PATTERN,
              msm_buckets.buckets, msm_buckets.windows, msm_buckets.compute, phase_burst.PATTERN, expr_churn.PATTERN,
              ntt_prover.PATTERN, galois_ntt.PATTERN, contention.PATTERN, phase_reset.dead, phase_reset.escaped,
              stark_prove.PATTERN, grow.PATTERN, idle.PATTERN, fft_numpy.PATTERN, merkle_bytes.PATTERN)
}


def parse_size(pattern: Pattern, text: str) -> int:
    """A size from the command line: MiB for byte patterns, the plain number otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"size {text!r} is not a number") from None
    if value <= 0 or not value.is_integer() and pattern.unit != "bytes":
        raise ValueError(f"size {text!r} must be a positive {'number' if pattern.unit == 'bytes' else 'integer'}")
    return int(value * (1 << 20)) if pattern.unit == "bytes" else int(value)


def label(pattern: Pattern, size: int) -> str:
    """A human label for `size` in the pattern's unit."""
    kind = pattern.unit
    if kind == "log2n":
        return f"2^{size}"
    if kind == "c":
        return f"c={size}"
    if kind == "threads":
        return f"{size} thr"
    if kind != "bytes":
        return f"{size} {kind}"
    if size >= 1 << 20:
        return f"{size / (1 << 20):g} MiB"
    if size >= 1 << 10:
        return f"{size / (1 << 10):g} KiB"
    return f"{size} B"
