/*
 * The cache: what a request goes through.
 *
 *   hit:    this thread's cache, the pool, other threads' caches, then a
 *           region one class larger (no lock on the first);
 *   miss:   idle memory of other classes reshaped (zk_repurpose.c), then
 *           fresh memory from the heap (zk_heap.c), both under the heap
 *           lock; a fresh region is left lazy and measured at free, and
 *           only a class shown to write its regions whole gets huge pages
 *           and np.empty's fresh regions faulted in at once, timed
 *           (zk_thp.c);
 *   free:   this thread's cache, else the pool, evicting the least recently
 *           used regions to stay under the cap.
 *
 * Lock order: heap -> tcache registry -> pool -> descriptors.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>

#include "zk_internal.h"

#define REMAP_MIN_BYTES ((size_t)1 << 20)   /* below this memcpy beats mremap */
/* A hit may take a region one class larger (at most 1.125x) whole; beyond
 * that a miss carves exactly what it needs out of a larger idle region
 * (zk_repurpose.c), so idle memory is not handed out as slack. */
#define LARGER_CLASSES 1

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

void zk_cache_init(void)
{
    pthread_once(&init_once, zk_fork_init);
}

/* ---- hits ------------------------------------------------------------------------ */

/* An idle region of class cls, now in use: this thread's cache first (no
 * lock), then the pool, then other threads' caches. */
static zk_region *take_cached(int cls)
{
    zk_tcache *tc = zk_tcache_mine();
    zk_region *r = tc != NULL ? zk_tcache_pop(tc, cls) : NULL;
    if (r == NULL)
        r = zk_pool_pop(cls);
    if (r == NULL)
        r = zk_tcache_take_anywhere(tc, cls);
    if (r == NULL)
        return NULL;
    zk_idle_uncount(r);
    atomic_store_explicit(&r->state, ZK_REGION_IN_USE, memory_order_relaxed);
    return r;
}

/* A region one class larger (at most 1.125x the bytes), handed out whole:
 * sizes that change a little every round find each other's regions without
 * reshaping anything. */
static zk_region *take_larger(int cls)
{
    for (int c = cls + 1; c <= cls + LARGER_CLASSES && c < ZK_NCLASSES; c++) {
        zk_region *r = take_cached(c);
        if (r != NULL)
            return r;
    }
    return NULL;
}

/* ---- misses ---------------------------------------------------------------------- */

typedef struct {
    bool zeroed;          /* asked for by np.zeros (calloc): the first-touch policy's hint */
    bool hit;
    bool fresh;           /* a miss that mapped fresh memory */
    bool repurposed;      /* a miss served from idle memory of other classes */
    zk_first_touch touch; /* a fresh mapping's first touch (zk_thp.c) */
    bool huge;            /* its huge-page choice */
    size_t fresh_tail;    /* a gathered region's fresh end */
} obtain_info;

static zk_region *miss(int cls, obtain_info *info)
{
    zk_heap_lock();
    zk_region *r = zk_repurpose(cls, &info->fresh_tail);
    info->repurposed = r != NULL;
    if (r == NULL) {
        r = zk_heap_fresh(cls, zk_class_bytes(cls), info->zeroed, &info->touch, &info->huge);
        info->fresh = r != NULL;
    }
    zk_heap_unlock();
    return r;
}

static size_t page_rounded(const zk_region *r, size_t bytes)
{
    size_t want = zk_round_up(bytes != 0 ? bytes : 1, zk_os_page_size());
    return want < r->bytes ? want : r->bytes;
}

