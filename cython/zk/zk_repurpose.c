/*
 * Repurposing: a miss served from idle memory of other classes, before any
 * fresh memory is faulted.
 *
 * Why: a prover's working set moves through many sizes (Merkle levels that
 * halve, FRI rounds that divide by 8, columns of different widths).  With
 * idle memory locked in its class, a real STARK prover missed 105 times in
 * 17 classes (478 MiB faulted fresh) while idle regions of other sizes sat
 * unused, and ended with 797 MiB mapped for 520 MiB in use.  Idle pages are
 * resident and nobody holds their address, so the cache may reshape them:
 *  - carve: cut the request out of one larger idle region (bookkeeping
 *    only: the remainder stays idle in the class that fits it);
 *  - gather: move several idle regions' pages side by side into one new
 *    region with mremap, which moves page tables: no byte is copied, no
 *    page faults (measured here: 2.3 us per MiB, against ~9 ms to fault 8
 *    MiB fresh).  What idle memory cannot cover is mapped fresh at the end.
 * A carve takes the least recently freed region with room; a gather the
 * largest idle regions (of the oldest COALESCE_WALK).  Moves at 2 MiB-aligned
 * offsets keep huge pages, so 2 MiB multiples are placed first.
 *
 * Runs under the heap lock (zk_heap.c), on the miss path only, but for one
 * step: where a piece spans several memory areas (a region gathered
 * earlier: its pieces' areas do not merge, and one mremap moves one area),
 * its areas are read from /proc/self/maps with the heap lock released,
 * while the pieces are this thread's alone (learn_cuts).
 */
#define _GNU_SOURCE
#include "zk_internal.h"

#define LRU_WALK 64                           /* oldest regions looked at for a carve */
#define GATHER_MIN_BYTES ((size_t)1 << 20)    /* below this, faulting fresh is cheap */
#define PIECE_MIN_BYTES ((size_t)256 << 10)   /* smaller pieces cost more areas than they save */
#define MAX_PIECES 32
#define COALESCE_WALK 4096                    /* idle regions a coalescing pass looks at */
#define MAX_CUTS 256                          /* area ends inside one gather's pieces */

/* Where a gather's pieces are cut into memory areas: piece i's area ends
 * (strictly inside it, in address order) are at[first[i] .. first[i+1]). */
typedef struct {
    uintptr_t at[MAX_CUTS];
    int first[MAX_PIECES + 1];
    int n;
    uintptr_t hi, reached;   /* the end of the piece being read, and where its areas reached */
    bool ok;
} area_cuts;


/* Put a region taken out of the pool back (it was uncounted), or give it to
 * the kernel when the cap has no room for it now. */
static void put_back(zk_region *r)
{
    zk_pool_lock();
    bool counted = zk_idle_count(r);
    if (counted)
        zk_pool_link(r);
    zk_pool_unlock();
    if (!counted)
        zk_heap_vacate(r);
}

/* ---- carve (pool lock held) -------------------------------------------------- */

/* The oldest idle region with room for `need`: a walk from the old end of
 * the LRU list, then the oldest region of each class from need's up. */
static zk_region *carve_candidate(size_t need)
{
    int steps = 0;
    for (zk_region *r = zk_pool_oldest(); r != NULL && steps < LRU_WALK; r = zk_pool_newer(r), steps++)
        if (r->bytes >= need)
            return r;
    for (int c = zk_class_of(need); c >= 0 && c < ZK_NCLASSES; c++) {
        zk_region *r = zk_pool_class_oldest(c);
        if (r != NULL && r->bytes >= need)
            return r;
    }
    return NULL;
}

/* Cut `need` bytes out of idle region r (in the pool) for class cls.  Small
 * requests are cut from the end, so a large region's start (2 MiB aligned)
 * stays aligned; large ones from the start.  The remainder stays idle.
 * Returns the carved region, uncounted; *spill: a remainder the cap had no
 * room for, to vacate once the pool lock is dropped. */
static zk_region *carve(zk_region *r, size_t need, int cls, zk_region **spill)
{
    zk_pool_unlink(r);
    zk_idle_uncount(r);
    *spill = NULL;
    zk_region *out = r;
    bool from_end = need < ZK_HUGE_BYTES;
    /* A large request takes whole 2 MiB pages from the start (resident
     * already: no RSS added), so what remains stays 2 MiB aligned. */
    size_t rounded = zk_round_up(need, ZK_HUGE_BYTES);
    size_t take = from_end || r->bytes < rounded ? need : rounded;
    size_t front = from_end ? r->bytes - take : take;
    if (r->bytes - take >= zk_os_page_size() && zk_pagemap_prepare((void *)(r->base + front)) == ZK_OK) {
        zk_region *back = zk_heap_split(r, front);
        if (back != NULL) {
            zk_region *rest = from_end ? r : back;
            out = from_end ? back : r;
            zk_pagemap_set((void *)back->base, back);   /* leaf prepared: cannot fail */
            rest->cls = zk_class_floor(rest->bytes);
            if (zk_idle_count(rest))
                zk_pool_link(rest);
            else
                *spill = rest;
        }
    }
    out->cls = cls;
    zk_count(&zk_stats.carved, 1);
    return out;
}

