/*
 * Secret memory: one mapping per allocation, never cached, never reused.
 *
 *   [ guard page | data pages ........ data | guard page ]
 *     PROT_NONE    RW, mlocked, wipe-on-fork   PROT_NONE
 *
 * The data sits at the end of its pages (16-byte aligned, as numpy's own
 * allocator guarantees), so reading past the end of an array faults on the
 * guard page instead of returning a neighbour's bytes; at most 15 bytes of
 * padding lie between the last element and the guard.  The whole mapping is
 * MADV_DONTDUMP (no core dump carries it) and the data pages are
 * MADV_WIPEONFORK (a forked child reads zeros) and mlocked (never swapped).
 * Free wipes the data pages with stores the compiler cannot drop, then
 * munlocks and unmaps.
 *
 * Stricter than zk-nalloc's SecretBuf, which ignores a failed mlock: a strict
 * allocation that cannot get every protection fails, and the thread's last
 * failure (which protection, which errno) is kept for the Python layer to
 * name in its error.
 *
 * Live allocations are found by their data address in a hash table under one
 * lock, held for list operations only (no syscall under it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "zk_internal.h"

#define DATA_ALIGN 16
#define BUCKETS 4096

typedef struct secret_block {
    uintptr_t data;
    size_t bytes;           /* requested */
    uintptr_t map;          /* the mapping, guards included */
    size_t map_bytes;
    unsigned protections;
    struct secret_block *next;
} secret_block;

static secret_block *table[BUCKETS];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local unsigned last_failed;
static _Thread_local int last_errno;
/* Every failure since the Python layer's secret() block began (the last
 * allocation's record alone is lost when numpy allocates again after a
 * failed realloc, as fromstring does). */
static _Thread_local unsigned block_failed;
static _Thread_local int block_errno;
static _Thread_local uint64_t block_count;

zk_route zk_route_secret_strict = {ZK_ROUTE_SECRET, 1, NULL};
zk_route zk_route_secret_lenient = {ZK_ROUTE_SECRET, 0, NULL};

static void lock_for_fork(void) { pthread_mutex_lock(&table_lock); }
static void unlock_after_fork(void) { pthread_mutex_unlock(&table_lock); }
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void init_once_fn(void) { pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork); }

void zk_secret_init(void) { pthread_once(&init_once, init_once_fn); }

void zk_secure_wipe(void *p, size_t n)
{
    explicit_bzero(p, n);   /* a plain memset before munmap is a dead store */
}

/* ---- the table ------------------------------------------------------------ */

static size_t bucket_of(uintptr_t data)
{
    return (size_t)(((uint64_t)data * 0x9e3779b97f4a7c15ull) >> 52) % BUCKETS;
}

static void table_insert(secret_block *b)
{
    size_t i = bucket_of(b->data);
    pthread_mutex_lock(&table_lock);
    b->next = table[i];
    table[i] = b;
    pthread_mutex_unlock(&table_lock);
}

/* Unlinks and returns the block of ptr, NULL if ptr is not a secret. */
static secret_block *table_remove(uintptr_t data)
{
    size_t i = bucket_of(data);
    pthread_mutex_lock(&table_lock);
    secret_block **link = &table[i];
    while (*link != NULL && (*link)->data != data)
        link = &(*link)->next;
    secret_block *b = *link;
    if (b != NULL)
        *link = b->next;
    pthread_mutex_unlock(&table_lock);
    return b;
}

int zk_secret_lookup(const void *ptr, zk_secret_info *out)
{
    uintptr_t data = (uintptr_t)ptr;
    pthread_mutex_lock(&table_lock);
    secret_block *b = table[bucket_of(data)];
    while (b != NULL && b->data != data)
        b = b->next;
    if (b != NULL) {
        out->data_bytes = b->bytes;
        out->mapped_bytes = b->map_bytes;
        out->protections = b->protections;
    }
    pthread_mutex_unlock(&table_lock);
    return b != NULL;
}

size_t zk_secret_usable(const void *ptr)
{
    zk_secret_info info;
    return zk_secret_lookup(ptr, &info) ? (size_t)info.data_bytes : 0;
}

/* ---- mapping -------------------------------------------------------------- */

static void note_failure(unsigned protection)
{
    if (last_failed == 0)
        last_errno = errno;
    last_failed |= protection;
}

/* Apply the protections beyond the guards to the data pages; returns those
 * that worked. */
static unsigned protect(void *pages, size_t bytes, void *map, size_t map_bytes)
{
    unsigned ok = ZK_SECRET_GUARDED;
    if (zk_os_dont_dump(map, map_bytes) == 0)
        ok |= ZK_SECRET_NODUMP;
    else
        note_failure(ZK_SECRET_NODUMP);
    if (zk_os_wipe_on_fork(pages, bytes) == 0)
        ok |= ZK_SECRET_WIPEONFORK;
    else
        note_failure(ZK_SECRET_WIPEONFORK);
    /* Last: mlock also faults the pages in, so the earlier advice is in place
     * before any byte exists. */
    if (zk_os_lock(pages, bytes) == 0)
        ok |= ZK_SECRET_LOCKED;
    else
        note_failure(ZK_SECRET_LOCKED);
    return ok;
}

