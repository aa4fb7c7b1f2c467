/* SPDX-License-Identifier: MIT */
/*
 * uhmm/simdev.h - the software device.
 *
 * simdev is uhmm's embedded device backend: a device-private memory pool
 * (ordinary process memory that uhmm never hands to the application, so no
 * application pointer reaches it), an allocator of 4 KiB and 2 MiB device
 * pages, and a copy engine running on its own thread(s).  An optional
 * transfer model (bandwidth and per-transfer latency) imitates a PCIe-like
 * link; it is off by default, so copies run at memcpy speed.  Named presets
 * imitate real links (uhmm_simdev_link_preset(), below).
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
	/* Links (see "Transfer model and link presets" below). */
	/** A link preset by name ("pcie3", "pcie4", "pcie5", "nvlink",
	 * "c2c", "off"): when set, its figures replace bandwidth_gbps,
	 * latency_ns, copy_threads, peer_bandwidth_gbps and peer_latency_ns.
	 * NULL (default): those fields as given, or the UHMM_SIMDEV_LINK
	 * environment variable when they leave every model off. */
	const char *link;
	/** Peer link (device-to-device moves into this simdev), GB/s per
	 * direction; 0 = no peer model (default). */
	double peer_bandwidth_gbps;
	/** Peer link: fixed latency per device-to-device copy, ns; default 0. */
	uint64_t peer_latency_ns;
	/* Access counters (issue 17). */
	/**
	 * 1 (default): count the device's accesses to memory it maps
	 * remotely (system pages reached over the link; not its own memory,
	 * not its coherent memory in place, not pages held exclusively), per
	 * region of counter_region bytes, and when a region's count reaches
	 * counter_threshold, notify (uhmm_device_access_counter, device.h):
	 * the context's policy decides whether the region migrates to the
	 * device (the built-in policy does unless the region is advised to
	 * be mapped remotely or to prefer another location, or pinned by the
	 * thrashing control; uhmm/policy.h).  The notification is served by
	 * the device's fault-service thread; a launch returns after the
	 * notifications its accesses raised were served.  The count restarts
	 * at each notification.  Counters live in a table of 4096 slots,
	 * direct-mapped by region: regions that share a slot restart each
	 * other's count (hardware counters are as approximate).  0: off.
	 * The environment variable UHMM_SIMDEV_COUNTERS (0 or 1) overrides it.
	 */
	uint32_t counters;
	/** Remote accesses to a region that raise a notification,
	 * 1..2^28 - 1;
	 * default 256 (UVM's).  UHMM_SIMDEV_COUNTER_THRESHOLD overrides it. */
	uint32_t counter_threshold;
	/** The counting region, bytes: a power of two, 4 KiB..2 MiB; default
	 * 64 KiB.  UHMM_SIMDEV_COUNTER_REGION overrides it. */
	uint64_t counter_region;
	/* Added after the ABI baseline (UHMM_SIMDEV_OPTS_SIZE_V1 ends here). */
	/**
	 * The DAX device to take the device's memory from, or NULL
	 * (default): by name, "daxR.N" or "/dev/daxR.N" (R and N decimal).
	 * Supported mode: the device onlined as system RAM (Linux's kmem
	 * driver: `daxctl reconfigure-device --mode=system-ram daxR.N`),
	 * which is how CXL and persistent memory serve as memory: its
	 * capacity is then a NUMA node (usually CPU-less), the device's
	 * `target_node`, and simdev binds its memory to that node exactly as
	 * @numa_node does (the topology query reports that node).  Read from
	 * sysfs, under $UHMM_SYSFS_ROOT (default "/sys"; a variable for tests
	 * and containers): bus/dax/devices/<name>/driver (a link whose last
	 * component is "kmem" in system-ram mode) and .../target_node.
	 *
	 * The device in devdax mode (driver "device_dax", or none) is
	 * refused (-EOPNOTSUPP): its memory is reached only by mapping the
	 * character device, a MAP_SHARED mapping, and coherent pages are
	 * moved into place with UFFDIO_MOVE, which moves only anonymous
	 * private pages.  Reconfigure it to system-ram mode.
	 *
	 * Errors of uhmm_simdev_create(): -EINVAL a name not of that form, a
	 * target_node that is not a node the machine has (or has no memory
	 * on, or not below 1024), or @numa_node >= 0 naming another node;
	 * -ENODEV no such DAX device (no bus/dax/devices/<name>, or no
	 * readable target_node there); -EOPNOTSUPP the device is not in
	 * system-ram mode.  The name is read at creation only.
	 */
	const char *dax;
};

/** Size of struct uhmm_simdev_opts before dax was added (the ABI
 * baseline's): a program built against that header passes it, and the
 * fields it lacks keep their defaults. */
#define UHMM_SIMDEV_OPTS_SIZE_V1 offsetof(struct uhmm_simdev_opts, dax)

/** Fill @opts with the defaults. */
UHMM_API void uhmm_simdev_opts_init(struct uhmm_simdev_opts *opts);

