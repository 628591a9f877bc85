"""numpy's own tests under zkalloc (zkalloc_np.pytest_plugin): a subset of
numpy/_core/tests runs twice side by side, with numpy's default handler and
with zkalloc installed process-wide at min_bytes=1 (every array from the
cache), and every test must end the same way in both.  The README has the
command for the whole of numpy/_core/tests."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy
import pytest

from zkalloc_np.pytest_plugin import DESELECT_UNDER_INSTALL

#: Modules of numpy._core.tests that run in CI (about 2300 tests, 30-45 s each way), those of them
#: that the running numpy has (test_multithreading first shipped in numpy 2.1; tools/matrix.sh
#: runs this file with numpy 2.0).
SUBSET = [m for m in ["test_mem_policy", "test_numeric", "test_item_selection", "test_indexing", "test_nditer",
                      "test_regression", "test_api", "test_memmap", "test_multithreading"]
          if importlib.util.find_spec(f"numpy._core.tests.{m}") is not None]
PLUGIN = ["-p", "zkalloc_np.pytest_plugin"]


def run_numpy_tests(tmp: Path, name: str, modules: list[str], extra: list[str]) -> tuple[dict[str, str], str]:
    """Run numpy test modules in a subprocess; outcome per test id, and the output."""
    xml = tmp / f"{name}.xml"
    # rootdir: numpy's package, so test ids name their module and numpy's conftest applies
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
           f"--rootdir={Path(numpy.__file__).parent}", f"--junitxml={xml}", *extra, "--pyargs", *[f"numpy._core.tests.{m}" for m in modules]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}
    # test_mem_policy runs `meson` from PATH: the one the test extra put next to this Python
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    run_dir = tmp / name
    run_dir.mkdir()
    proc = subprocess.run(cmd, cwd=run_dir, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert xml.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return outcomes(xml), proc.stdout + proc.stderr


def outcomes(xml: Path) -> dict[str, str]:
    result = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        state = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                state = child.tag
            elif child.tag == "skipped":
                state = "xfailed" if "xfail" in (child.get("type", "") + child.get("message", "")) else "skipped"
        result[f"{case.get('classname')}::{case.get('name')}"] = state
    return result


def is_deselected(test_id: str) -> bool:
    return any(file.endswith(test_id.split("::")[0].split(".")[-1] + ".py") and
               test_id.split("::")[-1].split("[")[0] == name for file, name in DESELECT_UNDER_INSTALL)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("numpy-suite")
    jobs = {
        "baseline": (SUBSET, []),
        "install": (SUBSET, PLUGIN),
        "installed": (["test_mem_policy"], [*PLUGIN, "--zkalloc-mode=installed"]),
        "install-all": (["test_mem_policy"], [*PLUGIN, "--zkalloc-keep-default-handler-tests"]),
    }
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(run_numpy_tests, tmp, name, mods, extra)
                   for name, (mods, extra) in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


#: A test of test_mem_policy that needs the extension it builds, in every numpy 2.x and not
#: marked slow (test_set_policy is slow from numpy 2.5 on, so `-m "not slow"` drops it).
MEM_POLICY_PROBE = "_core.tests.test_mem_policy::test_policy_propagation"


def numpy_skips_mem_policy(baseline: dict[str, str]) -> bool:
    """numpy 2.0.x skips its memory-policy tests on Python >= 3.12 ("no
    numpy.distutils"); tools/matrix.sh runs that combination."""
    return baseline.get(MEM_POLICY_PROBE) == "skipped"


MEM_POLICY_SKIPPED = "numpy skips test_mem_policy here (numpy 2.0.x on Python >= 3.12: no numpy.distutils)"


def test_subset_passes_as_without_zkalloc(runs):
    baseline, _ = runs["baseline"]
    under, output = runs["install"]
    assert "zkalloc check: ok" in output, output[-3000:]
    expected = {k: v for k, v in baseline.items() if not is_deselected(k)}
    assert len(expected) == len(baseline) - len(DESELECT_UNDER_INSTALL)
    assert under == expected
    assert sum(v == "passed" for v in under.values()) > 2000
    # the memory-policy tests really built their extension and ran
    if not numpy_skips_mem_policy(baseline):
        assert under[MEM_POLICY_PROBE] == "passed"


def test_mem_policy_as_is_under_installed(runs):
    baseline, _ = runs["baseline"]
    if numpy_skips_mem_policy(baseline):
        pytest.skip(MEM_POLICY_SKIPPED)
    under, output = runs["installed"]
    assert "zkalloc check: ok" in output and "mode=installed" in output
    assert under == {k: v for k, v in baseline.items() if ".test_mem_policy::" in k}


def test_deselected_tests_are_exactly_those_asserting_numpys_default(runs):
    if numpy_skips_mem_policy(runs["baseline"][0]):
        pytest.skip(MEM_POLICY_SKIPPED)
    under, output = runs["install-all"]
    failed = {k.split("::")[1] for k, v in under.items() if v in ("failure", "error")}
    # test_thread_locality's assertion fails in its child thread, which pytest
    # reports as a warning, not as a failure of the test
    if "PytestUnhandledThreadExceptionWarning" in output and "concurrent_thread2" in output:
        failed.add("test_thread_locality")
    assert failed == {name for _, name in DESELECT_UNDER_INSTALL}, output[-3000:]
