"""Sanitizer runtimes (ASan, UBSan, ...) in this process and in its children.

A build with ``ZKALLOC_SANITIZE=address,undefined`` (tools/sanitize.sh) only
loads when the sanitizer runtime comes first in ``LD_PRELOAD``.  Every place
that starts a child with its own ``LD_PRELOAD`` (``compare`` and the bench
putting a peer allocator in place, or stripping the parent's preload) builds
the child's environment with `child_environment`, which keeps the parent's
sanitizer runtimes first, so that the child can import the extension too.

`asan_active` says whether this process runs under AddressSanitizer, from the
runtime's own symbols rather than from an environment variable.
"""
from __future__ import annotations

import ctypes
import functools
import os
import re
from collections.abc import Iterable, Mapping

#: The file names of the sanitizer runtimes (gcc's and clang's), e.g.
#: libasan.so.8, libclang_rt.asan-x86_64.so, libubsan.so.1.
_RUNTIME = re.compile(r"^lib(?:clang_rt\.)?(?:a|ub|t|l|m|hwa)san[-._a-z0-9]*\.so(?:\.[0-9]+)*$")
#: What tools/sanitize.sh preloads with the runtime: libstdc++, so that ASan's
#: __cxa_throw interceptor finds its target when a C++ extension (matplotlib's
#: ft2font) throws ("CHECK failed: ... real___cxa_throw" otherwise).
_COMPANION = re.compile(r"^libstdc\+\+\.so(?:\.[0-9]+)*$")


def preload_entries(value: str | None) -> list[str]:
    """The entries of an ``LD_PRELOAD`` value (ld.so separates them by colons
    or spaces), in order, empty ones dropped."""
    return [e for e in re.split(r"[:\s]+", value or "") if e]


def is_runtime(entry: str) -> bool:
    """Whether an ``LD_PRELOAD`` entry is a sanitizer runtime."""
    return bool(_RUNTIME.match(os.path.basename(entry)))


def runtime_preloads(environ: Mapping[str, str] | None = None) -> list[str]:
    """The sanitizer runtimes in the ``LD_PRELOAD`` of `environ` (default:
    this process's environment), in their order, and, where there is one,
    the libstdc++ preloaded with it (_COMPANION)."""
    env = os.environ if environ is None else environ
    entries = preload_entries(env.get("LD_PRELOAD"))
    if not any(is_runtime(e) for e in entries):
        return []
    return [e for e in entries if is_runtime(e) or _COMPANION.match(os.path.basename(e))]


def own_preloads(environ: Mapping[str, str] | None = None) -> list[str]:
    """The entries of the ``LD_PRELOAD`` of `environ` (default: this
    process's) other than the sanitizer runtimes (`runtime_preloads`): what
    the process preloads for itself, e.g. a peer allocator."""
    env = os.environ if environ is None else environ
    runtimes = runtime_preloads(env)
    return [e for e in preload_entries(env.get("LD_PRELOAD")) if e not in runtimes]


def child_preload(preload: str | Iterable[str] | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The ``LD_PRELOAD`` for a child that should preload `preload` (a value
    or entries; None or empty: nothing of its own): the parent's sanitizer
    runtimes first, then the child's own entries (without repeating a
    runtime).  None when that is nothing at all."""
    own = preload_entries(preload) if preload is None or isinstance(preload, str) else list(preload)
    runtimes = runtime_preloads(environ)
    entries = runtimes + [e for e in own if e not in runtimes]
    return ":".join(entries) or None


def child_environment(extra: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None,
                      ) -> dict[str, str]:
    """The environment of a child: `environ` (default: this process's) with
    its ``LD_PRELOAD`` replaced by ``extra``'s (none when `extra` has none),
    `extra` added, and the parent's sanitizer runtimes kept first in
    ``LD_PRELOAD`` (`child_preload`)."""
    parent = os.environ if environ is None else environ
    extra = dict(extra or {})
    env = {k: v for k, v in parent.items() if k != "LD_PRELOAD"}
    preload = child_preload(extra.pop("LD_PRELOAD", None), parent)
    env.update(extra)
    if preload is not None:
        env["LD_PRELOAD"] = preload
    return env


def preload_conflict(environ: Mapping[str, str] | None = None) -> str | None:
    """Why a peer allocator preloaded by ``LD_PRELOAD`` cannot be measured
    beside the sanitizer runtimes of `environ` (default: this process's), or
    None where no runtime is preloaded.  The runtime comes first and its
    malloc interposes on the peer's, so the peer would never allocate."""
    runtimes = runtime_preloads(environ)
    if not runtimes:
        return None
    return (f"not measurable under the sanitizer runtime ({os.path.basename(runtimes[0])} comes first in "
            f"LD_PRELOAD and its malloc replaces the peer's)")


@functools.lru_cache(maxsize=1)
def asan_active() -> bool:
    """Whether AddressSanitizer's runtime is loaded in this process (its
    ``__asan_init`` is in the global symbol scope)."""
    try:
        return hasattr(ctypes.CDLL(None), "__asan_init")
    except OSError:
        return False
