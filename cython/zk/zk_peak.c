/*
 * What was live at a peak: snapshots of the in-use regions.
 *
 * When memory is the limit, a prover's author needs to know which arrays
 * were alive at the peak and where they were allocated.  A snapshot lists
 * every region in use (its phase, bytes, class and allocation site); one is
 * kept per phase and one for the process (run --peak).
 *
 * Cost: a snapshot walks every descriptor, so it is taken only when the
 * watched measure (a phase's live bytes, or the process's bytes in use)
 * passes the last snapshot's by 1/16: at most about 11 snapshots per
 * doubling of the peak, never one in a steady state.  The price is
 * precision: the snapshot kept was taken when the measure stood at 16/17 of
 * the true peak or more (it says at what value: zk_peak_read's *live).
 *
 * Sites: a tracked request stores the calling thread's allocation site
 * (zk_site_now, zk_caller.c) in its region; a snapshot copies the number,
 * and only a reader outside the allocator turns it into a name.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "zk_internal.h"

#define GROWTH_SHIFT 4   /* a new snapshot once the measure grew by 1/16 */

struct zk_peak {
    pthread_mutex_t lock;          /* one snapshot at a time; readers copy under it */
    _Atomic uint64_t next_at;      /* take the next snapshot at this measure */
    zk_live_entry *entries;
    size_t count, capacity;
    uint64_t live;                 /* the measure when it was taken */
    uint64_t in_use;               /* the process's bytes in use then */
    uint64_t unlisted_bytes;       /* regions the snapshot had no room for */
    uint64_t snapshots, snapshot_ns;   /* what the snapshots cost, all of them */
};

static _Atomic int process_tracked;
static zk_peak process_peak = {.lock = PTHREAD_MUTEX_INITIALIZER};

