"""np.zeros on a reused region returns zeros, whichever way it is zeroed."""
import numpy as np
import pytest

import zkalloc_np as zk
from conftest import MiB, smaps_entry
from zkalloc_np import _core

KiB = 1 << 10


def dirty_then_zeros(nbytes):
    with zk.installed():
        a = np.empty(nbytes, np.uint8)
        a.fill(0xAB)
        del a
        z = np.zeros(nbytes, np.uint8)
    return z


def test_fresh_region_needs_no_zeroing(fresh):
    with zk.installed():
        z = np.zeros(4 * MiB, np.uint8)
    assert not z.any()
    assert zk.stats().calloc_fresh == 1


def test_dirty_region_is_memset(fresh):
    z = dirty_then_zeros(4 * MiB)          # below 64 MiB: memset
    assert not z.any()
    s = zk.stats()
    assert s.hits == 1 and s.calloc_memset == 1


BIG_ZEROS = 65 * MiB   # 32 whole 2 MiB pages and a last 1 MiB


@pytest.mark.parametrize("hugepages", ["auto", "off"])
def test_a_dense_class_zeros_big_regions_by_huge_page_faults(fresh, hugepages):
    """A class that writes its regions whole (the np.empty filled) gets its
    np.zeros of 64 MiB and more zeroed by the kernel at fault, 2 MiB at a
    time just before its user writes them (a memset is a pass over memory
    of its own): its whole 2 MiB pages dropped, huge pages advised, the
    last 1 MiB memset.  With hugepages off a memset."""
    zk.configure(hugepages=hugepages)
    with zk.installed():
        a = np.empty(BIG_ZEROS, np.uint8)
        a.fill(0xAB)
        del a                                     # measured at free: the class is dense
        z = np.zeros(BIG_ZEROS, np.uint8)
        assert not z.any()
        s = zk.stats()
        assert s.hits == 1
        if hugepages == "auto":
            assert s.calloc_discard == 1 and s.calloc_memset == 0
            assert "hg" in smaps_entry(z.ctypes.data)["VmFlags"].split()
        else:
            assert s.calloc_discard == 0 and s.calloc_memset == 1
        z.fill(1)
        del z
        z = np.zeros(BIG_ZEROS, np.uint8)            # and again, dirty: zeros
        assert not z.any()


def test_lazy_zeroing_by_discard(fresh):
    zk.configure(lazy_zero_bytes=MiB)
    z = dirty_then_zeros(4 * MiB)
    assert not z.any()
    s = zk.stats()
    assert s.hits == 1 and s.calloc_discard == 1 and s.calloc_memset == 0


def test_zeros_after_soften(fresh):
    with zk.installed():
        a = np.full(2 * MiB, 7, np.uint8)
        del a
        zk.soften()
        z = np.zeros(2 * MiB, np.uint8)
    assert not z.any()
    assert zk.stats().hits == 1


def test_calloc_overflow_is_memory_error(fresh):
    from zkalloc_np import _core
    assert _core.raw_calloc(2**63, 4) == 0


