"""Secret arrays: locked, guarded, never dumped, wiped, never cached; loud failures."""
from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import zkalloc_np as zk
from zkalloc_np import _core
from conftest import MiB, run_python, smaps_entry

LOCK_WORKS = bool(_core.secret_probe()[0] & _core.SECRET_PROTECTIONS["locked"])
needs_mlock = pytest.mark.skipif(not LOCK_WORKS, reason="mlock is not allowed here (RLIMIT_MEMLOCK)")
# AddressSanitizer intercepts mlock as a no-op and turns SIGSEGV into exit(1):
# the checks of locking and guard-page deaths are meaningless under it.
not_under_asan = pytest.mark.no_asan(reason="ASan fakes mlock and catches SIGSEGV")


def address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def mapped(addr: int) -> bool:
    try:
        smaps_entry(addr)
        return True
    except LookupError:
        return False


@needs_mlock
@not_under_asan
def test_arrays_in_the_block_are_locked_and_not_dumped():
    with zk.secret():
        a = np.arange(3 * 4096 // 8, dtype=np.int64)   # three pages exactly
    entry = smaps_entry(address(a))
    assert entry["Locked"] == "12 kB"
    flags = entry["VmFlags"].split()
    assert "dd" in flags and "wf" in flags and "lo" in flags
    info = zk.secret_info(a)
    assert info is not None and info.fully_protected and info.nbytes == a.nbytes
    assert (a == np.arange(3 * 4096 // 8)).all()


@needs_mlock
def test_every_size_is_secret_and_views_report_their_base():
    with zk.secret():
        arrays = [np.ones(n, np.uint8) for n in (1, 15, 4096, 70000, 3 * MiB)]
    for a in arrays:
        assert zk.is_secret(a) and a.sum() == a.size
        assert address(a) % 16 == 0
        assert zk.is_secret(a[1:]) or a.size == 1
    assert not zk.is_secret(np.ones(10)) and not zk.is_secret(np.ones(MiB))
    with pytest.raises(TypeError):
        zk.is_secret([1, 2])


@needs_mlock
def test_mapping_is_gone_after_free_and_wipes_are_counted():
    before = zk.stats()
    with zk.secret():
        a = np.ones(MiB // 8)
    addr = address(a)
    assert mapped(addr)
    during = zk.stats()
    assert during.secret_arrays == before.secret_arrays + 1
    assert during.secret_locked_bytes >= before.secret_locked_bytes + MiB
    del a
    gc.collect()
    assert not mapped(addr)
    after = zk.stats()
    assert after.secret_wiped_arrays == during.secret_wiped_arrays + 1
    assert after.secret_arrays == before.secret_arrays


@not_under_asan
@pytest.mark.parametrize("where", ["after", "before"])
def test_reading_past_either_end_faults_on_a_guard_page(where):
    out = run_python(f"""
        import ctypes, sys
        import numpy as np
        import zkalloc_np as zk
        with zk.secret(strict=False):
            a = np.arange(512, dtype=np.float64)    # 4096 bytes: one page, flush with both guards
        addr = a.__array_interface__["data"][0]
        target = addr + a.nbytes if "{where}" == "after" else addr - 1
        print("reading", flush=True)
        print(ctypes.c_uint8.from_address(target).value, flush=True)
    """)
    assert out.stdout.strip() == "reading"
    assert out.returncode == -signal.SIGSEGV, out.stderr


@needs_mlock
def test_a_forked_child_reads_zeros():
    with zk.secret():
        a = np.full(4096, 0x5A5A5A5A, dtype=np.uint32)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: report what it sees, never return into pytest
        try:
            os.write(write, str(int(a.sum())).encode())
        finally:
            os._exit(0)
    os.close(write)
    seen = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert seen == "0"
    assert int(a.sum()) == 0x5A5A5A5A * 4096


def test_the_wipe_routine_zeroes_memory_it_is_given():
    buf = np.full(10000, 0xEE, dtype=np.uint8)
    _core.secure_wipe(address(buf) + 100, 5000)
    assert (buf[:100] == 0xEE).all() and not buf[100:5100].any() and (buf[5100:] == 0xEE).all()


@needs_mlock
def test_secret_memory_never_touches_the_cache(fresh):
    before = zk.stats()
    with zk.secret():
        arrays = [np.ones(4 * MiB) for _ in range(3)]
        del arrays
        more = np.zeros(4 * MiB)
    after = zk.stats()
    for field in ("hits", "misses", "bytes_in_use", "bytes_cached", "bytes_mapped"):
        assert getattr(after, field) == getattr(before, field), field
    assert zk.is_secret(more) and not zk.owns(more)


@needs_mlock
def test_secret_under_install_and_inside_a_phase():
    zk.install()
    try:
        with zk.secret():
            a = np.ones(MiB)
        b = np.ones(MiB)
        assert zk.is_secret(a) and zk.owns(b) and not zk.is_secret(b)
    finally:
        zk.uninstall()
    with zk.phase() as ph:
        with zk.secret():
            c = np.ones(MiB)
    assert zk.is_secret(c) and not ph.owns(c)


@needs_mlock
def test_resize_keeps_it_secret_and_the_contents():
    with zk.secret():
        a = np.arange(1000, dtype=np.int64)
        old = address(a)
        a.resize(300000, refcheck=False)
    assert zk.is_secret(a) and (a[:1000] == np.arange(1000)).all()
    assert not mapped(old) or old == address(a)


@needs_mlock
def test_secret_empty_and_zeros():
    e = zk.secret_empty((64, 64), np.uint64)
    z = zk.secret_zeros(1000, np.int32)
    assert e.shape == (64, 64) and e.dtype == np.uint64 and zk.is_secret(e)
    assert z.dtype == np.int32 and not z.any() and zk.is_secret(z)


def test_bad_strict_value():
    with pytest.raises(TypeError, match="strict"):
        with zk.secret(strict="yes"):
            pass


SETPRIV = shutil.which("setpriv")
LOW_MEMLOCK = """
    import resource, warnings
    import numpy as np
    import zkalloc_np as zk
    resource.setrlimit(resource.RLIMIT_MEMLOCK, ({limit}, {limit}))
"""


def run_without_ipc_lock(code: str) -> object:
    """Run code where mlock obeys RLIMIT_MEMLOCK (root's CAP_IPC_LOCK dropped)."""
    if os.geteuid() != 0:
        return run_python(code)
    if SETPRIV is None:
        pytest.skip("running as root and setpriv (util-linux) is missing to drop CAP_IPC_LOCK")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(textwrap.dedent(code))
    try:
        return subprocess.run([SETPRIV, "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock",
                               sys.executable, f.name], capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(f.name)


@not_under_asan
def test_strict_mode_names_the_memlock_limit_at_entry():
    out = run_without_ipc_lock(LOW_MEMLOCK.format(limit=0) + """
    try:
        with zk.secret():
            np.ones(10)
    except zk.SecretMemoryError as e:
        print(e)
    """)
    assert out.returncode == 0, out.stderr
    assert "RLIMIT_MEMLOCK" in out.stdout and "ulimit -l" in out.stdout and "strict=False" in out.stdout


@not_under_asan
def test_strict_mode_names_the_limit_when_an_array_hits_it():
    out = run_without_ipc_lock(LOW_MEMLOCK.format(limit=64 * 1024) + """
    try:
        with zk.secret():
            small = np.ones(100)
            np.ones(1 << 20)
    except zk.SecretMemoryError as e:
        print(type(e.__cause__).__name__, e)
    print(zk.stats().secret_failures)
    """)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert "RLIMIT_MEMLOCK" in first and "locked" in first
    assert int(second) >= 1


@not_under_asan
def test_lenient_mode_warns_and_records_what_was_applied():
    out = run_without_ipc_lock(LOW_MEMLOCK.format(limit=0) + """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with zk.secret(strict=False):
            a = np.arange(1000)
    print(caught[0].category.__name__, "RLIMIT_MEMLOCK" in str(caught[0].message))
    info = zk.secret_info(a)
    print(info.locked, info.guarded, info.dontdump, info.wipeonfork, a.sum())
    print(zk.stats().secret_unprotected)
    """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "SecretWarning True"
    assert lines[1] == "False True True True 499500"
    assert lines[2] == "1"


@not_under_asan
def test_strict_fromstring_growing_past_the_limit_raises_secret_memory_error():
    out = run_without_ipc_lock(LOW_MEMLOCK.format(limit=8 << 20) + """
    text = " ".join(["1"] * 2_000_000)
    try:
        with zk.secret():
            np.fromstring(text, sep=" ")
    except zk.SecretMemoryError as e:
        print("SecretMemoryError", "RLIMIT_MEMLOCK" in str(e))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SecretMemoryError True"


@not_under_asan
def test_lenient_mode_warns_once_per_block_after_entry():
    out = run_without_ipc_lock(LOW_MEMLOCK.format(limit=8 << 20) + """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with zk.secret(strict=False):
            arrays = [np.ones(1 << 17) for _ in range(12)]      # 12 x 1 MiB
    unlocked = sum(not zk.secret_info(a).locked for a in arrays)
    ours = [w for w in caught if issubclass(w.category, zk.SecretWarning)]
    print(len(ours), unlocked, "locked" in str(ours[0].message), "RLIMIT_MEMLOCK" in str(ours[0].message))
    """)
    assert out.returncode == 0, out.stderr
    n, unlocked, names_it, names_limit = out.stdout.split()
    assert int(unlocked) >= 1 and n == "1" and names_it == "True" and names_limit == "True"
