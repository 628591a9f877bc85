/*
 * The cache: idle regions kept resident, per size class.
 *
 * Two tiers:
 *  - a thread cache: per thread, a few atomic slots per class.  Its owner
 *    pushes and pops without a lock; any other thread may only take a region
 *    out of a slot (atomic exchange), which is how release(), trim() and fork
 *    reclaim regions a thread holds.
 *  - the shared pool: per-class LIFO lists (the most recently freed region is
 *    the warmest) threaded through one LRU list across classes, under one
 *    mutex.  One lock is enough: a region is >= 4 KiB that its user will
 *    touch, so the lock is held for nanoseconds against microseconds of work.
 *
 * LRU order comes from a stamp taken when a region is freed, so regions that
 * wait in thread caches keep their age when they are drained into the pool.
 *
 * Accounting: a region is either in use (bytes_in_use) or idle (bytes_cached,
 * wherever it sits).  Every idle byte is reserved against the cap before the
 * region is parked, so idle memory never exceeds the cap, even briefly.
 *
 * Lock order: registry_lock -> pool_lock -> descriptor lock (zk_region.c).
 * No syscall that can take long (mmap, munmap) runs under pool_lock; soften()
 * is the one exception, by design (see there).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "zk_internal.h"

#define TCACHE_SLOTS 2
#define REMAP_MIN_BYTES ((size_t)1 << 20)   /* below this memcpy beats mremap */
#define LARGER_CLASSES 2   /* a miss may take a region this many classes larger */

typedef struct {
    zk_region *head, *tail;
} class_list;

typedef struct zk_tcache {
    _Atomic(zk_region *) slots[ZK_NCLASSES][TCACHE_SLOTS];
    _Atomic uint64_t bytes;
    struct zk_tcache *prev, *next;   /* registry, under registry_lock */
} zk_tcache;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static class_list pool_classes[ZK_NCLASSES];
static zk_region *lru_newest, *lru_oldest;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static zk_tcache *registry;
static pthread_key_t tcache_key;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static bool tcache_key_ok;
static _Thread_local zk_tcache *my_tcache;
static _Thread_local bool my_tcache_closed;   /* the thread is exiting */

static void init_once_fn(void);

/* ---- idle accounting ---------------------------------------------------- */

/* Reserve r's bytes against the cap; false if they do not fit. */
static bool count_idle(zk_region *r)
{
    uint64_t cap = zk_opt_cache_bytes();
    uint64_t cur = atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed);
    do {
        if (r->bytes > cap || cur > cap - r->bytes)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&zk_stats.bytes_cached, &cur, cur + r->bytes,
                                                    memory_order_relaxed, memory_order_relaxed));
    zk_stats_raise_peak(&zk_stats.peak_bytes_cached, cur + r->bytes);
    atomic_fetch_add_explicit(&zk_stats.class_cached[r->cls], 1, memory_order_relaxed);
    return true;
}

static void uncount_idle(zk_region *r)
{
    zk_stats_gauge_sub(&zk_stats.bytes_cached, r->bytes);
    atomic_fetch_sub_explicit(&zk_stats.class_cached[r->cls], 1, memory_order_relaxed);
}

static void count_in_use(zk_region *r)
{
    zk_stats_gauge_add(&zk_stats.bytes_in_use, &zk_stats.peak_bytes_in_use, r->bytes);
    atomic_fetch_add_explicit(&zk_stats.class_in_use[r->cls], 1, memory_order_relaxed);
}

static void uncount_in_use(zk_region *r)
{
    zk_stats_gauge_sub(&zk_stats.bytes_in_use, r->bytes);
    atomic_fetch_sub_explicit(&zk_stats.class_in_use[r->cls], 1, memory_order_relaxed);
}

/* ---- shared pool (pool_lock held) ---------------------------------------- */

/* Insert r in both lists at the place its stamp gives (newest first).  A
 * region just freed is the newest and goes in front in O(1); regions drained
 * from thread caches walk back to where they belong. */