/* ---- gather -------------------------------------------------------------------- */

/* Insert r into pieces[0..*n) kept largest first, at most MAX_PIECES. */
static void keep_largest(zk_region **pieces, int *n, zk_region *r)
{
    int i;
    if (*n < MAX_PIECES) {
        i = (*n)++;
    } else {
        if (pieces[MAX_PIECES - 1]->bytes >= r->bytes)
            return;   /* no larger than any piece kept */
        i = MAX_PIECES - 1;
    }
    while (i > 0 && pieces[i - 1]->bytes < r->bytes) {
        pieces[i] = pieces[i - 1];
        i--;
    }
    pieces[i] = r;
}

/* The largest idle regions of at least PIECE_MIN_BYTES (least recently
 * used first among the first COALESCE_WALK looked at), until they cover
 * `need` (pool lock held); they stay in the pool.  Largest first: the
 * fewer pieces, the fewer moves and memory areas, and a gather must not
 * fail for want of pieces while enough idle memory sits in larger ones. */
static int collect(size_t need, zk_region **pieces, size_t *total)
{
    int n = 0, steps = 0;
    for (zk_region *r = zk_pool_oldest(); r != NULL && steps < COALESCE_WALK; r = zk_pool_newer(r), steps++)
        if (r->bytes >= PIECE_MIN_BYTES)
            keep_largest(pieces, &n, r);
    int used = 0;
    *total = 0;
    while (used < n && *total < need)
        *total += pieces[used++]->bytes;
    return used;
}

/* Whole 2 MiB multiples first, so each lands at a 2 MiB-aligned offset of
 * the target and keeps its huge pages; order kept otherwise. */
static void huge_multiples_first(zk_region **pieces, int n)
{
    zk_region *sorted[MAX_PIECES];
    int k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++)
            if (((pieces[i]->bytes % ZK_HUGE_BYTES) == 0) == (pass == 0))
                sorted[k++] = pieces[i];
    for (int i = 0; i < n; i++)
        pieces[i] = sorted[i];
}

/* Take the pieces out of the pool (pool lock held).  The last one is cut to
 * what `need` still lacks; where it cannot be cut it stays. */
static int take_pieces(zk_region **pieces, int n, size_t need, zk_region **spill)
{
    *spill = NULL;
    size_t have = 0;
    for (int i = 0; i < n; i++) {
        zk_region *p = pieces[i];
        if (have >= need)   /* covered before the last piece (reordered) */
            return i;
        size_t lack = need - have;
        if (p->bytes > lack) {
            if (zk_pagemap_prepare((void *)(p->base + lack)) != ZK_OK)
                return i;
            zk_pool_unlink(p);
            zk_idle_uncount(p);
            zk_region *rest = zk_heap_split(p, lack);
            if (rest == NULL) {   /* no descriptor: leave it idle */
                if (zk_idle_count(p))
                    zk_pool_link(p);
                else
                    *spill = p;
                return i;
            }
            zk_pagemap_set((void *)rest->base, rest);
            rest->cls = zk_class_floor(rest->bytes);
            if (zk_idle_count(rest))
                zk_pool_link(rest);
            else
                *spill = rest;
            p->cls = zk_class_floor(p->bytes);
            return i + 1;
        }
        zk_pool_unlink(p);
        zk_idle_uncount(p);
        have += p->bytes;
    }
    return n;
}

static bool add_cut(const zk_os_area *a, void *arg)
{
    area_cuts *c = arg;
    if (a->lo > c->reached) {   /* a hole: the range is not ours whole */
        c->ok = false;
        return false;
    }
    c->reached = a->hi;
    if (a->hi >= c->hi)
        return false;
    if (c->n == MAX_CUTS) {
        c->ok = false;
        return false;
    }
    c->at[c->n++] = a->hi;
    return true;
}

/* Read the area ends inside every piece of several memory areas, with the
 * heap lock released: /proc/self/maps is never read under it.  The pieces
 * are out of the pool and not in use meanwhile, so no other thread moves,
 * joins or splits them, and their areas stay as read (zk_heap_unlock_to_read
 * holds a fork off until the lock is taken again).  False where an area
 * could not be read, a piece has a hole, or there are more than MAX_CUTS. */
