/*
 * Stress test of what the core may touch: np.zeros-style callocs that
 * discard (forced by lazy_zero_bytes, or by pinned costs that make the
 * adaptive policy sample), np.empty-style allocs (huge pages restored),
 * reallocs (mremap growth), gathers, cross-thread frees, and maintenance
 * (soften, release, trim, cap changes, decay) racing them, while "victim"
 * threads keep memory of their own (anonymous maps and thread stacks)
 * filled with a pattern and check that nobody wrote it.  Any madvise,
 * memset or MAP_FIXED of the core that reaches an address it gave back (or
 * never held) lands on such mappings: the kernel reuses addresses at once.
 * It caught page moves that left a hole in a segment and re-mapped it with
 * MAP_FIXED over another thread's new mapping (zk_os_move_keep).  Run by
 * tests/test_core_c.py.
 *
 *   usage: stress_discard seconds threads mode(lazy|sample|memset) [decay_ms]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "zkalloc.h"
#include "zk_internal.h"
#include "test_threads.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static _Atomic int stop;
static _Atomic int failures;
static int nthreads = 4;

#define FAIL(...)                                         \
    do {                                                  \
        atomic_fetch_add(&failures, 1);                   \
        fprintf(stderr, __VA_ARGS__);                     \
    } while (0)

static void *fb_malloc(void *ctx, size_t n) { (void)ctx; return malloc(n); }
static void *fb_calloc(void *ctx, size_t a, size_t b) { (void)ctx; return calloc(a, b); }
static void *fb_realloc(void *ctx, void *p, size_t n) { (void)ctx; return realloc(p, n); }
static void fb_free(void *ctx, void *p, size_t n) { (void)ctx; (void)n; free(p); }

static void *route(void) { return &zk_route_cache; }

/* A block is stamped at a few places (first, last and middle page: so a
 * sampled class looks sparse). */
static void stamp(block *b)
{
    unsigned char *p = b->p;
    size_t n = b->size < 4096 ? b->size : 4096;
    memset(p, b->v, n);
    memset(p + b->size - n, b->v, n);
    memset(p + (b->size / 2 & ~(size_t)4095), b->v, n < b->size - (b->size / 2 & ~(size_t)4095) ? n : 1);
}

static int stamped(const block *b)
{
    const unsigned char *p = b->p;
    size_t n = b->size < 4096 ? b->size : 4096;
    for (size_t i = 0; i < n; i++)
        if (p[i] != b->v || p[b->size - n + i] != b->v)
            return 0;
    return p[b->size / 2 & ~(size_t)4095] == b->v;
}

static int zero_sparse(const unsigned char *p, size_t size)
{
    for (size_t i = 0; i < size; i += 4096 * 7 + 13)
        if (p[i] != 0)
            return 0;
    return p[0] == 0 && p[size - 1] == 0;
}

static size_t pick_size(unsigned *s)
{
    unsigned r = next_rand(s) % 100;
    if (r < 25)
        return 4096 + next_rand(s) % (252 * KiB);            /* below the adaptive floor, shared segments */
    if (r < 70)
        return 256 * KiB + next_rand(s) % (2 * MiB);         /* sampled classes, shared segments */
    if (r < 95)
        return 2 * MiB + next_rand(s) % (6 * MiB);           /* own segments: NOHUGEPAGE / HUGEPAGE advice */
    return 8 * MiB + next_rand(s) % (24 * MiB);
}

static void drop(block b)
{
    if (!stamped(&b))
        FAIL("block %p (%zu bytes) lost its stamp %#x\n", b.p, b.size, b.v);
    zk_h_free(route(), b.p, b.size);
}

