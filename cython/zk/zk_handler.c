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
    zk_arena_init();
    zk_secret_init();
}

static bool cache_serves(size_t bytes)
{
    return bytes >= zk_opt_min_bytes() && (uint64_t)bytes <= ZK_MAX_CLASS_BYTES;
}

/* The cache's answer to a request, or NULL when the fallback must serve it:
 * too small, too large, or the kernel refused a new mapping (map count,
 * address space), in which case the fallback may still succeed or fail the
 * same way. */
static void *from_cache(size_t size, bool zeroed)
{
    if (!cache_serves(size)) {
        zk_count_small(size);
        return NULL;
    }
    return zeroed ? zk_cache_calloc(size) : zk_cache_alloc(size);
}

static void *from_fallback(size_t size, bool zeroed)
{
    return zeroed ? fallback.calloc(fallback.ctx, 1, size) : fallback.malloc(fallback.ctx, size);
}

/* Every route's allocation.  An arena that is closed (its phase is over, a
 * copied context still names it) hands its requests to the cache. */
static void *route_alloc(const zk_route *route, size_t size, bool zeroed)
{
    void *p = NULL;
    switch (route->kind) {
    case ZK_ROUTE_SECRET:
        return zk_secret_alloc(size, route->strict);   /* mmap gives zeros */
    case ZK_ROUTE_ARENA: {
        zk_arena_verdict verdict;
        p = zk_arena_alloc(route->arena, size, zeroed, &verdict);
        if (verdict == ZK_ARENA_SERVED)
            return p;   /* NULL here is MemoryError: the arena could not grow */
        if (verdict == ZK_ARENA_CLOSED)
            p = from_cache(size, zeroed);
        break;
    }
    case ZK_ROUTE_CACHE:
        p = from_cache(size, zeroed);
        break;
    case ZK_ROUTE_PASSTHROUGH:
        break;
    }
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

static void *realloc_cached(const zk_route *route, void *ptr, size_t new_size)
{
    bool cache_route = route->kind == ZK_ROUTE_CACHE || route->kind == ZK_ROUTE_ARENA;
    if (!cache_route || !cache_serves(new_size))
        return move_to(&zk_route_passthrough, ptr, zk_cache_usable(ptr), new_size);
    void *p = zk_cache_realloc(ptr, new_size);
    /* The kernel refused a bigger region: the fallback may still have room. */
    return p != NULL ? p : move_to(&zk_route_passthrough, ptr, zk_cache_usable(ptr), new_size);
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
    if (route->kind == ZK_ROUTE_ARENA) {
        size_t have;
        bool ours;
        void *p = zk_arena_resize_in_place(route->arena, ptr, new_size, &have, &ours);
        if (p != NULL)
            return p;
        if (ours)   /* live: move it; freed: refuse, never hand it to the fallback */
            return have != 0 ? move_to(route, ptr, have, new_size) : NULL;
    }
    int state = zk_maybe_region_start(ptr) ? zk_cache_state(ptr) : ZK_PTR_FOREIGN;
    if (state == ZK_PTR_FOREIGN)
        return fallback.realloc(fallback.ctx, ptr, new_size);
    if (state == ZK_PTR_IDLE) {
        zk_count(&zk_stats.invalid_frees, 1);   /* realloc after free: refuse, never pass on */
        return NULL;
    }
    return realloc_cached(route, ptr, new_size);
}

/* ---- free: ownership from the address, the route only says where to look
 * first -------------------------------------------------------------------- */

static void free_any(const zk_route *route, void *ptr, size_t size)
{
    if (route->kind == ZK_ROUTE_SECRET && zk_secret_free(ptr))
        return;
    if (route->kind == ZK_ROUTE_ARENA && zk_arena_free(route->arena, ptr))
        return;
    if (zk_maybe_region_start(ptr) && zk_cache_free(ptr))
        return;
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
