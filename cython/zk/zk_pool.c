/*
 * The shared pool: idle regions of every thread, per-class LIFO lists (the
 * most recently freed region is the warmest) threaded through one LRU list
 * across classes, under one mutex.  One lock is enough: a region is >= 4 KiB
 * that its user will touch, so the lock is held for nanoseconds against
 * microseconds of work.
 *
 * LRU order comes from a stamp taken when a region is freed, so regions that
 * wait in thread caches keep their age when they are drained into the pool.
 *
 * Idle accounting: a region is either in use (bytes_in_use) or idle
 * (bytes_cached, wherever it sits).  Every idle byte is reserved against the
 * cap before the region is parked, so idle memory never exceeds the cap,
 * even briefly.  Regions evicted to make room are vacated (zk_heap.c) after
 * the pool lock is dropped.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "zk_internal.h"

typedef struct {
    zk_region *head, *tail;
} class_list;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static class_list pool_classes[ZK_NCLASSES];
static zk_region *lru_newest, *lru_oldest;

void zk_pool_lock(void) { pthread_mutex_lock(&pool_lock); }
void zk_pool_unlock(void) { pthread_mutex_unlock(&pool_lock); }

/* ---- idle and in-use accounting -------------------------------------------- */

bool zk_idle_count(zk_region *r)
{
    uint64_t cap = zk_opt_cache_bytes();
    uint64_t cur = atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed);
    do {
        if (r->bytes > cap || cur > cap - r->bytes)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&zk_stats.bytes_cached, &cur, cur + r->bytes,
                                                    memory_order_relaxed, memory_order_relaxed));
    zk_stats_raise_peak(&zk_stats.peak_bytes_cached, cur + r->bytes);
    atomic_fetch_add_explicit(&zk_stats.class_cached[r->cls], 1, memory_order_relaxed);
    return true;
}

void zk_idle_uncount(zk_region *r)
{
    zk_stats_gauge_sub(&zk_stats.bytes_cached, r->bytes);
    atomic_fetch_sub_explicit(&zk_stats.class_cached[r->cls], 1, memory_order_relaxed);
}

void zk_in_use_count(zk_region *r)
{
    uint64_t now = atomic_fetch_add_explicit(&zk_stats.bytes_in_use, r->bytes, memory_order_relaxed) + r->bytes;
    zk_stats_raise_peak(&zk_stats.peak_bytes_in_use, now);
    zk_stats_raise_peak(&zk_decay_in_use_peak, now);
    atomic_fetch_add_explicit(&zk_stats.class_in_use[r->cls], 1, memory_order_relaxed);
}

void zk_in_use_uncount(zk_region *r)
{
    zk_stats_gauge_sub(&zk_stats.bytes_in_use, r->bytes);
    atomic_fetch_sub_explicit(&zk_stats.class_in_use[r->cls], 1, memory_order_relaxed);
}

/* ---- lists (pool lock held) -------------------------------------------------- */

/* Insert r in both lists at the place its stamp gives (newest first).  A
 * region just freed is the newest and goes in front in O(1); regions drained
 * from thread caches walk back to where they belong. */
void zk_pool_link(zk_region *r)
{
    class_list *cl = &pool_classes[r->cls];
    zk_region *after = cl->head;   /* first node older than r */
    zk_region *before = NULL;
    while (after != NULL && after->stamp > r->stamp) {
        before = after;
        after = after->cls_next;
    }
    r->cls_prev = before;
    r->cls_next = after;
    if (before != NULL) before->cls_next = r; else cl->head = r;
    if (after != NULL) after->cls_prev = r; else cl->tail = r;

    after = lru_newest;
    before = NULL;
    while (after != NULL && after->stamp > r->stamp) {
        before = after;
        after = after->lru_next;
    }
    r->lru_prev = before;
    r->lru_next = after;
    if (before != NULL) before->lru_next = r; else lru_newest = r;
    if (after != NULL) after->lru_prev = r; else lru_oldest = r;
}