static void pool_link(zk_region *r)
{
    class_list *cl = &pool_classes[r->cls];
    zk_region *after = cl->head;   /* first node older than r */
    zk_region *before = NULL;
    while (after != NULL && after->stamp > r->stamp) {
        before = after;
        after = after->cls_next;
    }
    r->cls_prev = before;
    r->cls_next = after;
    if (before != NULL) before->cls_next = r; else cl->head = r;
    if (after != NULL) after->cls_prev = r; else cl->tail = r;

    after = lru_newest;
    before = NULL;
    while (after != NULL && after->stamp > r->stamp) {
        before = after;
        after = after->lru_next;
    }
    r->lru_prev = before;
    r->lru_next = after;
    if (before != NULL) before->lru_next = r; else lru_newest = r;
    if (after != NULL) after->lru_prev = r; else lru_oldest = r;
}

static void pool_unlink(zk_region *r)
{
    class_list *cl = &pool_classes[r->cls];
    if (r->cls_prev != NULL) r->cls_prev->cls_next = r->cls_next; else cl->head = r->cls_next;
    if (r->cls_next != NULL) r->cls_next->cls_prev = r->cls_prev; else cl->tail = r->cls_prev;
    if (r->lru_prev != NULL) r->lru_prev->lru_next = r->lru_next; else lru_newest = r->lru_next;
    if (r->lru_next != NULL) r->lru_next->lru_prev = r->lru_prev; else lru_oldest = r->lru_prev;
    r->cls_prev = r->cls_next = r->lru_prev = r->lru_next = NULL;
}

/* Take the least recently freed region out of the pool, uncounted; the
 * caller unmaps it after dropping the lock.  Chained through free_next. */
static zk_region *pool_evict_oldest(zk_region *chain)
{
    zk_region *victim = lru_oldest;
    pool_unlink(victim);
    uncount_idle(victim);
    victim->free_next = chain;
    return victim;
}

static void destroy_chain(zk_region *chain, _Atomic uint64_t *event, _Atomic uint64_t *event_bytes)
{
    while (chain != NULL) {
        zk_region *next = chain->free_next;
        if (event != NULL)
            zk_count(event, 1);
        if (event_bytes != NULL)
            zk_count(event_bytes, chain->bytes);
        zk_region_destroy(chain);
        chain = next;
    }
}

static zk_region *pool_pop(int cls)
{
    pthread_mutex_lock(&pool_lock);
    zk_region *r = pool_classes[cls].head;
    if (r != NULL)
        pool_unlink(r);
    pthread_mutex_unlock(&pool_lock);
    return r;
}

/* Park an idle region in the pool, evicting least recently used regions
 * until it fits under the cap.  False if it cannot fit at all. */
static bool pool_put(zk_region *r)
{
    zk_region *evicted = NULL;
    bool parked = false;
    pthread_mutex_lock(&pool_lock);
    if (r->bytes <= zk_opt_cache_bytes()) {
        while (!(parked = count_idle(r)) && lru_oldest != NULL)
            evicted = pool_evict_oldest(evicted);
        if (parked)
            pool_link(r);
    }
    pthread_mutex_unlock(&pool_lock);
    destroy_chain(evicted, &zk_stats.evictions, &zk_stats.evicted_bytes);
    return parked;
}

/* ---- thread caches -------------------------------------------------------- */

static zk_region *tcache_take_slot(zk_tcache *tc, int cls, int i)
{
    /* A plain load first: most slots are empty and an exchange is a locked
     * instruction. */
    if (atomic_load_explicit(&tc->slots[cls][i], memory_order_relaxed) == NULL)
        return NULL;
    zk_region *r = atomic_exchange_explicit(&tc->slots[cls][i], NULL, memory_order_acq_rel);
    if (r != NULL)
        atomic_fetch_sub_explicit(&tc->bytes, r->bytes, memory_order_relaxed);
    return r;
}

static zk_region *tcache_pop(zk_tcache *tc, int cls)
{
    for (int i = 0; i < TCACHE_SLOTS; i++) {
        zk_region *r = tcache_take_slot(tc, cls, i);
        if (r != NULL)
            return r;
    }
    return NULL;
}