/* A region handed out for less than its earlier users wrote keeps their
 * pages past the request resident, and the class's slack (up to 25%, more
 * for a region one class larger or carved from idle memory) then grows the
 * RSS of a program whose sizes vary round to round.  Those pages go back
 * (MADV_DONTNEED) when they are worth a syscall: at least 1/32 of the
 * region and 64 KiB.  extent tracks how far users wrote, so a loop that
 * asks for the same size every round never pays for it.
 *
 * But a program whose sizes go up and down round to round (a phase's
 * scratch of random sizes, a working set drawn anew each round) wants the
 * pages back: dropped every round, they fault back every round (phase_burst:
 * 1,036 faults a round, 1.7x the time, for 7% of RSS).  So it is learned
 * from the program: a region whose slack was dropped and that is next
 * handed out for more than it kept counts as the pages coming back
 * (+RETURN_WEIGHT), and while the count is above zero slack stays, each
 * kept drop counting it down by one, so a drop is tried again now and then
 * (phase_burst: 64 faults a round) and a program that stopped growing back
 * gets its RSS back within RETURN_MAX handouts; memory pressure
 * (zk_decay.c) makes slack go again at once.  One count for the process,
 * not per class: sizes that move move across classes, and a class learns
 * too slowly (16 buffers a round over ~10 classes: 584 faults a round in
 * phase_burst's first 20 rounds, against 212 with one count). */
#define SLACK_SHARE 32u
#define SLACK_MIN_BYTES ((size_t)64 << 10)
#define RETURN_WEIGHT 128u
#define RETURN_MAX 1024u

static _Atomic uint32_t slack_returns;   /* the process's count (above) */

/* r, reused (not fresh, not repurposed: their extent is not r's own), is
 * handed out for `want`: was its dropped slack wanted back? */
static void learn_slack_return(zk_region *r, size_t want)
{
    if ((r->flags & ZK_RF_SLACK_GONE) && want > r->extent) {
        uint32_t n = atomic_load_explicit(&slack_returns, memory_order_relaxed) + RETURN_WEIGHT;
        atomic_store_explicit(&slack_returns, n < RETURN_MAX ? n : RETURN_MAX, memory_order_relaxed);
    }
}

/* Memory is wanted (zk_decay.c): slack goes again, whatever came back. */
void zk_cache_forget_slack_returns(void)
{
    atomic_store_explicit(&slack_returns, 0, memory_order_relaxed);
}

/* Whether slack may go now: not while dropped pages have been coming back
 * (each kept drop counts that down). */
static bool slack_may_go(void)
{
    uint32_t n = atomic_load_explicit(&slack_returns, memory_order_relaxed);
    if (n == 0)
        return true;
    atomic_store_explicit(&slack_returns, n - 1, memory_order_relaxed);
    return false;
}

static void drop_slack(zk_region *r, size_t bytes, const obtain_info *info)
{
    size_t want = page_rounded(r, bytes);
    if (!info->fresh && !info->repurposed)
        learn_slack_return(r, want);
    r->flags &= ~ZK_RF_SLACK_GONE;
    /* A repurposed region's pages come from other regions: unknown.  A
     * region split off a larger one (zk_heap_split) may carry the larger
     * one's extent: never past its own end. */
    size_t extent = info->fresh ? 0 : info->repurposed || r->extent == 0 || r->extent > r->bytes ? r->bytes
                                                                                               : r->extent;
    size_t min = r->bytes / SLACK_SHARE > SLACK_MIN_BYTES ? r->bytes / SLACK_SHARE : SLACK_MIN_BYTES;
    if (extent > want && extent - want >= min && slack_may_go() &&
        zk_os_discard((void *)(r->base + want), extent - want) == 0) {
        zk_count(&zk_stats.slack_dropped_bytes, extent - want);
        extent = want;
        r->flags |= ZK_RF_SLACK_GONE;
    }
    r->extent = extent > want ? extent : want;
}

static zk_region *obtain_counted(int cls, size_t bytes, obtain_info *info)
{
    zk_region *r = take_cached(cls);
    if (r == NULL)
        r = take_larger(cls);
    info->hit = r != NULL;
    if (r != NULL) {
        zk_count(&zk_stats.hits, 1);
        zk_count(&zk_stats.class_hits[cls], 1);
    } else {
        r = miss(cls, info);
        if (r == NULL && zk_cache_release() > 0)
            r = miss(cls, info);   /* idle regions were in the way of a limit */
        if (r == NULL) {
            zk_count(&zk_stats.map_failures, 1);
            return NULL;
        }
        zk_count(&zk_stats.misses, 1);
        zk_count(&zk_stats.class_misses[cls], 1);
    }
    drop_slack(r, bytes, info);
    r->flags &= ~ZK_RF_SOFT;   /* wanted again: written pages are plain pages */
    atomic_store_explicit(&r->site, 0, memory_order_relaxed);   /* a tracked request names its own (zk_peak.c) */
    atomic_store_explicit(&r->origin, ZK_ORIGIN_UNKNOWN, memory_order_relaxed);   /* and its requester */
    zk_in_use_count(r);
    return r;
}

