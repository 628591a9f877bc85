"""galois arrays and galois.ntt outputs come from the cache; what the cache
sees of a galois NTT (numba's own buffers bypass numpy's handler)."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import zkalloc_np as zk

galois = pytest.importorskip("galois")

BABYBEAR = 15 * 2**27 + 1
N = 1 << 14          # 64 KiB of uint32: the smallest size the cache serves by default


@pytest.fixture(scope="module")
def field():
    """GF(BabyBear), with the NTT kernels compiled once (about 3 s)."""
    gf = galois.GF(BABYBEAR)
    x = gf.Random(16, seed=0)
    galois.intt(galois.ntt(x))
    return gf


def test_field_arrays_come_from_the_cache(field, fresh):
    with zk.installed():
        x = field.Random(N, seed=1)
        y = field.Random(N, seed=2)
        products = [x * y, x + y, x - y, x ** 3, np.negative(x)]
        z = field(np.arange(N, dtype=np.uint32))
    assert isinstance(x, field) and x.dtype == np.uint32
    for array in (x, y, z, *products):
        assert zk.owns(array), "a GF array made inside installed() did not come from the cache"
    assert zk.owns(x.view(np.ndarray)) and zk.owns(x[1:])
    outside = field.Random(N, seed=3)
    assert not zk.owns(outside)
    assert np.array_equal(products[0], field(x.view(np.ndarray).astype(np.uint64) * y.view(np.ndarray) % BABYBEAR))


def test_ntt_output_comes_from_the_cache(field, fresh):
    x = field.Random(N, seed=4)
    with zk.installed():
        y = galois.ntt(x)
        back = galois.intt(y)
    assert zk.owns(y) and zk.owns(back)
    assert np.array_equal(back, x)
    assert np.array_equal(y, galois.ntt(x))


def test_ntt_output_under_process_wide_install(field, fresh):
    x = field.Random(N, seed=5)
    zk.install()
    try:
        y = galois.ntt(x)
    finally:
        zk.uninstall()
    assert zk.owns(y)


def test_what_the_cache_sees_of_an_ntt(field, fresh):
    """Through numpy's handler: the conversions (field copy, astype(int64),
    astype back); numba's own scratch buffer never reaches the cache."""
    x = field.Random(N, seed=6)
    with zk.installed():
        galois.ntt(x)
        gc.collect()
        before = zk.stats()
        y = galois.ntt(x)
        after = zk.stats()
    earlier = {c.bytes: c.hits + c.misses for c in before.classes}
    served = sum((c.hits + c.misses - earlier.get(c.bytes, 0)) * c.bytes for c in after.classes)
    assert 12 * N <= served <= 24 * N      # galois 0.4.11: 4n + 8n + 4n = 16 B/point
    assert after.hits - before.hits >= 2, "the warm NTT's conversions should reuse cached regions"
    assert zk.owns(y)
