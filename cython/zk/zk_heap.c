/*
 * The heap: segments (one mmap each) cut into spans, in address order.
 *
 * Why segments: a mapping per region made every region a memory area of its
 * own, and unmapping regions out of the middle of merged areas split them,
 * so 10^5 live mid-size arrays took the process to vm.max_map_count (then
 * thread creation and munmap fail).  Here small classes (< 2 MiB) are carved
 * out of shared 32 MiB segments, and memory goes back to the kernel with
 * MADV_DONTNEED, which never splits an area; a segment is unmapped only
 * whole, once every span of it is vacant.  Larger regions get a segment
 * each, 2 MiB aligned, advised per the measured first-touch policy.
 *
 * A span is IN_USE or IDLE (a region: zk_internal.h) or VACANT (address
 * space only).  Vacant spans of one segment are merged as soon as they
 * touch; those of shared segments wait in bins (by the largest class that
 * fits in them) to serve fresh small requests, so address space is reused
 * before a new segment is mapped.
 *
 * Everything here runs under heap_lock, which is held across the syscalls
 * (mmap, munmap, MADV_DONTNEED, mremap by zk_repurpose.c).  Only misses,
 * evictions and release take it: hits and frees that stay in the cache never
 * do.  Lock order: heap -> tcache registry -> pool -> descriptors.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "zk_internal.h"

#define SHARED_SEGMENT_BYTES ((size_t)32 << 20)

typedef struct {
    zk_region *head;
} vacant_bin;

static pthread_mutex_t heap_lock = PTHREAD_MUTEX_INITIALIZER;
static vacant_bin bins[ZK_NCLASSES];
static uint64_t bins_nonempty[(ZK_NCLASSES + 63) / 64];
static zk_region *unmap_pending;   /* whole vacant segments whose munmap failed (lru_next) */

/* Failed moves' targets to look up in /proc/self/maps, which is never read
 * under the heap lock: zk_heap_unlock does it once the lock is released.
 * Filled and emptied under the lock, so empty whenever it is free (a fork
 * child finds it empty).  A move fails at most once per hold of the lock;
 * past UNCLAIMED_MAX a target is left mapped: address space, no memory. */
#define UNCLAIMED_MAX 4
typedef struct {
    void *p;
    size_t bytes;
} unclaimed_range;
static unclaimed_range unclaimed[UNCLAIMED_MAX];
static int unclaimed_count;

void zk_heap_lock(void) { pthread_mutex_lock(&heap_lock); }

void zk_heap_unlock(void)
{
    if (unclaimed_count == 0) {
        pthread_mutex_unlock(&heap_lock);
        return;
    }
    unclaimed_range drop[UNCLAIMED_MAX];
    int n = unclaimed_count;
    memcpy(drop, unclaimed, (size_t)n * sizeof *drop);
    unclaimed_count = 0;
    pthread_mutex_unlock(&heap_lock);
    for (int i = 0; i < n; i++)
        zk_os_drop_own_reservation(drop[i].p, drop[i].bytes);
}

void zk_heap_drop_after_unlock(void *p, size_t bytes)
{
    if (unclaimed_count < UNCLAIMED_MAX)
        unclaimed[unclaimed_count++] = (unclaimed_range){p, bytes};
}

/* Threads between zk_heap_unlock_to_read and zk_heap_relock_after_read:
 * they hold pieces of a gather outside every list, which a fork child
 * would lose, so a fork waits for them. */
static _Atomic int readers_unlocked;

void zk_heap_unlock_to_read(void)
{
    atomic_fetch_add_explicit(&readers_unlocked, 1, memory_order_relaxed);
    zk_heap_unlock();
}

void zk_heap_relock_after_read(void)
{
    zk_heap_lock();
    atomic_fetch_sub_explicit(&readers_unlocked, 1, memory_order_relaxed);
}

void zk_heap_lock_for_fork(void)
{
    enum { PAUSE_US = 50 };
    for (;;) {
        zk_heap_lock();
        if (atomic_load_explicit(&readers_unlocked, memory_order_relaxed) == 0)
            return;
        zk_heap_unlock();
        zk_os_pause_us(PAUSE_US);
    }
}

void zk_heap_drop_failed_target(void *p, size_t bytes)
{
    if (zk_os_retake_target(p, bytes))
        (void)zk_os_unmap(p, bytes);
    else
        zk_heap_drop_after_unlock(p, bytes);
}