/**
 * uhmm_simdev_create - create a software device and attach it to @ctx.
 * The device is released by uhmm_device_detach() or with the context.
 * @opts may be NULL for the defaults.
 * opts->size is sizeof(struct uhmm_simdev_opts) or, for a program built
 * against an older header, UHMM_SIMDEV_OPTS_SIZE_V1 (the fields after it
 * keep their defaults).
 * Errors: -EBADF @ctx is not a live context; -EINVAL @out is NULL, or bad
 * options (opts->size neither of those, mem_bytes 0 or not a multiple of 2 MiB,
 * copy_threads out of range, negative or NaN bandwidth or peer bandwidth,
 * opts->link not a preset name, counters not 0 or 1, counter_threshold or
 * counter_region out of range), or the environment variable
 * UHMM_SIMDEV_LINK, when it applies, names no preset (the bad name is
 * printed on stderr), or UHMM_SIMDEV_COUNTERS, _COUNTER_THRESHOLD or
 * _COUNTER_REGION is set to a value out of range, or @numa_node or @dax
 * names a node the machine does not have, or both name different nodes;
 * -ENODEV opts->dax names no DAX device; -EOPNOTSUPP opts->dax is a
 * device not in system-ram mode (see @dax); -ENOMEM; -EAGAIN thread
 * creation failed; errors of uhmm_device_attach().
 */
UHMM_API int uhmm_simdev_create(uhmm_ctx *ctx, const struct uhmm_simdev_opts *opts,
		       uhmm_device **out);

/*
 * Transfer model and link presets.
 *
 * The model (off by default: copies at memcpy speed) charges each copy of
 * the copy engine a least duration; the copy's batch completes no earlier.
 * A link has a bandwidth per direction (host to device and device to host
 * are full duplex; each direction is shared by all the device's copy
 * engines), a latency per transfer (one struct uhmm_copy: descriptor
 * fetch, doorbell, completion) and copy_threads engines, each running one
 * copy at a time; with several engines the latencies of concurrent copies
 * overlap while their bytes share the direction's bandwidth:
 *
 *     start = max(now, direction free);  direction free = start + bytes / bw
 *     done  = start + bytes / bw + latency
 *
 * A zero fill runs inside the device: latency only.
 *
 * The peer link carries device-to-device moves.  uhmm moves a page from one
 * device to another through a system bounce buffer (old device -> buffer,
 * then buffer -> new device: two copy batches submitted by the same thread,
 * src/core/migrate.c).  The destination simdev recognises the second hop
 * (copies whose source lies in what another simdev's last batches, submitted
 * by this thread just before and with nothing in between, wrote) and
 * charges it at its own peer link instead of its host link: the hop then
 * completes no earlier than the first hop's submission + peer latency +
 * bytes / peer bandwidth.  The first hop has already been charged at the
 * source's host link when the second is recognised, so a pair costs
 * max(first hop at the host link, peer model): exact when the peer link is
 * the slower, an overestimate when it is the faster (nothing in a copy
 * descriptor says "peer"; a flag there would make it exact).  Recognised
 * hops are counted in meminfo (peer_copies, peer_bytes) with or without a
 * peer model.
 *
 * Presets (bandwidths per direction, 10^9 B/s; "achievable" is the order of
 * what transfer benchmarks report, and what the model uses; latencies are
 * the order of a small DMA transfer's submission-to-completion time, not a
 * measurement of any product):
 *
 *   name    host link                       bw     lat     engines  peer
 *   pcie3   PCIe 3.0 x16: 8 GT/s x 16 lanes 12     2 us    2        12 GB/s, 3 us
 *           128b/130b = 15.75 GB/s raw,                             (P2P through
 *           ~12 GB/s achievable                                     a switch)
 *   pcie4   PCIe 4.0 x16: 31.5 GB/s raw,    25     1.5 us  2        25 GB/s, 2.5 us
 *           ~25 GB/s achievable
 *   pcie5   PCIe 5.0 x16: 63 GB/s raw,      50     1.2 us  2        50 GB/s, 2 us
 *           ~50 GB/s achievable
 *   nvlink  an SXM-class GPU: host over     50     1.2 us  4        360 GB/s, 1 us
 *           PCIe 5.0 x16; peers over NVLink 4 (18 links x 25 GB/s =
 *           450 GB/s raw per direction, "900 GB/s" both ways; ~80% modelled)
 *   c2c     a cache-coherent chip-to-chip   360    0.8 us  4        360 GB/s, 1 us
 *           link, NVLink-C2C class (Grace Hopper: 900 GB/s both ways,
 *           450 GB/s raw per direction, ~80% modelled); peers as nvlink
 *   off     no model: memcpy speed, 1 engine (the same as no preset)
 *
 * Selection: opts->link; else, when the options set no model at all
 * (bandwidth_gbps, latency_ns, peer_bandwidth_gbps and peer_latency_ns all
 * 0), the environment variable UHMM_SIMDEV_LINK (e.g. UHMM_SIMDEV_LINK=pcie4),
 * read by uhmm_simdev_create() for each simdev it creates.  An unknown name
 * fails the creation with -EINVAL.
 */

/** The figures of a link (uhmm_simdev_link_preset(), uhmm_simdev_link_info()). */
struct uhmm_simdev_link {
	const char *name;           /**< "pcie4", ...; "custom"; "off" */
	const char *what;           /**< one line: what it imitates */
	double bandwidth_gbps;      /**< host link, per direction, 10^9 B/s; 0: unlimited */
	uint64_t latency_ns;        /**< per transfer */
	uint32_t copy_engines;      /**< copy_threads */
	double peer_bandwidth_gbps; /**< device to device, per direction; 0: unlimited */
	uint64_t peer_latency_ns;
};

