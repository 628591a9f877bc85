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
 * How: a fresh np.empty of >= 2 MiB is populated at once with
 * MADV_POPULATE_WRITE (its user is about to write it whole; one syscall
 * instead of a fault per page) and that is timed: nanoseconds per MiB, kept
 * as a moving average per size range and per choice.  Until each choice has
 * MIN_SAMPLES in a range the choices alternate; then the cheaper one is
 * taken, and every EXPLORE-th mapping tries the other, so a change in the
 * machine's state is noticed.  hugepages=1 and 0 force the choice (and
 * still record samples, for stats).
 */
#define _GNU_SOURCE
#include <time.h>

#include "zk_internal.h"

#define MIN_SAMPLES 2u
#define EXPLORE 16u

typedef struct {
    _Atomic uint64_t ns_per_mib[2];   /* [0]: 4 KiB pages, [1]: huge pages */
    _Atomic uint64_t samples[2];
} thp_range;

static thp_range ranges[ZK_THP_RANGES];
static _Atomic uint64_t decisions;

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

bool zk_thp_choose(size_t bytes, bool *sample)
{
    *sample = bytes >= ZK_HUGE_BYTES;
    uint64_t mode = zk_opt(ZK_OPT_HUGEPAGES);
    if (bytes < ZK_HUGE_BYTES || mode == ZK_HUGEPAGES_OFF)
        return false;
    if (mode == ZK_HUGEPAGES_ON)
        return true;
    thp_range *r = &ranges[range_of(bytes)];
    uint64_t small = load(&r->samples[0]), huge = load(&r->samples[1]);
    if (small < MIN_SAMPLES || huge < MIN_SAMPLES)
        return huge <= small;   /* alternate, huge pages first */
    bool huge_cheaper = load(&r->ns_per_mib[1]) <= load(&r->ns_per_mib[0]);
    uint64_t n = atomic_fetch_add_explicit(&decisions, 1, memory_order_relaxed);
    return (n % EXPLORE == EXPLORE - 1) ? !huge_cheaper : huge_cheaper;
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
    atomic_store_explicit(&r->ns_per_mib[huge], avg, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->samples[huge], 1, memory_order_relaxed);
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

void zk_thp_reset(void)
{
    for (int i = 0; i < ZK_THP_RANGES; i++)
        for (int h = 0; h < 2; h++) {
            atomic_store_explicit(&ranges[i].ns_per_mib[h], 0, memory_order_relaxed);
            atomic_store_explicit(&ranges[i].samples[h], 0, memory_order_relaxed);
        }
}
