# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin layer between the C core (cython/zk) and the Python API (zkalloc_np).

It builds the PyDataMem_Handler structs and capsules numpy needs, swaps
numpy's default handler capsule for the process-wide install, and turns the
core's error codes into exceptions.  Decisions live in C or in Python, not here.
"""
from cpython.ref cimport PyObject
from cpython.pycapsule cimport (PyCapsule_New, PyCapsule_GetPointer, PyCapsule_SetPointer,
                               PyCapsule_GetDestructor, PyCapsule_IsValid)
from libc.stdlib cimport malloc, free
from libc.stdint cimport uint8_t, uint64_t, uintptr_t
from libc.string cimport memcpy, strncpy

cimport numpy as cnp

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
    PyObject *PyDataMem_DefaultHandler

cdef extern from "zkalloc.h" nogil:
    enum:
        ZK_OK
        ZK_EINVAL
        ZK_ENOMEM
        ZK_ECORRUPT
        ZK_NCLASSES
    ctypedef enum zk_option:
        ZK_OPT_MIN_BYTES
        ZK_OPT_CACHE_BYTES
        ZK_OPT_HUGEPAGES
        ZK_OPT_LAZY_ZERO_BYTES
        ZK_OPT_THREAD_CACHE_BYTES
        ZK_OPT_ARENA_MIN_BYTES
        ZK_OPT_ADAPTIVE_ZERO
        ZK_OPT_COUNT
    int zk_option_set(zk_option opt, uint64_t value)
    uint64_t zk_option_get(zk_option opt)
    uint64_t zk_option_min(zk_option opt)
    uint64_t zk_option_max(zk_option opt)

    int zk_class_of(size_t nbytes)
    size_t zk_class_bytes(int cls)

    size_t zk_cache_soften()
    size_t zk_cache_release()
    int zk_cache_reserve(size_t nbytes, int count)
    size_t zk_cache_usable(const void *ptr)
    int zk_check(const char **what)
    void zk_zero_reset()

    ctypedef struct zk_fallback:
        void *ctx
        void *(*malloc)(void *ctx, size_t size)
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize)
        void *(*realloc)(void *ctx, void *ptr, size_t new_size)
        void (*free)(void *ctx, void *ptr, size_t size)
    ctypedef struct zk_arena:
        pass
    ctypedef struct zk_route:
        zk_arena *arena
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
        uint64_t hits, misses, small_allocs, foreign_frees, invalid_frees
        uint64_t bytes_in_use, peak_bytes_in_use
        uint64_t bytes_cached, peak_bytes_cached
        uint64_t bytes_mapped, peak_bytes_mapped
        uint64_t evictions, evicted_bytes, uncached_frees, map_failures
        uint64_t calloc_fresh, calloc_memset, calloc_discard, zero_samples
        uint64_t realloc_same, realloc_remap, realloc_copy
        uint64_t softened_bytes, released_bytes
        uint64_t arena_chunks_in_use, arena_chunk_bytes_in_use
        uint64_t secret_arrays, secret_bytes, secret_mapped_bytes, secret_locked_bytes
        uint64_t secret_allocs, secret_wiped_arrays, secret_wiped_bytes
        uint64_t secret_unprotected, secret_failures
        uint64_t class_hits[92]
        uint64_t class_misses[92]
        uint64_t class_in_use[92]
        uint64_t class_cached[92]
    void zk_stats_read(zk_stats_snapshot *out)
    void zk_stats_reset_counters()

    ctypedef struct zk_arena_stats:
        uint64_t arrays, bytes_allocated, live_arrays, live_bytes, peak_bytes
        uint64_t chunks, chunk_bytes, chunks_reused, grown_chunks, rewinds, small_allocs
        uint64_t realloc_in_place, realloc_moved, invalid_frees, failures
        uint64_t escaped_arrays, escaped_bytes, pinned_chunks, reset_ns
        int closed
    zk_arena *zk_arena_create(size_t capacity, size_t min_bytes, size_t first_chunk_bytes)
    zk_route *zk_arena_route(zk_arena *a)
    void zk_arena_reset(zk_arena *a)
    void zk_arena_destroy(zk_arena *a)
    void zk_arena_stats_read(zk_arena *a, zk_arena_stats *out)
    size_t zk_arena_usable(zk_arena *a, const void *ptr)

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
    unsigned zk_secret_last_failure(int *err)
    unsigned zk_secret_probe(int *err)
    void zk_secure_wipe(void *p, size_t n)

cnp.import_array()

HANDLER_NAME = "zkalloc"
NCLASSES = ZK_NCLASSES

# Option ids, in the order of zk_option.
OPTIONS = {
    "min_bytes": ZK_OPT_MIN_BYTES,
    "cache_bytes": ZK_OPT_CACHE_BYTES,
    "hugepages": ZK_OPT_HUGEPAGES,
    "lazy_zero_bytes": ZK_OPT_LAZY_ZERO_BYTES,
    "thread_cache_bytes": ZK_OPT_THREAD_CACHE_BYTES,
    "arena_min_bytes": ZK_OPT_ARENA_MIN_BYTES,
    "adaptive_zero": ZK_OPT_ADAPTIVE_ZERO,
}

#: Secret protections, as bits of secret_info()["protections"].
SECRET_PROTECTIONS = {
    "guarded": ZK_SECRET_GUARDED,
    "locked": ZK_SECRET_LOCKED,
    "dontdump": ZK_SECRET_NODUMP,
    "wipeonfork": ZK_SECRET_WIPEONFORK,
}
SECRET_ALL = ZK_SECRET_ALL

cdef PyDataMem_Handler original_default   # numpy's default, copied at import
cdef PyDataMem_Handler *original_default_ptr
cdef PyDataMem_Handler zk_handler          # name "zkalloc", routes to the cache
cdef PyDataMem_Handler passthrough_handler # numpy's name, frees still checked
cdef PyDataMem_Handler secret_strict_handler
cdef PyDataMem_Handler secret_lenient_handler
cdef zk_fallback fallback


cdef void fill_handler(PyDataMem_Handler *h, const char *name, void *ctx) noexcept:
    strncpy(h.name, name, 126)
    h.name[126] = 0
    h.version = 1
    h.allocator.ctx = ctx
    h.allocator.malloc = zk_h_malloc
    h.allocator.calloc = zk_h_calloc
    h.allocator.realloc = zk_h_realloc
    h.allocator.free = zk_h_free


cdef void setup() except *:
    global original_default_ptr
    original_default_ptr = <PyDataMem_Handler *>PyCapsule_GetPointer(<object>PyDataMem_DefaultHandler, "mem_handler")
    memcpy(&original_default, original_default_ptr, sizeof(PyDataMem_Handler))
    fallback.ctx = original_default.allocator.ctx
    fallback.malloc = original_default.allocator.malloc
    fallback.calloc = original_default.allocator.calloc
    fallback.realloc = original_default.allocator.realloc
    fallback.free = original_default.allocator.free
    zk_handler_set_fallback(&fallback)
    fill_handler(&zk_handler, b"zkalloc", &zk_route_cache)
    fill_handler(&passthrough_handler, original_default.name, &zk_route_passthrough)
    fill_handler(&secret_strict_handler, b"zkalloc-secret", &zk_route_secret_strict)
    fill_handler(&secret_lenient_handler, b"zkalloc-secret", &zk_route_secret_lenient)


setup()

#: The one capsule of the zkalloc handler: installed() sets it, numpy-allocator
#: and other code can compare against it by identity.
handler_capsule = PyCapsule_New(&zk_handler, "mem_handler", NULL)

#: Handlers of secret() blocks, strict and lenient.
secret_capsules = {
    True: PyCapsule_New(&secret_strict_handler, "mem_handler", NULL),
    False: PyCapsule_New(&secret_lenient_handler, "mem_handler", NULL),
}


# ---- phases: one handler capsule per arena --------------------------------
# numpy keeps a reference to the capsule in every array it allocated through
# it, so the capsule (and the arena it owns) lives exactly as long as the last
# such array: the destructor is where the arena may go.

cdef void destroy_arena_capsule(object capsule) noexcept:
    cdef PyDataMem_Handler *h = <PyDataMem_Handler *>PyCapsule_GetPointer(capsule, "mem_handler")
    zk_arena_destroy((<zk_route *>h.allocator.ctx).arena)
    free(h)


cdef zk_arena *arena_of(object capsule) except NULL:
    if not PyCapsule_IsValid(capsule, "mem_handler") or \
            PyCapsule_GetDestructor(capsule) != <void *>destroy_arena_capsule:
        raise TypeError("not a phase capsule")
    cdef PyDataMem_Handler *h = <PyDataMem_Handler *>PyCapsule_GetPointer(capsule, "mem_handler")
    return (<zk_route *>h.allocator.ctx).arena


def arena_capsule(size_t capacity, size_t min_bytes, size_t first_chunk_bytes):
    """A new arena behind its own handler capsule (name "zkalloc-phase")."""
    cdef zk_arena *a
    with nogil:
        a = zk_arena_create(capacity, min_bytes, first_chunk_bytes)
    if a == NULL:
        raise MemoryError(f"phase: could not reserve an arena of {capacity} bytes")
    cdef PyDataMem_Handler *h = <PyDataMem_Handler *>malloc(sizeof(PyDataMem_Handler))
    if h == NULL:
        zk_arena_destroy(a)
        raise MemoryError("phase: no memory for a handler")
    fill_handler(h, b"zkalloc-phase", zk_arena_route(a))
    return PyCapsule_New(h, "mem_handler", destroy_arena_capsule)


def arena_reset(capsule):
    """Close the capsule's arena (O(chunks)); later requests go to the cache."""
    cdef zk_arena *a = arena_of(capsule)
    with nogil:
        zk_arena_reset(a)


