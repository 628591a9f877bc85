/*
 * calloc's zeroing policy for a reused region, learned per size class.
 *
 * A reused region holds old bytes, so np.zeros must clear it.  Two ways:
 *  - memset: the right answer when the array is then written densely
 *    (trace columns, accumulators);
 *  - MADV_DONTNEED: the call, then every page touched afterwards faults back
 *    in, zero-filled by the kernel; it wins only when few pages are touched
 *    afterwards (MSM bucket arrays of which a window touches a handful).
 * With huge pages a sparse touch after a discard zero-fills a whole 2 MiB
 * page, which is no cheaper than the memset: the discard path therefore also
 * switches the region to 4 KiB pages (MADV_NOHUGEPAGE), and the memset path
 * switches it back.
 *
 * A dense class's np.zeros of 64 MiB and more on huge pages takes a third
 * way: MADV_DONTNEED of its whole 2 MiB pages, which its user's writes
 * fault back in as huge pages, each zeroed by the kernel just before it is
 * written (the last partial one is memset).  A memset is a pass over memory of its own, out of the CPU's
 * caches by the time the user writes the region: np.zeros of 256 MiB
 * filled took 53 ms a round after a memset, 45 under numpy's default,
 * which gets fresh huge pages the same way.  Not where 4 KiB pages were
 * measured the cheaper first touch (zk_thp.c), nor with hugepages=0.
 *
 * Which way a class goes is measured, not guessed, on both sides:
 *  - what the class's users touch: a region given lazily (a fresh one, or
 *    one calloc discarded) is flagged, and when it is freed mincore()
 *    counts the pages its user touched (an average over samples, per
 *    class).  The same measurement tells the first-touch policy (zk_thp.c)
 *    which classes write their regions whole;
 *  - what each way costs on this machine: memsets are timed (bandwidth, per
 *    MiB), discards are timed per class (the call's cost grows with the
 *    pages present), and a page fault costs what the first-touch policy
 *    measured for 4 KiB pages (zk_thp.c).  Machines differ more than one
 *    constant can say: on the 2-core EPYC VM a memset of zeros ran at
 *    60-140 GB/s and a fault cost 1.5-10 us.
 * RSS counts as well as time: a memset makes every page of the region
 * resident, where numpy's default (fresh zeros from the kernel) keeps only
 * the touched ones.  So a class that touches less than a quarter of its
 * regions, or a region with few pages present whose class is not dense,
 * is discarded whatever the timings say; otherwise it is discarded when the
 * estimate says that is cheaper.  A discarded class is measured again every
 * `interval` discards (doubling to MAX_SPARSE_INTERVAL while the samples
 * agree: a mincore at every free cost msm_windows a third of its round);
 * a memset class every `interval` callocs (doubling to MAX_INTERVAL), to
 * notice a class that turns sparse.
 */
#include <string.h>

#include "zk_internal.h"

typedef enum {
    ZK_ZERO_MEMSET,     /* memset the region (huge pages back on) */
    ZK_ZERO_REFAULT,    /* a dense class on huge pages: MADV_DONTNEED whole, faulted back in 2 MiB at a time */
    ZK_ZERO_DISCARD,    /* lazy_zero_bytes asked for MADV_DONTNEED */
    ZK_ZERO_SAMPLE,     /* MADV_DONTNEED on 4 KiB pages, then learn from it at free */
    ZK_ZERO_SPARSE,     /* the same, not measured this time (a class shown sparse, between samples) */
} zk_zero_way;

#define FRACTION_ONE 1024u
#define MIN_ADAPTIVE_BYTES ((size_t)256 << 10)   /* below this memset is too cheap to matter */
#define PAGE_BYTES ((uint64_t)4096)
/* Before anything is measured: the costs the old fixed rule assumed (memset
 * at ~27 GB/s, 2.4 us a fault, a free call), which discards below ~1/16 of
 * the pages touched. */
#define DEFAULT_MEMSET_NS_PER_MIB 38800u
#define DEFAULT_FAULT_NS 2400u
#define FIRST_INTERVAL 4u
/* A class whose users touch at least DENSE of a lazily given region writes
 * its regions whole: fresh ones are faulted in at once and may take huge
 * pages (zk_thp.c).  Below BARELY a class "barely touches" its regions:
 * zeroing them by memset would make resident what its users never touch
 * (4x what they do, or more), so they are discarded whatever the timings
 * say: RSS follows the touched pages.  A region measured below FEW has few
 * pages present: a memset would fault the rest in. */
