"""Children under a sanitized build: the sanitizer runtime stays first in their
LD_PRELOAD (zkalloc_np.cli.sanitizer), preloaded peers are skipped with why, and
the no_asan marker skips with its reason only under ASan."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zkalloc_np.cli import compare as _compare, peers as _peers, sanitizer as _sanitizer
from conftest import UNDER_ASAN

ASAN = "/usr/lib/gcc/x86_64-linux-gnu/12/libasan.so"
STDCXX = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30"
UBSAN = "/usr/lib/x86_64-linux-gnu/libubsan.so.1"
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


@pytest.mark.parametrize("entry,runtime", [
    (ASAN, True), ("libasan.so.8", True), (UBSAN, True), ("/opt/llvm/lib/libclang_rt.asan-x86_64.so", True),
    ("libtsan.so.2", True), (JEMALLOC, False), ("libtcmalloc_minimal.so.4", False), (STDCXX, False),
    ("/home/asan/libfoo.so", False),
])
def test_runtimes_are_told_by_file_name(entry, runtime):
    assert _sanitizer.is_runtime(entry) is runtime


def test_preload_entries_split_on_colons_and_spaces():
    assert _sanitizer.preload_entries(f" {ASAN}:{STDCXX}  {JEMALLOC}: ") == [ASAN, STDCXX, JEMALLOC]
    assert _sanitizer.preload_entries(None) == [] and _sanitizer.preload_entries("") == []


def test_runtime_preloads_keep_their_order_and_libstdcxx_only_beside_a_runtime():
    assert _sanitizer.runtime_preloads({"LD_PRELOAD": f"{ASAN}:{STDCXX}:{JEMALLOC}:{UBSAN}"}) == [ASAN, STDCXX, UBSAN]
    assert _sanitizer.runtime_preloads({"LD_PRELOAD": f"{STDCXX}:{JEMALLOC}"}) == []
    assert _sanitizer.runtime_preloads({}) == []


def test_own_preloads_are_the_rest():
    assert _sanitizer.own_preloads({"LD_PRELOAD": f"{ASAN}:{STDCXX}:{JEMALLOC}"}) == [JEMALLOC]
    assert _sanitizer.own_preloads({"LD_PRELOAD": f"{STDCXX}:{JEMALLOC}"}) == [STDCXX, JEMALLOC]
    assert _sanitizer.own_preloads({}) == []


def test_a_peer_child_gets_the_runtime_first_then_the_peer():
    parent = {"LD_PRELOAD": f"{ASAN}:{STDCXX}:/x/libother.so", "HOME": "/root"}
    env = _sanitizer.child_environment({"LD_PRELOAD": JEMALLOC, "MALLOC_CONF": "a:1"}, parent)
    assert env == {"HOME": "/root", "MALLOC_CONF": "a:1", "LD_PRELOAD": f"{ASAN}:{STDCXX}:{JEMALLOC}"}
    assert parent["LD_PRELOAD"] == f"{ASAN}:{STDCXX}:/x/libother.so"     # the parent's mapping is not changed


def test_a_stripped_child_keeps_only_the_runtime():
    assert _sanitizer.child_environment({}, {"LD_PRELOAD": f"/x/libother.so:{ASAN}"})["LD_PRELOAD"] == ASAN
    assert "LD_PRELOAD" not in _sanitizer.child_environment({"A": "1"}, {"LD_PRELOAD": "/x/libother.so"})
    assert _sanitizer.child_environment({"LD_PRELOAD": JEMALLOC}, {})["LD_PRELOAD"] == JEMALLOC


def test_a_runtime_is_not_repeated():
    assert _sanitizer.child_preload(f"{ASAN}:{JEMALLOC}", {"LD_PRELOAD": ASAN}) == f"{ASAN}:{JEMALLOC}"
    assert _sanitizer.child_preload([], {}) is None


def test_preloaded_peers_are_skipped_beside_a_sanitizer_runtime_with_why():
    parent = {"LD_PRELOAD": f"{ASAN}:{STDCXX}"}
    cache = {"libtcmalloc_minimal.so.4": sys.executable}    # any existing file stands for the library
    envs, skipped = _peers.environments({n: _peers.PEERS[n] for n in ("glibc-tuned", "tcmalloc")}, cache, parent)
    assert set(envs) == {"glibc-tuned"} and envs["glibc-tuned"]["MALLOC_MMAP_MAX_"] == "0"
    assert skipped == {"tcmalloc": "not measurable under the sanitizer runtime (libasan.so comes first in "
                                   "LD_PRELOAD and its malloc replaces the peer's)"}
    envs, skipped = _peers.environments({"tcmalloc": _peers.PEERS["tcmalloc"]}, cache, {})
    assert envs == {"tcmalloc": {"LD_PRELOAD": sys.executable}} and skipped == {}


def test_compare_children_keep_this_process_runtime(monkeypatch, tmp_path):
    """compare's child of the default allocator sees this process's
    sanitizer runtime first, and none of its other preloads."""
    seen = tmp_path / "preload"
    prog = tmp_path / "prog.py"
    prog.write_text(f"import os\nopen({str(seen)!r}, 'w').write(os.environ.get('LD_PRELOAD', '<none>'))\n")
    runtime = _sanitizer.runtime_preloads()
    monkeypatch.setenv("LD_PRELOAD", ":".join([*runtime, "/nonexistent/libother.so"]))
    record = _compare.run_once(_compare.Program(str(prog), ()), "default", {}, 0, timeout=300,
                               show_output=False, workdir=str(tmp_path))
    assert record.ok, record
    assert seen.read_text() == (":".join(runtime) if runtime else "<none>")


def test_asan_detection_reads_the_runtime_not_the_environment():
    """asan_active() reads the runtime's symbols: a child without the runtime
    says False whatever its environment claims, and here it says whether
    libasan is mapped."""
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('s', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print(m.asan_active())")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["ZKALLOC_UNDER_ASAN"] = "1"
    done = subprocess.run([sys.executable, "-c", code, _sanitizer.__file__], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    with open("/proc/self/maps") as f:
        mapped = any(os.path.basename(line.split()[-1]).startswith("libasan") for line in f if "/" in line)
    assert _sanitizer.asan_active() is mapped


@pytest.mark.no_asan(reason="the marker's own test: it must be skipped under ASan")
def test_no_asan_runs_only_without_asan():
    assert not UNDER_ASAN
