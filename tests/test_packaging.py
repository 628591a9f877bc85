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
