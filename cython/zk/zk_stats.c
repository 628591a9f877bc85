/*
 * Statistics: relaxed atomic counters, read as one snapshot.
 *
 * Counters are only ever incremented; gauges (bytes in use, cached, mapped)
 * go both ways and keep a peak.  A snapshot taken while other threads run is
 * not a consistent cut across counters, only each counter is exact.
 */
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

void zk_stats_read(zk_stats_snapshot *out)
{
    memset(out, 0, sizeof *out);
    out->hits = load(&zk_stats.hits);
    out->misses = load(&zk_stats.misses);
    out->small_allocs = load(&zk_stats.small_allocs);
    out->small_frees = load(&zk_stats.small_frees);
    out->foreign_frees = load(&zk_stats.foreign_frees);
    out->invalid_frees = load(&zk_stats.invalid_frees);
    out->bytes_in_use = load(&zk_stats.bytes_in_use);
    out->peak_bytes_in_use = load(&zk_stats.peak_bytes_in_use);
    out->bytes_cached = load(&zk_stats.bytes_cached);
    out->peak_bytes_cached = load(&zk_stats.peak_bytes_cached);
    out->bytes_mapped = load(&zk_stats.bytes_mapped);
    out->peak_bytes_mapped = load(&zk_stats.peak_bytes_mapped);
    out->evictions = load(&zk_stats.evictions);
    out->evicted_bytes = load(&zk_stats.evicted_bytes);
    out->uncached_frees = load(&zk_stats.uncached_frees);
    out->map_failures = load(&zk_stats.map_failures);
    out->calloc_fresh = load(&zk_stats.calloc_fresh);
    out->calloc_memset = load(&zk_stats.calloc_memset);
    out->calloc_discard = load(&zk_stats.calloc_discard);
    out->zero_samples = load(&zk_stats.zero_samples);
    out->realloc_same = load(&zk_stats.realloc_same);
    out->realloc_remap = load(&zk_stats.realloc_remap);
    out->realloc_copy = load(&zk_stats.realloc_copy);
    out->softened_bytes = load(&zk_stats.softened_bytes);
    out->released_bytes = load(&zk_stats.released_bytes);
    out->repurposed = load(&zk_stats.repurposed);
    out->repurposed_bytes = load(&zk_stats.repurposed_bytes);
    out->carved = load(&zk_stats.carved);
    out->gathered = load(&zk_stats.gathered);
    out->gathered_pieces = load(&zk_stats.gathered_pieces);
    out->fresh_tail_bytes = load(&zk_stats.fresh_tail_bytes);
    out->populated_bytes = load(&zk_stats.populated_bytes);
    out->segments = load(&zk_stats.segments);
    out->bytes_reserved = load(&zk_stats.bytes_reserved);
    out->bytes_vacant = load(&zk_stats.bytes_vacant);
    out->map_areas = load(&zk_stats.map_areas);
    out->unmap_failures = load(&zk_stats.unmap_failures);
    out->unmap_pending = load(&zk_stats.unmap_pending);
    out->decayed_softened_bytes = load(&zk_stats.decayed_softened_bytes);
    out->decayed_released_bytes = load(&zk_stats.decayed_released_bytes);
    out->decay_passes = load(&zk_stats.decay_passes);
    out->decay_thread = load(&zk_stats.decay_thread);
    out->prefaulted_bytes = load(&zk_stats.prefaulted_bytes);
    out->prefault_hits = load(&zk_stats.prefault_hits);
    out->prefault_idle_bytes = load(&zk_stats.prefault_idle_bytes);
    out->worker_cpu_ns = load(&zk_stats.worker_cpu_ns);
    out->worker_running = load(&zk_stats.worker_running);
    out->background_zeroed_bytes = load(&zk_stats.background_zeroed_bytes);
    out->zeroed_hits = load(&zk_stats.zeroed_hits);
    out->zeroed_stale = load(&zk_stats.zeroed_stale);
    out->zero_ahead_cancels = load(&zk_stats.zero_ahead_cancels);
    out->secret_arrays = load(&zk_stats.secret_arrays);
    out->secret_bytes = load(&zk_stats.secret_bytes);
    out->secret_mapped_bytes = load(&zk_stats.secret_mapped_bytes);
    out->secret_locked_bytes = load(&zk_stats.secret_locked_bytes);
    out->secret_allocs = load(&zk_stats.secret_allocs);
    out->secret_wiped_arrays = load(&zk_stats.secret_wiped_arrays);
    out->secret_wiped_bytes = load(&zk_stats.secret_wiped_bytes);
    out->secret_unprotected = load(&zk_stats.secret_unprotected);
    out->secret_failures = load(&zk_stats.secret_failures);
    for (int c = 0; c < ZK_NCLASSES; c++) {
        out->class_hits[c] = load(&zk_stats.class_hits[c]);
        out->class_misses[c] = load(&zk_stats.class_misses[c]);
        out->class_in_use[c] = load_count(&zk_stats.class_in_use[c]);
        out->class_cached[c] = load_count(&zk_stats.class_cached[c]);
    }
    for (int b = 0; b < ZK_SIZE_BUCKETS; b++)
        out->small_by_log2[b] = load(&zk_stats.small_by_log2[b]);
    /* issue 24 */
    out->raw_allocs = load(&zk_stats.raw_allocs);
    out->raw_bytes = load(&zk_stats.raw_bytes);
    out->raw_frees = load(&zk_stats.raw_frees);
    out->raw_reallocs = load(&zk_stats.raw_reallocs);
    out->raw_moved_out = load(&zk_stats.raw_moved_out);
    out->libc_trims = load(&zk_stats.libc_trims);
}

