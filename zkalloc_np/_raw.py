"""Python's raw memory domain and glibc's big blocks under ``install()``.

Raw domain: CPython's object allocator hands every request above 512 bytes
to ``PyMem_RawMalloc``: ``ndarray.tobytes()``, ``bytes``, ``bytearray``,
``b"".join()``, hashlib's inputs.  ``install()`` wraps the raw allocator
current then with a hook (``PyMem_SetAllocator(PYMEM_DOMAIN_RAW)``, as
tracemalloc does) that serves requests of ``min_bytes`` and more from the
cache.  The hook is never removed: no record says which allocator made a
block, so ``uninstall()`` makes it a pass-through that still sends the
cache's blocks home.

Declined, with a logged reason, when a hook that may be taken out later is
in place: tracemalloc tracing at ``install()`` (its ``stop()`` puts back the
allocator it saved, which would take zkalloc's hook out of the chain while
cache blocks are alive), or any other change of the raw allocator since
zkalloc_np was imported.  tracemalloc started after ``install()`` wraps the
hook and puts it back at ``stop()``: that is fine.

glibc: with ``libc=keep`` (the default), ``install()`` tells glibc to keep
its big blocks resident (``mallopt(M_MMAP_MAX, 0)``, a huge
``M_TRIM_THRESHOLD``) unless the environment already tunes glibc's malloc
(then the user's tuning stands); ``release()`` and decay give the memory
back with ``malloc_trim(0)``; ``uninstall()`` restores glibc's defaults.
"""
from __future__ import annotations

import logging
import os
import tracemalloc
from collections.abc import Mapping

from . import _core
from ._forksafe import fork_safe_lock

logger = logging.getLogger(__package__)   # _log's: the package's logger

#: glibc's own malloc tuning in the environment: if any is set, libc=keep
#: leaves glibc as the user tuned it.
GLIBC_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")

_lock = fork_safe_lock()
# The raw allocator when zkalloc_np was imported; None when tracemalloc
# traced then (python -X tracemalloc): its hook is not the base.
_at_import: tuple[int, ...] | None = None if tracemalloc.is_tracing() else _core.raw_allocator_id()
_hooked = False
_declined: str | None = None
_libc_env: str | None = None
_libc_env_read = False


def _decline_reason() -> str | None:
    """Why the raw domain must not be hooked now, or None."""
    if tracemalloc.is_tracing():
        return ("tracemalloc is tracing (started before install()): its stop() puts back the allocator it "
                "saved, which would take zkalloc's hook out while the cache's blocks are alive; start "
                "tracemalloc after install() to have both")
    if _at_import is not None and _core.raw_allocator_id() != _at_import:
        return ("another hook replaced Python's raw allocator after zkalloc_np was imported (a profiler?); "
                "it may be taken out again later, so zkalloc does not wrap it")
    return None


def enable() -> str | None:
    """install(): serve the raw domain from the cache (hooking it the first
    time).  Returns None, or the reason it declined (logged at WARNING)."""
    global _hooked, _declined
    with _lock:
        if not _hooked:
            reason = _decline_reason()
            if reason is not None:
                _declined = reason
                logger.warning("install(): Python's raw domain is not served by the cache: %s", reason)
                return reason
            _core.raw_hook()
            _hooked = True
        _declined = None
        _core.raw_set_active(True)
        return None


def disable() -> None:
    """uninstall(): the hook passes every new request on; cache blocks still go home."""
    _core.raw_set_active(False)


def _start_environment() -> Mapping[str, str]:
    """The environment this process started with, which is what glibc read
    (/proc/self/environ): a variable set later, as distributed's Nanny sets
    MALLOC_TRIM_THRESHOLD_ for the workers it spawns, does not tune this
    process's glibc.  os.environ where /proc cannot be read."""
    try:
        with open("/proc/self/environ", "rb") as f:
            entries = f.read().split(b"\0")
    except OSError:
        return os.environ
    return dict(e.decode("utf-8", "replace").partition("=")[::2] for e in entries if b"=" in e)


def glibc_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The glibc malloc tuning this process started with (names), or None."""
    env = _start_environment() if environ is None else environ
    found = [k for k in GLIBC_MALLOC_ENV if k in env]
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        found.append("GLIBC_TUNABLES")
    return ", ".join(found) if found else None


def libc_enable() -> None:
    """install(): glibc's tuning per the libc setting, unless the environment tunes glibc."""
    global _libc_env, _libc_env_read
    if not _libc_env_read:   # the start environment never changes: a later install() allocates nothing here
        _libc_env, _libc_env_read = glibc_env(), True
    _core.libc_install(_libc_env is None)


def libc_disable() -> None:
    """uninstall(): glibc's defaults back (if zkalloc had changed them)."""
    _core.libc_install(False)


def raw_status() -> str:
    """What the raw domain does now, in words (for info and stats)."""
    if _core.raw_active():
        return "served: requests of min_bytes and more come from the cache"
    if _declined is not None:
        return f"declined at install(): {_declined}"
    if _hooked:
        return "pass-through (after uninstall()): new requests to Python's allocator, the cache's blocks go home"
    return "not hooked (install() was not called): Python's own allocator"


def libc_status() -> str:
    """What zkalloc does to glibc's malloc now, in words."""
    if not _core.libc_is_glibc():
        return "not glibc: no tuning possible, nothing done (libc setting ignored)"
    if _core.libc_applied():
        return "keep: glibc told to keep big blocks resident (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD huge)"
    if _libc_env is not None and _core.option_get("libc"):
        return f"left as the environment tunes it ({_libc_env})"
    if not _core.option_get("libc"):
        return "leave: glibc's own behaviour (libc=leave)"
    return "glibc's defaults (the tuning applies while install() is in effect)"