#define DENSE (FRACTION_ONE * 7 / 8)
#define BARELY (FRACTION_ONE / 4)
#define FEW (FRACTION_ONE / 2)
/* A sparse class is measured again every interval-th discard, the interval
 * doubling while samples agree: a mincore at every free cost msm_windows
 * a third of its round. */
#define MAX_SPARSE_INTERVAL 16u
#define MAX_INTERVAL 1024u
/* Wherever the kernel finds no free huge page a refault costs a fault per
 * 4 KiB page: numpy's core tests under install() made 87k minor faults
 * with memsets only, about 90k when regions from 16 MiB were refaulted
 * (the bound: 88k), 86k from 64 MiB. */
#define REFAULT_MIN_BYTES ((size_t)64 << 20)

typedef struct {
    _Atomic uint32_t touched;      /* average touched fraction, in 1/FRACTION_ONE */
    _Atomic uint32_t samples;      /* how many measurements that average holds */
    _Atomic uint32_t countdown;    /* dense class: callocs left before the next sample */
    _Atomic uint32_t interval;
    _Atomic uint32_t discard_ns;   /* what a discard of this class's regions costs (follow_fastest) */
} zero_class;

static zero_class classes[ZK_NCLASSES];
static _Atomic uint32_t memset_ns_per_mib = DEFAULT_MEMSET_NS_PER_MIB;
/* Tests: costs given by zk_zero_pin_costs, no measurement followed. */
static _Atomic bool pinned;
static _Atomic uint32_t pinned_fault_ns;

/* A cost follows its fastest recent measurements: a lower sample wins at
 * once, a higher one raises the estimate by 1/64 at most (0: none yet, the
 * sample is taken).  Slow samples are mostly not the cost asked about: a
 * memset over pages a discard took away (or a fresh region never touched)
 * also pays their faults, up to 100x a memset of resident pages; a discard
 * or memset whose thread was preempted took a scheduler slice.  With the
 * newest sample weighted 3/4, one such outlier kept a sparse class on
 * memset for good (it was never discarded again, so never re-measured).
 * A machine that really got slower is still followed, 1/64 a sample. */
static void follow_fastest(_Atomic uint32_t *cost, uint64_t sample)
{
    uint32_t before = atomic_load_explicit(cost, memory_order_relaxed);
    uint64_t ceiling = (uint64_t)before + before / 64 + 1;
    uint64_t now = before == 0 || sample < ceiling ? sample : ceiling;
    atomic_store_explicit(cost, now > UINT32_MAX ? UINT32_MAX : (uint32_t)now, memory_order_relaxed);
}

void zk_zero_timed_memset(size_t bytes, uint64_t ns)
{
    if (bytes >= MIN_ADAPTIVE_BYTES && !atomic_load_explicit(&pinned, memory_order_relaxed))
        follow_fastest(&memset_ns_per_mib, ns * ((uint64_t)1 << 20) / bytes);
}

/* The first adaptive decision measures a memset of resident memory once:
 * the regions' own first memsets usually fault (a fresh region handed to
 * np.zeros stays lazy), so they cannot say what a memset costs. */
#define CALIBRATION_BYTES ((size_t)2 << 20)
static _Atomic bool calibrated;

static void calibrate_memset(void)
{
    if (atomic_exchange_explicit(&calibrated, true, memory_order_relaxed))
        return;
    void *p = zk_os_map(CALIBRATION_BYTES, zk_os_page_size());
    if (p == NULL)
        return;   /* the default stays */
    (void)zk_os_populate(p, CALIBRATION_BYTES);
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 3; i++) {
        uint64_t t0 = zk_thp_now_ns();
        memset(p, 0, CALIBRATION_BYTES);
        uint64_t ns = zk_thp_now_ns() - t0;
        best = ns < best ? ns : best;
    }
    (void)zk_os_unmap(p, CALIBRATION_BYTES);
    uint64_t per_mib = best * ((uint64_t)1 << 20) / CALIBRATION_BYTES;
    atomic_store_explicit(&memset_ns_per_mib, per_mib > UINT32_MAX ? UINT32_MAX : (uint32_t)per_mib,
                          memory_order_relaxed);
}

void zk_zero_timed_discard(int cls, uint64_t ns)
{
    if (cls >= 0 && cls < ZK_NCLASSES && !atomic_load_explicit(&pinned, memory_order_relaxed))
        follow_fastest(&classes[cls].discard_ns, ns);
}

static uint64_t fault_ns(void)
{
    if (atomic_load_explicit(&pinned, memory_order_relaxed))
        return atomic_load_explicit(&pinned_fault_ns, memory_order_relaxed);
    uint64_t fault = zk_thp_small_page_fault_ns();
    return fault != 0 ? fault : DEFAULT_FAULT_NS;
}

