"""What the machine says about itself: transparent huge pages, memlock, RSS."""
from __future__ import annotations

import os
import platform
import resource
from pathlib import Path
from typing import Any

_THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")


def thp_mode(name: str = "enabled") -> str:
    """The selected value of a THP sysfs file ('always', 'madvise', 'never'),
    or 'unavailable' where the kernel has no THP."""
    try:
        text = (_THP_DIR / name).read_text()
    except OSError:
        return "unavailable"
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return text.strip() or "unavailable"


def thp_possible() -> bool:
    """Whether MADV_HUGEPAGE can give huge pages on this kernel."""
    return thp_mode() in ("always", "madvise")


def memlock_limit() -> tuple[int, int]:
    """RLIMIT_MEMLOCK (soft, hard) in bytes; resource.RLIM_INFINITY for unlimited."""
    return resource.getrlimit(resource.RLIMIT_MEMLOCK)


def rss_bytes() -> int:
    """This process's resident memory now (from /proc/self/statm), 0 if unreadable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


CAP_IPC_LOCK = 14


def memlock_exempt() -> bool:
    """Whether this process may lock memory beyond RLIMIT_MEMLOCK: it has
    CAP_IPC_LOCK in its effective set (root has it unless dropped)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def machine() -> dict[str, Any]:
    """What a measurement ran on: CPU model, cores, memory, kernel, THP mode,
    Python and numpy versions."""
    import numpy as np
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                            "thp_enabled": thp_mode("enabled"), "thp_defrag": thp_mode("defrag"),
                            "python": platform.python_version(), "numpy": np.__version__}
    try:
        info["mem_total_bytes"] = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        pass
    return info


def describe(info: dict[str, Any]) -> str:
    """One line naming the machine of `info` (from machine())."""
    mem = f", {info['mem_total_bytes'] / 2**30:.0f} GiB" if info.get("mem_total_bytes") else ""
    return (f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores{mem}, kernel {info.get('kernel', '?')}, "
            f"THP {info.get('thp_enabled', '?')}, Python {info.get('python', '?')}, numpy {info.get('numpy', '?')}")
