"""Type checkers find the package and its types: mypy --strict is clean on
the package and on a small user script, run from outside the checkout so
the package is found the way an installed (or editable) one is."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")

USER_SCRIPT = """
import numpy as np
import zkalloc_np as zk

zk.configure(cache_bytes="256M")
with zk.installed():
    a = np.ones(1 << 20)
s: zk.Stats = zk.stats()
rate: float = s.hit_rate
with zk.phase("commit") as ph:
    b = np.zeros(1 << 18)
print(ph.stats.peak_bytes, zk.owns(a), rate, repr(ph), zk.HANDLER_NAME)
"""


def mypy(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", os.path.join(cwd, ".mypy"),
                           *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    return str(tmp_path_factory.mktemp("typing"))


def test_package_is_strict_clean(outside):
    done = mypy("-p", "zkalloc_np", cwd=outside)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout


def test_a_user_script_is_strict_clean_and_really_typed(outside):
    good = os.path.join(outside, "user.py")
    with open(good, "w") as f:
        f.write(textwrap.dedent(USER_SCRIPT))
    done = mypy(good, cwd=outside)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "import-not-found" not in done.stdout
    # the types are real, not Any: a wrong use is caught
    bad = os.path.join(outside, "wrong.py")
    with open(bad, "w") as f:
        f.write("import zkalloc_np as zk\nname: str = zk.stats().hits\n")
    done = mypy(bad, cwd=outside)
    assert done.returncode == 1 and "Incompatible types in assignment" in done.stdout, done.stdout


def test_a_misspelt_setting_is_a_type_error(outside):
    """configure() has a typed keyword per setting: a misspelt name is caught
    by the type checker, not only at run time (where it is a TypeError)."""
    bad = os.path.join(outside, "misspelt.py")
    with open(bad, "w") as f:
        f.write("import zkalloc_np as zk\nzk.configure(cache_byte='1G')\n")
    done = mypy(bad, cwd=outside)
    assert done.returncode == 1 and 'Unexpected keyword argument "cache_byte"' in done.stdout, done.stdout
