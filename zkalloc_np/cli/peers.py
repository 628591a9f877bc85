"""The allocators a user would try instead of zkalloc, and how to put each
in place in a child process: glibc told to keep memory (environment
variables), and jemalloc, mimalloc and tcmalloc loaded with LD_PRELOAD.

Used by ``python -m zkalloc_np compare`` and by the benchmark suite
(bench/allocators.py), so both find the same libraries the same way.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import sanitizer

#: Where system allocators live when ldconfig does not list them.
LIBRARY_DIRS: tuple[str, ...] = (
    "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib/aarch64-linux-gnu",
    "/usr/lib64", "/usr/lib", "/usr/local/lib", "/opt/homebrew/lib",
)
HUGE = "68719476736"   # 64 GiB: glibc never trims its heap below this


@dataclass(frozen=True)
class Peer:
    """One alternative allocator: its environment, or the library to preload."""

    name: str
    description: str
    env: dict[str, str] = field(default_factory=dict)
    libraries: tuple[str, ...] = ()     # LD_PRELOAD candidates (sonames), first found wins
    install_hint: str = ""              # how to get the library where it is missing


PEERS: dict[str, Peer] = {
    p.name: p
    for p in [
        Peer("glibc-tuned", "glibc told to keep memory: MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=64G",
             env={"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": HUGE}),
        Peer("jemalloc", "jemalloc by LD_PRELOAD", libraries=("libjemalloc.so.2", "libjemalloc.so"),
             install_hint="apt-get install libjemalloc2"),
        Peer("mimalloc", "mimalloc by LD_PRELOAD", libraries=("libmimalloc.so.2", "libmimalloc.so"),
             install_hint="apt-get install libmimalloc2.0"),
        Peer("tcmalloc", "tcmalloc (gperftools) by LD_PRELOAD",
             libraries=("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so"),
             install_hint="apt-get install libtcmalloc-minimal4"),
    ]
}


def ldconfig() -> dict[str, str]:
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


def find_library(sonames: tuple[str, ...], cache: dict[str, str] | None = None) -> str | None:
    """The path of the first of `sonames` that exists: ldconfig's cache, then LIBRARY_DIRS."""
    known = ldconfig() if cache is None else cache
    for soname in sonames:
        if soname in known and os.path.exists(known[soname]):
            return known[soname]
        for d in LIBRARY_DIRS:
            path = os.path.join(d, soname)
            if os.path.exists(path):
                return path
    return None


def environment(env: dict[str, str], libraries: tuple[str, ...], install_hint: str,
                cache: dict[str, str] | None = None, environ: Mapping[str, str] | None = None,
                ) -> tuple[dict[str, str] | None, str]:
    """The environment a child needs for an allocator given by `env` and
    `libraries` (LD_PRELOAD, the first found), or (None, why it is skipped:
    the missing library and the command that installs it, or, for a library
    that is there, a sanitizer runtime in the LD_PRELOAD of `environ`,
    default this process's, that would replace its malloc:
    sanitizer.preload_conflict).  The
    sanitizer runtime is added in front when the child starts
    (sanitizer.child_environment), not here."""
    out = dict(env)
    if libraries:
        path = find_library(libraries, cache)
        if path is None:
            return None, f"{libraries[0]} not found ({install_hint})"
        conflict = sanitizer.preload_conflict(environ)
        if conflict is not None:
            return None, conflict
        out["LD_PRELOAD"] = path
    return out, ""


def environments(specs: Mapping[str, Any], cache: dict[str, str] | None = None,
                 environ: Mapping[str, str] | None = None,
                 ) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """For each name -> spec (anything with ``env``, ``libraries`` and
    ``install_hint``): the environment its child needs, or, in the second
    dict, why it is skipped (`environment`, `environ` as there).  ldconfig is asked once, and only
    when some spec preloads a library."""
    if cache is None:
        cache = ldconfig() if any(spec.libraries for spec in specs.values()) else {}
    envs: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    for name, spec in specs.items():
        env, why = environment(spec.env, spec.libraries, spec.install_hint, cache, environ)
        if env is None:
            skipped[name] = why
        else:
            envs[name] = env
    return envs, skipped


def preloaded(path: str) -> bool:
    """Whether the shared library at `path` is mapped into this process."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/maps") as f:
            return any(real in line or path in line for line in f)
    except OSError:
        return False
