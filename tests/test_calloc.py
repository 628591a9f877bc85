"""np.zeros on a reused region returns zeros, whichever way it is zeroed."""
import numpy as np

import zkalloc_np as zk
from conftest import MiB


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
    z = dirty_then_zeros(4 * MiB)
    assert not z.any()
    s = zk.stats()
    assert s.hits == 1 and s.calloc_memset == 1


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
