"""Phases: an accounted scope over the size-class cache.

    with zkalloc.phase("commit", on_escape="warn") as ph:
        ...                     # big arrays made here come from the cache, tagged
    print(ph.stats)             # arrays, bytes, peak, hits/misses, faults, time, escapes

A phase's arrays come from the very same cache as ``installed()``'s (the
same hot regions serve arrays inside and outside phases), so a phase never
costs speed or memory; what it adds is knowledge and control.  Each region
it allocates carries the phase's tag (in the core's region descriptor), so
the phase knows exactly what it allocated, what is live, what it cost
(hits, misses, bytes mapped fresh, time in allocation) and which arrays
escaped (were still alive when the block ended).  Escaped arrays stay valid;
they are freed into the cache like any array.

A named phase remembers the working set of its last run (per size class, the
most regions live at once) and on entry makes sure that many idle regions
are resident: a hot start, best effort, so that even the first round after
``zkalloc.release()`` has no misses.  Entering a phase never fails because
of what it learned.

The phase was a bump arena until 0.1 (zk-nalloc's design); in numpy every
array is freed on its own anyway, so the arena's O(1) reset saved nothing and
its fresh memory per temporary cost 4x the time and 10x the RSS on an NTT
prover (issue 13).  It is gone, with ``min_bytes=``/``chunk_bytes=`` and the
``arena_min_bytes`` setting.
"""
from __future__ import annotations

import dataclasses
import gc
import sys
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

import numpy as np

from . import _core, _handler_stack, _peak
from ._arrays import block_address, data_owner
from ._forksafe import fork_safe_lock
from ._format import fmt_bytes
from ._peak import PeakReport
from ._secret import secret_active
from ._settings import SettingsWarning, implausible, parse_setting, parse_size

#: Called as hook(event, name), event "enter" or "exit", in the thread that
#: enters or leaves a phase, from Python, never from inside an allocation
#: (``run --timeline`` records the phases' spans with one).
PHASE_HOOKS: list[Callable[[str, str], None]] = []


def _notify(event: str, name: str) -> None:
    for hook in PHASE_HOOKS:
        hook(event, name)


_MAX_BYTES = _core.class_bytes(_core.NCLASSES - 1)
UNNAMED = "(unnamed)"
ON_ESCAPE = ("ignore", "warn", "raise")


class PhaseBudgetError(MemoryError):
    """A request in a phase with a budget would have taken the phase's live
    bytes over it.  Raised at the phase's exit from numpy's MemoryError (its
    __cause__); budget, live_bytes and request_bytes say the numbers, the
    message names the phase and, with track=True, the top allocation sites
    live at that moment.  Nothing of the refused request was mapped or
    counted, and the next request within the budget succeeds."""

    def __init__(self, message: str, *, phase: str, budget: int, live_bytes: int, request_bytes: int):
        super().__init__(message)
        self.phase, self.budget = phase, budget
        self.live_bytes, self.request_bytes = live_bytes, request_bytes


class PhaseEscapeWarning(RuntimeWarning):
    """on_escape="warn": arrays made in a phase were still alive when it ended."""


class PhaseEscapeError(RuntimeError):
    """on_escape="raise": arrays made in a phase were still alive when it ended.
    Raised after the handler is restored; the arrays stay valid."""

    def __init__(self, message: str, escapes: tuple[EscapedArray, ...]):
        super().__init__(message)
        self.escapes = escapes


@dataclass(frozen=True)
class EscapedArray:
    """One array that outlived its phase.  shape/dtype are None when no
    ndarray object owning that memory could be found (held only by C code,
    or a buffer exported to another library); traceback is where the array
    object was created, with track=True."""

    address: int
    nbytes: int
    shape: tuple[int, ...] | None
    dtype: str | None
    traceback: tuple[str, ...] | None = None

    def __str__(self) -> str:
        what = f"{self.dtype} array of shape {self.shape}" if self.shape is not None else "array (object not found)"
        text = f"{what}, {fmt_bytes(self.nbytes)} at {self.address:#x}"
        if self.traceback:
            text += "\n" + "\n".join("      " + line for line in self.traceback)
        return text


