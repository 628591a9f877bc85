"""Idle memory serves any size (issue: win on real provers): a miss is
carved out of a larger idle region or gathered from several by moving their
pages, before any fresh memory is faulted; and the first-touch policy
(hugepages=auto) records what it measures."""
from __future__ import annotations

import numpy as np
import pytest

import zkalloc_np as zk
from conftest import run_python

MiB = 1 << 20


def filled(nbytes: int, value: int) -> np.ndarray:
    a = np.empty(nbytes, dtype=np.uint8)
    a.fill(value)
    return a


def test_carve_serves_a_smaller_class_from_a_larger_idle_region(fresh):
    with zk.installed():
        keep = filled(3 * MiB, 7)            # a live neighbour whose bytes must not change
        big = filled(48 * MiB, 1)
        del big
        mapped = zk.stats().bytes_mapped
        small = filled(5 * MiB, 2)           # no class within 1.5x is idle: carved
        s = zk.stats()
        assert s.carved >= 1 and s.repurposed >= 1
        assert s.repurposed_bytes >= 5 * MiB
        assert s.bytes_mapped == mapped      # nothing mapped fresh
        assert zk.owns(small) and (small == 2).all() and (keep == 7).all()
        zk.check()
        del small
        zk.check()


def test_gather_moves_idle_regions_into_one_larger_region(fresh):
    with zk.installed():
        keep = filled(1 * MiB, 9)
        parts = [filled(8 * MiB, 3) for _ in range(4)]
        del parts
        before = zk.stats()
        big = filled(28 * MiB, 4)            # larger than any idle region: gathered
        s = zk.stats()
        assert s.gathered == before.gathered + 1
        assert s.gathered_pieces - before.gathered_pieces >= 3
        assert s.repurposed_bytes - before.repurposed_bytes >= 24 * MiB
        assert zk.owns(big) and (big == 4).all() and (keep == 9).all()
        zk.check()
        del big
        zk.check()


def test_a_gathered_region_is_gathered_again(fresh):
    """A gathered region spans several memory areas (its pieces' areas do
    not merge), which one mremap cannot move: gathering it again moves it
    area by area, keeping every byte."""
    with zk.installed():
        parts = [filled(8 * MiB, 3) for _ in range(4)]
        other = filled(6 * MiB, 6)
        del parts
        first = filled(28 * MiB, 5)                  # gathered: several areas
        assert zk.stats().gathered == 1
        first[::4096] = np.arange(first[::4096].size, dtype=np.uint8)
        kept = first.copy()
        del first, other
        before = zk.stats()
        big = np.empty(36 * MiB, np.uint8)           # larger than either: gathered from both
        s = zk.stats()
        assert s.gathered == before.gathered + 1
        assert s.repurposed_bytes - before.repurposed_bytes >= 34 * MiB   # the 28 MiB region moved too
        offsets = [o for o in (0, 6 * MiB, 8 * MiB) if (big[o:o + 28 * MiB][::4096][:16] == kept[::4096][:16]).all()]
        assert offsets, "the gathered region's bytes did not move with it"
        zk.check()                                    # /proc/self/maps agrees with every segment
        big.fill(7)
        assert (big == 7).all()
        del big
        zk.check()


def test_calloc_on_repurposed_pages_gives_zeros(fresh):
    with zk.installed():
        big = filled(40 * MiB, 0xFF)
        del big
        z = np.zeros(3 * MiB, dtype=np.uint8)      # carved
        assert zk.stats().carved >= 1 and not z.any()
        parts = [filled(6 * MiB, 0xEE) for _ in range(6)]
        del parts, z
        g = np.zeros(30 * MiB, dtype=np.uint8)     # gathered (or carved from what is left)
        assert zk.stats().repurposed >= 2 and not g.any()
        zk.check()


