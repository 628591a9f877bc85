/*
 * Region descriptors, in slabs the core maps itself.  Slabs are never
 * unmapped, so a descriptor pointer read from the ownership map always points
 * at readable memory, even while another thread releases the descriptor.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>

#include "zk_internal.h"

#define SLAB_REGIONS 512

typedef struct zk_slab {
    struct zk_slab *next;
    zk_region regions[SLAB_REGIONS];
} zk_slab;

/* Guards the slab list and the descriptor free list only: always the last
 * lock taken (heap -> pool -> descriptors). */
static pthread_mutex_t desc_lock = PTHREAD_MUTEX_INITIALIZER;
static zk_slab *slabs;
static zk_region *free_descs;

static bool grow_descriptors(void)
{
    zk_slab *s = zk_os_map_zeroed(sizeof(zk_slab));
    if (s == NULL)
        return false;
    for (int i = 0; i < SLAB_REGIONS; i++) {
        s->regions[i].free_next = free_descs;
        free_descs = &s->regions[i];
    }
    s->next = slabs;
    slabs = s;
    return true;
}

zk_region *zk_region_descriptor(void)
{
    pthread_mutex_lock(&desc_lock);
    zk_region *r = NULL;
    if (free_descs != NULL || grow_descriptors()) {
        r = free_descs;
        free_descs = r->free_next;
    }
    pthread_mutex_unlock(&desc_lock);
    if (r == NULL)
        return NULL;
    /* The state stays UNUSED (a racing lookup of a stale pointer sees no
     * region) until the caller sets it. */
    r->base = 0;
    r->bytes = 0;
    r->cls = 0;
    r->flags = 0;
    r->stamp = 0;
    r->sampled_bytes = 0;
    r->cls_prev = r->cls_next = r->lru_prev = r->lru_next = NULL;
    r->free_next = NULL;
    r->addr_prev = r->addr_next = NULL;
    r->areas = 0;
    atomic_store_explicit(&r->scope, NULL, memory_order_relaxed);
    atomic_store_explicit(&r->scope_bytes, 0, memory_order_relaxed);
    atomic_store_explicit(&r->scope_serial, 0, memory_order_relaxed);
    atomic_store_explicit(&r->site, 0, memory_order_relaxed);
    return r;
}

void zk_region_release_descriptor(zk_region *r)
{
    atomic_store_explicit(&r->state, ZK_REGION_UNUSED, memory_order_relaxed);
    pthread_mutex_lock(&desc_lock);
    r->free_next = free_descs;
    free_descs = r;
    pthread_mutex_unlock(&desc_lock);
}

size_t zk_region_alignment(size_t bytes)
{
    /* 2 MiB alignment lets the kernel back the region with huge pages. */
    return bytes >= ZK_HUGE_BYTES ? ZK_HUGE_BYTES : zk_os_page_size();
}

void zk_region_foreach(void (*fn)(zk_region *r, void *arg), void *arg)
{
    pthread_mutex_lock(&desc_lock);
    for (zk_slab *s = slabs; s != NULL; s = s->next)
        for (int i = 0; i < SLAB_REGIONS; i++)
            if (atomic_load_explicit(&s->regions[i].state, memory_order_acquire) != ZK_REGION_UNUSED)
                fn(&s->regions[i], arg);
    pthread_mutex_unlock(&desc_lock);
}

void zk_region_lock_for_fork(void) { pthread_mutex_lock(&desc_lock); }
void zk_region_unlock_after_fork(void) { pthread_mutex_unlock(&desc_lock); }
