/*
 * Test hooks: entry points only the tests call (the C tests in tests/c, and the
 * Cython layer's test helpers fail_unmaps and pin_zero_costs).  Not part of
 * the public interface: zkalloc.h does not include this header.  The core's
 * own files see it through zk_internal.h, so each hook's definition is
 * checked against it; the C tests include zk_internal.h for the rest.
 */
#ifndef ZK_TESTING_H
#define ZK_TESTING_H

#include <stddef.h>
#include <stdint.h>

#include "zkalloc.h"

/* ---- the cache, driven directly (zk_cache.c; the rest of its entry
 * points are the core's own: zk_internal.h) ------------------------------- */
/* Grow or shrink a region this cache owns; NULL (old region untouched) on failure. */
void *zk_cache_realloc(void *ptr, size_t bytes);
/* What the cache knows of a pointer. */
enum { ZK_PTR_FOREIGN = 0, ZK_PTR_IN_USE = 1, ZK_PTR_IDLE = 2 };
int zk_cache_state(const void *ptr);

/* ---- faults and clocks the tests set (zk_os.c, zk_zero.c) ---------------- */
/* The next n unmaps (munmap of a region, a secret array or a thread cache's
 * memory) fail with ENOMEM, as the kernel's do at the map-count limit. */
void zk_os_fail_unmaps(unsigned n);
/* Called with each range zk_os_move* is about to move (NULL: none). */
void zk_os_set_move_hook(void (*hook)(void *old, size_t bytes));
/* Decide with these costs (memset ns per MiB, ns per page fault, ns per
 * discard of any class) instead of measured ones, until zk_zero_reset. */
void zk_zero_pin_costs(uint64_t memset_ns_per_mib, uint64_t fault_ns, uint64_t discard_ns);
/* Choose huge pages or not with these costs of faulting fresh memory in
 * (ns per MiB, every size range) as if sampled enough, instead of measured
 * ones, until zk_thp_reset; the decisions' count starts again from 0. */
void zk_thp_pin_costs(uint64_t small_ns_per_mib, uint64_t huge_ns_per_mib);

/* ---- decay's inputs, injected (zk_decay.c) ------------------------------
 * Any setter puts decay in manual mode: it reads the injected clock
 * (monotonic ns: regions freed from then on are stamped with it), the
 * process's CPU time (ns, user + sys), the pressure reading (0/1) and the
 * process's RSS instead of the machine's, and its thread exits: passes run
 * only when zk_decay_pass_now() asks, on the caller's thread.  zk_decay_use_real()
 * goes back to the machine's inputs (and forgets what the passes saw). */
void zk_decay_set_clock(uint64_t ns);
void zk_decay_set_cpu(uint64_t ns);
void zk_decay_set_pressure(int on);
void zk_decay_set_rss(uint64_t bytes);   /* the process's RSS; 0 (the default): unknown, no high-water rule */
void zk_decay_use_real(void);
size_t zk_decay_pass_now(void);   /* one decay pass now; bytes given back */

#endif
