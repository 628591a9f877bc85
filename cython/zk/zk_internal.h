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
#include "zk_testing.h"   /* so each hook's definition is checked against it */

#define ZK_HUGE_BYTES ((size_t)2 << 20)   /* THP size on x86_64 and 4K-page aarch64 */

static inline size_t zk_round_up(size_t n, size_t align)
{
    return (n + align - 1) & ~(align - 1);
}

/* ---- regions ------------------------------------------------------------ */
/* A descriptor describes a span of one segment (zk_heap.c):
 *  - IN_USE: handed out to an array;
 *  - IDLE: resident and kept by the cache (a thread cache or the pool);
 *  - VACANT: address space of a segment with no memory behind it
 *    (discarded, or never touched): no array, no cache, no ownership entry. */
enum { ZK_REGION_UNUSED = 0, ZK_REGION_IN_USE = 1, ZK_REGION_IDLE = 2, ZK_REGION_VACANT = 3 };

/* Region flags: only touched by the thread that holds the region
 * (its user, the thread cache owning the slot, or a holder of the pool lock). */
enum {
    ZK_RF_ZERO = 1u,   /* every byte is known to be zero (fresh mapping) */
    ZK_RF_MARK = 2u,   /* scratch bit for fork's census (zk_fork.c, zk_tcache.c) */
    ZK_RF_SAMPLE = 4u, /* given lazily (fresh, or calloc discarded it): measure the touched pages at free */
    ZK_RF_SMALL_PAGES = 8u,  /* MADV_NOHUGEPAGE in effect (see zk_zero.c) */
    ZK_RF_SHARED = 16u,      /* lives in a shared segment (small classes) */
    ZK_RF_BINNED = 64u,      /* VACANT, in a vacant bin (zk_heap.c) */
    ZK_RF_MULTI = 128u,      /* may span several memory areas: mremap cannot move it */
    ZK_RF_SOFT = 1024u,      /* idle and MADV_FREE'd by decay (zk_decay.c) */
    ZK_RF_SLACK_GONE = 2048u,   /* its pages past `extent` were given back (zk_cache.c, drop_slack) */
    ZK_RF_DISCARDED = 16384u,   /* its last np.zeros was a discard: few of its pages are present */
    ZK_RF_PENDING = 512u,    /* a whole vacant segment whose munmap failed: on the retry list */
    ZK_RF_LEAVING = 256u,    /* being given back outside the heap lock (fork: see zk_fork.c) */
};

typedef struct zk_region {
    uintptr_t base;
    size_t bytes;                     /* mapped length, the class size */
    int cls;
    unsigned flags;
    _Atomic unsigned state;           /* ZK_REGION_* */
    uint64_t stamp;                   /* when it was last freed: LRU order */
    uint64_t idle_ns;                 /* coarse clock when it was last freed (decay) */
    size_t sampled_bytes;             /* ZK_RF_SAMPLE: the discarded length */
    size_t extent;                    /* in use: how far its users may have written since its
                                       * pages past that were last dropped (0: unknown, all) */
    struct zk_region *cls_prev, *cls_next;   /* shared pool, one list per class */
    struct zk_region *lru_prev, *lru_next;   /* shared pool, all classes, LRU order */
    struct zk_region *free_next;             /* descriptor free list, chains */
    /* The spans of one segment, in address order (heap lock). */
    struct zk_region *addr_prev, *addr_next;
    uint32_t areas;                   /* memory areas (VMAs) this span accounts for */
    /* The phase an in-use region was allocated in (zk_scope.c), NULL for none,
     * and its requested bytes.  Taken off (atomic exchange) before the region
     * is freed or resized, so exactly one free accounts for it; an idle
     * region never carries a tag. */
    _Atomic(struct zk_scope *) scope;
    _Atomic uint64_t scope_bytes;
    _Atomic uint64_t scope_serial;    /* the tag's zk_scope_serial: read by peak snapshots */
    /* Allocation site of a tracked request (zk_peak.c), else 0.  Atomic:
     * a peak snapshot of another thread reads it from an in-use region. */
    _Atomic uint32_t site;
    /* Who asked for it (ZK_ORIGIN_*) and its requested bytes, recorded for a
     * phase's and a tracked request (zk_region_note_request), else
     * ZK_ORIGIN_UNKNOWN: what a peak snapshot lists for it.  origin is stored
     * after request_bytes with release, so a reader that sees it set
     * (acquire) reads the bytes that go with it. */
    _Atomic uint32_t origin;
    _Atomic uint64_t request_bytes;
} zk_region;

