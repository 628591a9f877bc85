/*
 * Ownership map: region start address -> descriptor.
 *
 * numpy hands free() and realloc() the very pointer an allocation returned,
 * so ownership is an exact lookup of that address.  The map is a two-level
 * radix table over page numbers of a 48-bit address space: a 2 MiB top level
 * (static, zero pages until touched) and 2 MiB leaves mapped on demand, so a
 * leaf costs memory only for the pages of it that hold entries.
 *
 * Reads are lock-free.  The invariant that makes a lookup of a foreign
 * pointer safe: an entry is set only while the core has its address mapped
 * and is cleared before the core unmaps it, so no other allocator can hand
 * out an address whose entry is set.
 */
#define _GNU_SOURCE

#include "zk_internal.h"

#define PAGE_SHIFT 12
#define LEAF_BITS 18
#define TOP_BITS 18
#define ADDRESS_BITS (PAGE_SHIFT + LEAF_BITS + TOP_BITS)   /* 48 */

typedef _Atomic(zk_region *) zk_leaf_entry;

static _Atomic(zk_leaf_entry *) top_level[(size_t)1 << TOP_BITS];

static bool split(const void *ptr, size_t *top, size_t *leaf)
{
    uintptr_t a = (uintptr_t)ptr;
    if ((a & (((uintptr_t)1 << PAGE_SHIFT) - 1)) != 0 || (a >> ADDRESS_BITS) != 0)
        return false;   /* regions start on a page, below 2^48 */
    *top = a >> (PAGE_SHIFT + LEAF_BITS);
    *leaf = (a >> PAGE_SHIFT) & (((uintptr_t)1 << LEAF_BITS) - 1);
    return true;
}

zk_region *zk_pagemap_get(const void *ptr)
{
    size_t t, l;
    if (!split(ptr, &t, &l))
        return NULL;
    zk_leaf_entry *leaf = atomic_load_explicit(&top_level[t], memory_order_acquire);
    if (leaf == NULL)
        return NULL;
    return atomic_load_explicit(&leaf[l], memory_order_acquire);
}

static zk_leaf_entry *leaf_for(size_t t)
{
    zk_leaf_entry *leaf = atomic_load_explicit(&top_level[t], memory_order_acquire);
    if (leaf != NULL)
        return leaf;
    size_t bytes = sizeof(zk_leaf_entry) << LEAF_BITS;
    zk_leaf_entry *fresh = zk_os_map_sparse(bytes);
    if (fresh == NULL)
        return NULL;
    zk_leaf_entry *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(&top_level[t], &expected, fresh,
                                                memory_order_acq_rel, memory_order_acquire))
        return fresh;
    (void)zk_os_unmap(fresh, bytes);   /* another thread installed this leaf first */
    return expected;
}

/* Make sure an entry for ptr can be set later without allocating. */
int zk_pagemap_prepare(const void *ptr)
{
    size_t t, l;
    if (!split(ptr, &t, &l) || leaf_for(t) == NULL)
        return ZK_ENOMEM;
    return ZK_OK;
}

int zk_pagemap_set(const void *ptr, zk_region *r)
{
    size_t t, l;
    if (!split(ptr, &t, &l))
        return ZK_ENOMEM;   /* an address the map cannot hold: treat as no memory */
    zk_leaf_entry *leaf = leaf_for(t);
    if (leaf == NULL)
        return ZK_ENOMEM;
    atomic_store_explicit(&leaf[l], r, memory_order_release);
    return ZK_OK;
}

void zk_pagemap_clear(const void *ptr)
{
    size_t t, l;
    if (!split(ptr, &t, &l))
        return;
    zk_leaf_entry *leaf = atomic_load_explicit(&top_level[t], memory_order_acquire);
    if (leaf != NULL)
        atomic_store_explicit(&leaf[l], NULL, memory_order_release);
}
