"""Many threads: arrays handed across threads, stamped and checked."""
import contextlib
import gc
import queue
import random
import threading
import warnings

import numpy as np

import zkalloc_np as zk

THREADS = 8
ROUNDS = 60
SIZES = [64 * 1024, 100 * 1024, 1 << 20, 3 << 20, 5 << 20, 9 << 20]


def test_cross_thread_frees_no_corruption_no_leak(fresh):
    zk.install()
    inboxes = [queue.Queue() for _ in range(THREADS)]
    errors = []

    def check_and_drop(item):
        stamp, arr = item
        if not (arr == stamp).all():
            errors.append(f"stamp {stamp} corrupted")

    def worker(me):
        rng = random.Random(me)
        for i in range(ROUNDS):
            stamp = me * 1000 + i
            n = rng.choice(SIZES) // 8
            arr = np.zeros(n, np.int64) if i % 2 else np.empty(n, np.int64)
            if i % 2 and arr.any():
                errors.append("np.zeros was not zero")
            arr.fill(stamp)
            inboxes[rng.randrange(THREADS)].put((stamp, arr))
            while True:
                try:
                    check_and_drop(inboxes[me].get_nowait())
                except queue.Empty:
                    break

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for box in inboxes:
        while not box.empty():
            check_and_drop(box.get())
    assert errors == []
    s = zk.stats()
    assert s.bytes_in_use == 0
    assert s.hits > 0
    zk.check()


def test_thread_exit_returns_its_cache(fresh):
    def worker():
        with zk.installed():
            a = np.ones(1 << 20)
            del a   # parked in this thread's cache

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    zk.check()   # the exited thread's region is in the shared pool, not lost
    with zk.installed():
        b = np.ones(1 << 20)
    assert zk.owns(b)
    assert zk.stats().hits == 1


@contextlib.contextmanager
def region_parked_in_a_live_thread():
    """A thread frees an 8 MiB array (idle in its own cache) and stays alive
    for the body of the with block."""
    parked, done = threading.Event(), threading.Event()

    def producer():
        with zk.installed():
            a = np.ones(1 << 20)
            del a
        parked.set()
        done.wait()

    t = threading.Thread(target=producer)
    t.start()
    try:
        parked.wait()
        yield
    finally:
        done.set()
        t.join()


def test_release_reaches_other_threads_caches(fresh):
    with region_parked_in_a_live_thread():
        assert zk.stats().bytes_cached == 8 << 20
        assert zk.release() == 8 << 20
        assert zk.stats().bytes_cached == 0 and zk.stats().bytes_mapped == 0


def test_region_parked_by_a_live_thread_serves_another(fresh):
    with region_parked_in_a_live_thread():
        with zk.installed():
            b = np.ones(1 << 20)
        s = zk.stats()
        assert (s.hits, s.misses, s.bytes_mapped) == (1, 1, 8 << 20)
        del b


def test_fromstring_realloc_without_gil_in_threads(fresh):
    # Text-mode fromstring grows its buffer with realloc and releases the GIL
    # while it parses: the handler must be thread-safe on its own.
    text = " ".join(str(i) for i in range(300_000))
    expected = np.arange(300_000, dtype=np.float64)   # numpy's memory: not counted below
    zk.install(min_bytes=4096)
    results = []

    def worker():
        for _ in range(3):
            results.append(np.array_equal(np.fromstring(text, sep=" "), expected))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 12
    s = zk.stats()
    assert s.realloc_remap + s.realloc_copy + s.realloc_same > 0
    assert s.bytes_in_use == 0



def test_check_under_traffic_raises_nothing_and_changes_nothing(fresh):
    """check() in a loop while threads allocate, fill and free (numpy arrays,
    np.zeros, raw-domain bytes, and np.fromstring, whose reallocs run
    without the GIL, as check() does): it used to read-modify-write the flags
    of regions their owners were changing (a lost update can leave a region
    marked zero that is not: np.zeros would then hand out old bytes) and to
    report totals that moved under it as broken invariants.  Now it never
    writes, and it answers True (exact) or False (busy), never
    InvariantError; np.zeros stays zero; at rest it is exact."""
    import time
    errors, answers = [], []
    stop = threading.Event()

    def checker():
        while not stop.is_set():
            try:
                answers.append(zk.check())
            except zk.InvariantError as exc:
                errors.append(str(exc))

    text = " ".join(["7"] * 300_000)

    def parser(me):   # grows its buffer by realloc with the GIL released
        rng = random.Random(me)
        while not stop.is_set():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                np.fromstring(text[: rng.randrange(1, len(text))], sep=" ")

    def worker(me):
        rng = random.Random(me)
        held = []
        while not stop.is_set():
            n = rng.choice(SIZES) // 8
            if rng.random() < 0.5:
                arr = np.zeros(n, np.int64)
                if arr[:: max(1, n // 64)].any() or arr[-1]:
                    errors.append("np.zeros was not zero")
            else:
                arr = np.empty(n, np.int64)
            arr.fill(me + 1)
            held.append(arr)
            held.append(bytes(rng.choice(SIZES)))   # the raw domain
            if len(held) > 6:
                del held[: rng.randrange(1, 6)]

    with zk.installed():
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
        threads += [threading.Thread(target=parser, args=(k,)) for k in range(2)]
        threads.append(threading.Thread(target=checker))
        for t in threads:
            t.start()
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert len(answers) > 0
    gc.collect()
    assert zk.check() is True   # nothing in flight now: exact
    assert zk.stats().bytes_in_use == 0
