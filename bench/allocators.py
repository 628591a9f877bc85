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
def _process_wide() -> Iterator[None]:
    import zkalloc_np as zk
    zk.install()
    try:
        yield
    finally:
        zk.uninstall()


def activated(name: str) -> contextlib.AbstractContextManager[None]:
    """Inside the worker: the context that puts allocator `name` in place
    (numpy default and the ideal need none)."""
    if name == "zkalloc-global":
        return _process_wide()
    if name.startswith("zkalloc"):
        import zkalloc_np as zk
        return zk.installed()
    return contextlib.nullcontext()