/* Zero the event counters so a caller can measure one stretch of code; the
 * gauges describe memory that still exists and are left alone.  Peaks restart
 * from the current values. */
void zk_stats_reset_counters(void)
{
    _Atomic uint64_t *events[] = {
        &zk_stats.hits, &zk_stats.misses, &zk_stats.small_allocs, &zk_stats.small_frees,
        &zk_stats.foreign_frees,
        &zk_stats.invalid_frees, &zk_stats.evictions, &zk_stats.evicted_bytes,
        &zk_stats.uncached_frees, &zk_stats.map_failures, &zk_stats.calloc_fresh,
        &zk_stats.calloc_memset, &zk_stats.calloc_discard, &zk_stats.zero_samples, &zk_stats.realloc_same,
        &zk_stats.realloc_remap, &zk_stats.realloc_copy, &zk_stats.softened_bytes,
        &zk_stats.released_bytes, &zk_stats.secret_allocs, &zk_stats.secret_wiped_arrays,
        &zk_stats.secret_wiped_bytes, &zk_stats.secret_unprotected, &zk_stats.secret_failures,
        &zk_stats.repurposed, &zk_stats.repurposed_bytes, &zk_stats.carved, &zk_stats.gathered,
        &zk_stats.gathered_pieces, &zk_stats.fresh_tail_bytes, &zk_stats.populated_bytes,
        &zk_stats.unmap_failures, &zk_stats.decayed_softened_bytes, &zk_stats.decayed_released_bytes,
        &zk_stats.decay_passes, &zk_stats.prefaulted_bytes, &zk_stats.prefault_hits, &zk_stats.worker_cpu_ns,
        &zk_stats.background_zeroed_bytes, &zk_stats.zeroed_hits, &zk_stats.zeroed_stale, &zk_stats.zero_ahead_cancels,
        /* issue 24 */
        &zk_stats.raw_allocs, &zk_stats.raw_bytes, &zk_stats.raw_frees, &zk_stats.raw_reallocs,
        &zk_stats.raw_moved_out, &zk_stats.libc_trims,
    };
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
        atomic_store_explicit(events[i], 0, memory_order_relaxed);
    for (int c = 0; c < ZK_NCLASSES; c++) {
        atomic_store_explicit(&zk_stats.class_hits[c], 0, memory_order_relaxed);
        atomic_store_explicit(&zk_stats.class_misses[c], 0, memory_order_relaxed);
    }
    for (int b = 0; b < ZK_SIZE_BUCKETS; b++)
        atomic_store_explicit(&zk_stats.small_by_log2[b], 0, memory_order_relaxed);
    atomic_store_explicit(&zk_stats.peak_bytes_in_use, load(&zk_stats.bytes_in_use), memory_order_relaxed);
    atomic_store_explicit(&zk_stats.peak_bytes_cached, load(&zk_stats.bytes_cached), memory_order_relaxed);
    atomic_store_explicit(&zk_stats.peak_bytes_mapped, load(&zk_stats.bytes_mapped), memory_order_relaxed);
}
