/* SPDX-License-Identifier: MIT */
/*
 * probes.h - USDT probes (sys/sdt.h), provider "uhmm": docs/TRACING.md,
 * "Probes", lists them with their arguments.
 *
 * Each probe has a semaphore (the is-enabled flag a tracer increments
 * while it is attached: perf, bpftrace and a tracefs uprobe with a
 * reference counter do).  An event point tests it, one load and a branch
 * not taken, and only then calls the out-of-line function in probes.c that
 * holds the probe itself and computes its arguments: nothing is computed
 * while nobody listens.  Without sys/sdt.h (or -DUHMM_USDT=OFF) the tests
 * are the constant 0 and the calls vanish.
 */
#ifndef UHMM_CORE_PROBES_H
#define UHMM_CORE_PROBES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* name, as in the ELF notes */
#define UHMM_PROBE_LIST(X)   \
	X(cpu_fault_start)   \
	X(cpu_fault_done)    \
	X(migrate_start)     \
	X(migrate_done)      \
	X(evict)             \
	X(invalidate)        \
	X(dev_fault)         \
	X(dev_fault_batch)   \
	X(exclusive_grab)    \
	X(exclusive_revoke)  \
	X(prefetch)          \
	X(advice)            \
	X(policy_eject)      \
	X(poison)            \
	X(dup_made)          \
	X(dup_collapse)      \
	X(access_counter)    \
	X(thp_move)

#ifdef UHMM_USDT
#define UHMM__PROBE_SEMA_DECL(name) extern volatile unsigned short uhmm_##name##_semaphore;
UHMM_PROBE_LIST(UHMM__PROBE_SEMA_DECL)
#define UHMM_PROBE_ON(name) __builtin_expect(uhmm_##name##_semaphore != 0, 0)
#else
#define UHMM_PROBE_ON(name) 0
#endif

/* Whether a probe that reports a duration listens (its start must then
 * be timed even when no trace records). */
#define UHMM_PROBE_TIMED() (UHMM_PROBE_ON(cpu_fault_done) || UHMM_PROBE_ON(migrate_done))

/* The probes' bodies (probes.c).  @t0: CLOCK_MONOTONIC ns at the start, or
 * 0 when it was not taken (the duration is then 0). */
struct uhmm_ctx;
void uhmm__pr_cpu_fault_start(uintptr_t addr, bool write, unsigned mode);
void uhmm__pr_cpu_fault_done(uintptr_t addr, bool write, uint32_t word, uint64_t t0,
			     unsigned mode);
void uhmm__pr_migrate_start(uintptr_t addr, size_t bytes, unsigned from, unsigned to,
			    unsigned cause);
void uhmm__pr_migrate_done(uintptr_t addr, size_t span, size_t pages, unsigned from,
			   unsigned to, unsigned cause, uint64_t t0);
void uhmm__pr_evict(unsigned dev, uintptr_t addr, size_t bytes);
void uhmm__pr_invalidate(uintptr_t start, uintptr_t end, unsigned reason);
void uhmm__pr_dev_fault(unsigned dev, uintptr_t addr, unsigned access, bool first);
void uhmm__pr_dev_fault_batch(unsigned dev, size_t faults, size_t unique);
void uhmm__pr_exclusive_grab(unsigned dev, uintptr_t addr, size_t pages, int result);
void uhmm__pr_exclusive_revoke(unsigned dev, uintptr_t addr);
void uhmm__pr_prefetch(uintptr_t addr, size_t len, unsigned dst);
void uhmm__pr_advice(uintptr_t addr, size_t len, unsigned advice, unsigned dev);
void uhmm__pr_policy_eject(const char *policy, const char *callback, const char *why);
void uhmm__pr_poison(unsigned dev, uint64_t dpfn, uintptr_t addr);
void uhmm__pr_dup_made(unsigned dev, uintptr_t addr, size_t pages);
void uhmm__pr_dup_collapse(uintptr_t addr, size_t pages);
void uhmm__pr_access_counter(unsigned dev, uintptr_t addr, size_t len, uint64_t count,
			     unsigned action);
void uhmm__pr_thp_move(uintptr_t addr, bool in);

/* The event points (one line each). */
#define UHMM_PROBE(name, ...)                        \
	do {                                         \
		if (UHMM_PROBE_ON(name))             \
			uhmm__pr_##name(__VA_ARGS__); \
	} while (0)

#endif