/**
 * uhmm_simdev_link_preset - the figures of the preset @name.
 * Returns 0 and fills @out; -EINVAL @name or @out NULL, or no preset of
 * that name (names are lower case, matched exactly).  Thread-safe; the
 * strings are static.
 */
UHMM_API int uhmm_simdev_link_preset(const char *name, struct uhmm_simdev_link *out);

/**
 * uhmm_simdev_link_name - the name of preset number @i (0, 1, ...), to
 * list them; NULL past the last.  Thread-safe.
 */
UHMM_API const char *uhmm_simdev_link_name(unsigned i);

/**
 * uhmm_simdev_link_info - the link @dev was created with: a preset's
 * figures and name, "custom" when the options set the model field by
 * field, "off" when there is no model.  Errors: -EINVAL @dev not a live
 * simdev or @out NULL.  Thread-safe; the strings are static.
 */
UHMM_API int uhmm_simdev_link_info(uhmm_device *dev, struct uhmm_simdev_link *out);

/** Memory use of a simdev (uhmm_simdev_meminfo()). */
struct uhmm_simdev_meminfo {
	uint64_t total_pages;     /**< 4 KiB pages of device memory */
	uint64_t free_pages;
	uint64_t huge_free;       /**< whole free 2 MiB blocks */
	uint64_t copies;          /**< copies completed successfully */
	uint64_t bytes_copied;    /**< their bytes (zero fills included) */
	/** Device-to-device hops into this simdev recognised (see "Transfer
	 * model and link presets"), counted with or without a peer model,
	 * and their bytes. */
	uint64_t peer_copies;
	uint64_t peer_bytes;
	/** Least durations the transfer model charged, ns: host-link copies
	 * (both directions and zero fills), and peer hops.  Computed, not
	 * measured: the same copies are charged the same. */
	uint64_t link_model_ns;
	uint64_t peer_model_ns;
	/** 2 MiB device pages: allocated now (gauge; another tenant's
	 * excepted), allocated so far, and split so far into 512 4 KiB
	 * pages in place (device.h, ops->split: a partial operation on a
	 * block uhmm moved to the device as one unit). */
	uint64_t huge_pages;
	uint64_t huge_allocs;
	uint64_t huge_splits;
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
 *       uhmm_make_exclusive.  uhmm asks for a 2 MiB page when a
 *       whole aligned block moves (device.h, ops->split) and takes 4 KiB
 *       pages when none is given: FAIL_ALLOC_2M makes it do so.  A
 *       plain FAIL_ALLOC counts a 2 MiB call that it lets through, and
 *       fails one without counting it while failures are due: the batch's
 *       4 KiB call then fails, counted (one count per batch).
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

/** A block kernel: called once for each block [first, first + count) of
 * consecutive work items (uhmm_simdev_launch_blocks). */
typedef void (*uhmm_simdev_block_kernel)(uhmm_simdev_item *wi, uint64_t first,
					 uint64_t count, void *arg);

/**
 * uhmm_simdev_launch_blocks - the work-group form of uhmm_simdev_launch():
 * run @fn once per block of @block consecutive work items of @grid, so that
 * a kernel loops over its items itself and pays the per-call overhead (the
 * call, the lane's bookkeeping, a fresh translation of each page) once per
 * block instead of once per item.  The blocks are [0, block), [block,
 * 2 * block), ...; the last one has grid % block items when that is not 0.
 * Every work item is in exactly one block, every block runs once, on one
 * lane; blocks run in any order and in parallel.  @wi is valid for the
 * whole call, for any of the block's items.  A block that ends on a device
 * fault error ends the launch like an item does (the rest of that block and
 * blocks not yet started are not run).  Returns and errors as
 * uhmm_simdev_launch(), plus -EINVAL when @block is 0.  May sleep.
 *
 * Idiom: a block of 1024 floats spans at most two pages, so a kernel can
 * move it with the vector helpers (uhmm_simdev_ldf32v...) in one or two
 * translations, compute on a local array and store it back.
 */
UHMM_API int uhmm_simdev_launch_blocks(uhmm_device *dev, uhmm_simdev_block_kernel fn,
				       uint64_t grid, uint64_t block, void *arg);

/*
 * Accessors.  Valid only inside a kernel, on the calling work item's wi
 * (any other use aborts the process with a message: there is nobody to
 * return an error to).  Natural alignment is required (unaligned: the
 * kernel fails -EINVAL).  Loads and stores are single-copy atomic.
 *
 * Cost.  Each lane (one thread of a compute unit) has its own small TLB in
 * front of its unit's: 4-way set-associative, tlb_entries entries, indexed
 * by a multiplicative hash of the page number (so arrays at 2 MiB-aligned
 * addresses, as uhmm_alloc returns them, do not evict each other), caching
 * translations to device memory and to pages held exclusively.  A hit is
 * the inline code below: a handful of instructions and no call, about the
 * cost of an L1 cache hit (uhmm-bench --scenario simdev,
 * simdev_load_hit_ns).  Anything else (the first access to a page, a page
 * in system memory, a missing right, a device fault) takes the out-of-line
 * path, which goes through the unit's TLB and the device page table under
 * the unit's lock and may raise a device fault; an access to a page mapped
 * remotely (system memory) always takes it.  For bulk work, use the vector
 * helpers (one translation per page), uhmm_simdev_copy() and
 * uhmm_simdev_launch_blocks().
 *
 * Invalidations.  An invalidation that returned (the page migrated,
 * unmapped, revoked...) is never followed by an access through the old
 * translation, inline or not.  The inline path brackets its access with a
 * per-lane sequence number (odd while it runs: the lookup, the access and
 * nothing else, never a fault or a wait); the invalidation clears the
 * lanes' entries under the unit's lock, makes every lane's store of its
 * sequence number visible (membarrier(2) PRIVATE_EXPEDITED, which makes
 * each running thread of the process execute a full memory barrier; where
 * the kernel refuses it, lanes cache nothing and every access takes the
 * out-of-line path, under the unit's lock), then waits for each lane whose
 * entries it cleared and that was inside an access to leave it (acquire
 * read of the sequence number).  Either the lane's lookup sees the entry
 * cleared, or the invalidation sees the lane inside and waits for its
 * access to end.  docs/ARCHITECTURE.md, "simdev as a device", has the
 * argument.
 *
 * Thread safety: an accessor is called by the work item's own thread only
 * (that is the validity rule above); any number of lanes access memory at
 * once.  The names starting with uhmm__ below are the inline path's
 * internals, not API.
 */
static inline uint8_t uhmm_simdev_ld8(uhmm_simdev_item *wi, const void *p);
static inline uint16_t uhmm_simdev_ld16(uhmm_simdev_item *wi, const void *p);
static inline void uhmm_simdev_st8(uhmm_simdev_item *wi, void *p, uint8_t v);
static inline void uhmm_simdev_st16(uhmm_simdev_item *wi, void *p, uint16_t v);
static inline uint32_t uhmm_simdev_ld32(uhmm_simdev_item *wi, const void *p);
static inline uint64_t uhmm_simdev_ld64(uhmm_simdev_item *wi, const void *p);
static inline void uhmm_simdev_st32(uhmm_simdev_item *wi, void *p, uint32_t v);
static inline void uhmm_simdev_st64(uhmm_simdev_item *wi, void *p, uint64_t v);
/** float and double (IEEE binary32 / binary64, as the CPU's). */
static inline float uhmm_simdev_ldf32(uhmm_simdev_item *wi, const float *p);
static inline double uhmm_simdev_ldf64(uhmm_simdev_item *wi, const double *p);
static inline void uhmm_simdev_stf32(uhmm_simdev_item *wi, float *p, float v);
static inline void uhmm_simdev_stf64(uhmm_simdev_item *wi, double *p, double v);

/**
 * Vector helpers: load @n contiguous elements at @p into @buf, or store
 * them from @buf to @p.  @p must be aligned to the element size; the span
 * may cross pages (it is then split at page boundaries: one translation
 * per page, so a span within one page costs one).  Each element is read or
 * written once; the span as a whole is not atomic.  @buf is the work
 * item's own memory (a local array: its stack, or memory uhmm does not
 * manage): the data is copied straight to or from it during the access, so
 * it must not be managed memory (a kernel reaches managed memory only
 * through accessors; a fault on such a buffer that invalidates a device
 * page may end the process with a message, as the access could not be
 * fenced otherwise).  @n == 0 does nothing.  Errors end the kernel as for
 * the scalar accessors: -EINVAL unaligned @p, -EFAULT @p + n elements
 * outside the address space the device can map, and the device fault's.
 */
static inline void uhmm_simdev_ld32v(uhmm_simdev_item *wi, uint32_t *buf,
				     const uint32_t *p, size_t n);
static inline void uhmm_simdev_st32v(uhmm_simdev_item *wi, uint32_t *p,
				     const uint32_t *buf, size_t n);
static inline void uhmm_simdev_ld64v(uhmm_simdev_item *wi, uint64_t *buf,
				     const uint64_t *p, size_t n);
static inline void uhmm_simdev_st64v(uhmm_simdev_item *wi, uint64_t *p,
				     const uint64_t *buf, size_t n);
static inline void uhmm_simdev_ldf32v(uhmm_simdev_item *wi, float *buf,
				      const float *p, size_t n);
static inline void uhmm_simdev_stf32v(uhmm_simdev_item *wi, float *p,
				      const float *buf, size_t n);
static inline void uhmm_simdev_ldf64v(uhmm_simdev_item *wi, double *buf,
				      const double *p, size_t n);
static inline void uhmm_simdev_stf64v(uhmm_simdev_item *wi, double *p,
				      const double *buf, size_t n);

/** Copy n bytes (any alignment, may cross pages; the ranges must not
 * overlap).  Not atomic. */
UHMM_API void uhmm_simdev_copy(uhmm_simdev_item *wi, void *dst, const void *src,
			       size_t n);
/** Atomics (sequentially consistent); return the old value.  They follow
 * the atomic policy (uhmm_simdev_advise_atomics) on pages outside the
 * device's memory. */
static inline uint32_t uhmm_simdev_atomic_add32(uhmm_simdev_item *wi, void *p, uint32_t v);
static inline uint64_t uhmm_simdev_atomic_add64(uhmm_simdev_item *wi, void *p, uint64_t v);
static inline uint32_t uhmm_simdev_atomic_xchg32(uhmm_simdev_item *wi, void *p, uint32_t v);
static inline uint64_t uhmm_simdev_atomic_xchg64(uhmm_simdev_item *wi, void *p, uint64_t v);
/** Compare-exchange: returns the old value (equal to @expect on success). */
static inline uint32_t uhmm_simdev_atomic_cas32(uhmm_simdev_item *wi, void *p,
						uint32_t expect, uint32_t desired);
static inline uint64_t uhmm_simdev_atomic_cas64(uhmm_simdev_item *wi, void *p,
						uint64_t expect, uint64_t desired);
/** Floating-point atomic add (a compare-exchange loop on the bits, as
 * devices without a native one do; sequentially consistent): returns the
 * old value.  The sum of many adds is exact when every partial sum is
 * representable (e.g. small integers); otherwise it depends on the order,
 * as on any device. */
static inline float uhmm_simdev_atomic_addf32(uhmm_simdev_item *wi, float *p, float v);
static inline double uhmm_simdev_atomic_addf64(uhmm_simdev_item *wi, double *p, double v);

/* ---- the accessors' inline path: internal to uhmm (names starting with
 * uhmm__ may change in any release; call the accessors above) ------------ */

#define UHMM__SD_INLINE static inline __attribute__((always_inline))
#define UHMM__SD_WAYS 4u
#define UHMM__SD_TV 1ull /* tag: valid */
#define UHMM__SD_TW 2ull /* tag: writes allowed */
#define UHMM__SD_TA 4ull /* tag: atomics allowed */
#define UHMM__SD_TH 8ull /* tag: a 2 MiB entry (address of the block) */
#define UHMM__SD_PGMASK (~(uint64_t)(UHMM_PAGE_SIZE - 1))
#define UHMM__SD_HPGMASK (~(uint64_t)(UHMM_HUGE_SIZE - 1))
/* The set of a 2 MiB entry is that of the key (va >> 21) | HKEY_BIT. */
#define UHMM__SD_HKEY_BIT (1ull << 62)

/* A lane TLB entry: tag = page address | rights (0: empty), or block
 * address | UHMM__SD_TH | rights for a 2 MiB device page (every page of
 * the block); the data of address va of the page is at va + delta. */
struct uhmm__sd_tlbe {
	uint64_t tag;
	intptr_t delta;
};

/* The head of every uhmm_simdev_item: what the inline path reads. */
struct uhmm__sd_lane {
	struct uhmm__sd_tlbe *tlb; /* (set_mask + 1) * UHMM__SD_WAYS entries */
	uint64_t set_mask;
	uint64_t seq;              /* odd while inside an inline access; +2 a lookup */
	uint64_t misses;           /* lookups not hits (hits: seq / 2 - misses) */
	uint64_t reserved_;
};

/* The work item of the calling thread (UHMM__SD_NOLANE outside kernels,
 * so that no wi, NULL included, matches it there). */
#define UHMM__SD_NOLANE ((uhmm_simdev_item *)(uintptr_t)1)
extern UHMM_API __thread uhmm_simdev_item *uhmm__sd_cur
	__attribute__((tls_model("initial-exec")));

/* The out-of-line paths. */
enum uhmm__sd_op {
	UHMM__SD_LD = 0, UHMM__SD_ST, UHMM__SD_ADD, UHMM__SD_XCHG, UHMM__SD_CAS,
	UHMM__SD_FADD, /* float (size 4) or double (size 8) add */
};
UHMM_API uint64_t uhmm__simdev_access(uhmm_simdev_item *wi, const void *p,
				      unsigned size, unsigned op, uint64_t a,
				      uint64_t b);
UHMM_API void uhmm__simdev_vec(uhmm_simdev_item *wi, void *buf, const void *p,
			       size_t n, unsigned elem, int write);

/* Opens an inline access to the page of @va with rights @need: returns the
 * address of @va's data, the access open (end it with uhmm__sd_end), or
 * NULL with nothing open (take the out-of-line path). */
UHMM__SD_INLINE void *
uhmm__sd_begin(uhmm_simdev_item *wi, uintptr_t va, uint64_t need, uint64_t *seq)
{
	struct uhmm__sd_lane *l = (struct uhmm__sd_lane *)(void *)wi;

	if (__builtin_expect(wi != uhmm__sd_cur, 0))
		return NULL; /* the out-of-line path says what is wrong */
	uint64_t s = __atomic_load_n(&l->seq, __ATOMIC_RELAXED);
	*seq = s;
	__atomic_store_n(&l->seq, s + 1, __ATOMIC_RELAXED);
	/* Only the compiler is fenced: the CPU's half of the store-load
	 * ordering is the shootdown's membarrier(2). */
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	uint64_t pg = (uint64_t)va & UHMM__SD_PGMASK;
	uint64_t set = (((pg >> 12) * 0x9e3779b97f4a7c15ull) >> 32) & l->set_mask;
	struct uhmm__sd_tlbe *e = l->tlb + set * UHMM__SD_WAYS;
	uint64_t mask = UHMM__SD_PGMASK | UHMM__SD_TV | UHMM__SD_TH | need;
	uint64_t want = pg | UHMM__SD_TV | need;
	for (unsigned w = 0; w < UHMM__SD_WAYS; w++) {
		if ((__atomic_load_n(&e[w].tag, __ATOMIC_RELAXED) & mask) == want)
			return (void *)(va + (uintptr_t)e[w].delta);
	}
	/* The block's 2 MiB entry, if the page is in a device huge page. */
	uint64_t hk = ((uint64_t)va >> 21) | UHMM__SD_HKEY_BIT;
	e = l->tlb + (((hk * 0x9e3779b97f4a7c15ull) >> 32) & l->set_mask) * UHMM__SD_WAYS;
	mask = UHMM__SD_HPGMASK | UHMM__SD_TV | UHMM__SD_TH | need;
	want = ((uint64_t)va & UHMM__SD_HPGMASK) | UHMM__SD_TV | UHMM__SD_TH | need;
	for (unsigned w = 0; w < UHMM__SD_WAYS; w++) {
		if ((__atomic_load_n(&e[w].tag, __ATOMIC_RELAXED) & mask) == want)
			return (void *)(va + (uintptr_t)e[w].delta);
	}
	__atomic_store_n(&l->misses, __atomic_load_n(&l->misses, __ATOMIC_RELAXED) + 1,
			 __ATOMIC_RELAXED);
	__atomic_store_n(&l->seq, s + 2, __ATOMIC_RELEASE);
	return NULL;
}

/* Ends the inline access uhmm__sd_begin opened (@seq: what it gave; not
 * read back from memory, which would chain two store-to-load forwards per
 * access). */
UHMM__SD_INLINE void uhmm__sd_end(uhmm_simdev_item *wi, uint64_t seq)
{
	struct uhmm__sd_lane *l = (struct uhmm__sd_lane *)(void *)wi;
	__atomic_store_n(&l->seq, seq + 2, __ATOMIC_RELEASE);
}

#define UHMM__SD_SCALAR(bits)                                                 \
	UHMM__SD_INLINE uint##bits##_t uhmm_simdev_ld##bits(uhmm_simdev_item *wi, \
							  const void *p)      \
	{                                                                     \
		if (!((uintptr_t)p & (bits / 8 - 1))) {                       \
			uint64_t s_;                                          \
			uint##bits##_t *h = (uint##bits##_t *)uhmm__sd_begin( \
				wi, (uintptr_t)p, 0, &s_);                    \
			if (h) {                                              \
				uint##bits##_t v =                            \
					__atomic_load_n(h, __ATOMIC_RELAXED); \
				uhmm__sd_end(wi, s_);                         \
				return v;                                     \
			}                                                     \
		}                                                             \
		return (uint##bits##_t)uhmm__simdev_access(wi, p, bits / 8,   \
							   UHMM__SD_LD, 0, 0); \
	}                                                                     \
	UHMM__SD_INLINE void uhmm_simdev_st##bits(uhmm_simdev_item *wi, void *p, \
						uint##bits##_t v)             \
	{                                                                     \
		if (!((uintptr_t)p & (bits / 8 - 1))) {                       \
			uint64_t s_;                                          \
			uint##bits##_t *h = (uint##bits##_t *)uhmm__sd_begin( \
				wi, (uintptr_t)p, UHMM__SD_TW, &s_);          \
			if (h) {                                              \
				__atomic_store_n(h, v, __ATOMIC_RELAXED);     \
				uhmm__sd_end(wi, s_);                         \
				return;                                       \
			}                                                     \
		}                                                             \
		(void)uhmm__simdev_access(wi, p, bits / 8, UHMM__SD_ST, v, 0); \
	}