static void *worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    unsigned seed = 0x9e3779b9u * (unsigned)(me + 1) ^ (unsigned)time(NULL);
    block held[8];
    int n = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        block b;
        while (n < 8 && take(me, &b))
            held[n++] = b;
        unsigned r = next_rand(&seed) % 100;
        if (n < 6 && r < 55) {
            size_t size = pick_size(&seed);
            int zeroed = r < 40;
            unsigned char *p = zeroed ? zk_h_calloc(route(), 1, size) : zk_h_malloc(route(), size);
            if (p == NULL)
                continue;
            if (zeroed && !zero_sparse(p, size))
                FAIL("calloc %p (%zu bytes) is not zero\n", (void *)p, size);
            held[n++] = (block){p, size, (unsigned char)(1 + next_rand(&seed) % 255)};
            stamp(&held[n - 1]);
        } else if (n > 0 && r < 65) {
            int k = (int)(next_rand(&seed) % (unsigned)n);
            block old = held[k];
            if (!stamped(&old))
                FAIL("block %p lost its stamp before realloc\n", (void *)old.p);
            size_t size = pick_size(&seed);
            unsigned char *p = zk_h_realloc(route(), old.p, size);
            if (p == NULL) {
                held[k] = held[--n];
                zk_h_free(route(), old.p, old.size);
                continue;
            }
            if (p[0] != old.v)
                FAIL("realloc %p -> %p lost the head\n", (void *)old.p, (void *)p);
            held[k] = (block){p, size, (unsigned char)(1 + next_rand(&seed) % 255)};
            stamp(&held[k]);
        } else if (n > 0 && r < 82) {
            int k = (int)(next_rand(&seed) % (unsigned)n);
            if (post((int)(next_rand(&seed) % (unsigned)nthreads), held[k]))
                held[k] = held[--n];
        } else if (n > 0) {
            int k = (int)(next_rand(&seed) % (unsigned)n);
            drop(held[k]);
            held[k] = held[--n];
        }
    }
    while (n > 0)
        drop(held[--n]);
    return NULL;
}

static void *maintenance(void *arg)
{
    (void)arg;
    unsigned seed = 12345u ^ (unsigned)time(NULL);
    static const uint64_t caps[] = {0, 8 * MiB, 64 * MiB, 512 * MiB};
    static const uint64_t tcaps[] = {0, 4 * MiB, 256 * MiB};
    while (!atomic_load(&stop)) {
        switch (next_rand(&seed) % 7) {
        case 0: zk_cache_soften(); break;
        case 1: zk_cache_release(); break;
        case 2: zk_cache_trim(); break;
        case 3:   /* zk_option_set only stores: the caller applies, as zkalloc_np's settings do */
            zk_option_set(ZK_OPT_CACHE_BYTES, caps[next_rand(&seed) % 4]);
            zk_option_apply(ZK_OPT_CACHE_BYTES);
            break;
        case 4:
            zk_option_set(ZK_OPT_THREAD_CACHE_BYTES, tcaps[next_rand(&seed) % 3]);
            zk_option_apply(ZK_OPT_THREAD_CACHE_BYTES);
            break;
        case 5: zk_cache_trim_to(next_rand(&seed) % (32 * MiB)); break;
        default: (void)zk_cache_reserve(pick_size(&seed), 2); break;
        }
        usleep(200 + next_rand(&seed) % 800);
    }
    return NULL;
}

/* ---- victims: memory of their own that nobody else may write ------------ */

#define PATTERN 0xa5

static void fill(unsigned char *p, size_t bytes)
{
    for (size_t off = 0; off < bytes; off += 4096)
        memset(p + off, PATTERN, 64);
}

static size_t check(const unsigned char *p, size_t bytes)
{
    for (size_t off = 0; off < bytes; off += 4096)
        for (size_t i = 0; i < 64; i++)
            if (p[off + i] != PATTERN)
                return off + i;
    return SIZE_MAX;
}

static void *victim_maps(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg ^ (unsigned)time(NULL);
    while (!atomic_load(&stop)) {
        size_t bytes = (1 + next_rand(&seed) % 2048) * 4096;   /* up to 8 MiB */
        unsigned char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            continue;
        fill(p, bytes);
        for (int round = 0; round < 3; round++) {
            usleep(next_rand(&seed) % 2000);
            size_t bad = check(p, bytes);
            if (bad != SIZE_MAX) {
                FAIL("victim map [%p, %p): byte %#zx is %#x, not the pattern (core entry there: %p)\n",
                     (void *)p, (void *)(p + bytes), bad, p[bad], (void *)zk_pagemap_get(p + (bad & ~(size_t)4095)));
                break;
            }
        }
        munmap(p, bytes);
    }
    return NULL;
}

