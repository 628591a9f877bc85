"""Settings and environment variables: bad values are clear ValueErrors."""
import re
import warnings

import pytest

import zkalloc_np as zk
from zkalloc_np import SettingsWarning
from zkalloc_np._settings import ENV_VARS, OTHER_ENV_VARS, environment_problems, load_environment, parse_size
from conftest import MiB, run_python


@pytest.mark.parametrize("text,expected", [
    ("1048576", MiB), ("64K", 64 << 10), ("512M", 512 * MiB), ("2G", 2 << 30),
    ("64KiB", 64 << 10), ("1 gb", 1 << 30), ("0", 0), (4096, 4096), (1e9, 10**9), (2.0, 2),
    ("1.5G", 3 << 29), ("0.5K", 512), ("2.25M", 9 << 18),
])
def test_parse_size(text, expected):
    assert parse_size(text, "x") == expected


@pytest.mark.parametrize("bad", ["", "abc", "-1", "1.5", "1.0001K", "12Q", "1.5.G", True, None, [1], -5, 1.5])
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


SUGGESTION = re.escape("unknown setting 'cache_byte' (did you mean cache_bytes?)")


@pytest.mark.parametrize("call", [
    lambda: zk.configure(cache_byte="1G"),   # type: ignore[call-arg]
    lambda: zk.install(cache_byte="1G"),
    lambda: zk._settings.configure_from({"cache_byte": "1G"}),
    lambda: zk._settings.validate({"cache_byte": "1G"}),
])
def test_a_misspelt_setting_is_one_error_with_a_suggestion_everywhere(call):
    """configure() raised a TypeError with no suggestion and install() a
    ValueError; the environment variable form suggested the right name.  Now
    every API form is the ValueError the docs promise, with the suggestion."""
    before = zk.settings()
    with pytest.raises(ValueError, match=SUGGESTION):
        call()
    assert zk.settings() == before and not zk.is_installed()


def test_the_settings_page_names_the_error_the_api_raises():
    import os
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "settings.md")) as f:
        text = " ".join(f.read().split())
    assert "unknown name) given to `configure()` or `install()` raises a `ValueError`" in text
    assert "did you mean" in text and "TypeError" not in text


def test_a_size_over_the_machines_memory_is_taken_with_a_warning():
    """cache_bytes="100T" on a 24 GiB machine was accepted silently."""
    from zkalloc_np._container import ram_bytes
    saved = zk.settings()
    try:
        with pytest.warns(SettingsWarning, match="cache_bytes: .* is more than this machine's memory"):
            assert zk.configure(cache_bytes="100T")["cache_bytes"] == 100 << 40
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            zk.configure(cache_bytes=ram_bytes() // 2, budget="1.5G")   # plausible: no warning
        problems = environment_problems({"ZKALLOC_BUDGET": "100T"})
        assert len(problems) == 1 and "ZKALLOC_BUDGET='100T'" in problems[0] and "memory" in problems[0]
    finally:
        zk.configure(**saved)


def test_a_fractional_size_with_a_unit_is_accepted():
    """"1.5G" was rejected while "100T" was taken."""
    saved = zk.settings()
    try:
        assert zk.configure(cache_bytes="1.5G")["cache_bytes"] == 1536 * MiB
        assert environment_problems({"ZKALLOC_CACHE_BYTES": "1.5G"}) == []
    finally:
        zk.configure(**saved)


def test_every_setting_is_parsed_by_the_kind_the_core_gives_it():
    from zkalloc_np._settings import OPTIONS, parse_setting
    assert {o.kind for o in OPTIONS.values()} == {"bytes", "duration", "bool", "choice"}
    samples = {"bytes": ("2M", 2 * MiB), "duration": ("2s", 2000), "bool": ("on", 1)}
    for name, option in OPTIONS.items():
        if option.kind == "choice":
            for number, aliases in enumerate(option.words, start=option.min):
                assert all(parse_setting(name, word, name) == number for word in aliases)
            with pytest.raises(ValueError, match=name):
                parse_setting(name, "nonsense", name)
        else:
            text, number = samples[option.kind]
            assert parse_setting(name, text, name) == number or option.max < number
        bounds = re.escape(f"[{option.min}, {option.max}]") if option.kind in ("bytes", "duration") else name
        with pytest.raises(ValueError, match=bounds):
            parse_setting(name, option.max + 1, name)


def test_setting_a_value_only_stores_it_and_the_caller_applies_the_change(fresh):
    """zk_option_set only stores; configure() applies the change (here: a
    lower cap evicts at once)."""
    import numpy as np
    from zkalloc_np import _core
    saved = zk.settings()
    try:
        zk.configure(cache_bytes="64M", thread_cache_bytes=0)
        with zk.installed():
            a = [np.ones(MiB) for _ in range(4)]
            del a
        assert zk.stats().bytes_cached >= 4 * 8 * MiB
        _core.option_store("cache_bytes", MiB)
        assert zk.stats().bytes_cached >= 4 * 8 * MiB     # stored, not applied
        _core.option_apply("cache_bytes")
        assert zk.stats().bytes_cached <= MiB
    finally:
        zk.configure(**saved)


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
