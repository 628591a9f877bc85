"""``run --timeline FILE.json --plot FILE.png`` (issue 31.3)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PHASED = """
import time
import numpy as np
import zkalloc_np as zk
for r in range(3):
    with zk.phase("commit"):
        xs = [np.ones(1 << 20) for _ in range(4)]
        time.sleep(0.12)
    with zk.phase("fri"):
        ys = [np.ones(1 << 19) for _ in range(2)]
        time.sleep(0.06)
    del xs, ys
print("done")
"""


def zk_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}
    return subprocess.run([sys.executable, "-m", "zkalloc_np", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_timeline_json_matches_the_program_and_the_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "phased.py").write_text(textwrap.dedent(PHASED))
    done = zk_cli("run", "--timeline", "t.json", "--plot", "t.png", "--interval", "0.02", "phased.py",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["interval_s"] == 0.02 and data["command"] == ["phased.py"]
    phases = data["phases"]
    assert [p["name"] for p in phases] == ["commit", "fri"] * 3
    for p, q in zip(phases, phases[1:]):
        assert p["start"] < p["end"] <= q["start"]
    samples = data["samples"]
    ts = [s["t"] for s in samples]
    assert ts == sorted(ts) and len(samples) >= 10     # about 0.54 s of phases at 0.02 s
    assert {s["phase"] for s in samples} <= {"commit", "fri", None} and {"commit", "fri"} <= {s["phase"] for s in samples}
    for s in samples:   # a sample's phase is the one whose span holds it
        if s["phase"] is not None:
            assert any(p["name"] == s["phase"] and p["start"] <= s["t"] <= p["end"] for p in phases)
    assert max(s["bytes_in_use"] for s in samples) >= 4 * 8 << 20        # the commit round's 4 x 8 MiB
    assert samples[-1]["hits"] > 0 and samples[-1]["rss_bytes"] > 0
    png = (tmp_path / "t.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_plot_alone_and_as_html(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "phased.py").write_text(textwrap.dedent(PHASED))
    done = zk_cli("run", "--quiet", "--plot", "t.html", "phased.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "t.html").read_text()
    assert html.startswith("<!doctype html>") and "data:image/png;base64," in html


def test_bad_plot_and_timeline_paths_are_refused_before_the_program_runs(tmp_path):
    (tmp_path / "phased.py").write_text(textwrap.dedent(PHASED))
    done = zk_cli("run", "--plot", "t.jpg2", "phased.py", cwd=tmp_path)
    assert done.returncode == 2 and "--plot t.jpg2" in done.stderr and "done" not in done.stdout
    done = zk_cli("run", "--timeline", str(tmp_path / "no" / "t.json"), "phased.py", cwd=tmp_path)
    assert done.returncode == 2 and "--timeline" in done.stderr and "does not exist" in done.stderr
