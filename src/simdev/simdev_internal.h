/* SPDX-License-Identifier: MIT */
/*
 * simdev_internal.h - internals of the software device, shared by its files.
 *
 *   simdev.c   create/destroy, options, meminfo, fault injection, ops table
 *   devmem.c   device memory pool and its 4 KiB / 2 MiB page allocator
 *   copy.c     copy engine: worker threads, batches, fences, transfer model
 *   mmu.c      device page table, per-unit TLBs, the mirror's invalidate
 *              callback (shootdown + fence)
 *   compute.c  compute units and lanes, launch, accessors, kernel errors
 *              (siglongjmp, the SIGSEGV/SIGBUS handler)
 *   fault.c    device fault buffer, the fault-service thread, placement
 *              policies, advice
 *   atomic.c   atomic faults on pages outside device memory: the atomic
 *              policy, uhmm_make_exclusive(), EXCL entries
 *
 * Locks, by rank (a thread takes only locks of a higher rank than those it
 * holds):
 *   1  struct sd_cu.lock         a compute unit: its TLB and its lanes' TLB
 *                                fills and flushes, and every out-of-line
 *                                access a lane makes to device memory (the
 *                                fence; inline accesses: mmu.c)
 *   2  struct sd_compute.pt_lock the device page table; under it: radix
 *                                walks and calloc/free of its nodes, nothing
 *                                else (no uhmm call, no wait)
 *   -  leaves, never held with another simdev lock: struct devmem.lock,
 *      struct copy_engine.lock, sd_compute.launch_lock, .fb_lock (the fault
 *      buffer), .adv_lock (the advice lists)
 * Copies run with no lock held.  Statistics and fault injection are atomics.
 * No simdev lock is held across a call into uhmm or across an access to
 * memory through the process's address space (which may fault into uhmm):
 * see compute.c and mmu.c for why that rules out deadlocks with uhmm's
 * fault-service thread.
 *
 * simdev includes only public and device headers (never src/core/).
 */
#ifndef UHMM_SIMDEV_INTERNAL_H
#define UHMM_SIMDEV_INTERNAL_H

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include <uhmm/device.h>
#include <uhmm/mirror.h>
#include <uhmm/policy.h>
#include <uhmm/simdev.h>

#include "util/umem.h"

/* Pages of a 2 MiB chunk. */
#define SIMDEV_CHUNK_PAGES (UHMM_HUGE_SIZE / UHMM_PAGE_SIZE)
#define SIMDEV_MAX_THREADS 8u
/* Lanes of a simdev at most: compute_units (16) x lanes_per_cu (64). */
#define SD_MAX_LANES 1024u

/*
 * A misuse by the caller that the backend can survive (double free, freeing
 * a page that was never allocated): fatal in debug builds, ignored in
 * release builds after the caller's state has been left untouched.
 */
#ifdef UHMM_DEBUG
#define simdev_bug(...)                                                       \
	do {                                                                  \
		fprintf(stderr, "uhmm simdev BUG: " __VA_ARGS__);             \
		fputc('\n', stderr);                                          \
		abort();                                                      \
	} while (0)
#else
#define simdev_bug(...) ((void)0)
#endif

/* ------------------------------------------------------------------------ */
/* devmem.c - device memory pool and page allocator                          */

struct devmem_chunk;

/*
 * The pool is an array of 2 MiB chunks.  Each chunk is wholly free (on the
 * free stack), one allocated 2 MiB page, or split into 512 4 KiB pages; a
 * split chunk with at least one free and one used page is on the partial
 * list.  Invariant: free_pages == 512 * nfree + sum over split chunks of
 * (512 - used).
 */
struct devmem {
	unsigned char *base;       /* 2 MiB aligned; never leaves simdev */
	uint64_t bytes;            /* multiple of 2 MiB */
	uint32_t nchunks;
	pthread_mutex_t lock;      /* guards everything below */
	struct devmem_chunk *chunks;
	uint32_t *free_stack;      /* indices of wholly free chunks */
	uint32_t nfree;
	uint32_t partial;          /* head of the partial list, or DEVMEM_NIL */
	uint64_t free_pages;       /* free 4 KiB frames, whatever their chunk */
	/* Chunks another tenant holds (uhmm_simdev_set_tenant), HUGE in
	 * state; tenant[] lists them. */
	uint32_t *tenant;
	uint32_t ntenant;
	uint64_t huge_allocs;      /* 2 MiB pages handed out */
	uint64_t splits;           /* 2 MiB pages split in place */
};