UHMM__SD_SCALAR(8)
UHMM__SD_SCALAR(16)
UHMM__SD_SCALAR(32)
UHMM__SD_SCALAR(64)
#undef UHMM__SD_SCALAR

/* An atomic read-modify-write @expr on *h (uint##bits##_t *), hit path. */
#define UHMM__SD_UNPACK(...) __VA_ARGS__
#define UHMM__SD_RMW(bits, name, expr, slow, params)                          \
	UHMM__SD_INLINE uint##bits##_t uhmm_simdev_atomic_##name##bits(       \
		uhmm_simdev_item *wi, void *p, UHMM__SD_UNPACK params)        \
	{                                                                     \
		if (!((uintptr_t)p & (bits / 8 - 1))) {                       \
			uint64_t s_;                                          \
			uint##bits##_t *h = (uint##bits##_t *)uhmm__sd_begin( \
				wi, (uintptr_t)p, UHMM__SD_TW | UHMM__SD_TA, &s_); \
			if (h) {                                              \
				uint##bits##_t o_ = (expr);                   \
				uhmm__sd_end(wi, s_);                         \
				return o_;                                    \
			}                                                     \
		}                                                             \
		return (uint##bits##_t)uhmm__simdev_access(                   \
			wi, p, bits / 8, UHMM__SD_UNPACK slow);               \
	}

