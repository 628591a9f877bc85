# Phases: one handler capsule per scope, its statistics, peaks and allocation sites.
# Included by _core.pyx.

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
