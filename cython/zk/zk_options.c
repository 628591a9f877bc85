/*
 * Settings: one table, each option with its kind, valid range, words and
 * default.  The Python layer reads the table (zk_options_info) and parses
 * and validates by kind, once, naming the setting or the variable in its
 * error; this file only checks numbers and stores them.  Storing has no
 * effect of its own: what a change does now (evict to a lower cap,
 * reschedule decay, glibc's tuning) is zk_option_apply's, called by whoever
 * set it (zk_cache.c).
 */
#include "zk_internal.h"

#define GiB ((uint64_t)1 << 30)
#define MiB ((uint64_t)1 << 20)
#define KiB ((uint64_t)1 << 10)
#define ADDRESS_SPACE ((uint64_t)1 << 47)
#define DAY_MS ((uint64_t)24 * 3600 * 1000)

static uint64_t default_min_bytes(void) { return 64 * KiB; }
static uint64_t default_hugepages(void) { return ZK_HUGEPAGES_AUTO; }   /* measured: zk_thp.c */
/* 0: no size forces a discard; adaptive_zero chooses per class (zk_zero.c) */
static uint64_t default_lazy_zero_bytes(void) { return 0; }
static uint64_t default_adaptive_zero(void) { return 1; }
static uint64_t default_thread_cache_bytes(void) { return 256 * MiB; }
/* jemalloc's dirty_decay_ms: a prover reuses a size class within a proof
 * after seconds at most, and softening a region it still wants costs a
 * refault of what the kernel reclaimed. */
static uint64_t default_decay_ms(void) { return 10000; }
static uint64_t default_budget(void) { return 0; }   /* none: the kernel's limits only */
/* glibc keeps its big blocks while installed; measured: docs/coverage.md */
static uint64_t default_libc(void) { return 1; }

/* min(physical RAM / 8, 1 GiB), the zk-alloc default. */
static uint64_t default_cache_bytes(void)
{
    uint64_t eighth = zk_os_physical_bytes() / 8;
    return eighth != 0 && eighth < GiB ? eighth : GiB;
}

#define BYTES ZK_KIND_BYTES
#define MS ZK_KIND_DURATION_MS
#define BOOL ZK_KIND_BOOL
#define CHOICE ZK_KIND_CHOICE
/* One line per option: name, kind, min, max, words (CHOICE), default. */
const zk_option_info zk_options_info[ZK_OPT_COUNT] = {
    [ZK_OPT_MIN_BYTES] = {"min_bytes", BYTES, 1, ZK_MAX_CLASS_BYTES, NULL, default_min_bytes},
    [ZK_OPT_CACHE_BYTES] = {"cache_bytes", BYTES, 0, ADDRESS_SPACE, NULL, default_cache_bytes},
    [ZK_OPT_HUGEPAGES] = {"hugepages", CHOICE, 0, 2, "off|0|false|no,on|1|true|yes,auto", default_hugepages},
    [ZK_OPT_LAZY_ZERO_BYTES] = {"lazy_zero_bytes", BYTES, 0, ADDRESS_SPACE, NULL, default_lazy_zero_bytes},
    [ZK_OPT_THREAD_CACHE_BYTES] = {"thread_cache_bytes", BYTES, 0, ADDRESS_SPACE, NULL, default_thread_cache_bytes},
    [ZK_OPT_ADAPTIVE_ZERO] = {"adaptive_zero", BOOL, 0, 1, NULL, default_adaptive_zero},
    [ZK_OPT_DECAY_MS] = {"decay_ms", MS, 0, DAY_MS, NULL, default_decay_ms},
    [ZK_OPT_BUDGET] = {"budget", BYTES, 0, ADDRESS_SPACE, NULL, default_budget},
    [ZK_OPT_LIBC] = {"libc", CHOICE, 0, 1, "leave,keep", default_libc},
};
#undef BYTES
#undef MS
#undef BOOL
#undef CHOICE

/* Current values, read on hot paths through the inline accessors in
 * zk_internal.h.  zk_options_init() stores the defaults before any request
 * can arrive (the Cython layer calls it at import, through
 * zk_handler_set_fallback). */
_Atomic uint64_t zk_option_values[ZK_OPT_COUNT];

static bool valid(zk_option opt) { return (unsigned)opt < ZK_OPT_COUNT; }

void zk_options_init(void)
{
    for (int opt = 0; opt < ZK_OPT_COUNT; opt++)
        atomic_store_explicit(&zk_option_values[opt], zk_options_info[opt].default_value(), memory_order_relaxed);
}

uint64_t zk_option_get(zk_option opt)
{
    return valid(opt) ? atomic_load_explicit(&zk_option_values[opt], memory_order_relaxed) : 0;
}

int zk_option_set(zk_option opt, uint64_t value)
{
    if (!valid(opt) || value < zk_options_info[opt].min || value > zk_options_info[opt].max)
        return ZK_EINVAL;
    atomic_store_explicit(&zk_option_values[opt], value, memory_order_relaxed);
    return ZK_OK;
}
