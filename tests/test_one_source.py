"""Every constant and counter has one source, the C core: the Python layer
reads the option names, the hugepages words, the class count and the list of
statistics from it, and the docs table and the Stats fields follow that list."""
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
