/*
 * Thread caches: per thread, a few atomic slots per class.  Its owner pushes
 * and pops without a lock; any other thread may only take a region out of a
 * slot (atomic exchange), which is how release(), trim(), repurposing and
 * fork reclaim regions a thread holds.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "zk_internal.h"

#define TCACHE_SLOTS 2

struct zk_tcache {
    _Atomic(zk_region *) slots[ZK_NCLASSES][TCACHE_SLOTS];
    _Atomic uint64_t bytes;
    struct zk_tcache *prev, *next;   /* registry, under registry_lock */
    _Alignas(64) zk_traffic_counts traffic;   /* its owner's requests (zk_check.c) */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static zk_tcache *registry;
static pthread_key_t tcache_key;
static bool tcache_key_ok;
static _Thread_local zk_tcache *my_tcache;
static _Thread_local bool my_tcache_closed;   /* the thread is exiting */

static zk_region *take_slot(zk_tcache *tc, int cls, int i)
{
    /* A plain load first: most slots are empty and an exchange is a locked
     * instruction. */
    if (atomic_load_explicit(&tc->slots[cls][i], memory_order_relaxed) == NULL)
        return NULL;
    zk_region *r = atomic_exchange_explicit(&tc->slots[cls][i], NULL, memory_order_acq_rel);
    if (r != NULL)
        atomic_fetch_sub_explicit(&tc->bytes, r->bytes, memory_order_relaxed);
    return r;
}

zk_region *zk_tcache_pop(zk_tcache *tc, int cls)
{
    for (int i = 0; i < TCACHE_SLOTS; i++) {
        zk_region *r = take_slot(tc, cls, i);
        if (r != NULL)
            return r;
    }
    return NULL;
}

/* Only the owner pushes, so a slot it sees empty stays empty until it fills
 * it: other threads only ever empty slots. */
bool zk_tcache_push(zk_tcache *tc, zk_region *r)
{
    uint64_t held = atomic_load_explicit(&tc->bytes, memory_order_relaxed);
    if (r->bytes > zk_opt_thread_cache_bytes() || held > zk_opt_thread_cache_bytes() - r->bytes)
        return false;
    for (int i = 0; i < TCACHE_SLOTS; i++) {
        if (atomic_load_explicit(&tc->slots[r->cls][i], memory_order_relaxed) != NULL)
            continue;
        if (!zk_idle_count(r))
            return false;
        atomic_fetch_add_explicit(&tc->bytes, r->bytes, memory_order_relaxed);
        atomic_store_explicit(&tc->slots[r->cls][i], r, memory_order_release);
        return true;
    }
    return false;
}

/* Move every region of tc into the pool (pool lock held); they are already
 * counted as idle. */
static void drain_locked(zk_tcache *tc)
{
    for (int cls = 0; cls < ZK_NCLASSES; cls++)
        for (int i = 0; i < TCACHE_SLOTS; i++) {
            zk_region *r = take_slot(tc, cls, i);
            if (r != NULL)
                zk_pool_link(r);
        }
}

static void registry_unlink(zk_tcache *tc)
{
    if (tc->prev != NULL) tc->prev->next = tc->next; else registry = tc->next;
    if (tc->next != NULL) tc->next->prev = tc->prev;
}

/* pthread key destructor: the thread is exiting; its regions go to the pool. */
static void tcache_close(void *arg)
{
    zk_tcache *tc = arg;
    pthread_mutex_lock(&registry_lock);
    zk_pool_lock();
    drain_locked(tc);
    zk_pool_unlock();
    registry_unlink(tc);
    /* Its requests' counts (all ended) go on being summed there. */
    atomic_fetch_add(&zk_traffic_shared.begun, atomic_load(&tc->traffic.begun));
    atomic_fetch_add(&zk_traffic_shared.ended, atomic_load(&tc->traffic.ended));
    pthread_mutex_unlock(&registry_lock);
    (void)zk_os_unmap(tc, sizeof *tc);   /* a failure leaves it mapped, unused: counted */
    my_tcache = NULL;
    my_tcache_closed = true;   /* frees after this point use the pool only */
}

static zk_tcache *tcache_open(void)
{
    zk_tcache *tc = zk_os_map_zeroed(sizeof *tc);
    if (tc == NULL)
        return NULL;
    if (pthread_setspecific(tcache_key, tc) != 0) {
        (void)zk_os_unmap(tc, sizeof *tc);
        return NULL;
    }
    pthread_mutex_lock(&registry_lock);
    tc->prev = NULL;
    tc->next = registry;
    if (registry != NULL)
        registry->prev = tc;
    registry = tc;
    pthread_mutex_unlock(&registry_lock);
    return tc;
}

static pthread_once_t key_once = PTHREAD_ONCE_INIT;

/* The key whose destructor drains an exiting thread's cache, made once by
 * the first thread that wants a cache. */
static void make_key(void)
{
    tcache_key_ok = pthread_key_create(&tcache_key, tcache_close) == 0;
}

/* This thread's cache, or NULL where it has none (exiting, or no memory for
 * one): the pool alone then serves it, still correctly. */
