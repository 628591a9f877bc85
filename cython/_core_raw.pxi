# Python's raw domain and glibc's big blocks.
# Included by _core.pyx.

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
