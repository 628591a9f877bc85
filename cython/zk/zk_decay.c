/*
 * Decay: idle memory goes back to the kernel when nothing wants it.
 *
 * A warm cache is memory other programs cannot use; a prover service that
 * proves once a minute would hold its peak between proofs forever.  So an
 * idle region that no request has taken for decay_ms is softened
 * (MADV_FREE: the kernel may take the pages under pressure; until it does,
 * reusing them costs nothing), and after twice decay_ms it is given back
 * (zk_heap_vacate).  A region reused within decay_ms is never touched, so
 * a loop whose rounds reuse their regions loses nothing.
 *
 * Who decays:
 *  - the allocation and free paths, while the program is active: a coarse
 *    clock read each, and a pass when one is due (every decay_ms / 4);
 *  - one background thread, started lazily when a region goes idle, for
 *    when the program has gone quiet.  It naps up to 100 ms at a time,
 *    runs a pass when one is due and exits once no idle region is left.  A fork child has none until its
 *    own first idle region.
 * A pass holds the heap lock throughout (check() and fork see no region
 * half decayed) and walks only the oldest idle regions: the pool's LRU
 * order is the order they went idle.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <time.h>

#include "zk_internal.h"

#define NS_PER_MS 1000000u
#define MAX_NAP_NS (100u * NS_PER_MS)

static _Atomic uint64_t next_pass_ns;
static _Atomic int thread_running;

uint64_t zk_decay_now(void)
{
    struct timespec ts;
    /* Coarse: a few ms of resolution at a fraction of the cost, plenty for
     * periods of seconds. */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Soften or release the pool's oldest idle regions (heap lock held);
 * returns the regions to release, chained. */
static zk_region *walk_oldest(uint64_t now, uint64_t period)
{
    zk_region *chain = NULL;
    size_t softened = 0;
    zk_pool_lock();
    zk_region *r = zk_pool_oldest();
    while (r != NULL && now - r->idle_ns >= period) {
        zk_region *newer = zk_pool_newer(r);
        if (now - r->idle_ns >= 2 * period) {
            zk_pool_unlink(r);
            zk_idle_uncount(r);
            r->free_next = chain;
            chain = r;
        } else if (!(r->flags & ZK_RF_SOFT)) {
            /* Under the pool lock, as in zk_cache_soften(): nobody can take
             * the region while the advice is in flight. */
            if (zk_os_soften((void *)r->base, r->bytes) == 0)
                softened += r->bytes;
            r->flags = (r->flags | ZK_RF_SOFT) & ~ZK_RF_ZERO;
        }
        r = newer;
    }
    zk_pool_unlock();
    zk_count(&zk_stats.decayed_softened_bytes, softened);
    return chain;
}

static void pass(uint64_t now)
{
    uint64_t period = zk_opt_decay_ms() * NS_PER_MS;
    if (period == 0)
        return;
    zk_tcache_drain_older(now - period);   /* a thread that went quiet keeps none */
    uint64_t softened = atomic_load(&zk_stats.decayed_softened_bytes);
    zk_heap_lock();
    zk_region *chain = walk_oldest(now, period);
    bool decayed = chain != NULL || atomic_load(&zk_stats.decayed_softened_bytes) != softened;
    zk_vacate_chain(chain, NULL, &zk_stats.decayed_released_bytes, true);
    zk_heap_unlock();
    zk_count(&zk_stats.decay_passes, 1);
    /* the cache's memory sat idle for decay_ms, so the program
     * has gone quiet: glibc's kept blocks go back too (never while a loop
     * reuses them, which would fault them afresh every round). */
    if (decayed)
        zk_libc_trim();
}

void zk_decay_tick(uint64_t now)
{
    uint64_t ms = zk_opt_decay_ms();
    uint64_t due = atomic_load_explicit(&next_pass_ns, memory_order_relaxed);
    if (ms == 0 || now < due)
        return;
    /* One thread runs the pass; the others go on. */
    if (!atomic_compare_exchange_strong_explicit(&next_pass_ns, &due, now + ms * NS_PER_MS / 4,
                                                 memory_order_relaxed, memory_order_relaxed))
        return;
    pass(now);
}

static bool idle_left(void)
{
    return atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed) != 0;
}

static void *decay_thread(void *arg)
{
    (void)arg;
    for (;;) {
        uint64_t ms = zk_opt_decay_ms();
        if (ms == 0 || !idle_left()) {
            atomic_store_explicit(&thread_running, 0, memory_order_release);
            zk_stats_gauge_sub(&zk_stats.decay_thread, 1);
            /* A region parked between the check and the store would wait
             * for the next park: start again for it. */
            if (ms != 0 && idle_left())
                zk_decay_parked();
            return NULL;
        }
        /* Short naps, so a new decay_ms (or 0) takes effect within one;
         * the pass itself runs at most every decay_ms / 4. */
        uint64_t nap = ms * NS_PER_MS / 4 < MAX_NAP_NS ? ms * NS_PER_MS / 4 : MAX_NAP_NS;
        struct timespec ts = {(time_t)(nap / 1000000000u), (long)(nap % 1000000000u)};
        nanosleep(&ts, NULL);
        zk_decay_tick(zk_decay_now());
    }
}

void zk_decay_parked(void)
{
    int expected = 0;
    if (zk_opt_decay_ms() == 0 || atomic_load_explicit(&thread_running, memory_order_relaxed) ||
        !atomic_compare_exchange_strong_explicit(&thread_running, &expected, 1, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return;
    bool ok = zk_os_start_thread(decay_thread) == 0;
    if (ok)
        zk_count(&zk_stats.decay_thread, 1);
    else   /* no thread: the alloc/free paths still decay while active */
        atomic_store_explicit(&thread_running, 0, memory_order_release);
}

void zk_decay_reschedule(void)
{
    atomic_store_explicit(&next_pass_ns, 0, memory_order_relaxed);
}

void zk_decay_fork_child(void)
{
    if (atomic_load_explicit(&thread_running, memory_order_relaxed))
        zk_stats_gauge_sub(&zk_stats.decay_thread, 1);
    atomic_store_explicit(&thread_running, 0, memory_order_relaxed);
    atomic_store_explicit(&next_pass_ns, 0, memory_order_relaxed);
}