static bool learn_cuts(zk_region **pieces, int n, area_cuts *c)
{
    c->n = 0;
    bool multi = false;
    for (int i = 0; i < n; i++)
        multi |= (pieces[i]->flags & ZK_RF_MULTI) != 0;
    c->ok = true;
    if (multi)
        zk_heap_unlock_to_read();
    for (int i = 0; i < n && c->ok; i++) {
        c->first[i] = c->n;
        if (!(pieces[i]->flags & ZK_RF_MULTI))
            continue;
        c->reached = pieces[i]->base;
        c->hi = pieces[i]->base + pieces[i]->bytes;
        if (zk_os_each_area(c->reached, c->hi, add_cut, c) != 0 || c->reached < c->hi)
            c->ok = false;
    }
    c->first[n] = c->n;
    if (multi)
        zk_heap_relock_after_read();
    return c->ok;
}

/* Move piece i, area by area (cut where learn_cuts found its areas end),
 * each leaving its old range mapped (zk_os_move_keep).  *moved: the bytes
 * from its start that did move. */
static int move_areas(zk_region *p, char *dest, const area_cuts *c, int i, size_t *moved)
{
    uintptr_t from = p->base, end = p->base + p->bytes;
    *moved = 0;
    for (int k = c->first[i]; k <= c->first[i + 1]; k++) {
        uintptr_t to = k < c->first[i + 1] ? c->at[k] : end;
        if (zk_os_move_keep((void *)from, to - from, dest + (from - p->base)) != 0)
            return -1;
        *moved += to - from;
        from = to;
    }
    return 0;
}

/* Move one idle piece's pages to dest: one mremap, or one per memory area
 * where it spans several (move_areas).  *moved: bytes from its start that
 * did move.  *kept: its old range is still mapped (empty), which is how any
 * piece but a whole segment must move: a hole in the middle of a segment
 * could be taken by another thread's mmap before it is mapped again
 * (zk_os_move_keep). */
static int move_piece(zk_region *p, char *dest, const area_cuts *c, int i, size_t *moved, bool *kept)
{
    *kept = true;
    if (p->flags & ZK_RF_MULTI)
        return move_areas(p, dest, c, i, moved);
    *kept = !zk_heap_whole_segment(p);
    int rc = *kept ? zk_os_move_keep((void *)p->base, p->bytes, dest)
                   : zk_os_move((void *)p->base, p->bytes, dest, p->bytes);
    *moved = rc == 0 ? p->bytes : 0;
    return rc;
}

/* After a partial move of p: it stays a whole idle region (the move left
 * its range mapped, zeros where the moved pages were), and the `moved`
 * bytes now in the target are the region's (spare becomes the region's
 * descriptor when it has none yet).  Returns the bytes the region gained. */
static size_t took_part(size_t moved, zk_region *spare, zk_region **region, uint32_t *areas)
{
    zk_stats_gauge_add(&zk_stats.bytes_mapped, &zk_stats.peak_bytes_mapped, moved);
    *areas += 1;
    if (*region == NULL)
        *region = spare;
    else
        zk_region_release_descriptor(spare);
    return moved;
}

/* Move pieces[0..n) side by side to the start of target; stops at the first
 * move the kernel refuses (those pieces go back to the pool).  Returns the
 * bytes moved; *region: the first piece's descriptor, now the region's;
 * *lost: the size of a hole a refused move left in the target at `off`,
 * which another thread's mmap may already hold (0 if none). */
static size_t move_pieces(zk_region **pieces, zk_region **spares, int n, const area_cuts *cuts, char *target,
                          zk_region **region, uint32_t *areas, size_t *lost)
{
    size_t off = 0;
    *region = NULL;
    *areas = 0;
    *lost = 0;
    for (int i = 0; i < n; i++) {
        zk_region *p = pieces[i];
        size_t moved = 0;
        bool kept;
        zk_pagemap_clear((void *)p->base);
        if (move_piece(p, target + off, cuts, i, &moved, &kept) != 0) {
            if (moved > 0) {
                /* A piece of several areas moved in part: what moved is the
                 * region's now (old bytes, like the rest), and the piece
                 * stays whole, zeros where those were. */
                off += took_part(moved, spares[i], region, areas);
                spares[i] = NULL;
            }
            zk_pagemap_set((void *)p->base, p);   /* its leaf exists: cannot fail */
            if (!zk_os_retake_target(target + off, p->bytes - moved)) {
                *lost = p->bytes - moved;
                zk_heap_drop_after_unlock(target + off, p->bytes - moved);
            }
            for (int j = i; j < n; j++) {
                put_back(pieces[j]);
                if (spares[j] != NULL)
                    zk_region_release_descriptor(spares[j]);
            }
            break;
        }
        *areas += zk_heap_moved_out(p, spares[i], kept);
        off += p->bytes;
        zk_count(&zk_stats.gathered_pieces, 1);
        if (*region == NULL)
            *region = p;
        else
            zk_region_release_descriptor(p);
    }
    return off;
}

