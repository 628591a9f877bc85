/*
 * Decay: idle memory goes back to the kernel when nothing wants it, judged
 * by what the program does, not by a wall clock.
 *
 * A warm cache is memory other programs cannot use; a prover service that
 * proves once a minute would hold its peak between proofs forever.  But a
 * busy program that reuses a region once a round must keep it however long
 * the round: a region given back after 10 s of a 12 s proof is faulted in
 * afresh every proof (20,770 faults a warm proof, against 3 under tuned
 * glibc, for one real prover).  So memory goes back when:
 *  - the process is idle: no request reached the cache and the process used
 *    less than a tenth of one CPU (getrusage) for decay_ms.  Idle regions
 *    are softened then (MADV_FREE: the kernel may take the pages; until it
 *    does, reusing them costs nothing) and given back after twice decay_ms
 *    idle, glibc's kept memory trimmed with them (libc=keep, when glibc
 *    holds free memory: mallinfo2);
 *  - memory is wanted: MemAvailable below 1/16 of the machine, tasks
 *    stalling on memory (PSI, the machine's or the cgroup's), or the cgroup
 *    reaching memory.high / memory.max (zk_os.c reads them).  Then every
 *    region idle for a pass interval (decay_ms / 4) goes back, busy or not,
 *    and glibc is trimmed;
 *  - the idle regions hold the process's RSS above the most it has reached
 *    without them (its high-water mark, plus 1/32): the oldest go, until
 *    they no longer do.  A busy program's sizes from an earlier stage stay
 *    cached as long as they cost nothing the program had not already
 *    used: a prover that repeats its proof finds its working set warm (its
 *    RSS between proofs is below its peak), while a program whose other
 *    memory grows after a burst of arrays (a test suite: scipy.fft's tests
 *    held 50 MiB of one test's sizes to their end, 1.07x numpy default's
 *    peak RSS) gets it back.  Telling an earlier stage's region from a
 *    round's that is merely not due yet by age would need a bet on the
 *    round's length; this needs none.  The high-water mark is sampled
 *    after every nap of the thread (RSS less the idle regions' resident
 *    pages) and raised by the exact peak of bytes in use since the last
 *    look, so a burst of arrays between two looks counts;
 *  - the cap says so (zk_pool.c evicts the least recently used).
 *
 * Who decays: one background thread, started when a region goes idle (and,
 * with libc=keep, by a request after the last idle trim).  It naps up to
 * 100 ms at a time, runs a pass every decay_ms / 4, reading the process's
 * CPU time, the cache's request count and the pressure signals outside
 * every lock, reads the RSS after every nap (one small file read; mincore
 * only when the RSS is above the mark), and exits once nothing is left to
 * give back.  The request paths never run a pass: they only start the
 * thread when it is not running.
 * A pass holds the heap lock while it walks (check() and fork see no
 * region half decayed) and walks only the oldest idle regions: the pool's
 * LRU order is the order they went idle.
 *
 * Tests inject the clock, the CPU time, the pressure reading and the RSS
 * (zk_decay_set_*) and run passes themselves (zk_decay_pass_now): the
 * thread stays out of it from then on, until zk_decay_use_real().
 */
#define _GNU_SOURCE
#include <time.h>

#include "zk_internal.h"
#include "zk_testing.h"

#define NS_PER_MS 1000000u
#define MAX_NAP_NS (100u * NS_PER_MS)
/* Idle: less than 1/IDLE_CPU_SHARE of one CPU between passes. */
#define IDLE_CPU_SHARE 10u
/* glibc is trimmed when it holds at least this much free memory. */
#define LIBC_TRIM_MIN_BYTES ((size_t)1 << 20)
/* The idle cache may hold the process's RSS up to its high-water mark
 * plus 1/RSS_MARGIN_SHARE of it (half the 5% the whole-programs bench
 * allows against numpy's default, and more than a few regions of noise). */
#define RSS_MARGIN_SHARE 32u

_Atomic uint64_t zk_decay_in_use_peak;

static _Atomic uint64_t next_pass_ns;
static _Atomic int thread_running;
static _Atomic bool pass_running;   /* one pass at a time; a second one skips */

/* Injected inputs (tests); `manual` set: these are read, not the machine. */
static struct {
    _Atomic bool manual;
    _Atomic uint64_t clock_ns, cpu_ns, rss;
    _Atomic bool pressure;
} injected;

/* What the passes saw last (written by the pass that runs, pass_running). */
static struct {
    bool primed;
    uint64_t at_ns, cpu_ns, own_cpu_ns, requests;
    uint64_t active_ns;         /* when the process was last seen busy */
    uint64_t high_water;        /* the most RSS seen without the idle regions */
    _Atomic bool libc_trimmed;  /* glibc trimmed since then */
} seen;