def arena_usable(capsule, uintptr_t address):
    """Bytes of the live arena allocation at address, 0 if it is not one."""
    return zk_arena_usable(arena_of(capsule), <void *>address)


def arena_stats(capsule):
    cdef zk_arena_stats st
    zk_arena_stats_read(arena_of(capsule), &st)
    return st


# ---- secret memory ---------------------------------------------------------

def secret_info(uintptr_t address):
    """{data_bytes, mapped_bytes, protections} of a live secret allocation
    starting at address, or None."""
    cdef zk_secret_info info
    if not zk_secret_lookup(<void *>address, &info):
        return None
    return info


def secret_last_failure():
    """(protection bits that failed, errno) of this thread's last secret allocation."""
    cdef int err = 0
    cdef unsigned failed = zk_secret_last_failure(&err)
    return failed, err


def secret_probe():
    """(protection bits that work here, errno of the first that did not)."""
    cdef int err = 0
    cdef unsigned ok
    with nogil:
        ok = zk_secret_probe(&err)
    return ok, err


def secure_wipe(uintptr_t address, size_t nbytes):
    """The wipe secret memory gets on free, on memory the caller owns (tests)."""
    zk_secure_wipe(<void *>address, nbytes)


def set_context_handler(handler):
    """PyDataMem_SetHandler: set `handler` (a capsule, or None for numpy's
    default) in the current context; returns the previous one."""
    return PyDataMem_SetHandler(handler)


