/*
 * Phases: an accounted scope over the size-class cache.
 *
 * A phase used to be a bump arena (zk-nalloc's design).  In numpy every
 * array is freed on its own when its refcount drops, so an O(1) reset saves
 * nothing, and a stream of temporaries got fresh memory from the arena where
 * the cache hands back the same hot region: 4.4x slower and 10x the RSS on
 * an NTT prover.  So a phase's requests now go to the very same cache as
 * ZK_ROUTE_CACHE, and the phase only adds knowledge: each region it
 * allocates is tagged with the scope (zk_region.scope), and the scope counts
 * what it allocated, what is live, what it cost (hits, misses, fresh bytes,
 * time), per class for the next run's hot start, and what escaped.
 *
 * Ownership of a tag: the allocating thread sets it before numpy sees the
 * pointer; whoever frees or resizes the region takes it off with an atomic
 * exchange first, so exactly one thread accounts for it, whatever thread
 * frees it and whichever phase is current then.  Nested phases: the
 * innermost one tags, the outer one does not see those arrays.
 *
 * A scope lives until the capsule that owns it is destroyed (numpy keeps a
 * reference to it in every array allocated through it): a tag never points
 * at a freed scope.  No lock: fork needs nothing here.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "zk_internal.h"

#define SCOPE_STAT_ATOMIC(name, ...) _Atomic uint64_t name;
struct zk_scope {
    zk_route route;
    uint64_t serial;                /* zk_scope_serial */
    bool track;                     /* record allocation sites (set before the first request) */
    zk_peak *peak;                  /* what was live at its peak */
    zk_peak *refusal;               /* what was live when the budget last refused */
    /* Every statistic of zk_scope_stats_list.h; region_bytes is the live
     * regions' class bytes, budget 0: none, closed 1 once ended. */
    ZK_SCOPE_STATS_LIST(SCOPE_STAT_ATOMIC, SCOPE_STAT_ATOMIC, SCOPE_STAT_ATOMIC, SCOPE_STAT_ATOMIC)
    _Atomic bool counted_open;      /* in open_scopes: from creation to close (or destroy) */
    _Atomic int64_t class_live[ZK_NCLASSES];   /* may dip below 0 transiently: signed */
    _Atomic uint64_t class_peak[ZK_NCLASSES];
    /* The capsule, every tagged region and every raw request being served
     * in it (zk_raw.c) hold a pin; the last unpin frees the scope. */
    _Atomic int64_t pins;
};
#undef SCOPE_STAT_ATOMIC

static uint64_t load(_Atomic uint64_t *c) { return atomic_load_explicit(c, memory_order_relaxed); }

char zk_refused_marker;   /* ZK_REFUSED points here: a budget's answer (zk_internal.h) */

static _Atomic uint64_t last_serial;
/* Scopes created and not yet closed, in any thread: while there are none,
 * no context can name an open phase, and a raw request skips asking the
 * caller probe for one (zk_raw.c). */
static _Atomic int64_t open_scopes;

bool zk_scope_any_open(void) { return atomic_load_explicit(&open_scopes, memory_order_relaxed) > 0; }

static void stop_counting_open(zk_scope *s)
{
    if (atomic_exchange_explicit(&s->counted_open, false, memory_order_relaxed))
        atomic_fetch_sub_explicit(&open_scopes, 1, memory_order_relaxed);
}

zk_scope *zk_scope_create(void)
{
    zk_scope *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->peak = zk_peak_create();
    s->refusal = zk_peak_create();
    atomic_init(&s->pins, 1);   /* the capsule's */
    if (s->peak == NULL || s->refusal == NULL) {
        zk_scope_destroy(s);
        return NULL;
    }
    s->route.kind = ZK_ROUTE_SCOPE;
    s->route.scope = s;
    s->serial = atomic_fetch_add_explicit(&last_serial, 1, memory_order_relaxed) + 1;
    atomic_store_explicit(&s->counted_open, true, memory_order_relaxed);
    atomic_fetch_add_explicit(&open_scopes, 1, memory_order_relaxed);
    return s;
}

void zk_scope_configure(zk_scope *s, int track, uint64_t budget)
{
    s->track = track != 0;
    atomic_store_explicit(&s->budget, budget, memory_order_relaxed);
}

uint64_t zk_scope_serial(zk_scope *s) { return s->serial; }
zk_route *zk_scope_route(zk_scope *s) { return &s->route; }
zk_peak *zk_scope_peak(zk_scope *s) { return s->peak; }
zk_peak *zk_scope_refusal(zk_scope *s) { return s->refusal; }