/* zk_region.c: descriptors, in slabs that are never unmapped */
zk_region *zk_region_descriptor(void);          /* zeroed, state UNUSED; NULL: no memory */
void zk_region_release_descriptor(zk_region *r);
size_t zk_region_alignment(size_t bytes);
/* Calls fn on every descriptor in use (any state but UNUSED). */
void zk_region_foreach(void (*fn)(zk_region *r, void *arg), void *arg);
void zk_region_lock_for_fork(void);
void zk_region_unlock_after_fork(void);

/* ---- the heap: segments and their spans (zk_heap.c) --------------------
 * Every region lives in a segment (one mmap).  Small classes share segments
 * (so 10^5 live arrays are a few hundred memory areas, not 10^5), larger
 * ones get a segment each.  Every function below except lock/unlock needs
 * the heap lock, which is taken before the pool lock. */
#define ZK_SHARED_MAX_BYTES ZK_HUGE_BYTES   /* requests below this share segments */
void zk_heap_lock(void);
void zk_heap_unlock(void);   /* then drops what zk_heap_drop_after_unlock named */
/* Heap lock held: a failed move's target that zk_os_retake_target could not
 * take back; unmapped after the lock is released if it is still ours. */
void zk_heap_drop_after_unlock(void *p, size_t bytes);
/* Heap lock held: give back a failed move's target, now or after the lock. */
void zk_heap_drop_failed_target(void *p, size_t bytes);
/* Release the heap lock to read /proc/self/maps, and take it again; a fork
 * waits until every such reader has it again (zk_heap_lock_for_fork). */
void zk_heap_unlock_to_read(void);
void zk_heap_relock_after_read(void);
void zk_heap_lock_for_fork(void);
/* How a fresh np.empty region is first touched: zk_thp_choose's answer. */
typedef enum {
    ZK_TOUCH_WATCH,   /* left lazy; what its user touched is measured at free */
    ZK_TOUCH_TIMED,   /* its class writes its regions whole: faulted in at once
                       * (the requested bytes only), timed, zk_thp_record */
    ZK_TOUCH_LAZY,    /* its class writes its regions whole, on huge pages: left
                       * lazy, a fault mapping 2 MiB (zk_thp.c says why) */
} zk_first_touch;
/* A fresh span of `bytes` for class cls, in use and registered; NULL when the
 * kernel refuses.  *touch: how np.empty's first touch of it goes (zk_thp.c);
 * its huge-page choice in *huge. */
zk_region *zk_heap_fresh(int cls, size_t bytes, bool zeroed, zk_first_touch *touch, bool *huge);
/* Split r (any state, in no list) at `front` bytes: r keeps the front, the
 * returned descriptor (same state and flags) the back; NULL: no descriptor. */
zk_region *zk_heap_split(zk_region *r, size_t front);
/* Give r's memory back to the kernel: r is idle, uncounted and in no list.
 * Ends as vacant space, or as nothing when its whole segment goes. */
void zk_heap_vacate(zk_region *r);
/* The same without the heap lock held: the syscall runs unlocked, only the
 * bookkeeping takes the lock (eviction and release on every thread). */
void zk_heap_give_back(zk_region *r);
/* Fork child, all locks held: a region a dead thread was giving back. */
void zk_heap_fork_adopt_leaving(zk_region *r);
void zk_heap_fork_recount(void);   /* fork child: segment gauges from the spans */
/* r's pages were just moved away by mremap (its entry already cleared):
 * with zk_os_move (kept false: r must be a whole segment, now gone), or
 * with zk_os_move_keep (kept true: r's range is still
 * mapped, empty, and `spare`, a descriptor from zk_region_descriptor,
 * becomes the vacant span there; a whole segment is then unmapped).  Else
 * spare is released.  r then stands alone; returns the memory areas its
 * pages took along.  zk_heap_adopt makes r a segment of its own. */
