"""Benchmark patterns.

Each pattern is a small module (or a module-level object) with:

- ``PATTERN``: its name; ``SIZES``: the default sizes (ints in its ``UNIT``);
- ``run(size, rounds, ideal=False) -> list[float]``: seconds per round; with
  ``ideal=True`` the same work written with preallocated buffers (``out=``,
  one buffer reused), where the pattern can be written that way.

and optionally:

- ``UNIT``: what ``size`` counts: ``"bytes"`` (default; ``--sizes`` in MiB),
  ``"log2n"`` (points = 2^size), ``"c"`` (MSM window bits), ``"threads"``,
  or any other word (a plain count, shown as "<size> <unit>");
- ``HAS_IDEAL`` (default True): False where no preallocated form exists;
- ``USES_ZEROS``: the pattern's buffers come from ``np.zeros`` (the
  ``zkalloc-lazy`` zeroing variant runs on it by default);
- ``unavailable() -> str | None``: why it cannot run here (a missing
  optional package), or None;
- ``bytes_per_round(size) -> int``: bytes written per round, for a GB/s column;
- ``TEST_SIZE``: a size small enough for the unit tests;
- ``QUICK_SIZE``: the size ``--quick`` runs (default: the first of SIZES);
- ``PASSES``: at most this many passes (for patterns whose workers are slow to start);
- ``PHASE_ROUNDS``: the ``zkalloc-phase`` allocator runs each round of it inside
  ``zkalloc.phase()``; ``ONLY``: the allocators that run it by default;
- ``LIBC``: the ``zkalloc-global-leave`` allocator (install() with
  libc=leave) runs it by default;
- ``ZKALLOC_SETTINGS``: settings the zkalloc allocators run this pattern with
  (``zkalloc_np.configure(**ZKALLOC_SETTINGS)`` before ``prepare``);
- ``after_rounds(size, body) -> dict``: called after the timed rounds; its
  fields join the record (the ``idle`` pattern's RSS while idle);
- a body may return a float: the seconds to report for that round (a
  self-timed pattern such as ``phase_reset``, which reports the reset alone).

A new pattern (for example one inside ``zkalloc_np.phase()``) is one more
module here plus one line in ``PATTERNS`` below.
"""
from __future__ import annotations

from typing import Any

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

PATTERNS: dict[str, Any] = {
    p.PATTERN: p
    for p in (fft_rounds, fill, zeros.dense, zeros.sparse, first_touch, small, msm_buckets.buckets,
              msm_buckets.windows, msm_buckets.compute, phase_burst, expr_churn, ntt_prover, galois_ntt,
              contention, phase_reset.dead, phase_reset.escaped, stark_prove, grow, idle,
              fft_numpy, merkle_bytes)
}


def unit(pattern: Any) -> str:
    """What a size of `pattern` counts (see the module docstring)."""
    return getattr(pattern, "UNIT", "bytes")


def has_ideal(pattern: Any) -> bool:
    """Whether `pattern` has a preallocated (ideal) form."""
    return getattr(pattern, "HAS_IDEAL", True)


def unavailable(pattern: Any) -> str | None:
    """Why `pattern` cannot run in this environment, or None."""
    check = getattr(pattern, "unavailable", None)
    return check() if check is not None else None


def parse_size(pattern: Any, text: str) -> int:
    """A size from the command line: MiB for byte patterns, the plain number otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"size {text!r} is not a number") from None
    if value <= 0 or not value.is_integer() and unit(pattern) != "bytes":
        raise ValueError(f"size {text!r} must be a positive {'number' if unit(pattern) == 'bytes' else 'integer'}")
    return int(value * (1 << 20)) if unit(pattern) == "bytes" else int(value)


def label(pattern: Any, size: int) -> str:
    """A human label for `size` in the pattern's unit."""
    kind = unit(pattern)
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