/* Maps the pool.  Errors: -EINVAL, -ENOMEM. */
int uhmm__devmem_init(struct devmem *dm, uint64_t bytes);
/* Unmaps the pool; pages still allocated are simply lost. */
void uhmm__devmem_fini(struct devmem *dm);
/* ops->alloc and ops->free (device.h), without fault injection. */
long uhmm__devmem_alloc(struct devmem *dm, unsigned order, size_t n, uint64_t *dpfn);
void uhmm__devmem_free(struct devmem *dm, unsigned order, size_t n,
		       const uint64_t *dpfn);
/* ops->split: the 2 MiB page at @dpfn becomes 512 allocated 4 KiB pages. */
void uhmm__devmem_split(struct devmem *dm, uint64_t dpfn);
/* Is frame @dpfn in a chunk that is one 2 MiB page? */
bool uhmm__devmem_is_huge(struct devmem *dm, uint64_t dpfn);
/* 2 MiB pages allocated now (the tenant's excepted), ever, and split. */
void uhmm__devmem_huge_info(struct devmem *dm, uint64_t *in_use, uint64_t *allocs,
			    uint64_t *splits);
/* Another tenant takes chunk ci if it is free (true), or gives back the
 * last chunk it took (false if it holds none). */
bool uhmm__devmem_tenant_take(struct devmem *dm, uint32_t ci);
bool uhmm__devmem_tenant_give(struct devmem *dm);
/* Is chunk ci the tenant's? */
bool uhmm__devmem_tenant_has(struct devmem *dm, uint32_t ci);
/* A consistent snapshot of the counters, in 4 KiB pages / 2 MiB chunks. */
void uhmm__devmem_info(struct devmem *dm, uint64_t *total, uint64_t *free_pages,
		       uint64_t *huge_free);

/* True when frames [dpfn, dpfn + npages) lie inside the pool (npages > 0). */
static inline bool uhmm__devmem_range_ok(const struct devmem *dm, uint64_t dpfn,
					 uint64_t npages)
{
	uint64_t total = dm->bytes / UHMM_PAGE_SIZE;
	return npages > 0 && dpfn < total && npages <= total - dpfn;
}

/* Address of frame @dpfn inside the pool; only copy.c dereferences it. */
static inline unsigned char *uhmm__devmem_ptr(const struct devmem *dm, uint64_t dpfn)
{
	return dm->base + dpfn * UHMM_PAGE_SIZE;
}

/* ------------------------------------------------------------------------ */
/* copy.c - copy engine                                                      */

struct copy_batch;

#define COPY_FENCE_BUCKETS 64u

struct copy_engine {
	unsigned nthreads;
	unsigned started;                  /* threads to join at stop */
	pthread_t threads[SIMDEV_MAX_THREADS];
	pthread_mutex_t lock;              /* guards everything below */
	pthread_cond_t work_cond;          /* queue gained work, or stop */
	pthread_cond_t done_cond;          /* some batch completed */
	/* FIFO of batches that still have unclaimed copies. */
	struct copy_batch *head, *tail;
	/* Every batch submitted and not yet waited for, hashed by fence. */
	struct copy_batch *fences[COPY_FENCE_BUCKETS];
	struct copy_batch *cache;          /* spare batch structs */
	unsigned ncache;
	uint64_t next_fence;               /* fences start at 1; 0 is never valid */
	uint64_t busy;                     /* batches submitted, not yet complete */
	/* The latest modelled completion time of a completed batch (copy.c,
	 * "Modelled time is kept by the waiter"): a fence waits for it. */
	uint64_t deadline;
	bool stop;                         /* threads exit once the queue is empty */
	/* Chunks run (copy.c: a run of whole copies or a part of a large
	 * one), and of them those run by a submitter or waiter instead of a
	 * worker thread.  For tests and profiles. */
	uint64_t chunks, chunks_by_caller;
};

struct simdev;

/* Starts the worker threads.  Errors: -EAGAIN, -ENOMEM. */
int uhmm__copy_start(struct simdev *sd, unsigned nthreads);
/* Runs what is queued, joins the threads, frees every batch. */
void uhmm__copy_stop(struct simdev *sd);
/* ops->copy_submit, ops->copy_wait and ops->fence (device.h). */
int uhmm__copy_submit(struct simdev *sd, struct uhmm_copy *copies, size_t n,
		      uhmm_fence_t *fence);
int uhmm__copy_wait(struct simdev *sd, uhmm_fence_t fence);
int uhmm__copy_fence(struct simdev *sd);
/* Forgets the calling thread's FROM_DEVICE spans (peer-hop recognition):
 * called by the hop notifier on every invalidation. */