@dataclass(frozen=True)
class PhaseStats:
    """What one phase did.

    name and capacity: the phase's.  The fields from arrays to closed are
    the core's statistics of the phase, in its order
    (cython/zk/zk_scope_stats_list.h, which also says what each one means;
    docs/phases.md has the same table, and a test holds both to it).  Then
    what the Python layer adds: hot_start_bytes, the regions the hot start
    (or capacity=) had to add at entry, 0 when the cache held them already;
    released_bytes, the idle bytes release_after gave back at exit; peak,
    what was live at the peak (see PeakReport), None before the first
    request.  alloc_seconds is alloc_ns in seconds.
    """

    name: str
    capacity: int | None
    arrays: int
    bytes_allocated: int
    live_arrays: int
    live_bytes: int
    peak_bytes: int
    small_arrays: int
    hits: int
    misses: int
    repurposed: int
    fresh_bytes: int
    alloc_ns: int
    realloc_in_place: int
    realloc_moved: int
    invalid_frees: int
    escaped_arrays: int
    escaped_bytes: int
    region_bytes: int
    peak_region_bytes: int
    budget: int
    budget_refusals: int
    refused_bytes: int
    refused_live_bytes: int
    closed: int
    hot_start_bytes: int = 0
    released_bytes: int = 0
    peak: PeakReport | None = None

    @property
    def alloc_seconds(self) -> float:
        """Time inside the cache's allocations, in seconds."""
        return self.alloc_ns / 1e9

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, ready for json.dumps."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        state = "closed" if self.closed else "open"
        return "\n".join([
            f"phase {self.name!r} ({state}): {self.arrays} arrays, {fmt_bytes(self.bytes_allocated)} allocated, "
            f"peak {fmt_bytes(self.peak_bytes)}, {self.live_arrays} live ({fmt_bytes(self.live_bytes)})",
            f"  cache: {self.hits} hits, {self.misses} misses ({self.repurposed} from idle memory of other "
            f"sizes, {fmt_bytes(self.fresh_bytes)} mapped fresh), {self.alloc_seconds * 1e3:.3f} ms allocating",
            f"  capacity {'none' if self.capacity is None else fmt_bytes(self.capacity)}; hot start added "
            f"{fmt_bytes(self.hot_start_bytes)}, release_after gave back {fmt_bytes(self.released_bytes)}, "
            f"{self.small_arrays} small arrays left to numpy",
            f"  escaped {self.escaped_arrays} arrays ({fmt_bytes(self.escaped_bytes)}); reallocs "
            f"{self.realloc_in_place} in place, {self.realloc_moved} moved; invalid frees {self.invalid_frees}",
        ])

    def __repr__(self) -> str:
        return (f"<PhaseStats {self.name!r} {'closed' if self.closed else 'open'}: {self.arrays} arrays, peak "
                f"{fmt_bytes(self.peak_bytes)}, {self.hits} hits, {self.misses} misses>")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """IPython shows the report (str), not the dataclass's every field."""
        p.text(repr(self) if cycle else str(self))


@dataclass
class PhaseTotals:
    """All finished phases of one name, summed (peak_bytes is the largest peak).
    working_set: the last run's working set, {class bytes: most regions of
    that class live at once}, and working_set_bytes, the most bytes of
    regions live at once: what the next run's hot start makes resident
    (per-class peaks need not coincide, so it faults in at most
    working_set_bytes, less what the cache already holds idle)."""

    phases: int = 0
    arrays: int = 0
    bytes_allocated: int = 0
    peak_bytes: int = 0
    hits: int = 0
    misses: int = 0
    fresh_bytes: int = 0
    escaped_arrays: int = 0
    escaped_bytes: int = 0
    alloc_seconds: float = 0.0
    working_set: dict[int, int] = field(default_factory=dict)
    working_set_bytes: int = 0

    def add(self, raw: dict[str, Any]) -> None:
        """One finished run, from the core's counters (_core.scope_stats)."""
        self.phases += 1
        self.arrays += raw["arrays"]
        self.bytes_allocated += raw["bytes_allocated"]
        self.peak_bytes = max(self.peak_bytes, raw["peak_bytes"])
        self.hits += raw["hits"]
        self.misses += raw["misses"]
        self.fresh_bytes += raw["fresh_bytes"]
        self.escaped_arrays += raw["escaped_arrays"]
        self.escaped_bytes += raw["escaped_bytes"]
        self.alloc_seconds += raw["alloc_ns"] / 1e9
        self.working_set = raw["class_peak"]
        self.working_set_bytes = raw["peak_region_bytes"]


_totals: dict[str, PhaseTotals] = {}
_totals_lock = fork_safe_lock()   # re-made unlocked in a fork child (_forksafe)


