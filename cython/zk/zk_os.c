/*
 * OS layer: every mmap, munmap, madvise, mremap, mprotect and mlock the core
 * makes (regions, secret arrays, thread caches, descriptor slabs, ownership
 * map leaves), and the one reader of /proc/self/maps.
 *
 * Errors come back as NULL or a nonzero return; errno is left to the caller
 * to ignore.  Nothing here locks.  Callers hold the heap lock across the
 * region syscalls (zk_heap.c says why), never across a read of
 * /proc/self/maps: the check reads it unlocked, and a failed move's target
 * is looked up once the heap lock is released (zk_heap_unlock).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "zk_internal.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000   /* Linux 4.17 */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23   /* Linux 5.14; older kernels answer EINVAL */
#endif

static _Atomic size_t page_size_cached;

size_t zk_os_page_size(void)
{
    size_t p = atomic_load_explicit(&page_size_cached, memory_order_relaxed);
    if (p == 0) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (size_t)v : 4096;
        /* every thread stores the same value */
        atomic_store_explicit(&page_size_cached, p, memory_order_relaxed);
    }
    return p;
}

uint64_t zk_os_physical_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES);
    return pages > 0 ? (uint64_t)pages * zk_os_page_size() : 0;
}

/* Map bytes at an address aligned to align (a power of two >= the page
 * size).  Over-maps by align and unmaps the slack on both sides, so the
 * result is one exact mapping. */
