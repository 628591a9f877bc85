# Declarations (cimported by cython/_core.pyx) of what it uses from numpy's C-API and from the
# core's public header (cython/zk/zkalloc.h).  Names only: every number
# (ZK_NCLASSES, option ids, counter names) and every struct layout comes from
# the C headers at compile time, so nothing here can drift from them.
# The stats snapshots' counters are read through zk_stats_info and
# zk_scope_stats_info (one entry per line of zk_stats_list.h and
# zk_scope_stats_list.h), so this file names none of them.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from cpython.ref cimport PyObject

cdef extern from "Python.h":
    ctypedef enum PyMemAllocatorDomain:
        PYMEM_DOMAIN_RAW
    ctypedef struct PyMemAllocatorEx:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr) noexcept nogil
    void PyMem_GetAllocator(PyMemAllocatorDomain domain, PyMemAllocatorEx *allocator)
    void PyMem_SetAllocator(PyMemAllocatorDomain domain, PyMemAllocatorEx *allocator)

cdef extern from "numpy/ndarraytypes.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil

    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)
    PyObject *PyDataMem_GetHandler()
    PyObject *PyDataMem_DefaultHandler

# The caller probe for CPython (cython/zkpy/zk_py.c): sites and the raw
# domain's phase, read from the interpreter without running Python.
cdef extern from "zk_py.h":
    void zk_py_init(PyObject *(*get_handler)() noexcept, void (*scope_destructor)(object) noexcept)
    int zk_py_skip_files(object prefixes)
    PyObject *zk_py_site_file(uint32_t site, int *line)
    uint32_t zk_py_site_count()
    int zk_py_reads_frames()