def point_default_at_zkalloc(bint on):
    """Make numpy's default handler capsule route to the cache (on) or pass
    every request to numpy's original functions (off).  Either way frees of
    pointers the cache owns come back to it."""
    PyCapsule_SetPointer(<object>PyDataMem_DefaultHandler, &zk_handler if on else &passthrough_handler)


def default_points_at_numpy():
    """Whether numpy's default capsule still holds numpy's own handler."""
    return PyCapsule_GetPointer(<object>PyDataMem_DefaultHandler, "mem_handler") == <void *>original_default_ptr


def usable_bytes(uintptr_t address):
    """Usable size of an in-use cache region starting at address, 0 if the
    cache does not own it."""
    return zk_cache_usable(<void *>address)


cdef zk_option option_id(str name) except *:
    return <zk_option>OPTIONS[name]


def option_set(str name, uint64_t value):
    if zk_option_set(option_id(name), value) != ZK_OK:
        raise ValueError(f"{name}={value} is out of range "
                         f"[{zk_option_min(option_id(name))}, {zk_option_max(option_id(name))}]")


def option_get(str name):
    return zk_option_get(option_id(name))


def option_range(str name):
    return zk_option_min(option_id(name)), zk_option_max(option_id(name))


def class_of(size_t nbytes):
    """Size-class index of a request, or -1 when it is larger than every class."""
    return zk_class_of(nbytes)


