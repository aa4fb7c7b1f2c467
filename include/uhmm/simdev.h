/* SPDX-License-Identifier: MIT */
/*
 * uhmm/simdev.h - the software device.
 *
 * simdev is uhmm's embedded device backend: a device-private memory pool
 * (ordinary process memory that uhmm never hands to the application, so no
 * application pointer reaches it), an allocator of 4 KiB and 2 MiB device
 * pages, and a copy engine running on its own thread(s).  An optional
 * transfer model (bandwidth and per-transfer latency) imitates a PCIe-like
 * link; it is off by default, so copies run at memcpy speed.
 *
 * Any number of simdevs can exist at once, in one or several contexts.
 */
#ifndef UHMM_SIMDEV_H
#define UHMM_SIMDEV_H

#include <uhmm/mirror.h>
#include <uhmm/uhmm.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Options of a simdev.  Initialise with uhmm_simdev_opts_init(). */
struct uhmm_simdev_opts {
	uint32_t size;            /**< sizeof(struct uhmm_simdev_opts) */
	uint32_t copy_threads;    /**< copy-engine threads, 1..8; default 1 */
	uint64_t mem_bytes;       /**< device memory, multiple of 2 MiB; default 1 GiB */
	/** Transfer model: link bandwidth in GB/s (10^9 B/s); 0 = unlimited. */
	double bandwidth_gbps;
	/** Transfer model: fixed latency added to each copy, in ns; default 0. */
	uint64_t latency_ns;
	const char *name;         /**< default "simdev<N>" */
	/* Compute (uhmm_simdev_launch). */
	uint32_t compute_units;   /**< 1..16; default 2.  Each has its own TLB. */
	uint32_t lanes_per_cu;    /**< work items in flight per unit, 1..64; default 8 */
	uint32_t fault_batch;     /**< device faults serviced per pass, 1..4096; default 256 */
	uint32_t tlb_entries;     /**< per unit, power of two 1..4096; default 64 */
	/**
	 * 1: the device's memory is coherent (device.h, coherent_mem; the
	 * kernel's MEMORY_DEVICE_COHERENT): pages migrated to it are mapped
	 * in place at their address, the CPU reads and writes them there
	 * without a fault, and the device reaches them at local cost (atomics
	 * included, in place).  0 (default): device-private memory.
	 */
	uint32_t coherent;
	/**
	 * The NUMA node the device's memory is bound to (mbind MPOL_BIND:
	 * a CXL memory expander appears as a CPU-less node), or -1 (default):
	 * wherever the kernel puts it.  A node the machine does not have, or
	 * not below 1024: uhmm_simdev_create() fails with -EINVAL.
	 */
	int32_t numa_node;
};

/** Fill @opts with the defaults. */
UHMM_API void uhmm_simdev_opts_init(struct uhmm_simdev_opts *opts);

/**
 * uhmm_simdev_create - create a software device and attach it to @ctx.
 * The device is released by uhmm_device_detach() or with the context.
 * @opts may be NULL for the defaults.
 * Errors: -EBADF @ctx is not a live context; -EINVAL @out is NULL, or bad
 * options (opts->size too small, mem_bytes 0 or not a multiple of 2 MiB,
 * copy_threads out of range, negative bandwidth); -ENOMEM; -EAGAIN thread
 * creation failed; errors of uhmm_device_attach().
 */
UHMM_API int uhmm_simdev_create(uhmm_ctx *ctx, const struct uhmm_simdev_opts *opts,
		       uhmm_device **out);

/** Memory use of a simdev (uhmm_simdev_meminfo()). */
struct uhmm_simdev_meminfo {
	uint64_t total_pages;     /**< 4 KiB pages of device memory */
	uint64_t free_pages;
	uint64_t huge_free;       /**< whole free 2 MiB blocks */
	uint64_t copies;          /**< copies completed successfully */
	uint64_t bytes_copied;    /**< their bytes (zero fills included) */
};

/** Errors: -EINVAL @dev is not a live simdev (NULL, detached, another
 * backend's device). */
