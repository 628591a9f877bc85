"""Every constant and counter has one source, the C core: the Python layer
reads the settings (name, kind, bounds, words), the class count and the
lists of statistics (the process's and a phase's) from it, and the docs
tables and the Stats and PhaseStats fields follow those lists."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np

import zkalloc_np as zk
from zkalloc_np import _core, _settings
from conftest import MiB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: What the Python layer adds after the core's statistics, in Stats' order.
PYTHON_FIELDS = ["hit_rate", "cap_bytes", "min_bytes", "thp", "installed", "thp_policy", "rss_bytes",
                 "idle_resident_bytes", "classes", "phases", "small_allocs_by_size", "raw_domain", "libc"]


def test_stats_fields_are_the_cores_list_then_the_python_ones():
    names = [name for name, _, _ in _core.STATS]
    assert len(names) == len(set(names)) > 40
    assert [f.name for f in dataclasses.fields(zk.Stats)] == names + PYTHON_FIELDS
    assert {kind for _, kind, _ in _core.STATS} == {"counter", "gauge", "peak"}
    assert all(doc and not doc.endswith(".") for _, _, doc in _core.STATS)


def test_every_statistic_reads_through_and_resets_by_its_kind(fresh):
    with zk.installed():
        a = np.ones(MiB)
        del a
    before = zk.stats()
    assert before.misses >= 1 and before.bytes_cached > 0 and before.peak_bytes_mapped >= before.bytes_mapped
    zk.reset_stats()
    after = zk.stats()
    for name, kind, _ in _core.STATS:
        value = getattr(after, name)
        if kind == "counter":
            assert value == 0, name
        elif kind == "gauge":
            assert value == getattr(before, name), name
        else:   # a peak restarts from its gauge
            assert value == getattr(after, name.removeprefix("peak_")), name


def test_docs_table_is_made_from_the_list():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "stats_table.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with open(os.path.join(ROOT, "docs", "stats.md")) as f:
        text = f.read()
    for name, _, doc in _core.STATS:
        assert f"| `{name}` |" in text and doc in text


def test_settings_are_the_cores_options():
    assert list(_settings.ENV_VARS) == list(_core.OPTIONS)
    assert set(zk.Settings.__annotations__) == set(_core.OPTIONS)
    assert set(zk.settings()) == set(_core.OPTIONS)
    assert _core.NCLASSES == max(_core.class_of(1 << 36), 0) + 1


#: What PhaseStats has besides the core's statistics of a phase: before them, then after.
PHASE_BEFORE = ["name", "capacity"]
PHASE_AFTER = ["hot_start_bytes", "released_bytes", "peak"]


def test_phase_stats_fields_are_the_cores_list():
    names = [name for name, _, _ in _core.SCOPE_STATS]
    assert len(names) == len(set(names)) > 20
    assert [f.name for f in dataclasses.fields(zk.PhaseStats)] == PHASE_BEFORE + names + PHASE_AFTER
    assert {kind for _, kind, _ in _core.SCOPE_STATS} == {"counter", "gauge", "peak", "record"}
    assert all(doc and not doc.endswith(".") for _, _, doc in _core.SCOPE_STATS)


def test_every_phase_statistic_reads_through(fresh):
    with zk.phase("one", budget="1G") as ph:
        kept = np.ones(MiB)
        np.ones(10)
    raw = _core.scope_stats(ph._capsule)
    assert set(raw) == {name for name, _, _ in _core.SCOPE_STATS} | {"class_live", "class_peak"}
    st = ph.stats
    for name, _, _ in _core.SCOPE_STATS:
        assert getattr(st, name) == raw[name], name
    assert (st.arrays, st.live_arrays, st.escaped_arrays, st.closed, st.budget) == (1, 1, 1, 1, 1 << 30)
    assert st.region_bytes >= st.live_bytes == 8 * MiB and st.peak_region_bytes >= st.region_bytes
    assert kept.sum() == MiB


def test_phase_docs_table_is_made_from_the_list():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "stats_table.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with open(os.path.join(ROOT, "docs", "phases.md")) as f:
        text = f.read()
    for name, _, doc in _core.SCOPE_STATS:
        assert f"| `{name}` |" in text and doc in text


def test_small_requests_are_counted_by_size_inside_phases_too(fresh):
    """from_scope counted a small request in small_allocs but not by size, so
    small_allocs_by_size undercounted inside phases."""
    with zk.installed():
        np.ones(100)
    outside = zk.stats()
    zk.reset_stats()
    with zk.phase("small"):
        np.ones(100)
    inside = zk.stats()
    assert inside.small_allocs >= 1
    assert sum(inside.small_allocs_by_size.values()) == inside.small_allocs
    assert sum(outside.small_allocs_by_size.values()) == outside.small_allocs
    assert inside.small_allocs_by_size.get(512, 0) >= 1   # the 800-byte array's bucket


def test_settings_come_from_the_cores_one_table():
    from zkalloc_np._settings import OPTIONS, SettingsArgs
    assert list(OPTIONS) == list(_core.OPTIONS)
    assert set(SettingsArgs.__annotations__) == set(_core.OPTIONS)
    for name, info in _core.OPTIONS.items():
        option = OPTIONS[name]
        assert (option.kind, option.min, option.max) == (info["kind"], info["min"], info["max"])
        assert (option.words is None) == (option.kind != "choice")
        if option.words is not None:
            assert len(option.words) == option.max - option.min + 1
    with open(os.path.join(ROOT, "docs", "settings.md")) as f:
        text = f.read()
    for name, option in OPTIONS.items():
        assert f"| `{name}` | `{option.env_var}` |" in text
        for aliases in option.words or ():
            assert f"`{aliases[0]}`" in text, (name, aliases[0])
