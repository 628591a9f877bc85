/*
 * Verification: zk_check() walks every structure of the cache and the heap
 * and compares them with the gauges; zk_heap_check_maps() compares the
 * segments with the kernel's own view (/proc/self/maps).
 *
 * Under traffic.  The check holds the heap, registry and pool locks, so
 * the pool's lists and the heap's spans and bins cannot change under it.
 * What can: a thread's own cache (its owner pushes and pops without a
 * lock), a region between two steps of a request (popped from a list but
 * not yet marked in use, counted in one gauge but not yet the other), and
 * the gauges themselves.  Those requests are bracketed (zk_traffic_begin
 * and _end): an attempt during which none was in flight and none began is
 * exact, and what it finds broken is broken.  Any other attempt that finds
 * something wrong is retried, and after ATTEMPTS the answer is ZK_EBUSY.
 *
 * The check writes nothing: the idle regions it finds in the lists are
 * collected in an array of its own (libc's malloc, taken before the
 * locks), never marked in the regions, whose flags their owners may be
 * changing at that moment.
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include "zk_internal.h"

#define ATTEMPTS 50
#define PAUSE_US 1000   /* between attempts: the requests in flight finish */

/* ---- requests in flight ------------------------------------------------------ */

/* Each thread counts its own requests in its thread cache (threads with
 * none, and the caches of exited threads, in zk_traffic_shared).  A request
 * counts itself begun before any of its effects (count_one), and the check
 * reads begun last, with a seq_cst read-modify-write (the latest count; no
 * load of its walk moves after it): a check that saw any effect of a
 * request sees it begun.  The check sums every thread's ended before its walk and every
 * begun after it, holding the registry lock (no cache comes or goes): as
 * each begun is at least its ended, equal sums mean that no thread had a
 * request in flight at the start or began one during the walk. */
_Alignas(64) zk_traffic_counts zk_traffic_shared;

/* Only its owner writes a thread's counts: a load and a store, no locked
 * add (which cost about 5 ns each, 20 ns an alloc/free pair).  A release
 * fence orders the begun store before every store of the request (a check
 * that saw one of them sees it begun).  gcc's TSan does not model fences,
 * so a TSan build takes the read-modify-write, which orders the same. */
static void count_one(_Atomic uint64_t *c, bool begin)
{
#if defined(__SANITIZE_THREAD__)
    atomic_fetch_add_explicit(c, 1, memory_order_seq_cst);
    (void)begin;
#else
    uint64_t now = atomic_load_explicit(c, memory_order_relaxed) + 1;
    if (begin) {
        atomic_store_explicit(c, now, memory_order_relaxed);
        atomic_thread_fence(memory_order_release);
    } else {
        atomic_store_explicit(c, now, memory_order_release);
    }
#endif
}

zk_traffic_counts *zk_traffic_begin(void)
{
    zk_traffic_counts *c = zk_tcache_traffic_mine();
    if (c == NULL) {
        atomic_fetch_add_explicit(&zk_traffic_shared.begun, 1, memory_order_seq_cst);
        return &zk_traffic_shared;
    }
    count_one(&c->begun, true);
    return c;
}

void zk_traffic_end(zk_traffic_counts *c)
{
    if (c == &zk_traffic_shared)
        atomic_fetch_add_explicit(&c->ended, 1, memory_order_release);
    else
        count_one(&c->ended, false);
}

/* Fork child, every lock held: the threads that were in flight are gone. */
void zk_traffic_fork_child(void)
{
    atomic_store(&zk_traffic_shared.ended, atomic_load(&zk_traffic_shared.begun));
    zk_tcache_traffic_balance();
}

static uint64_t traffic_ended(void)   /* registry lock held */
{
    uint64_t begun = 0, ended = atomic_load_explicit(&zk_traffic_shared.ended, memory_order_acquire);
    zk_tcache_traffic_sums(&begun, &ended, false);
    return ended;
}

static uint64_t traffic_begun(void)   /* registry lock held */
{
    uint64_t ended = 0, begun = atomic_fetch_add_explicit(&zk_traffic_shared.begun, 0, memory_order_seq_cst);
    zk_tcache_traffic_sums(&begun, &ended, true);
    return begun;
}

/* ---- the idle regions the lists hold ------------------------------------------- */