/* The mapping with its guards: everything PROT_NONE, then the data pages
 * opened.  NULL when the kernel refuses. */

static size_t data_pages_bytes(const secret_block *b);

static void count_live(const secret_block *b, int sign)
{
    size_t locked = b->protections & ZK_SECRET_LOCKED ? data_pages_bytes(b) : 0;
    if (sign > 0) {
        zk_count(&zk_stats.secret_arrays, 1);
        zk_count(&zk_stats.secret_bytes, b->bytes);
        zk_count(&zk_stats.secret_mapped_bytes, b->map_bytes);
        zk_count(&zk_stats.secret_locked_bytes, locked);
    } else {
        zk_stats_gauge_sub(&zk_stats.secret_arrays, 1);
        zk_stats_gauge_sub(&zk_stats.secret_bytes, b->bytes);
        zk_stats_gauge_sub(&zk_stats.secret_mapped_bytes, b->map_bytes);
        zk_stats_gauge_sub(&zk_stats.secret_locked_bytes, locked);
    }
}

/* A secret block with its mapping and protections, not yet counted or
 * findable; NULL when the mapping, or in strict mode a protection, failed. */
static secret_block *secret_map(size_t bytes, bool strict)
{
    last_failed = 0;
    last_errno = 0;
    size_t page = zk_os_page_size();
    size_t padded = zk_round_up(bytes != 0 ? bytes : 1, DATA_ALIGN);
    if (padded > ZK_MAX_CLASS_BYTES) {
        errno = ENOMEM;
        note_failure(ZK_SECRET_GUARDED);
        return NULL;
    }
    size_t pages_bytes = zk_round_up(padded, page);
    size_t map_bytes = pages_bytes + 2 * page;
    secret_block *b = calloc(1, sizeof *b);
    void *map = b != NULL ? zk_os_map_guarded(map_bytes) : NULL;
    if (map == NULL) {
        note_failure(ZK_SECRET_GUARDED);
        free(b);
        return NULL;
    }
    char *pages = (char *)map + page;
    unsigned ok = protect(pages, pages_bytes, map, map_bytes);
    if (strict && ok != ZK_SECRET_ALL) {
        if (ok & ZK_SECRET_LOCKED)
            zk_os_unlock(pages, pages_bytes);
        (void)zk_os_unmap(map, map_bytes);   /* a failure leaves it mapped: counted, nothing in it */
        free(b);
        return NULL;
    }
    *b = (secret_block){(uintptr_t)(pages + pages_bytes - padded), bytes, (uintptr_t)map, map_bytes, ok, NULL};
    return b;
}

static size_t data_pages_bytes(const secret_block *b)
{
    return b->map_bytes - 2 * zk_os_page_size();
}

/* Wipe, unlock, unmap: the order matters, the wipe must land while the pages
 * are still ours and locked. */
static void secret_unmap(secret_block *b)
{
    void *pages = (char *)b->map + zk_os_page_size();
    zk_secure_wipe(pages, data_pages_bytes(b));
    if (b->protections & ZK_SECRET_LOCKED)
        zk_os_unlock(pages, data_pages_bytes(b));
    (void)zk_os_unmap((void *)b->map, b->map_bytes);   /* a failure leaves it mapped, wiped: counted */
    free(b);
}

static void note_block_failure(void)
{
    if (block_failed == 0)
        block_errno = last_errno;
    block_failed |= last_failed;
    block_count++;
}

void *zk_secret_alloc(size_t bytes, bool strict)
{
    secret_block *b = secret_map(bytes, strict);
    if (b == NULL || b->protections != ZK_SECRET_ALL)
        note_block_failure();
    if (b == NULL) {
        zk_count(&zk_stats.secret_failures, 1);
        return NULL;
    }
    zk_count(&zk_stats.secret_allocs, 1);
    if (b->protections != ZK_SECRET_ALL)
        zk_count(&zk_stats.secret_unprotected, 1);
    count_live(b, +1);
    table_insert(b);
    return (void *)b->data;
}

int zk_secret_free(void *ptr)
{
    secret_block *b = table_remove((uintptr_t)ptr);
    if (b == NULL)
        return 0;
    zk_count(&zk_stats.secret_wiped_arrays, 1);
    zk_count(&zk_stats.secret_wiped_bytes, data_pages_bytes(b));
    count_live(b, -1);
    secret_unmap(b);
    return 1;
}

unsigned zk_secret_block_failures(int *err, uint64_t *count)
{
    *err = block_errno;
    *count = block_count;
    return block_failed;
}

void zk_secret_block_reset(void)
{
    block_failed = 0;
    block_errno = 0;
    block_count = 0;
}

unsigned zk_secret_probe(int *err)
{
    secret_block *b = secret_map(1, false);
    *err = last_errno;
    unsigned ok = b != NULL ? b->protections : 0;
    if (b != NULL)
        secret_unmap(b);
    return ok;
}
