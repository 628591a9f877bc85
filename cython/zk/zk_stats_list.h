/*
 * Every statistic of the core, one line each.  This list is the one source
 * of the counters' storage (zk_internal.h), the snapshot (zkalloc.h), the
 * snapshot's reading and reset (zk_stats.c), the names the Cython layer
 * hands to Python (zk_stats_info) and so the Python Stats fields and the
 * table in docs/stats.md, which a test holds to this list.
 *
 *   COUNTER(name, doc)      an event count; zk_stats_reset_counters() zeroes it
 *   GAUGE(name, doc)        a level now (memory held, threads running); never reset
 *   PEAK(name, gauge, doc)  the highest `gauge` reached; a reset restarts it from the gauge
 *
 * Per-class arrays and the small requests by size are not in this list:
 * they are arrays, kept beside it (zkalloc.h).
 */
#ifndef ZK_STATS_LIST_H
#define ZK_STATS_LIST_H

#define ZK_STATS_LIST(COUNTER, GAUGE, PEAK) \
    COUNTER(hits, "requests served by a resident region (of their class, or one class larger)") \
    COUNTER(misses, "requests that needed a new region: repurposed idle memory or fresh memory") \
    COUNTER(small_allocs, "requests below min_bytes (or above the largest class), left to numpy's allocator") \
    COUNTER(small_frees, "frees of arrays below min_bytes, passed back to numpy's allocator") \
    COUNTER(foreign_frees, "frees of arrays of min_bytes or more that the cache did not allocate (made before the install), passed to numpy") \
    COUNTER(invalid_frees, "frees (or resizes) of a region of the cache that was not in use: a second free, ignored") \
    GAUGE(bytes_in_use, "bytes of regions held by live arrays") \
    PEAK(peak_bytes_in_use, bytes_in_use, "the most bytes_in_use reached") \
    GAUGE(bytes_cached, "bytes of idle, resident regions the cache keeps (at most cache_bytes)") \
    PEAK(peak_bytes_cached, bytes_cached, "the most bytes_cached reached") \
    GAUGE(bytes_mapped, "bytes_in_use and bytes_cached together") \
    PEAK(peak_bytes_mapped, bytes_mapped, "the most bytes_mapped reached") \
    COUNTER(evictions, "idle regions given back to the kernel to stay under the cap") \
    COUNTER(evicted_bytes, "their bytes") \
    COUNTER(uncached_frees, "freed regions the cap could not keep at all (larger than it)") \
    COUNTER(map_failures, "requests the kernel refused a mapping for, left to numpy's allocator") \
    COUNTER(budget_refusals, "requests refused because they would exceed a budget (a phase's, or the process's budget setting)") \
    COUNTER(calloc_fresh, "np.zeros served by a fresh mapping (zeros already, left lazy)") \
    COUNTER(calloc_memset, "np.zeros of a reused region zeroed by memset") \
    COUNTER(calloc_discard, "np.zeros of a reused region zeroed by MADV_DONTNEED (pages fault back as zeros)") \
    COUNTER(zero_samples, "regions given lazily (fresh, or discarded by np.zeros) measured at free (mincore): what their class touches, for the zeroing and first-touch policies") \
    COUNTER(realloc_same, "resizes served in place") \
    COUNTER(realloc_remap, "resizes that moved the pages to a larger region with mremap (no copy)") \
    COUNTER(realloc_copy, "resizes that copied the data to another region") \
    COUNTER(softened_bytes, "idle bytes MADV_FREE'd by soften()") \
    COUNTER(released_bytes, "idle bytes given back by release() and phases' release_after") \
    COUNTER(repurposed, "misses served from idle memory of other classes instead of fresh memory") \
    COUNTER(repurposed_bytes, "their bytes that were idle memory") \
    COUNTER(carved, "repurposed misses cut out of one larger idle region") \
    COUNTER(gathered, "repurposed misses moved together (mremap) from several idle regions") \
    COUNTER(gathered_pieces, "idle regions moved into gathered ones") \
    COUNTER(fresh_tail_bytes, "bytes of gathered regions that idle memory could not cover, mapped fresh") \
    COUNTER(slack_dropped_bytes, "bytes past a request that earlier users of its region wrote, given back (MADV_DONTNEED) when the region was handed out for less (unless dropped slack keeps being wanted back)") \
    COUNTER(populated_bytes, "bytes of fresh np.empty regions faulted in at once (classes shown to write their arrays whole; timed by the first-touch policy)") \
    GAUGE(segments, "mappings (segments) that hold the regions") \
    GAUGE(bytes_reserved, "their bytes (address space)") \
    GAUGE(bytes_vacant, "the part of bytes_reserved with no memory behind it (given back, kept as address space)") \
    GAUGE(map_areas, "memory areas the cache accounts for, against vm.max_map_count (an estimate)") \
    COUNTER(unmap_failures, "munmap calls the kernel refused (at the map-count limit)") \
    GAUGE(unmap_pending, "segments kept after such a failure, retried by release()") \
    COUNTER(decayed_softened_bytes, "idle bytes MADV_FREE'd after the process was idle for decay_ms") \
    COUNTER(decayed_released_bytes, "idle bytes given back after the process was idle for twice decay_ms, under memory pressure, or when they held the process's RSS above its high-water mark") \
    COUNTER(decay_passes, "decay walks of the idle regions") \
    COUNTER(decay_pressure_passes, "decay passes that found memory wanted (MemAvailable, PSI, the cgroup's memory.events) and gave idle regions back") \
    COUNTER(decay_high_water_passes, "decay passes that found the idle regions holding the process's RSS above the most it reached without them (plus 1/32), and gave the oldest back") \
    GAUGE(decay_thread, "1 while the decay thread runs (while idle regions are left, or glibc may hold memory to trim)") \
    GAUGE(secret_arrays, "secret arrays live now") \
    GAUGE(secret_bytes, "their requested bytes") \
    GAUGE(secret_mapped_bytes, "their mappings' bytes, guard pages included") \
    GAUGE(secret_locked_bytes, "their bytes locked in memory (mlock)") \
    COUNTER(secret_allocs, "secret arrays allocated") \
    COUNTER(secret_wiped_arrays, "secret arrays freed and wiped") \
    COUNTER(secret_wiped_bytes, "their bytes") \
    COUNTER(secret_unprotected, "strict=False secret arrays that lack a protection") \
    COUNTER(secret_failures, "secret allocations refused (strict, a protection failed)") \
    COUNTER(raw_allocs, "Python raw-domain requests (bytes, bytearray, tobytes(), hashlib inputs) the cache served") \
    COUNTER(raw_bytes, "their requested bytes") \
    COUNTER(raw_frees, "raw-domain frees of the cache's blocks") \
    COUNTER(raw_reallocs, "raw-domain resizes of the cache's blocks") \
    COUNTER(raw_moved_out, "of those, blocks moved to the wrapped allocator (shrunk below min_bytes, or after uninstall())") \
    COUNTER(libc_trims, "malloc_trim(0) calls (libc=keep: release() and idle decay give glibc's kept blocks back)")

#endif
