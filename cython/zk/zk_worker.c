/*
 * The background worker: first-touch faults and np.zeros' memset moved off
 * the caller's thread.  Opt-in (background=1); its CPU time is counted
 * (worker_cpu_ns), so a speed-up is reported with what it cost.
 *
 * Faulting ahead.  A miss that maps fresh memory costs its faults on the
 * caller's thread: 1.2-1.4 GB/s on 4 KiB pages here, against ~27 GB/s to
 * write resident memory.  While a prover's working set grows (the cold
 * first proof, a Merkle tree's levels, a trace's columns), the same classes
 * miss again and again.  A miss in a class asks the worker to fault the
 * class's next region ahead (fresh, MADV_POPULATE_WRITE) and park it idle;
 * when a request takes such a region the class is still growing, so the
 * worker faults one more.  A class that stops growing stops asking.
 * Bounds: at most one region per class outstanding; speculation never
 * evicts (a region that does not fit under the cap is not faulted) and the
 * bytes faulted ahead and not used stay under max(64 MiB, in use / 8).
 * Decay gives back what is never used.
 *
 * Zeroing ahead.  An np.zeros that hits a resident region pays a memset of
 * it on the caller's thread.  When most recent requests of a class were
 * np.zeros and its users write densely (zk_zero.c), its freed regions go to
 * the pool (not the thread cache, where the worker cannot see them) and the
 * worker zeroes them, oldest first, one at a time: it takes the region out
 * of the pool, so a request never gets it half done (a request that finds
 * none takes another region, or misses: one region more, at most, than
 * without the worker).  A zeroed region is write-protected so that the
 * kernel tracks writes to it (zk_wp.c); the request that takes it asks the
 * kernel whether anything wrote it since (a stale pointer) and skips the
 * memset only if not.  The order closes every window: zero, then protect,
 * then read the region back (on the worker): a write that landed between
 * the memset and the protection is seen by the read, any later one by the
 * kernel.  Only regions on huge pages are worth it: on 4 KiB pages the
 * protection costs more than the memset it saves (zk_wp.c).
 *
 * The thread starts at the first request for it, runs at SCHED_IDLE (it
 * only takes a core nobody else wants; when every core is busy it barely
 * runs, and requests simply find regions not yet zeroed or faulted, and do
 * the work themselves as without it), parks on a condition variable when
 * idle, and exits when background is turned off.  A fork child has none
 * until its own first request for it.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#include "zk_internal.h"

#define MIN_AHEAD_BYTES ((size_t)256 << 10)   /* below this faults are cheap */
#define AHEAD_BUDGET_MIN ((uint64_t)64 << 20)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static bool wanted[ZK_NCLASSES];      /* a region of the class to fault ahead */
static int nwanted;
static bool dirty[ZK_NCLASSES];       /* idle regions of the class to zero ahead */
static int ndirty;
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

/* MADV_POPULATE_WRITE holds the mmap lock for reading while it runs, and a
 * request's mmap or munmap needs it for writing: one call for a 64 MiB
 * region on 4 KiB pages held the caller up ~40 ms.  A huge page at a time
 * lets it in between. */
static void populate_in_steps(zk_region *r)
{
    for (size_t off = 0; off < r->bytes; off += ZK_HUGE_BYTES) {
        size_t n = r->bytes - off < ZK_HUGE_BYTES ? r->bytes - off : ZK_HUGE_BYTES;
        (void)zk_os_populate((void *)(r->base + off), n);
    }
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
    populate_in_steps(r);
    zk_in_use_uncount(r);
    zk_count(&zk_stats.prefaulted_bytes, r->bytes);   /* before a request can take it */
    atomic_store_explicit(&r->state, ZK_REGION_IDLE, memory_order_release);
    return zk_cache_park_ahead(r);   /* false: given back (which forgot it) */
}

/* The first class flagged in `flags`, unflagged; -1 when none (lock held). */
static int next_flagged(bool *flags, int *count)
{
    if (*count == 0)
        return -1;
    for (int c = 0; c < ZK_NCLASSES; c++)
        if (flags[c]) {
            flags[c] = false;
            (*count)--;
            return c;
        }
    return -1;
}

/* ---- zeroing ahead ----------------------------------------------------------- */

