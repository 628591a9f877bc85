"""Debug logging of what the cache did, through the ``zkalloc_np`` logger.

The C core never prints.  Instead, at a few points (the end of an
``installed()`` block, ``uninstall()``, the end of ``run``, and the exit of
a process that has logging on) the counters are read and compared with the
last reading; what changed is logged at DEBUG level: the size classes that
missed (mapped fresh memory), the sizes left to numpy's allocator, how
``np.zeros`` got its zeros (fresh mapping, memset, or discard), evictions.
Each line covers the whole process since the previous line.

Turn it on with ``ZKALLOC_LOG=1`` (a handler on stderr) or with
``logging.getLogger("zkalloc_np").setLevel(logging.DEBUG)`` and a handler of
your own.  When the logger is off, the only cost is one level check.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Mapping

from ._forksafe import fork_safe_lock
from ._format import fmt_bytes, size_range
from ._settings import parse_bool
from ._stats import Stats, snapshot

logger = logging.getLogger(__package__)   # "zkalloc_np"
ENV_VAR = "ZKALLOC_LOG"

_lock = fork_safe_lock()
_last: Stats | None = None


def _gain(after: int, before: int) -> int:
    """A counter's growth; reset_stats() in between restarts it from 0."""
    return after - before if after >= before else after


def activity_lines(before: Stats | None, after: Stats) -> list[str]:
    """What the cache did between two snapshots, one message per kind of
    event (pure: no logging).  `before` None means since the counters
    started (process start or reset_stats())."""
    lines: list[str] = []
    earlier = {c.bytes: c for c in before.classes} if before is not None else {}

    def prev(name: str) -> int:
        return int(getattr(before, name)) if before is not None else 0

    for c in after.classes:
        old = earlier.get(c.bytes)
        misses = _gain(c.misses, old.misses if old else 0)
        hits = _gain(c.hits, old.hits if old else 0)
        if misses:
            lines.append(f"miss: {misses} request(s) of the {fmt_bytes(c.bytes)} class mapped fresh memory "
                         f"({hits} hit(s) reused resident regions)")
    small_before = before.small_allocs_by_size if before is not None else {}
    small = {low: _gain(n, small_before.get(low, 0)) for low, n in after.small_allocs_by_size.items()}
    small = {low: n for low, n in small.items() if n}
    if small:
        sizes = ", ".join(f"{n} of {size_range(low)}" for low, n in sorted(small.items()))
        lines.append(f"left to numpy (below min_bytes {fmt_bytes(after.min_bytes)}, or above the largest class): {sizes}")
    fresh, memset, discard = (_gain(getattr(after, k), prev(k)) for k in
                              ("calloc_fresh", "calloc_memset", "calloc_discard"))
    samples = _gain(after.zero_samples, prev("zero_samples"))
    if fresh or memset or discard:
        lines.append(f"calloc (np.zeros): {fresh} on fresh mappings (already zero), {memset} reused and memset, "
                     f"{discard} reused and discarded with MADV_DONTNEED (their class touches few pages); "
                     f"{samples} touch sample(s) taken")
    evictions = _gain(after.evictions, prev("evictions"))
    if evictions:
        lines.append(f"evicted {evictions} idle region(s) ({fmt_bytes(_gain(after.evicted_bytes, prev('evicted_bytes')))}) "
                     f"to stay under the cap of {fmt_bytes(after.cap_bytes)}")
    uncached = _gain(after.uncached_frees, prev("uncached_frees"))
    if uncached:
        lines.append(f"{uncached} freed region(s) larger than the whole cap were unmapped")
    failures = _gain(after.map_failures, prev("map_failures"))
    if failures:
        lines.append(f"{failures} new mapping(s) refused by the kernel (served by numpy's allocator or MemoryError)")
    refused = _gain(after.budget_refusals, prev("budget_refusals"))
    if refused:
        lines.append(budget_refusal_text(refused))
    return lines


def budget_refusal_text(refused: int) -> str:
    """What `refused` budget refusals were, naming the process budget as it is now."""
    from ._settings import current
    budget = current()["budget"]
    which = (f"the process budget (budget={fmt_bytes(budget)}, ZKALLOC_BUDGET or configure(budget=...)) or a "
             "phase's budget" if budget else "a phase's budget (phase(budget=...))")
    return f"{refused} request(s) refused by {which}: numpy raised MemoryError for each"


def log_activity(where: str) -> None:
    """Log, at DEBUG, what the cache did since the last call (see module doc)."""
    global _last
    if not logger.isEnabledFor(logging.DEBUG):
        return
    with _lock:
        now = snapshot()
        lines = activity_lines(_last, now)
        _last = now
    for line in lines:
        logger.debug("%s: %s", where, line)


def _at_exit() -> None:
    try:
        log_activity("at exit")
    except Exception:   # noqa: BLE001 - interpreter shutdown: never fail here
        pass


def enable_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """With ZKALLOC_LOG=1 (on/true/yes): DEBUG level and a stderr handler on
    the logger.  Returns a problem message for a value that is not a
    boolean (logging stays off), else None."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR)
    if value is None:
        return None
    try:
        on = parse_bool(value, f"{ENV_VAR}={value!r}")
    except ValueError as exc:
        return f"{exc}; ignored, logging stays off"
    if on:
        if not any(getattr(h, "_zkalloc", False) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("zkalloc_np: %(message)s"))
            handler._zkalloc = True   # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    return None


atexit.register(_at_exit)