def test_owns_follows_moved_ranges_and_old_addresses_are_not_ours(fresh):
    with zk.installed():
        parts = [filled(6 * MiB, 5) for _ in range(5)]
        old = [p.ctypes.data for p in parts]
        del parts
        big = filled(28 * MiB, 6)
        assert zk.owns(big)
        assert zk._core.usable_bytes(big.ctypes.data) >= 28 * MiB
        for address in old:
            if address != big.ctypes.data:
                assert zk._core.usable_bytes(address) == 0
        zk.check()


def test_cap_is_never_exceeded_while_repurposing(fresh):
    zk.configure(cache_bytes="24M")
    rng = np.random.default_rng(1)
    with zk.installed():
        for _ in range(40):
            live = [filled(int(rng.integers(1, 12)) * MiB + int(rng.integers(0, 4096)), 1)
                    for _ in range(int(rng.integers(1, 5)))]
            assert zk.stats().bytes_cached <= 24 * MiB
            del live
            assert zk.stats().bytes_cached <= 24 * MiB
        zk.check()


def anon_huge_kib(address: int, nbytes: int) -> int:
    """AnonHugePages (KiB) of the mappings that overlap [address, address+nbytes)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo < address + nbytes and hi > address
            elif inside and line.startswith("AnonHugePages:"):
                total += int(line.split()[1])
    return total


def test_a_region_carved_at_2mib_alignment_keeps_its_huge_pages(fresh):
    zk.configure(hugepages=1)
    with zk.installed():
        big = filled(64 * MiB, 1)
        if anon_huge_kib(big.ctypes.data, 64 * MiB) == 0:
            pytest.skip("the kernel gave no huge pages here (THP off or none free)")
        del big
        part = filled(8 * MiB, 2)
        assert zk.stats().carved >= 1
        assert part.ctypes.data % (2 * MiB) == 0
        assert anon_huge_kib(part.ctypes.data, 8 * MiB) > 0


def teach_dense(nbytes: int) -> None:
    """One array of the class written whole and freed: the class has shown
    that it writes its regions whole (fresh ones are faulted in at once from
    then on); the cache left empty."""
    with zk.installed():
        a = filled(nbytes, 1)
    del a
    zk.release()


@pytest.mark.parametrize("mode,huge", [(0, False), (1, True)])
def test_forced_hugepages_record_samples_of_that_kind(fresh, mode, huge):
    zk.configure(hugepages=mode)
    zk._core.reset_thp_policy()
    teach_dense(4 * MiB)
    with zk.installed():
        live = [filled(4 * MiB, 1) for _ in range(3)]
    row = zk.stats().thp_policy[0]
    assert (row.samples_huge, row.samples_small) == ((3, 0) if huge else (0, 3))
    assert row.choice.endswith("(forced)")
    del live


def test_auto_samples_both_kinds_and_then_chooses(fresh):
    zk.configure(hugepages="auto")
    assert zk.settings()["hugepages"] == "auto"
    zk._core.reset_thp_policy()
    teach_dense(4 * MiB)
    with zk.installed():
        live = [filled(4 * MiB, 1) for _ in range(6)]
    row = zk.stats().thp_policy[0]
    assert row.samples_small >= 2 and row.samples_huge >= 2
    assert row.ns_per_mib_small > 0 and row.ns_per_mib_huge > 0
    assert row.choice in ("huge pages", "4 KiB pages")
    # each sample is a region faulted in at once and timed
    assert zk.stats().populated_bytes == (row.samples_small + row.samples_huge) * 4 * MiB
    del live


@pytest.mark.parametrize("huge_cheaper", [True, False])
def test_a_dense_class_is_faulted_in_at_once_only_on_4k_pages(fresh, huge_cheaper):
    """A class shown dense: on 4 KiB pages a fresh np.empty is faulted in at
    once (one syscall for 1,024 faults), timed; on huge pages, the cheaper
    here, it is left lazy (a fault maps 2 MiB: populating first only adds a
    pass over memory), but for the regions timed to follow the machine: of
    every 16 choices one times huge pages; 4 KiB pages, 4x the cost, are
    tried every 256th choice only (test_the_costlier_choice_is_tried_...)."""
    zk.configure(hugepages="auto")
    zk._core.reset_thp_policy()
    teach_dense(4 * MiB)
    small, huge = (4_000_000, 1_000_000) if huge_cheaper else (1_000_000, 4_000_000)
    zk._core.pin_thp_costs(small, huge)
    before = zk.stats().populated_bytes
    try:
        with zk.installed():
            live = [filled(4 * MiB, 1) for _ in range(32)]
        populated = (zk.stats().populated_bytes - before) // (4 * MiB)
        # huge pages cheaper: 32 choices, the 8th and 24th timed; 4 KiB pages
        # cheaper: 2 lazy re-measures (every 16th mapping), 30 choices, all timed
        assert populated == (2 if huge_cheaper else 30)
        assert all((a == 1).all() for a in live)
    finally:
        zk._core.reset_thp_policy()
    del live


@pytest.mark.parametrize("small_cost,mappings,tries", [(1_500_000, 64, 3), (4_000_000, 64, 0), (4_000_000, 300, 1)])
def test_the_costlier_choice_is_tried_less_often_the_more_it_costs(fresh, small_cost, mappings, tries):
    """Huge pages the cheaper (1 ms per MiB): 4 KiB pages are tried (timed,
    a sample) every 16th choice while they cost under twice as much, every
    256th at 4x (a try then costs 4x a round: every 16th made a 32 MiB first
    touch 1.57x numpy default's time).  The lazy re-measures of the class's
    density, on 4 KiB pages too, come as rarely: 1.5x, 64 fresh mappings: 4
    re-measures, 60 choices, tries at the 16th, 32nd, 48th; 4x, 300
    mappings: 1 re-measure, 299 choices, a try at the 256th."""
    zk.configure(hugepages="auto")
    zk._core.reset_thp_policy()
    teach_dense(4 * MiB)
    zk._core.pin_thp_costs(small_cost, 1_000_000)
    before = zk.stats().thp_policy[0].samples_small
    try:
        with zk.installed():
            for _ in range(mappings):
                a = filled(4 * MiB, 1)
                del a
                zk.release()                         # the next mapping is fresh
        assert zk.stats().thp_policy[0].samples_small - before == tries
    finally:
        zk._core.reset_thp_policy()


def test_fresh_zeros_stay_lazy(fresh):
    """np.zeros on fresh memory is never populated: untouched pages never fault."""
    with zk.installed():
        z = np.zeros(64 * MiB, dtype=np.uint8)
        assert zk.stats().populated_bytes == 0
        assert not z[:: 1 << 20].any()


def test_info_reports_the_first_touch_policy():
    out = run_python("""
        import numpy as np, zkalloc_np as zk
        from zkalloc_np.cli.info import info_lines
        with zk.installed():
            a = np.ones(1 << 20); del a                  # the class writes its arrays whole
            a = [np.ones(1 << 20) for _ in range(4)]
        print("\\n".join(info_lines()))
    """)
    assert out.returncode == 0, out.stderr
    assert "first-touch cost measured" in out.stdout and "us/MiB" in out.stdout


def test_repurposing_in_a_forked_child_keeps_the_cache_consistent(fresh):
    out = run_python("""
        import os, numpy as np, zkalloc_np as zk
        zk.install()
        parts = [np.ones(6 << 20, np.uint8) for _ in range(5)]
        del parts
        pid = os.fork()
        if pid == 0:
            big = np.ones(28 << 20, np.uint8)
            small = np.ones(3 << 20, np.uint8)
            ok = zk.stats().repurposed >= 1 and big.sum() == 28 << 20
            zk.check(); del big, small; zk.release(); zk.check()
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        zk.check()
        print(os.waitstatus_to_exitcode(status))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
