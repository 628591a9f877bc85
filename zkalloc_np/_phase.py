"""Arena phases: a proof phase's scratch arrays, bump-allocated, dropped at once.

    with zkalloc.phase("commit") as ph:
        ...                     # big arrays made here come from the phase's arena
    print(ph.stats)             # arrays, bytes, peak, chunks, escaped, reset time

Each phase gets its own arena behind its own NEP 49 handler capsule, set in
the current context like ``installed()``.  Leaving the block resets the arena
in O(chunks): chunks with no live array go back to the size-class cache (the
next phase reuses them resident), chunks that still hold an array that
escaped the block stay pinned until that array dies.  The escape rule, in one
sentence: an array may outlive its phase and stays valid, it only keeps its
chunk out of reuse until it is freed.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from . import _core
from ._install import data_address
from ._secret import secret_active
from ._settings import parse_size

_MAX_BYTES = _core.class_bytes(_core.NCLASSES - 1)
UNNAMED = "(unnamed)"


@dataclass(frozen=True)
class PhaseStats:
    """What one phase's arena did.

    arrays / bytes_allocated: requests the arena served; peak_bytes: most bytes
    live at once; small_arrays: requests below min_bytes left to numpy.
    chunks / chunk_bytes: cache regions the arena took (chunks_reused of them
    were resident already; grown_chunks were added because the first was full,
    so with a capacity, grew means the capacity was too small).  rewinds:
    chunks that emptied during the phase and were reused from their start.
    escaped_arrays / escaped_bytes: arrays alive when the phase ended;
    pinned_chunks: chunks they still hold now.  reset_seconds: time the reset
    took.  failures: chunks the kernel refused (MemoryError).
    """

    name: str
    capacity: int | None
    arrays: int
    bytes_allocated: int
    peak_bytes: int
    live_arrays: int
    live_bytes: int
    small_arrays: int
    chunks: int
    chunk_bytes: int
    chunks_reused: int
    grown_chunks: int
    grew: bool
    rewinds: int
    realloc_in_place: int
    realloc_moved: int
    invalid_frees: int
    failures: int
    escaped_arrays: int
    escaped_bytes: int
    pinned_chunks: int
    reset_seconds: float
    closed: bool

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of the fields, ready for json.dumps."""
        return dataclasses.asdict(self)


@dataclass
class PhaseTotals:
    """All phases of one name, summed (peak_bytes is the largest peak)."""

    phases: int = 0
    arrays: int = 0
    bytes_allocated: int = 0
    peak_bytes: int = 0
    chunks: int = 0
    chunks_reused: int = 0
    escaped_arrays: int = 0
    escaped_bytes: int = 0
    reset_seconds: float = 0.0
    max_chunk_bytes: int = 0   # the most chunk bytes one run needed: the next run's capacity

    def add(self, st: PhaseStats) -> None:
        """Count one more finished phase of this name."""
        self.phases += 1
        self.arrays += st.arrays
        self.bytes_allocated += st.bytes_allocated
        self.peak_bytes = max(self.peak_bytes, st.peak_bytes)
        self.chunks += st.chunks
        self.chunks_reused += st.chunks_reused
        self.escaped_arrays += st.escaped_arrays
        self.escaped_bytes += st.escaped_bytes
        self.reset_seconds += st.reset_seconds
        self.max_chunk_bytes = max(self.max_chunk_bytes, st.chunk_bytes)


_totals: dict[str, PhaseTotals] = {}
_totals_lock = threading.Lock()


def phase_totals() -> dict[str, PhaseTotals]:
    """Per-name totals of every finished phase (copies)."""
    with _totals_lock:
        return {name: dataclasses.replace(t) for name, t in _totals.items()}


def learned_capacity(name: str) -> int | None:
    """Chunk bytes the largest finished phase of this name needed, if any."""
    with _totals_lock:
        totals = _totals.get(name)
        return totals.max_chunk_bytes if totals is not None and totals.max_chunk_bytes else None


def reset_phase_totals() -> None:
    with _totals_lock:
        _totals.clear()


def _positive_size(value: Any, what: str) -> int:
    n = parse_size(value, what)
    if not 1 <= n <= _MAX_BYTES:
        raise ValueError(f"{what}: must be between 1 and {_MAX_BYTES} bytes, got {n}")
    return n


_SETTINGS = ("min_bytes", "chunk_bytes")