UHMM_API int uhmm_simdev_meminfo(uhmm_device *dev, struct uhmm_simdev_meminfo *out);

/**
 * uhmm_simdev_set_tenant - imitate another tenant of the device holding
 * @bytes of its memory (a multiple of 2 MiB, at most mem_bytes), so that
 * uhmm's pages have that much less room: the device shrinks (or grows back:
 * 0 gives everything back) at run time, while kernels run.  Free 2 MiB
 * chunks are taken first, from the top; then the top chunks the tenant does
 * not hold are emptied with uhmm_device_evict_frames() (their pages go to
 * system memory: nothing is lost) and taken.  meminfo's free_pages drops by
 * what the tenant holds; total_pages stays.
 * Errors: -EINVAL (@dev not a live simdev, @bytes not a multiple of 2 MiB
 * or above the device's memory); -EBUSY the chunks could not all be had
 * within 2 s (pages held by migrations or faults in flight): what this call
 * took is given back.  Sleeps (evictions); not from a kernel's work item or
 * a notifier callback.
 */
UHMM_API int uhmm_simdev_set_tenant(uhmm_device *dev, uint64_t bytes);

/* ------------------------------------------------------------------------ */
/* Fault injection                                                          */

/*
 * simdev can make its own operations fail, so that tests can check what
 * uhmm and the application see when a device misbehaves
 * (docs/FAULT_INJECTION.md has the full story and the tested cases).
 *
 * Two levels:
 *   always        uhmm_simdev_inject() with UHMM_SIMDEV_FAIL_ALLOC and
 *                 UHMM_SIMDEV_FAIL_COPY ("let @after pass, fail @count").
 *                 Present in every build; costs two relaxed atomic loads per
 *                 allocation and per copy while disarmed.
 *   build option  configure with -DUHMM_FAULT_INJECT=ON: the other points
 *                 below, rate mode (fail with a probability, reproducible by
 *                 seed), uhmm_simdev_inject_set(), and the environment
 *                 variable UHMM_FAULT_INJECT read by uhmm_simdev_create().
 *                 Without the option these checks are not compiled at all;
 *                 the calls that need them return -EOPNOTSUPP and the
 *                 variable is ignored.
 *
 * Every point is per device, thread-safe and lock-free, and counts the
 * failures it injects (struct uhmm_simdev_stats, injected_*).
 *
 * What fails, and how uhmm and the caller see it:
 *
 *   FAIL_ALLOC, FAIL_ALLOC_4K, FAIL_ALLOC_2M   device memory allocation
 *       (ops->alloc; _4K: order 0 calls only, _2M: order 9 calls only,
 *       plain ALLOC: both).  The call returns 0 pages, as when the device is
 *       full.  A migration toward the device then fails with -ENOMEM before
 *       anything moves: the batch's pages stay where they were (earlier
 *       batches of the call stay migrated).  A device kernel's fault falls
 *       back to mapping the system pages remotely; an atomic one to
 *       uhmm_make_exclusive.  uhmm allocates only 4 KiB pages today, so
 *       FAIL_ALLOC_2M is only met by callers of ops->alloc of their own.
 *   FAIL_COPY    one struct uhmm_copy of a batch: it writes the first half
 *       of its destination, then completes with -EIO; the batch's other
 *       copies run normally, so the failure lands in the middle of a batch.
 *       Toward a device: the pages of that copy are restored in system
 *       memory with their data, the others of the batch complete;
 *       uhmm_migrate() returns -EIO.  Back to system memory on request
 *       (uhmm_migrate(..., NULL)): each failed page is retried twice; a page
 *       still failing stays on the device with its data and the call
 *       returns -EIO.  On a CPU fault: retried twice too; a page still
 *       failing is poisoned (the faulting thread gets SIGBUS, as on real
 *       hardware) and its device copy is kept.
 *   FAIL_SUBMIT  ops->copy_submit refuses a whole batch (-EIO, nothing
 *       queued): to uhmm every copy of the batch failed, with the outcomes
 *       of FAIL_COPY.
 *   FAIL_PT      one update of the device page table (an entry installed or
 *       changed by the device's fault service): -ENOMEM, as when a table
 *       node cannot be allocated.  The fault service does not retry: the
 *       work items waiting on the pages that could not be mapped end, and
 *       uhmm_simdev_launch() returns -ENOMEM.  Only simdev's mirror is
 *       affected: the pages keep the place uhmm gave them (a migration the
 *       fault started is complete), entries installed before the failure
 *       stay valid, and a new launch faults the rest in.
 *
 * Device fences (ops->fence) are no point: uhmm never calls them.
 */

