/*
 * zkalloc core: the public C interface.
 *
 * A resident size-class cache for large numpy data buffers.  This header is
 * all the Cython layer sees.  Nothing here knows about Python: errors are
 * returned as negative ZK_E* codes, never printed, never aborted on.
 */
#ifndef ZKALLOC_H
#define ZKALLOC_H

#include <stddef.h>
#include <stdint.h>

/* ---- error codes ------------------------------------------------------ */
enum {
    ZK_OK = 0,
    ZK_EINVAL = -1,     /* a setting's value is out of range */
    ZK_ENOMEM = -2,     /* the kernel refused memory */
    ZK_ECORRUPT = -3,   /* zk_check() found a broken invariant */
    ZK_ECAP = -4,       /* reserve(): more than the cache's cap could ever keep */
};

/* ---- settings (zk_options.c) ------------------------------------------ */
typedef enum {
    ZK_OPT_MIN_BYTES = 0,       /* smallest request served by the cache */
    ZK_OPT_CACHE_BYTES,         /* cap on idle (cached) bytes */
    ZK_OPT_HUGEPAGES,           /* MADV_HUGEPAGE on fresh regions >= 2 MiB: ZK_HUGEPAGES_* */
    ZK_OPT_LAZY_ZERO_BYTES,     /* calloc of >= this many bytes: MADV_DONTNEED; 0 = never */
    ZK_OPT_THREAD_CACHE_BYTES,  /* idle bytes one thread may hold without a lock */
    ZK_OPT_ADAPTIVE_ZERO,       /* 1: calloc learns per class whether MADV_DONTNEED beats memset */
    ZK_OPT_DECAY_MS,            /* idle this long: MADV_FREE; twice as long: unmapped; 0 = never */
    ZK_OPT_BACKGROUND,          /* 1: a background worker faults growing classes ahead and zeroes np.zeros' regions */
    ZK_OPT_LIBC,                /* issue 24: 1 keep: glibc keeps big blocks resident while installed (zk_libc.c); 0 leave */
    ZK_OPT_COUNT
} zk_option;

enum { ZK_HUGEPAGES_OFF = 0, ZK_HUGEPAGES_ON = 1, ZK_HUGEPAGES_AUTO = 2 };

int zk_option_set(zk_option opt, uint64_t value);   /* ZK_OK or ZK_EINVAL */
uint64_t zk_option_get(zk_option opt);
uint64_t zk_option_min(zk_option opt);
uint64_t zk_option_max(zk_option opt);

/* ---- size classes (zk_sizeclass.c) ------------------------------------ */
#define ZK_NCLASSES 176         /* 4 KiB .. 64 GiB, 8 classes per power of two (zk_sizeclass.c) */
#define ZK_MAX_CLASS_BYTES ((uint64_t)1 << 36)

int zk_class_of(size_t bytes);          /* -1 when larger than the largest class */
size_t zk_class_bytes(int cls);         /* page-rounded size of a class */

/* ---- the cache (zk_cache.c) ------------------------------------------- */
void zk_cache_init(void);   /* registers fork handlers; idempotent */
void *zk_cache_alloc(size_t bytes);
void *zk_cache_calloc(size_t bytes);
/* Grow or shrink a region this cache owns; NULL (old region untouched) on failure. */
void *zk_cache_realloc(void *ptr, size_t bytes);
/* 1 if ptr was a region of this cache (now freed), 0 if the pointer is foreign. */
int zk_cache_free(void *ptr);
/* What the cache knows of a pointer. */
enum { ZK_PTR_FOREIGN = 0, ZK_PTR_IN_USE = 1, ZK_PTR_IDLE = 2 };
int zk_cache_state(const void *ptr);
/* 1 when ptr starts an idle region of the pool that the worker has zeroed
 * ahead (and protected), else 0.  Takes the pool lock: for tests. */
int zk_cache_zeroed_ahead(const void *ptr);
/* Usable bytes of an in-use region this cache owns, 0 if foreign or idle. */
size_t zk_cache_usable(const void *ptr);

