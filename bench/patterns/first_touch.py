"""first_touch: the cost of a miss.  Every round starts with an empty cache
(zkalloc's idle regions released), allocates `size` bytes and fills them, so
every page faults.  Decides the hugepages default: MADV_HUGEPAGE makes each
fault map (and zero) 2 MiB at once.  The ideal is a resident buffer."""
from __future__ import annotations

import sys

import numpy as np

from ._pattern import Body, Pattern



def _release() -> None:
    if "zkalloc_np" in sys.modules:
        sys.modules["zkalloc_np"].release()


def prepare(size: int, ideal: bool) -> Body:
    """The body of one round (the release is timed too; it is cheap)."""
    if ideal:
        buffer = np.ones(size, dtype=np.uint8)
        return lambda: buffer.fill(1)

    def body() -> None:
        _release()
        a = np.empty(size, dtype=np.uint8)
        a.fill(1)
        del a
    return body


PATTERN = Pattern("first_touch", (32 << 20, 256 << 20), prepare, tags=frozenset({"ideal", "first-touch"}))
