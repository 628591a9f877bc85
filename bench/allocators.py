"""The allocators a pattern runs under.  Each runs in its own subprocess
(bench.worker), set up before the pattern starts: by environment variables
(LD_PRELOAD of a system allocator, glibc's malloc tunables, zkalloc
settings) and, inside the worker, by `activated(name)`."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any
from dataclasses import dataclass, field

from zkalloc_np.cli import peers as _peers

from .patterns._pattern import EXCLUSIVE, Pattern
from zkalloc_np.cli.peers import HUGE, LIBRARY_DIRS, PEERS as _PEER_SPECS, find_library, preloaded  # noqa: F401


@dataclass(frozen=True)
class Allocator:
    """One allocator: how to put it in place, and where it runs by default."""

    name: str
    description: str
    env: dict[str, str] = field(default_factory=dict)
    ideal: bool = False                 # run the pattern's preallocated variant instead
    libraries: tuple[str, ...] = ()     # LD_PRELOAD candidates (sonames), first found wins
    install_hint: str = ""              # how to get the library where it is missing
    runs_on: frozenset[str] = frozenset()   # a variant: runs by default on the patterns with one of these tags


ALLOCATORS: dict[str, Allocator] = {
    a.name: a
    for a in [
        Allocator("default", "numpy's default handler (glibc malloc)"),
        *(Allocator(p.name, p.description, env=p.env, libraries=p.libraries, install_hint=p.install_hint)
          for p in _PEER_SPECS.values()),
        Allocator("zkalloc", "zkalloc, scoped: with zkalloc.installed()"),
        Allocator("zkalloc-global", "zkalloc, process-wide: zkalloc.install()"),
        Allocator("zkalloc-global-leave", "zkalloc, process-wide, glibc left alone (libc=leave)",
                  env={"ZKALLOC_LIBC": "leave"}, runs_on=frozenset({"libc"})),
        Allocator("zkalloc-lazy", "zkalloc scoped, np.zeros by MADV_DONTNEED (lazy_zero_bytes=64K)",
                  env={"ZKALLOC_LAZY_ZERO_BYTES": "64K"}, runs_on=frozenset({"zeros"})),
        Allocator("zkalloc-lazy-nothp", "zkalloc scoped, lazy np.zeros and no MADV_HUGEPAGE (4 KiB refaults)",
                  env={"ZKALLOC_LAZY_ZERO_BYTES": "64K", "ZKALLOC_HUGEPAGES": "0"}, runs_on=frozenset({"zeros"})),
        Allocator("zkalloc-phase", "zkalloc scoped, every round inside with zkalloc.phase()",
                  runs_on=frozenset({"phase", "phase-exit"})),
        Allocator("zkalloc-phase-track", "zkalloc scoped, every round inside zkalloc.phase(track=True): "
                  "allocation sites recorded (and tracemalloc started, for escapes)", runs_on=frozenset({"phase"})),
        Allocator("zkalloc-phase-tracemalloc", "zkalloc scoped, every round inside zkalloc.phase(), "
                  "with tracemalloc running (16 frames): tracemalloc's cost alone", runs_on=frozenset({"phase"})),
        Allocator("zkalloc-nothp", "zkalloc scoped, no MADV_HUGEPAGE (hugepages=0)",
                  env={"ZKALLOC_HUGEPAGES": "0"}, runs_on=frozenset({"first-touch"})),
        Allocator("ideal", "the pattern written with preallocated buffers (out=): the limit", ideal=True),
    ]
}

#: The allocators compared in every ratio column, and the peers among them.
PEERS = ("glibc-tuned", "jemalloc", "mimalloc", "tcmalloc")


def resolve(names: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """For each allocator name: the environment its worker needs, or why it is
    skipped (a missing library, with the install hint).  Returns (envs, skipped)."""
    return _peers.environments({n: ALLOCATORS[n] for n in names})


def runs_by_default(name: str, pattern: Pattern) -> bool:
    """Whether allocator `name` runs on `pattern` when --allocators is not given:
    a variant on the patterns carrying one of its tags, the others on every
    pattern not tagged for one allocator alone (EXCLUSIVE); the ideal only
    where the pattern has an ideal form."""
    spec = ALLOCATORS[name]
    if spec.ideal and not pattern.has_ideal:
        return False
    if spec.runs_on:
        return bool(spec.runs_on & pattern.tags)
    return not pattern.tags & EXCLUSIVE


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
    return _scoped if name.startswith("zkalloc") and not name.startswith("zkalloc-global") else None


def round_context(name: str) -> Callable[[], contextlib.AbstractContextManager[Any]] | None:
    """What each timed round enters under allocator `name`: zkalloc-phase runs
    every round as one ``zkalloc.phase()``; the others need nothing."""
    if not name.startswith("zkalloc-phase"):
        return None
    import zkalloc_np as zk
    track = name == "zkalloc-phase-track"
    return lambda: zk.phase("bench-round", track=track)


def activated(name: str) -> contextlib.AbstractContextManager[None]:
    """Inside the worker: the context that puts allocator `name` in place
    (numpy default, the LD_PRELOADed ones and the ideal need none)."""
    if name in ("zkalloc-global", "zkalloc-global-leave"):
        return _process_wide()
    if name == "zkalloc-phase-tracemalloc":
        return _with_tracemalloc()
    if name.startswith("zkalloc"):
        return _scoped()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _with_tracemalloc() -> Iterator[None]:
    """zkalloc scoped with tracemalloc running, as phase(track=True) starts it."""
    import tracemalloc
    tracemalloc.start(16)
    try:
        with _scoped():
            yield
    finally:
        tracemalloc.stop()
