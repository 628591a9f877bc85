# The NEP 49 handlers: numpy's default copied at import, the zkalloc, pass-through and secret
# handlers, the process-wide install (numpy's default capsule pointed at ours).
# Included by _core.pyx.

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
