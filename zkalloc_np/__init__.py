"""zkalloc-np: numpy's large buffers kept resident, for prover code.

    import zkalloc_np as zkalloc

    with zkalloc.installed():        # this thread / context
        run_prover_round()

    zkalloc.install()                # every thread of the process
    print(zkalloc.stats())

Requests of at least ``min_bytes`` (64 KiB by default) are rounded up to a
size class (8 per power of two) and served from idle resident regions when
one is cached, so a loop that allocates and frees the same sizes stops
page-faulting.  Smaller requests go to numpy's own allocator.
"""
import numbers
import warnings
from typing import Any as _Any

from . import _core, _log, _settings
from ._format import fmt_bytes as _fmt_bytes
from ._install import install, installed, is_installed, owns, uninstall
from ._peak import PeakReport, SiteBytes
from ._phase import (EscapedArray, Phase, PhaseBudgetError, PhaseEscapeError, PhaseEscapeWarning, PhaseStats,
                     PhaseTotals, phase)
from ._secret import (SecretInfo, SecretMemoryError, SecretWarning, is_secret, secret, secret_empty,
                      secret_info, secret_zeros)
from ._phase import reset_phase_totals as _reset_phase_totals
from ._settings import Settings, SettingsWarning, configure
from ._settings import current as settings
from ._settings import sources as setting_sources
from ._stats import ClassStats, Stats
from ._stats import snapshot as _snapshot
from ._version import __version__ as __version__

__all__ = [
    "HANDLER_NAME", "ClassStats", "EscapedArray", "InvariantError", "PeakReport", "Phase", "PhaseBudgetError", "PhaseEscapeError", "PhaseEscapeWarning",
    "PhaseStats", "PhaseTotals", "SecretInfo", "SecretMemoryError",
    "SecretWarning", "Settings", "SettingsWarning", "SiteBytes", "Stats", "check", "configure", "install", "installed", "is_installed",
    "compare", "is_secret", "load_ipython_extension", "owns", "phase", "release", "reserve", "reset_stats", "secret", "secret_empty",
    "secret_info", "secret_zeros", "setting_sources", "settings", "soften", "stats", "uninstall",
]

HANDLER_NAME: str = _core.HANDLER_NAME
_MAX_CLASS_BYTES: int = _core.class_bytes(_core.NCLASSES - 1)


class InvariantError(RuntimeError):
    """check() found one of the core's invariants broken: a bug in zkalloc
    (please report it with the message)."""


def stats() -> Stats:
    """A snapshot of the cache's counters and gauges (see Stats)."""
    return _snapshot()


def reset_stats() -> None:
    """Zero hit/miss/event counters and the per-phase totals; byte gauges
    stay, peaks restart from now."""
    _core.reset_counters()
    _reset_phase_totals()


def soften() -> int:
    """MADV_FREE every idle region: the kernel may reclaim them under memory
    pressure, until then they stay warm.  Returns the bytes advised."""
    return _core.soften()


def release() -> int:
    """Unmap every idle region (all threads' caches included); returns bytes
    given back.  Arrays in use are not touched."""
    return _core.release()


def reserve(nbytes: int, count: int = 1) -> int:
    """Pre-fault `count` regions big enough for `nbytes` and leave them cached,
    so a hot loop's first round does not fault.  Returns how many are cached
    (fewer when the cap refuses some).  MemoryError if none can be mapped.
    More than the cap can hold at all returns 0 at once with a
    ResourceWarning, having faulted nothing."""
    nbytes = _settings.parse_size(nbytes, "reserve(nbytes)")
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or not 0 <= count < 2**31:
        raise ValueError(f"reserve(count): expected a non-negative int, got {count!r}")
    if not 1 <= nbytes <= _MAX_CLASS_BYTES:
        raise ValueError(f"reserve(nbytes): must be between 1 and {_MAX_CLASS_BYTES} bytes (the largest size "
                         f"class), got {nbytes}")
    rc = _core.reserve_raw(nbytes, int(count))
    if rc == _core.RESERVE_OVER_CAP:
        # Faulting it in would only have the cap unmap it again.
        cap = settings()["cache_bytes"]
        warnings.warn(f"reserve({_fmt_bytes(nbytes)}, count={count}) is more than the cache's cap "
                      f"({_fmt_bytes(cap)}) can keep: nothing reserved; raise cache_bytes with configure() "
                      f"to keep that much", ResourceWarning, stacklevel=2)
        return 0
    return int(rc)


def compare(fn: _Any, *args: _Any, rounds: int = 5, warmup: int = 1, **kwargs: _Any) -> _Any:
    """Does the cache help ``fn(*args, **kwargs)``?  Runs it `rounds` times
    with numpy's default and `rounds` times with zkalloc (``installed()``,
    this thread), alternating, after `warmup` rounds of each, and returns an
    ``ABResult`` (spreads, speedup, and a verdict by the rule of
    ``python -m zkalloc_np compare``: wall time on an idle machine, CPU time
    with a margin or no verdict on a loaded one).  See zkalloc_np.cli.ab."""
    from .cli.ab import compare as _compare
    return _compare(fn, *args, rounds=rounds, warmup=warmup, **kwargs)


def load_ipython_extension(ipython: _Any) -> None:
    """``%load_ext zkalloc_np``: the ``%zkcompare`` line and cell magic
    (zkalloc_np.cli.ipython)."""
    from .cli.ipython import register
    register(ipython)


def check() -> bool:
    """Verify the core's invariants (no region lost, cached twice, or
    miscounted; every segment it holds mapped, per /proc/self/maps).

    True: every invariant was checked and holds.  False: busy, other threads'
    requests were in flight on every attempt (about 50 ms of them), so the
    totals could not be compared exactly; nothing it could see was broken.
    InvariantError naming the broken one.  It never changes the allocator's
    state, so it is safe to call while other threads allocate."""
    broken = _core.check()
    if broken == _core.CHECK_BUSY:
        return False
    if broken is not None:
        raise InvariantError(f"zkalloc invariant broken: {broken}")
    return True


_settings.load_environment(strict=False)
_settings.apply_container_default()
_log.enable_from_environment()