void uhmm__copy_hops_forget(void);

/* ------------------------------------------------------------------------ */
/* simdev.c                                                                  */

/*
 * One fault-injection point (indexed by enum uhmm_simdev_fault).  The next
 * `ok` operations succeed; then, in count mode (rate == 0), the `fail`
 * after them fail; in rate mode each later operation fails with
 * probability rate / 2^64 while `fail` (the budget) lasts.  All only count
 * down.  `injected` counts the failures made (uhmm_simdev_stats).
 *
 * Rate mode, the points after FAIL_COPY and the environment variable exist
 * only when built with -DUHMM_FAULT_INJECT=ON (CMake option
 * UHMM_FAULT_INJECT); without it SD_FI() is `false` for those points and the
 * compiler drops their checks.  FAIL_ALLOC and FAIL_COPY in count mode are
 * always there (uhmm_simdev_inject predates the option; libuhmm-dmirror's
 * FAIL_ALLOC flag and the core's tests use it).
 */
struct simdev_fault {
	_Atomic uint64_t ok;
	_Atomic uint64_t fail;
#ifdef UHMM_FAULT_INJECT
	_Atomic uint64_t rate;             /* 0: count mode */
	_Atomic uint64_t draws;            /* rate mode: operations drawn for */
	_Atomic uint64_t seed;             /* written while disarmed */
#endif
	_Atomic uint64_t injected;
};

/* Points: 1..SD_FI_MAX (0 unused). */
#define SD_FI_MAX 6

#ifdef UHMM_FAULT_INJECT
#define SD_FI(sd, what) uhmm__simdev_should_fail(&(sd)->fi[(what)])
#else
#define SD_FI(sd, what) false
#endif

struct sd_compute;

/* Directions of a simdev's link (struct simdev.link_free). */
enum sd_link_dir { SD_LINK_TO_DEV = 0, SD_LINK_FROM_DEV = 1, SD_LINK_PEER_IN = 2 };

struct simdev {
	struct devmem mem;
	struct copy_engine eng;
	/* Transfer model, fixed at creation (copy.c, "transfer model"). */
	double bandwidth_gbps;             /* 0: unlimited */
	uint64_t latency_ns;
	double peer_bandwidth_gbps;        /* 0: unlimited */
	uint64_t peer_latency_ns;
	const char *link_name;             /* preset, "custom" or "off" (static) */
	const char *link_what;
	/* When each direction of the link is next free (CLOCK_MONOTONIC ns),
	 * by enum sd_link_dir; advanced by CAS. */
	_Atomic uint64_t link_free[3];
	_Atomic uint64_t peer_copies, peer_bytes;   /* hops recognised */
	_Atomic uint64_t link_model_ns, peer_model_ns; /* charged */
	/* Over the whole address space; its callback forgets the thread's
	 * FROM_DEVICE spans (copy.c, peer hops).  NULL until attached. */
	struct uhmm_notifier *hop_notifier;
	/* Fault injection, by enum uhmm_simdev_fault.  ALLOC, ALLOC_4K and
	 * ALLOC_2M count alloc calls with n > 0 (of their order), COPY valid
	 * struct uhmm_copy, SUBMIT copy_submit calls with n > 0, PT device
	 * page-table updates (uhmm__pt_set_locked). */
	struct simdev_fault fi[SD_FI_MAX + 1];
	_Atomic uint64_t copies;           /* copies completed successfully */
	_Atomic uint64_t bytes_copied;     /* bytes they moved (ZERO: filled) */
	/* Compute options, checked at creation (uhmm_simdev_opts). */
	uint32_t compute_units, lanes_per_cu, fault_batch, tlb_entries;
	/* Access counters (uhmm_simdev_opts.counters; fault.c). */
	uint32_t counters, counter_threshold;
	unsigned counter_shift;       /* log2 of the region */
	/* The pool is coherent memory (uhmm_simdev_opts.coherent): uhmm moves
	 * its frames into place at the application's addresses. */
	bool coherent;
	int32_t numa_node;                 /* uhmm_simdev_opts.numa_node (-1) */
	/* Range faults ask for peers' pages in place (UHMM_RF_PEER):
	 * uhmm_simdev_peer_access. */
	_Atomic bool peer_access;
	/* The compute side: NULL for a simdev made by uhmm__simdev_new() alone
	 * (unit tests); set up by uhmm_simdev_create() once attached. */
	struct sd_compute *comp;
};

