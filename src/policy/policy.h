/* SPDX-License-Identifier: MIT */
/*
 * policy/policy.h - the policy layer's side of a context (internal).
 *
 * The mechanism asks; the policy answers.  Every question goes through one
 * of the uhmm__pol_* calls below, which always return a valid decision: the
 * built-in one, adjusted by the installed plug-in (include/uhmm/policy.h)
 * when it has the callback and answers validly in time.  docs/ARCHITECTURE.md
 * "Policy" draws the split.
 */
#ifndef UHMM_POLICY_INTERNAL_H
#define UHMM_POLICY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uhmm/policy.h>

struct uhmm_ctx;

/* An installed plug-in. */
struct uhmm_polrt {
	const struct uhmm_policy_ops *ops;
	void *st;
	void *dl;                 /* dlopen handle (UHMM_POLICY), or NULL */
	char name[64];
	struct uhmm_polrt *next;  /* on the zombie list */
};

/* A sequential scan the built-in CPU-fault policy follows (read-ahead). */
struct uhmm_pol_scan {
	uint64_t last;   /* fault-around block of the scan's last fault */
	uint64_t wend;   /* end of the last window asked for (0: candidate) */
	uint64_t used;   /* for replacing the least recent */
};

/* Candidates offered to evict_order at most. */
#define UHMM_POL_MAX_CAND 1024u

struct uhmm_polctx {
	_Atomic(struct uhmm_polrt *) cur; /* NULL: the built-in policy only */
	/* Callbacks in flight, by phase: uhmm_policy_set() swaps cur, flips
	 * the phase and waits for the old phase's count to drain. */
	_Atomic uint64_t users[2];
	_Atomic unsigned phase;
	pthread_mutex_t set_lock; /* serialises uhmm_policy_set() */
	pthread_mutex_t zlock;    /* leaf: zombies, ejected */
	struct uhmm_polrt *zombies; /* ejected, exit() not yet called */
	char ejected[160];
	uint64_t ejections;
	uint64_t budget_ns;

	/* The built-in thrashing detection (thrash.c), under thr_lock. */
	pthread_mutex_t thr_lock;
	struct thr_ent *thr;
	size_t thr_cap, thr_n;
	bool thr_on;
	uint32_t thr_moves, thr_pin_after;
	uint64_t thr_window_ns, thr_pin_ns, thr_nap_ns;

	/* The built-in policy's state. */
	struct uhmm_ctx *ctx;
	uint32_t pf_threshold;    /* the prefetcher's, % (0: whole span) */
	uint32_t fault_around;    /* pages */
	uint32_t readahead_pages;
	pthread_mutex_t scan_lock; /* leaf */
	struct uhmm_pol_scan scans[UHMM_POL_STREAMS]; /* stream k: scans[k] */
	uint64_t scan_clock;
};

int uhmm__pol_init(struct uhmm_ctx *ctx);
/* After the last callback may run (ctx destroy). */
void uhmm__pol_fini(struct uhmm_ctx *ctx);

/* What a CPU fault on a device-resident page brings home (service.c).
 * @readahead: the fault may start or continue a read-ahead scan (false for
 * faults a SIGBUS handler serves itself). */
void uhmm__pol_cpu_fault(struct uhmm_ctx *ctx, const struct uhmm_pol_cpu_fault *f,
			 bool readahead, struct uhmm_pol_cpu_act *act);

/* One decision per fault of a device's batch (the backends' question:
 * uhmm_device_fault_policy()). */
void uhmm__pol_dev_faults(struct uhmm_ctx *ctx, uhmm_loc dev,
			  const struct uhmm_pol_dev_fault *f, size_t n,
			  struct uhmm_pol_dev_act *act);

/* The order in which to try the @n candidates as victims (evict.c). */
void uhmm__pol_evict_order(struct uhmm_ctx *ctx, uhmm_loc dev, uint64_t need_bytes,
			   const struct uhmm_pol_block *cand, size_t n, uint32_t *order);

/* Notification of a migration (migrate.c). */
void uhmm__pol_migrated(struct uhmm_ctx *ctx, uint64_t addr, uint64_t len,
			uhmm_loc from, uhmm_loc to);

/* The same for the pages of [va, va + n pages) whose @st is 2 or 6 (moved,
 * install_req's convention), one notification per run. */
void uhmm__pol_migrated_runs(struct uhmm_ctx *ctx, uint64_t va, const uint8_t *st,
			     size_t n, uhmm_loc from, uhmm_loc to);

/* Accessed-by advice (issue 17).  advice.c: the devices (bitmap by id)
 * advised to access some page of [a, b); false when none. */
bool uhmm__advice_accessed_by(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b,
			      uint64_t out[4]);
/* policy.c: ask each device advised to access [addr, addr + len) to map it
 * where it is now (ops->map_range).  Never blocks; any thread, any lock. */
void uhmm__pol_map_accessors(struct uhmm_ctx *ctx, uint64_t addr, uint64_t len);

/* An access-counter notification (uhmm_device_access_counter). */
void uhmm__pol_access_counter(struct uhmm_ctx *ctx, uhmm_loc dev,
			      const struct uhmm_pol_counter *n,
			      struct uhmm_pol_counter_act *act);

/* thrash.c */
void uhmm__thrash_init(struct uhmm_polctx *p);
void uhmm__thrash_fini(struct uhmm_polctx *p);
void uhmm__thrash_moved(struct uhmm_ctx *ctx, uint64_t addr, uint64_t len, uhmm_loc to,
			uint64_t now);
uint64_t uhmm__thrash_state(struct uhmm_polctx *p, uint64_t addr, uint64_t now);

#endif
