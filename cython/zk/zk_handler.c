/*
 * NEP 49 shaped entry points: the four functions numpy's PyDataMem_Handler
 * calls, with numpy's (ctx, ...) signatures but no Python in them.
 *
 * Routing: requests below min_bytes, requests for more than the largest
 * class, and every pointer the cache does not own go to the fallback, which
 * the Cython layer points at numpy's original default functions (so numpy's
 * small-block cache keeps working).  Ownership comes from the pointer, never
 * from the size numpy passes to free: that size is wrong in some numpy paths
 * (np.fromstring("", sep=" ") allocates 8 bytes and frees 1).
 *
 * Every function here is safe to call without the GIL: numpy calls realloc
 * with the GIL released in fromfile/fromstring.
 */
#include <string.h>

#include "zk_internal.h"

zk_route zk_route_cache = {ZK_ROUTE_CACHE, 0, NULL};
zk_route zk_route_passthrough = {ZK_ROUTE_PASSTHROUGH, 0, NULL};

static zk_fallback fallback;   /* set once at import, before any install */

void zk_handler_set_fallback(const zk_fallback *f)
{
    fallback = *f;
    zk_options_init();
    zk_zero_reset();
    zk_cache_init();
    zk_secret_init();
}

static bool cache_serves(size_t bytes)
{
    return bytes >= zk_opt_min_bytes() && (uint64_t)bytes <= ZK_MAX_CLASS_BYTES;
}

/* The process's budget (a setting): a request that would take the cache's
 * bytes in use past it is refused.  Checked per request against the gauge,
 * so requests racing in other threads may pass it by one region each. */
static bool over_budget(size_t size)
{
    uint64_t budget = zk_opt_budget();
    if (budget == 0)
        return false;
    int cls = zk_class_of(size);
    uint64_t in_use = atomic_load_explicit(&zk_stats.bytes_in_use, memory_order_relaxed);
    if (cls >= 0 && in_use + zk_class_bytes(cls) <= budget)
        return false;
    zk_count(&zk_stats.budget_refusals, 1);
    return true;
}

void *zk_route_serve(struct zk_scope *scope, size_t size, bool zeroed, int origin)
{
    if (over_budget(size))
        return ZK_REFUSED;
    void *p;
    if (scope != NULL) {
        p = zk_scope_alloc(scope, size, zeroed, origin);   /* records the site itself when tracked */
    } else if (!zk_process_tracked()) {
        return zeroed ? zk_cache_calloc(size) : zk_cache_alloc(size);
    } else {
        zk_obtained ob;
        p = zk_cache_obtain(size, zeroed, &ob);
        if (p != NULL) {
            atomic_store_explicit(&ob.region->site, zk_site_now(), memory_order_relaxed);
            zk_region_note_request(ob.region, size, origin);
        }
    }
    if (p != NULL && p != ZK_REFUSED)
        zk_process_peak_consider();
    return p;
}

/* The cache's answer to a request, or NULL when the fallback must serve it:
 * too small, too large, or the kernel refused a new mapping (map count,
 * address space), in which case the fallback may still succeed or fail the
 * same way.  ZK_REFUSED: over the process's budget. */
static void *from_cache(size_t size, bool zeroed)
{
    if (!cache_serves(size)) {
        zk_count_small(size);
        return NULL;
    }
    return zk_route_serve(NULL, size, zeroed, ZK_ORIGIN_NUMPY);
}

static void *from_fallback(size_t size, bool zeroed)
{
    return zeroed ? fallback.calloc(fallback.ctx, 1, size) : fallback.malloc(fallback.ctx, size);
}

/* The cache's answer for a phase: the same cache, the region tagged with
 * the phase's scope (zk_scope.c). */
static void *from_scope(struct zk_scope *scope, size_t size, bool zeroed)
{
    if (!cache_serves(size)) {
        zk_count_small(size);   /* by size too, as from_cache does */
        zk_scope_count_small(scope);
        return NULL;
    }
    return zk_route_serve(scope, size, zeroed, ZK_ORIGIN_NUMPY);
}

/* Every route's allocation. */
static void *route_alloc(const zk_route *route, size_t size, bool zeroed)
{
    void *p = NULL;
    switch (route->kind) {
    case ZK_ROUTE_SECRET:
        return zk_secret_alloc(size, route->strict);   /* mmap gives zeros */
    case ZK_ROUTE_SCOPE:
        p = from_scope(route->scope, size, zeroed);
        break;
    case ZK_ROUTE_CACHE:
        p = from_cache(size, zeroed);
        break;
    case ZK_ROUTE_PASSTHROUGH:
        break;
    }
    if (p == ZK_REFUSED)
        return NULL;   /* numpy raises MemoryError; nothing was mapped or counted */
    return p != NULL ? p : from_fallback(size, zeroed);
}

void *zk_h_malloc(void *ctx, size_t size)
{
    return route_alloc(ctx, size, false);
}

void *zk_h_calloc(void *ctx, size_t nelem, size_t elsize)
{
    if (elsize != 0 && nelem > SIZE_MAX / elsize)
        return NULL;   /* numpy raises MemoryError */
    return route_alloc(ctx, nelem * elsize, true);
}

/* ---- realloc: a pointer keeps the kind of memory it came from, as far as
 * the route allows ------------------------------------------------------- */

