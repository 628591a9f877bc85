"""The background worker (background=1): the next region of a growing size
class is faulted ahead on another core, never handed out half done, and
fork-safe."""
from __future__ import annotations

import time

import numpy as np

import zkalloc_np as zk
from conftest import run_python, wait_for

MiB = 1 << 20


def grow(count: int, nbytes: int, zeros: bool = False, wait: bool = False) -> list[np.ndarray]:
    """A working set that grows: arrays kept alive, each written (or checked
    to be zero).  wait: before each array, give the worker (SCHED_IDLE: it
    only runs on a spare core, and this machine may have none) time to
    fault the next region ahead."""
    live = []
    for i in range(count):
        if wait and i:
            wait_for(lambda: zk.stats().prefault_idle_bytes >= nbytes)
        if zeros:
            a = np.zeros(nbytes, np.uint8)
            assert not a.any()
        else:
            a = np.empty(nbytes, np.uint8)
        a.fill(i % 250 + 1)
        live.append(a)
        time.sleep(0.003)
    return live


def test_a_growing_class_is_faulted_ahead_and_served_from_it(fresh):
    zk.configure(background=1)
    with zk.installed():
        live = grow(30, 4 * MiB, wait=True)
    s = zk.stats()
    # How many hits depends on a spare core (SCHED_IDLE), which a loaded
    # machine may not have for seconds: at least one, and exact accounting.
    assert s.prefault_hits >= 1 and s.prefaulted_bytes >= s.prefault_hits * 4 * MiB
    assert s.misses + s.hits == 30 and s.hits >= s.prefault_hits
    assert s.worker_cpu_ns > 0 and s.worker_running == 1
    assert all((a == i % 250 + 1).all() for i, a in enumerate(live))


def test_zeros_from_regions_faulted_ahead_are_zero(fresh):
    zk.configure(background=1)
    with zk.installed():
        live = grow(20, 3 * MiB, zeros=True, wait=True)
    assert zk.stats().prefault_hits > 0
    del live


def test_faulted_ahead_bytes_stay_within_the_budget_and_the_cap(fresh):
    zk.configure(background=1, cache_bytes="24M")
    with zk.installed():
        live = grow(40, 2 * MiB)
        s = zk.stats()
        assert s.prefault_idle_bytes <= max(64 * MiB, s.bytes_in_use // 8) + 2 * MiB
        assert s.bytes_cached <= 24 * MiB
    del live


def test_the_worker_turns_off_and_on_at_run_time(fresh):
    zk.configure(background=1)
    with zk.installed():
        live = grow(5, 4 * MiB)
        assert zk.stats().worker_running == 1
        zk.configure(background=0)
        assert wait_for(lambda: zk.stats().worker_running == 0)
        before = zk.stats().prefaulted_bytes
        live += grow(5, 4 * MiB)
        assert zk.stats().prefaulted_bytes == before      # off: nothing faulted ahead
        zk.configure(background=1)
        live += grow(5, 4 * MiB)
        assert zk.stats().worker_running == 1


def test_off_by_default_starts_no_worker(fresh):
    assert zk.settings()["background"] == 0
    with zk.installed():
        live = grow(10, 4 * MiB)
    assert zk.stats().prefaulted_bytes == 0
    del live


def test_fork_while_the_worker_runs():
    out = run_python("""
        import os, time, numpy as np, zkalloc_np as zk

        def quiesce():
            zk.configure(background=0)
            while zk.stats().worker_running:
                time.sleep(0.005)

        zk.configure(background=1)
        zk.install()
        live = []
        codes = []
        for i in range(12):
            live.append(np.ones(4 << 20, np.uint8))
            pid = os.fork()                          # while the worker faults the next one
            if pid == 0:
                ok = zk.stats().worker_running == 0
                zk.check()
                more = [np.ones(4 << 20, np.uint8) for _ in range(4)]   # a worker of its own
                ok = ok and all(m.sum() == 4 << 20 for m in more)
                del more
                quiesce()
                zk.check()
                os._exit(0 if ok else 3)
            codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        quiesce()
        zk.check()
        print(codes.count(0), len(codes))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["12", "12"]