/* From the first list a region leaves to the gauge that counts it in use,
 * the request is in flight for zk_check(). */
static zk_region *obtain(size_t bytes, bool zeroed, obtain_info *info)
{
    memset(info, 0, sizeof *info);
    info->zeroed = zeroed;
    int cls = zk_class_of(bytes != 0 ? bytes : 1);
    if (cls < 0)
        return NULL;
    zk_decay_wake();
    zk_traffic_counts *traffic = zk_traffic_begin();
    zk_region *r = obtain_counted(cls, bytes, info);
    zk_traffic_end(traffic);
    return r;
}

/* Huge pages on a fresh region only where they make no class slack
 * resident: a request that ends short of its last huge page would have up
 * to 2 MiB past its end faulted in with it (numpy's default leaves its
 * mapping's partial end on 4 KiB pages).  Where that would exceed 1/32 of
 * the request, the region goes on 4 KiB pages.  hugepages=1 is obeyed. */
#define HUGE_OVERHANG_SHARE 32u

static void fit_huge_pages(zk_region *r, obtain_info *info, size_t want)
{
    if (!info->huge || zk_opt(ZK_OPT_HUGEPAGES) == ZK_HUGEPAGES_ON)
        return;
    size_t end = zk_round_up(want, ZK_HUGE_BYTES);
    if (end > r->bytes || (end - want) * HUGE_OVERHANG_SHARE <= want)
        return;   /* the mapping ends first (no huge page there), or little slack */
    zk_os_advise_small_pages((void *)r->base, r->bytes);
    info->huge = false;
    if (info->touch == ZK_TOUCH_LAZY)
        info->touch = ZK_TOUCH_TIMED;   /* 4 KiB pages now: a fault each, unless populated */
}

/* A fresh region for np.empty: faulted in at once (one syscall instead of a
 * fault per page) only where its class has shown that it writes its regions
 * whole (zk_thp.c), and then only the requested bytes, timed for the
 * first-touch policy; left lazy on the huge pages of such a class, and
 * otherwise left lazy and measured at free.  Outside every lock: it can
 * take milliseconds. */
static void populate_fresh(zk_region *r, obtain_info *info, size_t bytes)
{
    size_t want = page_rounded(r, bytes);
    if (info->fresh)
        fit_huge_pages(r, info, want);
    if (info->touch == ZK_TOUCH_TIMED) {
        uint64_t t0 = zk_thp_now_ns();
        if (zk_os_populate((void *)r->base, want) == 0)
            zk_thp_record(want, info->huge, zk_thp_now_ns() - t0);
        zk_count(&zk_stats.populated_bytes, want);
    } else if (info->fresh && info->touch == ZK_TOUCH_WATCH) {
        zk_touch_watch(r, bytes);
    } else if (info->fresh_tail >= ZK_HUGE_BYTES && zk_touch_dense(r->cls)) {
        size_t from = r->bytes - info->fresh_tail;   /* a gathered region's fresh end */
        if (want > from) {
            (void)zk_os_populate((void *)(r->base + from), want - from);
            zk_count(&zk_stats.populated_bytes, want - from);
        }
    }
}

static zk_region *cache_alloc(size_t bytes, obtain_info *info)
{
    zk_region *r = obtain(bytes, false, info);
    if (r == NULL)
        return NULL;
    zk_zero_for_write(r);   /* its user will write it */
    if (!info->hit)
        populate_fresh(r, info, bytes);
    return r;
}

void *zk_cache_alloc(size_t bytes)
{
    obtain_info info;
    zk_region *r = cache_alloc(bytes, &info);
    return r != NULL ? (void *)r->base : NULL;
}

