/*
 * Python's raw memory domain (PyMem_RawMalloc and friends) through the
 * cache: the four functions of a PyMemAllocatorEx-shaped hook that wraps
 * the raw allocator current when it was set.
 *
 * CPython's object allocator hands every request above 512 bytes to this
 * domain: ndarray.tobytes(), bytes, bytearray, b"".join(), hashlib's inputs
 * and outputs.  Routing is the NEP 49 handler's (zk_handler.c):
 *  - requests of min_bytes and more come from the cache while the hook is
 *    active, tagged with the phase of the calling context if one is open
 *    (zk_raw_scope_now: the probe reads the context numpy's handler lives
 *    in, so concurrent asyncio tasks and threads each see their own phase);
 *  - smaller (or larger than the largest class) ones go to the wrapped
 *    allocator, as does every free and realloc of a pointer the cache does
 *    not own.  Ownership comes from the pointer (page aligned, then the
 *    page map); glibc's chunks are never page aligned, so a foreign free
 *    costs one mask test.
 *
 * The hook is never removed: no record says which allocator made a block,
 * so a hook taken out while cache blocks are alive would send them to the
 * wrong free.  Inactive (after uninstall()), it passes every new request on
 * and still sends the cache's own blocks home.
 *
 * CPython calls this domain without the GIL: every function is thread-safe
 * on its own (the cache's paths are; the state here is atomics).  No
 * Python.h: the struct shape is zk_raw_allocator, and the phase comes from
 * the caller probe, which answers "none" to a thread without the GIL.
 */
#include <string.h>

#include "zk_internal.h"

static zk_raw_allocator wrapped;     /* written once, before the hook is set */
static _Atomic int wrapped_set;
static _Atomic int active;

int zk_raw_wrap(const zk_raw_allocator *current, zk_raw_allocator *ours)
{
    int expected = 0;
    if (current == NULL || current->malloc == NULL || zk_raw_is_hook(current) ||
        !atomic_compare_exchange_strong(&wrapped_set, &expected, 1))
        return ZK_EINVAL;
    wrapped = *current;
    /* The wrapped ctx: a thread reading CPython's table while it is being
     * swapped may pair our function with the old ctx or the reverse; ours
     * ignore ctx, and the wrapped functions then still get their own. */
    ours->ctx = current->ctx;
    ours->malloc = zk_raw_malloc;
    ours->calloc = zk_raw_calloc;
    ours->realloc = zk_raw_realloc;
    ours->free = zk_raw_free;
    return ZK_OK;
}

int zk_raw_is_hook(const zk_raw_allocator *a)
{
    return a->malloc == zk_raw_malloc && a->free == zk_raw_free;
}

void zk_raw_set_active(int on)
{
    atomic_store_explicit(&active, on != 0 && atomic_load(&wrapped_set), memory_order_release);
}

int zk_raw_active(void) { return atomic_load_explicit(&active, memory_order_acquire); }

/* ---- allocation ------------------------------------------------------------ */

static bool for_cache(size_t size)
{
    return size >= zk_opt_min_bytes() && (uint64_t)size <= ZK_MAX_CLASS_BYTES &&
           atomic_load_explicit(&active, memory_order_relaxed);
}

/* The cache's block for a raw request (tagged with the calling context's
 * phase), NULL when the wrapped allocator must serve it (too small,
 * inactive, or the kernel refused a mapping), ZK_REFUSED over a budget.
 * The phase comes pinned and stays pinned for the request, so the scope's
 * lifetime does not rest on the GIL staying held until it returns. */
static void *from_cache(size_t size, bool zeroed)
{
    if (!for_cache(size))
        return NULL;
    /* No phase open anywhere (the usual case): no context can name one. */
    struct zk_scope *scope = zk_scope_any_open() ? zk_raw_scope_now() : NULL;
    void *p = zk_route_serve(scope, size, zeroed);
    if (scope != NULL)
        zk_scope_unpin(scope);
    if (p != NULL && p != ZK_REFUSED) {
        zk_count(&zk_stats.raw_allocs, 1);
        zk_count(&zk_stats.raw_bytes, size);
    }
    return p;
}

void *zk_raw_malloc(void *ctx, size_t size)
{
    (void)ctx;
    void *p = from_cache(size, false);
    if (p == ZK_REFUSED)
        return NULL;   /* Python raises MemoryError */
    return p != NULL ? p : wrapped.malloc(wrapped.ctx, size);
}

void *zk_raw_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    if (elsize != 0 && nelem > SIZE_MAX / elsize)
        return NULL;
    void *p = from_cache(nelem * elsize, true);
    if (p == ZK_REFUSED)
        return NULL;
    return p != NULL ? p : wrapped.calloc(wrapped.ctx, nelem, elsize);
}

/* ---- free ------------------------------------------------------------------- */

void zk_raw_free(void *ctx, void *ptr)
{
    (void)ctx;
    zk_region *r = ptr != NULL ? zk_region_at(ptr) : NULL;
    if (r == NULL) {
        if (ptr != NULL)
            wrapped.free(wrapped.ctx, ptr);
        return;
    }
    if (zk_route_free(r))   /* a second free is counted there, and goes nowhere */
        zk_count(&zk_stats.raw_frees, 1);
}

/* ---- realloc: a block keeps the allocator it came from, unless it shrinks
 * below min_bytes (or the hook is inactive): then it moves to the wrapped
 * allocator, so the cache never holds a small block for good -------------- */

/* Copy the cache block at ptr (usable bytes `have`) into a block of the
 * wrapped allocator and free it; NULL (ptr untouched) on failure. */
static void *move_out(void *ptr, size_t have, size_t size)
{
    void *moved = wrapped.malloc(wrapped.ctx, size);
    if (moved == NULL)
        return NULL;
    memcpy(moved, ptr, size < have ? size : have);
    zk_raw_free(NULL, ptr);
    zk_count(&zk_stats.raw_moved_out, 1);
    return moved;
}

void *zk_raw_realloc(void *ctx, void *ptr, size_t new_size)
{
    if (ptr == NULL)
        return zk_raw_malloc(ctx, new_size);
    zk_region *r = zk_region_at(ptr);
    if (r == NULL)
        return wrapped.realloc(wrapped.ctx, ptr, new_size);
    if (atomic_load_explicit(&r->state, memory_order_acquire) != ZK_REGION_IN_USE) {
        zk_count(&zk_stats.invalid_frees, 1);   /* realloc after free: refuse, never pass on */
        return NULL;
    }
    zk_count(&zk_stats.raw_reallocs, 1);
    return zk_route_realloc(r, new_size, for_cache(new_size), move_out);
}
