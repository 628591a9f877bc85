/*
 * fork(): every lock of the core is held across it, so the child never
 * inherits one taken by a thread that does not exist there (the classic
 * allocator fork deadlock, gperftools #499).  Order: heap -> registry ->
 * pool -> descriptors, as everywhere.
 *
 * Because the heap lock is held, no segment is being mapped, split, moved or
 * unmapped at the fork: the child's heap is consistent as it stands.  What
 * a dead thread can leave half done is a free or an eviction (a region idle
 * but in no list yet): the child adopts those, then recounts every gauge
 * from what it really holds.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>

#include "zk_internal.h"

static void fork_prepare(void)
{
    zk_heap_lock_for_fork();
    zk_tcache_lock_for_fork();
    zk_pool_lock();
    zk_region_lock_for_fork();
}

static void fork_parent(void)
{
    zk_region_unlock_after_fork();
    zk_pool_unlock();
    zk_tcache_unlock_after_fork();
    zk_heap_unlock();
}

typedef struct {
    zk_region *leaving;   /* settled after the walk: it may free descriptors */
    uint64_t in_use, cached, mapped;
    int64_t class_in_use[ZK_NCLASSES], class_cached[ZK_NCLASSES];
} fork_census;

static void census_region(zk_region *r, void *arg)
{
    fork_census *c = arg;
    unsigned state = atomic_load_explicit(&r->state, memory_order_relaxed);
    if (state == ZK_REGION_VACANT)
        return;   /* the heap's own gauges are consistent (heap lock held) */
    if (r->flags & ZK_RF_LEAVING) {   /* a dead thread was giving it back */
        r->free_next = c->leaving;
        c->leaving = r;
        return;
    }
    /* Idle, in no list, not in the survivor's cache (not marked): a dead
     * thread was between two steps of a free or an eviction. */
    if (state == ZK_REGION_IDLE && !(r->flags & ZK_RF_MARK) && !zk_pool_contains(r))
        zk_pool_link(r);
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

static void fork_child(void)
{
    zk_region_unlock_after_fork();   /* the census walks the descriptors */
    zk_tcache_fork_child();
    fork_census census;
    memset(&census, 0, sizeof census);
    zk_region_foreach(census_region, &census);
    store_census(&census);
    while (census.leaving != NULL) {
        zk_region *next = census.leaving->free_next;
        zk_heap_fork_adopt_leaving(census.leaving);
        census.leaving = next;
    }
    zk_heap_fork_recount();
    zk_pool_unlock();
    zk_tcache_unlock_after_fork();
    zk_heap_unlock();
    zk_decay_fork_child();   /* the parent's decay thread does not exist here */
    zk_traffic_fork_child();   /* nor its requests in flight */
    /* A thread of the parent may have stored a lower cap and been about to
     * trim (zk_option_set) when the fork happened: that thread is gone here,
     * so the child trims for it. */
    zk_cache_trim();
}

void zk_fork_init(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}