/* Is discarding a region of `bytes` of class z, whose users touch `touched`
 * (in 1/FRACTION_ONE of its pages), cheaper than a memset of it? */
static bool discard_pays(zero_class *z, size_t bytes, uint32_t touched)
{
    uint64_t fault = fault_ns();
    uint64_t pages = bytes / PAGE_BYTES;
    uint64_t discard = atomic_load_explicit(&z->discard_ns, memory_order_relaxed) +
                       pages * touched / FRACTION_ONE * fault;
    uint64_t memset_ns = (uint64_t)atomic_load_explicit(&memset_ns_per_mib, memory_order_relaxed) * bytes >> 20;
    return discard < memset_ns;
}

/* Every class starts dense (memset, the safe default), its first sample due
 * at its FIRST_INTERVAL-th reuse. */
void zk_zero_reset(void)
{
    for (int c = 0; c < ZK_NCLASSES; c++) {
        atomic_store_explicit(&classes[c].touched, FRACTION_ONE, memory_order_relaxed);
        atomic_store_explicit(&classes[c].samples, 0, memory_order_relaxed);
        atomic_store_explicit(&classes[c].countdown, FIRST_INTERVAL, memory_order_relaxed);
        atomic_store_explicit(&classes[c].interval, FIRST_INTERVAL, memory_order_relaxed);
        atomic_store_explicit(&classes[c].discard_ns, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&memset_ns_per_mib, DEFAULT_MEMSET_NS_PER_MIB, memory_order_relaxed);
    atomic_store_explicit(&calibrated, false, memory_order_relaxed);
    atomic_store_explicit(&pinned, false, memory_order_relaxed);
}

static uint32_t clamp32(uint64_t v) { return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; }

/* What a class's users touch is learned as always; what each way costs is
 * what the caller says, so a test of the decisions does not depend on how
 * loaded the machine was when it timed them. */
void zk_zero_pin_costs(uint64_t memset_ns_per_mib_now, uint64_t fault_ns_now, uint64_t discard_ns_now)
{
    atomic_store_explicit(&pinned, true, memory_order_relaxed);
    atomic_store_explicit(&calibrated, true, memory_order_relaxed);
    atomic_store_explicit(&memset_ns_per_mib, clamp32(memset_ns_per_mib_now), memory_order_relaxed);
    atomic_store_explicit(&pinned_fault_ns, clamp32(fault_ns_now), memory_order_relaxed);
    for (int c = 0; c < ZK_NCLASSES; c++)
        atomic_store_explicit(&classes[c].discard_ns, clamp32(discard_ns_now), memory_order_relaxed);
}

/* A class's turn to be measured: true once every `interval` calls. */
static bool sample_due(zero_class *z)
{
    uint32_t left = atomic_fetch_sub_explicit(&z->countdown, 1, memory_order_relaxed);
    if (left > 1 && left <= MAX_INTERVAL)
        return false;
    atomic_store_explicit(&z->countdown, atomic_load_explicit(&z->interval, memory_order_relaxed),
                          memory_order_relaxed);
    return true;
}

/* A dense class's region whose zeros may come from huge-page faults. */
static bool refault_pays(size_t bytes)
{
    return bytes >= REFAULT_MIN_BYTES && zk_opt_hugepages() && !zk_thp_small_pages_cheaper(bytes);
}

static zk_zero_way choose(int cls, size_t bytes, bool few_present)
{
    size_t lazy = zk_opt_lazy_zero_bytes();
    if (lazy != 0 && bytes >= lazy)
        return ZK_ZERO_DISCARD;   /* the user asked for it: no learning needed */
    if (!zk_opt_adaptive_zero() || bytes < MIN_ADAPTIVE_BYTES || cls < 0 || cls >= ZK_NCLASSES)
        return ZK_ZERO_MEMSET;
    if (!atomic_load_explicit(&calibrated, memory_order_relaxed))
        calibrate_memset();
    zero_class *z = &classes[cls];
    uint32_t touched = atomic_load_explicit(&z->touched, memory_order_relaxed);
    /* RSS first: a barely touched class, or a region with few pages present
     * whose class is not dense (a memset would fault in all the others). */
    if (touched < BARELY || (few_present && touched < DENSE) || discard_pays(z, bytes, touched))
        return sample_due(z) ? ZK_ZERO_SAMPLE : ZK_ZERO_SPARSE;
    if (sample_due(z))
        return ZK_ZERO_SAMPLE;
    return zk_touch_dense(cls) && refault_pays(bytes) ? ZK_ZERO_REFAULT : ZK_ZERO_MEMSET;
}

bool zk_touch_dense(int cls)
{
    if (cls < 0 || cls >= ZK_NCLASSES)
        return false;
    zero_class *z = &classes[cls];
    return atomic_load_explicit(&z->samples, memory_order_relaxed) != 0 &&
           atomic_load_explicit(&z->touched, memory_order_relaxed) >= DENSE;
}

bool zk_touch_unknown(int cls)
{
    return cls >= 0 && cls < ZK_NCLASSES && atomic_load_explicit(&classes[cls].samples, memory_order_relaxed) == 0;
}

void zk_touch_watch(zk_region *r, size_t bytes)
{
    if (bytes < MIN_ADAPTIVE_BYTES)
        return;   /* too small for a mincore at free to pay */
    r->flags |= ZK_RF_SAMPLE;
    r->sampled_bytes = zk_round_up(bytes, zk_os_page_size());
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
    if (sample < FEW)
        r->flags |= ZK_RF_DISCARDED;   /* few of its pages are present: a memset would fault the rest */
    else
        r->flags &= ~ZK_RF_DISCARDED;
    uint32_t before = atomic_load_explicit(&z->touched, memory_order_relaxed);
    /* The first measurement replaces the assumption; after it, three
     * quarters of the weight on the newest sample: three sparse samples in
     * a row turn a dense class sparse, one dense sample turns it back (the
     * costlier mistake is discarding a class that is written). */
    bool first = atomic_fetch_add_explicit(&z->samples, 1, memory_order_relaxed) == 0;
    bool was_sparse = !first && (before < BARELY || discard_pays(z, r->sampled_bytes, before));
    atomic_store_explicit(&z->touched, first ? sample : (before + 3 * sample) / 4, memory_order_relaxed);
    uint32_t interval = atomic_load_explicit(&z->interval, memory_order_relaxed);
    if (sample < BARELY || discard_pays(z, r->sampled_bytes, sample)) {
        /* This sample says discard: look again at the next calloc (the
         * average follows within a few samples); while the samples agree,
         * every interval-th discard is measured, the interval doubling. */
        interval = was_sparse ? (interval < MAX_SPARSE_INTERVAL ? 2 * interval : MAX_SPARSE_INTERVAL) : 1;
        atomic_store_explicit(&z->interval, interval, memory_order_relaxed);
        atomic_store_explicit(&z->countdown, interval, memory_order_relaxed);
        return;
    }
    interval = interval < MAX_INTERVAL ? 2 * interval : MAX_INTERVAL;
    atomic_store_explicit(&z->interval, interval, memory_order_relaxed);
    atomic_store_explicit(&z->countdown, interval, memory_order_relaxed);
}

void zk_zero_read(int cls, zk_zero_policy *out)
{
    memset(out, 0, sizeof *out);
    out->memset_ns_per_mib = atomic_load_explicit(&memset_ns_per_mib, memory_order_relaxed);
    out->fault_ns = fault_ns();
    if (cls < 0 || cls >= ZK_NCLASSES)
        return;
    zero_class *z = &classes[cls];
    out->touched_per_1024 = atomic_load_explicit(&z->touched, memory_order_relaxed);
    out->discard_ns = atomic_load_explicit(&z->discard_ns, memory_order_relaxed);
    out->discard = discard_pays(z, zk_class_bytes(cls), (uint32_t)out->touched_per_1024);
}

/* ---- zeroing a reused region ---------------------------------------------- */

/* Huge pages advised over r, and its first `len` bytes dropped: the next
 * touches fault them in as huge pages, zeroed.  True when they are dropped. */
static bool drop_onto_huge_pages(zk_region *r, size_t len)
{
    r->flags &= ~ZK_RF_SMALL_PAGES;
    zk_os_advise_huge((void *)r->base, r->bytes);
    return zk_os_discard((void *)r->base, len) == 0;
}

/* Huge pages back for a region this policy had put on 4 KiB pages (its user
 * is about to write it densely, and its class has shown it does).  MADV_HUGEPAGE alone would leave the 4 KiB
 * pages already there until khugepaged collapses them, and a dense user
 * writes 4 KiB pages ~15-20% slower (TLB misses); dropping them makes the
 * next touches fault in huge pages, at about the cost of one memset, once.
 * Returns true when the region is now all zeros. */
static bool restore_huge_pages(zk_region *r)
{
    /* Only for a class shown dense: huge pages under sparse touches make
     * resident 2 MiB for every page touched. */
    if (!(r->flags & ZK_RF_SMALL_PAGES) || !zk_touch_dense(r->cls))
        return false;
    if (!zk_opt_hugepages()) {
        r->flags &= ~ZK_RF_SMALL_PAGES;
        return false;
    }
    return drop_onto_huge_pages(r, r->bytes);
}

void zk_zero_for_write(zk_region *r)
{
    (void)restore_huge_pages(r);
    r->flags &= ~(ZK_RF_ZERO | ZK_RF_DISCARDED);
}

/* MADV_DONTNEED on 4 KiB pages, flagged so the free measures what the user
 * touched (zk_zero_learn).  False when the kernel refuses the advice.
 * The call is timed only in the steady state the policy decides about: on
 * 4 KiB pages, and after a discard (only what its user touched is present).
 * The first discard after memsets zaps every page (~240 ns each here, 370 us
 * for 6 MiB) and, timed, kept a sparse class on memset for good; dropping
 * huge pages is cheaper than either.  It is timed in this thread's CPU time
 * (~165 ns a clock read here, against ~1.4 us for the call): a thread
 * preempted in the call would read as a discard of milliseconds, and the
 * first timing of a class is taken as it is, so on a loaded machine one
 * preemption kept a sparse class on memset for good (a discard that
 * follows a memset is not timed, so it was never measured again). */
static bool discard_and_sample(zk_region *r, size_t len, bool after_discard, bool measure)
{
    bool small = r->bytes < ZK_HUGE_BYTES || (r->flags & ZK_RF_SMALL_PAGES);
    if (!small) {
        zk_os_advise_small_pages((void *)r->base, r->bytes);
        r->flags |= ZK_RF_SMALL_PAGES;
    }
    uint64_t t0 = zk_thp_cpu_ns();
    if (zk_os_discard((void *)r->base, len) != 0)
        return false;
    if (small && after_discard)
        zk_zero_timed_discard(r->cls, zk_thp_cpu_ns() - t0);
    r->flags |= ZK_RF_DISCARDED;
    if (measure) {
        r->flags |= ZK_RF_SAMPLE;
        r->sampled_bytes = len;
    }
    return true;
}

/* The request's whole 2 MiB pages dropped onto huge pages (also where this
 * policy had put the region on 4 KiB pages, see discard_and_sample): its
 * user's writes fault them back in 2 MiB at a time, zeroed.  The last part
 * short of a whole 2 MiB page is memset: dropped, it would fault back 4 KiB
 * at a time.  Regions of 2 MiB and more start 2 MiB aligned (one that did
 * not would only fault back on 4 KiB pages). */
static bool refault_huge(zk_region *r, size_t bytes)
{
    size_t whole = bytes / ZK_HUGE_BYTES * ZK_HUGE_BYTES;
    if (!drop_onto_huge_pages(r, whole))
        return false;
    memset((void *)(r->base + whole), 0, bytes - whole);
    return true;
}

/* Choose, zero, time: one call per np.zeros.  A fresh mapping already is
 * zero (and stays lazy: untouched pages never fault).  Repurposed pages
 * hold old bytes like any reused region. */
static bool zero_reused(zk_region *r, size_t bytes, bool after_discard)
{
    size_t len = zk_round_up(bytes, zk_os_page_size());
    zk_zero_way way = choose(r->cls, bytes, after_discard);
    if ((way == ZK_ZERO_DISCARD && zk_os_discard((void *)r->base, len) == 0) ||
        (way == ZK_ZERO_REFAULT && refault_huge(r, bytes)) ||
        ((way == ZK_ZERO_SAMPLE || way == ZK_ZERO_SPARSE) &&
         discard_and_sample(r, len, after_discard, way == ZK_ZERO_SAMPLE)))
        return true;
    if (restore_huge_pages(r))   /* dropped whole: zeros already */
        return true;
    uint64_t t0 = zk_thp_now_ns();
    memset((void *)r->base, 0, bytes);
    zk_zero_timed_memset(bytes, zk_thp_now_ns() - t0);
    return false;
}

void zk_zero_for_calloc(zk_region *r, size_t bytes)
{
    bool after_discard = (r->flags & ZK_RF_DISCARDED) != 0;
    r->flags &= ~ZK_RF_DISCARDED;   /* set again if it is discarded again */
    if (r->flags & ZK_RF_ZERO)
        zk_count(&zk_stats.calloc_fresh, 1);
    else if (zero_reused(r, bytes, after_discard))
        zk_count(&zk_stats.calloc_discard, 1);
    else
        zk_count(&zk_stats.calloc_memset, 1);
    r->flags &= ~ZK_RF_ZERO;
}