static void *stack_victim(void *arg)
{
    size_t bytes = (size_t)(uintptr_t)arg;
    unsigned char *buf = alloca(bytes);
    fill(buf, bytes);
    usleep(500);
    size_t bad = check(buf, bytes);
    if (bad != SIZE_MAX)
        FAIL("victim stack buffer [%p, +%zu): byte %#zx is %#x\n", (void *)buf, bytes, bad, buf[bad]);
    return NULL;
}

static void *victim_threads(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg ^ (unsigned)time(NULL);
    while (!atomic_load(&stop)) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        /* odd sizes so glibc's stack cache rarely fits: fresh mmaps */
        size_t stack = (256 + next_rand(&seed) % 2000) * 4096;
        pthread_attr_setstacksize(&attr, stack);
        pthread_t t;
        if (pthread_create(&t, &attr, stack_victim, (void *)(uintptr_t)(stack / 4)) == 0)
            pthread_join(t, NULL);
        pthread_attr_destroy(&attr);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 3;
    nthreads = argc > 2 ? atoi(argv[2]) : 4;
    const char *mode = argc > 3 ? argv[3] : "lazy";
    long decay = argc > 4 ? atol(argv[4]) : 0;
    if (nthreads < 1 || nthreads > 64)
        return 2;
    zk_fallback fb = {NULL, fb_malloc, fb_calloc, fb_realloc, fb_free};
    zk_handler_set_fallback(&fb);
    zk_option_set(ZK_OPT_MIN_BYTES, 4096);
    zk_option_set(ZK_OPT_CACHE_BYTES, 256 * MiB);
    if (strcmp(mode, "lazy") == 0)
        zk_option_set(ZK_OPT_LAZY_ZERO_BYTES, 4096);
    else if (strcmp(mode, "sample") == 0)
        zk_zero_pin_costs(1000000000u, 0, 0);   /* a discard always pays: every calloc >= 256 KiB samples */
    zk_option_set(ZK_OPT_DECAY_MS, (uint64_t)decay);

    open_mailboxes(nthreads);
    pthread_t w[64], m, v1, v2;
    for (int i = 0; i < nthreads; i++)
        pthread_create(&w[i], NULL, worker, (void *)(intptr_t)i);
    pthread_create(&m, NULL, maintenance, NULL);
    pthread_create(&v1, NULL, victim_maps, (void *)1);
    pthread_create(&v2, NULL, victim_threads, (void *)2);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    for (int i = 0; i < nthreads; i++)
        pthread_join(w[i], NULL);
    pthread_join(m, NULL);
    pthread_join(v1, NULL);
    pthread_join(v2, NULL);
    block b;
    for (int i = 0; i < nthreads; i++)
        while (take(i, &b))
            drop(b);
    close_mailboxes(nthreads);
    const char *what = NULL;
    if (zk_check(&what) != ZK_OK)
        FAIL("zk_check: %s\n", what);
    zk_stats_snapshot s;
    zk_stats_read(&s);
    printf("%s: calloc %llu fresh %llu discard %llu memset; %llu hits %llu misses; %llu gathered (%llu pieces), "
           "%llu carved, %llu realloc by mremap; %d failure(s)\n", mode,
           (unsigned long long)s.calloc_fresh, (unsigned long long)s.calloc_discard,
           (unsigned long long)s.calloc_memset, (unsigned long long)s.hits, (unsigned long long)s.misses,
           (unsigned long long)s.gathered, (unsigned long long)s.gathered_pieces, (unsigned long long)s.carved,
           (unsigned long long)s.realloc_remap, atomic_load(&failures));
    return atomic_load(&failures) == 0 ? 0 : 1;
}