/* Only the owner pushes, so a slot it sees empty stays empty until it fills
 * it: other threads only ever empty slots. */
static bool tcache_push(zk_tcache *tc, zk_region *r)
{
    uint64_t held = atomic_load_explicit(&tc->bytes, memory_order_relaxed);
    if (r->bytes > zk_opt_thread_cache_bytes() || held > zk_opt_thread_cache_bytes() - r->bytes)
        return false;
    for (int i = 0; i < TCACHE_SLOTS; i++) {
        if (atomic_load_explicit(&tc->slots[r->cls][i], memory_order_relaxed) != NULL)
            continue;
        if (!count_idle(r))
            return false;
        atomic_fetch_add_explicit(&tc->bytes, r->bytes, memory_order_relaxed);
        atomic_store_explicit(&tc->slots[r->cls][i], r, memory_order_release);
        return true;
    }
    return false;
}

/* Move every region of tc into the pool (pool_lock held); they are already
 * counted as idle. */
static void tcache_drain_locked(zk_tcache *tc)
{
    for (int cls = 0; cls < ZK_NCLASSES; cls++)
        for (int i = 0; i < TCACHE_SLOTS; i++) {
            zk_region *r = tcache_take_slot(tc, cls, i);
            if (r != NULL)
                pool_link(r);
        }
}

static void registry_unlink(zk_tcache *tc)
{
    if (tc->prev != NULL) tc->prev->next = tc->next; else registry = tc->next;
    if (tc->next != NULL) tc->next->prev = tc->prev;
}

/* pthread key destructor: the thread is exiting; its regions go to the pool. */
static void tcache_close(void *arg)
{
    zk_tcache *tc = arg;
    pthread_mutex_lock(&registry_lock);
    pthread_mutex_lock(&pool_lock);
    tcache_drain_locked(tc);
    pthread_mutex_unlock(&pool_lock);
    registry_unlink(tc);
    pthread_mutex_unlock(&registry_lock);
    munmap(tc, sizeof *tc);
    my_tcache = NULL;
    my_tcache_closed = true;   /* frees after this point use the pool only */
}

static zk_tcache *tcache_open(void)
{
    zk_tcache *tc = mmap(NULL, sizeof *tc, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (tc == MAP_FAILED)
        return NULL;
    if (pthread_setspecific(tcache_key, tc) != 0) {
        munmap(tc, sizeof *tc);
        return NULL;
    }
    pthread_mutex_lock(&registry_lock);
    tc->prev = NULL;
    tc->next = registry;
    if (registry != NULL)
        registry->prev = tc;
    registry = tc;
    pthread_mutex_unlock(&registry_lock);
    return tc;
}

/* This thread's cache, or NULL where it has none (exiting, or no memory for
 * one): the pool alone then serves it, still correctly. */
static zk_tcache *tcache_mine(void)
{
    if (my_tcache != NULL || my_tcache_closed)
        return my_tcache;
    pthread_once(&init_once, init_once_fn);
    if (!tcache_key_ok)
        return NULL;
    my_tcache = tcache_open();
    my_tcache_closed = my_tcache == NULL;
    return my_tcache;
}

/* Empty every thread cache into the pool. */
static void drain_all_tcaches(void)
{
    pthread_mutex_lock(&registry_lock);
    pthread_mutex_lock(&pool_lock);
    for (zk_tcache *tc = registry; tc != NULL; tc = tc->next)
        tcache_drain_locked(tc);
    pthread_mutex_unlock(&pool_lock);
    pthread_mutex_unlock(&registry_lock);
}

/* ---- fork ------------------------------------------------------------------ */

/* Hold every lock across fork() so the child never inherits one taken by a
 * thread that does not exist there (the classic allocator fork deadlock). */
static void fork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
    pthread_mutex_lock(&pool_lock);
    zk_region_lock_for_fork();
}

static void fork_parent(void)
{
    zk_region_unlock_after_fork();
    pthread_mutex_unlock(&pool_lock);
    pthread_mutex_unlock(&registry_lock);
}

