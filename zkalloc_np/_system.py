"""What the machine says about itself: transparent huge pages, memlock, RSS."""
from __future__ import annotations

import os
import resource
from pathlib import Path

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