/*
 * Creates a simdev without attaching it to a context: maps the pool and
 * starts the copy threads.  @opts NULL means the defaults.
 * Errors: -EINVAL bad options; -ENOMEM; -EAGAIN thread creation failed.
 * Release with uhmm__simdev_ops.destroy(sd).
 */
int uhmm__simdev_new(const struct uhmm_simdev_opts *opts, struct simdev **out);

/* The preset @name, or NULL when none has that name (simdev.c). */
const struct uhmm_simdev_link *uhmm__link_preset(const char *name);

/* uhmm_simdev_meminfo() and uhmm_simdev_inject() on the backend itself. */
void uhmm__simdev_meminfo(struct simdev *sd, struct uhmm_simdev_meminfo *out);
int uhmm__simdev_inject(struct simdev *sd, enum uhmm_simdev_fault what,
			uint64_t after, uint64_t count);

/* The simdev behind @dev, or NULL when @dev is not a live simdev. */
struct simdev *uhmm__simdev_of(uhmm_device *dev);

/* Consumes one operation at @fp; true when that operation must fail (and
 * then counts it in fp->injected). */
bool uhmm__simdev_should_fail(struct simdev_fault *fp);
/* Consumes one of @fp's operations let through, if any are left (false);
 * else true when failures are due, consuming and counting none. */
bool uhmm__simdev_due(struct simdev_fault *fp);
/* uhmm_simdev_inject_set() on the backend itself. */
int uhmm__simdev_inject_set(struct simdev *sd, enum uhmm_simdev_fault what,
			    const struct uhmm_simdev_fault_spec *spec);
/* Arms the points named by the string @env (the syntax of the
 * UHMM_FAULT_INJECT variable, docs/FAULT_INJECTION.md).  -EINVAL on a
 * syntax error (nothing armed), -EOPNOTSUPP without the build option. */
int uhmm__simdev_inject_parse(struct simdev *sd, const char *env);

/* The backend's operations; priv is a struct simdev *. */
extern const struct uhmm_device_ops uhmm__simdev_ops;
/* uhmm_simdev_opts.numa_node: below this. */
#define SD_MAX_NODES 1024

/* ------------------------------------------------------------------------ */
/* The compute side (mmu.c, compute.c, fault.c)                              */

/*
 * Device page-table entries (PTEs).  0 means "no translation".  Otherwise
 * PTE_R is set, and the entry is of one of three kinds:
 *   SYS   (neither PTE_DEV nor PTE_EXCL) a system page, reached through its
 *         own virtual address, with no lock held: the access goes through
 *         the CPU's MMU and may fault into uhmm.  Never PTE_A: an atomic
 *         through the process's VA is not atomic w.r.t. the CPU over a bus
 *         (simdev.h), so it misses and takes the atomic policy (atomic.c).
 *   DEV   (PTE_DEV) this simdev's memory, frame pte >> PTE_DPFN_SHIFT.
 *   EXCL  (PTE_EXCL) a system page this device holds exclusively
 *         (uhmm_make_exclusive): the data is at the uhmm-owned address
 *         pte & PTE_ADDR_MASK, not at the page's own address.
 * DEV and EXCL memory never faults, so accesses through them are made under
 * the unit's lock (PTE_FENCED): the invalidate callback's pass over the unit
 * locks is the fence (mmu.c).  Rights: PTE_W allows writes; PTE_A allows
 * atomics and is set only on writable DEV and EXCL entries.
 * Invariant: an EXCL entry exists only while uhmm says this device holds the
 * page; whatever ends the hold (REVOKE, EXCLUSIVE for another device,
 * MIGRATE, UNMAP, ZAP, PROTECTION, RELEASE) invalidates the page first, and
 * the callback removes every entry of the range, of every kind.
 */
#define PTE_R (1ull << 0)
#define PTE_W (1ull << 1)
#define PTE_DEV (1ull << 2)
#define PTE_EXCL (1ull << 3)
#define PTE_A (1ull << 4)
/* PEER: a page private to another simdev (a peer, uhmm_simdev_peer_access):
 * the data is in the peer's frame, at the address pte & PTE_ADDR_MASK (its
 * pool never faults, so a fenced kind, as EXCL); accesses through it pay
 * the peer link (compute.c, peer_charge).  Removed by any invalidation of
 * the page (the page moving away from the peer is a MIGRATE). */
#define PTE_PEER (1ull << 5)
#define PTE_FENCED (PTE_DEV | PTE_EXCL | PTE_PEER)
/* A DEV entry of a 2 MiB device page (uhmm_range_fault's UHMM_RE_HUGE):
 * the table holds one entry for the aligned block, at the level above the
 * leaves, naming the block's first frame; a lookup returns the page's own
 * frame with PTE_HUGE set, and a TLB caches one entry for the block
 * (mmu.c). */
