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
import threading
from types import TracebackType
from typing import Any

import numpy as np

from . import _core, _handler_stack, _raw
from ._log import log_activity
from ._settings import configure

_install_lock = threading.Lock()
_installed = False


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

    Also (issue 24): Python's raw domain (bytes, ``tobytes()``,
    ``bytearray``, hashlib inputs) of ``min_bytes`` and more comes from the
    cache, unless tracemalloc (or another hook) was set first, which is
    declined with a logged warning; and with ``libc=keep`` glibc keeps its
    big blocks (np.fft scratch, C extensions) resident.
    """
    global _installed
    if settings:
        configure(**settings)
    with _install_lock:
        _core.point_default_at_zkalloc(True)
        _raw.enable()        # issue 24
        _raw.libc_enable()   # issue 24
        _installed = True


def uninstall() -> None:
    """Stop serving new default-handler requests from the cache.

    Arrays allocated while installed stay valid and return to the cache when
    freed.  Without a prior install() this does nothing.
    """
    global _installed
    with _install_lock:
        if _installed:
            _core.point_default_at_zkalloc(False)
            _raw.disable()        # issue 24
            _raw.libc_disable()   # issue 24
            _installed = False
    log_activity("uninstall()")


def is_installed() -> bool:
    """Whether install() is in effect (process-wide)."""
    return _installed


def _data_owner(array: np.ndarray) -> np.ndarray | None:
    """The array whose buffer `array` views (itself if it owns its data)."""
    while not array.flags.owndata:
        base = array.base
        if not isinstance(base, np.ndarray):
            return None   # a view of bytes, mmap, another buffer protocol object
        array = base
    return array


def data_address(array: np.ndarray, caller: str) -> int | None:
    """Address of the buffer an array's data lives in (its base's, for a
    view); None when no numpy array owns it.  TypeError naming `caller` for
    anything but an ndarray."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{caller}() takes a numpy.ndarray, not {type(array).__name__}")
    owner = _data_owner(array)
    return None if owner is None else owner.__array_interface__["data"][0]


def block_address(obj: object, caller: str) -> int | None:
    """Address of the allocation holding obj's data (issue 24): an ndarray's
    buffer (its base's, for a view; a bytes' it views), a ``bytes`` object
    itself (CPython allocates header and data as one block), a
    ``bytearray``'s buffer.  None when no such block can be named.
    TypeError naming `caller` for anything else."""
    if isinstance(obj, np.ndarray):
        owner = _data_owner(obj)
        if owner is not None:
            return int(owner.__array_interface__["data"][0])
        base = obj.base
        while isinstance(base, (np.ndarray, memoryview)):
            base = base.base if isinstance(base, np.ndarray) else base.obj
        return block_address(base, caller) if isinstance(base, (bytes, bytearray)) else None
    if isinstance(obj, bytes):
        return id(obj)
    if isinstance(obj, bytearray):
        return int(np.frombuffer(obj, np.uint8).__array_interface__["data"][0]) if len(obj) else None
    raise TypeError(f"{caller}() takes a numpy.ndarray, bytes or bytearray, not {type(obj).__name__}")


def owns(array: np.ndarray | bytes | bytearray) -> bool:
    """Whether the array's data (or, for a view, its base's) came from the
    cache; for a ``bytes`` or ``bytearray`` (issue 24), its block."""
    address = block_address(array, "owns")
    return address is not None and _core.usable_bytes(address) > 0
