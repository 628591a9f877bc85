"""Do no harm: under install() a program is never fatter than under numpy's
default.  A sparse big buffer costs the pages its user touched, whether it
is an np.empty or a bytes/bytearray through Python's raw domain, and a
sparse MSM window pattern keeps RSS at its touched pages.  Each case runs in
fresh processes, with and without install(), measuring RSS (VmRSS)."""
from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

import zkalloc_np as zk
from conftest import MiB, run_python, smaps_entry

BIG = (1 << 30) + 1          # 1 GiB + 1 byte: the class above 1 GiB has 256 MiB of slack
WRITTEN = 1 << 20

HEADER = """
    import ctypes, sys, numpy as np
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    if "{mode}" == "zk":
        import zkalloc_np as zk
        zk.install()
"""

BODIES = {
    # np.empty, 1 MiB written at the start: a preallocated maximum-size buffer.
    "np.empty": """
        before = rss()
        a = np.empty({big}, np.uint8)
        a[:{written}] = 1
        print(rss() - before)
    """,
    # bytearray(n) is zeroed by CPython (every page written) through a raw
    # realloc: the class slack must not be faulted in on top.
    "bytearray": """
        before = rss()
        a = bytearray({big})
        ctypes.memset((ctypes.c_char * {big}).from_buffer(a), 1, {written})   # no temporary
        print(rss() - before)
    """,
    # bytes(n): PyObject_Calloc, lazy zeros; 1 MiB read back.
    "bytes": """
        before = rss()
        a = bytes({big})
        assert a[:{written}].count(0) == {written}
        print(rss() - before)
    """,
    # What a C extension does: PyBytes_FromStringAndSize(NULL, n) (a raw
    # malloc), then fills what it produced, here 1 MiB.
    "bytes from C": """
        make = ctypes.pythonapi.PyBytes_FromStringAndSize
        make.restype, make.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_ssize_t]
        before = rss()
        a = make(None, {big})
        ctypes.memset(id(a) + bytes.__basicsize__ - 1, 1, {written})
        print(rss() - before)
    """,
}


def rss_growth(body: str, mode: str) -> int:
    code = textwrap.dedent(HEADER.format(mode=mode)) + textwrap.dedent(body.format(big=BIG, written=WRITTEN))
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.no_asan(reason="ASan's allocator serves the raw domain's and numpy's default blocks itself")
@pytest.mark.parametrize("case", sorted(BODIES))
def test_a_sparse_big_buffer_costs_no_more_rss_than_under_numpys_default(case):
    default = rss_growth(BODIES[case], "default")
    ours = rss_growth(BODIES[case], "zk")
    assert ours <= default + 4 * MiB, (case, ours >> 20, default >> 20)


MSM = """
    import numpy as np, zkalloc_np as zk
    zk.install()
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    PAGE, BUCKET = 4096, 96
    c, windows = {c}, {windows}
    before, worst, stretch = rss(), 0, 0
    for _ in range(8):
        live = [np.zeros((1 << c, 12), dtype=np.uint64) for _ in range(windows)]
        pages = set()
        for w in live:
            w[0] += 1
            w[-1] += 1
            start, end = w.ctypes.data, w.ctypes.data + w.nbytes
            for lo, hi in ((start, start + BUCKET), (end - BUCKET, end)):
                pages.update(range(lo // PAGE, (hi - 1) // PAGE + 1))
        worst = max(worst, rss() - before)
        stretch = max(stretch, len(pages) * PAGE)
        del live
    print(worst, stretch)
"""


@pytest.mark.no_asan(reason="RSS under ASan includes its shadow memory")
@pytest.mark.parametrize("c,windows", [(14, 19), (16, 16)])
def test_a_sparse_msm_window_pattern_keeps_rss_at_its_touched_pages(c, windows):
    """Every round the windows are zeroed anew (np.zeros) and touched at both
    ends: RSS stays within 5% of the touched pages plus one huge page per array."""
    out = run_python(MSM.format(c=c, windows=windows))
    assert out.returncode == 0, out.stderr
    worst, touched = map(int, out.stdout.split())
    assert worst <= touched * 1.05 + windows * 2 * MiB, (worst >> 10, touched >> 10)


