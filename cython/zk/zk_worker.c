/*
 * The background worker: first-touch faults moved off the caller's thread.
 *
 * A miss that maps fresh memory costs its faults on the caller's thread:
 * 1.2-1.4 GB/s on 4 KiB pages here, against ~27 GB/s to write resident
 * memory.  While a prover's working set grows (the cold first proof, a
 * Merkle tree's levels, a trace's columns), the same classes miss again and
 * again.  With background=1 a miss in a class asks the worker to fault the
 * class's next region ahead (fresh, MADV_POPULATE_WRITE) and park it idle;
 * when a request takes such a region the class is still growing, so the
 * worker faults one more.  The faults then run on another core while numpy
 * computes.  A class that stops growing (its regions come back and are
 * reused) stops asking.
 *
 * What it does not do: pre-zero freed regions for np.zeros.  A region
 * zeroed ahead would be handed out without a memset, so a stale pointer
 * writing into it after the worker zeroed it would turn into an np.zeros
 * that is not zero; detecting such a write costs a read of the region,
 * no cheaper than the memset it would save here.
 *
 * Bounds: at most one region per class outstanding; speculation never
 * evicts (a region that does not fit under the cap is not faulted) and the
 * bytes faulted ahead and not used stay under max(64 MiB, in use / 8).
 * Decay gives back what is never used.
 *
 * The thread starts at the first request for it, runs at SCHED_IDLE (it
 * only takes a core nobody else wants), parks on a condition variable when
 * idle, and exits when background is turned off.  A fork child has none
 * until its own first miss.  Its CPU time is counted (worker_cpu_ns), so a
 * speed-up can be reported with what it cost.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "zk_internal.h"

#define MIN_AHEAD_BYTES ((size_t)256 << 10)   /* below this faults are cheap */
#define AHEAD_BUDGET_MIN ((uint64_t)64 << 20)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static bool wanted[ZK_NCLASSES];      /* a region of the class to fault ahead */
static int nwanted;
static bool running;

static uint64_t budget(void)
{
    uint64_t in_use = atomic_load_explicit(&zk_stats.bytes_in_use, memory_order_relaxed);
    return in_use / 8 > AHEAD_BUDGET_MIN ? in_use / 8 : AHEAD_BUDGET_MIN;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Fault one region of cls ahead and park it; false if it should not be. */
static bool fault_ahead(int cls)
{
    size_t bytes = zk_class_bytes(cls);
    if (atomic_load_explicit(&zk_stats.prefault_idle_bytes, memory_order_relaxed) + bytes > budget())
        return false;
    bool sample, huge;
    zk_heap_lock();
    zk_region *r = zk_heap_fresh(cls, bytes, &sample, &huge);
    if (r != NULL) {   /* flagged and counted under the lock: a fork child sees what it is */
        r->flags |= ZK_RF_PREFAULTED;   /* with ZK_RF_ZERO: fresh pages, never handed out */
        zk_count(&zk_stats.prefault_idle_bytes, r->bytes);
    }
    zk_heap_unlock();
    if (r == NULL)
        return false;
    /* In use until parked: nobody else can see it while it is faulted. */
    zk_in_use_count(r);
    (void)zk_os_populate((void *)r->base, r->bytes);
    zk_in_use_uncount(r);
    zk_count(&zk_stats.prefaulted_bytes, r->bytes);   /* before a request can take it */
    atomic_store_explicit(&r->state, ZK_REGION_IDLE, memory_order_release);
    return zk_cache_park_ahead(r);   /* false: given back (which forgot it) */
}

static int next_wanted(void)
{
    for (int c = 0; c < ZK_NCLASSES; c++)
        if (wanted[c]) {
            wanted[c] = false;
            nwanted--;
            return c;
        }
    return -1;
}

static void *worker(void *arg)
{
    (void)arg;
    struct sched_param none = {0};
    (void)sched_setscheduler(0, SCHED_IDLE, &none);   /* a spare core only */
    uint64_t cpu = thread_cpu_ns();
    pthread_mutex_lock(&lock);
    while (zk_opt_background()) {
        int cls = next_wanted();
        if (cls < 0) {
            pthread_cond_wait(&wake, &lock);
            continue;
        }
        pthread_mutex_unlock(&lock);
        (void)fault_ahead(cls);
        uint64_t now = thread_cpu_ns();
        zk_count(&zk_stats.worker_cpu_ns, now - cpu);
        cpu = now;
        pthread_mutex_lock(&lock);
    }
    running = false;
    zk_stats_gauge_sub(&zk_stats.worker_running, 1);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void start_locked(void)
{
    running = zk_os_start_thread(worker) == 0;
    if (running)
        zk_count(&zk_stats.worker_running, 1);
}

void zk_worker_growth(int cls)
{
    if (!zk_opt_background() || cls < 0 || zk_class_bytes(cls) < MIN_AHEAD_BYTES)
        return;
    pthread_mutex_lock(&lock);
    if (!wanted[cls]) {
        wanted[cls] = true;
        nwanted++;
    }
    if (!running)
        start_locked();
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
}

/* background=0 at run time: the worker wakes, sees it and exits. */
void zk_worker_setting_changed(void)
{
    pthread_mutex_lock(&lock);
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
}

/* The child of a fork has no worker; the parent's lock may have been held
 * by it at the fork, so everything starts anew. */
void zk_worker_fork_child(void)
{
    pthread_mutex_t fresh_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    lock = fresh_lock;
    wake = fresh_cond;
    for (int c = 0; c < ZK_NCLASSES; c++)
        wanted[c] = false;
    nwanted = 0;
    if (running)
        zk_stats_gauge_sub(&zk_stats.worker_running, 1);
    running = false;
}
