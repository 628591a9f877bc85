"""The allocators a pattern runs under.  Each runs in its own subprocess
(bench.worker), set up before the pattern starts."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Allocator:
    name: str
    description: str
    env: dict[str, str] = field(default_factory=dict)
    ideal: bool = False   # run the pattern's preallocated variant instead


ALLOCATORS = {
    a.name: a
    for a in [
        Allocator("default", "numpy's default handler (glibc malloc)"),
        Allocator("zkalloc", "zkalloc, scoped: with zkalloc.installed()"),
        Allocator("zkalloc-global", "zkalloc, process-wide: zkalloc.install()"),
        Allocator("zkalloc-lazy", "zkalloc scoped, np.zeros by MADV_DONTNEED (lazy_zero_bytes=64K)",
                  env={"ZKALLOC_LAZY_ZERO_BYTES": "64K"}),
        Allocator("zkalloc-nothp", "zkalloc scoped, no MADV_HUGEPAGE (hugepages=0)",
                  env={"ZKALLOC_HUGEPAGES": "0"}),
        Allocator("ideal", "one preallocated buffer reused (out=): the limit", ideal=True),
    ]
}


@contextlib.contextmanager
def activated(name: str) -> Iterator[None]:
    """Inside the worker: put allocator `name` in place for the block."""
    if name.startswith("zkalloc"):
        import zkalloc_np as zk
        if name == "zkalloc-global":
            zk.install()
            try:
                yield
            finally:
                zk.uninstall()
            return
        with zk.installed():
            yield
        return
    yield
