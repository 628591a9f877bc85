# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin layer between the C core (cython/zk) and the Python API (zkalloc_np).

It builds the PyDataMem_Handler structs and capsules numpy needs, swaps
numpy's default handler capsule for the process-wide install, and turns the
core's error codes into exceptions.  Decisions live in C or in Python, not here.
"""
from cpython.ref cimport PyObject
from cpython.pycapsule cimport (PyCapsule_New, PyCapsule_GetPointer, PyCapsule_SetPointer,
                               PyCapsule_GetDestructor, PyCapsule_IsValid, PyCapsule_SetContext)
from libc.stdlib cimport malloc, free
from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy, memset, strncpy

cimport numpy as cnp

# Every extern (numpy's handler API, the core's zkalloc.h) is declared in
# zkalloc.pxd, beside this file.
from zkalloc cimport *

cnp.import_array()

HANDLER_NAME = "zkalloc"
NCLASSES = ZK_NCLASSES

cdef tuple OPTION_KINDS = ("bytes", "duration", "bool", "choice")


cdef dict describe_option(const zk_option_info *o):
    words = [tuple(w.split("|")) for w in o.words.decode().split(",")] if o.words != NULL else None
    return {"kind": OPTION_KINDS[o.kind], "min": o.min, "max": o.max, "words": words}


#: Every setting, from the core's one table (zk_options.c): name ->
#: {kind: bytes/duration/bool/choice, min, max, words}, words (choices only)
#: the aliases of the values min, min+1, ..., the first how it reads back.
OPTIONS = {zk_options_info[i].name.decode(): describe_option(&zk_options_info[i]) for i in range(ZK_OPT_COUNT)}
cdef dict OPTION_IDS = {name: i for i, name in enumerate(OPTIONS)}

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


cdef void fill_handler(PyDataMem_Handler *h, const char *name, void *ctx) noexcept:
    strncpy(h.name, name, 126)
    h.name[126] = 0
    h.version = 1
    h.allocator.ctx = ctx
    h.allocator.malloc = zk_h_malloc
    h.allocator.calloc = zk_h_calloc
    h.allocator.realloc = zk_h_realloc
    h.allocator.free = zk_h_free


# The core's allocator structs have the shapes of numpy's and CPython's
# (zkalloc.h: zk_fallback is a PyDataMemAllocator, zk_raw_allocator a
# PyMemAllocatorEx: ctx, malloc, calloc, realloc, free), so they are passed
# as they are; checked once here.
if sizeof(zk_fallback) != sizeof(PyDataMemAllocator) or sizeof(zk_raw_allocator) != sizeof(PyMemAllocatorEx):
    raise ImportError("zkalloc: the core's allocator structs do not match numpy's and CPython's")


cdef void setup() except *:
    global original_default_ptr
    original_default_ptr = <PyDataMem_Handler *>PyCapsule_GetPointer(<object>PyDataMem_DefaultHandler, "mem_handler")
    memcpy(&original_default, original_default_ptr, sizeof(PyDataMem_Handler))
    zk_handler_set_fallback(<zk_fallback *>&original_default.allocator)
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


# ---- phases: one handler capsule per scope --------------------------------
# numpy keeps a reference to the capsule in every array it allocated through
# it, so the capsule (and the scope it owns) lives exactly as long as the last
# such array: the destructor is where the scope may go, and no region can
# still carry its tag then.

cdef void destroy_scope_capsule(object capsule) noexcept:
    cdef PyDataMem_Handler *h = <PyDataMem_Handler *>PyCapsule_GetPointer(capsule, "mem_handler")
    zk_scope_destroy((<zk_route *>h.allocator.ctx).scope)
    free(h)


cdef zk_scope *scope_of(object capsule) except NULL:
    if not PyCapsule_IsValid(capsule, "mem_handler") or \
            PyCapsule_GetDestructor(capsule) != <void *>destroy_scope_capsule:
        raise TypeError("not a phase capsule")
    cdef PyDataMem_Handler *h = <PyDataMem_Handler *>PyCapsule_GetPointer(capsule, "mem_handler")
    return (<zk_route *>h.allocator.ctx).scope


def scope_capsule(bint track=False, uint64_t budget=0):
    """A new phase scope behind its own handler capsule (name "zkalloc-phase");
    track: its allocations record their site; budget: live bytes (0: none)."""
    cdef zk_scope *s = zk_scope_create()
    if s == NULL:
        raise MemoryError("phase: no memory for its counters")
    zk_scope_configure(s, track, budget)
    cdef PyDataMem_Handler *h = <PyDataMem_Handler *>malloc(sizeof(PyDataMem_Handler))
    if h == NULL:
        zk_scope_destroy(s)
        raise MemoryError("phase: no memory for a handler")
    fill_handler(h, b"zkalloc-phase", zk_scope_route(s))
    capsule = PyCapsule_New(h, "mem_handler", destroy_scope_capsule)
    PyCapsule_SetContext(capsule, s)   # how the caller probe finds the phase of a context (zk_py.c)
    return capsule


def scope_serial(capsule):
    """The number a peak snapshot's entries name this phase by."""
    return zk_scope_serial(scope_of(capsule))


