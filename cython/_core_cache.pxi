# The cache's maintenance: size classes, soften, release, reserve, trim, check.
# Included by _core.pyx.

def trim_to(size_t nbytes):
    """Give idle regions back to the kernel, oldest first, until the cache
    holds at most nbytes idle; returns the bytes unmapped."""
    cdef size_t n
    with nogil:
        n = zk_cache_trim_to(nbytes)
    return n


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