static void free_any(const zk_route *route, void *ptr, size_t size);

/* Allocate through the route, copy, free the old block. */
static void *move_to(const zk_route *route, void *ptr, size_t have, size_t size)
{
    void *moved = route_alloc(route, size, false);
    if (moved == NULL)
        return NULL;
    memcpy(moved, ptr, size < have ? size : have);
    free_any(route, ptr, have);
    return moved;
}

static void *move_to_fallback(void *ptr, size_t have, size_t size)
{
    return move_to(&zk_route_passthrough, ptr, have, size);
}

/* A phase's tag follows the data: taken off first (so the cache's own
 * frees inside the realloc never see it), put back on whatever region holds
 * the data afterwards; if the fallback holds it now, the phase's accounting
 * drops it like a free.  So do its allocation site and requester, which
 * a recorded request keeps with its new size. */
void *zk_route_realloc(zk_region *r, size_t new_size, bool cache_ok, zk_move_out_fn move_out)
{
    void *ptr = (void *)r->base;
    size_t have = r->bytes;   /* read before the realloc may reshape r */
    uint32_t site = atomic_load_explicit(&r->site, memory_order_relaxed);
    int origin = (int)atomic_load_explicit(&r->origin, memory_order_relaxed);
    zk_scope_tag tag = zk_scope_untag(r);
    if (tag.scope != NULL && !zk_scope_may_grow(tag.scope, tag.bytes, new_size)) {
        zk_scope_retag(tag, ptr, tag.bytes, ZK_RETAG_FAILED);
        return NULL;   /* over the phase's budget: numpy raises MemoryError, the array is as it was */
    }
    void *p = NULL;
    if (cache_ok && cache_serves(new_size))
        p = zk_cache_realloc_region(r, new_size);
    /* Not for the cache, or the kernel refused a bigger region: the fallback may still have room. */
    if (p == NULL)
        p = move_out(ptr, have, new_size);
    if (tag.scope != NULL && p == NULL)
        zk_scope_retag(tag, ptr, tag.bytes, ZK_RETAG_FAILED);
    else if (tag.scope != NULL)
        zk_scope_retag(tag, p, new_size, p == ptr ? ZK_RETAG_IN_PLACE : ZK_RETAG_MOVED);
    zk_region *moved = p != NULL && p != ptr ? zk_region_at(p) : NULL;
    if (moved != NULL)
        atomic_store_explicit(&moved->site, site, memory_order_relaxed);
    zk_region *now = p == ptr ? r : moved;   /* NULL: the fallback holds it, or it failed */
    if (now != NULL && origin != ZK_ORIGIN_UNKNOWN)
        zk_region_note_request(now, new_size, origin);
    if (now != NULL)
        zk_process_peak_consider();   /* a growth is a request too */
    return p;
}

void *zk_h_realloc(void *ctx, void *ptr, size_t new_size)
{
    const zk_route *route = ctx;
    if (ptr == NULL)
        return zk_h_malloc(ctx, new_size);
    if (route->kind == ZK_ROUTE_SECRET) {
        size_t have = zk_secret_usable(ptr);
        if (have != 0)
            return move_to(route, ptr, have, new_size);   /* wipes the old copy */
    }
    zk_region *r = zk_region_at(ptr);
    if (r == NULL)
        return fallback.realloc(fallback.ctx, ptr, new_size);
    if (atomic_load_explicit(&r->state, memory_order_acquire) != ZK_REGION_IN_USE) {
        zk_count(&zk_stats.invalid_frees, 1);   /* realloc after free: refuse, never pass on */
        if (route->kind == ZK_ROUTE_SCOPE)
            zk_scope_count_invalid_free(route->scope);
        return NULL;
    }
    bool cache_route = route->kind == ZK_ROUTE_CACHE || route->kind == ZK_ROUTE_SCOPE;
    return zk_route_realloc(r, new_size, cache_route, move_to_fallback);
}

/* ---- free: ownership from the address, the route only says where to look
 * first -------------------------------------------------------------------- */

bool zk_route_free(zk_region *r)
{
    if (zk_region_tagged(r))
        zk_scope_untag_freed(r);   /* before the region can be handed out again */
    return zk_cache_free_region(r);
}

static void free_any(const zk_route *route, void *ptr, size_t size)
{
    if (route->kind == ZK_ROUTE_SECRET && zk_secret_free(ptr))
        return;
    zk_region *r = zk_region_at(ptr);
    if (r != NULL) {
        if (!zk_route_free(r) && route->kind == ZK_ROUTE_SCOPE)
            zk_scope_count_invalid_free(route->scope);   /* a double free, as far as can be told */
        return;
    }
    /* After uninstall() every numpy free passes here: only a free through an
     * active route is news.  The size numpy passes only sorts the count: a
     * small array numpy's allocator served, or a big one from before the
     * install (or from while min_bytes was larger). */
    if (route->kind != ZK_ROUTE_PASSTHROUGH)
        zk_count(size < zk_opt_min_bytes() ? &zk_stats.small_frees : &zk_stats.foreign_frees, 1);
    fallback.free(fallback.ctx, ptr, size);
}

void zk_h_free(void *ctx, void *ptr, size_t size)
{
    if (ptr != NULL)
        free_any(ctx, ptr, size);
}
