/*
 * Arenas: the scratch memory of one phase, bump-allocated and dropped whole.
 *
 * An arena is a list of chunks, each a region of the size-class cache (so
 * arena memory is resident, huge-page backed and reused by the next phase).
 * An allocation is a 64-byte header followed by the data, both 64-byte
 * aligned, carved off the chunk's cursor.
 *
 * Safety, the reason this is not zk-nalloc's `Arena::reset`: every chunk
 * counts its live allocations.
 *  - A chunk whose count drops to zero while the phase runs rewinds its
 *    cursor: a loop that allocates and frees inside one phase reuses the
 *    same bytes instead of growing without bound.
 *  - Reset (the end of the phase) gives the cache every chunk with no live
 *    allocation and marks the others retired: a retired chunk is never
 *    bumped again and goes back to the cache when its last array is freed.
 *    So an array that escapes the phase keeps its memory, and no byte is
 *    handed out twice.  Reset walks chunks, never allocations: O(1) in the
 *    number of arrays.
 *
 * The arena itself lives until numpy drops the handler capsule that owns it,
 * which every array allocated through it references: frees of escaped
 * arrays always find it.
 *
 * One lock for all arenas, not one per arena: it is held for a handful of
 * stores (never across a syscall or a memset), and a single lock is what
 * makes fork safe (one pthread_atfork pair, no list of arenas to walk).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zk_internal.h"

#define ALIGN 64
#define HEADER 64
#define FIRST_CHUNK_BYTES ((size_t)4 << 20)
#define MAX_GROWTH_BYTES ((size_t)256 << 20)   /* growth stops following live bytes here */
#define LIVE_MAGIC 0x7a6b2d6c6976650aull
#define DEAD_MAGIC 0x7a6b2d646561640aull

typedef struct {
    uint64_t magic;     /* LIVE_MAGIC while allocated: catches double frees */
    uint64_t bytes;     /* requested */
    uint64_t span;      /* chunk bytes it takes, header included */
} arena_header;

typedef struct zk_chunk {
    uintptr_t base;
    size_t bytes;
    size_t cursor;      /* next free offset */
    size_t dirty_end;   /* bytes at or past this offset are known zero */
    uint64_t arrays, live_bytes;
    bool retired;       /* the arena was reset while arrays lived here */
    struct zk_chunk *prev, *next;
} zk_chunk;

struct zk_arena {
    zk_route route;
    zk_chunk *chunks;
    zk_chunk *current;
    size_t min_bytes;
    size_t first_chunk_bytes;
    zk_arena_stats st;
};

static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- fork: the child must not inherit a held lock ------------------------- */

static void lock_for_fork(void) { pthread_mutex_lock(&arena_lock); }
static void unlock_after_fork(void) { pthread_mutex_unlock(&arena_lock); }
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void init_once_fn(void) { pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork); }

void zk_arena_init(void) { pthread_once(&init_once, init_once_fn); }

/* ---- chunks --------------------------------------------------------------- */

/* Bytes an allocation takes in a chunk; 0 when the request cannot fit any. */
static size_t span_for(size_t bytes)
{
    if (bytes > ZK_MAX_CLASS_BYTES)
        return 0;
    return zk_round_up(HEADER + (bytes != 0 ? bytes : 1), ALIGN);
}

/* A new chunk of at least `bytes`, from the cache; mapping happens outside
 * the arena lock. */
static zk_chunk *chunk_new(size_t bytes, bool *hit)
{
    zk_chunk *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    bool zeroed;
    void *base = zk_cache_take(bytes, &c->bytes, &zeroed, hit);
    if (base == NULL) {
        free(c);
        return NULL;
    }
    c->base = (uintptr_t)base;
    c->dirty_end = zeroed ? 0 : c->bytes;
    zk_count(&zk_stats.arena_chunks_in_use, 1);
    zk_count(&zk_stats.arena_chunk_bytes_in_use, c->bytes);
    return c;
}

static void chunk_give_back(zk_chunk *c)
{
    zk_stats_gauge_sub(&zk_stats.arena_chunks_in_use, 1);
    zk_stats_gauge_sub(&zk_stats.arena_chunk_bytes_in_use, c->bytes);
    zk_cache_free((void *)c->base);
    free(c);
}

static void chunk_link(zk_arena *a, zk_chunk *c)
{
    c->prev = NULL;
    c->next = a->chunks;
    if (a->chunks != NULL)
        a->chunks->prev = c;
    a->chunks = c;
}