static zk_region *cache_calloc(size_t bytes, obtain_info *info)
{
    zk_region *r = obtain(bytes, true, info);
    if (r == NULL)
        return NULL;
    zk_zero_for_calloc(r, bytes);
    if (info->fresh) {
        fit_huge_pages(r, info, page_rounded(r, bytes));
        zk_touch_watch(r, bytes);   /* lazy zeros: measured at free */
    }
    return r;
}

void *zk_cache_calloc(size_t bytes)
{
    obtain_info info;
    zk_region *r = cache_calloc(bytes, &info);
    return r != NULL ? (void *)r->base : NULL;
}

/* zk_cache_alloc / zk_cache_calloc that also say how the request was served
 * (for a phase's accounting, zk_scope.c). */
void *zk_cache_obtain(size_t bytes, bool zeroed, zk_obtained *out)
{
    obtain_info info;
    zk_region *r = zeroed ? cache_calloc(bytes, &info) : cache_alloc(bytes, &info);
    memset(out, 0, sizeof *out);
    if (r == NULL)
        return NULL;
    out->region = r;
    out->hit = info.hit;
    out->repurposed = info.repurposed;
    /* What the miss mapped fresh: a whole new region, or a gathered one's tail. */
    out->fresh_bytes = info.hit ? 0 : info.repurposed ? info.fresh_tail : r->bytes;
    return (void *)r->base;
}

/* ---- free ------------------------------------------------------------------------ */

static _Atomic uint64_t lru_clock;   /* LRU order: a larger stamp is newer */

/* Park r in the pool, giving back to the kernel what eviction took. */
static bool park_in_pool(zk_region *r)
{
    bool parked;
    zk_region *evicted = zk_pool_put(r, &parked);
    zk_vacate_chain(evicted, &zk_stats.evictions, &zk_stats.evicted_bytes, false);
    return parked;
}

/* Keep a region just freed: in this thread's cache when it fits, else in the
 * pool, evicting the least recently freed regions to stay under the cap.
 * When the pool alone cannot make room, the older regions sit in thread
 * caches: drain them into the pool (in stamp order) and evict from there. */
static bool keep_idle(zk_region *r)
{
    zk_tcache *tc = zk_tcache_mine();
    if (tc != NULL && zk_tcache_push(tc, r))
        return true;
    if (park_in_pool(r))
        return true;
    if (r->bytes <= zk_opt_cache_bytes()) {
        zk_tcache_drain_all();
        return park_in_pool(r);
    }
    return false;
}

static void park(zk_region *r)
{
    r->stamp = atomic_fetch_add_explicit(&lru_clock, 1, memory_order_relaxed) + 1;
    bool decay = zk_opt_decay_ms() != 0;
    uint64_t now = decay ? zk_decay_now() : 0;
    r->idle_ns = now;
    if (keep_idle(r)) {
        if (decay)
            zk_decay_parked();
        return;
    }
    zk_count(&zk_stats.uncached_frees, 1);
    zk_heap_give_back(r);
}