/** Fault injection points. */
enum uhmm_simdev_fault {
	UHMM_SIMDEV_FAIL_ALLOC = 1,    /**< alloc returns no pages (any order) */
	UHMM_SIMDEV_FAIL_COPY = 2,     /**< a copy completes with -EIO */
	/* The points below need -DUHMM_FAULT_INJECT=ON. */
	UHMM_SIMDEV_FAIL_PT = 3,       /**< a device page-table update: -ENOMEM */
	UHMM_SIMDEV_FAIL_SUBMIT = 4,   /**< copy_submit refuses a batch: -EIO */
	UHMM_SIMDEV_FAIL_ALLOC_4K = 5, /**< alloc of 4 KiB pages returns none */
	UHMM_SIMDEV_FAIL_ALLOC_2M = 6, /**< alloc of 2 MiB pages returns none */
};

/**
 * uhmm_simdev_inject - make device operations fail, for testing (count
 * mode).
 * @what:  which operation.
 * @after: let this many operations of that kind succeed first.
 * @count: then fail this many (0 disarms).
 * Copies are counted one struct uhmm_copy at a time, allocations one
 * alloc call at a time (calls with n == 0 are not counted), submissions one
 * copy_submit call with at least one copy at a time, page-table updates one
 * entry at a time.  A failing copy may have written part of its
 * destination.  Thread-safe: exactly @after operations pass, then exactly
 * @count fail, even when they race (an operation racing with the call
 * itself counts against the old or the new setting).
 * Errors: -EINVAL (@dev not a live simdev, unknown @what); -EOPNOTSUPP
 * @what needs the build option UHMM_FAULT_INJECT, which is off.
 */
UHMM_API int uhmm_simdev_inject(uhmm_device *dev, enum uhmm_simdev_fault what,
		       uint64_t after, uint64_t count);

/** How a point fails (uhmm_simdev_inject_set). */
struct uhmm_simdev_fault_spec {
	uint64_t after;  /**< operations that succeed first */
	/** Count mode (rate == 0): fail this many after @after (0 disarms).
	 * Rate mode: at most this many failures (0: no limit). */
	uint64_t count;
	/** 0: count mode.  (0, 1]: each operation after @after fails with this
	 * probability. */
	double rate;
	/** Rate mode: seed of the point's random stream.  The n-th operation
	 * drawn for fails or not as a function of (seed, point, n) only, so a
	 * run that issues the same operations in the same order fails at the
	 * same places. */
	uint64_t seed;
};

/**
 * uhmm_simdev_inject_set - arm (or, with count == 0 and rate == 0, disarm)
 * the point @what of @dev, replacing its previous setting.  Needs the build
 * option UHMM_FAULT_INJECT.  What each point does is described above.
 * Errors: -EINVAL (@dev not a live simdev, unknown @what, @spec NULL, rate
 * not in [0, 1]); -EOPNOTSUPP built without UHMM_FAULT_INJECT.
 *
 * The same can be set from the environment, for every simdev the process
 * creates: UHMM_FAULT_INJECT is read by uhmm_simdev_create(), e.g.
 *
 *   UHMM_FAULT_INJECT="copy:rate=0.01,alloc:after=10:count=3,pt:rate=0.05,seed=7"
 *
 * Items are separated by ','.  An item is `seed=N` (the seed of every point
 * of the variable that sets none) or a point name (alloc, alloc4k, alloc2m,
 * copy, submit, pt) followed by `:key=value` fields: after=N, count=N,
 * rate=P, seed=N.  A syntax error, or more than 32 point items, makes
 * uhmm_simdev_create() fail with -EINVAL (and print the bad item on
 * stderr).  Without the build option
 * the variable is ignored.
 */
