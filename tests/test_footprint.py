"""Footprint over time: decay gives idle memory back when nothing wants it,
the default cap follows the container's memory limit, and stats() tells
what the cache costs in RSS."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

import zkalloc_np as zk
from zkalloc_np import _container
from conftest import run_python, wait_for

MiB = 1 << 20



# ---- decay, with its clock, CPU time and pressure reading injected ------------------
# No sleeps: each test sets what decay reads and runs its passes itself.

S = 1_000_000_000          # ns
START = 1_000 * S          # an injected clock far from 0


@pytest.fixture
def manual_decay(fresh):
    """decay_ms 1 s, decay reading an injected clock (START), CPU time (0) and
    no pressure; passes run only when the test calls decay_pass()."""
    zk.configure(decay_ms=1000)
    zk._core.decay_set_clock(START)
    zk._core.decay_set_cpu_ns(0)
    zk._core.decay_set_pressure(False)
    zk._core.decay_pass()                 # primes what decay has seen
    yield zk._core
    zk._core.decay_use_real()
    zk.release()
    zk.configure(decay_ms=10000)


class Program:
    """The injected clock and CPU time of a program that computes (busy) or
    waits (idle) for a while, with a decay pass every quarter second."""

    def __init__(self, core):
        self.core, self.now, self.cpu = core, START, 0

    def spend(self, seconds: float, busy: bool) -> None:
        for _ in range(round(seconds * 4)):
            self.now += S // 4
            self.cpu += S // 4 if busy else 0
            self.core.decay_set_clock(self.now)
            self.core.decay_set_cpu_ns(self.cpu)
            self.core.decay_pass()


def test_a_region_reused_every_round_stays_while_the_program_is_busy(manual_decay):
    program = Program(manual_decay)
    with zk.installed():
        for _ in range(5):                                # rounds of 3 s, decay_ms 1 s
            a = np.ones(MiB)                              # 8 MiB
            del a
            program.spend(3, busy=True)                   # computing, nothing allocated
    s = zk.stats()
    assert s.decayed_softened_bytes == 0 and s.decayed_released_bytes == 0
    assert s.hits == 4 and s.misses == 1
    assert s.bytes_cached == 8 * MiB


def test_an_idle_program_gives_its_cache_back_within_twice_decay_ms(manual_decay):
    program = Program(manual_decay)
    with zk.installed():
        arrays = [np.ones(MiB) for _ in range(4)]         # 8 MiB each
        del arrays
    program.spend(0.25, busy=True)                        # the frees' own pass: busy
    assert zk.stats().bytes_cached == 32 * MiB
    program.spend(1, busy=False)                          # idle for decay_ms: softened
    s = zk.stats()
    assert s.decayed_softened_bytes == 32 * MiB and s.bytes_cached == 32 * MiB
    program.spend(1, busy=False)                          # twice decay_ms: given back
    s = zk.stats()
    assert s.bytes_cached == 0 and s.decayed_released_bytes == 32 * MiB
    assert s.bytes_reserved == 0 and s.idle_resident_bytes == 0
    zk.check()                                            # and /proc/self/maps agrees


def test_waiting_without_cpu_counts_as_idle_but_computing_does_not(manual_decay):
    program = Program(manual_decay)
    with zk.installed():
        a = np.ones(MiB)
        del a
    program.spend(10, busy=True)                          # computing: kept, however long
    assert zk.stats().decayed_softened_bytes == 0
    program.spend(2.25, busy=False)
    assert zk.stats().bytes_cached == 0


def test_memory_pressure_gives_idle_regions_back_while_busy(manual_decay):
    program = Program(manual_decay)
    with zk.installed():
        a = np.ones(MiB)
        del a
        program.spend(0.5, busy=True)
        assert zk.stats().bytes_cached == 8 * MiB
        manual_decay.decay_set_pressure(True)
        program.spend(0.25, busy=True)                    # idle a pass interval: it goes
        s = zk.stats()
        assert s.bytes_cached == 0 and s.decayed_released_bytes == 8 * MiB
        assert s.decay_pressure_passes >= 1
        manual_decay.decay_set_pressure(False)
        b = np.ones(MiB)                                  # the cache serves again
        assert zk.stats().misses == 2
        del b
    zk.check()


# ---- the idle cache never holds the process above its high-water mark ------------
# The RSS is injected too: OTHER stands for the program's memory outside the cache.

OTHER = 100 * MiB


def test_a_working_set_reused_every_round_stays_while_the_rss_is_below_its_peak(manual_decay):
    """A prover repeating its proof: between proofs its RSS (working set idle)
    is what it was at the proof's peak, so nothing goes, however long."""
    program = Program(manual_decay)
    manual_decay.decay_set_rss(OTHER)
    with zk.installed():
        for _ in range(3):
            arrays = [np.ones(MiB) for _ in range(8)]      # 64 MiB in use, written
            manual_decay.decay_set_rss(OTHER + 64 * MiB)
            del arrays
            program.spend(5, busy=True)                   # the idle working set: same RSS
    s = zk.stats()
    assert s.decayed_released_bytes == 0 and s.decay_high_water_passes == 0
    assert s.hits == 16 and s.misses == 8 and s.bytes_cached == 64 * MiB


