/*
 * Shared between the core's files, never seen by the Cython layer.
 */
#ifndef ZK_INTERNAL_H
#define ZK_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zkalloc.h"

#define ZK_HUGE_BYTES ((size_t)2 << 20)   /* THP size on x86_64 and 4K-page aarch64 */

static inline size_t zk_round_up(size_t n, size_t align)
{
    return (n + align - 1) & ~(align - 1);
}

/* ---- regions ------------------------------------------------------------ */
enum { ZK_REGION_UNUSED = 0, ZK_REGION_IN_USE = 1, ZK_REGION_IDLE = 2 };

/* Region flags: only touched by the thread that holds the region
 * (its user, the thread cache owning the slot, or a holder of the pool lock). */
enum {
    ZK_RF_ZERO = 1u,   /* every byte is known to be zero (fresh mapping) */
    ZK_RF_MARK = 2u,   /* scratch bit for zk_check() */
    ZK_RF_SAMPLE = 4u, /* calloc discarded it: measure the touched pages at free */
    ZK_RF_SMALL_PAGES = 8u,  /* MADV_NOHUGEPAGE in effect (see zk_zero.c) */
};

typedef struct zk_region {
    uintptr_t base;
    size_t bytes;                     /* mapped length, the class size */
    int cls;
    unsigned flags;
    _Atomic unsigned state;           /* ZK_REGION_* */
    uint64_t stamp;                   /* when it was last freed: LRU order */
    size_t sampled_bytes;             /* ZK_RF_SAMPLE: the discarded length */
    struct zk_region *cls_prev, *cls_next;   /* shared pool, one list per class */
    struct zk_region *lru_prev, *lru_next;   /* shared pool, all classes, LRU order */
    struct zk_region *free_next;             /* descriptor free list */
} zk_region;

/* zk_region.c: descriptors, and mapping or unmapping a whole region */
zk_region *zk_region_create(int cls);
void zk_region_destroy(zk_region *r);
int zk_region_grow(zk_region *r, int ncls);   /* ZK_OK or ZK_ENOMEM */
void zk_region_forget(zk_region *r);
size_t zk_region_alignment(size_t bytes);
/* Calls fn on every descriptor that describes a mapped region (for checks). */
void zk_region_foreach(void (*fn)(zk_region *r, void *arg), void *arg);
void zk_region_lock_for_fork(void);
void zk_region_unlock_after_fork(void);

/* ---- ownership map (zk_pagemap.c) --------------------------------------- */
/* Every region starts on a page: an address that does not is foreign, no
 * lookup needed (glibc's chunks are 16 bytes past a page or finer). */
static inline bool zk_maybe_region_start(const void *ptr)
{
    return ((uintptr_t)ptr & 4095u) == 0 && ptr != NULL;
}
zk_region *zk_pagemap_get(const void *ptr);
int zk_pagemap_set(const void *ptr, zk_region *r);   /* ZK_OK or ZK_ENOMEM */
int zk_pagemap_prepare(const void *ptr);              /* ZK_OK or ZK_ENOMEM */
void zk_pagemap_clear(const void *ptr);

/* ---- OS layer (zk_os.c) ------------------------------------------------- */
size_t zk_os_page_size(void);
uint64_t zk_os_physical_bytes(void);
void *zk_os_map(size_t bytes, size_t align);
void *zk_os_reserve(size_t bytes, size_t align);
void zk_os_unmap(void *p, size_t bytes);
void zk_os_advise_huge(void *p, size_t bytes);
void zk_os_advise_small_pages(void *p, size_t bytes);
size_t zk_os_resident_pages(void *p, size_t bytes);
int zk_os_discard(void *p, size_t bytes);
int zk_os_soften(void *p, size_t bytes);
void zk_os_populate(void *p, size_t bytes);
int zk_os_move(void *old, size_t old_bytes, void *target, size_t new_bytes);
void zk_os_drop_failed_target(void *target, size_t bytes);

/* ---- statistics (zk_stats.c) -------------------------------------------- */
typedef struct {
    _Atomic uint64_t hits, misses, small_allocs, small_frees, foreign_frees, invalid_frees;
    _Atomic uint64_t bytes_in_use, peak_bytes_in_use;
    _Atomic uint64_t bytes_cached, peak_bytes_cached;
    _Atomic uint64_t bytes_mapped, peak_bytes_mapped;
    _Atomic uint64_t evictions, evicted_bytes, uncached_frees, map_failures;
    _Atomic uint64_t calloc_fresh, calloc_memset, calloc_discard, zero_samples;
    _Atomic uint64_t realloc_same, realloc_remap, realloc_copy;
    _Atomic uint64_t softened_bytes, released_bytes;
    _Atomic uint64_t arena_chunks_in_use, arena_chunk_bytes_in_use;
    _Atomic uint64_t secret_arrays, secret_bytes, secret_mapped_bytes, secret_locked_bytes;
    _Atomic uint64_t secret_allocs, secret_wiped_arrays, secret_wiped_bytes;
    _Atomic uint64_t secret_unprotected, secret_failures;
    _Atomic uint64_t class_hits[ZK_NCLASSES], class_misses[ZK_NCLASSES];
    _Atomic int64_t class_in_use[ZK_NCLASSES], class_cached[ZK_NCLASSES];
    _Atomic uint64_t small_by_log2[ZK_SIZE_BUCKETS];
} zk_stats_counters;