#define PTE_HUGE (1ull << 6)
/* A SYS entry for a page in place in this device's coherent memory: local,
 * so its accesses are not counted as remote (access counters). */
#define PTE_LOCAL (1ull << 7)
#define PTE_DPFN_SHIFT 12
#define PTE_ADDR_MASK (~(uint64_t)(UHMM_PAGE_SIZE - 1))

/* Kinds of access, ordered by strength (a fault keeps the strongest). */
enum sd_access { SD_READ = 1, SD_WRITE = 2, SD_ATOMIC = 3 };

static inline bool pte_allows(uint64_t pte, unsigned acc)
{
	if (!pte)
		return false;
	if (acc == SD_READ)
		return true;
	if (acc == SD_WRITE)
		return pte & PTE_W;
	return pte & PTE_A;
}

/*
 * The part of the address space the device mirrors (its notifier's
 * interval): [SD_VA_START, SD_VA_END).  Nothing outside it is ever mapped.
 */
#define SD_VA_START ((uintptr_t)UHMM_PAGE_SIZE)
#define SD_VA_END (((uintptr_t)1 << 47) - UHMM_PAGE_SIZE)

/* One TLB entry: vpn + 1 (0: empty) and the PTE it caches. */
struct sd_tlb_entry {
	uint64_t vpn1;
	uint64_t pte;
};

/*
 * TLB geometry (the unit's and each lane's): 4-way set-associative,
 * max(1, tlb_entries / 4) sets, min(4, tlb_entries) ways in use, the set
 * chosen by a multiplicative hash of the page number (SD_TLB_SET; the
 * inline path in simdev.h computes the same).  Why hashed: uhmm_alloc
 * returns 2 MiB-aligned ranges, so page i of two arrays shares the low 9
 * bits of its page number, and indexing by low bits made x[i] and y[i]
 * evict each other on every access.
 */
#define SD_TLB_WAYS UHMM__SD_WAYS
/* The TLB key of a 2 MiB entry: the block number of page @vpn, with a bit
 * no page number of a 47-bit address has (simdev.h: UHMM__SD_HKEY). */
#define SD_HKEY_BIT UHMM__SD_HKEY_BIT
#define SD_HKEY(vpn) (((vpn) >> 9) | SD_HKEY_BIT)
static inline uint64_t sd_tlb_set(uint64_t vpn, uint64_t set_mask)
{
	return ((vpn * 0x9e3779b97f4a7c15ull) >> 32) & set_mask;
}

/* A compute unit.  Everything here is guarded by lock, and so are the
 * lanes' TLB fills and flushes (not their inline lookups: simdev.h). */
struct sd_cu {
	pthread_mutex_t lock;
	struct sd_tlb_entry *tlb;  /* (set_mask + 1) * SD_TLB_WAYS entries */
	uint64_t set_mask;
	unsigned ways;             /* ways in use, 1..4 */
	unsigned victim;           /* round-robin replacement */
	uint64_t hits, misses;
	uint64_t huge_hits;        /* hits on 2 MiB entries */
	struct uhmm_simdev_item *lanes; /* the unit's lanes: lanes[0, nlanes) */
	unsigned nlanes;
};

/*
 * A lane: one thread of a compute unit; the work item a kernel is handed
 * is its lane (one item at a time).  The fault_* fields are guarded by
 * sd_compute.fb_lock; the rest belong to the lane's thread.
 */
struct uhmm_simdev_item {
	/* First: the inline path's view (simdev.h).  fast.tlb entries are
	 * filled and flushed under cu->lock; the lane reads them with no
	 * lock; fast.seq and fast.hits are written by the lane only. */
	struct uhmm__sd_lane fast;
	unsigned tlb_ways;         /* lane TLB ways in use, 1..4 */
	unsigned tlb_victim;       /* round-robin replacement (under cu->lock) */
	struct sd_compute *c;
	struct sd_cu *cu;
	unsigned id;
	pthread_t thread;
	sigjmp_buf env;            /* set per work item (sigsetjmp(env, 0)) */
	int err;                   /* why the current item ended early */
	uint64_t items_done;       /* work items run in the current launch */
	bool in_sys;               /* inside an access to system memory */
	uint64_t peer_debt_ns;     /* peer link time owed (compute.c, peer_charge) */
	/* A device fault in flight: queued in the fault buffer until done. */
	uintptr_t fault_page;
	unsigned fault_acc;        /* enum sd_access */
	bool fault_done;
	int fault_err;             /* 0: replay; -EBUSY: replay; else fail */
	pthread_cond_t fault_cond;
} __attribute__((aligned(64)));