def test_a_burst_between_two_looks_counts_in_the_high_water_mark(manual_decay):
    """The arrays come and go between two passes: the mark still counts them
    (the peak of bytes in use since the last look), so their idle regions
    are not taken for memory the process never held."""
    program = Program(manual_decay)
    manual_decay.decay_set_rss(OTHER)
    program.spend(0.25, busy=True)
    with zk.installed():
        arrays = [np.ones(MiB) for _ in range(8)]
        del arrays
    manual_decay.decay_set_rss(OTHER + 64 * MiB)
    program.spend(5, busy=True)
    s = zk.stats()
    assert s.decayed_released_bytes == 0 and s.bytes_cached == 64 * MiB


def test_idle_regions_that_hold_the_rss_above_its_peak_go_oldest_first(manual_decay):
    """After a burst of arrays the program's other memory grows by 32 MiB:
    idle regions would hold the RSS 32 MiB above its high-water mark (plus
    1/32), so the oldest go until they no longer do, busy or not."""
    program = Program(manual_decay)
    manual_decay.decay_set_rss(OTHER)
    with zk.installed():
        arrays = [np.ones(MiB) for _ in range(8)]
        manual_decay.decay_set_rss(OTHER + 64 * MiB)
        program.spend(0.25, busy=True)                    # the mark: 164 MiB
        order = [a.ctypes.data for a in arrays]
        for i in range(8):                                # freed in order: the first is the oldest
            arrays[i] = None
            program.spend(0.25, busy=True)
        assert zk.stats().bytes_cached == 64 * MiB
        manual_decay.decay_set_rss(OTHER + 32 * MiB + 64 * MiB)
        program.spend(0.25, busy=True)
        s = zk.stats()
        # 196 MiB against at most 164 + 164/32 = 169.1: 26.9 MiB go, four whole regions
        assert s.decay_high_water_passes == 1
        assert s.decayed_released_bytes == 32 * MiB and s.bytes_cached == 32 * MiB
        assert s.decayed_softened_bytes == 0              # busy: nothing else decayed
        manual_decay.decay_set_rss(OTHER + 32 * MiB + 32 * MiB)
        program.spend(5, busy=True)                       # under the mark now: kept
        assert zk.stats().bytes_cached == 32 * MiB
        again = [np.ones(MiB) for _ in range(4)]          # the four kept are the newest
        assert sorted(a.ctypes.data for a in again) == sorted(order[4:])
        del again
    zk.check()


def test_decay_off_keeps_idle_memory(manual_decay):
    zk.configure(decay_ms=0)
    with zk.installed():
        a = np.ones(MiB)
    del a
    Program(manual_decay).spend(100, busy=False)
    assert zk.stats().bytes_cached == 8 * MiB


def test_the_thread_starts_when_needed_and_exits_when_done(fresh):
    zk.configure(decay_ms=50)
    assert wait_for(lambda: zk.stats().decay_thread == 0)
    with zk.installed():                                  # install()'s libc=keep would also start it
        a = np.ones(MiB)
        assert zk.stats().decay_thread == 0               # nothing idle yet
        del a
    assert zk.stats().decay_thread == 1
    assert wait_for(lambda: zk.stats().bytes_cached == 0 and zk.stats().decay_thread == 0)
    zk.configure(decay_ms=10000)


