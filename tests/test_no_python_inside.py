"""No Python runs inside an allocation (issue 30): tracked requests record
their site in C (cython/zkpy/zk_py.c reads the thread's frames), and the raw
domain's phase comes from the calling context, not from the thread.

Each reproducer of a crash or hang runs in its own interpreter with a
timeout, so a hang fails the test instead of blocking the suite.  Before
the fix: the 2,000-site program hung at its 1,366th site, the finalizer
program died in dictresize, two threads growing one set corrupted the heap,
signal-handler exceptions were lost, a subinterpreter deadlocked in
PyGILState_Ensure, and an asyncio task outside a budgeted phase got a
MemoryError for another task's budget."""
from __future__ import annotations

import asyncio
import ctypes
import gc
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

import zkalloc_np as zk
from zkalloc_np import _core, _peak
from conftest import ASAN_SLOWDOWN, UNDER_ASAN, MiB, run_python

TIMEOUT = 120 * (ASAN_SLOWDOWN if UNDER_ASAN else 1)


def run_peak(tmp_path, program: str, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """`python -m zkalloc_np run --peak program.py args...` (a hang raises TimeoutExpired)."""
    script = tmp_path / "program.py"
    script.write_text(program)
    return subprocess.run([sys.executable, "-m", "zkalloc_np", "run", "--peak", str(script), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


# ---- the reproducers of the issue ------------------------------------------------

def test_two_thousand_sites_under_run_peak(tmp_path):
    """The site table grows past its first sizes (it hung at the 1,366th)."""
    lines = ["import numpy as np", "kept = []"] + ["kept.append(np.empty(70000, np.uint8))"] * 2000
    lines.append("print('sites done', len(kept))")
    done = run_peak(tmp_path, "\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sites done 2000" in done.stdout
    assert "what made the peak (run --peak)" in done.stderr
    assert "other site(s)" in done.stderr   # 2,000 sites, 8 shown


FINALIZER = """
import gc, itertools
seq = itertools.count(); d = {}
class Registry:
    def __del__(self): d[("gone", next(seq))] = 1
gc.set_threshold(1, 10**6, 10**6)
for i in range(300_000):
    r = Registry(); r.me = r; del r
    d[i] = i
print("finalizers done", len(d) >= 300_000)
"""


def test_finalizer_resizing_a_dict_under_run_peak(tmp_path):
    """The garbage collector no longer runs inside a dict's resize (SIGSEGV in dictresize)."""
    done = run_peak(tmp_path, FINALIZER)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finalizers done True" in done.stdout


def test_finalizer_resizing_a_dict_in_a_tracked_phase():
    body = "\n".join("    " + line for line in FINALIZER.strip().splitlines())
    result = run_python("import zkalloc_np as zk\nzk.install()\nwith zk.phase('p', track=True) as ph:\n"
                        + body + "\nprint('arrays', ph.stats.arrays > 0)\n", timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finalizers done True" in result.stdout and "arrays True" in result.stdout


def test_two_threads_growing_one_set_with_tracking_on(tmp_path):
    """Another thread can no longer take the GIL in the middle of a set's resize (heap corruption)."""
    done = run_peak(tmp_path, """
import sys, threading, time
sys.setswitchinterval(1e-6)
rounds = 0
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    shared = set()
    def add(start):
        for i in range(start, start + 40_000):
            shared.add(i)
    threads = [threading.Thread(target=add, args=(k * 40_000,)) for k in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert len(shared) == 80_000, len(shared)
    rounds += 1
print("rounds", rounds)
""")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rounds" in done.stdout


def test_no_signal_handler_exception_is_lost_with_tracking_on(tmp_path):
    """A handler's exception is raised in the program, never inside (and dropped by) the allocator."""
    done = run_peak(tmp_path, """
import signal, time
class Tick(Exception):
    pass
armed = False
raised = caught = lost = 0
def handler(signum, frame):
    global armed, raised
    if armed:
        armed = False
        raised += 1
        raise Tick
signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
deadline = time.monotonic() + 3
while time.monotonic() < deadline and raised < 400:
    try:
        armed = True
        while True:
            b = bytes(1 << 20)                       # a tracked raw-domain request
            d = {i: i for i in range(5000)}          # dict tables from the raw domain
            if not armed:                            # the handler ran and its Tick vanished
                lost += 1
                break
    except Tick:
        caught += 1
signal.setitimer(signal.ITIMER_REAL, 0)
print("raised", raised, "caught", caught, "lost", lost)
""")
    assert done.returncode == 0, done.stderr[-3000:]
    words = done.stdout.split()
    raised, caught, lost = int(words[1]), int(words[3]), int(words[5])
    assert raised >= 20, done.stdout
    assert lost == 0 and caught == raised, done.stdout


def _subinterpreters_module() -> str | None:
    for name in ("_interpreters", "_xxsubinterpreters"):
        try:
            __import__(name)
            return name
        except ImportError:
            continue
    return None


SUBINTERPRETERS = _subinterpreters_module()


@pytest.mark.skipif(SUBINTERPRETERS is None,
                    reason=f"Python {sys.version_info[0]}.{sys.version_info[1]} has no subinterpreter module "
                           "(_interpreters or _xxsubinterpreters)")
def test_a_subinterpreter_allocating_with_tracking_on(tmp_path):
    """Its requests get site 0 and go untagged; no PyGILState_Ensure (it deadlocked)."""
    done = run_peak(tmp_path, f"""
import {SUBINTERPRETERS} as interpreters
import numpy as np
kept = np.ones(1 << 20)
iid = interpreters.create()
interpreters.run_string(iid, "import os\\nblocks = [bytes(4 << 20) for _ in range(8)]\\n"
                              "d = {{i: i for i in range(100000)}}\\nos.write(1, b'allocated in the subinterpreter\\\\n')")
interpreters.destroy(iid)
print("subinterpreter done")
""", timeout=60 * (ASAN_SLOWDOWN if UNDER_ASAN else 1))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "allocated in the subinterpreter\nsubinterpreter done" in done.stdout


# ---- the raw domain follows the context ---------------------------------------------

def test_an_asyncio_task_outside_a_budgeted_phase_is_not_held_to_its_budget(fresh):
    zk.install()
    phases: list[zk.Phase] = []

    async def budgeted() -> None:
        with zk.phase("budgeted", budget="1M") as ph:
            phases.append(ph)
            await asyncio.sleep(0.2)   # open while the other task allocates

    async def outside() -> int:
        await asyncio.sleep(0.02)
        block = bytes(2 << 20)          # MemoryError when it was tagged with the other task's phase
        return len(block)

    async def both() -> list:
        return await asyncio.gather(budgeted(), outside())

    _, got = asyncio.run(both())
    assert got == 2 << 20
    assert phases[0].stats.budget_refusals == 0 and phases[0].stats.arrays == 0


def test_a_phase_tags_the_raw_blocks_of_the_task_that_entered_it(fresh):
    zk.install()
    seen: dict[str, bool] = {}

    async def make() -> bytes:
        return bytes(2 << 20)

    async def inside(entered: asyncio.Event, allocated: asyncio.Event, phases: list) -> None:
        with zk.phase("task") as ph:
            phases.append(ph)
            block = bytes(2 << 20)
            entered.set()
            await allocated.wait()
            later = bytes(2 << 20)      # after the other task allocated on this thread
            seen["inside"] = ph.owns(block) and ph.owns(later)
            # a task started in the block copies the context, phase included
            seen["child"] = ph.owns(await asyncio.create_task(make()))

    async def elsewhere(entered: asyncio.Event, allocated: asyncio.Event, phases: list) -> None:
        await entered.wait()
        block = bytes(2 << 20)
        seen["elsewhere"] = phases[0].owns(block) or not zk.owns(block)
        allocated.set()

    async def both() -> None:
        entered, allocated, phases = asyncio.Event(), asyncio.Event(), []
        await asyncio.gather(inside(entered, allocated, phases), elsewhere(entered, allocated, phases))

    asyncio.run(both())
    assert seen == {"inside": True, "child": True, "elsewhere": False}


def test_a_phase_tags_the_raw_blocks_of_its_thread_only(fresh):
    zk.install()
    results: dict[str, bool] = {}
    entered, allocated = threading.Event(), threading.Event()

    def in_phase() -> None:
        with zk.phase("thread") as ph:
            block = bytes(2 << 20)
            entered.set()
            allocated.wait(10)
            results["own"] = ph.owns(block)
            results["main's"] = ph.owns(main_block[0])

    main_block: list[bytes] = []
    t = threading.Thread(target=in_phase)
    t.start()
    entered.wait(10)
    main_block.append(bytes(2 << 20))   # this thread is in no phase
    allocated.set()
    t.join()
    assert results == {"own": True, "main's": False}
    assert zk.owns(main_block[0])


def test_a_phase_ended_in_another_context_tags_nothing_after(fresh):
    """A context copied inside the block goes on after the phase ends: its raw
    requests are plain cache memory then, counted nowhere in the phase."""
    import contextvars
    zk.install()
    with zk.phase("p") as ph:
        copied = contextvars.copy_context()
    before = ph.stats.arrays
    block = copied.run(lambda: bytes(2 << 20))
    assert zk.owns(block) and not ph.owns(block)
    assert ph.stats.arrays == before
    del ph
    gc.collect()
    del block
    zk.check()


# ---- sites ---------------------------------------------------------------------------

nogil = ctypes.CDLL(None)   # calls through a CDLL handle release the GIL
nogil.PyMem_RawMalloc.restype = ctypes.c_void_p
nogil.PyMem_RawMalloc.argtypes = [ctypes.c_size_t]
nogil.PyMem_RawFree.argtypes = [ctypes.c_void_p]
nogil.PyMem_RawFree.restype = None


def test_a_request_without_the_gil_has_an_unknown_site_and_the_report_counts_it(fresh):
    zk.install()
    _core.track_process(True)
    try:
        with_gil = np.ones(4 * MiB // 8)                       # site: with the GIL
        address = nogil.PyMem_RawMalloc(8 * MiB)
        assert zk._core.usable_bytes(address) > 0
        report = _peak.report(_core.process_peak(), None, 0)
    finally:
        _core.track_process(False)
    nogil.PyMem_RawFree(address)
    del with_gil
    sites = {s.site: s.bytes for s in report.by_site}
    assert sites[f"{__file__}:{_line_of('# site: with the GIL')}"] == 4 * MiB
    assert report.unknown_site_bytes >= 8 * MiB
    assert sites["(unknown)"] == report.unknown_site_bytes
    assert "unknown site" in str(report)


def test_a_python_whose_frames_are_not_read_says_so(monkeypatch):
    entries = [(0, 4 * MiB, 0, _core.class_of(4 * MiB))]
    info = {"live": 4 * MiB, "unlisted_bytes": 0, "snapshots": 1, "snapshot_ns": 0}
    monkeypatch.setattr(_core, "SITES_READ_FRAMES", False)
    report = _peak.report((info, entries), None, 0)
    assert report.unknown_site_bytes == 4 * MiB
    assert "no site is recorded on this Python" in str(report)


def _line_of(marker: str) -> int:
    with open(__file__) as f:
        return next(n for n, line in enumerate(f, 1) if marker in line and "_line_of(" not in line)


def test_site_names_are_read_outside_the_allocator(fresh):
    """site_where() turns a site number into (file, line); 0 and numbers never handed out are None."""
    zk.install()
    with zk.phase(track=True) as ph:
        kept = np.ones(2 * MiB // 8)                                # site: named
    (_, entries) = _core.scope_peak(ph._capsule)
    site = next(s for _, _, s, _ in entries if s)
    assert _core.site_where(site) == (__file__, _line_of("# site: named"))
    assert _core.site_where(0) is None and _core.site_where(2**32 - 1) is None
    del kept


def test_only_zk_py_includes_python_h():
    """The C core stays free of Python: only the probe (cython/zkpy/zk_py.c) reads the interpreter."""
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "cython"
    if not root.is_dir():
        pytest.skip("the C sources are not beside the tests")
    include = re.compile(r'^\s*#\s*include\s*[<"]Python\.h[>"]', re.M)
    including = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.[ch]")
                       if p.name != "_core.c" and include.search(p.read_text()))
    assert including == ["zkpy/zk_py.c"]