static bool get_spares(zk_region **spares, int n)
{
    for (int i = 0; i < n; i++)
        if ((spares[i] = zk_region_descriptor()) == NULL) {
            while (i-- > 0)
                zk_region_release_descriptor(spares[i]);
            return false;
        }
    return true;
}

/* Fresh memory for what the pieces did not cover.  False when the kernel
 * refuses: then the region keeps what was moved, as an idle region. */
static bool fill_tail(char *target, size_t off, size_t need, uint32_t *areas)
{
    if (off == need)
        return true;
    if (zk_os_map_fixed(target + off, need - off) != 0)
        return false;
    zk_first_touch touch;   /* np.empty or np.zeros: not known here; np.zeros' rule, the stricter */
    if (zk_thp_choose(need - off, true, &touch))
        zk_os_advise_huge(target + off, need - off);
    *areas += 1;
    zk_stats_gauge_add(&zk_stats.bytes_mapped, &zk_stats.peak_bytes_mapped, need - off);
    return true;
}

/* A gather that could not finish: what moved stays an idle region. */
static void keep_as_idle(zk_region *r, char *target, size_t off, uint32_t areas)
{
    atomic_store_explicit(&r->state, ZK_REGION_IDLE, memory_order_relaxed);   /* a spare may be UNUSED */
    r->base = (uintptr_t)target;
    r->flags = 0;
    zk_heap_adopt(r, off, areas);
    r->cls = zk_class_floor(off);
    zk_pagemap_set(target, r);   /* leaf prepared: cannot fail */
    put_back(r);
}

static zk_region *gather(zk_region **pieces, int n, size_t need, int cls, size_t *fresh_tail)
{
    zk_region *spares[MAX_PIECES];
    area_cuts cuts;
    if (!learn_cuts(pieces, n, &cuts)) {
        for (int i = 0; i < n; i++)
            put_back(pieces[i]);
        return NULL;
    }
    char *target = zk_os_reserve(need, zk_region_alignment(need));
    if (target == NULL || zk_pagemap_prepare(target) != ZK_OK || !get_spares(spares, n)) {
        if (target != NULL)
            (void)zk_os_unmap(target, need);
        for (int i = 0; i < n; i++)
            put_back(pieces[i]);
        return NULL;
    }
    zk_region *r;
    uint32_t areas;
    size_t lost;
    size_t off = move_pieces(pieces, spares, n, &cuts, target, &r, &areas, &lost);
    if (lost != 0) {   /* never touch [off, off + lost) of the target again */
        if (off + lost < need)
            (void)zk_os_unmap(target + off + lost, need - off - lost);
        if (r != NULL)
            keep_as_idle(r, target, off, areas);
        return NULL;
    }
    if (r == NULL) {
        (void)zk_os_unmap(target, need);
        return NULL;
    }
    r->base = (uintptr_t)target;
    r->flags = 0;   /* old bytes of several regions */
    if (!fill_tail(target, off, need, &areas)) {
        (void)zk_os_unmap(target + off, need - off);   /* the rest of the reservation */
        keep_as_idle(r, target, off, areas);
        return NULL;
    }
    zk_heap_adopt(r, need, areas);
    r->cls = cls;
    zk_pagemap_set(target, r);   /* leaf prepared: cannot fail */
    *fresh_tail = need - off;
    zk_count(&zk_stats.gathered, 1);
    zk_count(&zk_stats.fresh_tail_bytes, need - off);
    return r;
}

/* ---- coalescing --------------------------------------------------------------------- */

static bool idle_in_pool(zk_region *r)
{
    return r != NULL && atomic_load_explicit(&r->state, memory_order_relaxed) == ZK_REGION_IDLE &&
           zk_pool_contains(r);
}

/* Merge idle region b, a's neighbour in the same segment, into a (both in
 * the pool, pool lock held).  Bookkeeping only: they are one range of one
 * mapping already.  Returns a when the cap has no room for it any more (to
 * vacate once the pool lock is dropped), else NULL. */
