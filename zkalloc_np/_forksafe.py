"""Locks that a fork cannot leave held.

A ``threading.Lock`` held by another thread at ``os.fork()`` stays locked in
the child for ever: only the forking thread exists there, and nothing will
release it (issue 30: 27-33 of 100 children hung in their first phase entry
while a thread looped ``with zkalloc.phase():``).  Every lock of this package
comes from ``fork_safe_lock()``: it is a plain ``threading.Lock`` (no cost on
any path that takes it) that is re-made, unlocked, in every fork child, as
CPython's own ``logging`` and ``concurrent.futures`` do it
(``os.register_at_fork(after_in_child=...)`` calling the lock's
``_at_fork_reinit()``, which CPython has had since 3.9).

What a lock guards is a few Python statements over dicts and module globals
(the forking thread holds the GIL, so each statement is whole in the
child); a fork in the middle of one such section leaves the child what any
thread switch there would have left.  The C core has its own at-fork
handlers (cython/zk/zk_fork.c); they run inside ``fork()`` itself, before
these, and neither depends on the other.
"""
from __future__ import annotations

import os
import threading
import weakref

_locks: weakref.WeakSet[threading.Lock] = weakref.WeakSet()


def fork_safe_lock() -> threading.Lock:
    """A new ``threading.Lock`` that every fork child gets back unlocked."""
    lock = threading.Lock()
    _locks.add(lock)
    return lock


def is_fork_safe(lock: object) -> bool:
    """Whether `lock` came from fork_safe_lock() (for tests and checks)."""
    try:
        return lock in _locks
    except TypeError:   # not weak-referenceable: not one of ours
        return False


def _reinit_in_child() -> None:
    for lock in list(_locks):
        lock._at_fork_reinit()   # type: ignore[attr-defined]


os.register_at_fork(after_in_child=_reinit_in_child)
