# Entry points for the tests only: the handler functions numpy calls, fault injection, and
# the learned policies reset or pinned.  The package does not use them.
# Included by _core.pyx.

def secure_wipe(uintptr_t address, size_t nbytes):
    """The wipe secret memory gets on free, on memory the caller owns (tests)."""
    zk_secure_wipe(<void *>address, nbytes)


def fail_unmaps(unsigned n):
    """Tests: the core's next n munmap calls fail with ENOMEM, as they do when
    the process is at vm.max_map_count."""
    zk_os_fail_unmaps(n)


def zero_policy(int cls):
    """What np.zeros' zeroing policy measured, and its choice for class cls."""
    cdef zk_zero_policy p
    zk_zero_read(cls, &p)
    return p


def reset_thp_policy():
    """Forget the first-touch samples (tests)."""
    zk_thp_reset()


def reset_zero_policy():
    """Forget what np.zeros' zeroing policy learned per class (tests)."""
    zk_zero_reset()


def forget_slack_returns():
    """Forget that dropped slack came back: it is dropped again (tests)."""
    zk_cache_forget_slack_returns()


def pin_thp_costs(uint64_t small_ns_per_mib, uint64_t huge_ns_per_mib):
    """Tests: the first-touch policy chooses huge pages or not with these
    costs (ns per MiB faulted in), not measured ones, until reset_thp_policy()."""
    zk_thp_pin_costs(small_ns_per_mib, huge_ns_per_mib)


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


def raw_current_is_hook():
    """Whether the raw domain's current allocator is zkalloc's hook itself
    (False when another hook, tracemalloc's, wraps it)."""
    cdef PyMemAllocatorEx a
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &a)
    return bool(zk_raw_is_hook(<zk_raw_allocator *>&a))


# Any setter puts decay in manual mode: it reads these instead of the
# machine's clock, CPU time, memory-pressure signals and RSS, and runs a pass only
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


def decay_set_rss(uint64_t nbytes):
    """Tests: the process's RSS reads `nbytes` (0, the default: unknown, and
    the high-water rule is off)."""
    zk_decay_set_rss(nbytes)


def decay_pass():
    """Tests: run one decay pass now with the injected inputs; bytes given back."""
    cdef size_t released
    with nogil:
        released = zk_decay_pass_now()
    return released


def decay_use_real():
    """Tests: decay reads the machine again (and forgets what it saw)."""
    zk_decay_use_real()