# The core copies out lists that other threads may grow meanwhile (a peak
# snapshot, a phase's live regions): it returns how many there are, which
# may exceed the room it was given.  One loop copies them all.
ctypedef size_t (*copy_fn)(void *source, void *out, size_t max, void *extra) noexcept nogil


cdef void *copy_all(copy_fn copy, void *source, size_t item, void *extra, size_t *count,
                    size_t *room) except NULL:
    """A malloc'd array (the caller frees it) of every item: *count of them,
    in room for *room."""
    cdef size_t n = copy(source, NULL, 0, extra)
    cdef void *out
    while True:
        n += 16   # it may grow before the copy
        out = malloc(n * item)
        if out == NULL:
            raise MemoryError("zkalloc: no memory to copy a list out of the core")
        count[0] = copy(source, out, n, extra)
        if count[0] <= n:
            room[0] = n
            return out
        free(out)
        n = count[0]


cdef size_t copy_peak(void *peak, void *out, size_t max, void *info) noexcept nogil:
    return zk_peak_read(<zk_peak *>peak, <zk_live_entry *>out, max, <zk_peak_info *>info)


cdef size_t copy_scope_live(void *scope, void *out, size_t max, void *unused) noexcept nogil:
    # out holds max addresses, then max byte counts
    cdef uint64_t *nbytes = <uint64_t *>(<uintptr_t *>out + max) if out != NULL else NULL
    return zk_scope_live(<zk_scope *>scope, <uintptr_t *>out, nbytes, max)


cdef tuple read_peak(zk_peak *p):
    cdef zk_peak_info info
    cdef size_t got, room
    cdef zk_live_entry *entries = <zk_live_entry *>copy_all(copy_peak, p, sizeof(zk_live_entry), &info, &got, &room)
    out = [(entries[i].scope, entries[i].bytes, entries[i].site, entries[i].cls, entries[i].origin)
           for i in range(got)]
    free(entries)
    return info, out


def scope_peak(capsule):
    """({live, in_use, unlisted_bytes, count}, [(scope serial, requested bytes, site, class, origin)])
    of what was live when the phase's live bytes last grew by 1/16; origin:
    ORIGIN_NUMPY, ORIGIN_RAW or ORIGIN_UNKNOWN."""
    return read_peak(zk_scope_peak(scope_of(capsule)))


def scope_refusal(capsule):
    """The same, taken when the phase's budget last refused a request."""
    return read_peak(zk_scope_refusal(scope_of(capsule)))


def track_process(bint on):
    """run --peak: record sites and snapshots at the process's peaks (on starts afresh)."""
    zk_track_process(on)


# Who asked for a region a peak snapshot lists (zk_live_entry.origin).
ORIGIN_UNKNOWN = ZK_ORIGIN_UNKNOWN
ORIGIN_NUMPY = ZK_ORIGIN_NUMPY
ORIGIN_RAW = ZK_ORIGIN_RAW


