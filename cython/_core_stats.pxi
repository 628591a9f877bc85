# Statistics: the process's and a phase's, read through the core's info tables by name.
# Included by _core.pyx.

cdef tuple STAT_KINDS = ("counter", "gauge", "peak", "record")


cdef tuple describe_stats(const zk_stat_info *info, size_t count):
    return tuple((info[i].name.decode(), STAT_KINDS[info[i].kind], info[i].doc.decode()) for i in range(count))


cdef dict read_stats(const zk_stat_info *info, size_t count, const void *snapshot):
    """{name: value} of every listed uint64_t of a snapshot struct."""
    cdef const char *base = <const char *>snapshot
    return {info[i].name.decode(): (<const uint64_t *>(base + info[i].offset))[0] for i in range(count)}


#: Every scalar statistic, in the core's order (cython/zk/zk_stats_list.h):
#: (name, kind, doc), kind one of "counter", "gauge", "peak".
STATS = describe_stats(zk_stats_info, zk_stats_count)

#: Every statistic of a phase, the same way (cython/zk/zk_scope_stats_list.h);
#: kind "record" too: a value stored at one moment.
SCOPE_STATS = describe_stats(zk_scope_stats_info, zk_scope_stats_count)

def thp_snapshot():
    """First-touch samples per size range: [(ns_per_mib_small, ns_per_mib_huge,
    samples_small, samples_huge), ...] for 2-16 MiB, 16-128 MiB, >= 128 MiB."""
    cdef zk_thp_snapshot t
    zk_thp_read(&t)
    return [(t.ns_per_mib[i][0], t.ns_per_mib[i][1], t.samples[i][0], t.samples[i][1])
            for i in range(ZK_THP_RANGES)]


def stats_snapshot():
    """Every statistic of the core as a dict (the names of STATS), with
    "classes": [(class bytes, hits, misses, in use, cached)] and
    "small_by_log2": the small requests by bit length."""
    cdef zk_stats_snapshot s
    zk_stats_read(&s)
    out = read_stats(zk_stats_info, zk_stats_count, &s)
    out["classes"] = [
        (zk_class_bytes(c), s.class_hits[c], s.class_misses[c], s.class_in_use[c], s.class_cached[c])
        for c in range(ZK_NCLASSES)
    ]
    out["small_by_log2"] = [s.small_by_log2[b] for b in range(ZK_SIZE_BUCKETS)]
    return out


def reset_counters():
    zk_stats_reset_counters()