static bool manual(void) { return atomic_load_explicit(&injected.manual, memory_order_relaxed); }

uint64_t zk_decay_now(void)
{
    if (manual())
        return atomic_load_explicit(&injected.clock_ns, memory_order_relaxed);
    struct timespec ts;
    /* Coarse: a few ms of resolution at a fraction of the cost, plenty for
     * periods of seconds. */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_now(void)
{
    return manual() ? atomic_load_explicit(&injected.cpu_ns, memory_order_relaxed) : zk_os_process_cpu_ns();
}

static bool pressure_now(void)
{
    return manual() ? atomic_load_explicit(&injected.pressure, memory_order_relaxed) : zk_os_memory_pressure();
}

/* 0: unknown (not injected, or /proc unreadable): no high-water rule. */
static uint64_t rss_now(void)
{
    return manual() ? atomic_load_explicit(&injected.rss, memory_order_relaxed) : zk_os_process_rss_bytes();
}

/* Requests the cache served (hits and misses alike): any is activity. */
static uint64_t requests_now(void)
{
    return atomic_load_explicit(&zk_stats.hits, memory_order_relaxed) +
           atomic_load_explicit(&zk_stats.misses, memory_order_relaxed);
}

/* Was the process busy since the last pass?  Updates seen.active_ns. */
static void observe(uint64_t now)
{
    /* The decay thread's own CPU (its madvise and munmap calls) is not the
     * program's: taken out. */
    uint64_t cpu = cpu_now(), own = manual() ? 0 : zk_thp_cpu_ns(), requests = requests_now();
    uint64_t used = cpu - seen.cpu_ns, own_used = own - seen.own_cpu_ns;
    used = used > own_used ? used - own_used : 0;
    bool busy = !seen.primed || requests != seen.requests ||
                used * IDLE_CPU_SHARE > (now > seen.at_ns ? now - seen.at_ns : 0);
    if (busy) {
        seen.active_ns = now;
        atomic_store_explicit(&seen.libc_trimmed, false, memory_order_relaxed);
    }
    seen.primed = true;
    seen.at_ns = now;
    seen.cpu_ns = cpu;
    seen.own_cpu_ns = own;
    seen.requests = requests;
}

static size_t resident_bytes(const zk_region *r)
{
    size_t pages = zk_os_resident_pages((void *)r->base, r->bytes);
    return pages == SIZE_MAX ? r->bytes : pages * zk_os_page_size();
}

/* Walk the pool's oldest idle regions (heap lock held): those idle since
 * release_before or earlier are taken out for release (returned, chained)
 * until their resident bytes reach release_limit (SIZE_MAX: all of them,
 * nothing counted), those since soften_before are softened. */
static zk_region *walk_oldest(uint64_t release_before, uint64_t soften_before, size_t release_limit)
{
    zk_region *chain = NULL;
    size_t softened = 0, released = 0;
    zk_pool_lock();
    zk_region *r = zk_pool_oldest();
    while (r != NULL) {
        bool release = r->idle_ns <= release_before && released < release_limit;
        bool soften = soften_before != 0 && r->idle_ns <= soften_before;   /* 0: none */
        if (!release && !soften)
            break;   /* the rest went idle later */
        zk_region *newer = zk_pool_newer(r);
        if (release) {
            if (release_limit != SIZE_MAX)
                released += resident_bytes(r);
            zk_pool_unlink(r);
            zk_idle_uncount(r);
            r->free_next = chain;
            chain = r;
        } else if (!(r->flags & ZK_RF_SOFT)) {
            /* Under the pool lock, as in zk_cache_soften(): nobody can take
             * the region while the advice is in flight. */
            if (zk_os_soften((void *)r->base, r->bytes) == 0)
                softened += r->bytes;
            r->flags = (r->flags | ZK_RF_SOFT) & ~ZK_RF_ZERO;
        }
        r = newer;
    }
    zk_pool_unlock();
    zk_count(&zk_stats.decayed_softened_bytes, softened);
    return chain;
}

/* Give back (and soften) what the cutoffs say; bytes given back. */
static size_t decay_regions(uint64_t release_before, uint64_t soften_before, size_t release_limit)
{
    uint64_t drain = release_before > soften_before ? release_before : soften_before;
    zk_tcache_drain_older(drain + 1);   /* a thread that went quiet keeps none */
    uint64_t released = atomic_load(&zk_stats.decayed_released_bytes);
    zk_heap_lock();
    zk_region *chain = walk_oldest(release_before, soften_before, release_limit);
    zk_vacate_chain(chain, NULL, &zk_stats.decayed_released_bytes, true);
    zk_heap_unlock();
    return (size_t)(atomic_load(&zk_stats.decayed_released_bytes) - released);
}

/* Raise the high-water mark with what the process holds now without its
 * idle regions (idle_resident bytes of them resident), its in-use part
 * raised to its peak since the last look: a burst of arrays between two
 * looks counts, at the price of counting the program's other memory at
 * its size now rather than then (looks are 100 ms apart). */
static void raise_high_water(uint64_t rss, uint64_t idle_resident)
{
    uint64_t in_use = atomic_load_explicit(&zk_stats.bytes_in_use, memory_order_relaxed);
    uint64_t window = atomic_exchange_explicit(&zk_decay_in_use_peak, in_use, memory_order_relaxed);
    uint64_t without = rss > idle_resident ? rss - idle_resident : 0;
    uint64_t other = without > in_use ? without - in_use : 0;
    uint64_t reached = other + (window > in_use ? window : in_use);   /* >= without */
    if (reached > seen.high_water)
        seen.high_water = reached;
}

static uint64_t high_water_allowed(void) { return seen.high_water + seen.high_water / RSS_MARGIN_SHARE; }

/* The idle regions never hold the process above its high-water mark: the
 * oldest (idle for a pass interval at least, not a round's just freed) go
 * until they no longer do.  Bytes given back. */
static size_t keep_under_high_water(uint64_t now, uint64_t period)
{
    uint64_t rss = rss_now();   /* a file read: outside every lock */
    if (rss == 0)
        return 0;
    /* Cheap first: the idle bytes stand for their resident pages (at least
     * as many), so the mark is never raised above what the process held.
     * mincore over every idle region only once the RSS is above the mark. */
    raise_high_water(rss, atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed));
    if (rss <= high_water_allowed())
        return 0;
    raise_high_water(rss, zk_cache_idle_resident());
    if (rss <= high_water_allowed() || now <= period / 4)
        return 0;
    zk_count(&zk_stats.decay_high_water_passes, 1);
    /* the excess is at most the idle resident bytes */
    return decay_regions(now - period / 4, 0, rss - high_water_allowed());
}

