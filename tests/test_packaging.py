"""What a user installs: one version in the code and the metadata, ``info``
naming the numpy the extension was built against, and, in CI's wheel run
(ZKALLOC_TEST_INSTALLED=1, set by .ci/run and tools/matrix.sh), a package
imported from the environment's site-packages, never from the checkout."""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import zkalloc_np as zk
from zkalloc_np import _core

INSTALLED_RUN = os.environ.get("ZKALLOC_TEST_INSTALLED") == "1"
#: The tree these tests were read from (a checkout, or an unpacked sdist).
TEST_TREE = Path(__file__).resolve().parent.parent


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def test_version_is_single_sourced():
    from zkalloc_np._version import __version__
    assert zk.__version__ == __version__
    assert importlib.metadata.version("zkalloc-np") == zk.__version__


def test_info_prints_version_and_both_numpys(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}
    done = subprocess.run([sys.executable, "-m", "zkalloc_np", "info"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"zkalloc-np {zk.__version__}" in done.stdout
    assert f"numpy: running {np.__version__}, extension built against {_core.NUMPY_BUILD_VERSION}" in done.stdout
    # built against numpy 2 headers (build-system.requires numpy>=2.0)
    assert _version_tuple(_core.NUMPY_BUILD_VERSION) >= (2, 0)


@pytest.mark.skipif(not INSTALLED_RUN, reason="only in the installed-wheel run (ZKALLOC_TEST_INSTALLED=1, set by .ci/run)")
def test_installed_package_is_not_the_checkout():
    package = Path(zk.__file__).resolve().parent
    trees = {TEST_TREE}
    if os.environ.get("ZKALLOC_TEST_SOURCE_TREE"):
        trees.add(Path(os.environ["ZKALLOC_TEST_SOURCE_TREE"]).resolve())
    for tree in trees:
        assert not package.is_relative_to(tree), f"zkalloc_np imported from {package}, inside {tree}"
    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    assert package.parent in site, f"zkalloc_np imported from {package}, not from {sorted(map(str, site))}"
    assert Path(_core.__file__).resolve().parent == package
    # installed from a wheel, not an editable install pointing back at a tree
    direct_url = importlib.metadata.distribution("zkalloc-np").read_text("direct_url.json")
    if direct_url:
        assert not json.loads(direct_url).get("dir_info", {}).get("editable", False), direct_url


# -- the metadata pip and PyPI read (pyproject.toml) ---------------------------------

def _installed() -> importlib.metadata.Distribution:
    """The installed distribution's own metadata (its dist-info in site-packages), not a
    zkalloc_np.egg-info that setuptools left in the tree the tests run from."""
    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    for dist in importlib.metadata.distributions(name="zkalloc-np"):
        where = getattr(dist, "_path", None)
        if where is not None and Path(where).resolve().parent in site:
            return dist
    pytest.skip("zkalloc-np is not installed in this environment's site-packages")


def _metadata():
    return _installed().metadata


def test_classifiers_name_the_pythons_typing_status_and_topic():
    classifiers = set(_metadata().get_all("Classifier") or [])
    supported = {f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14)}
    assert supported <= classifiers, supported - classifiers
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers), classifiers
    assert any(c.startswith("Topic :: ") for c in classifiers), classifiers
    assert "Operating System :: POSIX :: Linux" in classifiers
    # requires-python and the classifiers say the same thing
    assert _metadata()["Requires-Python"] == ">=3.10"


def test_the_licence_is_readable_by_old_and_new_pip():
    meta = _metadata()
    # pip 23.2 (Python 3.11's venv) `pip show` prints the License field only; an SPDX
    # License-Expression alone reads as an empty `License:` there.
    assert meta["License"] == "MIT"
    assert "LICENSE" in (meta.get_all("License-File") or [])


def test_no_project_url_is_a_relative_path():
    for entry in _metadata().get_all("Project-URL") or []:
        label, _, url = entry.partition(", ")
        assert re.match(r"https?://", url), f"Project-URL {label!r} is not a URL: {url!r}"


def _editable_install() -> bool:
    direct_url = _installed().read_text("direct_url.json")
    return bool(direct_url) and json.loads(direct_url).get("dir_info", {}).get("editable", False)


def test_only_the_package_is_importable_from_another_folder(tmp_path):
    """An editable install exposes zkalloc_np only: the checkout's other folders (bench,
    tests, examples, tools) and setup.py are not importable from a script elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("ZKALLOC_")}
    code = ("import importlib.util, json, zkalloc_np\n"
            "print(json.dumps({name: importlib.util.find_spec(name) is not None\n"
            "                  for name in ('bench', 'tests', 'examples', 'tools', 'setup')}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert not any(found.values()), f"importable from {tmp_path}: {[n for n, f in found.items() if f]}"


@pytest.mark.skipif(INSTALLED_RUN, reason="the checkout's own editable install")
@pytest.mark.no_asan(reason="the sanitizer mode runs the tests of a copy of the checkout, and the editable "
                            "install resolves to the checkout itself")
def test_the_editable_install_resolves_the_checkout_package(tmp_path):
    if not _editable_install():
        pytest.skip("zkalloc-np is not installed editable here")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", "import zkalloc_np, os; print(os.path.realpath(zkalloc_np.__file__))"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == TEST_TREE / "zkalloc_np" / "__init__.py"
