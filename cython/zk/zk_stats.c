/*
 * Statistics: relaxed atomic counters, read as one snapshot.
 *
 * Counters are only ever incremented; gauges (bytes in use, cached, mapped)
 * go both ways and keep a peak.  A snapshot taken while other threads run is
 * not a consistent cut across counters, only each counter is exact.
 */
#include <stddef.h>
#include <string.h>

#include "zk_internal.h"

zk_stats_counters zk_stats;

static uint64_t load(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void zk_stats_raise_peak(_Atomic uint64_t *peak, uint64_t now)
{
    uint64_t seen = atomic_load_explicit(peak, memory_order_relaxed);
    while (now > seen &&
           !atomic_compare_exchange_weak_explicit(peak, &seen, now, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

void zk_stats_gauge_add(_Atomic uint64_t *gauge, _Atomic uint64_t *peak, uint64_t n)
{
    zk_stats_raise_peak(peak, atomic_fetch_add_explicit(gauge, n, memory_order_relaxed) + n);
}

void zk_stats_gauge_sub(_Atomic uint64_t *gauge, uint64_t n)
{
    atomic_fetch_sub_explicit(gauge, n, memory_order_relaxed);
}

static uint64_t load_count(_Atomic int64_t *c)
{
    int64_t v = atomic_load_explicit(c, memory_order_relaxed);
    return v > 0 ? (uint64_t)v : 0;   /* transiently negative under races */
}

#define STAT_INFO(name, kind, doc) {#name, kind, doc, offsetof(zk_stats_snapshot, name)},
#define COUNTER_INFO(name, doc) STAT_INFO(name, ZK_STAT_COUNTER, doc)
#define GAUGE_INFO(name, doc) STAT_INFO(name, ZK_STAT_GAUGE, doc)
#define PEAK_INFO(name, gauge, doc) STAT_INFO(name, ZK_STAT_PEAK, doc)
const zk_stat_info zk_stats_info[] = {ZK_STATS_LIST(COUNTER_INFO, GAUGE_INFO, PEAK_INFO)};
const size_t zk_stats_count = sizeof zk_stats_info / sizeof zk_stats_info[0];

void zk_stats_read(zk_stats_snapshot *out)
{
    memset(out, 0, sizeof *out);
#define READ(name, ...) out->name = load(&zk_stats.name);
    ZK_STATS_LIST(READ, READ, READ)
#undef READ
    for (int c = 0; c < ZK_NCLASSES; c++) {
        out->class_hits[c] = load(&zk_stats.class_hits[c]);
        out->class_misses[c] = load(&zk_stats.class_misses[c]);
        out->class_in_use[c] = load_count(&zk_stats.class_in_use[c]);
        out->class_cached[c] = load_count(&zk_stats.class_cached[c]);
    }
    for (int b = 0; b < ZK_SIZE_BUCKETS; b++)
        out->small_by_log2[b] = load(&zk_stats.small_by_log2[b]);
}

/* Zero the event counters so a caller can measure one stretch of code; the
 * gauges describe memory that still exists and are left alone.  Peaks restart
 * from the current values. */
void zk_stats_reset_counters(void)
{
#define ZERO(name, doc) atomic_store_explicit(&zk_stats.name, 0, memory_order_relaxed);
#define KEEP(name, doc)
#define RESTART(name, gauge, doc) atomic_store_explicit(&zk_stats.name, load(&zk_stats.gauge), memory_order_relaxed);
    ZK_STATS_LIST(ZERO, KEEP, RESTART)
#undef ZERO
#undef KEEP
#undef RESTART
    for (int c = 0; c < ZK_NCLASSES; c++) {
        atomic_store_explicit(&zk_stats.class_hits[c], 0, memory_order_relaxed);
        atomic_store_explicit(&zk_stats.class_misses[c], 0, memory_order_relaxed);
    }
    for (int b = 0; b < ZK_SIZE_BUCKETS; b++)
        atomic_store_explicit(&zk_stats.small_by_log2[b], 0, memory_order_relaxed);
}
