"""Leaf helpers for readable numbers: no import from the package, so every
module can use them."""
from __future__ import annotations


def fmt_bytes(n: int) -> str:
    """Human-readable binary size: 512.0 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def size_range(low: int) -> str:
    """The sizes of one small_allocs_by_size bucket: from low to 2 * low - 1 bytes."""
    if low <= 1:
        return f"{low} B"
    return f"{fmt_bytes(low)}..{fmt_bytes(2 * low - 1)}"