/* One advice range (uhmm_simdev_advise, uhmm_simdev_advise_atomics). */
struct sd_advice {
	uintptr_t start, end;
	unsigned advice;           /* the list's enum, never its default (0) */
};

/* An advice list: sorted, disjoint, only non-default advice. */
struct sd_advlist {
	struct sd_advice *v;
	size_t n;
};

/* Which advice list (sd_compute.adv[]). */
enum sd_adv_kind {
	SD_ADV_PLACE = 0,   /* enum uhmm_simdev_advice */
	SD_ADV_ATOMIC = 1,  /* enum uhmm_simdev_atomic_policy */
	SD_ADV_KINDS
};

struct pt_node;

/* One faulting page of a service pass (fault.c, atomic.c). */
struct sd_fpage {
	uintptr_t va;
	unsigned acc;   /* strongest access of its faults */
	int err;        /* the answer, once done */
	bool done;
	unsigned char how; /* atomic.c: how a pending atomic is resolved */
	uint32_t pol;      /* atomic.c: its decision, c->pol_a[pol] */
};

/* Counters of uhmm_simdev_stats (TLB ones live in the units and lanes). */
struct sd_cstats {
	_Atomic uint64_t launches, work_items, faults, fault_batches,
		fault_duplicates, fault_resolutions, fault_service_ns, migrations,
		remote_maps, range_fault_calls, range_fault_pages, invalidations,
		shootdown_pages, kernel_errors, exclusive_pages, throttle_ns,
		peer_maps, peer_access_ns,
		pt_huge_maps, pt_huge_splits, tlb_huge_fills;
	/* issue 17: accessed-by map requests, access counters */
	_Atomic uint64_t map_requests, map_requests_dropped, counter_notifications,
		counter_migrations;
};

/* A request to map a span where it is (ops->map_range), or an access
 * counter's notification (count != 0: the region holding lo, of
 * hi - lo bytes); fault.c. */
struct sd_mapjob {
	uintptr_t lo, hi;
	uint64_t count;
};
/* An access counter: one word, the region (its index + 1; 0: empty) in
 * the bits above SD_CTR_BITS and its count below, updated by CAS so that a
 * takeover and the count that reaches the threshold are exact. */
struct sd_ctr {
	_Atomic uint64_t w;
};
#define SD_CTR_BITS 28
#define SD_CTR_MAX ((1u << SD_CTR_BITS) - 1) /* the highest threshold */
#define SD_CTR_SLOTS 4096u
/* Map requests queued at most (more are dropped: the device faults). */
#define SD_MAPJOBS 256u

struct sd_compute {
	struct simdev *sd;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	struct uhmm_notifier *notifier;
	pid_t pid;                 /* launches from a fork child: -ECHILD */
	unsigned ncu, nlanes, fault_batch;

	/* mmu.c */
	pthread_mutex_t pt_lock;
	struct pt_node *pt_root;   /* never NULL once started */
	uint64_t pt_huge;          /* 2 MiB entries in the table (under pt_lock) */
	bool pt_widen;             /* pt_clear dropped a 2 MiB entry it was to
				    * split (under pt_lock) */
	struct sd_cu *cus;
	/* membarrier(2) PRIVATE_EXPEDITED refused: the lanes' TLBs stay
	 * empty, every access takes the out-of-line path (mmu.c). */
	bool lane_fence;

	/* compute.c: the launch protocol, under launch_lock. */
	struct uhmm_simdev_item *lanes;
	unsigned lanes_started;
	pthread_mutex_t launch_lock;
	pthread_cond_t launch_cond;   /* a new generation, or stop */
	pthread_cond_t done_cond;     /* running reached 0 */
	uint64_t gen;                 /* bumped per launch */
	unsigned running;             /* lanes still in the current launch */
	bool lanes_stop;
	uhmm_simdev_kernel fn;        /* the launch: read by lanes after waking */
	uhmm_simdev_block_kernel bfn; /* or a block launch: fn NULL */
	void *arg;
	uint64_t grid;                /* items to hand out (blocks for bfn) */
	uint64_t items, block;        /* bfn: work items, and per block */
	uint64_t chunk;               /* work items a lane takes at once */
	_Atomic bool busy;            /* a launch is in progress (-EBUSY) */
	_Atomic uint64_t next_idx;    /* next work item to hand out */
	_Atomic bool failed;          /* stop handing out work items */
	_Atomic int err;              /* the first error of the launch */