def phase_totals() -> dict[str, PhaseTotals]:
    """Per-name totals of every finished phase (copies)."""
    with _totals_lock:
        return {name: dataclasses.replace(t, working_set=dict(t.working_set)) for name, t in _totals.items()}


def reset_phase_totals() -> None:
    with _totals_lock:
        _totals.clear()


def _learned_need(name: str | None) -> tuple[dict[int, int], int]:
    """The last run's working set of a named phase and its peak bytes."""
    if name is None:
        return {}, 0
    with _totals_lock:
        totals = _totals.get(name)
        if totals is None:
            return {}, 0
        return dict(totals.working_set), totals.working_set_bytes


def _check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"phase({what}): expected a bool, got {value!r}")
    return value


class Phase:
    """``phase(...)``, a context manager: scope a proof phase.  numpy arrays
    of at least ``min_bytes`` created in the block (this thread/context) come
    from the cache, as under ``installed()``, each tagged with the phase,
    which accounts for them.

    name: the phase's label in ``zkalloc.stats().phases``.  A named phase
        remembers its last run's working set (per size class, the most
        regions live at once) and makes it resident on entry (hot start,
        best effort, within the cache's cap).
    on_escape: what to do when arrays made in the block are still alive at
        its end: "ignore" (default), "warn" (PhaseEscapeWarning listing each:
        shape, dtype, bytes) or "raise" (PhaseEscapeError, after the handler
        is restored).  Escaped arrays stay valid either way.  Not checked
        when the block raised.
    track: record where each array was created (tracemalloc, started for the
        phase if it is not running) and name it in the escape report, the
        peak report (stats.peak.by_site) and a budget error.
    budget: bytes (int or '2G') the phase's live arrays may take at most: a
        request that would go over fails (numpy's MemoryError, turned into
        PhaseBudgetError at the phase's exit, naming the phase, the numbers
        and, with track, the top sites).  Counts the requests the cache
        serves (min_bytes and up), as requested.  0 or None (default): no
        budget, as for the budget setting, whose bounds it has.
    release_after: at exit, give the kernel back the idle bytes the cache
        holds beyond what it held at entry (oldest first).
    capacity: bytes (int or '512M') to make resident at entry as one region
        of the class that fits, best effort (for an unnamed phase, which
        learns nothing).

    Every phase records what was live at its peak (stats.peak): cheap
    enough to leave on, see PeakReport for its precision.

    Under ``install()``, Python's raw-domain blocks (``bytes``,
    ``tobytes()``) made in the block's context are the phase's too, exactly
    as numpy's arrays are: another asyncio task or thread is not in it.

    Phases nest (the innermost tags; an outer phase does not count the inner
    one's arrays), phases in different threads or tasks are independent, inside
    ``secret()`` secret memory wins, and an exception still ends the phase.
    A context copied inside the block keeps working after it: its requests
    then go to the cache untagged.
    """

    def __init__(self, name: str | None = None, *, on_escape: str = "ignore", track: bool = False,
                 release_after: bool = False, capacity: int | str | None = None,
                 budget: int | str | None = None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"phase(name): expected a str, got {type(name).__name__}")
        if on_escape not in ON_ESCAPE:
            raise ValueError(f"phase(on_escape): expected one of {', '.join(ON_ESCAPE)}, got {on_escape!r}")
        self.name = name if name is not None else UNNAMED
        self._named = name is not None
        self.on_escape = on_escape
        self.track = _check_bool(track, "track")
        self.release_after = _check_bool(release_after, "release_after")
        self.capacity = None if capacity is None else parse_size(capacity, "phase(capacity)")
        if self.capacity is not None and not 1 <= self.capacity <= _MAX_BYTES:
            raise ValueError(f"phase(capacity): must be between 1 and {_MAX_BYTES} bytes, got {self.capacity}")
        # The budget setting's kind and bounds; 0 (or None) is none, as for the setting.
        self.budget = 0 if budget is None else parse_setting("budget", budget, "phase(budget)")
        doubt = implausible("budget", self.budget, "phase(budget)")
        if doubt:
            warnings.warn(doubt, SettingsWarning, stacklevel=2)
        self.escapes: tuple[EscapedArray, ...] = ()   # filled at exit when on_escape != "ignore"
        self._capsule: Any = None
        self._entry: Any = None
        self._state = "new"
        self._deferred = False   # entered inside secret(): secret memory wins
        self._hot_start_bytes = 0
        self._released_bytes = 0
        self._cached_at_entry = 0
        self._started_tracemalloc = False

    # ---- entry ---------------------------------------------------------------

    def __enter__(self) -> Phase:
        if self._state != "new":
            raise RuntimeError(f"phase {self.name!r} was already entered; make a new phase() per block")
        self._state = "open"
        _notify("enter", self.name)
        if secret_active():
            self._deferred = True
            return self
        if self.track and not tracemalloc.is_tracing():
            tracemalloc.start(16)
            self._started_tracemalloc = True
        if self.release_after:
            self._cached_at_entry = _core.stats_snapshot()["bytes_cached"]
        self._hot_start()
        self._capsule = _core.scope_capsule(self.track, self.budget)
        _name_serial(_core.scope_serial(self._capsule), self.name)
        # Raw-domain blocks (bytes, tobytes()) made in this context are the
        # phase's too: the core reads the same contextvar (cython/zkpy/zk_py.c).
        self._entry = _handler_stack.enter(self._capsule)
        return self

    def _hot_start(self) -> None:
        """Make the learned working set (and capacity=) resident.  Best effort:
        the cap bounds it, and nothing it meets fails the entry."""
        need, peak = _learned_need(self.name if self._named else None)
        if self.capacity is not None:
            region = _core.class_bytes(_core.class_of(self.capacity))
            need[region] = need.get(region, 0) + 1
            peak += region
        if not need:
            return
        try:
            self._hot_start_bytes = _core.warm(need, peak)
        except MemoryError:   # pragma: no cover - the core reports failure by reserving less
            self._hot_start_bytes = 0

    # ---- exit ----------------------------------------------------------------

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._state = "closed"
        _notify("exit", self.name)
        if self._deferred:
            return
        _handler_stack.leave(self._entry)
        self._entry = None
        _core.scope_close(self._capsule)
        if self.release_after:
            self._released_bytes = _core.trim_to(self._cached_at_entry)
        raw = _core.scope_stats(self._capsule)
        with _totals_lock:
            totals = _totals.get(self.name)
            if totals is None:
                totals = _totals[self.name] = PhaseTotals()
            totals.add(raw)
        try:
            if isinstance(exc, MemoryError) and not isinstance(exc, PhaseBudgetError) and raw["budget_refusals"]:
                raise self._budget_error(raw) from exc
            if raw["escaped_arrays"] and self.on_escape != "ignore" and exc_type is None:
                self._report_escapes(sys._getframe(1))
        finally:
            if self._started_tracemalloc:
                tracemalloc.stop()
                self._started_tracemalloc = False

    def _budget_error(self, raw: dict[str, Any]) -> PhaseBudgetError:
        budget, live, request = raw["budget"], raw["refused_live_bytes"], raw["refused_bytes"]
        sites = _peak.top_sites_text(_core.scope_refusal(self._capsule), _core.scope_serial(self._capsule))
        where = (f"; live then: {sites}" if sites else
                 "" if not self.track else "; no allocation site was recorded for the live arrays")
        hint = "" if self.track else " (phase(track=True) names the allocation sites)"
        return PhaseBudgetError(
            f"phase {self.name!r}: a request of {fmt_bytes(request)} would take its live bytes from "
            f"{fmt_bytes(live)} over its budget of {fmt_bytes(budget)}{where}{hint}",
            phase=self.name, budget=budget, live_bytes=live, request_bytes=request)

    def _report_escapes(self, frame: FrameType | None) -> None:
        self.escapes = _describe(_core.scope_live(self._capsule), frame, self.track)
        if not self.escapes:
            return   # freed between the close and the listing
        total = sum(e.nbytes for e in self.escapes)
        lines = [f"phase {self.name!r}: {len(self.escapes)} array(s) ({fmt_bytes(total)}) outlived the phase "
                 f"(they stay valid):"]
        lines += [f"  {e}" for e in self.escapes]
        if not self.track:
            lines.append("  (phase(track=True) records where each was allocated)")
        message = "\n".join(lines)
        if self.on_escape == "raise":
            raise PhaseEscapeError(message, self.escapes)
        warnings.warn(message, PhaseEscapeWarning, stacklevel=3)

    # ---- reading -------------------------------------------------------------

    @property
    def stats(self) -> PhaseStats:
        """The phase's statistics now (during the phase) or since its end."""
        raw = _core.scope_stats(self._capsule) if self._capsule is not None else None
        return self._stats_from(raw)

    def _stats_from(self, raw: dict[str, Any] | None) -> PhaseStats:
        core = {name: (raw or _EMPTY)[name] for name in SCOPE_STAT_NAMES}
        core["closed"] = int(core["closed"] or self._state == "closed")
        return PhaseStats(name=self.name, capacity=self.capacity, **core, hot_start_bytes=self._hot_start_bytes,
                          released_bytes=self._released_bytes, peak=self._peak(core))

    def _peak(self, raw: dict[str, Any]) -> PeakReport | None:
        if self._capsule is None or not raw["arrays"]:
            return None
        return _peak.report(_core.scope_peak(self._capsule), _core.scope_serial(self._capsule), raw["peak_bytes"],
                            phase_names())

    def __repr__(self) -> str:
        capacity = "" if self.capacity is None else f", capacity={fmt_bytes(self.capacity)}"
        if self._capsule is None:
            return f"<Phase {self.name!r} {self._state}{capacity}>"
        st = self.stats
        return (f"<Phase {self.name!r} {self._state}{capacity}: {st.arrays} arrays, "
                f"peak {fmt_bytes(st.peak_bytes)}, {st.misses} misses, {st.escaped_arrays} escaped>")

    def owns(self, array: np.ndarray | bytes | bytearray) -> bool:
        """Whether the array's data (its base's, for a view) was allocated in
        this phase and is alive (escaped arrays included); for a ``bytes`` or
        ``bytearray`` made in the phase's context (the thread or asyncio task
        that entered it, a task started inside it), its block."""
        address = block_address(array, "owns")
        if address is None or self._capsule is None:
            return False
        return _core.scope_owns(self._capsule, address)


