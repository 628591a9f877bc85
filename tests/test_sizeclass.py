"""Size-class math: smallest class that fits, bounded waste."""
from hypothesis import given
from hypothesis import strategies as st

from zkalloc_np import _core

MAX_CLASS = _core.class_bytes(_core.NCLASSES - 1)


def test_classes_are_increasing_page_multiples():
    sizes = [_core.class_bytes(c) for c in range(_core.NCLASSES)]
    assert sizes[0] == 4096
    assert all(s % 4096 == 0 for s in sizes)
    assert all(a < b for a, b in zip(sizes, sizes[1:], strict=False))
    assert MAX_CLASS == 1 << 36


def test_eight_classes_per_power_of_two():
    for k in range(15, 36):
        base = 1 << k
        expected = [base + j * (base // 8) for j in range(8)]
        assert [_core.class_bytes(_core.class_of(s)) for s in expected] == expected


def test_every_class_boundary():
    for c in range(_core.NCLASSES):
        size = _core.class_bytes(c)
        assert _core.class_of(size) == c
        assert _core.class_of(size - 1 if c else 1) == c
        if c + 1 < _core.NCLASSES:
            assert _core.class_of(size + 1) == c + 1


def test_beyond_the_largest_class():
    assert _core.class_of(MAX_CLASS + 1) == -1
    assert _core.class_bytes(-1) == 0
    assert _core.class_bytes(_core.NCLASSES) == 0


@given(st.integers(min_value=1, max_value=MAX_CLASS))
def test_smallest_class_that_fits(size):
    c = _core.class_of(size)
    assert _core.class_bytes(c) >= size
    assert c == 0 or _core.class_bytes(c - 1) < size


@given(st.integers(min_value=32 * 1024 + 1, max_value=MAX_CLASS))
def test_waste_at_most_an_eighth(size):
    # Above 32 KiB classes step by an eighth of their power of two.
    assert _core.class_bytes(_core.class_of(size)) <= size * 1.125
