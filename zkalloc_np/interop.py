"""zkalloc as a numpy-allocator class (the ``numpy-allocator`` package).

numpy-allocator turns a class into a NEP 49 handler scoped with ``with``::

    import numpy as np
    from zkalloc_np.interop import ZkallocAllocator

    with ZkallocAllocator:
        a = np.empty(1 << 24)          # served by the zkalloc cache
    assert ZkallocAllocator.handles(a)

``ZkallocAllocator`` is backed by the real zkalloc handler: its ``_handler_``
is the one capsule ``zkalloc_np._core.handler_capsule`` that ``installed()``
also sets, so ``handles()`` (which compares capsule identity) is True for
arrays made under either.  Arrays made under the process-wide ``install()``
hold numpy's default capsule instead: ask ``zkalloc_np.owns()``, which looks
at the data pointer, when the question is "did the cache serve this".

Threads: numpy-allocator keeps the handlers its ``with`` blocks replaced on a
stack shared by the whole process, so ``with`` blocks interleaved in two
threads restore each other's handlers.  ``zkalloc_np.installed()`` keeps the
previous handler in its own frame and never crosses threads.
"""
from __future__ import annotations

from typing import Any

from . import _core

try:
    import numpy_allocator  # type: ignore[import-not-found,unused-ignore]  # ships no type information
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "zkalloc_np.interop needs the numpy-allocator package: pip install 'zkalloc-np[numpy-allocator]'"
    ) from exc

__all__ = ["ZkallocAllocator", "handler_capsule"]

#: The one zkalloc handler capsule: every scoped use shares it, so capsule
#: identity tells which arrays it allocated.
handler_capsule: Any = _core.handler_capsule


class ZkallocAllocator(metaclass=numpy_allocator.type):  # type: ignore[metaclass,unused-ignore]
    """numpy-allocator class whose handler is zkalloc's own (``with ZkallocAllocator:``)."""

    _handler_ = handler_capsule