static bool whole_segment(const zk_region *r) { return r->addr_prev == NULL && r->addr_next == NULL; }


/* ---- vacant bins: shared segments' free address space -------------------- */

/* Only shared segments' spans serve fresh small requests: a large segment's
 * vacant space waits for the rest of its segment to be unmapped with it. */
static bool binnable(const zk_region *r)
{
    return (r->flags & ZK_RF_SHARED) && !(r->flags & ZK_RF_PENDING) &&
           r->bytes >= zk_class_bytes(0);
}

static void bin_link(zk_region *r)
{
    if (!binnable(r))
        return;
    r->flags |= ZK_RF_BINNED;
    int c = zk_class_floor(r->bytes);
    r->cls = c;
    r->cls_prev = NULL;
    r->cls_next = bins[c].head;
    if (r->cls_next != NULL)
        r->cls_next->cls_prev = r;
    bins[c].head = r;
    bins_nonempty[c / 64] |= (uint64_t)1 << (c % 64);
}

static void bin_unlink(zk_region *r)
{
    if (!(r->flags & ZK_RF_BINNED))
        return;
    r->flags &= ~ZK_RF_BINNED;
    int c = r->cls;
    if (r->cls_prev != NULL) r->cls_prev->cls_next = r->cls_next; else bins[c].head = r->cls_next;
    if (r->cls_next != NULL) r->cls_next->cls_prev = r->cls_prev;
    r->cls_prev = r->cls_next = NULL;
    if (bins[c].head == NULL)
        bins_nonempty[c / 64] &= ~((uint64_t)1 << (c % 64));
}

/* A vacant span with room for `bytes`: the first non-empty bin from the
 * class of `bytes` up holds only spans at least that large. */
static zk_region *bin_find(size_t bytes)
{
    int c = zk_class_of(bytes);
    for (; c >= 0 && c < ZK_NCLASSES; c++) {
        uint64_t word = bins_nonempty[c / 64] >> (c % 64);
        if (word == 0) {
            c = (c / 64 + 1) * 64 - 1;   /* skip the rest of this word */
            continue;
        }
        c += __builtin_ctzll(word);
        if (c < ZK_NCLASSES)
            return bins[c].head;
    }
    return NULL;
}

/* ---- segments ---------------------------------------------------------------- */

static uint64_t segments_made;   /* segments mapped or adopted, ever: zk_heap_check_maps */

static void account_segment(int64_t segments, int64_t bytes, int64_t areas)
{
    if (segments > 0)
        segments_made++;
    atomic_fetch_add_explicit(&zk_stats.segments, (uint64_t)segments, memory_order_relaxed);
    atomic_fetch_add_explicit(&zk_stats.bytes_reserved, (uint64_t)bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&zk_stats.map_areas, (uint64_t)areas, memory_order_relaxed);
}

static void add_vacant(int64_t bytes)
{
    atomic_fetch_add_explicit(&zk_stats.bytes_vacant, (uint64_t)bytes, memory_order_relaxed);
}

/* A new segment, as one vacant span (not binned).  NULL: the kernel refused. */
static zk_region *map_segment(size_t bytes, bool shared)
{
    void *p = zk_os_map(bytes, zk_region_alignment(bytes));
    if (p == NULL)
        return NULL;
    zk_region *s = zk_region_descriptor();
    if (s == NULL) {
        (void)zk_os_unmap(p, bytes);
        return NULL;
    }
    s->base = (uintptr_t)p;
    s->bytes = bytes;
    s->flags = ZK_RF_ZERO | (shared ? ZK_RF_SHARED : 0u);
    s->areas = 1;
    atomic_store_explicit(&s->state, ZK_REGION_VACANT, memory_order_relaxed);
    account_segment(1, (int64_t)bytes, 1);
    add_vacant((int64_t)bytes);
    return s;
}

/* Unmap a segment that is one vacant span.  A failed munmap (ENOMEM at the
 * map-count limit) must not lose the segment: it stays, vacant and counted,
 * on a list that release() retries. */
