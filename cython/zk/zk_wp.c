/*
 * Write tracking: which pages of a range were written since it was
 * write-protected, asked of the kernel's page tables, not of the memory.
 *
 * Used for regions the background worker zeroed ahead (zk_worker.c).  Such a
 * region is handed to np.zeros without a memset, which is right only if no
 * byte changed since the worker zeroed it.  A correct program never writes
 * an idle region, but a stale pointer can, and it must not turn into an
 * np.zeros that is not zero.  Reading the region back to check costs about
 * what the memset saves; the page tables know it for almost nothing:
 *  - userfaultfd with UFFD_FEATURE_WP_ASYNC (Linux 6.7): in a range
 *    registered for write protection and write-protected, a write faults
 *    and the kernel resolves the fault itself (no handler thread), clearing
 *    the page's uffd-wp bit;
 *  - the PAGEMAP_SCAN ioctl on /proc/self/pagemap (6.7) reports
 *    PAGE_IS_WRITTEN for every present page without that bit.  A page never
 *    faulted in (or discarded) is not written: it reads as zeros.
 * So: the worker zeroes and protects; the hand-out scans (anything written:
 * memset after all) and unprotects, so the new owner's writes take no fault.
 *
 * Cost, measured on the 2-core VM (kernel 6.18): on huge pages protect and
 * unprotect change one entry per 2 MiB, about 20 us each for 96 MiB and
 * 2-20 us for 6 MiB, against ~1 ms and ~46 us to memset them; on 4 KiB pages
 * they change one entry per page at ~100 ns, more than the memset (2.5 ms
 * against 1 ms for 96 MiB).  So only regions on huge pages are zeroed ahead
 * (zk_wp_small_page_bytes tells, zk_worker.c decides).
 *
 * Unprivileged processes may open a userfaultfd only with
 * UFFD_USER_MODE_ONLY (vm.unprivileged_userfaultfd is 0 by default).  That
 * flag concerns faults a handler thread would see; asynchronous write faults
 * are resolved in the kernel whoever wrote, so a read(2) into a stale buffer
 * is tracked too.  Where the kernel, a seccomp filter or a missing /proc
 * refuses any step, tracking is unavailable, nothing is zeroed ahead, and
 * zk_wp_status() says why.
 *
 * What loses the bits, always towards "written", never towards "clean":
 * mremap drops a moved area's registration (we do not ask for
 * UFFD_FEATURE_EVENT_REMAP) and clears its bits; a fork child's copies are
 * unregistered and cleared (no UFFD_FEATURE_EVENT_FORK).  A child must not
 * use the parent's descriptors: the pagemap file it inherited describes the
 * parent.  zk_wp_fork_child() closes them; the child opens its own.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/ioctl.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "zk_internal.h"

/* Newer than the headers of some build machines (Linux 6.1 headers here;
 * 4.18 in the manylinux_2_28 images, which predate write protection): the
 * kernel ABI, from include/uapi/linux/{userfaultfd,fs}.h. */
#ifndef UFFDIO_REGISTER_MODE_WP
#define UFFDIO_REGISTER_MODE_WP ((__u64)1 << 1)
#endif
#ifndef UFFDIO_WRITEPROTECT_MODE_WP
#define UFFDIO_WRITEPROTECT_MODE_WP ((__u64)1 << 0)
struct uffdio_writeprotect {
    struct uffdio_range range;
    __u64 mode;
};
#define UFFDIO_WRITEPROTECT _IOWR(UFFDIO, 0x06, struct uffdio_writeprotect)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef PAGEMAP_SCAN
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_HUGE (1 << 6)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
struct page_region {
    __u64 start, end, categories;
};
struct pm_scan_arg {
    __u64 size, flags, start, end, walk_end, vec, vec_len, max_pages;
    __u64 category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

enum { WP_UNTRIED, WP_READY, WP_REFUSED };

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int state = WP_UNTRIED;
static int uffd = -1, pagemap = -1;
static const char *refused;

static void close_all(void)
{
    if (uffd >= 0)
        close(uffd);
    if (pagemap >= 0)
        close(pagemap);
    uffd = pagemap = -1;
}

static const char *open_all(void)
{
    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (uffd < 0)
        return errno == ENOSYS ? "userfaultfd: not in this kernel"
               : errno == EPERM ? "userfaultfd: not permitted here (seccomp, or vm.unprivileged_userfaultfd)"
                                : "userfaultfd: refused";
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC};
    if (ioctl(uffd, UFFDIO_API, &api) != 0 || !(api.features & UFFD_FEATURE_WP_ASYNC))
        return "userfaultfd: no asynchronous write protection (Linux >= 6.7 needed)";
    pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap < 0)
        return "/proc/self/pagemap: cannot be opened";
    return NULL;
}