/* Child side of fork: a walk over every descriptor, with all three locks
 * held.  Idle regions the dead threads were moving between lists (mid-free,
 * mid-eviction) are in no list: adopt the ones still mapped, forget the ones
 * whose unmap had begun (the map entry is cleared first).  Then every gauge
 * is recounted from what the child really holds. */
typedef struct {
    zk_region *forget;
    uint64_t in_use, cached, mapped;
    int64_t class_in_use[ZK_NCLASSES], class_cached[ZK_NCLASSES];
} fork_census;

static bool in_pool(zk_region *r) { return r->lru_prev != NULL || lru_newest == r; }

static void census_region(zk_region *r, void *arg)
{
    fork_census *c = arg;
    unsigned state = atomic_load_explicit(&r->state, memory_order_relaxed);
    /* No map entry: a thread that does not exist in the child was creating,
     * growing (mremap) or unmapping this region.  Nobody here can ever free
     * or reuse it, so its descriptor goes; whatever the dead thread left
     * mapped stays leaked in the child. */
    if (!in_pool(r) && zk_pagemap_get((void *)r->base) != r) {
        r->free_next = c->forget;
        c->forget = r;
        return;
    }
    if (state == ZK_REGION_IDLE && !(r->flags & ZK_RF_MARK) && !in_pool(r))
        pool_link(r);
    r->flags &= ~ZK_RF_MARK;
    c->mapped += r->bytes;
    if (state == ZK_REGION_IN_USE) {
        c->in_use += r->bytes;
        c->class_in_use[r->cls]++;
    } else {
        c->cached += r->bytes;
        c->class_cached[r->cls]++;
    }
}

/* Mark the regions in a thread cache: they are idle but in no pool list. */
static void mark_tcache(zk_tcache *tc)
{
    for (int cls = 0; cls < ZK_NCLASSES; cls++)
        for (int i = 0; i < TCACHE_SLOTS; i++) {
            zk_region *r = atomic_load_explicit(&tc->slots[cls][i], memory_order_relaxed);
            if (r != NULL)
                r->flags |= ZK_RF_MARK;
        }
}

static void store_census(const fork_census *c)
{
    atomic_store_explicit(&zk_stats.bytes_in_use, c->in_use, memory_order_relaxed);
    atomic_store_explicit(&zk_stats.bytes_cached, c->cached, memory_order_relaxed);
    atomic_store_explicit(&zk_stats.bytes_mapped, c->mapped, memory_order_relaxed);
    for (int cls = 0; cls < ZK_NCLASSES; cls++) {
        atomic_store_explicit(&zk_stats.class_in_use[cls], c->class_in_use[cls], memory_order_relaxed);
        atomic_store_explicit(&zk_stats.class_cached[cls], c->class_cached[cls], memory_order_relaxed);
    }
}

/* In the child only the forking thread lives on: the other threads' caches
 * would never be drained by their exit, so adopt their regions now, and
 * recount, since a dead thread may have been between two steps of a free. */
static void fork_child(void)
{
    zk_region_unlock_after_fork();
    zk_tcache *tc = registry;
    while (tc != NULL) {
        zk_tcache *next = tc->next;
        if (tc != my_tcache) {
            tcache_drain_locked(tc);
            registry_unlink(tc);
            munmap(tc, sizeof *tc);
        }
        tc = next;
    }
    if (my_tcache != NULL)
        mark_tcache(my_tcache);
    fork_census census;
    memset(&census, 0, sizeof census);
    zk_region_foreach(census_region, &census);
    store_census(&census);
    pthread_mutex_unlock(&pool_lock);
    pthread_mutex_unlock(&registry_lock);
    while (census.forget != NULL) {
        zk_region *next = census.forget->free_next;
        zk_region_forget(census.forget);
        census.forget = next;
    }
    /* A thread of the parent may have stored a lower cap and been about to
     * trim (zk_option_set) when the fork happened: that thread is gone here,
     * so the child trims for it. */
    zk_cache_trim();
}