uint32_t zk_heap_moved_out(zk_region *r, zk_region *spare, bool kept);
/* Whether r is the one span of its segment (heap lock held). */
bool zk_heap_whole_segment(const zk_region *r);
void zk_heap_adopt(zk_region *r, size_t bytes, uint32_t areas);
/* Retry unmaps that failed (segments kept vacant); bytes unmapped. */
size_t zk_heap_retry_unmaps(void);
/* Whether a page-table move may add memory areas now (map count headroom). */
bool zk_heap_may_add_areas(uint32_t n);
/* What zk_check.c reads (heap lock held): whether a vacant span belongs in a
 * bin, each bin's first span and bit, and how many segments were ever
 * mapped or adopted (a segment made while /proc/self/maps was read may be
 * missing from what was read). */
bool zk_heap_binnable(const zk_region *r);
zk_region *zk_heap_bin_head(int cls);
bool zk_heap_bin_marked(int cls);
uint64_t zk_heap_segments_made(void);

/* ---- requests in flight, for zk_check (zk_check.c) ----------------------
 * Every path that moves a region between states, lists and gauges without
 * the heap, registry and pool locks held throughout is bracketed by these:
 * a check that sees none begun and none in flight while it walks can
 * compare totals exactly.  Counted per thread (in its thread cache, so no
 * two threads share the counters' cache line; threads without one share
 * a pair): two uncontended atomic adds per request.  End with the counts
 * begin returned: the thread's cache may open in between. */
typedef struct {
    _Atomic uint64_t begun, ended;
} zk_traffic_counts;
zk_traffic_counts *zk_traffic_begin(void);
void zk_traffic_end(zk_traffic_counts *c);
void zk_traffic_fork_child(void);   /* the threads in flight are gone */

/* ---- first-touch policy: huge pages or not, measured (zk_thp.c) --------- */
/* For a fresh mapping of `bytes` (of the class zk_class_of(bytes)): advise
 * huge pages?  *touch: how np.empty's first touch goes (the caller of a
 * zeroed or unknown request may ignore it). */
bool zk_thp_choose(size_t bytes, bool zeroed, zk_first_touch *touch);
void zk_thp_record(size_t bytes, bool huge, uint64_t ns);
uint64_t zk_thp_now_ns(void);   /* CLOCK_MONOTONIC */
uint64_t zk_thp_cpu_ns(void);   /* this thread's CPU time: what a preemption does not inflate */
/* The measured cost of faulting in one 4 KiB page (fresh regions faulted at
 * once on 4 KiB pages, 2-16 MiB); 0 before any sample. */
uint64_t zk_thp_small_page_fault_ns(void);
/* Whether 4 KiB pages were measured cheaper than huge pages to fault in
 * fresh memory of `bytes` (false before both are measured). */
bool zk_thp_small_pages_cheaper(size_t bytes);

/* ---- the shared pool and idle accounting (zk_pool.c) --------------------
 * Functions named pool_* need the pool lock (zk_pool_lock). */
void zk_pool_lock(void);
void zk_pool_unlock(void);
bool zk_idle_count(zk_region *r);     /* reserve against the cap; false: no room */
void zk_idle_uncount(zk_region *r);
void zk_in_use_count(zk_region *r);
void zk_in_use_uncount(zk_region *r);
void zk_pool_link(zk_region *r);
void zk_pool_unlink(zk_region *r);
bool zk_pool_contains(zk_region *r);
zk_region *zk_pool_oldest(void);
zk_region *zk_pool_newer(zk_region *r);   /* the next newer region, NULL at the end */
zk_region *zk_pool_class_oldest(int cls);
zk_region *zk_pool_newest(void);
zk_region *zk_pool_pop(int cls);          /* takes the lock itself */
/* Park r (counted against the cap here), evicting the oldest as needed;
 * *parked false if it cannot fit.  Takes the pool lock; returns the evicted
 * regions (uncounted, chained through free_next) for zk_vacate_chain. */