size_t zk_cache_soften(void);                   /* MADV_FREE idle regions; bytes advised */
/* Bytes of idle regions that are resident now (mincore). */
size_t zk_cache_idle_resident(void);
size_t zk_cache_release(void);                  /* unmap idle regions; bytes unmapped */
int zk_cache_reserve(size_t bytes, int count);  /* regions now cached, or ZK_ENOMEM / ZK_ECAP */
void zk_cache_trim(void);                       /* evict until idle bytes <= cap */
size_t zk_cache_trim_to(size_t bytes);          /* evict oldest until idle bytes <= bytes; bytes unmapped */
void zk_zero_reset(void);                       /* forget what calloc's policy learned */
void zk_worker_forget(void);                    /* forget what the worker learned (back-off, growth) */
/* Walks every structure; ZK_OK or ZK_ECORRUPT (with *what set to a reason). */
int zk_check(const char **what);
/* Every segment the cache holds is mapped, per /proc/self/maps. */
int zk_heap_check_maps(const char **what);
/* Tests: the next n munmap calls fail with ENOMEM, as at the map-count limit. */
void zk_os_fail_unmaps(unsigned n);

/* ---- first-touch policy (zk_thp.c) ------------------------------------- */
#define ZK_THP_RANGES 3          /* fresh mappings of 2-16 MiB, 16-128 MiB, >= 128 MiB */
typedef struct {
    uint64_t ns_per_mib[ZK_THP_RANGES][2];   /* [range][0: 4 KiB pages, 1: huge pages] */
    uint64_t samples[ZK_THP_RANGES][2];
} zk_thp_snapshot;
void zk_thp_read(zk_thp_snapshot *out);
void zk_thp_reset(void);

/* ---- np.zeros' zeroing policy (zk_zero.c) ------------------------------ */
typedef struct {
    uint64_t memset_ns_per_mib;   /* a memset of resident memory, measured */
    uint64_t fault_ns;            /* a 4 KiB page fault, as the policy counts it */
    uint64_t touched_per_1024;    /* the class's users touch this share of its pages */
    uint64_t discard_ns;          /* a discard of one of its regions, measured (0: none yet) */
    int discard;                  /* 1: its next np.zeros is discarded, not memset */
} zk_zero_policy;
void zk_zero_read(int cls, zk_zero_policy *out);

/* ---- zeroing ahead (zk_worker.c, zk_wp.c) ------------------------------ */
/* NULL when the background worker can zero regions ahead for np.zeros in
 * this process (the kernel tracks writes for it), else why it cannot. */
const char *zk_zero_ahead_status(void);

/* ---- NEP 49 shaped entry points (zk_handler.c) ------------------------- */
/* The allocator functions requests fall back to: numpy's original default. */
typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
} zk_fallback;

typedef enum {
    ZK_ROUTE_CACHE = 0,         /* large requests come from the cache */
    ZK_ROUTE_PASSTHROUGH = 1,   /* every request goes to the fallback; frees still checked */
    ZK_ROUTE_SCOPE = 2,         /* the cache, each region tagged with one phase's scope */
    ZK_ROUTE_SECRET = 3,        /* every request gets its own locked, guarded mapping */
} zk_route_kind;

struct zk_scope;

/* What a handler's ctx points at: where its requests go. */
typedef struct {
    zk_route_kind kind;
    int strict;                 /* ZK_ROUTE_SECRET: fail when a protection fails */
    struct zk_scope *scope;     /* ZK_ROUTE_SCOPE: the phase's scope */
} zk_route;

extern zk_route zk_route_cache;
extern zk_route zk_route_passthrough;
extern zk_route zk_route_secret_strict;
extern zk_route zk_route_secret_lenient;

void zk_handler_set_fallback(const zk_fallback *fallback);
void *zk_h_malloc(void *ctx, size_t size);
void *zk_h_calloc(void *ctx, size_t nelem, size_t elsize);
void *zk_h_realloc(void *ctx, void *ptr, size_t new_size);
void zk_h_free(void *ctx, void *ptr, size_t size);