static void chunk_unlink(zk_arena *a, zk_chunk *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        a->chunks = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (a->current == c)
        a->current = NULL;
}

static bool has_room(const zk_chunk *c, size_t span)
{
    return !c->retired && c->bytes - c->cursor >= span;
}

/* The current chunk if it has room, else any open chunk that does (one that
 * rewound after its arrays died).  The list is short: chunks grow
 * geometrically. */
static zk_chunk *chunk_with_room(zk_arena *a, size_t span)
{
    if (a->current != NULL && has_room(a->current, span))
        return a->current;
    for (zk_chunk *c = a->chunks; c != NULL; c = c->next)
        if (has_room(c, span))
            return a->current = c;
    return NULL;
}

static zk_chunk *chunk_holding(zk_arena *a, uintptr_t p)
{
    for (zk_chunk *c = a->chunks; c != NULL; c = c->next)
        if (p >= c->base + HEADER && p < c->base + c->bytes)
            return c;
    return NULL;
}

/* ---- allocation ----------------------------------------------------------- */

static void account_alloc(zk_arena *a, zk_chunk *c, size_t bytes)
{
    c->arrays++;
    c->live_bytes += bytes;
    a->st.arrays++;
    a->st.live_arrays++;
    a->st.bytes_allocated += bytes;
    a->st.live_bytes += bytes;
    if (a->st.live_bytes > a->st.peak_bytes)
        a->st.peak_bytes = a->st.live_bytes;
}

/* Carve span bytes off c (which has room); returns the data and, in
 * *to_zero, how many of its first bytes a calloc must clear (the rest lie
 * past dirty_end, still zero).  The clearing itself happens after the lock
 * is dropped: the bytes are this caller's from here on. */
static void *bump(zk_arena *a, zk_chunk *c, size_t bytes, size_t span, size_t *to_zero)
{
    size_t off = c->cursor;
    arena_header *h = (arena_header *)(c->base + off);
    h->magic = LIVE_MAGIC;
    h->bytes = bytes;
    h->span = span;
    size_t data_off = off + HEADER;
    *to_zero = c->dirty_end > data_off ? c->dirty_end - data_off : 0;
    if (*to_zero > bytes)
        *to_zero = bytes;
    c->cursor = off + span;
    if (c->cursor > c->dirty_end)
        c->dirty_end = c->cursor;
    account_alloc(a, c, bytes);
    return (void *)(c->base + data_off);
}

/* Size of the next chunk: as large as what lives in the arena now (so an
 * arena whose arrays accumulate doubles its capacity each time, geometric
 * growth), but no larger (so an arena that is only fragmented, a long-lived
 * array in the middle of a chunk of dead temporaries, adds a chunk the size
 * of its working set rather than doubling without need). */
static size_t growth_bytes(zk_arena *a, size_t span)
{
    size_t want = a->st.live_bytes < MAX_GROWTH_BYTES ? a->st.live_bytes : MAX_GROWTH_BYTES;
    if (want < a->first_chunk_bytes)
        want = a->first_chunk_bytes;
    if (want < span)
        want = span;
    /* first_chunk_bytes times a power of two: the next phase, whose live
     * bytes differ a little, asks for the same classes again and finds them
     * resident in the cache. */
    size_t pow2 = a->first_chunk_bytes;
    while (pow2 < want && pow2 <= SIZE_MAX / 2)
        pow2 *= 2;
    return pow2 >= want ? pow2 : want;
}

/* Link a chunk made outside the lock. */
static void adopt_chunk(zk_arena *a, zk_chunk *c, bool hit)
{
    chunk_link(a, c);
    a->current = c;
    a->st.chunks++;
    a->st.chunk_bytes += c->bytes;
    a->st.chunks_reused += hit;
    a->st.grown_chunks += a->st.chunks > 1;
}

/* No chunk had room: map one (unlocked), the growth size first, exactly the
 * span if that is refused, so growth never fails while memory for the
 * request itself exists. */
