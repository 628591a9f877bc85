/*
 * First-touch policy: back a fresh mapping with huge pages or not, chosen
 * from measurement.
 *
 * Why measured: on these machines the cost of faulting fresh memory with
 * MADV_HUGEPAGE swings from 0.24 to 6.8 GB/s from one run to the next
 * (the kernel zeroes 2 MiB pages and may compact memory to find them; fast
 * when the memory was just freed, slow when it was not), while 4 KiB pages
 * fault at a steady 1.2-1.4 GB/s.  Warm reuse runs at the same speed
 * either way.  So neither fixed answer is right.
 *
 * But huge pages are RSS as well as time: a sparse first touch makes a
 * whole 2 MiB resident for each 4 KiB page written, and faulting a region in
 * at once makes resident what its user may never write (a preallocated
 * maximum-size buffer, a scratch array used in part).  So nothing is bet
 * on: a fresh region is left lazy, on 4 KiB pages, and measured at free
 * (mincore, zk_touch_watch in zk_zero.c: the same measurement np.zeros'
 * zeroing policy learns from).  Only a class shown dense (its regions end
 * up at least 7/8 written) gets the rest:
 *  - a fresh np.empty of it is populated at once with MADV_POPULATE_WRITE
 *    (the requested bytes, never the class's slack; one syscall instead of
 *    a fault per page), and that is timed: nanoseconds per MiB, kept as a
 *    moving average per size range and per choice;
 *  - huge pages or not, from those timings: until each choice has
 *    MIN_SAMPLES in a range the choices alternate; then the cheaper one is
 *    taken, and now and then a mapping tries the other, so a change in the
 *    machine's state is noticed: every EXPLORE-th while the two cost about
 *    the same, less often the more the other costs (explore_every), so the
 *    tries take at most about 1/64 of the time.  Trying 4 KiB pages every
 *    16th mapping where huge pages were 6x cheaper made a 32 MiB first
 *    touch 1.57x numpy default's time (4.9 against 3.1 ms a round).  The
 *    cheaper choice's own cost is timed every EXPLORE-th mapping, so it
 *    getting dearer is noticed at once;
 *  - where huge pages are the cheaper, the region is left lazy instead
 *    (ZK_TOUCH_LAZY) but every EXPLORE-th, which is timed: a fault maps
 *    2 MiB, so there is no per-page cost to save, and populating first
 *    costs a pass over memory: the kernel zeroes the whole region, out of
 *    the CPU's caches by the time its user writes it, where faults on touch
 *    zero each 2 MiB just before it is written (a 32 MiB np.empty filled:
 *    2.5 ms populated against 1.9 ms lazy, numpy's default's time).
 * A class not measured yet gets huge pages as numpy's default would give
 * them (below).
 * Now and then a fresh region of a dense class is left lazy on 4 KiB pages
 * and measured again (as often as the other choice is tried), so a class
 * that turns sparse is noticed too.  hugepages=1 and 0
 * force the huge-page choice for every region of 2 MiB and more (and still
 * record samples, for stats); faulting in at once still needs a dense class.
 */
#define _GNU_SOURCE
#include <time.h>

#include "zk_internal.h"

/* A class not measured yet gets huge pages from these sizes on.  numpy's
 * default advises every array of 4 MiB and more: a big array written once
 * would otherwise fault 512 times per 2 MiB (a 4 GiB one in numpy's own
 * tests: 1.5M faults against numpy's 48k; the test subset as a whole: 91k
 * faults with 16 MiB for np.empty too, 88k with 4 MiB, tuned glibc 78k),
 * while a sparse user of it is no fatter than under numpy's default.
 * np.empty follows numpy: its caller writes it before reading it.
 * np.zeros is how sparse structures are made (MSM windows and buckets,
 * histograms): below 16 MiB they follow their touched pages from the first
 * round on, fatter than numpy's default by nothing (a 6 MiB window touched
 * at both ends would hold two huge pages). */
#define UNKNOWN_HUGE_MIN_BYTES ((size_t)4 << 20)
#define UNKNOWN_ZEROED_HUGE_MIN_BYTES ((size_t)16 << 20)
#define MIN_SAMPLES 2u
#define EXPLORE 16u
#define MAX_EXPLORE 1024u

typedef struct {
    _Atomic uint64_t ns_per_mib[2];   /* [0]: 4 KiB pages, [1]: huge pages */
    _Atomic uint64_t samples[2];
} thp_range;

static thp_range ranges[ZK_THP_RANGES];
static _Atomic uint64_t decisions;
static _Atomic bool pinned;   /* zk_thp_pin_costs: samples count, costs stay */

/* 2-16 MiB, 16-128 MiB, 128 MiB and up: the kernel's cost per byte differs
 * mostly with how much contiguous memory it must find. */
static int range_of(size_t bytes)
{
    if (bytes < ((size_t)16 << 20))
        return 0;
    return bytes < ((size_t)128 << 20) ? 1 : 2;
}

uint64_t zk_thp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t zk_thp_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t load(_Atomic uint64_t *v) { return atomic_load_explicit(v, memory_order_relaxed); }

static _Atomic uint64_t dense_mappings;

/* How often the costlier choice is tried in range r: every EXPLORE-th
 * mapping when it costs up to twice the cheaper one, every EXPLORE * k^2-th
 * when k times (at most MAX_EXPLORE), so trying it adds at most about
 * (k - 1) / (EXPLORE * k^2) <= 1/64 to the cheaper choice's time. */