void zk_pool_unlink(zk_region *r)
{
    class_list *cl = &pool_classes[r->cls];
    if (r->cls_prev != NULL) r->cls_prev->cls_next = r->cls_next; else cl->head = r->cls_next;
    if (r->cls_next != NULL) r->cls_next->cls_prev = r->cls_prev; else cl->tail = r->cls_prev;
    if (r->lru_prev != NULL) r->lru_prev->lru_next = r->lru_next; else lru_newest = r->lru_next;
    if (r->lru_next != NULL) r->lru_next->lru_prev = r->lru_prev; else lru_oldest = r->lru_prev;
    r->cls_prev = r->cls_next = r->lru_prev = r->lru_next = NULL;
}

bool zk_pool_contains(zk_region *r) { return r->lru_prev != NULL || lru_newest == r; }
zk_region *zk_pool_oldest(void) { return lru_oldest; }
zk_region *zk_pool_newer(zk_region *r) { return r->lru_prev; }
zk_region *zk_pool_newest(void) { return lru_newest; }
zk_region *zk_pool_class_oldest(int cls) { return pool_classes[cls].tail; }

zk_region *zk_pool_pop(int cls)
{
    pthread_mutex_lock(&pool_lock);
    zk_region *r = pool_classes[cls].head;
    if (r != NULL)
        zk_pool_unlink(r);
    pthread_mutex_unlock(&pool_lock);
    return r;
}

/* ---- parking and eviction -------------------------------------------------------- */

/* The least recently freed region, out of the pool and uncounted, pushed on
 * chain (free_next). */
static zk_region *evict_oldest(zk_region *chain)
{
    zk_region *victim = lru_oldest;
    zk_pool_unlink(victim);
    zk_idle_uncount(victim);
    victim->free_next = chain;
    return victim;
}

zk_region *zk_pool_evict(size_t keep, size_t *bytes)
{
    zk_region *chain = NULL;
    size_t total = 0;
    pthread_mutex_lock(&pool_lock);
    while (lru_oldest != NULL && atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed) > keep) {
        total += lru_oldest->bytes;
        chain = evict_oldest(chain);
    }
    pthread_mutex_unlock(&pool_lock);
    *bytes = total;
    return chain;
}

void zk_vacate_chain(zk_region *chain, _Atomic uint64_t *event, _Atomic uint64_t *event_bytes, bool heap_held)
{
    if (chain == NULL)
        return;
    while (chain != NULL) {
        zk_region *next = chain->free_next;
        if (event != NULL)
            zk_count(event, 1);
        if (event_bytes != NULL)
            zk_count(event_bytes, chain->bytes);
        if (heap_held)
            zk_heap_vacate(chain);
        else
            zk_heap_give_back(chain);
        chain = next;
    }
}

zk_region *zk_pool_put(zk_region *r, bool *parked)
{
    zk_region *evicted = NULL;
    *parked = false;
    pthread_mutex_lock(&pool_lock);
    if (r->bytes <= zk_opt_cache_bytes()) {
        while (!(*parked = zk_idle_count(r)) && lru_oldest != NULL)
            evicted = evict_oldest(evicted);
        if (*parked)
            zk_pool_link(r);
    }
    pthread_mutex_unlock(&pool_lock);
    return evicted;
}

/* ---- check (pool lock held) ------------------------------------------------------ */

const char *zk_pool_check(const char *(*check_idle)(zk_region *r), uint64_t *count)
{
    uint64_t listed = 0, lru_count = 0;
    const char *err = NULL;
    for (zk_region *r = lru_newest; r != NULL && err == NULL; r = r->lru_next) {
        if (r->lru_next != NULL && r->lru_next->lru_prev != r)
            err = "the LRU list is not linked both ways";
        else
            err = check_idle(r);
        lru_count++;
    }
    for (int cls = 0; cls < ZK_NCLASSES && err == NULL; cls++)
        for (zk_region *r = pool_classes[cls].head; r != NULL; r = r->cls_next) {
            listed++;
            if (r->cls != cls || !zk_pool_contains(r))
                err = "class lists and the LRU list disagree";
        }
    if (err == NULL && listed != lru_count)
        err = "class lists and the LRU list disagree";
    *count = lru_count;
    return err;
}