static bool worth_zeroing(const zk_region *r)
{
    return !(r->flags & (ZK_RF_ZEROED | ZK_RF_ZERO | ZK_RF_PLAIN_PAGES | ZK_RF_SMALL_PAGES | ZK_RF_MULTI));
}

/* Whether r's class is one the worker zeroes ahead (background on, huge
 * regions, np.zeros requests that a memset serves). */
static bool class_zeroed_ahead(const zk_region *r)
{
    return zk_opt_background() && r->bytes >= ZK_HUGE_BYTES && zk_zero_ahead_pays(r->cls, r->bytes);
}

bool zk_zero_ahead_wanted(const zk_region *r)
{
    return class_zeroed_ahead(r) && worth_zeroing(r) && zk_wp_ready();
}

/* The region being zeroed: its class (-1: none) and a generation that
 * changes with every region, so a waiting request knows when that region
 * is back.  A request that needs it sets `cancel`; the worker stops within
 * one CHUNK, puts it back unfinished and leaves the rest of the class to the
 * requests (they need its regions now, faster than it zeroes them). */
#define CHUNK ((size_t)2 << 20)
#define WAIT_NS 2000000L   /* a request waits at most this long, then misses */
static _Atomic int zeroing_cls = -1;
static _Atomic uint64_t zeroing_gen;
static _Atomic bool cancel;
static pthread_cond_t zeroing_done = PTHREAD_COND_INITIALIZER;

static bool cancelled(void)
{
    return atomic_load_explicit(&cancel, memory_order_relaxed);
}

static bool all_zero(const unsigned char *c, size_t bytes)
{
    static const unsigned char zeros[4096];
    for (size_t at = 0; at < bytes; at += sizeof zeros)
        if (memcmp(c + at, zeros, bytes - at < sizeof zeros ? bytes - at : sizeof zeros) != 0)
            return false;
    return true;
}

/* Zero r (out of the pool, held by the worker) and protect it, unless it is
 * on 4 KiB pages.  Chunk by chunk (a huge page each, so protecting one does
 * not split a huge page): memset, protect, read back.  The read-back sees a
 * write that landed between the memset and the protection, the kernel any
 * later one; reading the chunk just written costs little (it is in cache).
 * A request that needs the region cancels it (checked between chunks). */
static void zero_and_protect(zk_region *r)
{
    unsigned char *p = (unsigned char *)r->base;
    size_t small = zk_wp_small_page_bytes(p, r->bytes);
    if (small > r->bytes / 8) {
        r->flags |= ZK_RF_PLAIN_PAGES;
        return;
    }
    if (zk_wp_register(p, r->bytes) != 0)
        return;   /* not tracked: left as it was */
    size_t off = 0;
    bool zero = true;
    for (; off < r->bytes && zero && !cancelled(); off += CHUNK) {
        size_t n = r->bytes - off < CHUNK ? r->bytes - off : CHUNK;
        memset(p + off, 0, n);
        zero = zk_wp_protect(p + off, n) == 0 && all_zero(p + off, n);
    }
    if (off >= r->bytes && zero) {
        r->flags |= ZK_RF_ZEROED;
        zk_count(&zk_stats.background_zeroed_bytes, r->bytes);
        return;
    }
    zk_wp_unprotect(p, off < r->bytes ? off : r->bytes);
}

/* Back in the pool as its newest region, so the next request of the class
 * takes it; or, if release() or a trim ran while the worker held it, back to
 * the kernel as they would have sent it. */
static void put_back(zk_region *r, uint64_t epoch)
{
    if (zk_cache_release_epoch() != epoch) {
        zk_idle_uncount(r);
        zk_zeroed_ahead_drop(r);
        zk_count(&zk_stats.released_bytes, r->bytes);
        zk_heap_give_back(r);
        return;
    }
    r->stamp = zk_cache_next_stamp();
    zk_pool_relink(r);
}

/* The worker is done with its region: wake the requests waiting for it.
 * Returns whether one of them had cancelled it. */
static bool zeroing_finished(void)
{
    pthread_mutex_lock(&lock);
    atomic_store(&zeroing_cls, -1);
    bool was = atomic_exchange(&cancel, false);
    pthread_cond_broadcast(&zeroing_done);
    pthread_mutex_unlock(&lock);
    return was;
}

