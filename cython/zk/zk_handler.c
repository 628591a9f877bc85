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

zk_route zk_route_cache = {ZK_ROUTE_CACHE};
zk_route zk_route_passthrough = {ZK_ROUTE_PASSTHROUGH};

static zk_fallback fallback;   /* set once at import, before any install */

void zk_handler_set_fallback(const zk_fallback *f)
{
    fallback = *f;
    zk_options_init();
    zk_cache_init();
}

static bool use_cache(void *ctx, size_t bytes)
{
    const zk_route *route = ctx;
    return route->kind == ZK_ROUTE_CACHE && bytes >= zk_opt_min_bytes() &&
           (uint64_t)bytes <= ZK_MAX_CLASS_BYTES;
}

/* The cache's answer to a request, or NULL when the fallback must serve it:
 * too small, too large, a pass-through route, or the kernel refused a new
 * mapping (map count, address space), in which case the fallback may still
 * succeed or fail the same way. */
static void *from_cache(void *ctx, size_t size, bool zeroed)
{
    if (!use_cache(ctx, size)) {
        if (((const zk_route *)ctx)->kind == ZK_ROUTE_CACHE)
            zk_count(&zk_stats.small_allocs, 1);
        return NULL;
    }
    return zeroed ? zk_cache_calloc(size) : zk_cache_alloc(size);
}

void *zk_h_malloc(void *ctx, size_t size)
{
    void *p = from_cache(ctx, size, false);
    return p != NULL ? p : fallback.malloc(fallback.ctx, size);
}

void *zk_h_calloc(void *ctx, size_t nelem, size_t elsize)
{
    if (elsize != 0 && nelem > SIZE_MAX / elsize)
        return NULL;   /* numpy raises MemoryError */
    void *p = from_cache(ctx, nelem * elsize, true);
    return p != NULL ? p : fallback.calloc(fallback.ctx, nelem, elsize);
}

/* Move an owned region's bytes to a fallback allocation (the new size is
 * below min_bytes, or this route no longer uses the cache). */
static void *move_to_fallback(void *ptr, size_t size)
{
    void *moved = fallback.malloc(fallback.ctx, size);
    if (moved == NULL)
        return NULL;
    size_t have = zk_cache_usable(ptr);
    memcpy(moved, ptr, size < have ? size : have);
    zk_cache_free(ptr);
    return moved;
}

void *zk_h_realloc(void *ctx, void *ptr, size_t new_size)
{
    if (ptr == NULL)
        return zk_h_malloc(ctx, new_size);
    int state = zk_maybe_region_start(ptr) ? zk_cache_state(ptr) : ZK_PTR_FOREIGN;
    if (state == ZK_PTR_FOREIGN)
        return fallback.realloc(fallback.ctx, ptr, new_size);
    if (state == ZK_PTR_IDLE) {
        zk_count(&zk_stats.invalid_frees, 1);   /* realloc after free: refuse, never pass on */
        return NULL;
    }
    if (!use_cache(ctx, new_size))
        return move_to_fallback(ptr, new_size);
    void *p = zk_cache_realloc(ptr, new_size);
    /* The kernel refused a bigger region: the fallback may still have room. */
    return p != NULL ? p : move_to_fallback(ptr, new_size);
}

void zk_h_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (ptr == NULL || (zk_maybe_region_start(ptr) && zk_cache_free(ptr)))
        return;
    zk_count(&zk_stats.foreign_frees, 1);
    fallback.free(fallback.ctx, ptr, size);
}
