"""The container's memory limit, for the default cache cap.

The cap's default was min(RAM/8, 1 GiB), from the host's RAM: in a
container limited to 2 GiB the cache could hold half of it.  Now the default
is min(RAM/8, limit/8, 1 GiB), where the limit is the tightest of:

- cgroup v2: ``memory.max`` and ``memory.high`` of this process's cgroup and
  of every ancestor (``max`` means none);
- cgroup v1: ``memory.limit_in_bytes`` of the memory controller's cgroup (a
  value near 2^63 means none).

This process's cgroups come from ``/proc/self/cgroup``.  Every path is a
parameter, so tests can point the parser at a tree of their own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

GiB = 1 << 30
#: v1 writes "unlimited" as the largest page-aligned value below 2^63.
_V1_UNLIMITED = 1 << 62


@dataclass(frozen=True)
class MemoryLimit:
    """What was found: the limit in bytes (None: no limit), the file it came
    from, and problems met on the way (unreadable or garbage files)."""

    bytes: int | None
    source: str
    problems: tuple[str, ...] = field(default=())


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None, list[str]]:
    """(v2 path, v1 memory-controller path) from /proc/self/cgroup."""
    v2 = v1 = None
    problems: list[str] = []
    try:
        text = proc_cgroup.read_text()
    except OSError as exc:
        return None, None, [f"{proc_cgroup}: {exc.strerror}"]
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            if line.strip():
                problems.append(f"{proc_cgroup}: cannot read line {line!r}")
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1, problems


def _read_limit(path: Path, problems: list[str]) -> int | None:
    """A limit file's value in bytes; None for 'max' or when absent."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        problems.append(f"{path}: {exc.strerror}")
        return None
    if text == "max":
        return None
    if not text.isdigit():
        problems.append(f"{path}: {text!r} is not a byte count; ignored")
        return None
    value = int(text)
    return None if value >= _V1_UNLIMITED else value


def _walk(mount: Path, cgroup: str, names: tuple[str, ...], problems: list[str]) -> list[tuple[int, str]]:
    """The limits in `names` of a cgroup and each of its ancestors."""
    found = []
    here = Path(cgroup)
    for directory in [here, *here.parents]:
        base = mount / str(directory).lstrip("/")
        for name in names:
            value = _read_limit(base / name, problems)
            if value is not None:
                found.append((value, str(base / name)))
    return found


def _tightest(candidates: list[tuple[int, str]]) -> tuple[int, str] | None:
    return min(candidates, default=None)


def memory_limit(proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup",
                 cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup") -> MemoryLimit:
    """The tightest memory limit of this process's cgroups (v2 and v1)."""
    root = Path(cgroup_root)
    v2, v1, problems = _cgroup_paths(Path(proc_cgroup))
    found: list[tuple[int, str]] = []
    # Every ancestor limits us too.  v2 is mounted at the root, or at
    # unified/ beside the v1 controllers (hybrid hosts).
    if v2 is not None:
        for mount in (root, root / "unified"):
            found += _walk(mount, v2, ("memory.max", "memory.high"), problems)
    if v1 is not None:
        found += _walk(root / "memory", v1, ("memory.limit_in_bytes",), problems)
    best = _tightest(found)
    if best is None:
        return MemoryLimit(None, "no cgroup memory limit", tuple(problems))
    return MemoryLimit(best[0], best[1], tuple(problems))


def default_cap(ram_bytes: int, limit: MemoryLimit) -> int:
    """min(RAM/8, limit/8, 1 GiB)."""
    candidates = [GiB]
    if ram_bytes > 0:
        candidates.append(ram_bytes // 8)
    if limit.bytes is not None:
        candidates.append(limit.bytes // 8)
    return max(min(candidates), 0)


def ram_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0
