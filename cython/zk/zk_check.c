/*
 * zk_check(): walk every structure and compare it with the gauges.  Meant
 * for tests: exact only while no other thread allocates or frees, and it
 * never writes an in-use region (its owner may be changing it right now).
 */
#include "zk_internal.h"

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

static void check_descriptor(zk_region *r, void *arg)
{
    check_totals *t = arg;
    unsigned state = atomic_load_explicit(&r->state, memory_order_acquire);
    if (state == ZK_REGION_VACANT)
        return;   /* zk_heap_check() */
    t->mapped += r->bytes;
    if (zk_pagemap_get((void *)r->base) != r && t->error == NULL)
        t->error = "a mapped region is missing from the ownership map";
    if (state == ZK_REGION_IN_USE) {
        t->in_use += r->bytes;
        if (zk_class_bytes(r->cls) > r->bytes && t->error == NULL)
            t->error = "a region in use is smaller than its class";
    } else if (r->flags & ZK_RF_MARK) {
        t->idle_marked += r->bytes;
        r->flags &= ~ZK_RF_MARK;
    } else {
        t->idle_unmarked += r->bytes;
    }
}

static uint64_t gauge(_Atomic uint64_t *g) { return atomic_load_explicit(g, memory_order_relaxed); }

static const char *check_locked(void)
{
    uint64_t pooled;
    const char *err = zk_pool_check(check_idle, &pooled);
    if (err == NULL)
        err = zk_tcache_check(check_idle);
    check_totals t = {0, 0, 0, 0, NULL};
    zk_region_foreach(check_descriptor, &t);   /* also clears every mark */
    if (err != NULL)
        return err;
    if (t.error != NULL)
        return t.error;
    if (t.idle_unmarked != 0)
        return "an idle region is in no list: it was lost";
    if (t.in_use != gauge(&zk_stats.bytes_in_use))
        return "bytes_in_use does not match the regions in use";
    if (t.idle_marked != gauge(&zk_stats.bytes_cached))
        return "bytes_cached does not match the idle regions";
    if (t.mapped != gauge(&zk_stats.bytes_mapped))
        return "bytes_mapped does not match the mapped regions";
    if (t.idle_marked > zk_opt_cache_bytes())
        return "idle bytes exceed the cap";
    return zk_heap_check();
}

int zk_check(const char **what)
{
    zk_heap_lock();
    zk_tcache_lock_for_fork();
    zk_pool_lock();
    const char *err = check_locked();
    zk_pool_unlock();
    zk_tcache_unlock_after_fork();
    zk_heap_unlock();
    if (what != NULL)
        *what = err;
    return err == NULL ? ZK_OK : ZK_ECORRUPT;
}
const char *zk_check_unlocked_debug(void);
const char *zk_check_unlocked_debug(void) { return check_locked(); }