/* Zero the idle regions of cls, oldest first, one at a time; each goes back
 * as the newest of the pool, so the next request of the class takes it.
 * zeroing_cls is set before the claim: a request that finds the pool empty
 * because of the claim then sees it (sequentially consistent atomics). */
/* A class whose program frees and asks again with no time in between
 * leaves the worker behind: its requests take regions the worker has not
 * reached (and memset them), or cancel the one it holds.  The worker then
 * only competes with its caller, for memory bandwidth and the cache
 * (msm_buckets ran up to 1.18x slower with it).  So when, of the last
 * OUTCOMES np.zeros of a class, most found no zeroed region, or one
 * cancelled the worker, it lets the class's next `backoff` frees pass
 * unzeroed, twice as many each time it happens again (up to MAX_BACKOFF);
 * a period where it keeps ahead halves it. */
#define MAX_BACKOFF 256u
#define OUTCOMES 16u
static _Atomic uint32_t backoff_len[ZK_NCLASSES], backoff_left[ZK_NCLASSES];
static _Atomic uint32_t outcomes[ZK_NCLASSES], behind[ZK_NCLASSES];

static void back_off(int cls, bool fell_behind)
{
    uint32_t len = atomic_load_explicit(&backoff_len[cls], memory_order_relaxed);
    if (fell_behind)
        len = len == 0 ? 1 : len < MAX_BACKOFF ? 2 * len : MAX_BACKOFF;
    else
        len /= 2;
    atomic_store_explicit(&backoff_len[cls], len, memory_order_relaxed);
    atomic_store_explicit(&backoff_left[cls], fell_behind ? len : 0, memory_order_relaxed);
}

void zk_worker_outcome(const zk_region *r, bool zeroed_ahead)
{
    int cls = r->cls;
    if (!class_zeroed_ahead(r) || cls < 0 || cls >= ZK_NCLASSES ||
        atomic_load_explicit(&backoff_left[cls], memory_order_relaxed) > 0)
        return;   /* not such a class, or backing off: its regions are not zeroed on purpose */
    if (!zeroed_ahead)
        atomic_fetch_add_explicit(&behind[cls], 1, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&outcomes[cls], 1, memory_order_relaxed) + 1 < OUTCOMES)
        return;
    uint32_t late = atomic_exchange_explicit(&behind[cls], 0, memory_order_relaxed);
    atomic_store_explicit(&outcomes[cls], 0, memory_order_relaxed);
    back_off(cls, late > OUTCOMES / 2);
}

static void zero_class_ahead(int cls)
{
    while (zk_opt_background()) {
        atomic_fetch_add(&zeroing_gen, 1);
        atomic_store(&zeroing_cls, cls);
        uint64_t epoch = zk_cache_release_epoch();
        zk_region *r = zk_pool_claim_oldest(cls, worth_zeroing);
        if (r != NULL) {
            zero_and_protect(r);
            put_back(r, epoch);
        }
        bool cancelled = zeroing_finished();
        if (cancelled) {
            zk_count(&zk_stats.zero_ahead_cancels, 1);
            back_off(cls, true);
        }
        if (cancelled || r == NULL)
            return;
    }
}

bool zk_worker_wait_zeroing(int lo, int hi)
{
    int c = atomic_load(&zeroing_cls);
    if (c < lo || c > hi)
        return false;
    uint64_t gen = atomic_load(&zeroing_gen);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += WAIT_NS;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&lock);
    /* The worker finishes a region only under this lock: if it is still the
     * same one now, the cancel is for it. */
    if (atomic_load(&zeroing_cls) == c && atomic_load(&zeroing_gen) == gen)
        atomic_store(&cancel, true);
    int rc = 0;
    while (rc == 0 && atomic_load(&zeroing_cls) == c && atomic_load(&zeroing_gen) == gen)
        rc = pthread_cond_timedwait(&zeroing_done, &lock, &deadline);
    bool back = atomic_load(&zeroing_cls) != c || atomic_load(&zeroing_gen) != gen;
    pthread_mutex_unlock(&lock);
    return back;
}

