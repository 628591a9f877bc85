/*
 * Regions: one mapping per region, described by a descriptor that lives in
 * slabs the core maps itself (never freed, so a descriptor pointer read from
 * the ownership map always points at readable memory).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "zk_internal.h"

#define SLAB_REGIONS 512

typedef struct zk_slab {
    struct zk_slab *next;
    zk_region regions[SLAB_REGIONS];
} zk_slab;

/* Guards the slab list and the descriptor free list only; taken after the
 * pool lock when both are held (zk_cache.c never does so today). */
static pthread_mutex_t desc_lock = PTHREAD_MUTEX_INITIALIZER;
static zk_slab *slabs;
static zk_region *free_descs;

static bool grow_descriptors(void)
{
    zk_slab *s = mmap(NULL, sizeof(zk_slab), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED)
        return false;
    for (int i = 0; i < SLAB_REGIONS; i++) {
        s->regions[i].free_next = free_descs;
        free_descs = &s->regions[i];
    }
    s->next = slabs;
    slabs = s;
    return true;
}

static zk_region *descriptor_alloc(void)
{
    pthread_mutex_lock(&desc_lock);
    zk_region *r = NULL;
    if (free_descs != NULL || grow_descriptors()) {
        r = free_descs;
        free_descs = r->free_next;
    }
    pthread_mutex_unlock(&desc_lock);
    return r;
}

static void descriptor_free(zk_region *r)
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

/* A fresh region of class cls, in use, registered in the ownership map;
 * NULL when the kernel refuses the mapping. */
zk_region *zk_region_create(int cls)
{
    size_t bytes = zk_class_bytes(cls);
    void *p = zk_os_map(bytes, zk_region_alignment(bytes));
    if (p == NULL)
        return NULL;
    if (bytes >= ZK_HUGE_BYTES && zk_opt_hugepages())
        zk_os_advise_huge(p, bytes);
    zk_region *r = descriptor_alloc();
    if (r == NULL) {
        zk_os_unmap(p, bytes);
        return NULL;
    }
    r->base = (uintptr_t)p;
    r->bytes = bytes;
    r->cls = cls;
    r->flags = ZK_RF_ZERO;
    r->cls_prev = r->cls_next = r->lru_prev = r->lru_next = NULL;
    atomic_store_explicit(&r->state, ZK_REGION_IN_USE, memory_order_release);
    if (zk_pagemap_set(p, r) != ZK_OK) {
        descriptor_free(r);
        zk_os_unmap(p, bytes);
        return NULL;
    }
    zk_stats_gauge_add(&zk_stats.bytes_mapped, &zk_stats.peak_bytes_mapped, bytes);
    return r;
}

/* Unmap a region nobody holds.  The map entry goes first: once the address is
 * unmapped, another allocator may hand it out (see zk_pagemap.c). */
void zk_region_destroy(zk_region *r)
{
    zk_pagemap_clear((void *)r->base);
    zk_os_unmap((void *)r->base, r->bytes);
    zk_stats_gauge_sub(&zk_stats.bytes_mapped, r->bytes);
    descriptor_free(r);
}

/* Move r to a mapping of class ncls with mremap: no byte is copied, the
 * grown tail reads as zeros.  On failure r is exactly as before.
 *
 * Order matters for the ownership map: the old address is cleared before
 * mremap unmaps it, and the target is registered only once the move has
 * succeeded (its leaf is made first, so that cannot fail), because a failed
 * MREMAP_FIXED may already have freed the target for another thread's mmap
 * (see zk_pagemap.c for why an entry must never outlive our mapping). */
int zk_region_grow(zk_region *r, int ncls)
{
    size_t nbytes = zk_class_bytes(ncls);
    void *old = (void *)r->base;
    void *target = zk_os_reserve(nbytes, zk_region_alignment(nbytes));
    if (target == NULL)
        return ZK_ENOMEM;
    if (zk_pagemap_prepare(target) != ZK_OK) {
        zk_os_unmap(target, nbytes);
        return ZK_ENOMEM;
    }
    zk_pagemap_clear(old);
    if (zk_os_move(old, r->bytes, target, nbytes) != 0) {
        zk_pagemap_set(old, r);   /* its leaf exists: cannot fail */
        zk_os_drop_failed_target(target, nbytes);
        return ZK_ENOMEM;
    }
    zk_pagemap_set(target, r);    /* leaf prepared above: cannot fail */
    if (nbytes >= ZK_HUGE_BYTES && zk_opt_hugepages())
        zk_os_advise_huge(target, nbytes);
    zk_stats_gauge_add(&zk_stats.bytes_mapped, &zk_stats.peak_bytes_mapped, nbytes - r->bytes);
    r->base = (uintptr_t)target;
    r->bytes = nbytes;
    r->cls = ncls;
    return ZK_OK;
}

/* Drop the descriptor of a region whose unmap another thread had begun
 * (fork child): its address is no longer ours to touch. */
void zk_region_forget(zk_region *r)
{
    descriptor_free(r);
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