extern zk_stats_counters zk_stats;

static inline void zk_count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* A request below min_bytes (or above the largest class) left to the
 * fallback: counted, and by its size's bit length. */
static inline void zk_count_small(size_t size)
{
    zk_count(&zk_stats.small_allocs, 1);
    zk_count(&zk_stats.small_by_log2[size ? 64 - __builtin_clzll((unsigned long long)size) : 0], 1);
}

void zk_stats_gauge_add(_Atomic uint64_t *gauge, _Atomic uint64_t *peak, uint64_t n);
void zk_stats_raise_peak(_Atomic uint64_t *peak, uint64_t now);
void zk_stats_gauge_sub(_Atomic uint64_t *gauge, uint64_t n);

/* ---- calloc's zeroing policy, learned per class (zk_zero.c) ------------- */
typedef enum {
    ZK_ZERO_MEMSET,     /* memset the region (huge pages back on) */
    ZK_ZERO_DISCARD,    /* lazy_zero_bytes asked for MADV_DONTNEED */
    ZK_ZERO_SAMPLE,     /* MADV_DONTNEED on 4 KiB pages, then learn from it at free */
} zk_zero_way;
zk_zero_way zk_zero_choose(int cls, size_t bytes);
/* A region calloc discarded is being freed: learn how much of it was touched. */
void zk_zero_learn(zk_region *r);

/* ---- the cache, as the arena uses it (zk_cache.c) ----------------------- */
/* zk_cache_alloc that also says whether the region is known to be all zeros
 * (a fresh mapping) and whether it was a resident one (a hit). */
void *zk_cache_take(size_t bytes, size_t *usable, bool *zeroed, bool *hit);

/* ---- arenas (zk_arena.c) ------------------------------------------------ */
typedef enum {
    ZK_ARENA_SERVED,    /* the arena answered (NULL: no memory for a chunk) */
    ZK_ARENA_SMALL,     /* below the arena's min_bytes: numpy's allocator */
    ZK_ARENA_CLOSED,    /* the phase is over: the size-class cache serves it */
} zk_arena_verdict;

void zk_arena_init(void);
void *zk_arena_alloc(zk_arena *a, size_t bytes, bool zeroed, zk_arena_verdict *verdict);
/* 1 when ptr belongs to the arena (and is now freed), 0 when it does not. */
int zk_arena_free(zk_arena *a, void *ptr);
/* Resize without moving when the space allows; NULL when it must move (or
 * must not: *ours set while *have is 0 means ptr is a freed block of the
 * arena).  *have: the live allocation's bytes, 0 if ptr is not one. */
void *zk_arena_resize_in_place(zk_arena *a, void *ptr, size_t bytes, size_t *have, bool *ours);

/* ---- secret memory (zk_secret.c) ---------------------------------------- */
void zk_secret_init(void);
void *zk_secret_alloc(size_t bytes, bool strict);
/* 1 when ptr was a secret allocation (now wiped and unmapped), 0 if not. */
int zk_secret_free(void *ptr);
size_t zk_secret_usable(const void *ptr);

/* ---- settings (zk_options.c) -------------------------------------------- */
/* Relaxed reads: a setting changed by another thread takes effect at this
 * thread's next request. */
extern _Atomic uint64_t zk_option_values[ZK_OPT_COUNT];
void zk_options_init(void);

static inline uint64_t zk_opt(zk_option opt)
{
    return atomic_load_explicit(&zk_option_values[opt], memory_order_relaxed);
}
static inline size_t zk_opt_min_bytes(void) { return (size_t)zk_opt(ZK_OPT_MIN_BYTES); }
static inline size_t zk_opt_cache_bytes(void) { return (size_t)zk_opt(ZK_OPT_CACHE_BYTES); }
static inline bool zk_opt_hugepages(void) { return zk_opt(ZK_OPT_HUGEPAGES) != 0; }
static inline size_t zk_opt_lazy_zero_bytes(void) { return (size_t)zk_opt(ZK_OPT_LAZY_ZERO_BYTES); }
static inline size_t zk_opt_thread_cache_bytes(void) { return (size_t)zk_opt(ZK_OPT_THREAD_CACHE_BYTES); }
static inline size_t zk_opt_arena_min_bytes(void) { return (size_t)zk_opt(ZK_OPT_ARENA_MIN_BYTES); }
static inline bool zk_opt_adaptive_zero(void) { return zk_opt(ZK_OPT_ADAPTIVE_ZERO) != 0; }

#endif