class Phase:
    """A context manager scoping one phase's scratch arrays; see phase()."""

    def __init__(self, name: str | None = None, capacity: int | str | None = None, **settings: Any):
        unknown = sorted(set(settings) - set(_SETTINGS))
        if unknown:
            raise ValueError(f"phase(): unknown setting(s) {', '.join(unknown)}; known: {', '.join(_SETTINGS)}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"phase(name): expected a str, got {type(name).__name__}")
        self.name = name if name is not None else UNNAMED
        self.capacity = None if capacity is None else _positive_size(capacity, "phase(capacity)")
        if self.capacity is None and name is not None:
            # A named phase runs again and again (each round's "commit"):
            # reserve, as one region, what its largest run needed.
            self.capacity = learned_capacity(name)
        self.min_bytes = _positive_size(settings.get("min_bytes", _core.option_get("arena_min_bytes")),
                                        "phase(min_bytes)")
        self.chunk_bytes = _positive_size(settings.get("chunk_bytes", 4 << 20), "phase(chunk_bytes)")
        self._capsule: Any = None
        self._previous: Any = None
        self._state = "new"
        self._deferred = False   # entered inside secret(): secret memory wins

    def __enter__(self) -> Phase:
        if self._state != "new":
            raise RuntimeError(f"phase {self.name!r} was already entered; make a new phase() per block")
        self._state = "open"
        if secret_active():
            self._deferred = True
            return self
        self._capsule = _core.arena_capsule(self.capacity or 0, self.min_bytes, self.chunk_bytes)
        self._previous = _core.set_context_handler(self._capsule)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._state = "closed"
        if self._deferred:
            return
        _core.set_context_handler(self._previous)
        self._previous = None
        _core.arena_reset(self._capsule)
        final = self.stats
        with _totals_lock:
            _totals.setdefault(self.name, PhaseTotals()).add(final)

    @property
    def stats(self) -> PhaseStats:
        """The arena's statistics now (during the phase) or since its end."""
        raw = _core.arena_stats(self._capsule) if self._capsule is not None else _EMPTY
        return PhaseStats(
            name=self.name, capacity=self.capacity,
            arrays=raw["arrays"], bytes_allocated=raw["bytes_allocated"], peak_bytes=raw["peak_bytes"],
            live_arrays=raw["live_arrays"], live_bytes=raw["live_bytes"], small_arrays=raw["small_allocs"],
            chunks=raw["chunks"], chunk_bytes=raw["chunk_bytes"], chunks_reused=raw["chunks_reused"],
            grown_chunks=raw["grown_chunks"], grew=raw["grown_chunks"] > 0, rewinds=raw["rewinds"],
            realloc_in_place=raw["realloc_in_place"], realloc_moved=raw["realloc_moved"],
            invalid_frees=raw["invalid_frees"], failures=raw["failures"],
            escaped_arrays=raw["escaped_arrays"], escaped_bytes=raw["escaped_bytes"],
            pinned_chunks=raw["pinned_chunks"], reset_seconds=raw["reset_ns"] / 1e9,
            closed=bool(raw["closed"]) or self._state == "closed",
        )

    def owns(self, array: np.ndarray) -> bool:
        """Whether the array's data (its base's, for a view) lives in this
        phase's arena."""
        address = data_address(array, "owns")
        if address is None or self._capsule is None:
            return False
        return _core.arena_usable(self._capsule, address) > 0


_EMPTY: dict[str, int] = {
    k: 0 for k in ("arrays", "bytes_allocated", "peak_bytes", "live_arrays", "live_bytes", "small_allocs",
                   "chunks", "chunk_bytes", "chunks_reused", "grown_chunks", "rewinds", "realloc_in_place",
                   "realloc_moved", "invalid_frees", "failures", "escaped_arrays", "escaped_bytes",
                   "pinned_chunks", "reset_ns", "closed")
}


def phase(name: str | None = None, capacity: int | str | None = None, **settings: Any) -> Phase:
    """Scope a proof phase: numpy arrays of at least ``min_bytes`` created in
    the block (this thread/context) are bump-allocated from the phase's arena
    and all taken back, in O(1) per array, when the block ends.

    name: the phase's label in ``zkalloc.stats().phases``.  A named phase
        without a capacity reserves what the largest finished phase of that
        name needed, so a repeated phase runs from one resident region.
    capacity: bytes to reserve up front as one region (int or '512M'); the
        arena still grows past it (``stats.grew``) rather than fail.  Without
        it, chunks start at chunk_bytes and grow with the bytes live
        (chunk_bytes times a power of two, so the next phase finds the same
        sizes in the cache).
    settings: min_bytes (default: the arena_min_bytes setting, 64 KiB),
        chunk_bytes (first chunk without a capacity, default 4 MiB).

    Arrays that escape the block stay valid: their chunk is pinned until they
    are freed.  Phases nest (the innermost serves), phases in different
    threads are independent, and inside ``secret()`` secret memory wins.
    """
    return Phase(name, capacity, **settings)
