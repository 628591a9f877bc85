"""idle: a prover service between proofs.  One round is a proof round (the
ntt_prover round at 2^20 points); after the timed rounds the worker idles
for `size` seconds, then records the process's RSS during the idle period
(``idle_rss_bytes``: current RSS, not the high-water mark) and times one
more round (``after_idle_s``), the first proof after the pause.

zkalloc runs it with ``decay_ms=1000`` (``ZKALLOC_SETTINGS``), so the 3 s
idle period covers softening (after 1 s) and giving back (after 2 s); with
the default decay_ms of 10 s the same happens after 20 s.
"""
from __future__ import annotations

import time
from typing import Any

from . import ntt_prover
from ._pattern import Body, Pattern

LOG_N = 20


def prepare(size: int, ideal: bool) -> Body:
    """The body of one round: one ntt_prover round."""
    return ntt_prover.prepare(LOG_N if size else 10, ideal)


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        import os
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def after_rounds(size: int, body: Body) -> dict[str, Any]:
    """Idle for `size` seconds, then RSS now and the time of one round."""
    time.sleep(size)
    rss = current_rss()
    t0 = time.perf_counter()
    body()
    return {"idle_rss_bytes": rss, "after_idle_s": time.perf_counter() - t0}


ZKALLOC_SETTINGS = {"decay_ms": 1000}
PATTERN = Pattern("idle", (3,), prepare, unit="s idle", test_size=0, quick_size=1,
                  zkalloc_settings=ZKALLOC_SETTINGS, after_rounds=after_rounds)