static bool free_region(zk_region *r)
{
    unsigned expected = ZK_REGION_IN_USE;
    /* Only one of two racing frees moves the region to idle.  A stale
     * second free is caught here only until the address is handed out
     * again: like any allocator, this one cannot survive every double free. */
    if (!atomic_compare_exchange_strong_explicit(&r->state, &expected, ZK_REGION_IDLE,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        zk_count(&zk_stats.invalid_frees, 1);
        return false;
    }
    if (r->flags & ZK_RF_SAMPLE)
        zk_zero_learn(r);
    zk_in_use_uncount(r);
    park(r);
    return true;
}

bool zk_cache_free_region(zk_region *r)
{
    /* from in use to a list (or given back): in flight for zk_check() */
    zk_traffic_counts *traffic = zk_traffic_begin();
    bool freed = free_region(r);
    zk_traffic_end(traffic);
    return freed;
}

int zk_cache_free(void *ptr)
{
    zk_region *r = zk_pagemap_get(ptr);
    if (r == NULL)
        return 0;
    (void)zk_cache_free_region(r);
    return 1;
}

int zk_cache_state(const void *ptr)
{
    zk_region *r = zk_pagemap_get(ptr);
    if (r == NULL)
        return ZK_PTR_FOREIGN;
    return atomic_load_explicit(&r->state, memory_order_acquire) == ZK_REGION_IN_USE ? ZK_PTR_IN_USE
                                                                                     : ZK_PTR_IDLE;
}

size_t zk_cache_usable(const void *ptr)
{
    zk_region *r = zk_pagemap_get(ptr);
    if (r == NULL || atomic_load_explicit(&r->state, memory_order_acquire) != ZK_REGION_IN_USE)
        return 0;
    return r->bytes;
}

/* ---- realloc --------------------------------------------------------------------- */

/* r's pages onto target (a reservation of nbytes), grown to nbytes.
 * False: nothing moved, and what is still ours of the target is given back.
 * A whole segment moves with one mremap (its old range is simply gone).  A
 * span of a larger segment must leave its range mapped (zk_os_move_keep:
 * a hole there is free for any thread's mmap until it is mapped again),
 * and that moves old_bytes as they are: the grown tail is mapped first,
 * over our own reservation, so it is never a hole either. */
static bool move_onto(void *old, size_t old_bytes, void *target, size_t nbytes, bool whole)
{
    if (whole) {
        if (zk_os_move(old, old_bytes, target, nbytes) == 0)
            return true;
        zk_heap_drop_failed_target(target, nbytes);
        return false;
    }
    char *tail = (char *)target + old_bytes;
    size_t tail_bytes = nbytes - old_bytes;
    if (zk_os_map_fixed(tail, tail_bytes) != 0) {
        (void)zk_os_unmap(target, old_bytes);          /* still our reservation */
        zk_heap_drop_failed_target(tail, tail_bytes);    /* a failed MAP_FIXED may have unmapped it */
        return false;
    }
    if (zk_os_move_keep(old, old_bytes, target) == 0)
        return true;
    (void)zk_os_unmap(tail, tail_bytes);
    zk_heap_drop_failed_target(target, old_bytes);
    return false;
}

/* Move r to a new segment of class ncls with mremap: no byte is copied, the
 * grown tail reads as zeros.  On failure r is exactly as before.
 *
 * Order matters for the ownership map: the old address is cleared before
 * mremap moves the pages away, and the target is registered only once the
 * move has succeeded (its leaf is made first, so that cannot fail), because
 * a failed MREMAP_FIXED may already have freed the target for another
 * thread's mmap (see zk_pagemap.c for why an entry must never outlive our
 * mapping). */
static int grow_by_move(zk_region *r, int ncls)
{
    size_t nbytes = zk_class_bytes(ncls);
    void *old = (void *)r->base;
    size_t old_bytes = r->bytes;
    zk_heap_lock();
    zk_region *spare = zk_heap_may_add_areas(2) ? zk_region_descriptor() : NULL;
    void *target = spare != NULL ? zk_os_reserve(nbytes, zk_region_alignment(nbytes)) : NULL;
    if (target == NULL || zk_pagemap_prepare(target) != ZK_OK) {
        if (target != NULL)
            (void)zk_os_unmap(target, nbytes);
        if (spare != NULL)
            zk_region_release_descriptor(spare);
        zk_heap_unlock();
        return ZK_ENOMEM;
    }
    zk_pagemap_clear(old);
    bool whole = zk_heap_whole_segment(r);
    if (!move_onto(old, old_bytes, target, nbytes, whole)) {
        zk_pagemap_set(old, r);   /* its leaf exists: cannot fail */
        zk_region_release_descriptor(spare);
        zk_heap_unlock();
        return ZK_ENOMEM;
    }
    /* A span moved apart from its grown tail: two areas (their page
     * offsets differ, so the kernel does not merge them). */
    uint32_t areas = zk_heap_moved_out(r, spare, !whole) + (whole ? 0u : 1u);
    r->base = (uintptr_t)target;
    zk_heap_adopt(r, nbytes, areas);
    r->cls = ncls;
    zk_pagemap_set(target, r);    /* leaf prepared above: cannot fail */
    zk_first_touch touch;   /* its user writes the grown part: not populated here */
    if (zk_thp_choose(nbytes, false, &touch))
        zk_os_advise_huge(target, nbytes);
    zk_stats_gauge_add(&zk_stats.bytes_mapped, &zk_stats.peak_bytes_mapped, nbytes - old_bytes);
    zk_heap_unlock();
    return ZK_OK;
}

void *zk_cache_realloc_region(zk_region *r, size_t bytes)
{
    void *ptr = (void *)r->base;
    int ncls = zk_class_of(bytes != 0 ? bytes : 1);
    if (ncls < 0)
        return NULL;
    r->flags &= ~ZK_RF_SAMPLE;   /* what its user touched no longer says anything */
    if (bytes <= r->bytes && r->cls - ncls <= LARGER_CLASSES) {   /* a region allocation could have given it */
        zk_count(&zk_stats.realloc_same, 1);
        size_t want = page_rounded(r, bytes);
        if (r->extent != 0 && r->extent < want)
            r->extent = want;
        return ptr;
    }
    if (ncls > r->cls && r->bytes >= REMAP_MIN_BYTES && !(r->flags & ZK_RF_MULTI)) {
        zk_traffic_counts *traffic = zk_traffic_begin();
        zk_in_use_uncount(r);
        int rc = grow_by_move(r, ncls);
        zk_in_use_count(r);
        zk_traffic_end(traffic);
        if (rc == ZK_OK) {
            r->extent = 0;   /* its user writes the grown part: unknown */
            zk_count(&zk_stats.realloc_remap, 1);
            return (void *)r->base;
        }
    }
    void *moved = zk_cache_alloc(bytes);
    if (moved == NULL)
        return bytes <= r->bytes ? ptr : NULL;   /* a shrink can always stay put */
    memcpy(moved, ptr, bytes < r->bytes ? bytes : r->bytes);
    (void)zk_cache_free_region(r);
    zk_count(&zk_stats.realloc_copy, 1);
    return moved;
}

void *zk_cache_realloc(void *ptr, size_t bytes)
{
    zk_region *r = zk_pagemap_get(ptr);
    if (r == NULL || atomic_load_explicit(&r->state, memory_order_acquire) != ZK_REGION_IN_USE)
        return NULL;
    return zk_cache_realloc_region(r, bytes);
}

/* ---- maintenance ----------------------------------------------------------------- */

/* MADV_FREE every idle region: the kernel may take the pages under memory
 * pressure, and until it does they stay warm.  This runs under the pool
 * lock on purpose: a region handed out while the advice is in flight could
 * lose bytes its new owner just wrote. */
size_t zk_cache_soften(void)
{
    zk_tcache_drain_all();
    size_t total = 0;
    zk_pool_lock();
    for (zk_region *r = zk_pool_newest(); r != NULL; r = r->lru_next) {
        if (zk_os_soften((void *)r->base, r->bytes) == 0)
            total += r->bytes;
        r->flags &= ~ZK_RF_ZERO;   /* old bytes or zeros: unknown */
    }
    zk_pool_unlock();
    zk_count(&zk_stats.softened_bytes, total);
    return total;
}

static void resident_of(zk_region *r, void *arg)
{
    size_t *total = arg;
    if (atomic_load_explicit(&r->state, memory_order_relaxed) != ZK_REGION_IDLE)
        return;
    size_t pages = zk_os_resident_pages((void *)r->base, r->bytes);
    if (pages != SIZE_MAX)
        *total += pages * zk_os_page_size();
}

/* Under the heap lock, so no idle region is given back while mincore runs. */
size_t zk_cache_idle_resident(void)
{
    size_t total = 0;
    zk_heap_lock();
    zk_region_foreach(resident_of, &total);
    zk_heap_unlock();
    return total;
}

size_t zk_cache_release(void)
{
    zk_tcache_drain_all();
    size_t total;
    zk_traffic_counts *traffic = zk_traffic_begin();   /* evicted regions are in no list until vacated */
    zk_region *chain = zk_pool_evict(0, &total);
    zk_vacate_chain(chain, NULL, &zk_stats.released_bytes, false);
    zk_traffic_end(traffic);
    zk_heap_lock();
    zk_heap_retry_unmaps();
    zk_heap_unlock();
    return total;
}

/* Evict the oldest idle regions (every thread's cache drained first) until
 * idle bytes are at most `bytes`: a phase's release_after gives back what it
 * made the cache hold beyond what it held at entry.  Returns bytes unmapped. */
size_t zk_cache_trim_to(size_t bytes)
{
    if (atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed) <= bytes)
        return 0;
    zk_tcache_drain_all();
    size_t total;
    zk_traffic_counts *traffic = zk_traffic_begin();
    zk_region *chain = zk_pool_evict(bytes, &total);
    zk_vacate_chain(chain, NULL, &zk_stats.released_bytes, false);
    zk_traffic_end(traffic);
    return total;
}