static void init_once_fn(void)
{
    tcache_key_ok = pthread_key_create(&tcache_key, tcache_close) == 0;
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void zk_cache_init(void)
{
    pthread_once(&init_once, init_once_fn);
}

/* ---- allocation ------------------------------------------------------------- */

static bool restore_huge_pages(zk_region *r);

/* Before mapping anew, look in the other threads' caches: a region freed by
 * one thread must serve a request of another (producer/consumer threads,
 * a thread that has just exited and whose cache is not drained yet).  The
 * pool is checked again under registry_lock, which a draining thread holds,
 * so a region moving from a cache to the pool is seen in one place or the
 * other.  Only on the slow path: it costs a scan of every thread's slots. */
static zk_region *take_from_anywhere(zk_tcache *mine, int cls)
{
    pthread_mutex_lock(&registry_lock);
    zk_region *r = pool_pop(cls);
    for (zk_tcache *tc = registry; tc != NULL && r == NULL; tc = tc->next)
        if (tc != mine)
            r = tcache_pop(tc, cls);
    pthread_mutex_unlock(&registry_lock);
    return r;
}

/* An idle region of class cls, now in use: this thread's cache first (no
 * lock), then the pool, then other threads' caches. */
static zk_region *take_cached(int cls)
{
    zk_tcache *tc = tcache_mine();
    zk_region *r = tc != NULL ? tcache_pop(tc, cls) : NULL;
    if (r == NULL)
        r = pool_pop(cls);
    if (r == NULL)
        r = take_from_anywhere(tc, cls);
    if (r == NULL)
        return NULL;
    uncount_idle(r);
    atomic_store_explicit(&r->state, ZK_REGION_IN_USE, memory_order_relaxed);
    return r;
}

static zk_region *map_new(int cls)
{
    zk_region *r = zk_region_create(cls);
    if (r == NULL && zk_cache_release() > 0)
        r = zk_region_create(cls);   /* idle regions were in the way of a limit */
    if (r == NULL)
        zk_count(&zk_stats.map_failures, 1);
    return r;
}

/* A miss in cls: before mapping, take a resident region one or two classes
 * larger (at most 1.5x the bytes).  Sizes that change every round (a
 * phase's mixed scratch) then find each other's regions, and the spare
 * bytes cost nothing next to the first-touch faults of a fresh mapping. */
static zk_region *take_larger(int cls)
{
    for (int c = cls + 1; c <= cls + LARGER_CLASSES && c < ZK_NCLASSES; c++) {
        zk_region *r = take_cached(c);
        if (r != NULL)
            return r;
    }
    return NULL;
}

static zk_region *obtain(size_t bytes, bool *hit)
{
    int cls = zk_class_of(bytes != 0 ? bytes : 1);
    if (cls < 0)
        return NULL;
    zk_region *r = take_cached(cls);
    if (r == NULL)
        r = take_larger(cls);
    *hit = r != NULL;
    if (r != NULL) {
        zk_count(&zk_stats.hits, 1);
        zk_count(&zk_stats.class_hits[cls], 1);
    } else {
        r = map_new(cls);
        if (r == NULL)
            return NULL;
        zk_count(&zk_stats.misses, 1);
        zk_count(&zk_stats.class_misses[cls], 1);
    }
    count_in_use(r);
    return r;
}

void *zk_cache_alloc(size_t bytes)
{
    bool hit;
    zk_region *r = obtain(bytes, &hit);
    if (r == NULL)
        return NULL;
    (void)restore_huge_pages(r);
    r->flags &= ~ZK_RF_ZERO;   /* its user will write it */
    return (void *)r->base;
}

/* Huge pages back for a region the zeroing policy had put on 4 KiB pages
 * (its user is about to write it densely).  MADV_HUGEPAGE alone would leave
 * the 4 KiB pages already there until khugepaged collapses them, and a dense
 * user writes 4 KiB pages ~15-20% slower (TLB misses); dropping them makes
 * the next touches fault in huge pages, at about the cost of one memset,
 * once.  Returns true when the region is now all zeros. */
static bool restore_huge_pages(zk_region *r)
{
    if (!(r->flags & ZK_RF_SMALL_PAGES))
        return false;
    r->flags &= ~ZK_RF_SMALL_PAGES;
    if (!zk_opt_hugepages())
        return false;
    zk_os_advise_huge((void *)r->base, r->bytes);
    return zk_os_discard((void *)r->base, r->bytes) == 0;
}

/* MADV_DONTNEED on 4 KiB pages, flagged so the free measures what the user
 * touched (zk_zero.c).  False when the kernel refuses the advice. */
static bool discard_and_sample(zk_region *r, size_t len)
{
    if (r->bytes >= ZK_HUGE_BYTES && !(r->flags & ZK_RF_SMALL_PAGES)) {
        zk_os_advise_small_pages((void *)r->base, r->bytes);
        r->flags |= ZK_RF_SMALL_PAGES;
    }
    if (zk_os_discard((void *)r->base, len) != 0)
        return false;
    r->flags |= ZK_RF_SAMPLE;
    r->sampled_bytes = len;
    return true;
}

/* Zero a region about to be handed out by calloc.  A fresh mapping already
 * is.  Otherwise memset of resident pages, or MADV_DONTNEED where this
 * class's users are known to touch few pages: see zk_zero.c for the
 * measurements and the policy. */
static void zero_for_calloc(zk_region *r, size_t bytes)
{
    if (r->flags & ZK_RF_ZERO) {
        zk_count(&zk_stats.calloc_fresh, 1);
        return;
    }
    size_t len = zk_round_up(bytes, zk_os_page_size());
    zk_zero_way way = zk_zero_choose(r->cls, bytes);
    if ((way == ZK_ZERO_DISCARD && zk_os_discard((void *)r->base, len) == 0) ||
        (way == ZK_ZERO_SAMPLE && discard_and_sample(r, len))) {
        zk_count(&zk_stats.calloc_discard, 1);
        return;
    }
    if (restore_huge_pages(r)) {   /* dropped whole: zeros already */
        zk_count(&zk_stats.calloc_discard, 1);
        return;
    }
    memset((void *)r->base, 0, bytes);
    zk_count(&zk_stats.calloc_memset, 1);
}

void *zk_cache_calloc(size_t bytes)
{
    bool hit;
    zk_region *r = obtain(bytes, &hit);
    if (r == NULL)
        return NULL;
    zero_for_calloc(r, bytes);
    r->flags &= ~ZK_RF_ZERO;
    return (void *)r->base;
}

void *zk_cache_take(size_t bytes, size_t *usable, bool *zeroed, bool *hit)
{
    zk_region *r = obtain(bytes, hit);
    if (r == NULL)
        return NULL;
    bool dropped = restore_huge_pages(r);
    *zeroed = dropped || (r->flags & ZK_RF_ZERO) != 0;
    *usable = r->bytes;
    r->flags &= ~ZK_RF_ZERO;   /* its user will write it */
    return (void *)r->base;
}

/* ---- free ------------------------------------------------------------------- */

static _Atomic uint64_t lru_clock;

/* Keep a region just freed: in this thread's cache when it fits, else in the
 * pool, evicting the least recently freed regions to stay under the cap.
 * When the pool alone cannot make room, the older regions sit in thread
 * caches: drain them into the pool (in stamp order) and evict from there. */
static void park(zk_region *r)
{
    r->stamp = atomic_fetch_add_explicit(&lru_clock, 1, memory_order_relaxed) + 1;
    zk_tcache *tc = tcache_mine();
    if (tc != NULL && tcache_push(tc, r))
        return;
    if (pool_put(r))
        return;
    if (r->bytes <= zk_opt_cache_bytes()) {
        drain_all_tcaches();
        if (pool_put(r))
            return;
    }
    zk_count(&zk_stats.uncached_frees, 1);
    zk_region_destroy(r);
}

int zk_cache_free(void *ptr)
{
    zk_region *r = zk_pagemap_get(ptr);
    if (r == NULL)
        return 0;
    unsigned expected = ZK_REGION_IN_USE;
    /* Only one of two racing frees moves the region to idle.  A stale
     * second free is caught here only until the address is mapped again for
     * another region: like any allocator, this one cannot survive every
     * double free. */
    if (!atomic_compare_exchange_strong_explicit(&r->state, &expected, ZK_REGION_IDLE,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        zk_count(&zk_stats.invalid_frees, 1);
        return 1;
    }
    if (r->flags & ZK_RF_SAMPLE)
        zk_zero_learn(r);
    uncount_in_use(r);
    park(r);
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

/* ---- realloc ---------------------------------------------------------------- */

void *zk_cache_realloc(void *ptr, size_t bytes)
{
    zk_region *r = zk_pagemap_get(ptr);
    int ncls = zk_class_of(bytes != 0 ? bytes : 1);
    if (r == NULL || ncls < 0 || atomic_load_explicit(&r->state, memory_order_acquire) != ZK_REGION_IN_USE)
        return NULL;
    r->flags &= ~ZK_RF_SAMPLE;   /* what its user touched no longer says anything */
    if (ncls <= r->cls && r->cls - ncls <= LARGER_CLASSES) {   /* a region allocation could have given it */
        zk_count(&zk_stats.realloc_same, 1);
        return ptr;
    }
    if (ncls > r->cls && r->bytes >= REMAP_MIN_BYTES) {
        uncount_in_use(r);
        int rc = zk_region_grow(r, ncls);
        count_in_use(r);
        if (rc == ZK_OK) {
            zk_count(&zk_stats.realloc_remap, 1);
            return (void *)r->base;
        }
    }
    void *moved = zk_cache_alloc(bytes);
    if (moved == NULL)
        return ncls < r->cls ? ptr : NULL;   /* a shrink can always stay put */
    memcpy(moved, ptr, bytes < r->bytes ? bytes : r->bytes);
    zk_cache_free(ptr);
    zk_count(&zk_stats.realloc_copy, 1);
    return moved;
}

/* ---- maintenance ------------------------------------------------------------ */

/* MADV_FREE every idle region: the kernel may take the pages under memory
 * pressure, and until it does they stay warm.  This runs under pool_lock on
 * purpose: a region handed out while the advice is in flight could lose
 * bytes its new owner just wrote. */
size_t zk_cache_soften(void)
{
    drain_all_tcaches();
    size_t total = 0;
    pthread_mutex_lock(&pool_lock);
    for (zk_region *r = lru_newest; r != NULL; r = r->lru_next) {
        if (zk_os_soften((void *)r->base, r->bytes) == 0)
            total += r->bytes;
        r->flags &= ~ZK_RF_ZERO;   /* old bytes or zeros: unknown */
    }
    pthread_mutex_unlock(&pool_lock);
    zk_count(&zk_stats.softened_bytes, total);
    return total;
}

/* Evict (oldest first) until idle bytes fit under the cap; with `all`, evict
 * everything. */
static size_t evict(bool all)
{
    zk_region *evicted = NULL;
    size_t total = 0;
    pthread_mutex_lock(&pool_lock);
    while (lru_oldest != NULL &&
           (all || atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed) > zk_opt_cache_bytes())) {
        total += lru_oldest->bytes;
        evicted = pool_evict_oldest(evicted);
    }
    pthread_mutex_unlock(&pool_lock);
    if (all)
        destroy_chain(evicted, NULL, &zk_stats.released_bytes);
    else
        destroy_chain(evicted, &zk_stats.evictions, &zk_stats.evicted_bytes);
    return total;
}

size_t zk_cache_release(void)
{
    drain_all_tcaches();
    return evict(true);
}

void zk_cache_trim(void)
{
    if (atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed) <= zk_opt_cache_bytes())
        return;
    drain_all_tcaches();   /* thread caches count against the cap too */
    evict(false);
}

int zk_cache_reserve(size_t bytes, int count)
{
    int cls = zk_class_of(bytes != 0 ? bytes : 1);
    if (cls < 0 || count < 0)
        return ZK_EINVAL;
    zk_region *held = NULL;
    int got = 0;
    for (; got < count; got++) {
        bool hit;
        zk_region *r = obtain(bytes, &hit);
        if (r == NULL)
            break;
        zk_os_populate((void *)r->base, r->bytes);
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

/* ---- invariant check --------------------------------------------------------- */

typedef struct {
    uint64_t in_use, idle_marked, idle_unmarked, mapped;
    const char *error;
} check_totals;

static const char *check_idle(zk_region *r)
{
    if (atomic_load_explicit(&r->state, memory_order_relaxed) != ZK_REGION_IDLE)
        return "a cached region is not marked idle";
    if (zk_pagemap_get((void *)r->base) != r)
        return "a cached region is missing from the ownership map";
    if (r->flags & ZK_RF_MARK)
        return "a region is cached twice";
    if (zk_class_bytes(r->cls) > r->bytes)
        return "a cached region is smaller than its class";
    r->flags |= ZK_RF_MARK;
    return NULL;
}

/* Never writes an in-use region: its owner may be changing its flags or,
 * in realloc, its address right now (check() is exact only when quiescent,
 * but must never corrupt). */
static void check_descriptor(zk_region *r, void *arg)
{
    check_totals *t = arg;
    unsigned state = atomic_load_explicit(&r->state, memory_order_acquire);
    t->mapped += r->bytes;
    if (zk_pagemap_get((void *)r->base) != r && t->error == NULL)
        t->error = "a mapped region is missing from the ownership map";
    if (state == ZK_REGION_IN_USE) {
        t->in_use += r->bytes;
    } else if (r->flags & ZK_RF_MARK) {
        t->idle_marked += r->bytes;
        r->flags &= ~ZK_RF_MARK;
    } else {
        t->idle_unmarked += r->bytes;
    }
}

static const char *check_locked(void)
{
    uint64_t listed = 0, lru_count = 0;
    const char *err = NULL;
    for (zk_region *r = lru_newest; r != NULL && err == NULL; r = r->lru_next) {
        err = check_idle(r);
        lru_count++;
    }
    for (int cls = 0; cls < ZK_NCLASSES && err == NULL; cls++)
        for (zk_region *r = pool_classes[cls].head; r != NULL; r = r->cls_next) {
            listed++;
            if (r->cls != cls || !(r->flags & ZK_RF_MARK))
                err = "class lists and the LRU list disagree";
        }
    if (err == NULL && listed != lru_count)
        err = "class lists and the LRU list disagree";
    for (zk_tcache *tc = registry; tc != NULL && err == NULL; tc = tc->next)
        for (int cls = 0; cls < ZK_NCLASSES && err == NULL; cls++)
            for (int i = 0; i < TCACHE_SLOTS && err == NULL; i++) {
                zk_region *r = atomic_load_explicit(&tc->slots[cls][i], memory_order_acquire);
                if (r != NULL && (err = check_idle(r)) == NULL && r->cls != cls)
                    err = "a thread cache holds a region in the wrong class";
            }
    check_totals t = {0, 0, 0, 0, NULL};
    zk_region_foreach(check_descriptor, &t);   /* also clears every mark */
    if (err != NULL)
        return err;
    if (t.error != NULL)
        return t.error;
    if (t.idle_unmarked != 0)
        return "an idle region is in no list: it was lost";
    if (t.in_use != atomic_load_explicit(&zk_stats.bytes_in_use, memory_order_relaxed))
        return "bytes_in_use does not match the regions in use";
    if (t.idle_marked != atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed))
        return "bytes_cached does not match the idle regions";
    if (t.mapped != atomic_load_explicit(&zk_stats.bytes_mapped, memory_order_relaxed))
        return "bytes_mapped does not match the mapped regions";
    if (t.idle_marked > zk_opt_cache_bytes())
        return "idle bytes exceed the cap";
    return NULL;
}

/* Meant for tests: exact only while no other thread allocates or frees. */
int zk_check(const char **what)
{
    pthread_mutex_lock(&registry_lock);
    pthread_mutex_lock(&pool_lock);
    const char *err = check_locked();
    pthread_mutex_unlock(&pool_lock);
    pthread_mutex_unlock(&registry_lock);
    if (what != NULL)
        *what = err;
    return err == NULL ? ZK_OK : ZK_ECORRUPT;
}
