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



def test_idle_regions_are_softened_then_released(fresh):
    zk.configure(decay_ms=100)
    with zk.installed():
        arrays = [np.ones(MiB) for _ in range(4)]        # 8 MiB each
    del arrays
    assert zk.stats().bytes_cached == 32 * MiB
    assert wait_for(lambda: zk.stats().decayed_softened_bytes >= 32 * MiB)
    assert wait_for(lambda: zk.stats().bytes_cached == 0)
    s = zk.stats()
    assert s.decayed_released_bytes >= 32 * MiB
    assert s.bytes_reserved == 0 and s.idle_resident_bytes == 0
    zk.check()                                            # and /proc/self/maps agrees


def test_a_region_reused_within_the_period_is_never_decayed(fresh):
    zk.configure(decay_ms=300)
    with zk.installed():
        for _ in range(40):                               # ~20 ms a round, 800 ms in all
            a = np.ones(MiB)
            del a
            time.sleep(0.02)
    s = zk.stats()
    assert s.decayed_softened_bytes == 0 and s.decayed_released_bytes == 0
    assert s.hits == 39


def test_decay_off_keeps_idle_memory(fresh):
    zk.configure(decay_ms=0)
    with zk.installed():
        a = np.ones(MiB)
    del a
    time.sleep(0.2)
    assert zk.stats().bytes_cached == 8 * MiB
    assert wait_for(lambda: zk.stats().decay_thread == 0)   # a thread of an earlier test ends too


def test_the_thread_starts_when_needed_and_exits_when_done(fresh):
    zk.configure(decay_ms=50)
    assert wait_for(lambda: zk.stats().decay_thread == 0)
    with zk.installed():
        a = np.ones(MiB)
        assert zk.stats().decay_thread == 0               # nothing idle yet
        del a
    assert zk.stats().decay_thread == 1
    assert wait_for(lambda: zk.stats().bytes_cached == 0 and zk.stats().decay_thread == 0)


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
