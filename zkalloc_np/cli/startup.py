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
from types import ModuleType
from typing import Any

SWITCH = "ZKALLOC_SUBPROCESS"
#: The process the interpreter started in (a fork child has another pid).
STARTED_PID = os.getpid()


def _numpy_loaded() -> None:
    try:
        from zkalloc_np.cli import children
        children.start_from_environment()
    except Exception as exc:   # noqa: BLE001 - never break the program over its measurement
        print(f"zkalloc_np: {SWITCH} is set, but zkalloc could not be installed in this process: {exc}",
              file=sys.stderr)


class NumpyWatcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps numpy's own loader so that `_numpy_loaded`
    runs right after numpy's ``__init__`` completes, once."""

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if fullname != "numpy":
            return None
        sys.meta_path.remove(self)   # once; the finders below find numpy as they always do
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        for finder in sys.meta_path:
            if spec is not None:
                break
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            _numpy_loaded()

        loader.exec_module = exec_module
        return spec


def arm() -> None:
    """Install zkalloc as soon as numpy is imported (at once if it is already)."""
    if "numpy" in sys.modules:
        _numpy_loaded()
    elif not any(isinstance(f, NumpyWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, NumpyWatcher())

