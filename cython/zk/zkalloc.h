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
    ZK_EBUSY = -5,      /* zk_check(): other threads kept changing what it compares */
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
    ZK_OPT_BUDGET,              /* the cache's bytes in use may not exceed it; 0 = no budget */
    ZK_OPT_LIBC,                /* 1 keep: glibc keeps big blocks resident while installed (zk_libc.c); 0 leave */
    ZK_OPT_COUNT
} zk_option;

enum { ZK_HUGEPAGES_OFF = 0, ZK_HUGEPAGES_ON = 1, ZK_HUGEPAGES_AUTO = 2 };

/* How a setting is written (the Python layer parses by kind). */
enum { ZK_KIND_BYTES = 0, ZK_KIND_DURATION_MS = 1, ZK_KIND_BOOL = 2, ZK_KIND_CHOICE = 3 };
typedef struct {
    const char *name;     /* the Python setting and, upper-cased, its ZKALLOC_ variable */
    int kind;             /* ZK_KIND_* */
    uint64_t min, max;    /* the values zk_option_set accepts */
    /* CHOICE: the words of the values min, min+1, ..., comma-separated, each
     * with its aliases after '|'; the first word is how it reads back. */
    const char *words;
    uint64_t (*default_value)(void);
} zk_option_info;
extern const zk_option_info zk_options_info[ZK_OPT_COUNT];

/* Only stores (ZK_OK), or ZK_EINVAL out of range; zk_option_apply then
 * makes the change take effect now. */
int zk_option_set(zk_option opt, uint64_t value);
uint64_t zk_option_get(zk_option opt);
/* What a stored change does at once (zk_cache.c): a lower cache_bytes
 * evicts to it, a new decay_ms reschedules the decay pass, libc applies or
 * restores glibc's tuning while installed.  Call it once per changed option,
 * after storing all of them. */
void zk_option_apply(zk_option opt);

/* ---- size classes (zk_sizeclass.c) ------------------------------------ */
#define ZK_NCLASSES 176         /* 4 KiB .. 64 GiB, 8 classes per power of two (zk_sizeclass.c) */
#define ZK_MAX_CLASS_BYTES ((uint64_t)1 << 36)

int zk_class_of(size_t bytes);          /* -1 when larger than the largest class */
size_t zk_class_bytes(int cls);         /* page-rounded size of a class */

/* ---- the cache (zk_cache.c) ------------------------------------------- */
/* Usable bytes of an in-use region this cache owns, 0 if foreign or idle. */
size_t zk_cache_usable(const void *ptr);

size_t zk_cache_soften(void);                   /* MADV_FREE idle regions; bytes advised */
/* Bytes of idle regions that are resident now (mincore). */
size_t zk_cache_idle_resident(void);
size_t zk_cache_release(void);                  /* unmap idle regions; bytes unmapped */
int zk_cache_reserve(size_t bytes, int count);  /* regions now cached, or ZK_ENOMEM / ZK_ECAP */
size_t zk_cache_trim_to(size_t bytes);          /* evict oldest until idle bytes <= bytes; bytes unmapped */
void zk_zero_reset(void);                       /* forget what calloc's policy learned */
void zk_cache_forget_slack_returns(void);       /* slack is dropped again (memory is wanted) */
/* Walks every structure (zk_check.c): ZK_OK, ZK_ECORRUPT (with *what set
 * to a reason), or ZK_EBUSY when other threads' requests kept changing the
 * totals it compares (what it could see held; *what says what it skipped). */
int zk_check(const char **what);
/* Every segment the cache holds is mapped, per /proc/self/maps (ZK_OK,
 * ZK_ECORRUPT, or ZK_EBUSY: segments kept appearing while it read). */
int zk_heap_check_maps(const char **what);

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

/* ---- NEP 49 shaped entry points (zk_handler.c) ------------------------- */
/* The allocator functions requests fall back to: numpy's original default.
 * The shape of numpy's PyDataMemAllocator (the Cython layer passes numpy's
 * struct as it is, after checking the sizes match). */
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

#include "zk_scope_stats_list.h"
#define ZK_SCOPE_STAT_FIELD(name, ...) uint64_t name;
typedef struct {
    ZK_SCOPE_STATS_LIST(ZK_SCOPE_STAT_FIELD, ZK_SCOPE_STAT_FIELD, ZK_SCOPE_STAT_FIELD, ZK_SCOPE_STAT_FIELD)
    uint64_t class_live[ZK_NCLASSES];   /* live tagged regions per region class */
    uint64_t class_peak[ZK_NCLASSES];   /* the most of them live at once */
} zk_scope_stats;
#undef ZK_SCOPE_STAT_FIELD

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

/* Phases' budgets and peaks, set before the phase's first request: with
 * track, its allocations record their site (zk_caller_probe); a request
 * that would take its live (requested) bytes over budget (0: none) fails. */
void zk_scope_configure(zk_scope *s, int track, uint64_t budget);
/* A number no other scope of this process has had: what a peak's entries
 * name their phase by (a scope's address can be reused). */
uint64_t zk_scope_serial(zk_scope *s);

/* ---- what was live at a peak (zk_peak.c) ------------------------------- */
typedef struct {
    uint64_t scope;     /* serial of the phase that allocated it (zk_scope_serial), 0: none */
    uint64_t bytes;     /* its requested bytes (the region's when not recorded: untracked, outside a phase) */
    uint32_t site;      /* its allocation site (zk_caller_probe), 0: not recorded or unknown */
    int32_t cls;        /* its region's class */
    int32_t origin;     /* ZK_ORIGIN_*: which allocator asked for it */
} zk_live_entry;
/* Who asked for an in-use region: numpy's handler (an array's data),
 * Python's raw domain (bytes, bytearray, tobytes(), large list and dict
 * storage), or not recorded (allocated untracked, outside a phase). */
