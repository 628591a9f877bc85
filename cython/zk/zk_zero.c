/*
 * calloc's zeroing policy for a reused region, learned per size class.
 *
 * A reused region holds old bytes, so np.zeros must clear it.  Two ways:
 *  - memset: ~27 GB/s on resident memory, the right answer when the array is
 *    then written densely (trace columns, accumulators);
 *  - MADV_DONTNEED: free now, but every page touched afterwards faults back
 *    in (~2.4 us per 4 KiB page, ~16x the memset of that page), so it wins
 *    only when well under 1/16 of the pages are touched afterwards (MSM
 *    bucket arrays of which a window touches a handful of buckets).
 * With huge pages a sparse touch after a discard zero-fills a whole 2 MiB
 * page, which is no cheaper than the memset: the discard path therefore also
 * switches the region to 4 KiB pages (MADV_NOHUGEPAGE), and the memset path
 * switches it back.
 *
 * Which way a class goes is measured, not guessed: a region that calloc
 * discarded is flagged, and when it is freed mincore() counts the pages its
 * user touched.  A class whose touched fraction (an average over samples)
 * is under SPARSE_LIMIT is discarded from then on, and every such calloc is
 * itself a sample, so a class that turns dense is noticed.  A dense class
 * is memset, with a sample every `interval` callocs to notice a class that
 * turns sparse; the interval doubles after each dense sample (up to
 * MAX_INTERVAL), so a dense class pays for sampling less and less.
 */
#include "zk_internal.h"

#define FRACTION_ONE 1024u
#define SPARSE_LIMIT (FRACTION_ONE / 32)   /* 1/32: a margin under the 1/16 break-even */
#define MIN_ADAPTIVE_BYTES ((size_t)256 << 10)   /* below this memset is too cheap to matter */
#define FIRST_INTERVAL 4u
#define MAX_INTERVAL 1024u

#define CALLOC_SCORE_MAX 8   /* how many recent requests the calloc share remembers */

typedef struct {
    _Atomic uint32_t touched;      /* average touched fraction, in 1/FRACTION_ONE */
    _Atomic uint32_t countdown;    /* dense class: callocs left before the next sample */
    _Atomic uint32_t interval;
    _Atomic int32_t calloc_score;  /* +1 per calloc, -1 per malloc, within +-CALLOC_SCORE_MAX */
} zero_class;

static zero_class classes[ZK_NCLASSES];

/* Every class starts dense (memset, the safe default), its first sample due
 * at its FIRST_INTERVAL-th reuse. */
void zk_zero_reset(void)
{
    for (int c = 0; c < ZK_NCLASSES; c++) {
        atomic_store_explicit(&classes[c].touched, FRACTION_ONE, memory_order_relaxed);
        atomic_store_explicit(&classes[c].countdown, FIRST_INTERVAL, memory_order_relaxed);
        atomic_store_explicit(&classes[c].interval, FIRST_INTERVAL, memory_order_relaxed);
        atomic_store_explicit(&classes[c].calloc_score, 0, memory_order_relaxed);
    }
}

/* A dense class's turn to sample: true once every `interval` calls. */
static bool sample_due(zero_class *z)
{
    uint32_t left = atomic_fetch_sub_explicit(&z->countdown, 1, memory_order_relaxed);
    if (left > 1 && left <= MAX_INTERVAL)
        return false;
    atomic_store_explicit(&z->countdown, atomic_load_explicit(&z->interval, memory_order_relaxed),
                          memory_order_relaxed);
    return true;
}

zk_zero_way zk_zero_choose(int cls, size_t bytes)
{
    size_t lazy = zk_opt_lazy_zero_bytes();
    if (lazy != 0 && bytes >= lazy)
        return ZK_ZERO_DISCARD;   /* the user asked for it: no learning needed */
    if (!zk_opt_adaptive_zero() || bytes < MIN_ADAPTIVE_BYTES || cls < 0 || cls >= ZK_NCLASSES)
        return ZK_ZERO_MEMSET;
    zero_class *z = &classes[cls];
    if (atomic_load_explicit(&z->touched, memory_order_relaxed) < SPARSE_LIMIT || sample_due(z))
        return ZK_ZERO_SAMPLE;
    return ZK_ZERO_MEMSET;
}

void zk_zero_learn(zk_region *r)
{
    r->flags &= ~ZK_RF_SAMPLE;
    size_t pages = r->sampled_bytes / zk_os_page_size();
    size_t touched = pages != 0 ? zk_os_resident_pages((void *)r->base, r->sampled_bytes) : SIZE_MAX;
    if (touched == SIZE_MAX || r->cls < 0 || r->cls >= ZK_NCLASSES)
        return;
    zk_count(&zk_stats.zero_samples, 1);
    zero_class *z = &classes[r->cls];
    uint32_t sample = (uint32_t)(touched * FRACTION_ONE / pages);
    uint32_t before = atomic_load_explicit(&z->touched, memory_order_relaxed);
    /* Three quarters of the weight on the newest sample: three sparse
     * samples in a row turn a dense class sparse, one dense sample turns it
     * back (the costlier mistake is discarding a class that is written). */
    atomic_store_explicit(&z->touched, (before + 3 * sample) / 4, memory_order_relaxed);
    if (sample < SPARSE_LIMIT) {   /* look again at the next calloc */
        atomic_store_explicit(&z->interval, FIRST_INTERVAL, memory_order_relaxed);
        atomic_store_explicit(&z->countdown, 1, memory_order_relaxed);
        return;
    }
    uint32_t interval = atomic_load_explicit(&z->interval, memory_order_relaxed);
    interval = interval < MAX_INTERVAL ? 2 * interval : MAX_INTERVAL;
    atomic_store_explicit(&z->interval, interval, memory_order_relaxed);
    atomic_store_explicit(&z->countdown, interval, memory_order_relaxed);
}

/* Which requests a class serves, for the background worker (zk_worker.c):
 * zeroing a region ahead pays only when the next request of its class is an
 * np.zeros, and only for a class written densely (a sparse one is
 * discarded, which costs the caller little). */
void zk_zero_note_request(int cls, bool zeroed)
{
    if (cls < 0 || cls >= ZK_NCLASSES)
        return;
    _Atomic int32_t *score = &classes[cls].calloc_score;
    int32_t s = atomic_load_explicit(score, memory_order_relaxed);
    if (zeroed ? s < CALLOC_SCORE_MAX : s > -CALLOC_SCORE_MAX)   /* racy on purpose: a hint */
        atomic_store_explicit(score, s + (zeroed ? 1 : -1), memory_order_relaxed);
}

bool zk_zero_class_dense_calloc(int cls)
{
    if (cls < 0 || cls >= ZK_NCLASSES)
        return false;
    zero_class *z = &classes[cls];
    return atomic_load_explicit(&z->calloc_score, memory_order_relaxed) > 0 &&
           atomic_load_explicit(&z->touched, memory_order_relaxed) >= SPARSE_LIMIT;
}
