/*
 * A race stress for ThreadSanitizer: every route a request can take and
 * every maintenance call, at once, from threads that come and go.
 *
 *  - short-lived workers (each does a few hundred requests and exits, so
 *    thread caches are opened and closed all the time) allocate, calloc,
 *    realloc and free through numpy's route (zk_h_*), through phases'
 *    routes (ZK_ROUTE_SCOPE, tracked, some with a budget) and through
 *    Python's raw domain (zk_raw_*), plain and tagged with a phase (a
 *    caller probe answers the thread's phase, as Python's answers the
 *    context's); blocks change hands between threads through a
 *    shared exchange (cross-thread frees);
 *  - a phase thread opens tracked phases and closes them under traffic;
 *  - the decay thread runs (decay_ms small), and the process is tracked
 *    (zk_track_process: peak snapshots of every region in use);
 *  - a maintenance thread calls release, soften, trim, trim_to, reserve,
 *    check (which may answer busy, never corrupt), check_maps, stats,
 *    idle_resident, the phases' stats and live lists, and reads every peak
 *    snapshot, and changes the cap and decay_ms.
 * The probe answers no site: tracked requests record site 0.
 *
 * Built with -fsanitize=thread by tools/sanitize.sh (c-tsan-stress), which
 * .ci/run runs; any TSan report fails it.  A plain build also runs in
 * tests/test_core_c.py (its checks: stamps, zeroed callocs, zk_check).
 *
 *   usage: stress_tsan seconds workers
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zkalloc.h"
#include "zk_internal.h"   /* zk_cache_trim */
#include "test_threads.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define PHASES 4          /* phases open at once */
#define EXCHANGE 64       /* blocks waiting for another thread to free them */
#define OPS_PER_THREAD 300

static _Atomic int stop;
static _Atomic int failures;
static _Atomic uint64_t requests, checks_exact, checks_busy;

#define FAIL(...)                                         \
    do {                                                  \
        atomic_fetch_add(&failures, 1);                   \
        fprintf(stderr, __VA_ARGS__);                     \
    } while (0)

/* ---- what requests fall back to: libc ------------------------------------- */

static void *fb_malloc(void *ctx, size_t n) { (void)ctx; return malloc(n); }
static void *fb_calloc(void *ctx, size_t a, size_t b) { (void)ctx; return calloc(a, b); }
static void *fb_realloc(void *ctx, void *p, size_t n) { (void)ctx; return realloc(p, n); }
static void fb_free(void *ctx, void *p, size_t n) { (void)ctx; (void)n; free(p); }
static void raw_fb_free(void *ctx, void *p) { (void)ctx; free(p); }

/* ---- phases: a slot per open phase, swapped by the phase thread ----------- */

/* A phase's scope lives until every block allocated through its route is
 * freed (numpy's arrays keep the handler capsule alive the same way): users
 * counts the blocks and the workers using it, and the last one out
 * destroys a closed scope. */
typedef struct {
    zk_scope *scope;
    _Atomic int users;
    _Atomic int closed;
} phase;

static _Atomic(phase *) phases[PHASES];
static pthread_mutex_t phase_lock = PTHREAD_MUTEX_INITIALIZER;   /* taking a user */

/* The caller probe: a raw request's phase is the one its thread set
 * (pinned for the request, as the core expects of a probe); no site. */
static _Thread_local zk_scope *raw_phase;

static zk_scope *probe_raw_scope(void)
{
    if (raw_phase != NULL)
        zk_scope_pin(raw_phase);
    return raw_phase;
}

static const zk_caller_probe probe = {NULL, probe_raw_scope};

static phase *phase_open(int i)
{
    phase *ph = calloc(1, sizeof *ph);
    if (ph == NULL || (ph->scope = zk_scope_create()) == NULL) {
        free(ph);
        return NULL;
    }
    zk_scope_configure(ph->scope, 1, i == 0 ? 24 * MiB : 0);   /* tracked; one with a budget */
    atomic_init(&ph->users, 1);   /* the slot's */
    return ph;
}

static void phase_put(phase *ph)
{
    if (atomic_fetch_sub(&ph->users, 1) == 1) {
        zk_scope_destroy(ph->scope);
        free(ph);
    }
}