void zk_cache_trim(void)
{
    if (atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed) <= zk_opt_cache_bytes())
        return;
    zk_tcache_drain_all();   /* thread caches count against the cap too */
    size_t total;
    zk_traffic_counts *traffic = zk_traffic_begin();
    zk_region *chain = zk_pool_evict(zk_opt_cache_bytes(), &total);
    zk_vacate_chain(chain, &zk_stats.evictions, &zk_stats.evicted_bytes, false);
    zk_traffic_end(traffic);
}

/* The cap the cache has been trimmed to, as applied last (0: none yet).
 * Between zk_option_set lowering the cap and zk_option_apply trimming to
 * it, the idle regions may exceed the new cap, never this one. */
static _Atomic uint64_t applied_cap;

uint64_t zk_cache_cap_in_force(void)
{
    uint64_t now = zk_opt_cache_bytes(), applied = atomic_load_explicit(&applied_cap, memory_order_acquire);
    return applied > now ? applied : now;
}

void zk_option_apply(zk_option opt)
{
    if (opt == ZK_OPT_CACHE_BYTES) {
        zk_cache_trim();   /* a lower cap applies now, not at the next free */
        atomic_store_explicit(&applied_cap, zk_opt_cache_bytes(), memory_order_release);
    }
    if (opt == ZK_OPT_DECAY_MS)
        zk_decay_reschedule();   /* a shorter period applies from now */
    if (opt == ZK_OPT_LIBC)
        zk_libc_setting_changed();   /* while installed, applies now */
}