/* ---- phases: an accounted scope over the cache (zk_scope.c) ----------
 * A phase's requests go to the very cache ZK_ROUTE_CACHE uses; each region
 * is tagged with the scope, so the scope knows exactly what it allocated,
 * what is still live and what escaped.  Counters are relaxed atomics: each
 * is exact, a read while other threads allocate is not a consistent cut. */
typedef struct zk_scope zk_scope;

typedef struct {
    uint64_t arrays;            /* requests the cache served, tagged */
    uint64_t bytes_allocated;   /* their requested bytes, summed */
    uint64_t live_arrays, live_bytes, peak_bytes;
    uint64_t small_arrays;      /* below min_bytes (or above the largest class): numpy's allocator */
    uint64_t hits, misses;      /* of the tagged requests */
    uint64_t repurposed;        /* misses served from idle memory of other classes */
    uint64_t fresh_bytes;       /* bytes the misses mapped fresh: the faults the phase caused */
    uint64_t alloc_ns;          /* time inside the cache's allocations */
    uint64_t realloc_in_place, realloc_moved;
    uint64_t invalid_frees;     /* frees through the phase's handler of regions not in use */
    uint64_t escaped_arrays, escaped_bytes;   /* live when the scope was closed */
    uint64_t peak_region_bytes; /* the most bytes of regions (class sizes) live at once */
    int closed;
    uint64_t class_live[ZK_NCLASSES];   /* live tagged regions per region class */
    uint64_t class_peak[ZK_NCLASSES];   /* the most of them live at once */
} zk_scope_stats;

zk_scope *zk_scope_create(void);             /* NULL: no memory */
zk_route *zk_scope_route(zk_scope *s);
/* End the phase: later requests through its route are plain, untagged cache
 * requests (a copied context may still name it).  Records the escapes. */
void zk_scope_close(zk_scope *s);
/* Free the scope; only once no region can carry its tag (the handler capsule
 * that owns it, referenced by every array it allocated, is gone). */
void zk_scope_destroy(zk_scope *s);
void zk_scope_stats_read(zk_scope *s, zk_scope_stats *out);
/* Whether ptr is a live region tagged with s. */
int zk_scope_owns(zk_scope *s, const void *ptr);
/* The live regions tagged with s, walking every descriptor: fills up to max
 * (address, requested bytes) pairs, returns how many there are. */
size_t zk_scope_live(zk_scope *s, uintptr_t *addresses, uint64_t *bytes, size_t max);
/* Hot start: make sure need[c] idle regions of each class c are resident,
 * best effort, faulting in at most peak_bytes (the last run's
 * peak_region_bytes) less what the cache holds idle, and never beyond the
 * cap.  Returns the bytes it mapped fresh (0 when the cache held enough). */
uint64_t zk_scope_warm(const uint64_t need[ZK_NCLASSES], uint64_t peak_bytes);

/* ---- secret memory (zk_secret.c) --------------------------------------- */
enum {
    ZK_SECRET_GUARDED = 1u,     /* PROT_NONE pages before and after */
    ZK_SECRET_LOCKED = 2u,      /* mlock: never swapped */
    ZK_SECRET_NODUMP = 4u,      /* MADV_DONTDUMP: not in core dumps */
    ZK_SECRET_WIPEONFORK = 8u,  /* MADV_WIPEONFORK: a forked child reads zeros */
    ZK_SECRET_ALL = 15u,
};

typedef struct {
    uint64_t data_bytes;        /* what was asked for */
    uint64_t mapped_bytes;      /* the mapping, guard pages included */
    unsigned protections;       /* ZK_SECRET_* applied */
} zk_secret_info;

/* 1 and *out filled when ptr is the data of a live secret allocation. */
int zk_secret_lookup(const void *ptr, zk_secret_info *out);
/* The protections this thread's last secret allocation failed to apply, and
 * the errno of the first failure (0 when nothing failed). */