zk_region *zk_pool_put(zk_region *r, bool *parked);
/* Take the oldest idle regions out, uncounted, until idle bytes are at most
 * `keep`; chained through free_next, their bytes in *bytes. */
zk_region *zk_pool_evict(size_t keep, size_t *bytes);
/* Vacate every region of a chain, counting each in event/event_bytes (may be
 * NULL); takes the heap lock unless the caller holds it. */
void zk_vacate_chain(zk_region *chain, _Atomic uint64_t *event, _Atomic uint64_t *event_bytes, bool heap_held);
const char *zk_pool_check(const char *(*check_idle)(zk_region *r), uint64_t *count);

/* ---- decay: idle memory given back over time (zk_decay.c) --------------- */
uint64_t zk_decay_now(void);          /* the coarse clock idle_ns is read from (or the injected one) */
void zk_decay_wake(void);             /* request path: with libc=keep, make sure the thread watches */
void zk_decay_parked(void);           /* a region went idle: make sure someone will decay it */
void zk_decay_fork_child(void);
void zk_decay_reschedule(void);       /* decay_ms changed: the next tick runs a pass */
/* bytes_in_use's peak since decay's last pass (raised by zk_in_use_count): the
 * process's high-water mark without its idle cache, between passes. */
extern _Atomic uint64_t zk_decay_in_use_peak;
/* Thread caches: move regions idle since before `cutoff` into the pool. */
void zk_tcache_drain_older(uint64_t cutoff);

/* ---- fork (zk_fork.c) ---------------------------------------------------- */
void zk_fork_init(void);   /* registers the atfork handlers, once */

/* ---- thread caches (zk_tcache.c) ---------------------------------------- */
typedef struct zk_tcache zk_tcache;
zk_tcache *zk_tcache_mine(void);   /* NULL: none (exiting, or no memory) */
zk_region *zk_tcache_pop(zk_tcache *tc, int cls);
bool zk_tcache_push(zk_tcache *tc, zk_region *r);
void zk_tcache_drain_all(void);                       /* into the pool */
zk_region *zk_tcache_take_anywhere(zk_tcache *mine, int cls);
const char *zk_tcache_check(const char *(*check_idle)(zk_region *r));   /* pool lock held */
void zk_tcache_lock_for_fork(void);
void zk_tcache_unlock_after_fork(void);
void zk_tcache_fork_child(void);   /* locks held: adopt dead threads' regions, mark ours */
/* Requests in flight (zk_check.c): this thread's counts, NULL without a
 * cache; the sums over every live thread's cache (registry lock held);
 * where a closing cache leaves its counts. */
zk_traffic_counts *zk_tcache_traffic_mine(void);
void zk_tcache_traffic_sums(uint64_t *begun, uint64_t *ended, bool read_begun);
void zk_tcache_traffic_balance(void);   /* fork child: nobody is in flight */
extern zk_traffic_counts zk_traffic_shared;

/* ---- repurposing idle memory for another size (zk_repurpose.c) ---------- */
/* A region of class cls made of idle memory of other classes (carved out of
 * a larger idle region, or gathered from several by moving their pages), in
 * use; NULL when idle memory cannot serve it.  *fresh_tail: bytes at its end
 * that are fresh (never touched). */
zk_region *zk_repurpose(int cls, size_t *fresh_tail);