/* glibc's free memory back (libc=keep), once per idle spell. */
static void trim_libc(void)
{
    if (!zk_libc_applied() || atomic_load_explicit(&seen.libc_trimmed, memory_order_relaxed))
        return;
    atomic_store_explicit(&seen.libc_trimmed, true, memory_order_relaxed);
    if (zk_libc_free_bytes() >= LIBC_TRIM_MIN_BYTES)
        (void)zk_libc_trim();
}

/* A pass: decay by the program's activity and the pressure, and keep the
 * process under its high-water mark.  The thread checks the mark more
 * often (`full` false: between passes), since a program's other memory can
 * grow fast. */
static size_t pass(uint64_t now, bool full)
{
    uint64_t period = zk_opt_decay_ms() * NS_PER_MS;
    if (period == 0)
        return 0;
    if (!full)
        return keep_under_high_water(now, period);
    observe(now);
    bool pressure = pressure_now();   /* file reads: outside every lock */
    uint64_t idle_for = now > seen.active_ns ? now - seen.active_ns : 0;
    /* Cutoffs as idle_ns values: 0 means none (a region idle since the
     * clock's start is never that old in practice, and 0 compares safely). */
    uint64_t release_before = 0, soften_before = 0;
    if (idle_for >= 2 * period)
        release_before = now;
    else if (pressure && now > period / 4)
        release_before = now - period / 4;
    if (idle_for >= period)
        soften_before = now;
    size_t released = 0;
    if (release_before != 0 || soften_before != 0)
        released = decay_regions(release_before, soften_before, SIZE_MAX);
    released += keep_under_high_water(now, period);
    if (pressure) {
        zk_count(&zk_stats.decay_pressure_passes, 1);
        zk_cache_forget_slack_returns();
    }
    if (idle_for >= period || pressure)
        trim_libc();
    zk_count(&zk_stats.decay_passes, 1);
    return released;
}

/* One pass at a time: a second caller skips it (the next one comes). */
static size_t try_pass(uint64_t now, bool full)
{
    if (atomic_exchange_explicit(&pass_running, true, memory_order_acquire))
        return 0;
    size_t released = pass(now, full);
    atomic_store_explicit(&pass_running, false, memory_order_release);
    return released;
}

static bool idle_left(void)
{
    return atomic_load_explicit(&zk_stats.bytes_cached, memory_order_relaxed) != 0;
}

/* Whether the thread has anything left to give back, now or later. */
static bool work_left(void)
{
    return idle_left() || (zk_libc_applied() && !atomic_load_explicit(&seen.libc_trimmed, memory_order_relaxed));
}