def process_peak():
    """The process's peak snapshot, as scope_peak()."""
    return read_peak(zk_process_peak())


# Allocation sites and the raw domain's phase: the core asks the caller
# probe (cython/zkpy/zk_py.c), which reads the interpreter's frames and
# numpy's handler contextvar without running Python.  Registered here, at
# import, before any hook is set.
zk_py_init(<PyObject *(*)() noexcept>PyDataMem_GetHandler, destroy_scope_capsule)


def site_skip_files(tuple prefixes):
    """Frames whose file starts with one of these folder prefixes (str, at
    most 4) are not a site: the caller's line is."""
    if zk_py_skip_files(prefixes) != 0:
        raise ValueError(f"site_skip_files: expected a tuple of at most 4 str, got {prefixes!r}")


def site_where(uint32_t site):
    """(co_filename, line) of a site number, None for 0 (unknown) and
    numbers never handed out.  Read outside the allocator, with the GIL."""
    cdef int line = 0
    cdef PyObject *filename = zk_py_site_file(site, &line)
    if filename == NULL:
        return None
    return <object>filename, line


def site_count():
    """Distinct allocation sites recorded so far."""
    return zk_py_site_count()


#: Whether this build reads frames at all (else every site is unknown).
SITES_READ_FRAMES = bool(zk_py_reads_frames())


def scope_close(capsule):
    """End the phase: later requests through the capsule are plain cache requests."""
    zk_scope_close(scope_of(capsule))


def scope_owns(capsule, uintptr_t address):
    """Whether address starts a live region the capsule's phase allocated."""
    return bool(zk_scope_owns(scope_of(capsule), <void *>address))


def scope_stats(capsule):
    """The phase's statistics as a dict (the names of SCOPE_STATS), with
    class_live / class_peak as {class bytes: count} of the classes that have any."""
    cdef zk_scope_stats st
    zk_scope_stats_read(scope_of(capsule), &st)
    cdef dict live = {}, peak = {}
    cdef int c
    for c in range(ZK_NCLASSES):
        if st.class_live[c]:
            live[zk_class_bytes(c)] = st.class_live[c]
        if st.class_peak[c]:
            peak[zk_class_bytes(c)] = st.class_peak[c]
    out = read_stats(zk_scope_stats_info, zk_scope_stats_count, &st)
    out["class_live"], out["class_peak"] = live, peak
    return out


def scope_live(capsule):
    """[(address, requested bytes)] of the phase's live regions (walks every descriptor)."""
    cdef size_t got, room
    cdef uintptr_t *addresses = <uintptr_t *>copy_all(copy_scope_live, scope_of(capsule),
                                                     sizeof(uintptr_t) + sizeof(uint64_t), NULL, &got, &room)
    cdef uint64_t *nbytes = <uint64_t *>(addresses + room)   # as copy_scope_live laid them out
    out = [(addresses[i], nbytes[i]) for i in range(got)]
    free(addresses)
    return out


def warm(dict need, uint64_t peak_bytes):
    """Hot start: make sure need[class bytes] idle regions of each class are
    resident, faulting in at most peak_bytes less the idle bytes cached,
    best effort; returns the bytes it mapped fresh."""
    cdef uint64_t counts[ZK_NCLASSES]
    cdef uint64_t added
    cdef int cls
    memset(counts, 0, sizeof(counts))
    for nbytes, count in need.items():
        cls = zk_class_of(nbytes)
        if cls < 0 or cls >= ZK_NCLASSES:
            raise ValueError(f"warm: {nbytes} bytes is larger than the largest class")
        counts[cls] += count
    with nogil:
        added = zk_scope_warm(counts, peak_bytes)
    return added


def trim_to(size_t nbytes):
    """Give idle regions back to the kernel, oldest first, until the cache
    holds at most nbytes idle; returns the bytes unmapped."""
    cdef size_t n
    with nogil:
        n = zk_cache_trim_to(nbytes)
    return n