/* ---- size classes, internal (zk_sizeclass.c) ---------------------------- */
int zk_class_floor(size_t bytes);   /* the largest class that fits in bytes (0 below) */

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
int zk_os_unmap(void *p, size_t bytes);           /* 0, or -1 with the region still mapped */
int zk_os_map_fixed(void *p, size_t bytes);       /* fresh memory over [p, p+bytes) we own */
void *zk_os_map_zeroed(size_t bytes);             /* bookkeeping memory; NULL: refused */
void *zk_os_map_sparse(size_t bytes);             /* the same, MAP_NORESERVE */
/* Secret arrays: PROT_NONE with every page but the first and last opened. */
void *zk_os_map_guarded(size_t map_bytes);
int zk_os_dont_dump(void *p, size_t bytes);       /* MADV_DONTDUMP; 0 or -1 (errno) */
int zk_os_wipe_on_fork(void *p, size_t bytes);    /* MADV_WIPEONFORK */
int zk_os_lock(void *p, size_t bytes);            /* mlock */
void zk_os_unlock(void *p, size_t bytes);         /* munlock */
/* The process's memory areas, per /proc/self/maps (the one reader). */
typedef struct {
    uintptr_t lo, hi;
    bool reserved;   /* PROT_NONE, private: a reservation */
} zk_os_area;
int zk_os_each_area(uintptr_t lo, uintptr_t hi, bool (*fn)(const zk_os_area *a, void *arg), void *arg);
int zk_os_start_thread(void *(*fn)(void *));      /* detached, signals blocked, small stack */
void zk_os_pause_us(unsigned us);
uint64_t zk_os_max_map_count(void);
void zk_os_advise_huge(void *p, size_t bytes);
void zk_os_advise_small_pages(void *p, size_t bytes);
size_t zk_os_resident_pages(void *p, size_t bytes);
int zk_os_discard(void *p, size_t bytes);
int zk_os_soften(void *p, size_t bytes);
/* Fault [p, p+bytes) in; 0, or -1 where the kernel lacks MADV_POPULATE_WRITE
 * (then it was written a byte a page). */
int zk_os_populate(void *p, size_t bytes);
/* What decay reads (zk_decay.c), never under a lock of the core. */
uint64_t zk_os_process_cpu_ns(void);   /* user + sys of every thread (getrusage) */
uint64_t zk_os_process_rss_bytes(void);   /* resident now (/proc/self/statm); 0 where unknown */
bool zk_os_memory_pressure(void);      /* MemAvailable, PSI, the cgroup's memory.events */
/* glibc's free bytes in its arenas (mallinfo2), SIZE_MAX where unknown (zk_libc.c). */
size_t zk_libc_free_bytes(void);
#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4   /* Linux 5.7 (glibc 2.32's headers); older kernels answer EINVAL, doing nothing */
#endif
int zk_os_move(void *old, size_t old_bytes, void *target, size_t new_bytes);   /* whole segments only */
int zk_os_move_keep(void *old, size_t bytes, void *target);   /* the old range stays mapped, empty */
/* After a failed move: true when [target, target+bytes) was free and is our
 * PROT_NONE reservation again (kernels unmap a MREMAP_FIXED target before
 * some checks).  False: something is mapped there, our reservation still or
 * another thread's mmap since: zk_heap_drop_after_unlock finds out which. */
bool zk_os_retake_target(void *target, size_t bytes);
/* Unmap [p, p+bytes) if /proc/self/maps shows it as exactly one PROT_NONE
 * private area, the reservation we made; never under the heap lock. */
void zk_os_drop_own_reservation(void *p, size_t bytes);

/* ---- statistics (zk_stats.c) -------------------------------------------- */
#define ZK_STAT_ATOMIC(name, ...) _Atomic uint64_t name;
typedef struct {
    ZK_STATS_LIST(ZK_STAT_ATOMIC, ZK_STAT_ATOMIC, ZK_STAT_ATOMIC)
    _Atomic uint64_t class_hits[ZK_NCLASSES], class_misses[ZK_NCLASSES];
    _Atomic int64_t class_in_use[ZK_NCLASSES], class_cached[ZK_NCLASSES];   /* may dip below 0 under races */
    _Atomic uint64_t small_by_log2[ZK_SIZE_BUCKETS];
} zk_stats_counters;
#undef ZK_STAT_ATOMIC

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

/* ---- np.zeros' zeroing policy, learned per class (zk_zero.c) ----------- */
/* Zero r, a region about to be handed to np.zeros for `bytes`: the class's
 * measured policy chooses memset or MADV_DONTNEED (and learns at free from
 * what was touched), a fresh mapping is left lazy; counted in calloc_*. */
void zk_zero_for_calloc(zk_region *r, size_t bytes);
/* r goes to np.empty: huge pages back on where the policy had dropped them,
 * if its class has shown that it writes its regions whole. */
