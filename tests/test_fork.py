"""fork: the child inherits a consistent cache, even mid-traffic."""
from conftest import run_python


def test_child_allocates_after_fork_during_traffic():
    result = run_python("""
        import os, threading, numpy as np, zkalloc_np as zk
        zk.install()
        stop = threading.Event()
        def churn():
            while not stop.is_set():
                a = np.empty(1 << 20); a[::512] = 1; del a
        workers = [threading.Thread(target=churn) for _ in range(3)]
        for w in workers: w.start()
        statuses = []
        for _ in range(20):
            pid = os.fork()
            if pid == 0:
                try:
                    arrays = [np.full(1 << 18, 3.0) for _ in range(4)]
                    del arrays
                    a = np.zeros(1 << 20)
                    zk.check()
                    os._exit(0 if not a.any() else 3)
                except BaseException:
                    os._exit(4)
            statuses.append(os.waitpid(pid, 0)[1])
        stop.set()
        for w in workers: w.join()
        print(statuses.count(0))
    """, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "20"


def test_multiprocessing_contexts_under_install():
    result = run_python("""
        import multiprocessing as mp, numpy as np, zkalloc_np as zk

        def work(n):
            import numpy as np, zkalloc_np as zk
            zk.install()
            a = np.arange(n, dtype=np.int64)
            return int(a.sum()), zk.owns(a)

        if __name__ == "__main__":
            zk.install()
            for method in ("fork", "spawn"):
                with mp.get_context(method).Pool(2) as pool:
                    out = pool.map(work, [1 << 17] * 4)
                assert out == [((1 << 17) * ((1 << 17) - 1) // 2, True)] * 4, out
            print("ok")
    """, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_fork_while_maintenance_holds_the_locks():
    """Threads churn allocations and reallocs while another runs release(),
    soften() and cap changes (which hold the pool and registry locks the
    longest); the main thread forks 15 times and every child (and one
    grandchild each) checks the inherited cache, allocates across classes,
    releases and exits 0.  An alarm kills a child that deadlocks."""
    result = run_python("""
        import os, signal, threading, numpy as np, zkalloc_np as zk
        zk.install(min_bytes=4096)
        stop = threading.Event()
        def churn(seed):
            rng = np.random.default_rng(seed)
            while not stop.is_set():
                a = np.empty(int(rng.integers(1, 3 << 20)), np.uint8); a[::4096] = 1
                a.resize(int(rng.integers(1, 6 << 20)), refcheck=False)
                del a
        def maintain():
            sizes = [0, 8 << 20, 1 << 30]
            i = 0
            while not stop.is_set():
                (zk.release, zk.soften, lambda: zk.configure(cache_bytes=sizes[i % 3]))[i % 3]()
                i += 1
        threads = [threading.Thread(target=churn, args=(k,)) for k in range(2)]
        threads.append(threading.Thread(target=maintain))
        for t in threads: t.start()

        def child_work():
            signal.alarm(20)
            zk.check()                                 # exact: only this thread lives here
            arrays = [np.full(n, 7, np.uint8) for n in (5000, 70000, 1 << 20, 9 << 20)]
            assert all((a == 7).all() for a in arrays)
            del arrays
            z = np.zeros(3 << 20, np.uint8)
            assert not z.any()
            del z
            zk.release()
            zk.check()

        ok = 0
        for _ in range(15):
            pid = os.fork()
            if pid == 0:
                try:
                    child_work()
                    grandchild = os.fork()
                    if grandchild == 0:
                        try:
                            child_work()
                            os._exit(0)
                        except BaseException:
                            os._exit(5)
                    _, status = os.waitpid(grandchild, 0)
                    os._exit(0 if status == 0 else 6)
                except BaseException:
                    os._exit(4)
            _, status = os.waitpid(pid, 0)
            ok += status == 0
        stop.set()
        for t in threads: t.join()
        zk.check()
        print(ok)
    """, timeout=150)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "15"