typedef struct {
    zk_region **items;
    size_t n, cap;
    bool full;       /* more than cap: the attempt is made again with more room */
} listed_set;

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(zk_region *const *)a, y = (uintptr_t)*(zk_region *const *)b;
    return x < y ? -1 : x > y;
}

static bool listed(const listed_set *set, zk_region *r)
{
    return bsearch(&r, set->items, set->n, sizeof *set->items, by_address) != NULL;
}

static listed_set *collecting;   /* the set the list walks add to (the locks held) */

static const char *check_idle(zk_region *r)
{
    if (atomic_load_explicit(&r->state, memory_order_relaxed) != ZK_REGION_IDLE)
        return "a cached region is not marked idle";
    if (zk_pagemap_get((void *)r->base) != r)
        return "a cached region is missing from the ownership map";
    if (zk_class_bytes(r->cls) > r->bytes)
        return "a cached region is smaller than its class";
    if (collecting->n == collecting->cap)
        collecting->full = true;
    else
        collecting->items[collecting->n++] = r;
    return NULL;
}

/* ---- every descriptor ---------------------------------------------------------- */

typedef struct {
    const listed_set *listed;
    uint64_t in_use, idle_listed, idle_unlisted, mapped;
    const char *error;
} check_totals;

static void check_descriptor(zk_region *r, void *arg)
{
    check_totals *t = arg;
    unsigned state = atomic_load_explicit(&r->state, memory_order_acquire);
    if (state == ZK_REGION_VACANT)
        return;   /* check_heap() */
    /* base, bytes and cls change only under the heap lock, held here */
    t->mapped += r->bytes;
    if (zk_pagemap_get((void *)r->base) != r && t->error == NULL)
        t->error = "a mapped region is missing from the ownership map";
    if (state == ZK_REGION_IN_USE) {
        t->in_use += r->bytes;
        if (zk_class_bytes(r->cls) > r->bytes && t->error == NULL)
            t->error = "a region in use is smaller than its class";
    } else if (listed(t->listed, r)) {
        t->idle_listed += r->bytes;
    } else {
        t->idle_unlisted += r->bytes;
    }
}

static uint64_t gauge(_Atomic uint64_t *g) { return atomic_load_explicit(g, memory_order_relaxed); }

/* ---- the heap's spans and bins ---------------------------------------------------- */

static bool is_vacant(const zk_region *r)
{
    return r != NULL && atomic_load_explicit(&r->state, memory_order_relaxed) == ZK_REGION_VACANT;
}

static const char *check_span(zk_region *r)
{
    if (r->addr_next != NULL &&
        (r->addr_next->addr_prev != r || r->addr_next->base != r->base + r->bytes))
        return "the spans of a segment are not contiguous";
    if (r->addr_prev != NULL && r->addr_prev->addr_next != r)
        return "the spans of a segment are not linked both ways";
    if (!is_vacant(r))
        return NULL;
    if (zk_pagemap_get((void *)r->base) == r)
        return "a vacant span is in the ownership map";
    if (is_vacant(r->addr_next))
        return "two vacant spans touch: they were not merged";
    if (zk_heap_binnable(r) != ((r->flags & ZK_RF_BINNED) != 0))
        return "a vacant span of a shared segment is not binned";
    return NULL;
}

/* Sum of binned spans: every binned span is vacant, in the right bin. */
static const char *check_bins(uint64_t *binned_bytes)
{
    *binned_bytes = 0;
    for (int c = 0; c < ZK_NCLASSES; c++) {
        if (zk_heap_bin_marked(c) != (zk_heap_bin_head(c) != NULL))
            return "a vacant bin's bit is wrong";
        for (zk_region *v = zk_heap_bin_head(c); v != NULL; v = v->cls_next) {
            if (!is_vacant(v) || !(v->flags & ZK_RF_BINNED) || zk_class_floor(v->bytes) != c)
                return "a vacant bin holds a span that does not belong there";
            *binned_bytes += v->bytes;
        }
    }
    return NULL;
}

typedef struct {
    uint64_t segments, reserved, vacant, binned;
    const char *error;
} heap_totals;

