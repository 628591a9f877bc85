"""What the machine says about itself: transparent huge pages, memlock."""
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