def class_bytes(int cls):
    """Bytes of size class cls (0 when out of range)."""
    return zk_class_bytes(cls)


def soften():
    with nogil:
        n = zk_cache_soften()
    return n


def release():
    with nogil:
        n = zk_cache_release()
    return n


def reserve(size_t nbytes, int count):
    cdef int rc
    with nogil:
        rc = zk_cache_reserve(nbytes, count)
    if rc == ZK_EINVAL:
        raise ValueError(f"reserve: nbytes={nbytes} is larger than the largest size class")
    if rc == ZK_ENOMEM:
        raise MemoryError(f"reserve: the kernel refused a region of {nbytes} bytes")
    return rc


def check():
    """Walk the core's structures; raise AssertionError naming a broken invariant."""
    cdef const char *what = NULL
    if zk_check(&what) != ZK_OK:
        raise AssertionError("zkalloc invariant broken: " + what.decode())


def stats_snapshot():
    """Every counter of the core as a dict; per-class arrays as lists."""
    cdef zk_stats_snapshot s
    zk_stats_read(&s)
    cdef dict raw = s
    out = {k: v for k, v in raw.items() if not k.startswith("class_")}
    out["classes"] = [
        (zk_class_bytes(c), s.class_hits[c], s.class_misses[c], s.class_in_use[c], s.class_cached[c])
        for c in range(ZK_NCLASSES)
    ]
    return out


def reset_counters():
    zk_stats_reset_counters()


def reset_zero_policy():
    """Forget what calloc's zeroing policy learned per class (tests)."""
    zk_zero_reset()


# Raw access to the handler functions, for tests of the core through the very
# entry points numpy calls (addresses as ints).
def raw_malloc(size_t size):
    return <uintptr_t>zk_h_malloc(&zk_route_cache, size)


def raw_calloc(size_t nelem, size_t elsize):
    return <uintptr_t>zk_h_calloc(&zk_route_cache, nelem, elsize)


def raw_realloc(uintptr_t address, size_t size):
    return <uintptr_t>zk_h_realloc(&zk_route_cache, <void *>address, size)


def raw_free(uintptr_t address, size_t size=0):
    zk_h_free(&zk_route_cache, <void *>address, size)


# The numpy whose headers this extension was compiled against: setup.py
# passes numpy.__version__ of the build environment as a C string.
cdef extern from *:
    """
    #ifndef ZKALLOC_NUMPY_BUILD_VERSION
    #define ZKALLOC_NUMPY_BUILD_VERSION "unknown"
    #endif
    """
    const char *ZKALLOC_NUMPY_BUILD_VERSION

NUMPY_BUILD_VERSION = (<bytes>ZKALLOC_NUMPY_BUILD_VERSION).decode("ascii")