def test_fork_child_has_a_consistent_cache_and_its_own_decay():
    out = run_python("""
        import os, time, numpy as np, zkalloc_np as zk
        zk.configure(decay_ms=100)
        zk.install()
        a = [np.ones(1 << 20) for _ in range(3)]
        del a
        assert zk.stats().decay_thread == 1
        pid = os.fork()
        if pid == 0:
            ok = zk.stats().decay_thread == 0 and zk.stats().bytes_cached == 24 << 20
            zk.check()
            b = np.ones(1 << 20); del b                    # a new idle region starts the child's thread
            ok = ok and zk.stats().decay_thread == 1
            for _ in range(300):
                if zk.stats().bytes_cached == 0:
                    break
                time.sleep(0.01)
            ok = ok and zk.stats().bytes_cached == 0
            zk.check()
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        zk.check()
        print(os.waitstatus_to_exitcode(status))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


@pytest.mark.parametrize("value", [-1, "soon", "1.5s", 10**12, True])
def test_bad_decay_values_name_the_setting(value):
    with pytest.raises(ValueError, match="decay_ms"):
        zk.configure(decay_ms=value)


def test_decay_accepts_units():
    zk.configure(decay_ms="2s")
    assert zk.settings()["decay_ms"] == 2000
    zk.configure(decay_ms="250ms")
    assert zk.settings()["decay_ms"] == 250


def test_stats_report_rss_and_the_idle_part_of_it(fresh):
    zk.configure(decay_ms=0)
    with zk.installed():
        a = np.ones(4 * MiB)                              # 32 MiB, written
    del a
    s = zk.stats()
    assert s.idle_resident_bytes == 32 * MiB
    assert s.rss_bytes >= s.idle_resident_bytes
    zk.release()
    assert zk.stats().idle_resident_bytes == 0


# ---- the container's limit ----------------------------------------------------------

def tree(tmp_path, cgroup: str, files: dict[str, str]):
    proc = tmp_path / "cgroup"
    proc.write_text(cgroup)
    root = tmp_path / "sys"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return proc, root


def test_v2_max_and_high_of_every_ancestor(tmp_path):
    proc, root = tree(tmp_path, "0::/kubepods/pod1/ctr\n", {
        "kubepods/memory.max": "max\n",
        "kubepods/pod1/memory.max": "4294967296\n",
        "kubepods/pod1/ctr/memory.max": "max\n",
        "kubepods/pod1/ctr/memory.high": "2147483648\n",
    })
    found = _container.memory_limit(proc, root)
    assert found.bytes == 2 << 30 and found.source.endswith("ctr/memory.high") and not found.problems
    assert _container.default_cap(64 << 30, found) == 256 * MiB


def test_v2_unlimited(tmp_path):
    proc, root = tree(tmp_path, "0::/user.slice\n", {"user.slice/memory.max": "max\n"})
    found = _container.memory_limit(proc, root)
    assert found.bytes is None
    assert _container.default_cap(24 << 30, found) == 1 << 30
    assert _container.default_cap(4 << 30, found) == 512 * MiB


def test_v1_limit_and_v1_unlimited(tmp_path):
    proc, root = tree(tmp_path, "12:cpu,cpuacct:/a\n11:memory:/docker/abc\n", {
        "memory/docker/abc/memory.limit_in_bytes": str(1 << 30)})
    assert _container.memory_limit(proc, root).bytes == 1 << 30
    proc, root = tree(tmp_path, "11:memory:/docker/abc\n", {
        "memory/docker/abc/memory.limit_in_bytes": "9223372036854771712"})
    assert _container.memory_limit(proc, root).bytes is None


def test_garbage_warns_and_falls_back_to_ram(tmp_path):
    proc, root = tree(tmp_path, "0::/x\n", {"x/memory.max": "lots\n"})
    found = _container.memory_limit(proc, root)
    assert found.bytes is None and "not a byte count" in found.problems[0]
    saved = zk.settings()["cache_bytes"]
    try:
        zk._settings._sources["cache_bytes"] = "default"
        with pytest.warns(RuntimeWarning, match="memory.max"):
            zk._settings.apply_container_default(found)
        assert zk.settings()["cache_bytes"] == _container.default_cap(_container.ram_bytes(), found)
    finally:
        zk.configure(cache_bytes=saved)


def test_a_set_cap_is_never_overridden(tmp_path):
    proc, root = tree(tmp_path, "0::/x\n", {"x/memory.max": str(1 << 30)})
    zk.configure(cache_bytes="300M")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zk._settings.apply_container_default(_container.memory_limit(proc, root))
    assert zk.settings()["cache_bytes"] == 300 * MiB


def test_the_real_cgroup_of_this_process_parses():
    found = _container.memory_limit()
    assert found.bytes is None or found.bytes > 0
    assert isinstance(found.source, str) and found.source


def test_v1_ancestor_and_hybrid_v2_mount(tmp_path):
    proc, root = tree(tmp_path, "11:memory:/docker/abc\n0::/\n", {
        "memory/docker/memory.limit_in_bytes": str(3 << 30),
        "memory/docker/abc/memory.limit_in_bytes": "9223372036854771712",
        "unified/memory.max": str(2 << 30)})
    found = _container.memory_limit(proc, root)
    assert found.bytes == 2 << 30 and "unified" in found.source


def test_memory_pressure_makes_slack_that_came_back_go_again(manual_decay):
    """Slack that kept coming back is kept (zk_cache.c, drop_slack); once
    memory is wanted, it is dropped again."""
    def written(size: int) -> None:
        a = np.empty(size, np.uint8)
        a.fill(1)

    small = 36 * MiB // 10                                  # the 4 MiB class, 0.4 MiB short
    with zk.installed():
        for _ in range(4):                                  # dropped, then wanted back: learned
            written(4 * MiB)
            written(small)
        written(4 * MiB)
        before = zk.stats().slack_dropped_bytes
        written(small)
        assert zk.stats().slack_dropped_bytes == before    # kept
        manual_decay.decay_set_pressure(True)
        manual_decay.decay_pass()
        manual_decay.decay_set_pressure(False)
        written(4 * MiB)
        written(small)
        assert zk.stats().slack_dropped_bytes > before     # given back
    zk.check()