void zk_zero_for_write(zk_region *r);
/* A region flagged ZK_RF_SAMPLE is being freed: learn how much its user
 * touched (mincore), for both policies that follow it (np.zeros' zeroing
 * here, fresh regions' faulting and huge pages in zk_thp.c). */
void zk_zero_learn(zk_region *r);
/* What a class's users touch of a region given lazily (a fresh one, or one
 * np.zeros discarded), one measurement at free for both policies:
 * zk_touch_watch flags r (requested `bytes`) to be measured; zk_touch_dense
 * says whether the class has shown that its regions end up written whole. */
void zk_touch_watch(zk_region *r, size_t bytes);
bool zk_touch_dense(int cls);
bool zk_touch_unknown(int cls);   /* nothing measured of the class yet */
/* Measured costs the policy follows (zk_zero.c times them itself; the C
 * test feeds them to check the estimator). */
void zk_zero_timed_memset(size_t bytes, uint64_t ns);
void zk_zero_timed_discard(int cls, uint64_t ns);

/* ---- the cache (zk_cache.c) ------------------------------------------------
 * Requests straight to the cache: the handler's and the phases' routes, and
 * the C tests (which also have zk_testing.h's zk_cache_realloc and
 * zk_cache_state). */
void zk_cache_init(void);   /* registers fork handlers; idempotent */
/* The cap idle regions must keep to now: the larger of the setting and the
 * cap last applied (zk_check.c). */
uint64_t zk_cache_cap_in_force(void);
void *zk_cache_alloc(size_t bytes);
void *zk_cache_calloc(size_t bytes);
/* 1 if ptr was a region of this cache (now freed), 0 if the pointer is foreign. */
int zk_cache_free(void *ptr);
void zk_cache_trim(void);   /* evict until idle bytes <= cap */

/* How a request was served, as phases use it: */
typedef struct {
    zk_region *region;
    bool hit;               /* a resident region of the class (or one or two larger) */
    bool repurposed;        /* a miss served from idle memory of other classes */
    size_t fresh_bytes;     /* bytes the miss mapped fresh (the faults it will cost) */
} zk_obtained;
/* zk_cache_alloc (zeroed: zk_cache_calloc) that also says how it was served. */
void *zk_cache_obtain(size_t bytes, bool zeroed, zk_obtained *out);
/* Free r, found in the ownership map; false (counted in invalid_frees) when
 * it was not in use. */
bool zk_cache_free_region(zk_region *r);
/* zk_cache_realloc for r, found in the ownership map and in use. */
void *zk_cache_realloc_region(zk_region *r, size_t bytes);

/* ---- phases: accounting scopes over the cache (zk_scope.c) -------------- */
/* A request through a scope's route that the cache serves: tagged with the
 * scope while it is open, plain cache memory once it is closed.  NULL: the
 * fallback must serve it. */
void *zk_scope_alloc(struct zk_scope *s, size_t bytes, bool zeroed, int origin);
/* What zk_scope_alloc (and the handler's budget check) returns for a
 * request the budget refuses: numpy gets NULL (MemoryError), the fallback
 * is not asked. */
extern char zk_refused_marker;
#define ZK_REFUSED ((void *)&zk_refused_marker)
/* Whether a region of the scope tagged with `from` requested bytes may be
 * resized to `to` within its budget; false counts a refusal. */
bool zk_scope_may_grow(struct zk_scope *s, uint64_t from, uint64_t to);
/* Whether any scope is open (created, not closed) in any thread. */
bool zk_scope_any_open(void);
void zk_scope_count_small(struct zk_scope *s);
void zk_scope_count_invalid_free(struct zk_scope *s);
/* Take the tag off in-use region r (if it is tagged):
 * scope NULL if none.  Exactly one caller gets a given tag.
 * zk_scope_untag_freed also counts the free. */
typedef struct {
    struct zk_scope *scope;
    uint64_t bytes;     /* requested bytes it was tagged with */
    int cls;            /* the region's class then */
} zk_scope_tag;
zk_scope_tag zk_scope_untag(zk_region *r);
void zk_scope_untag_freed(zk_region *r);
/* Whether r carries a phase's tag: the handler's free and realloc call the
 * phase module only then (a plain load; the exchange decides). */
