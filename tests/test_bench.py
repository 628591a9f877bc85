"""The benchmark runs end to end (a smoke run; timings are never asserted)."""
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_fill_run_writes_sane_records(tmp_path):
    out = tmp_path / "fill.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "fill", "--allocators", "default,zkalloc,zkalloc-global,ideal",
         "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert {"cpu", "cores", "thp_enabled", "numpy"} <= set(data["machine"])
    records = data["records"]
    assert [r["allocator"] for r in records] == ["default", "zkalloc", "zkalloc-global", "ideal"]
    for r in records:
        for key in ("median_s", "min_s", "max_s"):
            assert math.isfinite(r[key]) and r[key] > 0
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["peak_rss_bytes"] > r["size"]
    assert records[1]["hit_rate"] > 0 and records[2]["hit_rate"] > 0   # both really ran under zkalloc
    assert "fill 8 MiB" in result.stdout


def test_unknown_allocator_is_rejected():
    result = subprocess.run([sys.executable, "-m", "bench", "--allocators", "nosuch"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "nosuch" in result.stderr


def test_every_pattern_runs_and_returns_one_time_per_round(monkeypatch):
    monkeypatch.syspath_prepend(ROOT)
    from bench.patterns import PATTERNS
    for name, pattern in PATTERNS.items():
        for ideal in (False, True):
            times = pattern.run(1 << 16, 2, ideal)
            assert len(times) == 2 and all(math.isfinite(t) and t > 0 for t in times), name