static void *alloc_in_new_chunk(zk_arena *a, size_t bytes, size_t span, size_t want,
                                size_t *to_zero, zk_arena_verdict *verdict)
{
    bool hit = false;
    zk_chunk *c = chunk_new(want, &hit);
    if (c == NULL && want > span)
        c = chunk_new(span, &hit);
    pthread_mutex_lock(&arena_lock);
    if (c == NULL) {
        a->st.failures++;
        pthread_mutex_unlock(&arena_lock);
        return NULL;
    }
    if (a->st.closed) {   /* reset ran meanwhile: this chunk is not needed */
        pthread_mutex_unlock(&arena_lock);
        chunk_give_back(c);
        *verdict = ZK_ARENA_CLOSED;
        return NULL;
    }
    adopt_chunk(a, c, hit);
    void *p = bump(a, c, bytes, span, to_zero);
    pthread_mutex_unlock(&arena_lock);
    return p;
}

void *zk_arena_alloc(zk_arena *a, size_t bytes, bool zeroed, zk_arena_verdict *verdict)
{
    *verdict = ZK_ARENA_SERVED;
    size_t span = span_for(bytes);
    if (bytes < a->min_bytes || span == 0) {
        *verdict = ZK_ARENA_SMALL;
        pthread_mutex_lock(&arena_lock);
        a->st.small_allocs++;
        pthread_mutex_unlock(&arena_lock);
        return NULL;
    }
    size_t to_zero = 0;
    void *p = NULL;
    pthread_mutex_lock(&arena_lock);
    if (a->st.closed) {
        pthread_mutex_unlock(&arena_lock);
        *verdict = ZK_ARENA_CLOSED;
        return NULL;
    }
    zk_chunk *c = chunk_with_room(a, span);
    size_t want = growth_bytes(a, span);
    if (c != NULL)
        p = bump(a, c, bytes, span, &to_zero);
    pthread_mutex_unlock(&arena_lock);
    if (c == NULL)
        p = alloc_in_new_chunk(a, bytes, span, want, &to_zero, verdict);
    if (p != NULL && zeroed && to_zero != 0)
        memset(p, 0, to_zero);
    return p;
}

/* ---- free and resize ------------------------------------------------------ */

static arena_header *header_of(const void *ptr)
{
    return (arena_header *)((uintptr_t)ptr - HEADER);
}

/* Drop one allocation's count; returns the chunk when it must go back to the
 * cache (retired and now empty), already unlinked. */
static zk_chunk *release_one(zk_arena *a, zk_chunk *c, arena_header *h)
{
    h->magic = DEAD_MAGIC;
    c->arrays--;
    c->live_bytes -= h->bytes;
    a->st.live_arrays--;
    a->st.live_bytes -= h->bytes;
    if (c->arrays != 0)
        return NULL;
    if (!c->retired) {
        c->cursor = 0;   /* nothing lives here: the whole chunk is free again */
        a->st.rewinds++;
        return NULL;
    }
    chunk_unlink(a, c);
    a->st.pinned_chunks--;
    return c;
}

int zk_arena_free(zk_arena *a, void *ptr)
{
    pthread_mutex_lock(&arena_lock);
    zk_chunk *c = chunk_holding(a, (uintptr_t)ptr);
    if (c == NULL) {
        pthread_mutex_unlock(&arena_lock);
        return 0;
    }
    arena_header *h = header_of(ptr);
    zk_chunk *empty = NULL;
    if (h->magic == LIVE_MAGIC)
        empty = release_one(a, c, h);
    else
        a->st.invalid_frees++;   /* a double free: refuse, never count twice */
    pthread_mutex_unlock(&arena_lock);
    if (empty != NULL)
        chunk_give_back(empty);
    return 1;
}

size_t zk_arena_usable(zk_arena *a, const void *ptr)
{
    pthread_mutex_lock(&arena_lock);
    zk_chunk *c = chunk_holding(a, (uintptr_t)ptr);
    size_t bytes = 0;
    if (c != NULL && header_of(ptr)->magic == LIVE_MAGIC)
        bytes = header_of(ptr)->bytes;
    pthread_mutex_unlock(&arena_lock);
    return bytes;
}

/* A shrink always stays put; a grow does when the allocation is the last one
 * carved from an open chunk with room after it. */
static bool resize_fits(const zk_chunk *c, const arena_header *h, size_t span)
{
    if (span <= h->span)
        return true;
    size_t off = (uintptr_t)h - c->base;
    return !c->retired && off + h->span == c->cursor && c->bytes - off >= span;
}