def test_giving_slack_back_never_touches_a_neighbour(fresh):
    """A region handed out for less than its users wrote gives the rest back
    (slack_dropped_bytes), but never past its own end: pieces carved out of
    one larger idle region hold live arrays side by side."""
    live = []
    with zk.installed():
        for big in (48, 40):
            a = np.empty(big * MiB, np.uint8)
            a.fill(0xEE)
            del a
        for i, size in enumerate((3, 9, 5, 6, 2, 7, 4, 11, 3, 5)):
            a = np.empty(size * MiB - 4096 * i, np.uint8)
            a.fill(i + 1)
            live.append(a)
            for j, b in enumerate(live):
                assert (b == j + 1).all(), (i, j)
            if i % 3 == 2:
                live[0] = np.full(1, 1, np.uint8)        # the oldest freed: its region goes idle
    zk.check()


def _rounds(sizes: list[int], times: int) -> int:
    """Allocate, write and free each size in turn, `times` times; the slack bytes given back meanwhile."""
    before = zk.stats().slack_dropped_bytes
    for _ in range(times):
        for size in sizes:
            a = np.empty(size, np.uint8)
            a.fill(1)
            del a
    return zk.stats().slack_dropped_bytes - before


def test_slack_that_comes_back_every_round_stays_resident(fresh):
    """One region (the 4 MiB class) handed out for 4 MiB and 3.6 MiB in turn:
    its slack, dropped, is wanted back the next round, which the cache
    learns; then it stays (a drop is tried again only now and then), so
    the round no longer faults it back every time."""
    with zk.installed():
        learning = _rounds([4 * MiB, 36 * MiB // 10], 4)
        assert learning > 0                               # dropped at first
        assert _rounds([4 * MiB, 36 * MiB // 10], 30) <= 2 * (4 * MiB - 36 * MiB // 10)


def test_slack_that_stops_coming_back_goes(fresh):
    """After the cache learned that slack comes back, a program that stops
    growing back gets the slack dropped again (RSS follows), within
    RETURN_MAX (1,024) handouts."""
    with zk.installed():
        _rounds([4 * MiB, 36 * MiB // 10], 8)
        assert _rounds([36 * MiB // 10], 1100) > 0


def test_reserve_makes_room_under_the_cap_first(fresh):
    """reserve() faults regions in that join the idle ones under the cap: the
    idle regions it cannot use (128 KiB ones, apart: no gather, no carve)
    go first, so the cache never maps its cap twice over meanwhile."""
    before = zk.settings()["cache_bytes"]
    zk.configure(cache_bytes="64M")
    try:
        with zk.installed():
            arrays = [np.ones(128 * 1024, np.uint8) for _ in range(800)]
            del arrays[::2]                              # 50 MiB idle, no two side by side
            assert zk.stats().bytes_cached >= 48 * MiB
            live = zk.stats().bytes_in_use
            zk.reset_stats()                             # peaks restart from the gauges
            zk.reserve(8 * MiB, 100)                     # 8 fit under the cap
            assert zk.stats().peak_bytes_mapped <= live + 64 * MiB
            del arrays
    finally:
        zk.configure(cache_bytes=before)
    zk.check()


@pytest.mark.skipif(not os.path.exists("/sys/kernel/mm/transparent_hugepage"),
                    reason="no transparent huge pages in this kernel: no advice to read back")
@pytest.mark.parametrize("make,mib,huge", [
    (np.empty, 3, False),   # below numpy's own 4 MiB threshold
    (np.empty, 4, True),    # numpy advises from 4 MiB on: its caller writes it whole
    (np.zeros, 8, False),   # zeros are how sparse structures are made: RSS follows the touches
    (np.zeros, 16, True),
])
def test_a_class_not_measured_yet_gets_huge_pages_as_numpy_would(fresh, make, mib, huge):
    """hugepages=auto, a size class with no first-touch measurement yet: a
    fresh np.empty is advised huge from 4 MiB, an np.zeros from 16 MiB."""
    with zk.installed():
        a = make(mib * MiB, np.uint8)
        assert zk.owns(a) and zk.stats().misses == 1
        # VmFlags "hg": MADV_HUGEPAGE, whatever the machine's THP mode
        assert ("hg" in smaps_entry(a.ctypes.data)["VmFlags"].split()) is huge