static void total_span(zk_region *r, void *arg)
{
    heap_totals *t = arg;
    const char *err = check_span(r);
    if (err != NULL && t->error == NULL)
        t->error = err;
    t->reserved += r->bytes;
    t->segments += r->addr_prev == NULL;
    if (is_vacant(r)) {
        t->vacant += r->bytes;
        t->binned += (r->flags & ZK_RF_BINNED) ? r->bytes : 0;
    }
}

/* Everything here changes only under the heap lock: exact at any time. */
static const char *check_heap(void)
{
    heap_totals t = {0, 0, 0, 0, NULL};
    uint64_t binned_bytes;
    const char *err = check_bins(&binned_bytes);
    if (err != NULL)
        return err;
    zk_region_foreach(total_span, &t);
    if (t.error != NULL)
        return t.error;
    if (t.binned != binned_bytes)
        return "a vacant span is binned twice or lost";
    if (t.segments != gauge(&zk_stats.segments))
        return "the segment count does not match the segments";
    if (t.reserved != gauge(&zk_stats.bytes_reserved))
        return "bytes_reserved does not match the segments";
    if (t.vacant != gauge(&zk_stats.bytes_vacant))
        return "bytes_vacant does not match the vacant spans";
    return NULL;
}

/* ---- one attempt ------------------------------------------------------------------ */

static const char *check_lists(listed_set *set)
{
    uint64_t pooled;
    collecting = set;
    const char *err = zk_pool_check(check_idle, &pooled);
    if (err == NULL)
        err = zk_tcache_check(check_idle);
    collecting = NULL;
    if (err != NULL || set->full)
        return err;
    qsort(set->items, set->n, sizeof *set->items, by_address);
    for (size_t i = 1; i < set->n; i++)
        if (set->items[i] == set->items[i - 1])
            return "a region is cached twice";
    return NULL;
}

static const char *check_totals_now(listed_set *set)
{
    const char *err = check_lists(set);
    if (err != NULL || set->full)
        return err;
    check_totals t = {set, 0, 0, 0, 0, NULL};
    zk_region_foreach(check_descriptor, &t);
    if (t.error != NULL)
        return t.error;
    if (t.idle_unlisted != 0)
        return "an idle region is in no list: it was lost";
    if (t.in_use != gauge(&zk_stats.bytes_in_use))
        return "bytes_in_use does not match the regions in use";
    if (t.idle_listed != gauge(&zk_stats.bytes_cached))
        return "bytes_cached does not match the idle regions";
    if (t.mapped != gauge(&zk_stats.bytes_mapped))
        return "bytes_mapped does not match the mapped regions";
    if (t.idle_listed > zk_cache_cap_in_force())
        return "idle bytes exceed the cap";
    return check_heap();
}

/* One attempt under every lock; *quiet: no request was in flight or began
 * meanwhile (what it found is exact). */
static const char *attempt(listed_set *set, bool *quiet)
{
    zk_heap_lock();
    zk_tcache_lock_for_fork();
    zk_pool_lock();
    uint64_t ended = traffic_ended();
    set->n = 0;
    set->full = false;
    const char *err = check_totals_now(set);
    *quiet = traffic_begun() == ended;
    zk_pool_unlock();
    zk_tcache_unlock_after_fork();
    zk_heap_unlock();
    return err;
}

static bool make_room(listed_set *set)
{
    size_t want = set->cap * 2 + 1024;
    zk_region **grown = realloc(set->items, want * sizeof *grown);
    if (grown == NULL)
        return false;
    set->items = grown;
    set->cap = want;
    return true;
}

int zk_check(const char **what)
{
    listed_set set = {NULL, 0, 0, false};
    const char *err = "no memory for the check's list of idle regions";
    int rc = ZK_ECORRUPT;
    bool room = make_room(&set);
    for (int i = 0; i < ATTEMPTS && room; i++) {
        bool quiet;
        err = attempt(&set, &quiet);
        if (set.full) {   /* the lists held more than there was room for */
            err = "no memory for the check's list of idle regions";
            rc = ZK_ECORRUPT;
            room = make_room(&set);
            i--;
            continue;
        }
        if (err == NULL || quiet) {
            rc = err == NULL ? ZK_OK : ZK_ECORRUPT;
            break;
        }
        rc = ZK_EBUSY;   /* in flight: wait for those requests to finish */
        err = "other threads' requests kept changing the totals";
        zk_os_pause_us(PAUSE_US);
    }
    free(set.items);
    if (what != NULL)
        *what = rc == ZK_OK ? NULL : err;
    return rc;
}