static void unmap_segment(zk_region *s)
{
    if (zk_os_unmap((void *)s->base, s->bytes) != 0) {
        /* The memory at least goes back: a discard never needs a new area. */
        if (zk_os_discard((void *)s->base, s->bytes) == 0)
            s->flags |= ZK_RF_ZERO;
        zk_count(&zk_stats.unmap_pending, 1);   /* zk_os_unmap counted the failure */
        s->flags |= ZK_RF_PENDING;
        s->lru_next = unmap_pending;
        unmap_pending = s;
        return;
    }
    account_segment(-1, -(int64_t)s->bytes, -(int64_t)s->areas);
    add_vacant(-(int64_t)s->bytes);
    zk_region_release_descriptor(s);
}

size_t zk_heap_retry_unmaps(void)
{
    zk_region *list = unmap_pending;
    size_t done = 0;
    unmap_pending = NULL;
    while (list != NULL) {
        zk_region *next = list->lru_next;
        size_t bytes = list->bytes;
        zk_stats_gauge_sub(&zk_stats.unmap_pending, 1);
        list->flags &= ~ZK_RF_PENDING;
        unmap_segment(list);   /* back on the list if it fails again */
        if (unmap_pending != list)
            done += bytes;
        list = next;
    }
    return done;
}

/* ---- spans --------------------------------------------------------------------- */

zk_region *zk_heap_split(zk_region *r, size_t front)
{
    zk_region *b = zk_region_descriptor();
    if (b == NULL)
        return NULL;
    b->base = r->base + front;
    b->bytes = r->bytes - front;
    b->flags = r->flags & ~(ZK_RF_MARK | ZK_RF_SAMPLE);
    b->stamp = r->stamp;
    b->cls = zk_class_floor(b->bytes);
    b->addr_prev = r;
    b->addr_next = r->addr_next;
    if (b->addr_next != NULL)
        b->addr_next->addr_prev = b;
    r->addr_next = b;
    r->bytes = front;
    atomic_store_explicit(&b->state, atomic_load_explicit(&r->state, memory_order_relaxed),
                          memory_order_relaxed);
    return b;
}

/* Merge a's vacant right neighbour into a (both vacant, neither binned). */
static void absorb_next(zk_region *a)
{
    zk_region *b = a->addr_next;
    a->bytes += b->bytes;
    a->areas += b->areas;
    a->flags |= b->flags & ZK_RF_SMALL_PAGES;
    if (!(b->flags & ZK_RF_ZERO))
        a->flags &= ~ZK_RF_ZERO;
    a->addr_next = b->addr_next;
    if (a->addr_next != NULL)
        a->addr_next->addr_prev = a;
    zk_region_release_descriptor(b);
}

static bool is_vacant(const zk_region *r)
{
    return r != NULL && atomic_load_explicit(&r->state, memory_order_relaxed) == ZK_REGION_VACANT;
}

/* A vacant span, not binned: merge it with vacant neighbours, then unmap the
 * segment if that made it whole, else bin it. */
static void settle_vacant(zk_region *v)
{
    if (is_vacant(v->addr_prev)) {
        zk_region *p = v->addr_prev;
        bin_unlink(p);
        absorb_next(p);
        v = p;
    }
    if (is_vacant(v->addr_next)) {
        bin_unlink(v->addr_next);
        absorb_next(v);
    }
    if (whole_segment(v))
        unmap_segment(v);
    else
        bin_link(v);
}

/* r stops holding memory the cache counts: out of the ownership map
 * (before any unmap: see zk_pagemap.c), out of bytes_mapped. */
static void stop_being_mapped(zk_region *r)
{
    zk_pagemap_clear((void *)r->base);
    zk_stats_gauge_sub(&zk_stats.bytes_mapped, r->bytes);
}

/* r is vacant from now on: it keeps only the flags that describe its memory
 * area, and ZK_RF_ZERO when its pages were discarded. */
static void become_vacant(zk_region *r, bool zero)
{
    r->flags = (r->flags & (ZK_RF_SHARED | ZK_RF_SMALL_PAGES | ZK_RF_MULTI)) | (zero ? ZK_RF_ZERO : 0u);
    atomic_store_explicit(&r->state, ZK_REGION_VACANT, memory_order_relaxed);
    add_vacant((int64_t)r->bytes);
}