unsigned zk_secret_last_failure(int *err);
/* Every protection that failed on this thread since the last reset, the
 * errno of the first, and how many allocations got less than all of them. */
unsigned zk_secret_block_failures(int *err, uint64_t *count);
void zk_secret_block_reset(void);
/* Try every protection on one page and undo it; returns those that worked. */
unsigned zk_secret_probe(int *err);
/* Zero n bytes with stores the compiler may not remove. */
void zk_secure_wipe(void *p, size_t n);

/* ---- statistics (zk_stats.c) ------------------------------------------ */
#define ZK_SIZE_BUCKETS 65   /* bit lengths of a 64-bit size, 0 to 64 */
typedef struct {
    uint64_t hits, misses;
    uint64_t small_allocs;          /* below min_bytes: sent to the fallback */
    uint64_t small_frees;           /* frees of arrays below min_bytes, passed to the fallback */
    uint64_t foreign_frees;         /* frees of larger pointers this cache did not allocate */
    uint64_t invalid_frees;         /* a pointer of ours that was not in use */
    uint64_t bytes_in_use, peak_bytes_in_use;
    uint64_t bytes_cached, peak_bytes_cached;
    uint64_t bytes_mapped, peak_bytes_mapped;
    uint64_t evictions, evicted_bytes;
    uint64_t uncached_frees;        /* freed regions larger than the cap */
    uint64_t map_failures;
    uint64_t calloc_fresh, calloc_memset, calloc_discard, zero_samples;
    uint64_t realloc_same, realloc_remap, realloc_copy;
    uint64_t softened_bytes, released_bytes;
    uint64_t repurposed;            /* misses served from idle memory of other classes */
    uint64_t repurposed_bytes;      /* their bytes that were idle memory */
    uint64_t carved, gathered;      /* of those: cut from one larger region, moved together from several */
    uint64_t gathered_pieces;       /* regions moved (mremap) into gathered ones */
    uint64_t fresh_tail_bytes;      /* gathered regions' bytes that idle memory could not cover */
    uint64_t populated_bytes;       /* fresh np.empty regions faulted in at once (timed) */
    uint64_t segments, bytes_reserved, bytes_vacant;   /* address space: segments, their bytes, unbacked */
    uint64_t map_areas;             /* memory areas the cache accounts for (an estimate) */
    uint64_t unmap_failures, unmap_pending;   /* failed munmaps; segments waiting for a retry */
    uint64_t decayed_softened_bytes;  /* idle regions MADV_FREE'd after decay_ms unused */
    uint64_t decayed_released_bytes;  /* idle regions given back after 2 x decay_ms unused */
    uint64_t decay_passes;            /* decay walks of the idle regions */
    uint64_t decay_thread;            /* 1 while the decay thread runs */
    uint64_t prefaulted_bytes;        /* regions the background worker faulted ahead */
    uint64_t prefault_hits;           /* requests served by such a region */
    uint64_t prefault_idle_bytes;     /* faulted ahead and not used yet, now */
    uint64_t worker_cpu_ns;           /* CPU time the background worker spent */
    uint64_t worker_running;          /* 1 while the background worker exists */
    uint64_t background_zeroed_bytes; /* idle regions the worker zeroed ahead for np.zeros */
    uint64_t zeroed_hits;             /* np.zeros served by such a region, no memset */
    uint64_t zeroed_stale;            /* such regions written after zeroing (a stale pointer): memset */
    uint64_t zero_ahead_cancels;      /* requests that needed the region the worker was zeroing */
    uint64_t secret_arrays, secret_bytes, secret_mapped_bytes, secret_locked_bytes;
    uint64_t secret_allocs, secret_wiped_arrays, secret_wiped_bytes;
    uint64_t secret_unprotected, secret_failures;
    uint64_t class_hits[ZK_NCLASSES], class_misses[ZK_NCLASSES];
    uint64_t class_in_use[ZK_NCLASSES], class_cached[ZK_NCLASSES];
    /* small_allocs by size: [0] size 0, [b] sizes in [2^(b-1), 2^b) */
    uint64_t small_by_log2[ZK_SIZE_BUCKETS];
    /* issue 24: Python's raw domain (zk_raw.c) */
    uint64_t raw_allocs;            /* raw-domain requests the cache served */
    uint64_t raw_bytes;             /* their requested bytes, summed */
    uint64_t raw_frees;             /* raw-domain frees of the cache's blocks */
    uint64_t raw_reallocs;          /* raw-domain reallocs of the cache's blocks */
    uint64_t raw_moved_out;         /* of those: moved to the wrapped allocator (shrunk below min_bytes, or uninstalled) */
    uint64_t libc_trims;            /* issue 24: malloc_trim(0) calls (zk_libc.c) */
} zk_stats_snapshot;