enum { ZK_ORIGIN_UNKNOWN = 0, ZK_ORIGIN_NUMPY = 1, ZK_ORIGIN_RAW = 2 };
typedef struct {
    uint64_t live;            /* the watched measure when the snapshot was taken */
    uint64_t in_use;          /* the process's bytes in use (regions) then */
    uint64_t unlisted_bytes;  /* regions it had no room to list */
    uint64_t count;           /* entries */
    uint64_t snapshots;       /* snapshots taken, the one kept and those it replaced */
    uint64_t snapshot_ns;     /* the time they took, all together */
} zk_peak_info;
typedef struct zk_peak zk_peak;
/* Copies up to max entries of p's snapshot; returns how many it has. */
size_t zk_peak_read(zk_peak *p, zk_live_entry *out, size_t max, zk_peak_info *info);
/* A phase's peak snapshot, and the snapshot its last refused request took. */
zk_peak *zk_scope_peak(zk_scope *s);
zk_peak *zk_scope_refusal(zk_scope *s);
/* run --peak: sites for every cache allocation and snapshots at the
 * process's peaks of bytes in use (on: starts afresh). */
void zk_track_process(int on);
zk_peak *zk_process_peak(void);

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
/* Every protection that failed on this thread since the last reset, the
 * errno of the first, and how many allocations got less than all of them. */
unsigned zk_secret_block_failures(int *err, uint64_t *count);
void zk_secret_block_reset(void);
/* Try every protection on one page and undo it; returns those that worked. */
unsigned zk_secret_probe(int *err);
/* Zero n bytes with stores the compiler may not remove. */
void zk_secure_wipe(void *p, size_t n);

/* ---- statistics (zk_stats.c) ------------------------------------------ */
#include "zk_stats_list.h"
#define ZK_SIZE_BUCKETS 65   /* bit lengths of a 64-bit size, 0 to 64 */

#define ZK_STAT_FIELD(name, ...) uint64_t name;
typedef struct {
    ZK_STATS_LIST(ZK_STAT_FIELD, ZK_STAT_FIELD, ZK_STAT_FIELD)
    uint64_t class_hits[ZK_NCLASSES], class_misses[ZK_NCLASSES];
    uint64_t class_in_use[ZK_NCLASSES], class_cached[ZK_NCLASSES];
    /* small_allocs by size: [0] size 0, [b] sizes in [2^(b-1), 2^b) */
    uint64_t small_by_log2[ZK_SIZE_BUCKETS];
} zk_stats_snapshot;
#undef ZK_STAT_FIELD

/* One entry per line of ZK_STATS_LIST, in its order: what the Cython layer
 * reads a snapshot with, so no field name is restated outside the list. */
enum { ZK_STAT_COUNTER = 0, ZK_STAT_GAUGE = 1, ZK_STAT_PEAK = 2, ZK_STAT_RECORD = 3 };
typedef struct {
    const char *name;
    int kind;            /* ZK_STAT_* (RECORD: phases only, a value stored at one moment) */
    const char *doc;
    size_t offset;       /* of its uint64_t in zk_stats_snapshot (zk_scope_stats) */
} zk_stat_info;
extern const zk_stat_info zk_stats_info[];
extern const size_t zk_stats_count;
/* The same for a phase: one entry per line of ZK_SCOPE_STATS_LIST (offsets
 * into zk_scope_stats, zk_scope.c). */
extern const zk_stat_info zk_scope_stats_info[];
extern const size_t zk_scope_stats_count;

void zk_stats_read(zk_stats_snapshot *out);
void zk_stats_reset_counters(void);  /* hits/misses/events; not the byte gauges */

/* ==== every large buffer, not only numpy's array data ====================
 * Python's raw domain (zk_raw.c) and glibc's big blocks (zk_libc.c).  The
 * rest of the core knows nothing of either, except decay's call to
 * zk_libc_trim() and the scope pins (zk_scope.c); release() trims in the
 * Cython layer, after zk_cache_release. */

/* ---- Python's raw domain (zk_raw.c) -------------------------------------
 * The shape of CPython's PyMemAllocatorEx, without Python.h: the Cython
 * layer passes CPython's struct as it is, after checking the sizes match. */
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
void *zk_raw_malloc(void *ctx, size_t size);
void *zk_raw_calloc(void *ctx, size_t nelem, size_t elsize);
void *zk_raw_realloc(void *ctx, void *ptr, size_t new_size);
void zk_raw_free(void *ctx, void *ptr);

/* ---- scope pins (zk_scope.c) ---------------------------------------------
 * A scope is freed when its capsule is gone AND no raw block tagged with it
 * (nor a raw request under way in it) remains: a bytes object can outlive
 * every array of the phase. */
void zk_scope_pin(struct zk_scope *s);
void zk_scope_unpin(struct zk_scope *s);

/* ---- what the calling thread is doing (zk_caller.c) -----------------------
 * Asked inside allocations, with no lock of the core held: so each function
 * must run no interpreter code, take no lock an allocation can wait on, and
 * allocate nothing through the hooked domains.  site: the allocation site of
 * a tracked request (0: unknown); raw_scope: the phase a raw-domain request
 * belongs to, pinned (zk_scope_unpin when done), NULL for none.  Python's is
 * zk_py.c's; registered once, before the hooks are set. */
typedef struct {
    uint32_t (*site)(void);
    struct zk_scope *(*raw_scope)(void);
} zk_caller_probe;
void zk_set_caller_probe(const zk_caller_probe *p);

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