# ---- secret memory ---------------------------------------------------------

def secret_info(uintptr_t address):
    """{data_bytes, mapped_bytes, protections} of a live secret allocation
    starting at address, or None."""
    cdef zk_secret_info info
    if not zk_secret_lookup(<void *>address, &info):
        return None
    return info


def secret_block_failures():
    """(protection bits that failed, errno of the first, allocations
    affected) on this thread since secret_block_reset()."""
    cdef int err = 0
    cdef uint64_t count = 0
    cdef unsigned failed = zk_secret_block_failures(&err, &count)
    return failed, err, count


def secret_block_reset():
    zk_secret_block_reset()


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


def default_points_at_zkalloc():
    """Whether numpy's default capsule routes to the cache (install() is in effect)."""
    return PyCapsule_GetPointer(<object>PyDataMem_DefaultHandler, "mem_handler") == <void *>&zk_handler


def usable_bytes(uintptr_t address):
    """Usable size of an in-use cache region starting at address, 0 if the
    cache does not own it."""
    return zk_cache_usable(<void *>address)


cdef zk_option option_id(str name) except *:
    return <zk_option>OPTION_IDS[name]


def option_store(str name, uint64_t value):
    """Store a setting's value, validated by the caller (zkalloc_np._settings);
    it takes effect with option_apply."""
    if zk_option_set(option_id(name), value) != ZK_OK:
        raise ValueError(f"{name}={value} is out of range")


def option_apply(str name):
    """What a stored change does now (evict to a lower cap, reschedule decay, glibc's tuning)."""
    zk_option_apply(option_id(name))


def option_get(str name):
    return zk_option_get(option_id(name))


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


def idle_resident():
    """Bytes of the cache's idle regions resident now (mincore)."""
    with nogil:
        n = zk_cache_idle_resident()
    return n


def release():
    """Unmap every idle region, then give glibc's kept blocks back too
    (libc=keep): the effects of a release are applied here, above the core's
    cache (zk_cache_release does not trim glibc)."""
    with nogil:
        n = zk_cache_release()
        zk_libc_trim()
    return n


RESERVE_OVER_CAP = ZK_ECAP   # reserve_raw(): the cap could never keep that much


def reserve_raw(size_t nbytes, int count):
    """zk_cache_reserve's code as it is (RESERVE_OVER_CAP, or what reserve() returns)."""
    cdef int rc
    with nogil:
        rc = zk_cache_reserve(nbytes, count)
    if rc == ZK_ECAP:
        return rc
    if rc == ZK_EINVAL:
        raise ValueError(f"reserve: nbytes={nbytes} is larger than the largest size class")
    if rc == ZK_ENOMEM:
        raise MemoryError(f"reserve: the kernel refused a region of {nbytes} bytes")
    return rc


CHECK_BUSY = "busy"   # check(): other threads' requests kept the totals moving


def check():
    """Walk the core's structures, then compare its segments with
    /proc/self/maps: None when every invariant holds, CHECK_BUSY when other
    threads' requests kept changing what it compares (nothing it could see
    was broken), else the first broken one, named."""
    cdef const char *what = NULL
    cdef int rc
    with nogil:
        rc = zk_check(&what)
        if rc == ZK_OK:
            rc = zk_heap_check_maps(&what)
    if rc == ZK_OK:
        return None
    return CHECK_BUSY if rc == ZK_EBUSY else what.decode()


def fail_unmaps(unsigned n):
    """Tests: the core's next n munmap calls fail with ENOMEM, as they do when
    the process is at vm.max_map_count."""
    zk_os_fail_unmaps(n)


def thp_snapshot():
    """First-touch samples per size range: [(ns_per_mib_small, ns_per_mib_huge,
    samples_small, samples_huge), ...] for 2-16 MiB, 16-128 MiB, >= 128 MiB."""
    cdef zk_thp_snapshot t
    zk_thp_read(&t)
    return [(t.ns_per_mib[i][0], t.ns_per_mib[i][1], t.samples[i][0], t.samples[i][1])
            for i in range(ZK_THP_RANGES)]


