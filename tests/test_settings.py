"""Settings and environment variables: bad values are clear ValueErrors."""
import pytest

import zkalloc_np as zk
from zkalloc_np._settings import parse_size
from conftest import MiB, run_python


@pytest.mark.parametrize("text,expected", [
    ("1048576", MiB), ("64K", 64 << 10), ("512M", 512 * MiB), ("2G", 2 << 30),
    ("64KiB", 64 << 10), ("1 gb", 1 << 30), ("0", 0), (4096, 4096), (1e9, 10**9), (2.0, 2),
])
def test_parse_size(text, expected):
    assert parse_size(text, "x") == expected


@pytest.mark.parametrize("bad", ["", "abc", "-1", "1.5G", "12Q", True, None, [1], -5, 1.5])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError, match="cache_bytes"):
        parse_size(bad, "cache_bytes")


def test_configure_round_trip():
    out = zk.configure(cache_bytes="256M", min_bytes=128 * 1024, hugepages=False,
                       lazy_zero_bytes="64M", thread_cache_bytes=0,
                       adaptive_zero="off")
    assert out == {"cache_bytes": 256 * MiB, "min_bytes": 128 << 10, "hugepages": 0,
                   "lazy_zero_bytes": 64 * MiB, "thread_cache_bytes": 0,
                   "adaptive_zero": 0}
    assert zk.setting_sources()["cache_bytes"] == "configure()"


@pytest.mark.parametrize("settings,name", [
    ({"cache_bytes": -1}, "cache_bytes"),
    ({"cache_bytes": "lots"}, "cache_bytes"),
    ({"min_bytes": 0}, "min_bytes"),
    ({"min_bytes": 2**40}, "min_bytes"),
    ({"hugepages": "maybe"}, "hugepages"),
    ({"hugepages": 3}, "hugepages"),
    ({"thread_cache_bytes": "1.5"}, "thread_cache_bytes"),
    ({"cache_bytes": 2**60}, "cache_bytes"),
    ({"no_such_setting": 1}, "no_such_setting"),
])
def test_configure_rejects_and_changes_nothing(settings, name):
    before = zk.settings()
    with pytest.raises(ValueError, match=name):
        zk.configure(**{"lazy_zero_bytes": 8192, **settings})
    assert zk.settings() == before


def test_installed_rejects_bad_settings():
    with pytest.raises(ValueError, match="min_bytes"):
        with zk.installed(min_bytes=-3):
            pass


@pytest.mark.parametrize("var,value", [
    ("ZKALLOC_CACHE_BYTES", "lots"), ("ZKALLOC_CACHE_BYTES", "-1G"), ("ZKALLOC_MIN_BYTES", "0"),
    ("ZKALLOC_HUGEPAGES", "perhaps"), ("ZKALLOC_LAZY_ZERO_BYTES", "1e9"),
    ("ZKALLOC_THREAD_CACHE_BYTES", "999999999999999999999"),
])
def test_bad_environment_fails_import_clearly(var, value):
    result = run_python("import zkalloc_np", env={var: value})
    assert result.returncode != 0
    assert "ValueError" in result.stderr and var in result.stderr
    assert "Segmentation" not in result.stderr


def test_environment_is_applied():
    result = run_python("""
        import zkalloc_np as zk
        print(zk.settings()["cache_bytes"], zk.settings()["hugepages"], zk.setting_sources()["cache_bytes"])
    """, env={"ZKALLOC_CACHE_BYTES": "512M", "ZKALLOC_HUGEPAGES": "off"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(512 * MiB), "0", "env", "ZKALLOC_CACHE_BYTES"]


def test_default_cap_is_min_of_ram_eighth_and_1g():
    import os
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    result = run_python("import zkalloc_np as zk; print(zk.settings()['cache_bytes'])",
                        unset=["ZKALLOC_CACHE_BYTES"])
    assert int(result.stdout) == min(ram // 8, 1 << 30)