/* Fault `count` regions of a class in now and keep them idle.  Asking for
 * more than the cap can hold would fault memory in only to unmap it again:
 * only what fits is faulted, and a region larger than the whole cap is
 * refused up front (ZK_ECAP), nothing touched. */
int zk_cache_reserve(size_t bytes, int count)
{
    int cls = zk_class_of(bytes != 0 ? bytes : 1);
    if (cls < 0 || count < 0)
        return ZK_EINVAL;
    uint64_t cap = zk_opt_cache_bytes(), fit = cap / zk_class_bytes(cls);
    if (count > 0 && fit == 0)
        return ZK_ECAP;
    if ((uint64_t)count > fit)
        count = (int)fit;   /* the rest would be faulted in only to be evicted */
    /* What it faults in joins the idle regions under the cap: room is made
     * first (the oldest idle regions go), or the process would hold the cap
     * twice over while reserving (the fuzzer's RSS reached 2.4 GB). */
    (void)zk_cache_trim_to(cap - (uint64_t)count * zk_class_bytes(cls));
    zk_region *held = NULL;
    int got = 0;
    for (; got < count; got++) {
        obtain_info info;
        zk_region *r = obtain(bytes, false, &info);
        if (r == NULL)
            break;
        (void)zk_os_populate((void *)r->base, r->bytes);
        r->flags &= ~ZK_RF_ZERO;
        r->free_next = held;
        held = r;
    }
    while (held != NULL) {
        zk_region *next = held->free_next;
        zk_cache_free((void *)held->base);
        held = next;
    }
    if (count > 0 && got == 0)
        return ZK_ENOMEM;
    /* The cap may have refused some: report what this class holds now. */
    int64_t cached = atomic_load_explicit(&zk_stats.class_cached[cls], memory_order_relaxed);
    return cached < got ? (int)cached : got;
}