void zk_heap_vacate(zk_region *r)
{
    stop_being_mapped(r);
    if (whole_segment(r)) {   /* munmap frees the memory: no discard first */
        become_vacant(r, false);
        unmap_segment(r);
        return;
    }
    /* MADV_DONTNEED, not munmap: the area stays whole (no split, no new map
     * entry) and the next touch reads zeros. */
    become_vacant(r, zk_os_discard((void *)r->base, r->bytes) == 0);
    settle_vacant(r);
}

static void give_back(zk_region *r)
{
    /* Read under the lock (neighbours' links are rewritten under it), then
     * stable without it: only r's owner (us) could split r, and a neighbour
     * merging with another never makes a link NULL. */
    zk_heap_lock();
    bool whole = whole_segment(r);
    zk_heap_unlock();
    r->flags |= ZK_RF_LEAVING;   /* a fork child must know (zk_fork.c) */
    stop_being_mapped(r);
    if (whole && zk_os_unmap((void *)r->base, r->bytes) == 0) {
        account_segment(-1, -(int64_t)r->bytes, -(int64_t)r->areas);
        zk_region_release_descriptor(r);
        return;
    }
    bool zero = zk_os_discard((void *)r->base, r->bytes) == 0;
    zk_heap_lock();
    become_vacant(r, zero);   /* and no longer ZK_RF_LEAVING */
    if (whole)
        unmap_segment(r);   /* failed once: it goes on the retry list */
    else
        settle_vacant(r);
    zk_heap_unlock();
}

/* In flight for zk_check() (zk_heap_check_maps): a whole segment is
 * unmapped here before its descriptor leaves the heap. */
void zk_heap_give_back(zk_region *r)
{
    zk_traffic_counts *traffic = zk_traffic_begin();
    give_back(r);
    zk_traffic_end(traffic);
}

/* A region a dead thread was giving back when the parent forked.  Its
 * pages may be discarded already, or its whole segment unmapped, and in
 * that case another thread of the parent may even have mapped something
 * new at that address before the fork: so a whole segment is only
 * forgotten, never unmapped here (at worst the child keeps some address
 * space it does not know of), and a span of a larger segment becomes
 * vacant space (its segment is still mapped: only whole segments are ever
 * unmapped).  zk_heap_fork_recount() then sets the gauges right. */
void zk_heap_fork_adopt_leaving(zk_region *r)
{
    if (zk_pagemap_get((void *)r->base) == r)   /* forked before the entry was cleared */
        zk_pagemap_clear((void *)r->base);
    if (whole_segment(r)) {
        zk_region_release_descriptor(r);
        return;
    }
    become_vacant(r, false);   /* the gauges are recounted after (zk_heap_fork_recount) */
    settle_vacant(r);
}

typedef struct {
    uint64_t segments, reserved, vacant, areas;
} heap_census;

static void census_span(zk_region *r, void *arg)
{
    heap_census *c = arg;
    c->segments += r->addr_prev == NULL;
    c->reserved += r->bytes;
    c->areas += r->areas;
    if (is_vacant(r))
        c->vacant += r->bytes;
}

void zk_heap_fork_recount(void)
{
    heap_census c = {0, 0, 0, 0};
    zk_region_foreach(census_span, &c);
    atomic_store_explicit(&zk_stats.segments, c.segments, memory_order_relaxed);
    atomic_store_explicit(&zk_stats.bytes_reserved, c.reserved, memory_order_relaxed);
    atomic_store_explicit(&zk_stats.bytes_vacant, c.vacant, memory_order_relaxed);
    atomic_store_explicit(&zk_stats.map_areas, c.areas, memory_order_relaxed);
}

/* Take `bytes` from the front of vacant span v (binned): the rest stays
 * vacant and binned.  v becomes the in-use span. */
static zk_region *take_vacant(zk_region *v, size_t bytes)
{
    bin_unlink(v);
    if (v->bytes > bytes) {
        zk_region *rest = zk_heap_split(v, bytes);
        if (rest != NULL)
            bin_link(rest);
    }
    add_vacant(-(int64_t)v->bytes);
    return v;
}

