# Secret memory: what the core knows of a secret array, and what protections work here.
# Included by _core.pyx.

#: Secret protections, as bits of secret_info()["protections"].
SECRET_PROTECTIONS = {
    "guarded": ZK_SECRET_GUARDED,
    "locked": ZK_SECRET_LOCKED,
    "dontdump": ZK_SECRET_NODUMP,
    "wipeonfork": ZK_SECRET_WIPEONFORK,
}
SECRET_ALL = ZK_SECRET_ALL


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