static inline bool zk_region_tagged(zk_region *r)
{
    return atomic_load_explicit(&r->scope, memory_order_relaxed) != NULL;
}
/* After a realloc of a region that carried tag `old`: tag the region now at
 * p with the same scope, moving the accounting to `bytes` (dropped if the
 * fallback holds the data now).  how: which realloc counter it adds to. */
typedef enum { ZK_RETAG_FAILED, ZK_RETAG_IN_PLACE, ZK_RETAG_MOVED } zk_retag_how;
void zk_scope_retag(zk_scope_tag old, void *p, size_t bytes, zk_retag_how how);

/* ---- peaks (zk_peak.c) -------------------------------------------------- */
zk_peak *zk_peak_create(void);        /* NULL: no memory */
void zk_peak_destroy(zk_peak *p);
/* A snapshot now if `live` passed the last one's by 1/16. */
void zk_peak_consider(zk_peak *p, uint64_t live);
void zk_peak_take(zk_peak *p, uint64_t live);   /* a snapshot now, whatever the last one */
bool zk_process_tracked(void);
/* Record who asked for in-use region r (ZK_ORIGIN_*) and how many bytes, for
 * the peak snapshots: one relaxed and one release store, by the thread that
 * holds r.  zk_cache.c forgets both when the region is handed out again. */
static inline void zk_region_note_request(zk_region *r, uint64_t bytes, int origin)
{
    atomic_store_explicit(&r->request_bytes, bytes, memory_order_relaxed);
    atomic_store_explicit(&r->origin, (uint32_t)origin, memory_order_release);
}
void zk_process_peak_consider(void);  /* a request succeeded: the process's peak may have grown */

/* ---- what the calling thread is doing (zk_caller.c) -------------------- */
uint32_t zk_site_now(void);                 /* the probe's site, 0 without one */
struct zk_scope *zk_raw_scope_now(void);    /* the probe's raw phase (pinned), NULL without one */

/* ---- routes shared by numpy's handler and the raw domain (zk_handler.c) -- */
/* A cache-sized request (scope NULL: untagged): the process's budget, the
 * phase's tag and budget, the site and the process's peak when tracked.
 * NULL: the fallback must serve it; ZK_REFUSED: a budget refused it. */
void *zk_route_serve(struct zk_scope *scope, size_t size, bool zeroed, int origin);
/* Resize in-use region r: in the cache if cache_ok and the size is the
 * cache's, else move_out copies the data to the caller's fallback (and frees
 * r); the phase's tag, its budget and the site follow.  NULL: r as it was. */
typedef void *(*zk_move_out_fn)(void *ptr, size_t have, size_t size);
void *zk_route_realloc(zk_region *r, size_t new_size, bool cache_ok, zk_move_out_fn move_out);
/* Free region r (the tag off first); false: it was not in use (counted). */
bool zk_route_free(zk_region *r);
/* The cache's region starting at ptr, NULL for a foreign pointer: every
 * region starts on a page, so most foreign pointers need no lookup. */
static inline zk_region *zk_region_at(const void *ptr)
{
    return zk_maybe_region_start(ptr) ? zk_pagemap_get(ptr) : NULL;
}

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
static inline bool zk_opt_hugepages(void) { return zk_opt(ZK_OPT_HUGEPAGES) != ZK_HUGEPAGES_OFF; }
static inline size_t zk_opt_lazy_zero_bytes(void) { return (size_t)zk_opt(ZK_OPT_LAZY_ZERO_BYTES); }
static inline size_t zk_opt_thread_cache_bytes(void) { return (size_t)zk_opt(ZK_OPT_THREAD_CACHE_BYTES); }
static inline bool zk_opt_adaptive_zero(void) { return zk_opt(ZK_OPT_ADAPTIVE_ZERO) != 0; }
static inline uint64_t zk_opt_decay_ms(void) { return zk_opt(ZK_OPT_DECAY_MS); }
static inline uint64_t zk_opt_budget(void) { return zk_opt(ZK_OPT_BUDGET); }
static inline bool zk_opt_libc_keep(void) { return zk_opt(ZK_OPT_LIBC) != 0; }

#endif