UHMM_API int uhmm_simdev_inject_set(uhmm_device *dev, enum uhmm_simdev_fault what,
				    const struct uhmm_simdev_fault_spec *spec);

/* ------------------------------------------------------------------------ */
/* Compute: kernels, device memory accessors, device faults                 */

/*
 * A simdev runs kernels: a C function called once per work item on the
 * device's compute units (lanes are threads; a unit's lanes share its TLB).
 * A kernel reaches memory only through the accessors below, which translate
 * the ordinary process pointers it was given through the unit's TLB and the
 * device page table, the mirror of the CPU's.  A miss raises a device fault:
 * the work item waits while the device's fault-service pass drains the
 * fault buffer in batches (duplicates removed, sorted, grouped by 2 MiB
 * block), resolves each block by policy, fills the device page table from
 * uhmm_range_fault() and replays.
 *
 * Policies (uhmm_simdev_advise): migrate the block to device memory on the
 * first device touch (default), or map the system pages remotely (the device
 * then reads and writes them through the CPU's MMU, coherently).
 *
 * Atomics are never made through a remote mapping: an atomic on a page that
 * is not in the device's memory follows the atomic policy
 * (uhmm_simdev_advise_atomics): the page is taken exclusively
 * (uhmm_make_exclusive; the device then also reads and writes it there until
 * the CPU takes it back) or migrated.  An atomic on memory uhmm does not
 * manage can be made atomic neither way: it ends the kernel with -EFAULT.
 *
 * A device access that cannot be resolved (unmapped memory, PROT_NONE, a
 * write to read-only memory, a page unmapped while the kernel ran) ends the
 * kernel: the accessor does not return, the remaining work items are
 * cancelled, and uhmm_simdev_launch() returns the error, like a GPU's
 * page-fault error.  The process does not crash.
 *
 * Signals.  A kernel reads and writes system pages through their own
 * addresses, so memory that vanishes under it raises SIGSEGV or SIGBUS in
 * the lane thread.  The first uhmm_simdev_create() of the process installs
 * a handler for both (SA_SIGINFO | SA_NODEFER | SA_ONSTACK) that ends the
 * work item with -EFAULT when the signal comes from such an access, and
 * otherwise passes the signal on to the handler installed before it (or,
 * if that was SIG_DFL or SIG_IGN, restores the default action, so the
 * fault kills the process as it would have).  An application that installs
 * its own SIGSEGV/SIGBUS handler after creating a simdev must chain to the
 * previous handler for device accesses to stay safe.  Lanes block every
 * asynchronous signal (so does the caller running a grid of one).
 *
 * Placement follows the advice in force when a page faults; advice given
 * later does not move or unmap pages the device already maps.  A
 * MAP_REMOTE fault also maps the following pages of its aligned 256 KiB
 * window that the device does not map yet (device "map-around").
 */

/** A work item, as accessors see it. */
typedef struct uhmm_simdev_item uhmm_simdev_item;

/** A kernel: called once for each idx in [0, grid). */
typedef void (*uhmm_simdev_kernel)(uhmm_simdev_item *wi, uint64_t idx, void *arg);

/**
 * uhmm_simdev_launch - run @fn for every work item of @grid on @dev and wait.
 * Work items run in any order, in parallel on the device's lanes; a grid
 * of 0 runs nothing and returns 0.  A grid of 1 runs its work item in the
 * calling thread (as one of the lanes, with asynchronous signals blocked
 * while it runs, then the caller's mask restored): no lane is woken.
 * Returns 0, or the first device fault error: -EFAULT (unmapped or
 * PROT_NONE memory; an atomic on unmanaged memory), -EPERM (write or
 * atomic to read-only memory), -ENOMEM (the device page table could not
 * grow), -EINVAL (an unaligned access, or bad arguments: @dev not a simdev,
 * @fn NULL, called from a kernel), -EBUSY (another launch is running on
 * @dev), -ECHILD (@dev belongs to the parent of a fork); when an atomic's
 * page can be neither taken exclusively nor migrated, the migration's error
 * (-ENOMEM, -EIO; -EOPNOTSUPP on kernels without UFFDIO_MOVE); -EBADF
 * (@dev was detached, or its context destroyed, while the launch ran: a
 * device fault met the detach or destroy, which waited for the launch to
 * end).  On an error, work items not yet started are not started.  May
 * sleep.  A detach of @dev or a destroy of its context waits for a launch
 * in flight (work items that fault from then on end the launch with
 * -EBADF); a launch called after either returns -EINVAL (@dev is no longer
 * a simdev).
 */