/* ---- against the kernel's view: /proc/self/maps ----------------------------------- */

typedef struct {
    uintptr_t *lo, *hi;
    size_t n, cap;
    bool failed;   /* no memory for the list */
} maps_view;

static bool add_area(const zk_os_area *a, void *arg)
{
    maps_view *v = arg;
    if (v->n > 0 && v->hi[v->n - 1] == a->lo) {   /* adjacent areas: one range */
        v->hi[v->n - 1] = a->hi;
        return true;
    }
    if (v->n == v->cap) {
        size_t cap = v->cap * 2 + 4096;
        uintptr_t *nl = realloc(v->lo, cap * sizeof *nl);
        if (nl != NULL) v->lo = nl;
        uintptr_t *nh = realloc(v->hi, cap * sizeof *nh);
        if (nh != NULL) v->hi = nh;
        if (nl == NULL || nh == NULL) {
            v->failed = true;
            return false;
        }
        v->cap = cap;
    }
    v->lo[v->n] = a->lo;
    v->hi[v->n] = a->hi;
    v->n++;
    return true;
}

/* Is [lo, hi) inside one contiguous mapped range? */
static bool covered(const maps_view *v, uintptr_t lo, uintptr_t hi)
{
    size_t a = 0, b = v->n;
    while (a < b) {   /* the last range starting at or below lo */
        size_t m = (a + b) / 2;
        if (v->lo[m] <= lo) a = m + 1; else b = m;
    }
    return a > 0 && v->hi[a - 1] >= hi;
}

typedef struct {
    const maps_view *view;
    const char *error;
} segment_check;

static void check_segment_mapped(zk_region *r, void *arg)
{
    segment_check *c = arg;
    if (r->addr_prev != NULL || c->error != NULL)
        return;
    uintptr_t end = r->base;
    for (zk_region *s = r; s != NULL; s = s->addr_next)
        end = s->base + s->bytes;
    /* Every byte: a move never leaves a hole in a segment (zk_os_move_keep). */
    if (!covered(c->view, r->base, end))
        c->error = "a segment the cache holds is not mapped (see /proc/self/maps)";
}

/* The file is read with no lock held (it takes the kernel's mmap lock and
 * can be slow).  Segments that existed before it was read and still do
 * were mapped throughout; one made since may be missing from it: then the
 * comparison is made again.  So is one where a request was in flight: a
 * segment being given back (zk_heap_give_back unmaps it before its
 * descriptor leaves the heap, outside the heap lock) is still listed while
 * the kernel no longer maps it. */
int zk_heap_check_maps(const char **what)
{
    maps_view v = {NULL, NULL, 0, 0, false};
    const char *err = "other threads kept mapping segments while /proc/self/maps was read";
    int rc = ZK_EBUSY;
    for (int i = 0; i < ATTEMPTS && rc == ZK_EBUSY; i++) {
        if (i > 0)
            zk_os_pause_us(PAUSE_US);
        zk_heap_lock();
        zk_tcache_lock_for_fork();
        uint64_t made = zk_heap_segments_made(), ended = traffic_ended();
        zk_tcache_unlock_after_fork();
        zk_heap_unlock();
        v.n = 0;
        if (zk_os_each_area(0, 0, add_area, &v) != 0 || v.failed) {
            err = v.failed ? "no memory to read /proc/self/maps" : "could not read /proc/self/maps";
            rc = ZK_ECORRUPT;
            break;
        }
        segment_check c = {&v, NULL};
        zk_heap_lock();
        zk_tcache_lock_for_fork();
        bool same = zk_heap_segments_made() == made;
        if (same)
            zk_region_foreach(check_segment_mapped, &c);
        bool quiet = traffic_begun() == ended;
        zk_tcache_unlock_after_fork();
        zk_heap_unlock();
        if (same && (c.error == NULL || quiet)) {
            rc = c.error == NULL ? ZK_OK : ZK_ECORRUPT;
            err = c.error;
        }
    }
    free(v.lo);
    free(v.hi);
    if (what != NULL)
        *what = rc == ZK_OK ? NULL : err;
    return rc;
}
