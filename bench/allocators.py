"""The allocators a pattern runs under.  Each runs in its own subprocess
(bench.worker), set up before the pattern starts: by environment variables
(LD_PRELOAD of a system allocator, glibc's malloc tunables, zkalloc
settings) and, inside the worker, by `activated(name)`."""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any
from dataclasses import dataclass, field

#: Where system allocators live when ldconfig does not list them.
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                "/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib", "/opt/homebrew/lib")
HUGE = "68719476736"   # 64 GiB: glibc never trims its heap below this


@dataclass(frozen=True)
class Allocator:
    """One allocator: how to put it in place, and where it runs by default."""

    name: str
    description: str
    env: dict[str, str] = field(default_factory=dict)
    ideal: bool = False                 # run the pattern's preallocated variant instead
    libraries: tuple[str, ...] = ()     # LD_PRELOAD candidates (sonames), first found wins
    install_hint: str = ""              # how to get the library where it is missing
    default_patterns: str = ""          # "" = every pattern; "zeros" / "first_touch" / "phase": a variant


ALLOCATORS: dict[str, Allocator] = {
    a.name: a
    for a in [
        Allocator("default", "numpy's default handler (glibc malloc)"),
        Allocator("glibc-tuned", "glibc told to keep memory: MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=64G",
                  env={"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": HUGE}),
        Allocator("jemalloc", "jemalloc by LD_PRELOAD", libraries=("libjemalloc.so.2", "libjemalloc.so"),
                  install_hint="apt-get install libjemalloc2"),
        Allocator("mimalloc", "mimalloc by LD_PRELOAD", libraries=("libmimalloc.so.2", "libmimalloc.so"),
                  install_hint="apt-get install libmimalloc2.0"),
        Allocator("tcmalloc", "tcmalloc (gperftools) by LD_PRELOAD",
                  libraries=("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so"),
                  install_hint="apt-get install libtcmalloc-minimal4"),
        Allocator("zkalloc", "zkalloc, scoped: with zkalloc.installed()"),
        Allocator("zkalloc-global", "zkalloc, process-wide: zkalloc.install()"),
        Allocator("zkalloc-lazy", "zkalloc scoped, np.zeros by MADV_DONTNEED (lazy_zero_bytes=64K)",
                  env={"ZKALLOC_LAZY_ZERO_BYTES": "64K"}, default_patterns="zeros"),
        Allocator("zkalloc-lazy-nothp", "zkalloc scoped, lazy np.zeros and no MADV_HUGEPAGE (4 KiB refaults)",
                  env={"ZKALLOC_LAZY_ZERO_BYTES": "64K", "ZKALLOC_HUGEPAGES": "0"}, default_patterns="zeros"),
        Allocator("zkalloc-phase", "zkalloc scoped, every round inside with zkalloc.phase()",
                  default_patterns="phase"),
        Allocator("zkalloc-nothp", "zkalloc scoped, no MADV_HUGEPAGE (hugepages=0)",
                  env={"ZKALLOC_HUGEPAGES": "0"}, default_patterns="first_touch"),
        Allocator("ideal", "the pattern written with preallocated buffers (out=): the limit", ideal=True),
    ]
}

#: The allocators compared in every ratio column, and the peers among them.
PEERS = ("glibc-tuned", "jemalloc", "mimalloc", "tcmalloc")


def _ldconfig() -> dict[str, str]:
    """soname -> path, from `ldconfig -p` (empty where it is unavailable)."""
    for exe in ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        try:
            out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        found: dict[str, str] = {}
        for line in out.splitlines():
            if "=>" in line:
                name, path = line.split("=>", 1)
                found.setdefault(name.split()[0], path.strip())
        return found
    return {}


def find_library(sonames: tuple[str, ...], ldconfig: dict[str, str] | None = None) -> str | None:
    """The path of the first of `sonames` that exists: ldconfig's cache, then LIBRARY_DIRS."""
    cache = _ldconfig() if ldconfig is None else ldconfig
    for soname in sonames:
        if soname in cache and os.path.exists(cache[soname]):
            return cache[soname]
        for d in LIBRARY_DIRS:
            path = os.path.join(d, soname)
            if os.path.exists(path):
                return path
    return None


def resolve(names: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """For each allocator name: the environment its worker needs, or why it is
    skipped (a missing library, with the install hint).  Returns (envs, skipped)."""
    envs: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    cache = _ldconfig() if any(ALLOCATORS[n].libraries for n in names) else {}
    for name in names:
        alloc = ALLOCATORS[name]
        env = dict(alloc.env)
        if alloc.libraries:
            path = find_library(alloc.libraries, cache)
            if path is None:
                skipped[name] = f"{alloc.libraries[0]} not found ({alloc.install_hint})"
                continue
            env["LD_PRELOAD"] = path
        envs[name] = env
    return envs, skipped


def runs_by_default(name: str, pattern: object) -> bool:
    """Whether allocator `name` runs on `pattern` when --allocators is not given."""
    only = getattr(pattern, "ONLY", None)
    if only is not None:
        return name in only
    scope = ALLOCATORS[name].default_patterns
    if scope == "zeros":
        return bool(getattr(pattern, "USES_ZEROS", False))
    if scope == "phase":
        return bool(getattr(pattern, "PHASE_ROUNDS", False))
    if scope:
        return getattr(pattern, "PATTERN", "") == scope
    return True


def preloaded(path: str) -> bool:
    """Whether the shared library at `path` is mapped into this process."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/maps") as f:
            return any(real in line or path in line for line in f)
    except OSError:
        return False


@contextlib.contextmanager
def _process_wide() -> Iterator[None]:
    import zkalloc_np as zk
    zk.install()
    try:
        yield
    finally:
        zk.uninstall()


def _scoped() -> contextlib.AbstractContextManager[None]:
    import zkalloc_np as zk
    return zk.installed()


def thread_entry(name: str) -> Callable[[], contextlib.AbstractContextManager[None]] | None:
    """What a thread the pattern starts must enter to run under `name`:
    the scoped zkalloc does not reach new threads by itself."""
    return _scoped if name.startswith("zkalloc") and name != "zkalloc-global" else None


def round_context(name: str) -> Callable[[], contextlib.AbstractContextManager[Any]] | None:
    """What each timed round enters under allocator `name`: zkalloc-phase runs
    every round as one ``zkalloc.phase()``; the others need nothing."""
    if name != "zkalloc-phase":
        return None
    import zkalloc_np as zk
    return lambda: zk.phase("bench-round")


def activated(name: str) -> contextlib.AbstractContextManager[None]:
    """Inside the worker: the context that puts allocator `name` in place
    (numpy default, the LD_PRELOADed ones and the ideal need none)."""
    if name == "zkalloc-global":
        return _process_wide()
    if name.startswith("zkalloc"):
        return _scoped()
    return contextlib.nullcontext()
