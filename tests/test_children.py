"""Every Python process of a run (issue 31.1): run covers multiprocessing
workers under fork, spawn and forkserver and subprocess Python children, and
reports them added up; the ZKALLOC_SUBPROCESS switch does the same outside run."""
from __future__ import annotations

import json
import os
import signal
import site
import subprocess
import sys
import textwrap

import pytest

from conftest import run_python

WORKERS = 2
POOL = """
import json, os, subprocess, sys
import multiprocessing as mp
import numpy as np

def work(i):
    import zkalloc_np
    before = zkalloc_np.stats().hits
    for _ in range(6):
        a = np.ones(1 << 20)
        del a
    return os.getpid(), zkalloc_np.stats().hits - before, zkalloc_np.is_installed()

if __name__ == "__main__":
    import faulthandler
    faulthandler.dump_traceback_later(120, exit=True)   # a hang shows where, well before the test's timeout
    method, WORKERS = sys.argv[1], int(sys.argv[3])
    with mp.get_context(method).Pool(WORKERS) as pool:
        results = pool.map(work, range(6), chunksize=1)
    own = {}
    for pid, hits, installed in results:
        assert installed, "a worker without zkalloc"
        own[pid] = own.get(pid, 0) + hits
    with open(sys.argv[2], "w") as f:
        json.dump(own, f)
"""