static uint64_t explore_every(thp_range *r)
{
    uint64_t small = load(&r->ns_per_mib[0]), huge = load(&r->ns_per_mib[1]);
    uint64_t lo = small < huge ? small : huge, hi = small < huge ? huge : small;
    if (lo == 0)
        return EXPLORE;
    uint64_t k = hi / lo;
    return k <= 1 ? EXPLORE : k >= 8 ? MAX_EXPLORE : EXPLORE * k * k;
}

/* A class shown dense, and this mapping not one left lazy on 4 KiB pages to
 * measure it again: as rarely as 4 KiB pages are tried where they cost more. */
static bool dense_now(size_t bytes)
{
    if (!zk_touch_dense(zk_class_of(bytes)))
        return false;
    thp_range *r = &ranges[range_of(bytes)];
    uint64_t every = load(&r->ns_per_mib[1]) < load(&r->ns_per_mib[0]) ? explore_every(r) : EXPLORE;
    return atomic_fetch_add_explicit(&dense_mappings, 1, memory_order_relaxed) % every != every - 1;
}

bool zk_thp_choose(size_t bytes, bool zeroed, zk_first_touch *touch)
{
    *touch = ZK_TOUCH_WATCH;
    if (bytes < ZK_HUGE_BYTES)
        return false;
    bool dense = dense_now(bytes);
    if (dense)
        *touch = ZK_TOUCH_TIMED;
    uint64_t mode = zk_opt(ZK_OPT_HUGEPAGES);
    if (mode == ZK_HUGEPAGES_OFF)
        return false;
    if (mode == ZK_HUGEPAGES_ON)
        return true;
    if (!dense)   /* sparse or not yet known: 4 KiB pages, RSS follows the touches */
        return bytes >= (zeroed ? UNKNOWN_ZEROED_HUGE_MIN_BYTES : UNKNOWN_HUGE_MIN_BYTES) &&
               zk_touch_unknown(zk_class_of(bytes));
    thp_range *r = &ranges[range_of(bytes)];
    uint64_t small = load(&r->samples[0]), huge = load(&r->samples[1]);
    if (small < MIN_SAMPLES || huge < MIN_SAMPLES)
        return huge <= small;   /* alternate, huge pages first */
    bool huge_cheaper = load(&r->ns_per_mib[1]) <= load(&r->ns_per_mib[0]);
    uint64_t n = atomic_fetch_add_explicit(&decisions, 1, memory_order_relaxed), every = explore_every(r);
    if (n % every == every - 1)
        return !huge_cheaper;   /* the other choice, timed */
    if (huge_cheaper && n % EXPLORE != EXPLORE / 2 - 1)
        *touch = ZK_TOUCH_LAZY;   /* the EXPLORE/2-1-th is timed, to follow the machine */
    return huge_cheaper;
}

void zk_thp_record(size_t bytes, bool huge, uint64_t ns)
{
    uint64_t mib = bytes >> 20;
    if (mib == 0)
        return;
    thp_range *r = &ranges[range_of(bytes)];
    uint64_t per = ns / mib;
    uint64_t before = load(&r->ns_per_mib[huge]);
    /* Half the weight on the newest sample: the machine's state changes
     * within seconds, and one slow outlier must not stick for long. */
    uint64_t avg = before == 0 ? per : (before + per) / 2;
    if (!atomic_load_explicit(&pinned, memory_order_relaxed))
        atomic_store_explicit(&r->ns_per_mib[huge], avg, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->samples[huge], 1, memory_order_relaxed);
}

bool zk_thp_small_pages_cheaper(size_t bytes)
{
    thp_range *r = &ranges[range_of(bytes)];
    return load(&r->samples[0]) >= MIN_SAMPLES && load(&r->samples[1]) >= MIN_SAMPLES &&
           load(&r->ns_per_mib[0]) < load(&r->ns_per_mib[1]);
}

uint64_t zk_thp_small_page_fault_ns(void)
{
    thp_range *r = &ranges[0];   /* 2-16 MiB: the sizes a discard refaults in */
    if (load(&r->samples[0]) == 0)
        return 0;
    return load(&r->ns_per_mib[0]) / (((size_t)1 << 20) / 4096);
}

void zk_thp_read(zk_thp_snapshot *out)
{
    for (int i = 0; i < ZK_THP_RANGES; i++)
        for (int h = 0; h < 2; h++) {
            out->ns_per_mib[i][h] = load(&ranges[i].ns_per_mib[h]);
            out->samples[i][h] = load(&ranges[i].samples[h]);
        }
}

void zk_thp_pin_costs(uint64_t small_ns_per_mib, uint64_t huge_ns_per_mib)
{
    for (int i = 0; i < ZK_THP_RANGES; i++) {
        atomic_store_explicit(&ranges[i].ns_per_mib[0], small_ns_per_mib, memory_order_relaxed);
        atomic_store_explicit(&ranges[i].ns_per_mib[1], huge_ns_per_mib, memory_order_relaxed);
        for (int h = 0; h < 2; h++)
            atomic_store_explicit(&ranges[i].samples[h], MIN_SAMPLES, memory_order_relaxed);
    }
    atomic_store_explicit(&decisions, 0, memory_order_relaxed);
    atomic_store_explicit(&pinned, true, memory_order_relaxed);
}

void zk_thp_reset(void)
{
    atomic_store_explicit(&pinned, false, memory_order_relaxed);
    atomic_store_explicit(&decisions, 0, memory_order_relaxed);
    atomic_store_explicit(&dense_mappings, 0, memory_order_relaxed);   /* the next lazy re-measure: 16 on */
    for (int i = 0; i < ZK_THP_RANGES; i++)
        for (int h = 0; h < 2; h++) {
            atomic_store_explicit(&ranges[i].ns_per_mib[h], 0, memory_order_relaxed);
            atomic_store_explicit(&ranges[i].samples[h], 0, memory_order_relaxed);
        }
}