zk_region *zk_heap_fresh(int cls, size_t bytes, bool zeroed, zk_first_touch *touch, bool *huge)
{
    *touch = ZK_TOUCH_WATCH;
    *huge = false;
    bool shared = bytes < ZK_SHARED_MAX_BYTES;
    zk_region *r;
    if (shared) {
        r = bin_find(bytes);
        if (r == NULL) {
            r = map_segment(SHARED_SEGMENT_BYTES, true);
            if (r == NULL)
                return NULL;
            bin_link(r);
        }
        if (zk_pagemap_prepare((void *)r->base) != ZK_OK)
            return NULL;   /* r (new or binned) stays as it is */
        r = take_vacant(r, bytes);
    } else {
        r = map_segment(bytes, false);   /* 2 MiB aligned; not rounded: the tail would be RSS */
        if (r == NULL)
            return NULL;
        if (zk_pagemap_prepare((void *)r->base) != ZK_OK) {
            unmap_segment(r);
            return NULL;
        }
        *huge = zk_thp_choose(bytes, zeroed, touch);
        if (*huge)
            zk_os_advise_huge((void *)r->base, bytes);
        add_vacant(-(int64_t)bytes);
    }
    r->cls = cls;
    r->flags = (r->flags & (ZK_RF_SHARED | ZK_RF_SMALL_PAGES | ZK_RF_ZERO));
    atomic_store_explicit(&r->state, ZK_REGION_IN_USE, memory_order_release);
    zk_pagemap_set((void *)r->base, r);   /* leaf prepared: cannot fail */
    zk_stats_gauge_add(&zk_stats.bytes_mapped, &zk_stats.peak_bytes_mapped, r->bytes);
    return r;
}

/* ---- page-table moves (zk_repurpose.c, realloc) ---------------------------- */

static uint64_t max_areas;   /* vm.max_map_count, read once */

bool zk_heap_may_add_areas(uint32_t n)
{
    if (max_areas == 0)
        max_areas = zk_os_max_map_count();
    /* Half the limit for the cache: the rest of the process (libraries,
     * threads' stacks, other allocators) needs its own. */
    return atomic_load_explicit(&zk_stats.map_areas, memory_order_relaxed) + n < max_areas / 2;
}

bool zk_heap_whole_segment(const zk_region *r) { return whole_segment(r); }

uint32_t zk_heap_moved_out(zk_region *r, zk_region *spare, bool kept)
{
    bool whole = whole_segment(r);
    uint32_t took = whole ? r->areas : 1;
    if (!kept) {   /* a whole segment: its areas moved with it */
        account_segment(-1, -(int64_t)r->bytes, -(int64_t)r->areas);
        zk_region_release_descriptor(spare);
        return took;
    }
    /* The spare takes r's place in the segment, over the range the move
     * left mapped and empty (zk_os_move_keep): it never was a hole, so no
     * other mmap can have landed there (re-mapping a hole with MAP_FIXED
     * wiped whatever had).  Settling unmaps a whole segment. */
    spare->base = r->base;
    spare->bytes = r->bytes;
    spare->areas = r->areas;   /* its areas stay where they are */
    spare->addr_prev = r->addr_prev;
    spare->addr_next = r->addr_next;
    if (spare->addr_prev != NULL) spare->addr_prev->addr_next = spare;
    if (spare->addr_next != NULL) spare->addr_next->addr_prev = spare;
    r->addr_prev = r->addr_next = NULL;
    spare->flags = (r->flags & (ZK_RF_SHARED | ZK_RF_SMALL_PAGES)) | ZK_RF_ZERO;   /* the advice stays too */
    atomic_store_explicit(&spare->state, ZK_REGION_VACANT, memory_order_relaxed);
    add_vacant((int64_t)spare->bytes);
    settle_vacant(spare);
    return took;
}

void zk_heap_adopt(zk_region *r, size_t bytes, uint32_t areas)
{
    r->bytes = bytes;
    r->areas = areas;
    r->flags &= ~(ZK_RF_SHARED | ZK_RF_MULTI);   /* its own segment now */
    if (areas > 1)
        r->flags |= ZK_RF_MULTI;
    account_segment(1, (int64_t)bytes, (int64_t)areas);
}

/* ---- what zk_check.c reads (heap lock held) ----------------------------------- */

bool zk_heap_binnable(const zk_region *r) { return binnable(r); }
zk_region *zk_heap_bin_head(int cls) { return bins[cls].head; }
bool zk_heap_bin_marked(int cls) { return (bins_nonempty[cls / 64] >> (cls % 64)) & 1u; }
uint64_t zk_heap_segments_made(void) { return segments_made; }
