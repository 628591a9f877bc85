/*
 * Every statistic of a phase (a scope, zk_scope.c), one line each.  This
 * list is the one source of the scope's counters, the snapshot
 * (zk_scope_stats in zkalloc.h), its reading (zk_scope_stats_read), the
 * names the Cython layer hands to Python (zk_scope_stats_info) and so the
 * PhaseStats fields and the table in docs/phases.md, which a test holds to
 * this list.  As zk_stats_list.h does for the process.
 *
 *   COUNTER(name, doc)      an event count since the phase began
 *   GAUGE(name, doc)        a level now (arrays alive)
 *   PEAK(name, gauge, doc)  the highest `gauge` reached
 *   RECORD(name, doc)       a value stored at one moment (the configuration, the end, the last refusal)
 *
 * The per-class arrays (class_live, class_peak) are arrays, kept beside it.
 */
#ifndef ZK_SCOPE_STATS_LIST_H
#define ZK_SCOPE_STATS_LIST_H

#define ZK_SCOPE_STATS_LIST(COUNTER, GAUGE, PEAK, RECORD) \
    COUNTER(arrays, "requests the cache served in the phase, each tagged with it") \
    COUNTER(bytes_allocated, "their bytes, as requested") \
    GAUGE(live_arrays, "of those, the arrays alive now (wherever they are freed: another thread, another phase)") \
    GAUGE(live_bytes, "their requested bytes") \
    PEAK(peak_bytes, live_bytes, "the most live_bytes at once") \
    COUNTER(small_arrays, "requests below min_bytes (or above the largest class), left to numpy's allocator") \
    COUNTER(hits, "tagged requests served by a resident region") \
    COUNTER(misses, "tagged requests that needed a new region") \
    COUNTER(repurposed, "misses served from idle memory of other classes") \
    COUNTER(fresh_bytes, "bytes the misses mapped fresh: the page faults the phase caused") \
    COUNTER(alloc_ns, "nanoseconds inside the cache's allocations (two clock reads per array)") \
    COUNTER(realloc_in_place, "resizes of the phase's arrays that kept their address") \
    COUNTER(realloc_moved, "resizes of the phase's arrays that moved them") \
    COUNTER(invalid_frees, "frees through the phase's handler of regions not in use") \
    RECORD(escaped_arrays, "arrays alive when the phase ended (they stay valid)") \
    RECORD(escaped_bytes, "their requested bytes") \
    GAUGE(region_bytes, "bytes of the live arrays' regions (class sizes)") \
    PEAK(peak_region_bytes, region_bytes, "the most region_bytes at once: what the next run's hot start may fault in") \
    RECORD(budget, "the phase's budget of live bytes, 0: none") \
    COUNTER(budget_refusals, "requests the budget refused") \
    RECORD(refused_bytes, "the last refused request's bytes") \
    RECORD(refused_live_bytes, "the phase's live bytes when it was refused") \
    RECORD(closed, "1 once the phase ended")

#endif
