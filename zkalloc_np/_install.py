"""Putting the cache behind numpy: scoped (contextvar) and process-wide.

Scoped, ``installed()``: NEP 49's PyDataMem_SetHandler sets the handler in the
current context only; new threads start with numpy's default.

Process-wide, ``install()``: numpy exports its default handler capsule
(PyDataMem_DefaultHandler) and every context that set no handler of its own
uses it, new threads and Dask task contexts included.  We point that capsule
at the zkalloc handler.  Arrays made before the swap hold the same capsule,
so their frees arrive at zkalloc with pointers it never made: the core
recognises them by address and passes them, with every small request, to
numpy's original functions.

``uninstall()`` does not point the capsule back at numpy's functions: arrays
allocated while installed hold that capsule and would then be freed by glibc.
It points it at a pass-through handler instead (numpy's name, numpy's
functions for every new request) that still sends the cache's own pointers
home.

Issue 24: ``install()`` also serves Python's raw memory domain from the
cache and, with ``libc=keep``, tells glibc to keep its big blocks resident
(``_raw.py``); ``uninstall()`` turns both back into pass-throughs.  Both are
process-wide by nature, so ``installed()`` (scoped) stays numpy-only.
"""
from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any

import numpy as np
from numpy._core.multiarray import get_handler_name

from . import _core, _handler_stack, _raw
from ._arrays import block_address
from ._forksafe import fork_safe_lock
from ._log import log_activity
from ._settings import configure_from

_install_lock = fork_safe_lock()


class Installed(contextlib.AbstractContextManager[None]):
    """One ``with zkalloc.installed():`` block (see installed()).  Single use:
    entering it a second time is a RuntimeError."""

    def __init__(self) -> None:
        self._entry: Any = None
        self._state = "new"

    def __enter__(self) -> None:
        if self._state != "new":
            raise RuntimeError("this zkalloc.installed() object was already entered; "
                               "call zkalloc.installed() again for each with block")
        self._state = "open"
        # Through the handler stack: blocks entered in generators may exit
        # out of order, and each must still restore the right handler.
        self._entry = _handler_stack.enter(_core.handler_capsule)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._state = "closed"
        _handler_stack.leave(self._entry)
        self._entry = None
        log_activity("installed() block")

    def __repr__(self) -> str:
        return f"<zkalloc_np.installed() block, {self._state}>"


def installed(**settings: object) -> Installed:
    """Serve numpy arrays created in this block (this thread/context) from the cache.

    Arrays that outlive the block stay valid and are freed into the cache
    later.  Blocks nest, and blocks in different threads are independent.
    Use one installed() per with statement.

    Numpy array data only: Python's raw domain (bytes, tobytes(), hashlib
    inputs) and glibc's big blocks (np.fft scratch) are process-wide and are
    served only by install().  Use installed() to scope the cache to a
    block of code or a library that must not see it; use install() for a
    whole prover process.

    It takes no settings: settings are process-wide, so they would either
    outlive the block or, restored at its end, undo what another thread's
    block or configure() set meanwhile.  Call configure() before the block
    (or pass them to install()).  Giving settings here is a TypeError.
    """
    if settings:
        example = ", ".join(f"{k}={v!r}" for k, v in sorted(settings.items()))
        raise TypeError(f"installed() takes no settings (got {', '.join(sorted(settings))}): settings are "
                        f"process-wide, so set them once with zkalloc.configure({example}) before the block")
    return Installed()


def install(**settings: Any) -> None:
    """Make zkalloc numpy's default handler in every thread of the process.

    Covers threads started before and after the call, and contexts that never
    set a handler.  Calling it again is harmless.  A context inside a
    ``with installed():`` or another library's handler keeps that handler.

    Also: Python's raw domain (bytes, ``tobytes()``,
    ``bytearray``, hashlib inputs) of ``min_bytes`` and more comes from the
    cache, unless tracemalloc (or another hook) was set first, which is
    declined with a logged warning; and with ``libc=keep`` glibc keeps its
    big blocks (np.fft scratch, C extensions) resident.
    """
    if settings:
        configure_from(settings, stacklevel=3)
    with _install_lock:
        _core.point_default_at_zkalloc(True)
        _raw.libc_enable()   # before the raw hook: it reads /proc, which a budget must not refuse
        _raw.enable()


def uninstall() -> None:
    """Stop serving new default-handler requests from the cache.

    Arrays allocated while installed stay valid and return to the cache when
    freed.  Without a prior install() this does nothing.
    """
    with _install_lock:
        if _core.default_points_at_zkalloc():
            _core.point_default_at_zkalloc(False)
            _raw.disable()
            _raw.libc_disable()
    log_activity("uninstall()")


#: The handler names whose requests the cache serves (a phase's capsules
#: are named apart, secret arrays are never cached).
_CACHE_HANDLERS = frozenset({_core.HANDLER_NAME, "zkalloc-phase"})


def is_installed() -> bool:
    """Whether numpy arrays created here, now, come from the cache: in this
    thread and context, the handler numpy uses is zkalloc's (install() in
    effect and no other handler set here, or inside installed() or a
    phase()).  Inside secret() it is False: secret arrays are never cached.
    For the process-wide state alone, see stats().installed."""
    return str(get_handler_name()) in _CACHE_HANDLERS


def owns(array: np.ndarray | bytes | bytearray) -> bool:
    """Whether the array's data (or, for a view, its base's) came from the
    cache; for a ``bytes`` or ``bytearray`` its block."""
    address = block_address(array, "owns")
    return address is not None and _core.usable_bytes(address) > 0
