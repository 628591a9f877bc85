"""Setting numpy's handler for a block, correctly even when blocks cross.

NEP 49 keeps the current handler in a contextvar, and the obvious way to
scope it (set ours at entry, set back what we replaced at exit) is only right
when blocks nest.  Generators break that: two generators that each enter a
block, resumed in turn, exit in the order they are resumed, and every block
entered after them (an ``installed()``, another phase) saw their handler as
"previous".  Restoring "previous" blindly then leaves the context on a
handler whose block is over: the issue's case ended with the main context on
a closed phase where plain numpy would be back on ``default_allocator``.

So every block that sets a handler pushes an entry (its capsule, the handler
it replaced) on a per-context stack, a ContextVar holding a tuple (immutable:
a copied context gets its own stack, never a shared list), and exits with
``leave()``:

- its entry on top and its capsule current: the normal nested case; set the
  handler it replaced and pop;
- its entry below others (pairs crossed): the block above ours replaced our
  capsule, so it inherits our "previous" (when it exits, it restores what
  was there before us); unlink ours and leave the current handler alone;
- its entry on top but another handler current (someone outside this stack
  set one without restoring): leave that handler alone, pop.

Users: ``installed()``, ``phase()`` and ``secret()``: every block that
sets a handler.
"""
from __future__ import annotations

import contextvars
from typing import Any

from . import _core


class _Entry:
    __slots__ = ("capsule", "previous")

    def __init__(self, capsule: Any, previous: Any):
        self.capsule = capsule
        self.previous = previous


_stack: contextvars.ContextVar[tuple[_Entry, ...]] = contextvars.ContextVar("zkalloc_handler_stack", default=())


def enter(capsule: Any) -> _Entry:
    """Set `capsule` as this context's handler; the returned entry is what
    leave() takes at the end of the block."""
    entry = _Entry(capsule, _core.set_context_handler(capsule))
    _stack.set(_stack.get() + (entry,))
    return entry


def leave(entry: _Entry) -> None:
    """End the block `entry` began (see the module docstring for crossed blocks)."""
    stack = _stack.get()
    if stack and stack[-1] is entry:   # the nested case, and the common one
        _restore_if_current(entry)
        _stack.set(stack[:-1])
        entry.previous = None
        return
    index = next((i for i, e in enumerate(stack) if e is entry), None)
    if index is None:
        # Entered in another context (a copy made inside the block): this
        # context's handler is its own business; restore only if it is ours.
        _restore_if_current(entry)
        return
    if index + 1 < len(stack):
        stack[index + 1].previous = entry.previous   # pairs crossed: the block above inherits
    else:
        _restore_if_current(entry)
    _stack.set(stack[:index] + stack[index + 1:])
    entry.previous = None


def _restore_if_current(entry: _Entry) -> None:
    current = _core.set_context_handler(entry.previous)
    if current is not entry.capsule:
        _core.set_context_handler(current)   # not ours: put it back untouched


def depth() -> int:
    """Blocks open in this context (tests)."""
    return len(_stack.get())