zk_peak *zk_peak_create(void)
{
    zk_peak *p = calloc(1, sizeof *p);
    if (p != NULL && pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

void zk_peak_destroy(zk_peak *p)
{
    if (p == NULL)
        return;
    pthread_mutex_destroy(&p->lock);
    free(p->entries);
    free(p);
}

/* ---- taking a snapshot ------------------------------------------------------- */

typedef struct {
    zk_live_entry *out;
    size_t max, found;
    uint64_t unlisted;
} walk;

static void list_in_use(zk_region *r, void *arg)
{
    walk *w = arg;
    if (atomic_load_explicit(&r->state, memory_order_acquire) != ZK_REGION_IN_USE)
        return;
    bool tagged = zk_region_tagged(r);
    zk_live_entry e = {
        .scope = tagged ? atomic_load_explicit(&r->scope_serial, memory_order_relaxed) : 0,
        .bytes = tagged ? atomic_load_explicit(&r->scope_bytes, memory_order_relaxed) : r->bytes,
        .site = atomic_load_explicit(&r->site, memory_order_relaxed),
        .cls = r->cls,
    };
    if (w->found < w->max)
        w->out[w->found++] = e;
    else
        w->unlisted += e.bytes;
}

/* Walk the descriptors into p's entries (p->lock held).  The array grows
 * outside the descriptor lock: one walk to find that it is too small, one
 * more with room to spare; what a third would find is counted unlisted.
 *
 * Under the heap lock: an in-use region's bytes and class change only under
 * it (a resize by mremap: grow_by_move, zk_heap_adopt), and so does every
 * descriptor that stops being in use and is merged or reused meanwhile
 * (absorb_next, zk_heap_split): the entries are exact, and no plain field is
 * read while another thread writes it.  The lock order is peak -> heap; a
 * snapshot is taken at most ~11 times per doubling of the peak, so the
 * misses it holds up are few. */
static void walk_into(zk_peak *p)
{
    for (int attempt = 0;; attempt++) {
        walk w = {p->entries, p->capacity, 0, 0};
        zk_heap_lock();
        zk_region_foreach(list_in_use, &w);
        zk_heap_unlock();
        if (w.unlisted == 0 || attempt == 1) {
            p->count = w.found;
            p->unlisted_bytes = w.unlisted;
            return;
        }
        size_t want = p->capacity * 2 + (size_t)(w.unlisted / zk_os_page_size()) + 64;
        zk_live_entry *grown = realloc(p->entries, want * sizeof *grown);
        if (grown == NULL) {   /* keep what fits */
            p->count = w.found;
            p->unlisted_bytes = w.unlisted;
            return;
        }
        p->entries = grown;
        p->capacity = want;
    }
}

/* A snapshot at measure `live` (p->lock held), timed: what recording the
 * peak costs is reported with it. */
static void fill(zk_peak *p, uint64_t live)
{
    uint64_t t0 = zk_thp_now_ns();
    walk_into(p);
    p->live = live;
    p->in_use = atomic_load_explicit(&zk_stats.bytes_in_use, memory_order_relaxed);
    p->snapshots++;
    p->snapshot_ns += zk_thp_now_ns() - t0;
}

/* The snapshot lock, tried for a while: in a fork child a thread that held
 * it is gone for good (it is not among the locks held across fork), and a
 * reader there gets an empty snapshot rather than a hang. */
static bool lock_briefly(zk_peak *p)
{
    for (int i = 0; i < 100000; i++) {
        if (pthread_mutex_trylock(&p->lock) == 0)
            return true;
        sched_yield();
    }
    return false;
}

void zk_peak_take(zk_peak *p, uint64_t live)
{
    if (!lock_briefly(p))
        return;
    fill(p, live);
    pthread_mutex_unlock(&p->lock);
}

void zk_peak_consider(zk_peak *p, uint64_t live)
{
    uint64_t due = atomic_load_explicit(&p->next_at, memory_order_relaxed);
    if (live < due)
        return;
    /* One thread takes it; a thread that finds one under way goes on (the
     * next growth takes another). */
    uint64_t next = live + (live >> GROWTH_SHIFT) + 1;
    if (!atomic_compare_exchange_strong_explicit(&p->next_at, &due, next, memory_order_relaxed,
                                                 memory_order_relaxed))
        return;
    if (pthread_mutex_trylock(&p->lock) != 0)
        return;
    fill(p, live);
    pthread_mutex_unlock(&p->lock);
}

size_t zk_peak_read(zk_peak *p, zk_live_entry *out, size_t max, zk_peak_info *info)
{
    if (info != NULL)
        *info = (zk_peak_info){0, 0, 0, 0, 0, 0};
    if (!lock_briefly(p))
        return 0;
    size_t n = p->count < max ? p->count : max;
    if (n != 0)
        memcpy(out, p->entries, n * sizeof *out);
    if (info != NULL)
        *info = (zk_peak_info){p->live, p->in_use, p->unlisted_bytes, p->count, p->snapshots, p->snapshot_ns};
    size_t count = p->count;
    pthread_mutex_unlock(&p->lock);
    return count;
}

void zk_peak_reset(zk_peak *p)
{
    if (!lock_briefly(p))
        return;
    p->count = 0;
    p->live = p->in_use = p->unlisted_bytes = p->snapshots = p->snapshot_ns = 0;
    atomic_store_explicit(&p->next_at, 0, memory_order_relaxed);
    pthread_mutex_unlock(&p->lock);
}

/* ---- the process (run --peak) -------------------------------------------------- */

void zk_track_process(int on)
{
    if (on)
        zk_peak_reset(&process_peak);
    atomic_store(&process_tracked, on != 0);
}

bool zk_process_tracked(void) { return atomic_load_explicit(&process_tracked, memory_order_relaxed) != 0; }

zk_peak *zk_process_peak(void) { return &process_peak; }

void zk_process_peak_consider(void)
{
    if (zk_process_tracked())
        zk_peak_consider(&process_peak, atomic_load_explicit(&zk_stats.bytes_in_use, memory_order_relaxed));
}