def zero_policy(int cls):
    """What np.zeros' zeroing policy measured, and its choice for class cls."""
    cdef zk_zero_policy p
    zk_zero_read(cls, &p)
    return p


def reset_thp_policy():
    """Forget the first-touch samples (tests)."""
    zk_thp_reset()


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


def reset_zero_policy():
    """Forget what np.zeros' zeroing policy learned per class (tests)."""
    zk_zero_reset()


def pin_zero_costs(uint64_t memset_ns_per_mib, uint64_t fault_ns, uint64_t discard_ns):
    """Tests: the zeroing policy decides with these costs, not measured ones,
    until reset_zero_policy()."""
    zk_zero_pin_costs(memset_ns_per_mib, fault_ns, discard_ns)


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


# ---- Python's raw domain and glibc's big blocks ---------------------------
# The raw-domain hook (cython/zk/zk_raw.c) wraps the allocator current when it
# is set, as tracemalloc does, and is never removed; glibc's tuning lives in
# cython/zk/zk_libc.c.  Decisions (when to hook, when to decline) are made in
# zkalloc_np/_raw.py.

def raw_allocator_id():
    """The raw domain's current allocator as (ctx, malloc, calloc, realloc,
    free) addresses: what changed it since is told by comparing two."""
    cdef PyMemAllocatorEx a
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &a)
    return (<uintptr_t>a.ctx, <uintptr_t>a.malloc, <uintptr_t>a.calloc, <uintptr_t>a.realloc, <uintptr_t>a.free)


def raw_current_is_hook():
    """Whether the raw domain's current allocator is zkalloc's hook itself
    (False when another hook, tracemalloc's, wraps it)."""
    cdef PyMemAllocatorEx a
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &a)
    return bool(zk_raw_is_hook(<zk_raw_allocator *>&a))


def raw_hook():
    """Wrap the raw domain's current allocator with zkalloc's hook (once;
    the hook is never removed).  False when it was set before."""
    cdef PyMemAllocatorEx current, ours
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &current)
    if zk_raw_wrap(<zk_raw_allocator *>&current, <zk_raw_allocator *>&ours) != ZK_OK:
        return False
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &ours)
    return True


def raw_set_active(bint on):
    """1: raw requests of min_bytes and more come from the cache; 0: pass-through."""
    zk_raw_set_active(on)


def raw_active():
    return bool(zk_raw_active())


def libc_is_glibc():
    return zk_libc_kind() == ZK_LIBC_GLIBC


def libc_install(bint on):
    """install() (on) / uninstall(): glibc's tuning applied per the libc
    setting, or glibc's defaults restored."""
    zk_libc_install(on)


def libc_applied():
    return bool(zk_libc_applied())


# ---- tests only: decay's inputs injected (cython/zk/zk_decay.c) ------------
# Any setter puts decay in manual mode: it reads these instead of the
# machine's clock, CPU time and memory-pressure signals, and runs a pass only
# when decay_pass() asks.  decay_use_real() ends it.

def decay_set_clock(uint64_t ns):
    """Tests: decay's monotonic clock reads `ns` (regions freed from now on
    are stamped with it)."""
    zk_decay_set_clock(ns)


def decay_set_cpu_ns(uint64_t ns):
    """Tests: the process's CPU time (user + sys) reads `ns`."""
    zk_decay_set_cpu(ns)


def decay_set_pressure(bint on):
    """Tests: the memory-pressure reading (MemAvailable, PSI, cgroup events)."""
    zk_decay_set_pressure(on)


def decay_pass():
    """Tests: run one decay pass now with the injected inputs; bytes given back."""
    cdef size_t released
    with nogil:
        released = zk_decay_pass_now()
    return released


def decay_use_real():
    """Tests: decay reads the machine again (and forgets what it saw)."""
    zk_decay_use_real()