void *zk_arena_resize_in_place(zk_arena *a, void *ptr, size_t bytes, size_t *have, bool *ours)
{
    size_t span = span_for(bytes);
    void *result = NULL;
    pthread_mutex_lock(&arena_lock);
    zk_chunk *c = chunk_holding(a, (uintptr_t)ptr);
    arena_header *h = header_of(ptr);
    bool live = c != NULL && h->magic == LIVE_MAGIC;
    *ours = c != NULL;
    *have = live ? h->bytes : 0;
    if (live && span != 0 && resize_fits(c, h, span)) {
        size_t off = (uintptr_t)h - c->base;
        if (span > h->span || off + h->span == c->cursor) {
            h->span = span;
            c->cursor = off + span;
            if (c->cursor > c->dirty_end)
                c->dirty_end = c->cursor;
        }
        c->live_bytes = c->live_bytes - h->bytes + bytes;
        a->st.live_bytes = a->st.live_bytes - h->bytes + bytes;
        if (bytes > h->bytes)
            a->st.bytes_allocated += bytes - h->bytes;
        if (a->st.live_bytes > a->st.peak_bytes)
            a->st.peak_bytes = a->st.live_bytes;
        h->bytes = bytes;
        a->st.realloc_in_place++;
        result = ptr;
    } else if (live) {
        a->st.realloc_moved++;
    } else if (c != NULL) {
        a->st.invalid_frees++;   /* realloc of a freed arena block: refuse */
    }
    pthread_mutex_unlock(&arena_lock);
    return result;
}

/* ---- life cycle ----------------------------------------------------------- */

zk_arena *zk_arena_create(size_t capacity, size_t min_bytes, size_t first_chunk_bytes)
{
    zk_arena *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->route.kind = ZK_ROUTE_ARENA;
    a->route.arena = a;
    a->min_bytes = min_bytes != 0 ? min_bytes : zk_opt_arena_min_bytes();
    a->first_chunk_bytes = first_chunk_bytes != 0 ? first_chunk_bytes : FIRST_CHUNK_BYTES;
    if (capacity == 0)
        return a;
    /* Reserve the capacity up front as one region. */
    bool hit = false;
    zk_chunk *c = span_for(capacity) != 0 ? chunk_new(capacity, &hit) : NULL;
    if (c == NULL) {
        free(a);
        return NULL;
    }
    adopt_chunk(a, c, hit);
    return a;
}

zk_route *zk_arena_route(zk_arena *a) { return &a->route; }

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Under the lock: unlink the chunks nothing lives in (returned as a list),
 * retire the others. */
static zk_chunk *close_chunks(zk_arena *a)
{
    zk_chunk *dead = NULL;
    zk_chunk *c = a->chunks;
    while (c != NULL) {
        zk_chunk *next = c->next;
        if (c->arrays == 0) {
            chunk_unlink(a, c);
            c->next = dead;
            dead = c;
        } else {
            c->retired = true;
            a->st.pinned_chunks++;
            a->st.escaped_arrays += c->arrays;
            a->st.escaped_bytes += c->live_bytes;
        }
        c = next;
    }
    a->current = NULL;
    return dead;
}

void zk_arena_reset(zk_arena *a)
{
    uint64_t start = now_ns();
    pthread_mutex_lock(&arena_lock);
    if (a->st.closed) {
        pthread_mutex_unlock(&arena_lock);
        return;
    }
    a->st.closed = 1;
    zk_chunk *dead = close_chunks(a);
    pthread_mutex_unlock(&arena_lock);
    while (dead != NULL) {
        zk_chunk *next = dead->next;
        chunk_give_back(dead);
        dead = next;
    }
    pthread_mutex_lock(&arena_lock);
    a->st.reset_ns = now_ns() - start;
    pthread_mutex_unlock(&arena_lock);
}

void zk_arena_destroy(zk_arena *a)
{
    zk_arena_reset(a);
    /* No array of this arena is left (its handler capsule is gone), so no
     * chunk can still be pinned; free any that a stale count kept. */
    pthread_mutex_lock(&arena_lock);
    zk_chunk *c = a->chunks;
    a->chunks = NULL;
    pthread_mutex_unlock(&arena_lock);
    while (c != NULL) {
        zk_chunk *next = c->next;
        chunk_give_back(c);
        c = next;
    }
    free(a);
}

void zk_arena_stats_read(zk_arena *a, zk_arena_stats *out)
{
    pthread_mutex_lock(&arena_lock);
    *out = a->st;
    pthread_mutex_unlock(&arena_lock);
}