/* Helper: compare-exchange returning the old value. */
#define UHMM__SD_CASV(bits)                                                   \
	UHMM__SD_INLINE uint##bits##_t uhmm__sd_cas##bits(uint##bits##_t *h,  \
							uint##bits##_t e,     \
							uint##bits##_t d)     \
	{                                                                     \
		__atomic_compare_exchange_n(h, &e, d, 0, __ATOMIC_SEQ_CST,    \
					    __ATOMIC_SEQ_CST);                \
		return e;                                                     \
	}
UHMM__SD_CASV(32)
UHMM__SD_CASV(64)
#undef UHMM__SD_CASV

#define UHMM__SD_WIDE(bits)                                                   \
	UHMM__SD_RMW(bits, add, __atomic_fetch_add(h, v, __ATOMIC_SEQ_CST),   \
		     (UHMM__SD_ADD, v, 0), (uint##bits##_t v))                \
	UHMM__SD_RMW(bits, xchg, __atomic_exchange_n(h, v, __ATOMIC_SEQ_CST), \
		     (UHMM__SD_XCHG, v, 0), (uint##bits##_t v))               \
	UHMM__SD_RMW(bits, cas, uhmm__sd_cas##bits(h, expect, desired),       \
		     (UHMM__SD_CAS, expect, desired),                         \
		     (uint##bits##_t expect, uint##bits##_t desired))         \
	UHMM__SD_INLINE void uhmm_simdev_ld##bits##v(uhmm_simdev_item *wi,    \
						   uint##bits##_t *buf,       \
						   const uint##bits##_t *p,   \
						   size_t n)                  \
	{                                                                     \
		uintptr_t va = (uintptr_t)p;                                  \
		if (n && n <= UHMM_PAGE_SIZE / (bits / 8) &&                  \
		    !(va & (bits / 8 - 1)) &&                                 \
		    !((va ^ (va + n * (bits / 8) - 1)) & UHMM__SD_PGMASK)) {  \
			uint64_t s_;                                          \
			const void *h = uhmm__sd_begin(wi, va, 0, &s_);       \
			if (h) {                                              \
				__builtin_memcpy(buf, h, n * (bits / 8));     \
				uhmm__sd_end(wi, s_);                         \
				return;                                       \
			}                                                     \
		}                                                             \
		if (n)                                                        \
			uhmm__simdev_vec(wi, buf, p, n, bits / 8, 0);         \
	}                                                                     \
	UHMM__SD_INLINE void uhmm_simdev_st##bits##v(uhmm_simdev_item *wi,    \
						   uint##bits##_t *p,         \
						   const uint##bits##_t *buf, \
						   size_t n)                  \
	{                                                                     \
		uintptr_t va = (uintptr_t)p;                                  \
		if (n && n <= UHMM_PAGE_SIZE / (bits / 8) &&                  \
		    !(va & (bits / 8 - 1)) &&                                 \
		    !((va ^ (va + n * (bits / 8) - 1)) & UHMM__SD_PGMASK)) {  \
			uint64_t s_;                                          \
			void *h = uhmm__sd_begin(wi, va, UHMM__SD_TW, &s_);   \
			if (h) {                                              \
				__builtin_memcpy(h, buf, n * (bits / 8));     \
				uhmm__sd_end(wi, s_);                         \
				return;                                       \
			}                                                     \
		}                                                             \
		if (n)                                                        \
			uhmm__simdev_vec(wi, (void *)(uintptr_t)buf, p, n,    \
					 bits / 8, 1);                        \
	}
UHMM__SD_WIDE(32)
UHMM__SD_WIDE(64)
#undef UHMM__SD_WIDE
#undef UHMM__SD_RMW
#undef UHMM__SD_UNPACK

#define UHMM__SD_FLOAT(F, T, U, bits)                                         \
	UHMM__SD_INLINE T uhmm_simdev_ld##F(uhmm_simdev_item *wi, const T *p) \
	{                                                                     \
		U u = uhmm_simdev_ld##bits(wi, p);                            \
		T v;                                                          \
		__builtin_memcpy(&v, &u, sizeof(v));                          \
		return v;                                                     \
	}                                                                     \
	UHMM__SD_INLINE void uhmm_simdev_st##F(uhmm_simdev_item *wi, T *p, T v) \
	{                                                                     \
		U u;                                                          \
		__builtin_memcpy(&u, &v, sizeof(u));                          \
		uhmm_simdev_st##bits(wi, p, u);                               \
	}                                                                     \
	UHMM__SD_INLINE void uhmm_simdev_ld##F##v(uhmm_simdev_item *wi, T *buf, \
						const T *p, size_t n)         \
	{                                                                     \
		uhmm_simdev_ld##bits##v(wi, (U *)(void *)buf,                 \
					(const U *)(const void *)p, n);       \
	}                                                                     \
	UHMM__SD_INLINE void uhmm_simdev_st##F##v(uhmm_simdev_item *wi, T *p, \
						const T *buf, size_t n)       \
	{                                                                     \
		uhmm_simdev_st##bits##v(wi, (U *)(void *)p,                   \
					(const U *)(const void *)buf, n);     \
	}                                                                     \
	UHMM__SD_INLINE T uhmm_simdev_atomic_add##F(uhmm_simdev_item *wi, T *p, \
						  T v)                        \
	{                                                                     \
		U o;                                                          \
		T r;                                                          \
		if (!((uintptr_t)p & (sizeof(T) - 1))) {                      \
			uint64_t s_;                                          \
			U *h = (U *)uhmm__sd_begin(wi, (uintptr_t)p,          \
						   UHMM__SD_TW | UHMM__SD_TA, &s_); \
			if (h) {                                              \
				U n_;                                         \
				o = __atomic_load_n(h, __ATOMIC_RELAXED);     \
				do {                                          \
					T s;                                  \
					__builtin_memcpy(&r, &o, sizeof(r));  \
					s = r + v;                            \
					__builtin_memcpy(&n_, &s, sizeof(n_)); \
				} while (!__atomic_compare_exchange_n(        \
					h, &o, n_, 1, __ATOMIC_SEQ_CST,       \
					__ATOMIC_RELAXED));                   \
				uhmm__sd_end(wi, s_);                         \
				return r;                                     \
			}                                                     \
		}                                                             \
		__builtin_memcpy(&o, &v, sizeof(o));                          \
		o = (U)uhmm__simdev_access(wi, p, sizeof(T), UHMM__SD_FADD, o, 0); \
		__builtin_memcpy(&r, &o, sizeof(r));                          \
		return r;                                                     \
	}