UHMM_API int uhmm_simdev_launch(uhmm_device *dev, uhmm_simdev_kernel fn,
				uint64_t grid, void *arg);

/* Accessors.  Valid only inside a kernel, on the calling work item's wi
 * (any other use aborts the process with a message: there is nobody to
 * return an error to).  Natural alignment is required (unaligned: the
 * kernel fails -EINVAL).  Loads and stores are single-copy atomic. */
UHMM_API uint8_t uhmm_simdev_ld8(uhmm_simdev_item *wi, const void *p);
UHMM_API uint16_t uhmm_simdev_ld16(uhmm_simdev_item *wi, const void *p);
UHMM_API uint32_t uhmm_simdev_ld32(uhmm_simdev_item *wi, const void *p);
UHMM_API uint64_t uhmm_simdev_ld64(uhmm_simdev_item *wi, const void *p);
UHMM_API void uhmm_simdev_st8(uhmm_simdev_item *wi, void *p, uint8_t v);
UHMM_API void uhmm_simdev_st16(uhmm_simdev_item *wi, void *p, uint16_t v);
UHMM_API void uhmm_simdev_st32(uhmm_simdev_item *wi, void *p, uint32_t v);
UHMM_API void uhmm_simdev_st64(uhmm_simdev_item *wi, void *p, uint64_t v);
/** Copy n bytes (any alignment, may cross pages; the ranges must not
 * overlap).  Not atomic. */
UHMM_API void uhmm_simdev_copy(uhmm_simdev_item *wi, void *dst, const void *src,
			       size_t n);
/** Atomics (sequentially consistent); return the old value. */
UHMM_API uint32_t uhmm_simdev_atomic_add32(uhmm_simdev_item *wi, void *p, uint32_t v);
UHMM_API uint64_t uhmm_simdev_atomic_add64(uhmm_simdev_item *wi, void *p, uint64_t v);
UHMM_API uint32_t uhmm_simdev_atomic_xchg32(uhmm_simdev_item *wi, void *p, uint32_t v);
UHMM_API uint64_t uhmm_simdev_atomic_xchg64(uhmm_simdev_item *wi, void *p, uint64_t v);
/** Compare-exchange: returns the old value (equal to @expect on success). */
UHMM_API uint32_t uhmm_simdev_atomic_cas32(uhmm_simdev_item *wi, void *p,
					   uint32_t expect, uint32_t desired);
UHMM_API uint64_t uhmm_simdev_atomic_cas64(uhmm_simdev_item *wi, void *p,
					   uint64_t expect, uint64_t desired);

/** Placement policies (uhmm_simdev_advise). */
enum uhmm_simdev_advice {
	UHMM_SIMDEV_MIGRATE_ON_TOUCH = 0, /**< default */
	UHMM_SIMDEV_MAP_REMOTE = 1,
};

/**
 * uhmm_simdev_advise - choose the policy for device faults on
 * [addr, addr + len) (page-aligned).  Later advice over a range replaces
 * earlier advice there.  Errors: -EINVAL.
 */
UHMM_API int uhmm_simdev_advise(uhmm_device *dev, void *addr, size_t len,
				enum uhmm_simdev_advice advice);

/**
 * Atomics on pages in system memory (uhmm_simdev_advise_atomics).  The
 * device's atomics are not atomic with respect to the CPU over a bus, so the
 * page is either taken exclusively (uhmm_make_exclusive: it stays in system
 * memory, the CPU takes it back by touching it) or migrated to the device.
 */