/* The capsule is gone; raw blocks tagged with the scope may outlive it. */
void zk_scope_destroy(zk_scope *s)
{
    stop_counting_open(s);
    zk_scope_unpin(s);
}

void zk_scope_pin(zk_scope *s)
{
    atomic_fetch_add_explicit(&s->pins, 1, memory_order_relaxed);
}

void zk_scope_unpin(zk_scope *s)
{
    if (atomic_fetch_sub_explicit(&s->pins, 1, memory_order_acq_rel) != 1)
        return;
    zk_peak_destroy(s->peak);
    zk_peak_destroy(s->refusal);
    free(s);
}

/* ---- live accounting ------------------------------------------------------- */

/* Take `bytes` more live bytes if the budget has room (always without one);
 * the peak is raised only once the request is served (live_add). */
static bool live_reserve(zk_scope *s, uint64_t bytes)
{
    uint64_t budget = load(&s->budget);
    if (budget == 0) {
        atomic_fetch_add_explicit(&s->live_bytes, bytes, memory_order_relaxed);
        return true;
    }
    uint64_t seen = atomic_load_explicit(&s->live_bytes, memory_order_relaxed);
    do {
        if (seen > budget || bytes > budget - seen)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&s->live_bytes, &seen, seen + bytes, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

/* The budget refused a request of `bytes`: counted, and what was live then
 * kept for the phase's error message. */
static void refuse(zk_scope *s, uint64_t bytes)
{
    uint64_t live = atomic_load_explicit(&s->live_bytes, memory_order_relaxed);
    zk_count(&s->budget_refusals, 1);
    zk_count(&zk_stats.budget_refusals, 1);
    atomic_store_explicit(&s->refused_bytes, bytes, memory_order_relaxed);
    atomic_store_explicit(&s->refused_live_bytes, live, memory_order_relaxed);
    zk_peak_take(s->refusal, live);
}

/* A served request whose bytes live_reserve already took.  Per class, the
 * class of the region that served the request (one class above the
 * request's on a hit that took a larger region): after the phase, the cache
 * holds exactly those regions idle, so the next run's hot start finds them
 * there and reserves nothing. */
static void live_add(zk_scope *s, int cls)
{
    zk_count(&s->live_arrays, 1);
    uint64_t live = atomic_load_explicit(&s->live_bytes, memory_order_relaxed);
    zk_stats_raise_peak(&s->peak_bytes, live);
    if (cls >= 0 && cls < ZK_NCLASSES) {
        zk_stats_gauge_add(&s->region_bytes, &s->peak_region_bytes, zk_class_bytes(cls));
        int64_t now = atomic_fetch_add_explicit(&s->class_live[cls], 1, memory_order_relaxed) + 1;
        if (now > 0)
            zk_stats_raise_peak(&s->class_peak[cls], (uint64_t)now);
    }
    zk_peak_consider(s->peak, live);
}

static void live_sub(zk_scope *s, uint64_t bytes, int cls)
{
    zk_stats_gauge_sub(&s->live_arrays, 1);
    zk_stats_gauge_sub(&s->live_bytes, bytes);
    if (cls >= 0 && cls < ZK_NCLASSES) {
        zk_stats_gauge_sub(&s->region_bytes, zk_class_bytes(cls));
        atomic_fetch_sub_explicit(&s->class_live[cls], 1, memory_order_relaxed);
    }
}

static void tag(zk_region *r, zk_scope *s, uint64_t bytes)
{
    zk_scope_pin(s);   /* released by whoever takes the tag off for good */
    atomic_store_explicit(&r->scope_bytes, bytes, memory_order_relaxed);
    atomic_store_explicit(&r->scope_serial, s->serial, memory_order_relaxed);
    atomic_store_explicit(&r->scope, s, memory_order_release);
}

/* ---- the route ------------------------------------------------------------- */

static void count_obtained(zk_scope *s, const zk_obtained *ob, size_t bytes, uint64_t ns)
{
    zk_count(&s->arrays, 1);
    zk_count(&s->bytes_allocated, bytes);
    zk_count(&s->alloc_ns, ns);
    if (ob->hit) {
        zk_count(&s->hits, 1);
        return;
    }
    zk_count(&s->misses, 1);
    zk_count(&s->fresh_bytes, ob->fresh_bytes);
    if (ob->repurposed)
        zk_count(&s->repurposed, 1);
}

void *zk_scope_alloc(zk_scope *s, size_t bytes, bool zeroed, int origin)
{
    /* Closed (a copied context still names the phase): plain cache memory,
     * counted nowhere in the phase.  A request racing with the close may
     * still be tagged; it then counts as live, never as escaped. */
    if (atomic_load_explicit(&s->closed, memory_order_relaxed))
        return zeroed ? zk_cache_calloc(bytes) : zk_cache_alloc(bytes);
    if (!live_reserve(s, bytes)) {
        refuse(s, bytes);
        return ZK_REFUSED;
    }
    zk_obtained ob;
    uint64_t t0 = zk_thp_now_ns();
    void *p = zk_cache_obtain(bytes, zeroed, &ob);
    uint64_t ns = zk_thp_now_ns() - t0;
    if (p == NULL) {
        zk_stats_gauge_sub(&s->live_bytes, bytes);   /* the fallback serves it: not the phase's */
        return NULL;
    }
    if (s->track || zk_process_tracked())
        atomic_store_explicit(&ob.region->site, zk_site_now(), memory_order_relaxed);
    zk_region_note_request(ob.region, bytes, origin);   /* the region is in hand: two stores */
    tag(ob.region, s, bytes);   /* before live_add: its snapshot lists the region as the phase's */
    count_obtained(s, &ob, bytes, ns);
    live_add(s, ob.region->cls);
    return p;
}

bool zk_scope_may_grow(zk_scope *s, uint64_t from, uint64_t to)
{
    uint64_t budget = load(&s->budget);
    if (budget == 0 || to <= from)
        return true;
    uint64_t live = atomic_load_explicit(&s->live_bytes, memory_order_relaxed);
    if (live - from + to <= budget)   /* live includes `from`: the region is still tagged as it was */
        return true;
    refuse(s, to);
    return false;
}

void zk_scope_count_small(zk_scope *s) { zk_count(&s->small_arrays, 1); }
void zk_scope_count_invalid_free(zk_scope *s) { zk_count(&s->invalid_frees, 1); }

zk_scope_tag zk_scope_untag(zk_region *r)
{
    zk_scope_tag t = {NULL, 0, -1};
    if (!zk_region_tagged(r))
        return t;
    t.scope = atomic_exchange_explicit(&r->scope, NULL, memory_order_acq_rel);
    if (t.scope != NULL) {
        t.bytes = atomic_load_explicit(&r->scope_bytes, memory_order_relaxed);
        t.cls = r->cls;   /* stable while in use: only a realloc changes it, untagged */
    }
    return t;
}

void zk_scope_untag_freed(zk_region *r)
{
    zk_scope_tag t = zk_scope_untag(r);
    if (t.scope != NULL) {
        live_sub(t.scope, t.bytes, t.cls);
        zk_scope_unpin(t.scope);
    }
}

void zk_scope_retag(zk_scope_tag old, void *p, size_t bytes, zk_retag_how how)
{
    zk_scope *s = old.scope;
    if (how != ZK_RETAG_FAILED)
        zk_count(how == ZK_RETAG_MOVED ? &s->realloc_moved : &s->realloc_in_place, 1);
    zk_region *r = zk_region_at(p);
    live_sub(s, old.bytes, old.cls);
    if (r != NULL) {   /* else the fallback holds it now: no longer the phase's */
        tag(r, s, bytes);
        atomic_fetch_add_explicit(&s->live_bytes, bytes, memory_order_relaxed);   /* zk_scope_may_grow checked it */
        live_add(s, r->cls);
    }
    zk_scope_unpin(s);   /* the old tag's pin, after the new one's */
}

/* ---- closing, reading, listing ------------------------------------------------ */

void zk_scope_close(zk_scope *s)
{
    atomic_store_explicit(&s->closed, 1, memory_order_relaxed);
    stop_counting_open(s);
    atomic_store_explicit(&s->escaped_arrays, load(&s->live_arrays), memory_order_relaxed);
    atomic_store_explicit(&s->escaped_bytes, load(&s->live_bytes), memory_order_relaxed);
}

#define SCOPE_STAT_INFO(name, kind, doc) {#name, kind, doc, offsetof(zk_scope_stats, name)},
#define COUNTER_INFO(name, doc) SCOPE_STAT_INFO(name, ZK_STAT_COUNTER, doc)
#define GAUGE_INFO(name, doc) SCOPE_STAT_INFO(name, ZK_STAT_GAUGE, doc)
#define PEAK_INFO(name, gauge, doc) SCOPE_STAT_INFO(name, ZK_STAT_PEAK, doc)
#define RECORD_INFO(name, doc) SCOPE_STAT_INFO(name, ZK_STAT_RECORD, doc)
const zk_stat_info zk_scope_stats_info[] = {ZK_SCOPE_STATS_LIST(COUNTER_INFO, GAUGE_INFO, PEAK_INFO, RECORD_INFO)};
const size_t zk_scope_stats_count = sizeof zk_scope_stats_info / sizeof zk_scope_stats_info[0];

void zk_scope_stats_read(zk_scope *s, zk_scope_stats *out)
{
    memset(out, 0, sizeof *out);
#define READ(name, ...) out->name = load(&s->name);
    ZK_SCOPE_STATS_LIST(READ, READ, READ, READ)
#undef READ
    for (int c = 0; c < ZK_NCLASSES; c++) {
        int64_t live = atomic_load_explicit(&s->class_live[c], memory_order_relaxed);
        out->class_live[c] = live > 0 ? (uint64_t)live : 0;
        out->class_peak[c] = load(&s->class_peak[c]);
    }
}

int zk_scope_owns(zk_scope *s, const void *ptr)
{
    if (!zk_maybe_region_start(ptr))
        return 0;
    zk_region *r = zk_pagemap_get(ptr);
    return r != NULL && atomic_load_explicit(&r->state, memory_order_acquire) == ZK_REGION_IN_USE &&
           atomic_load_explicit(&r->scope, memory_order_acquire) == s;
}

typedef struct {
    zk_scope *scope;
    uintptr_t *addresses;
    uint64_t *bytes;
    size_t max, found;
} live_walk;

static void collect_live(zk_region *r, void *arg)
{
    live_walk *w = arg;
    if (atomic_load_explicit(&r->scope, memory_order_acquire) != w->scope ||
        atomic_load_explicit(&r->state, memory_order_acquire) != ZK_REGION_IN_USE)
        return;
    if (w->found < w->max) {
        w->addresses[w->found] = r->base;
        w->bytes[w->found] = atomic_load_explicit(&r->scope_bytes, memory_order_relaxed);
    }
    w->found++;
}

size_t zk_scope_live(zk_scope *s, uintptr_t *addresses, uint64_t *bytes, size_t max)
{
    live_walk w = {s, addresses, bytes, max, 0};
    /* Under the heap lock: a region's base changes only under it (a realloc
     * grown by mremap), and its owner may untag it and grow it right after
     * the walk saw its tag (as in zk_peak.c's walk). */
    zk_heap_lock();
    zk_region_foreach(collect_live, &w);
    zk_heap_unlock();
    return w.found;
}

/* ---- hot start ------------------------------------------------------------------- */

/* Take n regions of class c from the cache (resident ones first), holding
 * them on *held; fresh ones are faulted in now.  Stops once the fresh bytes
 * would exceed *budget. */
static uint64_t take_class(int c, uint64_t n, zk_region **held, uint64_t *budget)
{
    uint64_t added = 0;
    size_t bytes = zk_class_bytes(c);
    for (uint64_t i = 0; i < n && *budget >= bytes; i++) {
        zk_obtained ob;
        if (zk_cache_obtain(bytes, false, &ob) == NULL)
            break;   /* the kernel refused: best effort */
        if (!ob.hit)
            (void)zk_os_populate((void *)ob.region->base, ob.region->bytes);
        added += ob.fresh_bytes;
        *budget -= ob.fresh_bytes < *budget ? ob.fresh_bytes : *budget;
        ob.region->free_next = *held;
        *held = ob.region;
    }
    return added;
}

uint64_t zk_scope_warm(const uint64_t need[ZK_NCLASSES], uint64_t peak_bytes)
{
    /* Every region is held until all classes are served, then freed into the
     * cache together: reserving one class at a time (zk_cache_reserve) would
     * let a later class's miss carve up or gather the idle regions just
     * reserved for another.  Fresh memory is bounded by the last run's peak
     * (the per-class peaks need not coincide: their sum can exceed it) less
     * what the cache already holds idle, which a miss can repurpose without
     * a fault; and by the cap.  Largest classes first: their faults cost the
     * most. */
    uint64_t cap = zk_opt_cache_bytes();
    uint64_t target = peak_bytes < cap ? peak_bytes : cap;
    uint64_t cached = atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed);
    if (cached >= target)
        return 0;
    uint64_t budget = target - cached, added = 0;
    zk_region *held = NULL;
    for (int c = ZK_NCLASSES - 1; c >= 0 && budget > 0; c--) {
        int64_t have = atomic_load_explicit(&zk_stats.class_cached[c], memory_order_relaxed);
        if (need[c] != 0 && (have < 0 || (uint64_t)have < need[c]))
            added += take_class(c, need[c], &held, &budget);
    }
    while (held != NULL) {
        zk_region *next = held->free_next;
        zk_cache_free((void *)held->base);
        held = next;
    }
    return added;
}
