/*
 * Size classes: 4 per power of two (1, 1.25, 1.5, 1.75 x 2^k), so rounding a
 * request up to its class wastes at most 25%.
 *
 * Class 0..3 are 4, 8, 12, 16 KiB (below 16 KiB a quarter step is not a whole
 * page).  From 16 KiB on, class 3 + 4*(k-14) + j has 2^k + j * 2^(k-2) bytes.
 * The class of a size is computed from its bits, no table and no loop.
 */
#include "zk_internal.h"

#define SMALL_STEP 4096u
#define FIRST_OCTAVE_LOG2 14   /* 16 KiB */

static int floor_log2(uint64_t x) { return 63 - __builtin_clzll(x); }

int zk_class_of(size_t bytes)
{
    if (bytes <= (size_t)4 * SMALL_STEP)
        return bytes <= SMALL_STEP ? 0 : (int)((bytes - 1) / SMALL_STEP);
    if ((uint64_t)bytes > ZK_MAX_CLASS_BYTES)
        return -1;
    /* bytes-1 lies in [2^k + j*2^(k-2), 2^k + (j+1)*2^(k-2)), so bytes fits
     * class (k, j+1), where (k, 4) is (k+1, 0). */
    uint64_t s = (uint64_t)bytes - 1;
    int k = floor_log2(s);
    int j = (int)((s >> (k - 2)) & 3);
    return 3 + (k - FIRST_OCTAVE_LOG2) * 4 + j + 1;
}

static size_t raw_class_bytes(int cls)
{
    if (cls <= 3)
        return (size_t)(cls + 1) * SMALL_STEP;
    int q = cls - 3;
    int k = FIRST_OCTAVE_LOG2 + q / 4;
    int j = q % 4;
    return ((size_t)1 << k) + (size_t)j * ((size_t)1 << (k - 2));
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