enum uhmm_simdev_atomic_policy {
	/** Default: exclusive for pages the CPU touched recently (present in
	 * its page table), migrate the others. */
	UHMM_SIMDEV_ATOMIC_AUTO = 0,
	UHMM_SIMDEV_ATOMIC_EXCLUSIVE = 1,
	UHMM_SIMDEV_ATOMIC_MIGRATE = 2,
};

/**
 * Choose the atomic policy for [addr, addr + len) (page-aligned).  Like
 * placement advice: later advice over a range replaces earlier advice
 * there, and it acts at the next atomic fault (pages the device already
 * holds or migrated stay as they are).  When the policy's way is refused
 * (make_exclusive -EBUSY, a migration failing for want of device memory),
 * the other way is tried.  Errors: -EINVAL (also: @dev not a live simdev,
 * or bad @policy), -ENOMEM.
 */
UHMM_API int uhmm_simdev_advise_atomics(uhmm_device *dev, void *addr, size_t len,
					enum uhmm_simdev_atomic_policy policy);

/** Counters of a simdev's compute side (uhmm_simdev_stats()). */
struct uhmm_simdev_stats {
	uint64_t launches;
	uint64_t work_items;
	uint64_t faults;            /**< device faults raised (misses that reached the buffer) */
	uint64_t fault_batches;     /**< service passes */
	/** faults on a page another fault of the pass already names, or on a
	 * page found mapped when the pass looked (resolved meanwhile) */
	uint64_t fault_duplicates;
	/** faulting pages a pass mapped (each page once a pass; pages mapped
	 * alongside them, by migrating the block or by map-around, count in
	 * migrations / remote_maps, not here) */
	uint64_t fault_resolutions;
	uint64_t fault_service_ns;  /**< time in service passes */
	uint64_t migrations;        /**< migrations to the device by faults (a
				     block, or an atomic fault's run of pages) */
	uint64_t remote_maps;       /**< pages mapped remotely (system pages) */
	uint64_t range_fault_calls;
	uint64_t range_fault_pages; /**< pages walked by range faults */
	uint64_t invalidations;     /**< invalidate callbacks received */
	uint64_t shootdown_pages;   /**< device page-table entries removed */
	uint64_t tlb_hits, tlb_misses;
	uint64_t kernel_errors;     /**< launches that ended with an error */
	uint64_t exclusive_pages;   /**< pages taken exclusively for atomics
				     (uhmm_make_exclusive by atomic faults) */
	/* Failures injected (uhmm_simdev_inject, uhmm_simdev_inject_set, the
	 * UHMM_FAULT_INJECT variable), by point. */
	uint64_t injected_alloc;    /**< FAIL_ALLOC, _4K, _2M: alloc calls failed */
	uint64_t injected_copy;     /**< FAIL_COPY: copies failed */
	uint64_t injected_submit;   /**< FAIL_SUBMIT: batches refused */
	uint64_t injected_pt;       /**< FAIL_PT: page-table updates failed */
};

/** Errors: -EINVAL @dev is not a live simdev, or @out is NULL. */
UHMM_API int uhmm_simdev_stats(uhmm_device *dev, struct uhmm_simdev_stats *out);

/**
 * uhmm_simdev_poison - imitate an uncorrectable memory error in the device
 * page that holds the page at @addr: the device reports the frame lost
 * (uhmm_device_page_lost, device.h, says what follows: the page's data is
 * gone, a CPU access gets SIGBUS with BUS_MCEERR_AR, a device access a
 * kernel error -EHWPOISON, a migration over it -EHWPOISON for that page
 * only, a discard clears it).  @addr: any address in the page; the page
 * must be in @dev's memory (private, or in place in coherent memory).
 * Not from a kernel's work item or a notifier callback.  May sleep.
 * Errors: -EINVAL @dev not a live simdev, or the page is not in its
 * memory; -EFAULT @addr is not managed memory; the errors of
 * uhmm_device_page_lost (-EBUSY).
 */
UHMM_API int uhmm_simdev_poison(uhmm_device *dev, const void *addr);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_SIMDEV_H */