	/* fault.c: the fault buffer, under fb_lock.  Each lane has at most one
	 * fault in flight, so nlanes slots never overflow. */
	pthread_mutex_t fb_lock;
	pthread_cond_t fb_cond;       /* the buffer gained a fault, or stop */
	struct uhmm_simdev_item **fb; /* FIFO, fb_n entries */
	unsigned fb_n;
	bool fb_stop;
	bool fault_inited;            /* fb_lock, fb_cond, adv_lock exist */
	bool fault_started;
	pthread_t fault_thread;
	/* The service thread's scratch (only it touches these). */
	struct uhmm_simdev_item **batch;
	struct sd_fpage *fpages;
	uint64_t *entries;            /* UHMM_HUGE_SIZE / 4096 range-fault entries */
	uint64_t *snap;               /* atomic.c: as many snapshot entries */
	void **xptrs;                 /* atomic.c: as many make_exclusive pages */
	/* The questions to the policy of a block's faults, and its answers
	 * (fault_batch entries each), and which fpage each is. */
	struct uhmm_pol_dev_fault *pol_f;
	struct uhmm_pol_dev_act *pol_a;
	uint32_t *pol_i;

	/* fault.c: map requests (accessed-by), under fb_lock, served by the
	 * fault-service thread; mj_done reaching mj_queued (mj_cond) is what
	 * a launch waits for first. */
	struct sd_mapjob *mj;         /* SD_MAPJOBS, mj_n pending, FIFO */
	unsigned mj_n;
	uint64_t mj_queued, mj_done;
	pthread_cond_t mj_cond;
	bool mj_busy;                 /* the service thread is serving one */
	bool mj_off;                  /* stopping: none taken or served */
	/* fault.c: the access counters (NULL: off), SD_CTR_SLOTS. */
	struct sd_ctr *ctr;

	/* fault.c: advice, under adv_lock. */
	pthread_mutex_t adv_lock;
	struct sd_advlist adv[SD_ADV_KINDS];

	struct sd_cstats st;
};

/* mmu.c */
/* Page table and TLBs.  Errors: -ENOMEM. */
int uhmm__mmu_init(struct sd_compute *c, unsigned tlb_entries);
void uhmm__mmu_fini(struct sd_compute *c);
/* The PTE of the page at @va, or 0.  Caller holds pt_lock. */
uint64_t uhmm__pt_lookup_locked(struct sd_compute *c, uintptr_t va);
/* Sets the PTE of the page at @va (pte != 0).  Caller holds pt_lock.
 * Errors: -ENOMEM (a table node could not be allocated; nothing changed). */
int uhmm__pt_set_locked(struct sd_compute *c, uintptr_t va, uint64_t pte);
/* Maps the 2 MiB block at @va (aligned) with one entry: @pte is a DEV
 * entry of the block's first frame (a multiple of 512) with PTE_HUGE.
 * Replaces what the table held for the block.  Caller holds pt_lock.
 * Errors: -EINVAL, -ENOMEM (nothing changed). */
int uhmm__pt_set_huge_locked(struct sd_compute *c, uintptr_t va, uint64_t pte);
/* Translation of the page @vpn for access @acc through @cu's TLB, filling
 * it from the page table on a miss; 0 when there is none with the rights.
 * Caller holds cu->lock (takes pt_lock inside). */
uint64_t uhmm__translate_locked(struct sd_compute *c, struct sd_cu *cu,
				uint64_t vpn, unsigned acc);
/* Caches the DEV or EXCL translation @pte of page @vpn, whose data is at
 * @host, in lane @wi's TLB for the inline path.  Caller holds wi->cu->lock
 * and is @wi's thread. */
void uhmm__lane_tlb_fill_locked(struct uhmm_simdev_item *wi, uint64_t vpn,
				uint64_t pte, void *host);
/* The lanes' TLBs (after lanes are allocated, before they run): -ENOMEM;
 * fini frees what init allocated. */
int uhmm__mmu_lanes_init(struct sd_compute *c, unsigned tlb_entries,
			 unsigned lanes_per_cu);
void uhmm__mmu_lanes_fini(struct sd_compute *c);
/* Drops pages [first, last] from every unit's TLB, waiting for accesses
 * through them in flight.  Caller holds no simdev lock. */
void uhmm__tlb_shootdown(struct sd_compute *c, uint64_t first, uint64_t last);
/* The notifier's callback: shootdown and fence (mirror.h). */
void uhmm__mmu_invalidate(struct uhmm_notifier *n, const struct uhmm_inv_event *ev,
			  void *priv);

