/*
 * OS layer: every mmap, munmap, madvise and mremap the core makes.
 *
 * Errors come back as NULL or a nonzero return; errno is left to the caller
 * to ignore.  Nothing here locks: callers never hold a lock across a syscall
 * that can take long (see zk_cache.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zk_internal.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23   /* Linux 5.14; older kernels answer EINVAL */
#endif

static size_t page_size_cached;

size_t zk_os_page_size(void)
{
    size_t p = page_size_cached;
    if (p == 0) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (size_t)v : 4096;
        page_size_cached = p;   /* benign race: every thread stores the same value */
    }
    return p;
}

uint64_t zk_os_physical_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES);
    return pages > 0 ? (uint64_t)pages * zk_os_page_size() : 0;
}

/* Map bytes at an address aligned to align (a power of two >= the page
 * size).  Over-maps by align and unmaps the slack on both sides, so the
 * result is one exact mapping. */
static void *map_aligned(size_t bytes, size_t align, int prot, int flags)
{
    size_t page = zk_os_page_size();
    if (align <= page) {
        void *p = mmap(NULL, bytes, prot, flags, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    if (bytes > SIZE_MAX - align)
        return NULL;
    size_t span = bytes + align;
    char *raw = mmap(NULL, span, prot, flags, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    char *start = (char *)zk_round_up((uintptr_t)raw, align);
    size_t head = (size_t)(start - raw);
    size_t tail = span - head - bytes;
    if (head)
        munmap(raw, head);
    if (tail)
        munmap(start + bytes, tail);
    return start;
}

void *zk_os_map(size_t bytes, size_t align)
{
    return map_aligned(bytes, align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
}

/* Address space only: PROT_NONE and MAP_NORESERVE cost no memory and no
 * commit charge.  Used as the target of zk_os_move(). */
void *zk_os_reserve(size_t bytes, size_t align)
{
    return map_aligned(bytes, align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
}

void zk_os_unmap(void *p, size_t bytes)
{
    /* munmap of a range we mapped only fails on bad arguments; nothing to do then. */
    (void)munmap(p, bytes);
}

void zk_os_advise_huge(void *p, size_t bytes)
{
#ifdef MADV_HUGEPAGE
    /* EINVAL where THP is compiled out: the advice is an optimisation only. */
    (void)madvise(p, bytes, MADV_HUGEPAGE);
#else
    (void)p; (void)bytes;
#endif
}

/* Drop the pages: the next touch faults in a zero page. */
int zk_os_discard(void *p, size_t bytes)
{
    return madvise(p, bytes, MADV_DONTNEED);
}

/* Let the kernel reclaim the pages under pressure; until it does they stay
 * mapped and warm.  Contents become undefined (zero or old). */
int zk_os_soften(void *p, size_t bytes)
{
#ifdef MADV_FREE
    if (madvise(p, bytes, MADV_FREE) == 0)
        return 0;
#endif
    return madvise(p, bytes, MADV_DONTNEED);   /* kernels before 4.5 */
}

/* Fault every page in now, so a hot loop later does not. */
void zk_os_populate(void *p, size_t bytes)
{
    if (madvise(p, bytes, MADV_POPULATE_WRITE) == 0)
        return;
    /* Older kernel: write one byte per page.  Reading would map the shared
     * zero page and fault again on the first write. */
    size_t page = zk_os_page_size();
    volatile char *c = p;
    for (size_t off = 0; off < bytes; off += page)
        c[off] = c[off];
}

/* Move a mapping onto target (a reservation of new_bytes made by
 * zk_os_reserve) with mremap: page tables move, no byte is copied, and the
 * grown tail reads as zeros.  0 on success; on failure nothing moved. */
int zk_os_move(void *old, size_t old_bytes, void *target, size_t new_bytes)
{
    void *p = mremap(old, old_bytes, new_bytes, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    return p == MAP_FAILED ? -1 : 0;
}