cdef extern from "zkalloc.h" nogil:
    enum:
        ZK_OK
        ZK_EINVAL
        ZK_ENOMEM
        ZK_ECORRUPT
        ZK_ECAP
        ZK_EBUSY
        ZK_NCLASSES
        ZK_THP_RANGES
        ZK_SIZE_BUCKETS
        ZK_OPT_COUNT
    ctypedef int zk_option
    ctypedef struct zk_option_info:
        const char *name
        int kind
        uint64_t min, max
        const char *words
    const zk_option_info zk_options_info[]
    int zk_option_set(zk_option opt, uint64_t value)
    uint64_t zk_option_get(zk_option opt)
    void zk_option_apply(zk_option opt)

    int zk_class_of(size_t nbytes)
    size_t zk_class_bytes(int cls)

    size_t zk_cache_soften()
    size_t zk_cache_idle_resident()
    size_t zk_cache_release()
    size_t zk_cache_trim_to(size_t nbytes)
    int zk_cache_reserve(size_t nbytes, int count)
    size_t zk_cache_usable(const void *ptr)
    int zk_check(const char **what)
    int zk_heap_check_maps(const char **what)
    void zk_zero_reset()
    void zk_cache_forget_slack_returns()
    ctypedef struct zk_thp_snapshot:
        uint64_t ns_per_mib[ZK_THP_RANGES][2]
        uint64_t samples[ZK_THP_RANGES][2]
    void zk_thp_read(zk_thp_snapshot *out)
    void zk_thp_reset()
    ctypedef struct zk_zero_policy:
        uint64_t memset_ns_per_mib, fault_ns, touched_per_1024, discard_ns
        int discard
    void zk_zero_read(int cls, zk_zero_policy *out)

    ctypedef struct zk_fallback:
        void *ctx
        void *(*malloc)(void *ctx, size_t size)
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize)
        void *(*realloc)(void *ctx, void *ptr, size_t new_size)
        void (*free)(void *ctx, void *ptr, size_t size)
    ctypedef struct zk_scope:
        pass
    ctypedef struct zk_route:
        zk_scope *scope
    zk_route zk_route_cache
    zk_route zk_route_passthrough
    zk_route zk_route_secret_strict
    zk_route zk_route_secret_lenient
    void zk_handler_set_fallback(const zk_fallback *fallback)
    void *zk_h_malloc(void *ctx, size_t size)
    void *zk_h_calloc(void *ctx, size_t nelem, size_t elsize)
    void *zk_h_realloc(void *ctx, void *ptr, size_t new_size)
    void zk_h_free(void *ctx, void *ptr, size_t size)

    ctypedef struct zk_stats_snapshot:
        uint64_t class_hits[ZK_NCLASSES]
        uint64_t class_misses[ZK_NCLASSES]
        uint64_t class_in_use[ZK_NCLASSES]
        uint64_t class_cached[ZK_NCLASSES]
        uint64_t small_by_log2[ZK_SIZE_BUCKETS]
    ctypedef struct zk_stat_info:
        const char *name
        int kind
        const char *doc
        size_t offset
    const zk_stat_info zk_stats_info[]
    const size_t zk_stats_count
    enum:
        ZK_STAT_COUNTER
        ZK_STAT_GAUGE
        ZK_STAT_PEAK
        ZK_STAT_RECORD
    void zk_stats_read(zk_stats_snapshot *out)
    void zk_stats_reset_counters()

    ctypedef struct zk_scope_stats:
        uint64_t class_live[ZK_NCLASSES]
        uint64_t class_peak[ZK_NCLASSES]
    const zk_stat_info zk_scope_stats_info[]
    const size_t zk_scope_stats_count
    zk_scope *zk_scope_create()
    zk_route *zk_scope_route(zk_scope *s)
    void zk_scope_close(zk_scope *s)
    void zk_scope_destroy(zk_scope *s)
    void zk_scope_stats_read(zk_scope *s, zk_scope_stats *out)
    int zk_scope_owns(zk_scope *s, const void *ptr)
    size_t zk_scope_live(zk_scope *s, uintptr_t *addresses, uint64_t *nbytes, size_t max)
    uint64_t zk_scope_warm(const uint64_t *need, uint64_t peak_bytes)
    void zk_scope_configure(zk_scope *s, int track, uint64_t budget)
    uint64_t zk_scope_serial(zk_scope *s)

    ctypedef struct zk_live_entry:
        uint64_t scope, bytes
        uint32_t site
        int cls
        int origin
    enum:
        ZK_ORIGIN_UNKNOWN
        ZK_ORIGIN_NUMPY
        ZK_ORIGIN_RAW
    ctypedef struct zk_peak_info:
        uint64_t live, in_use, unlisted_bytes, count, snapshots, snapshot_ns
    ctypedef struct zk_peak:
        pass
    size_t zk_peak_read(zk_peak *p, zk_live_entry *out, size_t max, zk_peak_info *info)
    zk_peak *zk_scope_peak(zk_scope *s)
    zk_peak *zk_scope_refusal(zk_scope *s)
    void zk_track_process(int on)
    zk_peak *zk_process_peak()

    enum:
        ZK_SECRET_GUARDED
        ZK_SECRET_LOCKED
        ZK_SECRET_NODUMP
        ZK_SECRET_WIPEONFORK
        ZK_SECRET_ALL
    ctypedef struct zk_secret_info:
        uint64_t data_bytes, mapped_bytes
        unsigned protections
    int zk_secret_lookup(const void *ptr, zk_secret_info *out)
    unsigned zk_secret_block_failures(int *err, uint64_t *count)
    void zk_secret_block_reset()
    unsigned zk_secret_probe(int *err)
    void zk_secure_wipe(void *p, size_t n)

    # Python's raw domain (zk_raw.c) and glibc's big blocks (zk_libc.c)
    enum:
        ZK_LIBC_GLIBC
    ctypedef struct zk_raw_allocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr) noexcept nogil
    int zk_raw_wrap(const zk_raw_allocator *wrapped, zk_raw_allocator *ours)
    int zk_raw_is_hook(const zk_raw_allocator *a)
    void zk_raw_set_active(int on)
    int zk_raw_active()
    int zk_libc_kind()
    void zk_libc_install(int on)
    int zk_libc_applied()
    int zk_libc_trim()

# Test hooks (cython/zk/zk_testing.h: not part of the public header), for
# _core's test helpers (fail_unmaps, pin_zero_costs, pin_thp_costs, decay's injected inputs).
cdef extern from "zk_testing.h" nogil:
    void zk_os_fail_unmaps(unsigned n)
    void zk_zero_pin_costs(uint64_t memset_ns_per_mib, uint64_t fault_ns, uint64_t discard_ns)
    void zk_thp_pin_costs(uint64_t small_ns_per_mib, uint64_t huge_ns_per_mib)
    void zk_decay_set_clock(uint64_t ns)
    void zk_decay_set_cpu(uint64_t ns)
    void zk_decay_set_pressure(int on)
    void zk_decay_set_rss(uint64_t bytes)
    void zk_decay_use_real()
    size_t zk_decay_pass_now()