def zeros_rounds(nbytes: int, rounds: int, touch, full_check: bool = True) -> list[bool]:
    """np.zeros of a reused region `rounds` times, dirtied in between; whether
    each came back zero.  full_check=False looks only where `touch` writes
    and in the middle: reading every page would itself count as touching
    it for the zeroing policy."""
    ok = []
    with zk.installed():
        for _ in range(rounds):
            z = np.zeros(nbytes, np.uint8)
            seen = z if full_check else np.concatenate((z[:4096], z[nbytes // 2:nbytes // 2 + 64], z[-4096:]))
            ok.append(not seen.any())
            touch(z)
            del z, seen
    return ok


# Costs of the kind this project's machines measure: memset at ~100 GB/s, a
# 4 KiB fault 2.4 us, a discard of a mostly empty region 2 us.
PINNED_MEMSET_NS_PER_MIB = 10_000
PINNED_FAULT_NS = 2_400
PINNED_DISCARD_NS = 2_000


@pytest.fixture
def policy(fresh):
    """fresh, with the zeroing policy's costs pinned: these tests check what
    it decides from what a class touches, and a decision from timed costs
    depends on the machine's load (CI once saw 7 discards of 40, a slow
    timing having made discards look dear).  test_the_way_a_class_is_zeroed_
    follows_its_measured_costs checks the measured side.  Huge pages off:
    memset against discard is the choice here (a dense class on huge pages is
    zeroed by faulting them back in: test_a_dense_class_zeros_big_regions_by_
    huge_page_faults)."""
    zk.configure(hugepages="off")
    _core.pin_zero_costs(PINNED_MEMSET_NS_PER_MIB, PINNED_FAULT_NS, PINNED_DISCARD_NS)
    yield fresh
    _core.reset_zero_policy()


def test_pinned_costs_are_the_policys(policy):
    p = _core.zero_policy(_core.class_of(6 * MiB))
    assert (p["memset_ns_per_mib"], p["fault_ns"], p["discard_ns"]) == \
        (PINNED_MEMSET_NS_PER_MIB, PINNED_FAULT_NS, PINNED_DISCARD_NS)
    zeros_rounds(6 * MiB, 8, lambda z: z.fill(1))   # memsets and a discard, timed or not
    p = _core.zero_policy(_core.class_of(6 * MiB))
    assert (p["memset_ns_per_mib"], p["fault_ns"], p["discard_ns"]) == \
        (PINNED_MEMSET_NS_PER_MIB, PINNED_FAULT_NS, PINNED_DISCARD_NS)


def test_sparse_class_learns_to_discard_and_stays_correct(policy):
    def sparse(z):   # an MSM window: first and last bucket
        z[:96] = 0xFF
        z[-96:] = 0xFF
    ok = zeros_rounds(6 * MiB, 40, sparse, full_check=False)
    assert all(ok)
    s = zk.stats()
    assert s.zero_samples >= 3
    assert s.calloc_discard >= 30 and s.calloc_memset <= 5   # sparse after a few samples
    assert all(zeros_rounds(6 * MiB, 3, sparse))             # and every byte is zero


def test_dense_class_stays_memset_with_rare_samples(policy):
    ok = zeros_rounds(6 * MiB, 60, lambda z: z.fill(0xFF))
    assert all(ok)
    s = zk.stats()
    assert 1 <= s.zero_samples <= 4     # samples back off: 4, 8, 16, 32 callocs apart
    # Each sample costs its region a discard, and the next calloc of that
    # region drops it once more to get huge pages back: the rest is memset.
    assert s.calloc_memset >= 60 - 1 - 2 * s.zero_samples


def test_class_that_turns_dense_goes_back_to_memset(policy):
    zeros_rounds(6 * MiB, 20, lambda z: z.__setitem__(0, 1), full_check=False)
    assert zk.stats().calloc_discard >= 10
    ok = zeros_rounds(6 * MiB, 20, lambda z: z.fill(7))
    assert all(ok)
    before = zk.stats().calloc_memset
    zeros_rounds(6 * MiB, 5, lambda z: z.fill(7))
    assert zk.stats().calloc_memset >= before + 4   # at most one sample among them


def test_adaptive_zero_off_always_memsets(fresh):
    zk.configure(adaptive_zero=False)
    ok = zeros_rounds(6 * MiB, 20, lambda z: z.__setitem__(0, 1), full_check=False)
    assert all(ok)
    assert zk.stats().calloc_discard == 0   # (fresh regions are still measured at free: zero_samples)


def test_region_back_from_small_pages_serves_np_empty(policy):
    zeros_rounds(6 * MiB, 12, lambda z: z.__setitem__(0, 1), full_check=False)
    assert zk.stats().calloc_discard >= 3
    with zk.installed():
        a = np.empty(6 * MiB, np.uint8)
        a.fill(3)
        assert (a == 3).all() and zk.owns(a)


@pytest.mark.parametrize("nbytes", [1536 * KiB, 6 * MiB])
def test_the_way_a_class_is_zeroed_follows_its_measured_costs(fresh, nbytes):
    """An MSM window touching its first and last bucket: whether its np.zeros
    is discarded or memset is what the measured costs say (memset bandwidth,
    the class's discard, a page fault), not a fixed share of pages: on a
    machine whose memset of zeros outruns a discard, a sparse class is
    memset.  The last rounds go the way the policy's numbers say."""
    def ends(z):
        z[:96] = 0xFF
        z[-96:] = 0xFF
    assert all(zeros_rounds(nbytes, 40, ends, full_check=False))
    cls = _core.class_of(nbytes)
    policy = _core.zero_policy(cls)
    assert policy["memset_ns_per_mib"] > 0 and policy["fault_ns"] > 0
    assert policy["touched_per_1024"] < 1024 // 32   # it did learn that few pages are touched
    pages = _core.class_bytes(cls) // 4096
    discard = policy["discard_ns"] + pages * policy["touched_per_1024"] // 1024 * policy["fault_ns"]
    memset = policy["memset_ns_per_mib"] * _core.class_bytes(cls) >> 20
    assert bool(policy["discard"]) == (discard < memset)
    before = zk.stats()
    assert all(zeros_rounds(nbytes, 4, ends, full_check=False))   # (a full read would touch every page)
    after = zk.stats()
    if policy["discard"]:
        assert after.calloc_discard - before.calloc_discard >= 3
    else:
        assert after.calloc_memset - before.calloc_memset >= 3
