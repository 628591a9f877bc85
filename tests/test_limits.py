"""Out of memory is a MemoryError, and the process goes on."""
from conftest import run_python


def test_memory_error_under_small_rlimit_as():
    result = run_python("""
        import resource, numpy as np, zkalloc_np as zk
        with zk.installed():
            warm = np.ones(1 << 20)          # the cache works before the limit
        del warm
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))
        with zk.installed():
            try:
                np.empty(1 << 30, np.uint8)
            except MemoryError:
                print("MemoryError")
            ok = np.ones(1 << 20)          # still working after the failure
            assert zk.owns(ok) and ok.sum() == 1 << 20
        zk.check()
        print("alive", zk.stats().map_failures)
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] == "MemoryError" and lines[1] == "alive" and int(lines[2]) >= 1


def test_idle_cache_is_released_to_satisfy_a_limit():
    # The idle cache holds memory a new request needs: the core gives it back
    # and retries rather than failing.
    result = run_python("""
        import resource, numpy as np, zkalloc_np as zk
        with zk.installed():
            a = np.ones(200 << 20, np.uint8)
            del a                           # 200 MiB idle
            vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (vm + (100 << 20), resource.RLIM_INFINITY))
            b = np.ones(250 << 20, np.uint8)   # fits only without the idle region
            assert zk.owns(b)
        print(zk.stats().released_bytes)
    """)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 200 << 20
