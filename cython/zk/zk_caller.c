/*
 * What the calling thread is doing: the allocation site of a tracked
 * request, and the phase a raw-domain request belongs to.
 *
 * The core knows no language runtime.  The extension registers Python's
 * probe (cython/zkpy/zk_py.c) once at import; it answers by reading the
 * interpreter's state, never by running Python, so it may be asked inside
 * any allocation.  Without a probe (the core's C tests): no site, no phase.
 */
#include "zk_internal.h"

static _Atomic(const zk_caller_probe *) probe;

void zk_set_caller_probe(const zk_caller_probe *p)
{
    atomic_store_explicit(&probe, p, memory_order_release);
}

uint32_t zk_site_now(void)
{
    const zk_caller_probe *p = atomic_load_explicit(&probe, memory_order_acquire);
    return p != NULL && p->site != NULL ? p->site() : 0;
}

struct zk_scope *zk_raw_scope_now(void)
{
    const zk_caller_probe *p = atomic_load_explicit(&probe, memory_order_acquire);
    return p != NULL && p->raw_scope != NULL ? p->raw_scope() : NULL;
}
