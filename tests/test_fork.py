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