UHMM__SD_FLOAT(f32, float, uint32_t, 32)
UHMM__SD_FLOAT(f64, double, uint64_t, 64)
#undef UHMM__SD_FLOAT

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
	/** Time fault passes waited because the policy throttled them
	 * (thrashing control, uhmm/policy.h delay_ns). */
	uint64_t throttle_ns;
	/** Of tlb_hits, those of the lanes' TLBs, taken by the accessors'
	 * inline path (tlb_hits counts every access translated without the
	 * device page table: lane or unit TLB; tlb_misses those that went to
	 * the page table). */
	uint64_t tlb_lane_hits;
	/** Pages mapped in a peer's memory (uhmm_simdev_peer_access): each
	 * installation of such an entry (not a migration, not a remote map) */
	uint64_t peer_maps;
	/** The peer link's modelled time charged to accesses through those
	 * entries, ns (computed: see uhmm_simdev_peer_access) */
	uint64_t peer_access_ns;
	/** 2 MiB device pages in the device page table (docs/ARCHITECTURE.md
	 * "Device huge pages"): entries now (gauge), entries installed so
	 * far (a block mapped whole from a range fault that says
	 * UHMM_RE_HUGE), and entries split into 512 4 KiB ones (a change to
	 * part of the block: an invalidation, a 4 KiB entry set in it). */
	uint64_t pt_huge_entries;
	uint64_t pt_huge_maps;
	uint64_t pt_huge_splits;
	/** TLB entries filled as 2 MiB ones (a unit's or a lane's), and the
	 * units' hits on them (lanes' inline hits are in tlb_lane_hits). */
	uint64_t tlb_huge_fills;
	uint64_t tlb_huge_hits;
	/* Issue 17. */
	/** Requests to map a span where it is (accessed-by advice, uhmm.h
	 * UHMM_ADVISE_ACCESSED_BY), queued for the fault-service thread
	 * (merged with a pending one they touch included), and requests
	 * dropped because 256 were pending (the device faults instead). */
	uint64_t map_requests;
	uint64_t map_requests_dropped;
	/** Access-counter notifications raised (a region's remote accesses
	 * reached the threshold: uhmm_simdev_opts.counter_threshold), and
	 * those the policy answered by migrating the region to the device. */
	uint64_t counter_notifications;
	uint64_t counter_migrations;
};