static phase *phase_get(int i)
{
    pthread_mutex_lock(&phase_lock);
    phase *ph = atomic_load(&phases[i]);
    if (ph != NULL)
        atomic_fetch_add(&ph->users, 1);
    pthread_mutex_unlock(&phase_lock);
    return ph;
}

static void replace_phase(int i)
{
    phase *fresh = phase_open(i);
    pthread_mutex_lock(&phase_lock);
    phase *old = atomic_exchange(&phases[i], fresh);
    pthread_mutex_unlock(&phase_lock);
    if (old != NULL) {
        zk_scope_close(old->scope);   /* while its blocks are still live elsewhere */
        phase_put(old);
    }
}

static void *phase_thread(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg ^ (unsigned)time(NULL);
    while (!atomic_load(&stop)) {
        replace_phase((int)(next_rand(&seed) % PHASES));
        usleep(2000 + next_rand(&seed) % 8000);
    }
    return NULL;
}

/* ---- blocks ---------------------------------------------------------------- */

enum { VIA_NUMPY, VIA_PHASE, VIA_RAW, VIA_RAW_PHASE };

typedef struct {
    unsigned char *p;
    size_t size;
    unsigned char v;
    int via;
    phase *ph;    /* VIA_PHASE: the route it came through (a user of ph) */
} held_block;

static _Atomic(held_block *) exchange[EXCHANGE];

static size_t pick_size(unsigned *s)
{
    unsigned r = next_rand(s) % 100;
    if (r < 60)
        return 4 * KiB + next_rand(s) % (124 * KiB);
    if (r < 95)
        return 128 * KiB + next_rand(s) % (2 * MiB);
    return 2 * MiB + next_rand(s) % (6 * MiB);   /* own segments; reallocs grow by mremap */
}

static void stamp(held_block *b)
{
    b->p[0] = b->v;
    b->p[b->size - 1] = b->v;
}

static void release_block(held_block *b)
{
    if (b->p[0] != b->v || b->p[b->size - 1] != b->v)
        FAIL("block %p (%zu bytes) lost its stamp\n", (void *)b->p, b->size);
    switch (b->via) {
    case VIA_NUMPY: zk_h_free(&zk_route_cache, b->p, b->size); break;
    case VIA_PHASE: zk_h_free(zk_scope_route(b->ph->scope), b->p, b->size); phase_put(b->ph); break;
    default: zk_raw_free(NULL, b->p); break;
    }
    free(b);
}

static void *alloc_via(held_block *b, bool zeroed, unsigned *seed)
{
    b->via = (int)(next_rand(seed) % 4);
    b->ph = NULL;
    if (b->via == VIA_NUMPY)
        return zeroed ? zk_h_calloc(&zk_route_cache, 1, b->size) : zk_h_malloc(&zk_route_cache, b->size);
    if (b->via == VIA_RAW)
        return zeroed ? zk_raw_calloc(NULL, 1, b->size) : zk_raw_malloc(NULL, b->size);
    phase *ph = phase_get((int)(next_rand(seed) % PHASES));
    if (ph == NULL) {
        b->via = VIA_NUMPY;
        return zk_h_malloc(&zk_route_cache, b->size);
    }
    void *p;
    if (b->via == VIA_PHASE) {
        p = zeroed ? zk_h_calloc(zk_scope_route(ph->scope), 1, b->size)
                   : zk_h_malloc(zk_scope_route(ph->scope), b->size);
        if (p != NULL) {
            b->ph = ph;   /* keeps its user */
            return p;
        }
    } else {   /* a raw request inside a phase: tagged with it, the pin held meanwhile */
        raw_phase = ph->scope;
        p = zeroed ? zk_raw_calloc(NULL, 1, b->size) : zk_raw_malloc(NULL, b->size);
        raw_phase = NULL;
    }
    phase_put(ph);
    return p;
}

static held_block *allocate(unsigned *seed)
{
    held_block *b = malloc(sizeof *b);
    if (b == NULL)
        return NULL;
    b->size = pick_size(seed);
    bool zeroed = next_rand(seed) % 3 == 0;
    b->p = alloc_via(b, zeroed, seed);
    if (b->p == NULL) {   /* a budget refused it */
        if (b->ph != NULL)
            phase_put(b->ph);
        free(b);
        return NULL;
    }
    if (zeroed && (b->p[0] != 0 || b->p[b->size / 2] != 0 || b->p[b->size - 1] != 0))
        FAIL("calloc %p (%zu bytes) is not zero\n", (void *)b->p, b->size);
    b->v = (unsigned char)(1 + next_rand(seed) % 255);
    stamp(b);
    atomic_fetch_add_explicit(&requests, 1, memory_order_relaxed);
    return b;
}