#: The core's statistics of a phase, in its order (zk_scope_stats_list.h).
SCOPE_STAT_NAMES = tuple(name for name, _, _ in _core.SCOPE_STATS)
_EMPTY: dict[str, int] = dict.fromkeys(SCOPE_STAT_NAMES, 0)


# Phase names by scope serial, for peak reports that list other phases'
# arrays; the newest _MAX_NAMES (a name only matters while its arrays live).
_MAX_NAMES = 4096
_serial_names: dict[int, str] = {}


def _name_serial(serial: int, name: str) -> None:
    with _totals_lock:
        _serial_names[serial] = name
        if len(_serial_names) > _MAX_NAMES:
            del _serial_names[next(iter(_serial_names))]


def phase_names() -> dict[int, str]:
    """{scope serial: phase name} of recent phases (a copy)."""
    with _totals_lock:
        return dict(_serial_names)


# ---- finding escaped arrays --------------------------------------------------

def _owner_address(obj: Any) -> tuple[np.ndarray, int] | None:
    if not isinstance(obj, np.ndarray):
        return None
    owner = data_owner(obj)
    if owner is None:
        return None
    return owner, owner.__array_interface__["data"][0]


def _find_arrays(addresses: set[int], frame: FrameType | None) -> dict[int, np.ndarray]:
    """The ndarrays owning the memory at `addresses`: the caller's frames
    first (an escaped local is the usual case), then every object the garbage
    collector tracks and what they refer to (ndarrays themselves are not
    tracked: they are found through their containers)."""
    found: dict[int, np.ndarray] = {}

    def consider(obj: Any) -> None:
        hit = _owner_address(obj)
        if hit is not None and hit[1] in addresses and hit[1] not in found:
            found[hit[1]] = hit[0]

    while frame is not None and len(found) < len(addresses):
        for value in list(frame.f_locals.values()):
            consider(value)
        frame = frame.f_back
    if len(found) < len(addresses):
        for obj in gc.get_objects():
            consider(obj)
            for ref in gc.get_referents(obj):
                consider(ref)
            if len(found) == len(addresses):
                break
    return found


def _describe(live: list[tuple[int, int]], frame: FrameType | None, track: bool) -> tuple[EscapedArray, ...]:
    arrays = _find_arrays({address for address, _ in live}, frame)
    out = []
    for address, nbytes in sorted(live):
        array = arrays.get(address)
        where = None
        if array is not None and track:
            trace = tracemalloc.get_object_traceback(array)
            where = tuple(trace.format()) if trace is not None else None
        out.append(EscapedArray(address=address, nbytes=nbytes,
                                shape=tuple(array.shape) if array is not None else None,
                                dtype=str(array.dtype) if array is not None else None, traceback=where))
    del arrays
    return tuple(out)


#: phase(...) is Phase(...): the class is the context manager, documented above.
phase = Phase
