"""Run at interpreter start-up by ``zkalloc_np_subprocess.pth``, and only
when ``ZKALLOC_SUBPROCESS`` is set (see zkalloc_np.cli.children).

This file is loaded on its own, before ``site`` has finished building
sys.path (numpy may sit in a site folder added after the one holding the
.pth), so it imports nothing but the standard library.  It only arms a
finder that waits for ``import numpy`` to complete; then it imports
zkalloc_np and installs it (`children.start_from_environment`).  A process
that never imports numpy is left as it is: numpy's allocator is not in it.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
from types import ModuleType
from typing import Any

SWITCH = "ZKALLOC_SUBPROCESS"
#: The process the interpreter started in (a fork child has another pid).
STARTED_PID = os.getpid()


def _install() -> None:
    try:
        from zkalloc_np.cli import children
        children.start_from_environment()
    except Exception as exc:   # noqa: BLE001 - never break the program over its measurement
        print(f"zkalloc_np: {SWITCH} is set, but zkalloc could not be installed in this process: {exc}",
              file=sys.stderr)


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


class NumpyWatcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loaders of numpy and of zkalloc_np so
    that zkalloc is installed right after numpy's ``__init__`` completes, or,
    when numpy is being imported by zkalloc_np's own ``__init__``, right after
    that completes (zkalloc_np cannot install itself half imported)."""

    def __init__(self) -> None:
        self.numpy_done = False
        self.fired = False
        self.searching = threading.local()   # a finder below may search sys.meta_path again: not us then

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if fullname not in ("numpy", "zkalloc_np") or getattr(self.searching, "on", False):
            return None
        self.searching.on = True
        try:
            spec = None
            for finder in list(sys.meta_path):   # the others, as they would have found it
                find = getattr(finder, "find_spec", None)
                if finder is not self and find is not None:
                    spec = find(fullname, path, target)
                    if spec is not None:
                        break
        finally:
            self.searching.on = False
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            self.loaded(fullname)

        loader.exec_module = exec_module
        return spec

    def loaded(self, name: str) -> None:
        if name == "numpy":
            self.numpy_done = True
        # (zkalloc_np's own exec_module has just returned when name is zkalloc_np: it is complete)
        if self.fired or not self.numpy_done or (name == "numpy" and _initializing("zkalloc_np")):
            return
        self.fired = True
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        _install()


def arm() -> None:
    """Install zkalloc as soon as numpy is imported (at once if it is already)."""
    if "numpy" in sys.modules:
        _install()
    elif not any(type(f).__name__ == NumpyWatcher.__name__ for f in sys.meta_path):
        sys.meta_path.insert(0, NumpyWatcher())