/* compute.c */
/* Starts the compute side of an attached simdev: page table, lanes, the
 * fault-service thread, the notifier.  Errors: -ENOMEM, -EAGAIN, errors of
 * uhmm_notifier_insert().  On failure nothing is left to stop. */
int uhmm__compute_start(struct simdev *sd, uhmm_ctx *ctx, uhmm_device *dev);
/* Stops and frees what uhmm__compute_start() set up (sd->comp may be NULL).
 * Must not run while a launch is in progress. */
void uhmm__compute_stop(struct simdev *sd);
void uhmm__compute_stats(struct sd_compute *c, struct uhmm_simdev_stats *out);

/* fault.c */
int uhmm__fault_init(struct sd_compute *c);   /* -ENOMEM */
int uhmm__fault_start(struct sd_compute *c);  /* -EAGAIN */
void uhmm__fault_stop(struct sd_compute *c);  /* joins; answers leftovers */
void uhmm__fault_fini(struct sd_compute *c);
/* Queues a device fault of lane @wi on the page at @page for @acc and
 * sleeps until the service thread replays it.  Returns 0 or -EBUSY (try
 * the translation again) or the error that ends the work item.  The caller
 * holds no simdev lock. */
int uhmm__fault_raise(struct sd_compute *c, struct uhmm_simdev_item *wi,
		      uintptr_t page, unsigned acc);
/* ops->map_range: queue a request to map [lo, hi) where it is (never
 * blocks beyond fb_lock).  drain: wait until the requests queued before
 * the call are served (a launch, before it runs). */
void uhmm__fault_map_request(struct sd_compute *c, uintptr_t lo, uintptr_t hi);
void uhmm__fault_map_drain(struct sd_compute *c);
/* Stopping: drop pending requests and notifications, take no more, and
 * wait for the one being served (before the notifier goes). */
void uhmm__fault_map_off(struct sd_compute *c);
/* A remote access of a lane to the page of @va: counts it, and notifies
 * when its region reaches the threshold (queued for the service thread).
 * No simdev lock held. */
void uhmm__counter_hit(struct sd_compute *c, uintptr_t va);
/* Sets the advice of list @kind over [start, end).  Errors: -ENOMEM. */
int uhmm__advise(struct sd_compute *c, enum sd_adv_kind kind, uintptr_t start,
		 uintptr_t end, unsigned advice);
/* The advice of list @kind at @va, and the largest [*rlo, *rhi) around it,
 * within [lo, hi), where it does not change.  Takes adv_lock. */
unsigned uhmm__advice_at(struct sd_compute *c, enum sd_adv_kind kind, uintptr_t va,
			 uintptr_t lo, uintptr_t hi, uintptr_t *rlo, uintptr_t *rhi);
/*
 * Pieces of the service pass that atomic.c uses; the service thread only,
 * no simdev lock held.  @fp[0, n) are faulting pages sorted by address.
 *   map_run    range-faults [lo, hi) for the strongest pending access in it,
 *              installs, answers the pending pages in it (page by page on a
 *              page's own error)
 *   map_range  range-faults [lo, hi) for @acc (0: a snapshot, no fault
 *              flags) and installs what is VALID, under the read_retry
 *              discipline.  0, -ENOMEM, -EBUSY (kept going stale), or the
 *              range fault's error.
 *   settle     answers the pending pages in [lo, hi) with @err
 */
void uhmm__fault_map_run(struct sd_compute *c, struct sd_fpage *fp, size_t n,
			 uintptr_t lo, uintptr_t hi);
int uhmm__fault_map_range(struct sd_compute *c, uintptr_t lo, uintptr_t hi,
			  unsigned acc);
void uhmm__fault_settle(struct sd_compute *c, struct sd_fpage *fp, size_t n,
			uintptr_t lo, uintptr_t hi, int err);

/* atomic.c */
/*
 * Resolves the pending faulting pages of @fp[0, n) (one 2 MiB block, sorted)
 * whose access is atomic and which are not in this device's memory, by the
 * atomic policy: take them exclusively or migrate them.  Leaves the others
 * (and atomic faults on pages already in this device's memory) pending for
 * the placement policy.  Service thread only; no simdev lock held.
 */
void uhmm__atomic_resolve(struct sd_compute *c, struct sd_fpage *fp, size_t n);
/* The PTE for a VALID range-fault entry (0 if it cannot be mapped). */
uint64_t uhmm__pte_of_entry(struct sd_compute *c, uint64_t e);

#endif /* UHMM_SIMDEV_INTERNAL_H */
