/*
 * Settings: one table, each with its default and its valid range.  Parsing
 * environment strings is the Python layer's job (it names the variable in the
 * error); this file only validates numbers and stores them.
 */
#include "zk_internal.h"

#define GiB ((uint64_t)1 << 30)
#define MiB ((uint64_t)1 << 20)
#define KiB ((uint64_t)1 << 10)
#define ADDRESS_SPACE ((uint64_t)1 << 47)

typedef struct {
    const char *name;   /* the Python setting and, upper-cased, its ZKALLOC_ variable */
    uint64_t min, max;
    uint64_t (*default_value)(void);
} zk_option_spec;

static uint64_t default_min_bytes(void) { return 64 * KiB; }
static uint64_t default_hugepages(void) { return ZK_HUGEPAGES_AUTO; }   /* measured: zk_thp.c */
static uint64_t default_lazy_zero_bytes(void) { return 0; }   /* see README: memset wins here */
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

static const zk_option_spec specs[ZK_OPT_COUNT] = {
    [ZK_OPT_MIN_BYTES] = {"min_bytes", 1, ZK_MAX_CLASS_BYTES, default_min_bytes},
    [ZK_OPT_CACHE_BYTES] = {"cache_bytes", 0, ADDRESS_SPACE, default_cache_bytes},
    [ZK_OPT_HUGEPAGES] = {"hugepages", ZK_HUGEPAGES_OFF, ZK_HUGEPAGES_AUTO, default_hugepages},
    [ZK_OPT_LAZY_ZERO_BYTES] = {"lazy_zero_bytes", 0, ADDRESS_SPACE, default_lazy_zero_bytes},
    [ZK_OPT_THREAD_CACHE_BYTES] = {"thread_cache_bytes", 0, ADDRESS_SPACE, default_thread_cache_bytes},
    [ZK_OPT_ADAPTIVE_ZERO] = {"adaptive_zero", 0, 1, default_adaptive_zero},
    [ZK_OPT_DECAY_MS] = {"decay_ms", 0, (uint64_t)24 * 3600 * 1000, default_decay_ms},
    [ZK_OPT_BUDGET] = {"budget", 0, ADDRESS_SPACE, default_budget},
    [ZK_OPT_LIBC] = {"libc", 0, 1, default_libc},
};

/* Current values, read on hot paths through the inline accessors in
 * zk_internal.h.  zk_options_init() stores the defaults before any request
 * can arrive (the Cython layer calls it at import, through
 * zk_handler_set_fallback). */
_Atomic uint64_t zk_option_values[ZK_OPT_COUNT];

static bool valid(zk_option opt) { return (unsigned)opt < ZK_OPT_COUNT; }

void zk_options_init(void)
{
    for (int opt = 0; opt < ZK_OPT_COUNT; opt++)
        atomic_store_explicit(&zk_option_values[opt], specs[opt].default_value(), memory_order_relaxed);
}

uint64_t zk_option_get(zk_option opt)
{
    return valid(opt) ? atomic_load_explicit(&zk_option_values[opt], memory_order_relaxed) : 0;
}

int zk_option_set(zk_option opt, uint64_t value)
{
    if (!valid(opt) || value < specs[opt].min || value > specs[opt].max)
        return ZK_EINVAL;
    atomic_store_explicit(&zk_option_values[opt], value, memory_order_relaxed);
    if (opt == ZK_OPT_CACHE_BYTES)
        zk_cache_trim();   /* a lower cap applies now, not at the next free */
    if (opt == ZK_OPT_DECAY_MS)
        zk_decay_reschedule();   /* a shorter period applies from now */
    if (opt == ZK_OPT_LIBC)
        zk_libc_setting_changed();   /* while installed, applies now */
    return ZK_OK;
}

const char *zk_option_name(zk_option opt) { return valid(opt) ? specs[opt].name : NULL; }
uint64_t zk_option_min(zk_option opt) { return valid(opt) ? specs[opt].min : 0; }
uint64_t zk_option_max(zk_option opt) { return valid(opt) ? specs[opt].max : 0; }