/** Errors: -EINVAL @dev is not a live simdev, or @out is NULL. */
UHMM_API int uhmm_simdev_stats(uhmm_device *dev, struct uhmm_simdev_stats *out);

/**
 * uhmm_simdev_peer_access - let @dev's kernels access pages that are in
 * another simdev's memory where they are, over the peer link, instead of
 * bringing them home (the cudaDeviceEnablePeerAccess of simdev; off by
 * default).  @on: 1 on, 0 off (for faults from then on: entries already
 * mapped stay until invalidated).
 *
 * When a device fault of @dev maps pages remotely (MAP_REMOTE advice, a
 * policy's UHMM_POL_MAP_REMOTE, a migration refused for want of memory),
 * its range fault asks for peers' pages (UHMM_RF_PEER, mirror.h): a page
 * private to another simdev of the context is mapped in @dev's page table
 * at that simdev's frame (a peer entry): @dev's kernels read, write and
 * run atomics on it there, nothing migrates (the page stays the other
 * device's, its pages and counters unchanged; counted in peer_maps).  When
 * the page moves (back to system memory on a CPU touch, to a device,
 * evicted, poisoned, its device detached) the range is invalidated first,
 * which removes the peer entry; the next access faults and maps the page
 * where it is then.  Device-to-device migrations are charged at the peer
 * link anyway ("Transfer model and link presets").
 *
 * Cost model: an access through a peer entry that misses the lane's TLB is
 * charged one page over @dev's peer link (peer_latency_ns + 4 KiB /
 * peer_bandwidth_gbps), the following hits nothing; the lane sleeps off
 * what it owes by 50 us steps.  Without a peer model, free.
 * Errors: -EINVAL @dev is not a live simdev, or @on is not 0 or 1.
 * Thread-safe.
 */
UHMM_API int uhmm_simdev_peer_access(uhmm_device *dev, int on);

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
 * memory; -EFAULT @addr is not managed memory; -ENOENT the page left the
 * device's memory during the call (nothing is lost); the errors of
 * uhmm_device_page_lost (-EBUSY).
 */
UHMM_API int uhmm_simdev_poison(uhmm_device *dev, const void *addr);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_SIMDEV_H */