void zk_stats_read(zk_stats_snapshot *out);
void zk_stats_reset_counters(void);  /* hits/misses/events; not the byte gauges */

/* ==== issue 24: every large buffer, not only numpy's array data ==========
 * Python's raw domain (zk_raw.c) and glibc's big blocks (zk_libc.c).  The
 * rest of the core knows nothing of either, except the two calls to
 * zk_libc_trim() (release, decay) and the scope pins (zk_scope.c). */

/* ---- Python's raw domain (zk_raw.c) -------------------------------------
 * The shape of CPython's PyMemAllocatorEx, without Python.h: the Cython
 * layer copies field by field between the two. */
typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr);
} zk_raw_allocator;

/* Remember the allocator being wrapped (once: the hook is never removed)
 * and fill *ours with the hook's functions; its ctx is the wrapped one's,
 * so a reader that sees half of the swap still calls a valid pair. */
int zk_raw_wrap(const zk_raw_allocator *wrapped, zk_raw_allocator *ours);   /* ZK_OK, or ZK_EINVAL if already wrapped */
/* Whether a raw allocator's functions are the hook's. */
int zk_raw_is_hook(const zk_raw_allocator *a);
/* 1: requests of min_bytes and more go to the cache; 0: pass-through
 * (the cache's own blocks still go home). */
void zk_raw_set_active(int on);
int zk_raw_active(void);
/* The phase this thread's raw requests are tagged with (NULL: none).
 * Returns the previous one; the pin it held moves to the caller, who hands
 * it back to zk_raw_scope_leave. */
struct zk_scope *zk_raw_scope_enter(struct zk_scope *s);
void zk_raw_scope_leave(struct zk_scope *previous);
void *zk_raw_malloc(void *ctx, size_t size);
void *zk_raw_calloc(void *ctx, size_t nelem, size_t elsize);
void *zk_raw_realloc(void *ctx, void *ptr, size_t new_size);
void zk_raw_free(void *ctx, void *ptr);

/* ---- scope pins (zk_scope.c) ---------------------------------------------
 * A scope is freed when its capsule is gone AND no raw block tagged with it
 * (nor a thread's raw scope) remains: a bytes object can outlive every
 * array of the phase. */
void zk_scope_pin(struct zk_scope *s);
void zk_scope_unpin(struct zk_scope *s);

/* ---- glibc's big blocks (zk_libc.c) ---------------------------------------
 * While installed with libc=keep: mallopt(M_MMAP_MAX, 0) and a huge
 * M_TRIM_THRESHOLD, so blocks glibc would mmap and munmap each time stay in
 * its heap, resident.  Not glibc: every call is a no-op. */
enum { ZK_LIBC_NONE = 0, ZK_LIBC_GLIBC = 1 };
int zk_libc_kind(void);                 /* ZK_LIBC_GLIBC when built against glibc */
void zk_libc_install(int on);           /* install()/uninstall(): apply or restore per the libc setting */
int zk_libc_applied(void);              /* 1 while the tuning is in effect */
int zk_libc_trim(void);                 /* malloc_trim(0) if applied; 1 if it gave memory back */
void zk_libc_setting_changed(void);     /* ZK_OPT_LIBC changed: apply or restore now */

#endif
