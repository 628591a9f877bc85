/*
 * glibc's big blocks: np.fft's scratch (pocketfft), numba's
 * arrays, any C extension's malloc.  They never reach the cache: there is
 * no hook for libc's malloc (glibc 2.34 removed __malloc_hook, and
 * LD_PRELOAD is not ours to set).  What glibc offers is its own tuning,
 * which is what its MALLOC_MMAP_MAX_ / MALLOC_TRIM_THRESHOLD_ variables do
 * at start-up:
 *  - mallopt(M_MMAP_MAX, 0): no block is mmap'd, so none is munmap'd at
 *    free (glibc does that above its mmap threshold, which grows to at most
 *    32 MiB) and faulted afresh the next round;
 *  - a huge M_TRIM_THRESHOLD: free() never trims the heap's top.
 * The memory is then kept by glibc's heap, resident.  It is given back by
 * malloc_trim(0) (free pages anywhere in every arena) from release() and
 * from a decay pass that found the cache's memory idle for decay_ms.
 *
 * Restoring at uninstall(): glibc's documented defaults (65536 mmaps, a
 * 128 KiB trim and mmap threshold).  Setting any of these turns off glibc's
 * dynamic mmap threshold for the rest of the process; there is no call to
 * turn it back on, so blocks between 128 KiB and 32 MiB are mmap'd from
 * then on, as in a fresh process before its first large free.
 *
 * Not glibc (musl, ...): every function is a no-op, zk_libc_kind() says so.
 */
#include "zk_internal.h"

#include <limits.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#define GLIBC_MMAP_MAX_DEFAULT 65536          /* DEFAULT_MMAP_MAX */
#define GLIBC_THRESHOLD_DEFAULT (128 * 1024)  /* DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_THRESHOLD */

static _Atomic int installed;   /* install() in effect */
static _Atomic int applied;     /* the tuning is in effect */

int zk_libc_kind(void)
{
#ifdef __GLIBC__
    return ZK_LIBC_GLIBC;
#else
    return ZK_LIBC_NONE;
#endif
}

#ifdef __GLIBC__
static void keep(void)
{
    /* mallopt takes an int: 2 GiB of free heap top is the most it can keep
     * untrimmed (the environment variable takes a size_t). */
    (void)mallopt(M_MMAP_MAX, 0);
    (void)mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

/* The defaults back, and what glibc kept for us given back now. */
static void restore(void)
{
    (void)mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX_DEFAULT);
    (void)mallopt(M_TRIM_THRESHOLD, GLIBC_THRESHOLD_DEFAULT);
    (void)mallopt(M_MMAP_THRESHOLD, GLIBC_THRESHOLD_DEFAULT);
    (void)malloc_trim(0);
}
#endif

/* Apply or restore to match (installed, setting); one thread at a time is
 * the Python layer's job (its install lock), the exchange only makes a
 * repeated call a no-op. */
static void settle(void)
{
    int want = atomic_load(&installed) && zk_opt_libc_keep() && zk_libc_kind() == ZK_LIBC_GLIBC;
    if (atomic_exchange(&applied, want) == want)
        return;
#ifdef __GLIBC__
    if (want) {
        keep();
        zk_decay_wake();   /* glibc now keeps what it frees: decay trims it when the process idles */
    } else
        restore();
#endif
}

void zk_libc_install(int on)
{
    atomic_store(&installed, on != 0);
    settle();
}

void zk_libc_setting_changed(void) { settle(); }

int zk_libc_applied(void) { return atomic_load(&applied); }

/* mallinfo2 (glibc 2.33) walks every arena's free lists: the decay thread
 * calls it once per idle spell, never a request path. */
size_t zk_libc_free_bytes(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 mi = mallinfo2();
    return mi.fordblks;
#else
    return SIZE_MAX;
#endif
}

int zk_libc_trim(void)
{
    if (!atomic_load_explicit(&applied, memory_order_relaxed))
        return 0;   /* glibc trims by itself then */
    zk_count(&zk_stats.libc_trims, 1);
#ifdef __GLIBC__
    return malloc_trim(0);
#else
    return 0;
#endif
}