static void resize(held_block *b, unsigned *seed)
{
    size_t size = pick_size(seed);
    void *p;
    if (b->via == VIA_NUMPY)
        p = zk_h_realloc(&zk_route_cache, b->p, size);
    else if (b->via == VIA_PHASE)
        p = zk_h_realloc(zk_scope_route(b->ph->scope), b->p, size);
    else
        p = zk_raw_realloc(NULL, b->p, size);
    if (p == NULL)
        return;   /* refused: the block is as it was */
    b->p = p;
    if (b->p[0] != b->v)
        FAIL("realloc to %p lost the head\n", p);
    b->size = size;
    stamp(b);
}

/* ---- short-lived workers ----------------------------------------------------- */

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 0x9e3779b9u ^ (unsigned)time(NULL);
    held_block *held[8];
    int n = 0;
    for (int op = 0; op < OPS_PER_THREAD && !atomic_load_explicit(&stop, memory_order_relaxed); op++) {
        unsigned r = next_rand(&seed) % 100;
        if (n < 8 && r < 50) {
            held_block *b = allocate(&seed);
            if (b != NULL)
                held[n++] = b;
        } else if (n > 0 && r < 60) {
            resize(held[next_rand(&seed) % (unsigned)n], &seed);
        } else if (n > 0 && r < 80) {   /* swap with the exchange: another thread frees it */
            int k = (int)(next_rand(&seed) % (unsigned)n);
            held_block *got = atomic_exchange(&exchange[next_rand(&seed) % EXCHANGE], held[k]);
            held[k] = held[--n];
            if (got != NULL)
                release_block(got);
        } else if (n > 0) {
            int k = (int)(next_rand(&seed) % (unsigned)n);
            release_block(held[k]);
            held[k] = held[--n];
        }
    }
    while (n > 0)
        release_block(held[--n]);
    return NULL;
}

/* Keeps `workers` short-lived threads going: each exits after its requests
 * and a new one takes its place. */
static void *spawner(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&stop)) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, (void *)(uintptr_t)id++) == 0)
            pthread_join(t, NULL);
    }
    return NULL;
}

/* ---- maintenance: every call a user (or the Python layer) makes ------------- */

static void read_peak(zk_peak *p)
{
    zk_live_entry entries[64];
    zk_peak_info info;
    size_t n = zk_peak_read(p, entries, 64, &info);
    for (size_t i = 0; i < n && i < 64; i++) {
        if (entries[i].site != 0)
            FAIL("a site was recorded with no site source: %u\n", entries[i].site);
        if (entries[i].origin < ZK_ORIGIN_UNKNOWN || entries[i].origin > ZK_ORIGIN_RAW)
            FAIL("an entry names no requester: %d\n", entries[i].origin);
    }
}

static void read_phase(unsigned *seed)
{
    phase *ph = phase_get((int)(next_rand(seed) % PHASES));
    if (ph == NULL)
        return;
    zk_scope_stats st;
    zk_scope_stats_read(ph->scope, &st);
    uintptr_t addresses[16];
    uint64_t bytes[16];
    (void)zk_scope_live(ph->scope, addresses, bytes, 16);
    read_peak(zk_scope_peak(ph->scope));
    read_peak(zk_scope_refusal(ph->scope));
    phase_put(ph);
}

static void check_now(void)
{
    const char *what = NULL;
    int rc = zk_check(&what);
    if (rc == ZK_OK)
        atomic_fetch_add(&checks_exact, 1);
    else if (rc == ZK_EBUSY)
        atomic_fetch_add(&checks_busy, 1);
    else
        FAIL("zk_check under traffic: %s\n", what != NULL ? what : "?");
    if (zk_heap_check_maps(&what) == ZK_ECORRUPT)
        FAIL("zk_heap_check_maps under traffic: %s\n", what != NULL ? what : "?");
}