/* A scan of nothing: an old kernel answers ENOTTY. */
static const char *probe_scan(void)
{
    struct pm_scan_arg a = {.size = sizeof a};
    return ioctl(pagemap, PAGEMAP_SCAN, &a) == 0 ? NULL : "PAGEMAP_SCAN: not in this kernel (Linux >= 6.7 needed)";
}

bool zk_wp_ready(void)
{
    int s = atomic_load_explicit(&state, memory_order_acquire);
    if (s != WP_UNTRIED)
        return s == WP_READY;
    pthread_mutex_lock(&init_lock);
    if (atomic_load_explicit(&state, memory_order_relaxed) == WP_UNTRIED) {
        const char *why = open_all();
        if (why == NULL)
            why = probe_scan();
        if (why != NULL)
            close_all();
        refused = why;
        atomic_store_explicit(&state, why == NULL ? WP_READY : WP_REFUSED, memory_order_release);
    }
    pthread_mutex_unlock(&init_lock);
    return atomic_load_explicit(&state, memory_order_relaxed) == WP_READY;
}

const char *zk_wp_status(void)
{
    (void)zk_wp_ready();
    return refused;
}

/* Registering again a range that is registered changes nothing, so it is
 * done for every region: a move (mremap) may have dropped it since. */
int zk_wp_register(void *p, size_t bytes)
{
    if (!zk_wp_ready())
        return -1;
    struct uffdio_register reg = {.range = {(uintptr_t)p, bytes}, .mode = UFFDIO_REGISTER_MODE_WP};
    return ioctl(uffd, UFFDIO_REGISTER, &reg) == 0 ? 0 : -1;
}

int zk_wp_protect(void *p, size_t bytes)
{
    struct uffdio_writeprotect wp = {.range = {(uintptr_t)p, bytes}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
    return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) == 0 ? 0 : -1;
}

void zk_wp_unprotect(void *p, size_t bytes)
{
    if (atomic_load_explicit(&state, memory_order_acquire) != WP_READY)
        return;
    struct uffdio_writeprotect wp = {.range = {(uintptr_t)p, bytes}, .mode = 0};
    (void)ioctl(uffd, UFFDIO_WRITEPROTECT, &wp);   /* ENOENT: not registered, nothing protected */
}

/* Has any page of [p, p+bytes) been written since zk_wp_protect?  Any
 * doubt (an unregistered area: PM_SCAN_CHECK_WPASYNC fails) is a yes. */
bool zk_wp_written(void *p, size_t bytes)
{
    if (atomic_load_explicit(&state, memory_order_acquire) != WP_READY)
        return true;
    struct page_region found;
    struct pm_scan_arg a = {
        .size = sizeof a, .flags = PM_SCAN_CHECK_WPASYNC,
        .start = (uintptr_t)p, .end = (uintptr_t)p + bytes,
        .vec = (uintptr_t)&found, .vec_len = 1, .max_pages = 1,
        .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
    };
    return ioctl(pagemap, PAGEMAP_SCAN, &a) != 0;   /* > 0: a written page; < 0: doubt */
}

/* Bytes of [p, p+bytes) that are present but not on huge pages; SIZE_MAX
 * when the kernel cannot tell.  The answer comes in up to VEC pieces; more
 * pieces than that is a range on small pages anyway. */
#define VEC 16
size_t zk_wp_small_page_bytes(void *p, size_t bytes)
{
    if (atomic_load_explicit(&state, memory_order_acquire) != WP_READY)
        return SIZE_MAX;
    struct page_region found[VEC];
    struct pm_scan_arg a = {
        .size = sizeof a, .start = (uintptr_t)p, .end = (uintptr_t)p + bytes,
        .vec = (uintptr_t)found, .vec_len = VEC,
        .category_inverted = PAGE_IS_HUGE, .category_mask = PAGE_IS_HUGE | PAGE_IS_PRESENT,
        .return_mask = PAGE_IS_HUGE,
    };
    long n = ioctl(pagemap, PAGEMAP_SCAN, &a);
    if (n < 0 || n == VEC)
        return n < 0 ? SIZE_MAX : bytes;
    size_t small = 0;
    for (long i = 0; i < n; i++)
        small += (size_t)(found[i].end - found[i].start);
    return small;
}

/* The parent's descriptors describe the parent: close them; the child opens
 * its own when its worker first needs them. */
void zk_wp_fork_child(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    init_lock = fresh;
    close_all();
    refused = NULL;
    atomic_store_explicit(&state, WP_UNTRIED, memory_order_relaxed);
}
