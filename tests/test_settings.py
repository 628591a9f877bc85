"""Settings and environment variables: bad values are clear ValueErrors."""
import pytest

import zkalloc_np as zk
from zkalloc_np import SettingsWarning
from zkalloc_np._settings import ENV_VARS, OTHER_ENV_VARS, environment_problems, load_environment, parse_size
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
                       adaptive_zero="off", decay_ms="5s")
    assert out == {"cache_bytes": 256 * MiB, "min_bytes": 128 << 10, "hugepages": "off",
                   "lazy_zero_bytes": 64 * MiB, "thread_cache_bytes": 0,
                   "adaptive_zero": False, "decay_ms": 5000, "budget": 0, "libc": "keep"}
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
])
def test_configure_rejects_and_changes_nothing(settings, name):
    before = zk.settings()
    with pytest.raises(ValueError, match=name):
        zk.configure(**{"lazy_zero_bytes": 8192, **settings})
    assert zk.settings() == before


def test_installed_takes_no_settings_and_points_to_configure():
    before = zk.settings()
    for settings in ({"min_bytes": -3}, {"cache_bytes": "64M"}):
        with pytest.raises(TypeError, match=r"installed\(\) takes no settings.*zkalloc.configure\("):
            zk.installed(**settings)
    assert zk.settings() == before


@pytest.mark.parametrize("var,value", [
    ("ZKALLOC_CACHE_BYTES", "lots"), ("ZKALLOC_CACHE_BYTES", "-1G"), ("ZKALLOC_MIN_BYTES", "0"),
    ("ZKALLOC_HUGEPAGES", "perhaps"), ("ZKALLOC_LAZY_ZERO_BYTES", "1e9"),
    ("ZKALLOC_THREAD_CACHE_BYTES", "999999999999999999999"),
])
def test_bad_environment_warns_once_and_keeps_the_default(var, value):
    result = run_python("""
        import warnings
        warnings.simplefilter("always")   # count every warning, not only the first per place
        with warnings.catch_warnings(record=True) as caught:
            import zkalloc_np as zk
        print(len(caught), caught[0].category.__name__)
        print(caught[0].message)
        print(zk.setting_sources())
        import numpy as np
        with zk.installed():
            assert zk.owns(np.ones(1 << 20))
        print("still works")
    """, env={var: value, "ZKALLOC_DECAY_MS": "5s"})
    assert result.returncode == 0, result.stderr
    count, message, sources, works = result.stdout.splitlines()
    assert count == "1 SettingsWarning"
    assert var in message and repr(value) in message and "keeps its default" in message
    name = next(n for n, v in ENV_VARS.items() if v == var)
    assert f"'{name}': 'default'" in sources                      # the bad one: default kept
    assert "'decay_ms': 'env ZKALLOC_DECAY_MS'" in sources   # the good one applied
    assert works == "still works"
    assert "Traceback" not in result.stderr


def test_settings_in_a_mapping_name_an_unknown_one():
    """install(**settings) and the Dask plugin pass a mapping: an unknown name
    there is a ValueError naming it, and nothing changes."""
    before = zk.settings()
    with pytest.raises(ValueError, match="unknown setting.*no_such_setting"):
        zk.install(lazy_zero_bytes=8192, no_such_setting=1)
    assert zk.settings() == before


def test_unknown_environment_name_warns_with_a_suggestion():
    result = run_python("import zkalloc_np", env={"ZKALLOC_CACHE_BYTE": "1G", "ZKALLOC_ZZZ": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("SettingsWarning") == 2
    assert "ZKALLOC_CACHE_BYTE is not a zkalloc setting and is ignored (did you mean ZKALLOC_CACHE_BYTES?)" \
        in result.stderr
    assert "ZKALLOC_ZZZ is not a zkalloc setting and is ignored\n" in result.stderr


def test_project_variables_that_are_not_settings_do_not_warn():
    result = run_python("import zkalloc_np", env={var: "1" for var in OTHER_ENV_VARS})
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr


def test_info_lists_every_environment_problem_and_exits_0():
    import subprocess
    import sys
    env = {"ZKALLOC_CACHE_BYTES": "garbage", "ZKALLOC_MIN_BYTES": "-3", "ZKALLOC_CACHE_BYTE": "1G"}
    result = run_python("import runpy, sys; sys.argv = ['zkalloc_np', 'info']; "
                        "runpy.run_module('zkalloc_np', run_name='__main__')", env=env)
    assert result.returncode == 0, result.stderr
    assert "problems with the environment" in result.stdout
    for var in env:
        assert f"  {var}" in result.stdout
    assert "Traceback" not in result.stderr


def test_strict_load_environment_still_raises():
    with pytest.raises(ValueError, match="ZKALLOC_CACHE_BYTES"):
        load_environment({"ZKALLOC_CACHE_BYTES": "lots"})


def test_lenient_load_environment_applies_the_good_and_warns_on_the_bad():
    before = zk.settings()["min_bytes"]
    with pytest.warns(SettingsWarning, match="ZKALLOC_CACHE_BYTES='lots'"):
        problems = load_environment({"ZKALLOC_CACHE_BYTES": "lots", "ZKALLOC_MIN_BYTES": "128K"}, strict=False)
    assert len(problems) == 1
    assert zk.settings()["min_bytes"] == 128 << 10 != before
    assert environment_problems({"ZKALLOC_MIN_BYTES": "128K"}) == []


def test_environment_is_applied():
    result = run_python("""
        import zkalloc_np as zk
        print(zk.settings()["cache_bytes"], zk.settings()["hugepages"], zk.setting_sources()["cache_bytes"])
    """, env={"ZKALLOC_CACHE_BYTES": "512M", "ZKALLOC_HUGEPAGES": "off"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(512 * MiB), "off", "env", "ZKALLOC_CACHE_BYTES"]


def test_default_cap_is_min_of_ram_eighth_and_1g():
    import os
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    result = run_python("import zkalloc_np as zk; print(zk.settings()['cache_bytes'])",
                        unset=["ZKALLOC_CACHE_BYTES"])
    assert int(result.stdout) == min(ram // 8, 1 << 30)