static void *maintenance(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg ^ (unsigned)time(NULL);
    static const uint64_t caps[] = {8 * MiB, 64 * MiB, 256 * MiB};
    static const uint64_t decays[] = {2, 20, 200};
    zk_stats_snapshot s;
    while (!atomic_load(&stop)) {
        switch (next_rand(&seed) % 12) {
        case 0: (void)zk_cache_release(); break;
        case 1: (void)zk_cache_soften(); break;
        case 2: zk_cache_trim(); break;
        case 3: (void)zk_cache_trim_to(next_rand(&seed) % (32 * MiB)); break;
        case 4: (void)zk_cache_reserve(pick_size(&seed), 2); break;
        case 5: check_now(); break;
        case 6: zk_stats_read(&s); break;
        case 7: (void)zk_cache_idle_resident(); break;
        case 8: read_phase(&seed); break;
        case 9: read_peak(zk_process_peak()); break;
        case 10:   /* stored, then applied (a lower cap evicts), as configure() does */
            zk_option_set(ZK_OPT_CACHE_BYTES, caps[next_rand(&seed) % 3]);
            zk_option_apply(ZK_OPT_CACHE_BYTES);
            break;
        default: zk_option_set(ZK_OPT_DECAY_MS, decays[next_rand(&seed) % 3]); break;
        }
        usleep(500 + next_rand(&seed) % 1500);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    int workers = argc > 2 ? atoi(argv[2]) : 4;
    if (workers < 1 || workers > 64 || !(seconds > 0))
        return 2;
    zk_fallback fb = {NULL, fb_malloc, fb_calloc, fb_realloc, fb_free};
    zk_handler_set_fallback(&fb);
    zk_set_caller_probe(&probe);
    zk_raw_allocator libc_raw = {NULL, fb_malloc, fb_calloc, fb_realloc, raw_fb_free}, hook;
    if (zk_raw_wrap(&libc_raw, &hook) != ZK_OK)
        return 2;
    zk_raw_set_active(1);
    zk_option_set(ZK_OPT_MIN_BYTES, 4096);
    zk_option_set(ZK_OPT_CACHE_BYTES, 64 * MiB);
    zk_option_set(ZK_OPT_DECAY_MS, 20);   /* the decay thread runs */
    zk_track_process(1);
    for (int i = 0; i < PHASES; i++)
        replace_phase(i);

    pthread_t spawners[64], ph, m;
    for (int i = 0; i < workers; i++)
        pthread_create(&spawners[i], NULL, spawner, (void *)(uintptr_t)(i * 100000));
    pthread_create(&ph, NULL, phase_thread, (void *)1);
    pthread_create(&m, NULL, maintenance, (void *)2);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    for (int i = 0; i < workers; i++)
        pthread_join(spawners[i], NULL);
    pthread_join(ph, NULL);
    pthread_join(m, NULL);
    for (int i = 0; i < EXCHANGE; i++) {
        held_block *b = atomic_exchange(&exchange[i], NULL);
        if (b != NULL)
            release_block(b);
    }
    for (int i = 0; i < PHASES; i++) {
        phase *old = atomic_exchange(&phases[i], NULL);
        if (old != NULL) {
            zk_scope_close(old->scope);
            phase_put(old);
        }
    }
    zk_option_set(ZK_OPT_DECAY_MS, 0);
    const char *what = NULL;
    if (zk_check(&what) != ZK_OK)   /* no traffic now: exact */
        FAIL("zk_check at rest: %s\n", what != NULL ? what : "busy");
    zk_stats_snapshot s;
    zk_stats_read(&s);
    if (s.bytes_in_use != 0)
        FAIL("%llu bytes still in use after every block was freed\n", (unsigned long long)s.bytes_in_use);
    printf("stress_tsan: %llu requests (%llu raw), %llu hits, %llu misses, %llu decay passes; "
           "check under traffic: %llu exact, %llu busy; %d failure(s)\n",
           (unsigned long long)atomic_load(&requests), (unsigned long long)s.raw_allocs,
           (unsigned long long)s.hits, (unsigned long long)s.misses, (unsigned long long)s.decay_passes,
           (unsigned long long)atomic_load(&checks_exact), (unsigned long long)atomic_load(&checks_busy),
           atomic_load(&failures));
    return atomic_load(&failures) == 0 ? 0 : 1;
}