static void *decay_thread(void *arg)
{
    (void)arg;
    for (;;) {
        uint64_t ms = zk_opt_decay_ms();
        if (ms == 0 || manual() || !work_left()) {
            atomic_store_explicit(&thread_running, 0, memory_order_release);
            zk_stats_gauge_sub(&zk_stats.decay_thread, 1);
            /* A region parked between the check and the store would wait
             * for the next park: start again for it. */
            if (ms != 0 && !manual() && idle_left())
                zk_decay_parked();
            return NULL;
        }
        /* Short naps, so a new decay_ms (or 0) takes effect within one;
         * the pass itself runs at most every decay_ms / 4. */
        uint64_t nap = ms * NS_PER_MS / 4 < MAX_NAP_NS ? ms * NS_PER_MS / 4 : MAX_NAP_NS;
        struct timespec ts = {(time_t)(nap / 1000000000u), (long)(nap % 1000000000u)};
        nanosleep(&ts, NULL);
        if (manual())
            continue;   /* a test drives the passes now: exit */
        uint64_t now = zk_decay_now(), due = atomic_load_explicit(&next_pass_ns, memory_order_relaxed);
        bool full = now >= due;
        if (full)   /* decay_ms read again: a change during the nap rescheduled the
                     * pass (zk_decay_reschedule) and must set its spacing too. */
            atomic_store_explicit(&next_pass_ns, now + zk_opt_decay_ms() * NS_PER_MS / 4, memory_order_relaxed);
        (void)try_pass(now, full);
    }
}

static void start_thread(void)
{
    int expected = 0;
    if (zk_opt_decay_ms() == 0 || manual() || atomic_load_explicit(&thread_running, memory_order_relaxed) ||
        !atomic_compare_exchange_strong_explicit(&thread_running, &expected, 1, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return;
    bool ok = zk_os_start_thread(decay_thread) == 0;
    if (ok)
        zk_count(&zk_stats.decay_thread, 1);
    else   /* no thread: nothing decays until the next try (the next park) */
        atomic_store_explicit(&thread_running, 0, memory_order_release);
}

void zk_decay_parked(void) { start_thread(); }

void zk_decay_wake(void)
{
    /* One relaxed load on the request path; with libc=keep a request after
     * the last idle trim means glibc may fill up again: watch it. */
    if (!atomic_load_explicit(&thread_running, memory_order_relaxed) && zk_libc_applied())
        start_thread();
}

void zk_decay_reschedule(void)
{
    atomic_store_explicit(&next_pass_ns, 0, memory_order_relaxed);
}

void zk_decay_fork_child(void)
{
    if (atomic_load_explicit(&thread_running, memory_order_relaxed))
        zk_stats_gauge_sub(&zk_stats.decay_thread, 1);
    atomic_store_explicit(&thread_running, 0, memory_order_relaxed);
    atomic_store_explicit(&next_pass_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&pass_running, false, memory_order_relaxed);   /* the parent's thread is gone */
    seen.primed = false;
}

/* ---- tests: injected inputs ------------------------------------------------------ */

void zk_decay_set_clock(uint64_t ns)
{
    atomic_store_explicit(&injected.clock_ns, ns, memory_order_relaxed);
    atomic_store_explicit(&injected.manual, true, memory_order_relaxed);
}

void zk_decay_set_cpu(uint64_t ns)
{
    atomic_store_explicit(&injected.cpu_ns, ns, memory_order_relaxed);
    atomic_store_explicit(&injected.manual, true, memory_order_relaxed);
}

void zk_decay_set_rss(uint64_t bytes)
{
    atomic_store_explicit(&injected.rss, bytes, memory_order_relaxed);
    atomic_store_explicit(&injected.manual, true, memory_order_relaxed);
}

void zk_decay_set_pressure(int on)
{
    atomic_store_explicit(&injected.pressure, on != 0, memory_order_relaxed);
    atomic_store_explicit(&injected.manual, true, memory_order_relaxed);
}

void zk_decay_use_real(void)
{
    atomic_store_explicit(&injected.manual, false, memory_order_relaxed);
    atomic_store_explicit(&injected.clock_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&injected.cpu_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&injected.pressure, false, memory_order_relaxed);
    atomic_store_explicit(&injected.rss, 0, memory_order_relaxed);
    while (atomic_exchange_explicit(&pass_running, true, memory_order_acquire))
        ;   /* a pass in flight ends within milliseconds */
    seen.primed = false;
    seen.high_water = 0;
    atomic_store_explicit(&pass_running, false, memory_order_release);
    zk_decay_reschedule();
    if (idle_left())
        start_thread();
}

/* Waits for a pass in flight (the thread's, about to see `manual` and
 * exit), so the caller's pass always runs. */
size_t zk_decay_pass_now(void)
{
    while (atomic_exchange_explicit(&pass_running, true, memory_order_acquire))
        ;
    size_t released = pass(zk_decay_now(), true);
    atomic_store_explicit(&pass_running, false, memory_order_release);
    return released;
}