def zk_cli(*args: str, cwd, env=None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "zkalloc_np", *args], capture_output=True, text=True, cwd=cwd,
                          env=full, timeout=300)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_run_covers_pool_workers_under_every_start_method(tmp_path, method):
    (tmp_path / "pool.py").write_text(textwrap.dedent(POOL))
    done = zk_cli("run", "--json", "r.json", "pool.py", method, "own.json", str(WORKERS), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    own = json.loads((tmp_path / "own.json").read_text())   # each worker's own count of its hits
    report = json.loads((tmp_path / "r.json").read_text())
    # the program's process allocates nothing of the cache's size: every hit is a worker's
    assert report["cache"]["hits"] == sum(own.values()) > 0
    # The program and every worker that ran a task are covered.  A worker
    # that got none (a loaded machine can leave all six to one) may be
    # terminated by the pool's exit before it writes its data: counted or not.
    covered = report["processes"]["covered"]
    assert 1 <= len(own) <= WORKERS and 1 + len(own) <= covered <= 1 + WORKERS
    assert report["processes"]["not_covered"] == 0
    assert f"processes: {covered} covered" in done.stderr


CHILD = """
import json, sys
import numpy as np
import zkalloc_np
a = np.ones(1 << 20); del a
b = np.ones(1 << 20); del b
print(json.dumps({"installed": zkalloc_np.is_installed(), "hits": zkalloc_np.stats().hits}))
"""

PARENT = """
import subprocess, sys
out = subprocess.run([sys.executable, "child.py"], capture_output=True, text=True, check=True).stdout
print(out.strip())
"""


def test_run_covers_a_subprocess_python_child(tmp_path):
    (tmp_path / "child.py").write_text(textwrap.dedent(CHILD))
    (tmp_path / "parent.py").write_text(textwrap.dedent(PARENT))
    done = zk_cli("run", "--json", "r.json", "parent.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "r.json").read_text())
    assert child["installed"] and report["processes"]["covered"] == 2
    assert report["cache"]["hits"] == child["hits"] >= 1


SPAWNED = """
import json, multiprocessing as mp, sys

def probe(_):
    import zkalloc_np
    return zkalloc_np.is_installed()

if __name__ == "__main__":
    with mp.get_context("spawn").Pool(1) as pool:
        print(json.dumps(pool.map(probe, [0])))
"""


def test_the_switch_installs_zkalloc_in_a_spawned_child_and_nothing_without_it(tmp_path):
    (tmp_path / "spawned.py").write_text(textwrap.dedent(SPAWNED))
    base = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}

    def run(env):
        done = subprocess.run([sys.executable, "spawned.py"], capture_output=True, text=True, cwd=tmp_path,
                              env={**base, **env}, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "SettingsWarning" not in done.stderr
        return json.loads(done.stdout)

    assert run({}) == [False]
    assert run({"ZKALLOC_SUBPROCESS": "1"}) == [True]
    reports = tmp_path / "reports"
    reports.mkdir()
    assert run({"ZKALLOC_SUBPROCESS": str(reports)}) == [True]
    written = sorted(p.suffix for p in reports.iterdir())
    # the worker only: the parent never imports numpy, so there is nothing of numpy's to install into
    assert written == [".json", ".started"]
    from zkalloc_np.cli.children import collect
    assert collect(str(reports)).covered == 1


def test_sigterm_writes_the_report_and_ends_a_worker_that_holds_a_lock(tmp_path):
    """Pool.terminate() sends SIGTERM to workers that may be anywhere: inside
    a phase's exit, holding the phase totals' lock.  The handler writes the
    report without taking any lock of the package, then dies by SIGTERM: a
    handler that waited for the lock would hang the worker, and
    Pool.terminate() with it."""
    reports = tmp_path / "reports"
    reports.mkdir()
    code = f"""
        import os, signal, time
        import numpy as np
        from zkalloc_np import _phase
        from zkalloc_np.cli import children
        children.start({str(reports)!r})
        signal.signal(signal.SIGTERM, children._write_then_die)   # what a multiprocessing worker gets
        with _phase._totals_lock:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        print("survived")
    """
    out = run_python(code, unset=["ZKALLOC_SUBPROCESS"], timeout=60)
    assert out.returncode == -signal.SIGTERM, (out.returncode, out.stdout, out.stderr)
    assert [p.suffix for p in sorted(reports.iterdir())] == [".json", ".started"]


def test_a_child_that_never_reports_is_counted_as_not_covered(tmp_path):
    from zkalloc_np.cli.children import collect
    (tmp_path / "11.started").write_text("")
    (tmp_path / "12.started").write_text("")
    cache = {"hits": 3, "misses": 1, "classes": [{"bytes": 1 << 20, "hits": 3, "misses": 1, "bytes_served": 3 << 20,
                                                  "bytes_missed": 1 << 20}]}
    (tmp_path / "12.json").write_text(json.dumps({"pid": 12, "cache": cache,
                                                  "resources": {"user_s": 0.5, "system_s": 0.25}}))
    found = collect(str(tmp_path))
    assert (found.covered, found.not_covered, found.cache.hits, found.user_s) == (1, 1, 3, 0.5)
    assert collect(str(tmp_path), exclude_pid=11).not_covered == 0


def test_the_start_up_hook_is_installed_beside_the_package():
    if os.environ.get("ZKALLOC_TEST_INSTALLED"):
        pytest.skip("checked in the checkout's editable install")
    found = [d for d in site.getsitepackages() if os.path.exists(os.path.join(d, "zkalloc_np_subprocess.pth"))]
    assert found, "zkalloc_np_subprocess.pth is not in site-packages: pip install -e . again"
    with open(os.path.join(found[0], "zkalloc_np_subprocess.pth")) as f:
        assert "ZKALLOC_SUBPROCESS" in f.read()
    from zkalloc_np.cli.info import info_lines
    line = next(line for line in info_lines({}) if line.startswith("Python children"))
    assert "zkalloc_np_subprocess.pth" in line and "not set here" in line


def test_the_hook_ships_in_the_wheel_and_the_sdist():
    import tomllib
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, "pyproject.toml")):
        pytest.skip("not a checkout")
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"]["package-data"]["zkalloc_np"]
    assert "../zkalloc_np_subprocess.pth" in data
    with open(os.path.join(root, "MANIFEST.in")) as f:
        assert "include zkalloc_np_subprocess.pth" in f.read()