static void *map_aligned(size_t bytes, size_t align, int prot, int flags)
{
    size_t page = zk_os_page_size();
    if (align <= page) {
        void *p = mmap(NULL, bytes, prot, flags, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    if (bytes > SIZE_MAX - align)
        return NULL;
    size_t span = bytes + align;
    char *raw = mmap(NULL, span, prot, flags, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    char *start = (char *)zk_round_up((uintptr_t)raw, align);
    size_t head = (size_t)(start - raw);
    size_t tail = span - head - bytes;
    /* Trimming the ends of a new area never splits it, so these cannot
     * fail for the map count. */
    if (head)
        (void)munmap(raw, head);
    if (tail)
        (void)munmap(start + bytes, tail);
    return start;
}

void *zk_os_map(size_t bytes, size_t align)
{
    return map_aligned(bytes, align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
}

/* Address space only: PROT_NONE and MAP_NORESERVE cost no memory and no
 * commit charge.  Used as the target of zk_os_move(). */
void *zk_os_reserve(size_t bytes, size_t align)
{
    return map_aligned(bytes, align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
}

/* Memory for the core's own bookkeeping (thread caches, descriptor slabs):
 * read-write, zeroed, committed. */
void *zk_os_map_zeroed(size_t bytes)
{
    return map_aligned(bytes, 0, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
}

/* The same, not charged against the commit limit: an ownership map leaf,
 * mostly never touched. */
void *zk_os_map_sparse(size_t bytes)
{
    return map_aligned(bytes, 0, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
}

static _Atomic unsigned unmaps_to_fail;

void zk_os_fail_unmaps(unsigned n)
{
    atomic_store_explicit(&unmaps_to_fail, n, memory_order_relaxed);
}

/* munmap fails with ENOMEM when it would split an area and the process is at
 * vm.max_map_count: the range then stays mapped, and the caller must keep
 * track of it (or leave it, for the small mappings that are not regions).
 * Every unmap of the core comes here, so zk_os_fail_unmaps reaches them all;
 * a failure is counted in unmap_failures. */
int zk_os_unmap(void *p, size_t bytes)
{
    unsigned left = atomic_load_explicit(&unmaps_to_fail, memory_order_relaxed);
    while (left > 0) {
        if (atomic_compare_exchange_weak_explicit(&unmaps_to_fail, &left, left - 1, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            zk_count(&zk_stats.unmap_failures, 1);
            errno = ENOMEM;
            return -1;
        }
    }
    if (munmap(p, bytes) == 0)
        return 0;
    zk_count(&zk_stats.unmap_failures, 1);
    return -1;
}

/* ---- secret arrays' mappings (zk_secret.c) ----------------------------------- */

/* map_bytes of PROT_NONE with the pages between the first and the last
 * opened read-write: guard pages around the data.  NULL when refused. */
void *zk_os_map_guarded(size_t map_bytes)
{
    size_t page = zk_os_page_size();
    void *map = mmap(NULL, map_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    if (mprotect((char *)map + page, map_bytes - 2 * page, PROT_READ | PROT_WRITE) != 0) {
        (void)zk_os_unmap(map, map_bytes);
        return NULL;
    }
    return map;
}

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18   /* Linux 4.14; older headers lack the name */
#endif

int zk_os_dont_dump(void *p, size_t bytes) { return madvise(p, bytes, MADV_DONTDUMP); }
int zk_os_wipe_on_fork(void *p, size_t bytes) { return madvise(p, bytes, MADV_WIPEONFORK); }
int zk_os_lock(void *p, size_t bytes) { return mlock(p, bytes); }
void zk_os_unlock(void *p, size_t bytes) { (void)munlock(p, bytes); }

/* Fresh memory over a range the core holds mapped (the rest of a
 * reservation): MAP_FIXED replaces whatever is there, so it is only ever
 * called on addresses mapped by us at that moment, never on a hole (any
 * thread's mmap may have taken a hole since: see zk_os_move_keep). */
int zk_os_map_fixed(void *p, size_t bytes)
{
    void *q = mmap(p, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    return q == p ? 0 : -1;
}

/* vm.max_map_count, or the kernel's default where it cannot be read. */
uint64_t zk_os_max_map_count(void)
{
    unsigned long long n = 0;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f != NULL) {
        if (fscanf(f, "%llu", &n) != 1)
            n = 0;
        fclose(f);
    }
    return n > 0 ? (uint64_t)n : 65530u;
}

void zk_os_advise_huge(void *p, size_t bytes)
{
#ifdef MADV_HUGEPAGE
    /* EINVAL where THP is compiled out: the advice is an optimisation only. */
    (void)madvise(p, bytes, MADV_HUGEPAGE);
#else
    (void)p; (void)bytes;
#endif
}

/* Back the region with 4 KiB pages from now on: after a discard, a sparse
 * user then faults in 4 KiB per touch instead of a zeroed 2 MiB page. */
void zk_os_advise_small_pages(void *p, size_t bytes)
{
#ifdef MADV_NOHUGEPAGE
    (void)madvise(p, bytes, MADV_NOHUGEPAGE);
#else
    (void)p; (void)bytes;
#endif
}

/* How many of the pages of [p, p+bytes) are resident; SIZE_MAX on error.
 * mincore reports per 4 KiB page, huge pages included. */
size_t zk_os_resident_pages(void *p, size_t bytes)
{
    enum { BATCH = 4096 };   /* pages per call: 16 MiB */
    unsigned char vec[BATCH];
    size_t page = zk_os_page_size(), pages = bytes / page, resident = 0;
    for (size_t done = 0; done < pages; done += BATCH) {
        size_t n = pages - done < BATCH ? pages - done : BATCH;
        if (mincore((char *)p + done * page, n * page, vec) != 0)
            return SIZE_MAX;
        for (size_t i = 0; i < n; i++)
            resident += vec[i] & 1u;
    }
    return resident;
}

/* Drop the pages: the next touch faults in a zero page. */
int zk_os_discard(void *p, size_t bytes)
{
    return madvise(p, bytes, MADV_DONTNEED);
}

/* Let the kernel reclaim the pages under pressure; until it does they stay
 * mapped and warm.  Contents become undefined (zero or old). */
int zk_os_soften(void *p, size_t bytes)
{
#ifdef MADV_FREE
    if (madvise(p, bytes, MADV_FREE) == 0)
        return 0;
#endif
    return madvise(p, bytes, MADV_DONTNEED);   /* kernels before 4.5 */
}

/* Fault every page in now, so a hot loop later does not. */
int zk_os_populate(void *p, size_t bytes)
{
    if (madvise(p, bytes, MADV_POPULATE_WRITE) == 0)
        return 0;
    /* Older kernel: write one byte per page.  Reading would map the shared
     * zero page and fault again on the first write. */
    size_t page = zk_os_page_size();
    volatile char *c = p;
    for (size_t off = 0; off < bytes; off += page)
        c[off] = c[off];
    return -1;
}

/* Tests: called right after each move, with the range the pages left (the
 * point where another thread's mmap may run). */
static void (*move_hook)(void *old, size_t bytes);

void zk_os_set_move_hook(void (*hook)(void *old, size_t bytes))
{
    move_hook = hook;
}

static void after_move(void *old, size_t bytes)
{
    if (move_hook != NULL)
        move_hook(old, bytes);
}

/* Move a mapping onto target (a reservation of new_bytes made by
 * zk_os_reserve) with mremap: page tables move, no byte is copied, and the
 * grown tail reads as zeros.  0 on success; on failure nothing moved.
 * Only for a whole segment: the range the pages leave is unmapped, and any
 * thread's mmap may take it at once (see zk_os_move_keep). */
int zk_os_move(void *old, size_t old_bytes, void *target, size_t new_bytes)
{
    void *p = mremap(old, old_bytes, new_bytes, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    if (p == MAP_FAILED)
        return -1;
    after_move(old, old_bytes);
    return 0;
}

/* Move the pages of [old, old+bytes) onto target (a reservation of ours)
 * and leave [old, old+bytes) mapped, with no pages: it reads as zeros
 * (MREMAP_DONTUNMAP).  For a span in the middle of a segment: a plain move
 * left a hole there until it was mapped again with MAP_FIXED, and in
 * between any other thread's mmap could take the hole (a new thread's
 * stack, glibc's, the program's own), which that MAP_FIXED then replaced
 * with zeros: someone else's mapping wiped (the C test saw a new thread
 * crash on its zeroed stack and TLS).  0 on success; -1 with nothing moved where
 * the kernel refuses (before 5.7 it has no such flag: such spans are then
 * not moved, and their callers copy or map fresh instead). */
int zk_os_move_keep(void *old, size_t bytes, void *target)
{
    void *p = mremap(old, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, target);
    if (p == MAP_FAILED)
        return -1;
    after_move(old, bytes);
    return 0;
}

/* ---- the process's memory areas: /proc/self/maps, read in one place ---------- */

/* Calls fn on each area overlapping [lo, hi) (every area for lo = hi = 0),
 * in address order, until fn returns false; -1 when the file cannot be
 * read.  Reads it with stdio (fopen's buffer comes from libc's malloc,
 * never from the core). */
int zk_os_each_area(uintptr_t lo, uintptr_t hi, bool (*fn)(const zk_os_area *a, void *arg), void *arg)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    if (maps == NULL)
        return -1;
    char line[512];
    zk_os_area a;
    unsigned long start, end;
    char perms[8];
    while (fgets(line, sizeof line, maps) != NULL) {
        if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3)
            continue;
        if (hi != 0 && (end <= lo || start >= hi))
            continue;
        a.lo = start;
        a.hi = end;
        a.reserved = strcmp(perms, "---p") == 0;
        if (!fn(&a, arg))
            break;
    }
    fclose(maps);
    return 0;
}

typedef struct {
    uintptr_t lo, hi;
    bool found;
} reservation_query;

static bool match_reservation(const zk_os_area *a, void *arg)
{
    reservation_query *q = arg;
    q->found = a->lo == q->lo && a->hi == q->hi && a->reserved;
    return false;   /* the first area overlapping decides */
}

/* Whether /proc/self/maps shows exactly [p, p+bytes) as one PROT_NONE
 * private mapping: the reservation zk_os_reserve() made, untouched. */
static bool is_own_reservation(void *p, size_t bytes)
{
    reservation_query q = {(uintptr_t)p, (uintptr_t)p + bytes, false};
    return zk_os_each_area(q.lo, q.hi, match_reservation, &q) == 0 && q.found;
}

bool zk_os_retake_target(void *target, size_t bytes)
{
    void *again = mmap(target, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE,
                       -1, 0);
    if (again == target)
        return true;   /* it was free: ours again */
    if (again != MAP_FAILED)
        (void)zk_os_unmap(again, bytes);   /* a kernel before 4.17 took the flag as a hint */
    return false;
}

/* Reads /proc/self/maps: never under the heap lock (zk_heap_unlock). */
void zk_os_drop_own_reservation(void *p, size_t bytes)
{
    if (is_own_reservation(p, bytes))
        (void)zk_os_unmap(p, bytes);
}

/* Sleep a while (zk_check, between attempts). */
void zk_os_pause_us(unsigned us)
{
    struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000};
    (void)nanosleep(&ts, NULL);
}

/* A detached helper thread of the core (the decay thread).  All
 * signals stay blocked in it: they belong to the program's own threads.  A
 * small stack: it sleeps, locks and calls madvise, and the default 8 MiB
 * would show in the process's VmSize for as long as the thread lives.
 * 0, or an errno-style error where no thread could be started. */
int zk_os_start_thread(void *(*fn)(void *))
{
    enum { STACK_BYTES = 256 << 10 };
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);   /* the new thread inherits this mask */
    pthread_attr_t attr;
    pthread_t t;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        rc = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (rc == 0)
            rc = pthread_attr_setstacksize(&attr, STACK_BYTES);
        if (rc == 0)
            rc = pthread_create(&t, &attr, fn, NULL);
        pthread_attr_destroy(&attr);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* ==== what decay reads of the process and the machine (zk_decay.c) ========
 * Read by the decay thread only, never under a lock of the core: each is a
 * few small file reads.  No stdio (fopen allocates): open/read into a
 * stack buffer. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>

/* The process's CPU time (user + sys, all threads), nanoseconds. */
uint64_t zk_os_process_cpu_ns(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    uint64_t us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
                  (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
    return us * 1000u;
}

/* The first `cap - 1` bytes of a file, NUL-terminated; its length, or -1. */
static ssize_t read_small_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

/* The process's resident memory (/proc/self/statm), bytes; 0 where unknown. */
uint64_t zk_os_process_rss_bytes(void)
{
    char buf[128];
    if (read_small_file("/proc/self/statm", buf, sizeof buf) <= 0)
        return 0;
    char *end;
    (void)strtoull(buf, &end, 10);              /* size */
    unsigned long long pages = strtoull(end, NULL, 10);   /* resident */
    return (uint64_t)pages * zk_os_page_size();
}

/* The number after `key` in text (e.g. "MemAvailable:"), or -1. */
static long long number_after(const char *text, const char *key)
{
    const char *at = strstr(text, key);
    if (at == NULL)
        return -1;
    return strtoll(at + strlen(key), NULL, 10);
}

/* MemAvailable below 1/16 of MemTotal: the kernel is about to reclaim. */
static bool machine_short(void)
{
    char buf[4096];
    if (read_small_file("/proc/meminfo", buf, sizeof buf) <= 0)
        return false;
    long long total = number_after(buf, "MemTotal:"), avail = number_after(buf, "MemAvailable:");
    return total > 0 && avail >= 0 && avail < total / 16;
}

/* PSI: "some avg10=X.YY ..." at 10% or more (tasks stalled on memory a
 * tenth of the last 10 s). */
static bool psi_stalled(const char *path)
{
    char buf[512];
    if (read_small_file(path, buf, sizeof buf) <= 0)
        return false;
    const char *at = strstr(buf, "some avg10=");
    return at != NULL && strtol(at + strlen("some avg10="), NULL, 10) >= 10;
}

/* This process's cgroup v2 directory, "" when there is none. */
static char cgroup_dir[512];
static pthread_once_t cgroup_once = PTHREAD_ONCE_INIT;

static void find_cgroup(void)
{
    char buf[1024];
    if (read_small_file("/proc/self/cgroup", buf, sizeof buf) <= 0)
        return;
    const char *v2 = strstr(buf, "0::");
    if (v2 == NULL || (v2 != buf && v2[-1] != '\n'))
        return;
    v2 += 3;
    size_t len = strcspn(v2, "\n");
    if (len == 0 || len + sizeof "/sys/fs/cgroup" >= sizeof cgroup_dir)
        return;
    snprintf(cgroup_dir, sizeof cgroup_dir, "/sys/fs/cgroup%.*s", (int)len, v2);
}

/* memory.events' high + max counts: the cgroup hit its limits this often. */
static uint64_t cgroup_limit_events(void)
{
    char path[600], buf[1024];
    snprintf(path, sizeof path, "%s/memory.events", cgroup_dir);
    if (read_small_file(path, buf, sizeof buf) <= 0)
        return 0;
    long long high = number_after(buf, "\nhigh "), max = number_after(buf, "\nmax ");
    return (uint64_t)(high > 0 ? high : 0) + (uint64_t)(max > 0 ? max : 0);
}

static _Atomic uint64_t last_limit_events = UINT64_MAX;   /* none read yet */

/* Whether memory is wanted now: the machine is short of it, tasks stall on
 * it (PSI, machine-wide or the cgroup's), or the cgroup reached its
 * memory.high / memory.max since the last call. */
bool zk_os_memory_pressure(void)
{
    pthread_once(&cgroup_once, find_cgroup);
    bool pressure = machine_short() || psi_stalled("/proc/pressure/memory");
    if (cgroup_dir[0] != '\0') {
        char path[600];
        snprintf(path, sizeof path, "%s/memory.pressure", cgroup_dir);
        pressure = pressure || psi_stalled(path);
        uint64_t events = cgroup_limit_events();
        uint64_t before = atomic_exchange_explicit(&last_limit_events, events, memory_order_relaxed);
        pressure = pressure || (before != UINT64_MAX && events > before);
    }
    return pressure;
}