static zk_region *merge_idle(zk_region *a, zk_region *b)
{
    zk_pool_unlink(a);
    zk_pool_unlink(b);
    zk_idle_uncount(a);
    zk_idle_uncount(b);
    zk_pagemap_clear((void *)b->base);
    a->bytes += b->bytes;
    a->areas += b->areas;
    a->flags |= b->flags & (ZK_RF_SMALL_PAGES | ZK_RF_MULTI | ZK_RF_SOFT);
    if (!(b->flags & ZK_RF_ZERO))
        a->flags &= ~ZK_RF_ZERO;
    if (!(b->flags & ZK_RF_DISCARDED))
        a->flags &= ~ZK_RF_DISCARDED;   /* b's pages may all be present */
    if (a->flags & ZK_RF_SOFT)
        a->flags &= ~ZK_RF_ZERO;   /* MADV_FREE'd: old bytes or zeros */
    a->stamp = a->stamp > b->stamp ? a->stamp : b->stamp;
    a->idle_ns = a->idle_ns > b->idle_ns ? a->idle_ns : b->idle_ns;
    a->addr_next = b->addr_next;
    if (a->addr_next != NULL)
        a->addr_next->addr_prev = a;
    zk_region_release_descriptor(b);
    a->cls = zk_class_floor(a->bytes);
    /* The same bytes as before, but another thread may have lowered the
     * cap meanwhile: then the merged region is given back instead. */
    if (zk_idle_count(a)) {
        zk_pool_link(a);
        return NULL;
    }
    return a;
}

/* Idle regions that touch in their segment become one (what a carve cut
 * off, and its neighbour once freed, join again), so fragments left by
 * earlier rounds can serve a larger request.  Pool lock held; at most
 * COALESCE_WALK regions looked at, oldest first. */
static zk_region *coalesce_idle(void)
{
    zk_region *spill = NULL;
    int steps = 0;
    zk_region *r = zk_pool_oldest();
    while (r != NULL && steps++ < COALESCE_WALK) {
        zk_region *newer = zk_pool_newer(r);
        if (idle_in_pool(r->addr_next)) {
            zk_region *next = r->addr_next;
            if (newer == next)
                newer = zk_pool_newer(next);
            zk_region *out = merge_idle(r, next);
            if (out == NULL)
                continue;   /* r may touch another idle region now */
            out->free_next = spill;
            spill = out;
        }
        r = newer;
    }
    return spill;
}

/* ---- entry ----------------------------------------------------------------------- */

static zk_region *try_carve(size_t need, int cls, bool coalesce)
{
    zk_region *spill = NULL;
    zk_pool_lock();
    zk_region *merged_out = coalesce ? coalesce_idle() : NULL;
    zk_region *r = carve_candidate(need);
    if (r != NULL)
        r = carve(r, need, cls, &spill);
    zk_pool_unlock();
    if (spill != NULL)
        zk_heap_vacate(spill);
    zk_vacate_chain(merged_out, &zk_stats.evictions, &zk_stats.evicted_bytes, true);
    return r;
}

static zk_region *try_gather(size_t need, int cls, size_t *fresh_tail)
{
    zk_region *pieces[MAX_PIECES];
    zk_region *spill = NULL;
    size_t total;
    zk_pool_lock();
    int n = collect(need, pieces, &total);
    /* Worth it from an eighth: each piece saves its faults for a few us. */
    if (total < need / 8 || !zk_heap_may_add_areas((uint32_t)n + 1)) {
        zk_pool_unlock();
        return NULL;
    }
    huge_multiples_first(pieces, n);
    n = take_pieces(pieces, n, need, &spill);
    zk_pool_unlock();
    if (spill != NULL)
        zk_heap_vacate(spill);
    return n > 0 ? gather(pieces, n, need, cls, fresh_tail) : NULL;
}

zk_region *zk_repurpose(int cls, size_t *fresh_tail)
{
    *fresh_tail = 0;
    if (atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed) == 0)
        return NULL;
    size_t need = zk_class_bytes(cls);
    zk_tcache_drain_all();   /* idle memory in any thread's cache counts */
    zk_region *r = try_carve(need, cls, false);
    if (r == NULL)
        r = try_carve(need, cls, true);   /* fragments may touch: join them first */
    if (r == NULL && need >= GATHER_MIN_BYTES)
        r = try_gather(need, cls, fresh_tail);
    if (r == NULL)
        return NULL;
    zk_count(&zk_stats.repurposed, 1);
    zk_count(&zk_stats.repurposed_bytes, r->bytes - *fresh_tail);
    atomic_store_explicit(&r->state, ZK_REGION_IN_USE, memory_order_release);
    return r;
}