bool zk_zeroed_ahead_take(zk_region *r, bool check)
{
    r->flags &= ~ZK_RF_ZEROED;
    bool clean = check && !zk_wp_written((void *)r->base, r->bytes);
    zk_wp_unprotect((void *)r->base, r->bytes);   /* its user's writes must not fault */
    if (check)
        zk_count(clean ? &zk_stats.zeroed_hits : &zk_stats.zeroed_stale, 1);
    return clean;
}

void zk_zeroed_ahead_drop(zk_region *r)
{
    if (r->flags & ZK_RF_ZEROED)
        (void)zk_zeroed_ahead_take(r, false);
}

const char *zk_zero_ahead_status(void)
{
    return zk_wp_status();
}

static void *worker(void *arg)
{
    (void)arg;
    struct sched_param none = {0};
    (void)sched_setscheduler(0, SCHED_IDLE, &none);   /* a spare core only */
    uint64_t cpu = thread_cpu_ns();
    pthread_mutex_lock(&lock);
    while (zk_opt_background()) {
        int cls = next_flagged(wanted, &nwanted);
        bool zero = cls < 0;
        if (zero)
            cls = next_flagged(dirty, &ndirty);
        if (cls < 0) {
            pthread_cond_wait(&wake, &lock);
            continue;
        }
        pthread_mutex_unlock(&lock);
        if (zero)
            zero_class_ahead(cls);
        else
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

/* Flag cls in `flags` and wake the worker, starting it if need be. */
static void ask(bool *flags, int *count, int cls)
{
    pthread_mutex_lock(&lock);
    if (!flags[cls]) {
        flags[cls] = true;
        (*count)++;
    }
    if (!running)
        start_locked();
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
}

/* A fresh miss is growth only when the class missed before with no
 * release() or trim in between: a loop's first round maps its working set
 * once, and a program that gives its memory back and maps it again is not
 * growing (faulting ahead there only races the program's own faults, and
 * the next release() throws the region away).  Per class, the release epoch
 * (plus one: 0 is "never") of its last fresh miss. */
static _Atomic uint64_t miss_epoch[ZK_NCLASSES];

void zk_worker_growth(int cls, bool confirmed)
{
    if (!zk_opt_background() || cls < 0 || zk_class_bytes(cls) < MIN_AHEAD_BYTES)
        return;
    uint64_t epoch = zk_cache_release_epoch() + 1;
    if (!confirmed && atomic_exchange_explicit(&miss_epoch[cls], epoch, memory_order_relaxed) != epoch)
        return;
    ask(wanted, &nwanted, cls);
}

/* Every free of such a class calls this: the flag is read without the lock
 * first (a missed wake-up is only a region zeroed by its caller instead). */
void zk_worker_parked(int cls)
{
    if (cls < 0 || cls >= ZK_NCLASSES || __atomic_load_n(&dirty[cls], __ATOMIC_RELAXED))
        return;
    uint32_t left = atomic_load_explicit(&backoff_left[cls], memory_order_relaxed);
    if (left > 0) {   /* backing off (racy on purpose: a count of frees to skip, roughly) */
        atomic_store_explicit(&backoff_left[cls], left - 1, memory_order_relaxed);
        return;
    }
    ask(dirty, &ndirty, cls);
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
        wanted[c] = dirty[c] = false;
    nwanted = ndirty = 0;
    zk_wp_fork_child();   /* the parent's descriptors describe the parent */
    pthread_cond_t fresh_done = PTHREAD_COND_INITIALIZER;
    zeroing_done = fresh_done;
    atomic_store(&zeroing_cls, -1);
    atomic_store(&cancel, false);
    if (running)
        zk_stats_gauge_sub(&zk_stats.worker_running, 1);
    running = false;
}

void zk_worker_forget(void)
{
    for (int c = 0; c < ZK_NCLASSES; c++) {
        atomic_store_explicit(&backoff_len[c], 0, memory_order_relaxed);
        atomic_store_explicit(&backoff_left[c], 0, memory_order_relaxed);
        atomic_store_explicit(&outcomes[c], 0, memory_order_relaxed);
        atomic_store_explicit(&behind[c], 0, memory_order_relaxed);
        atomic_store_explicit(&miss_epoch[c], 0, memory_order_relaxed);
    }
}
