/*
 * Size classes: 8 per power of two (1, 1.125, 1.25, ... 1.875 x 2^k), so
 * rounding a request up to its class wastes at most 12.5% (about 6% on
 * average).  zk-alloc uses 4 per power of two (up to 25%); on a working set
 * that moves through many sizes that rounding is resident memory, and it
 * showed in peak RSS against numpy's default, which rounds to a page.
 *
 * Class 0..7 are 4, 8, ... 32 KiB (below 32 KiB an eighth step is not a
 * whole page).  From 32 KiB on, class 7 + 8*(k-15) + j has 2^k + j * 2^(k-3)
 * bytes.  The class of a size is computed from its bits, no table and no
 * loop.
 */
#include "zk_internal.h"

#define SMALL_STEP 4096u
#define SMALL_CLASSES 8
#define FIRST_OCTAVE_LOG2 15   /* 32 KiB */
#define STEPS_LOG2 3           /* 8 classes per power of two */
#define STEPS (1 << STEPS_LOG2)

static int floor_log2(uint64_t x) { return 63 - __builtin_clzll(x); }

int zk_class_of(size_t bytes)
{
    if (bytes <= (size_t)SMALL_CLASSES * SMALL_STEP)
        return bytes <= SMALL_STEP ? 0 : (int)((bytes - 1) / SMALL_STEP);
    if ((uint64_t)bytes > ZK_MAX_CLASS_BYTES)
        return -1;
    /* bytes-1 lies in [2^k + j*2^(k-3), 2^k + (j+1)*2^(k-3)), so bytes fits
     * class (k, j+1), where (k, 8) is (k+1, 0). */
    uint64_t s = (uint64_t)bytes - 1;
    int k = floor_log2(s);
    int j = (int)((s >> (k - STEPS_LOG2)) & (STEPS - 1));
    return SMALL_CLASSES - 1 + (k - FIRST_OCTAVE_LOG2) * STEPS + j + 1;
}

static size_t raw_class_bytes(int cls)
{
    if (cls < SMALL_CLASSES)
        return (size_t)(cls + 1) * SMALL_STEP;
    int q = cls - (SMALL_CLASSES - 1);
    int k = FIRST_OCTAVE_LOG2 + q / STEPS;
    int j = q % STEPS;
    return ((size_t)1 << k) + (size_t)j * ((size_t)1 << (k - STEPS_LOG2));
}

size_t zk_class_bytes(int cls)
{
    if (cls < 0 || cls >= ZK_NCLASSES)
        return 0;
    /* With 64 KiB pages (some aarch64 kernels) small classes round up. */
    return zk_round_up(raw_class_bytes(cls), zk_os_page_size());
}

int zk_class_floor(size_t bytes)
{
    int c = zk_class_of(bytes);
    if (c < 0)
        return ZK_NCLASSES - 1;
    if (c > 0 && zk_class_bytes(c) > bytes)
        c--;
    return c;
}