zk_tcache *zk_tcache_mine(void)
{
    if (my_tcache != NULL || my_tcache_closed)
        return my_tcache;
    pthread_once(&key_once, make_key);
    if (!tcache_key_ok)
        return NULL;
    my_tcache = tcache_open();
    my_tcache_closed = my_tcache == NULL;
    return my_tcache;
}

zk_traffic_counts *zk_tcache_traffic_mine(void)
{
    return my_tcache != NULL ? &my_tcache->traffic : NULL;
}

/* begun is read with a read-modify-write: the latest count, and no load
 * of the caller's walk before it moves after it. */
void zk_tcache_traffic_sums(uint64_t *begun, uint64_t *ended, bool read_begun)
{
    for (zk_tcache *tc = registry; tc != NULL; tc = tc->next) {
        if (read_begun)
            *begun += atomic_fetch_add_explicit(&tc->traffic.begun, 0, memory_order_seq_cst);
        else
            *ended += atomic_load_explicit(&tc->traffic.ended, memory_order_acquire);
    }
}

void zk_tcache_traffic_balance(void)
{
    for (zk_tcache *tc = registry; tc != NULL; tc = tc->next)
        atomic_store(&tc->traffic.ended, atomic_load(&tc->traffic.begun));
}

void zk_tcache_drain_older(uint64_t cutoff)
{
    pthread_mutex_lock(&registry_lock);
    zk_pool_lock();
    for (zk_tcache *tc = registry; tc != NULL; tc = tc->next)
        for (int cls = 0; cls < ZK_NCLASSES; cls++)
            for (int i = 0; i < TCACHE_SLOTS; i++) {
                zk_region *r = atomic_load_explicit(&tc->slots[cls][i], memory_order_acquire);
                /* The owner may swap the slot meanwhile: whatever the
                 * exchange takes is an idle region all the same. */
                if (r != NULL && r->idle_ns < cutoff && (r = take_slot(tc, cls, i)) != NULL)
                    zk_pool_link(r);
            }
    zk_pool_unlock();
    pthread_mutex_unlock(&registry_lock);
}

void zk_tcache_drain_all(void)
{
    pthread_mutex_lock(&registry_lock);
    zk_pool_lock();
    for (zk_tcache *tc = registry; tc != NULL; tc = tc->next)
        drain_locked(tc);
    zk_pool_unlock();
    pthread_mutex_unlock(&registry_lock);
}

/* Before mapping anew, look in the other threads' caches: a region freed by
 * one thread must serve a request of another (producer/consumer threads,
 * a thread that has just exited and whose cache is not drained yet).  The
 * pool is checked again under registry_lock, which a draining thread holds,
 * so a region moving from a cache to the pool is seen in one place or the
 * other.  Only on the slow path: it costs a scan of every thread's slots. */
zk_region *zk_tcache_take_anywhere(zk_tcache *mine, int cls)
{
    pthread_mutex_lock(&registry_lock);
    zk_region *r = zk_pool_pop(cls);
    for (zk_tcache *tc = registry; tc != NULL && r == NULL; tc = tc->next)
        if (tc != mine)
            r = zk_tcache_pop(tc, cls);
    pthread_mutex_unlock(&registry_lock);
    return r;
}

const char *zk_tcache_check(const char *(*check_idle)(zk_region *r))
{
    const char *err = NULL;
    for (zk_tcache *tc = registry; tc != NULL && err == NULL; tc = tc->next)
        for (int cls = 0; cls < ZK_NCLASSES && err == NULL; cls++)
            for (int i = 0; i < TCACHE_SLOTS && err == NULL; i++) {
                zk_region *r = atomic_load_explicit(&tc->slots[cls][i], memory_order_acquire);
                if (r != NULL && (err = check_idle(r)) == NULL && r->cls != cls)
                    err = "a thread cache holds a region in the wrong class";
            }
    return err;
}

/* ---- fork ------------------------------------------------------------------ */

void zk_tcache_lock_for_fork(void) { pthread_mutex_lock(&registry_lock); }
void zk_tcache_unlock_after_fork(void) { pthread_mutex_unlock(&registry_lock); }

/* In the child only the forking thread lives on: the other threads' caches
 * would never be drained by their exit, so their regions go to the pool now.
 * The survivor's own regions are marked (idle, in no pool list) for the
 * census that follows. */
void zk_tcache_fork_child(void)
{
    zk_tcache *tc = registry;
    while (tc != NULL) {
        zk_tcache *next = tc->next;
        if (tc != my_tcache) {
            drain_locked(tc);
            registry_unlink(tc);
            (void)zk_os_unmap(tc, sizeof *tc);
        }
        tc = next;
    }
    if (my_tcache == NULL)
        return;
    for (int cls = 0; cls < ZK_NCLASSES; cls++)
        for (int i = 0; i < TCACHE_SLOTS; i++) {
            zk_region *r = atomic_load_explicit(&my_tcache->slots[cls][i], memory_order_relaxed);
            if (r != NULL)
                r->flags |= ZK_RF_MARK;
        }
}
