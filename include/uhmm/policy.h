/* SPDX-License-Identifier: MIT */
/*
 * uhmm/policy.h - plug-in migration policies.
 *
 * uhmm is split in two.  The mechanism (the core and the device backends)
 * moves pages, maps them, evicts, invalidates, and never decides.  The policy
 * decides: what a CPU fault brings home and what is read ahead, what a batch
 * of device faults migrates or maps remotely, which blocks are evicted when
 * a device is full.  The built-in policy (uhmm's defaults, documented in
 * docs/ARCHITECTURE.md "Policy") decides when nothing else is installed; a
 * program may install its own with uhmm_policy_set(), or name a shared
 * object in the UHMM_POLICY environment variable.
 *
 * A policy is a struct of callbacks, every one optional: a callback left
 * NULL falls back to the built-in one (as sched_ext's scheduler ops do).
 * Callbacks see plain data, never uhmm's internals, so one policy runs both
 * live and in the trace replay tool (uhmm-replay), which has no context and
 * moves no data.
 *
 * The rules a callback lives by:
 *  - It may be called from several threads at once (the fault-service
 *    thread, a device's fault thread, any thread migrating or evicting): a
 *    policy protects its own state.
 *  - It must not call uhmm (any uhmm_* function) and must not block.
 *  - It returns 0 and a valid decision (each callback says what valid is),
 *    within the context's time budget (UHMM_POLICY_BUDGET_US, default
 *    10000 us of wall-clock time: a callback preempted on a loaded
 *    machine must not pass for one that loops or blocks).  A callback that returns non-zero or an invalid decision, or
 *    overruns the budget, gets its policy *ejected*: the context falls back
 *    to the built-in policy for good (until the next uhmm_policy_set()),
 *    says why once on stderr and in uhmm_policy_get(), and counts it in
 *    uhmm_stats.policy_ejections.  The decision of the failing call is
 *    replaced by the built-in one: nothing is lost, no data moves wrongly.
 *    A callback that never returns hangs the thread that called it: uhmm
 *    cannot preempt user code.
 *
 * Addresses are process virtual addresses; "pages" are 4 KiB
 * (UHMM_PAGE_SIZE), "blocks" are 2 MiB-aligned (UHMM_HUGE_SIZE).
 */
#ifndef UHMM_POLICY_H
#define UHMM_POLICY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef UHMM_API
#define UHMM_API __attribute__((visibility("default")))
#endif

/** Version of struct uhmm_policy_ops this header describes. */
#define UHMM_POLICY_VERSION 1

/** A location: 0 is system memory (the CPU), n > 0 the device of id n
 * (uhmm_device_id()). */
typedef uint32_t uhmm_loc;

/* ---- eviction ----------------------------------------------------------- */

/** A device-resident 2 MiB block that eviction may take (a candidate). */
struct uhmm_pol_block {
	uint64_t addr;      /**< 2 MiB-aligned virtual address of the block */
	uint64_t last_use;  /**< ns (CLOCK_MONOTONIC; in replay, trace time) of
			     * the last migration of pages of it to the device */
	uint64_t first_use; /**< when it was first listed on the device */
	uint64_t uses;      /**< migrations of pages of it to the device since */
	uint32_t flags;     /**< UHMM_POL_BLK_* */
	uint32_t _pad;
};
/** The block's first page is advised to prefer this device. */
#define UHMM_POL_BLK_PREFERRED 1u

/* ---- CPU faults on device-resident pages -------------------------------- */

/** A CPU fault on a page a device holds (the policy is not asked about
 * faults on system memory: they are filled with zeros or mapped). */
struct uhmm_pol_cpu_fault {
	uint64_t addr;                   /**< faulting address */
	uint64_t range_start, range_end; /**< the managed range holding it */
	uint64_t time_ns;                /**< CLOCK_MONOTONIC */
	uhmm_loc where;                  /**< the device holding the page */
	uint32_t write;                  /**< 1 for a write fault */
};

/** What comes home for a CPU fault. */
struct uhmm_pol_cpu_act {
	/** Bring [lo, hi) home now.  Valid: page-aligned, contains the
	 * faulting page, at most 2 MiB long, within the range.  Of it, the
	 * pages around the faulting one that are on the same device and
	 * that nobody else holds come (a contiguous run). */
	uint64_t lo, hi;
	/** Then bring [ahead_lo, ahead_hi) home speculatively, between faults
	 * (read-ahead).  Empty (ahead_lo == ahead_hi) for none.  Valid:
	 * page-aligned, within the range, at most 256 MiB.  Pages migrated
	 * toward a device after the decision are left where they are (see
	 * uhmm_migrate()). */
	uint64_t ahead_lo, ahead_hi;
	/** The read-ahead stream the window belongs to, 0..UHMM_POL_STREAMS-1:
	 * a window replaces its stream's previous one (what the stream
	 * already brought home inside the new window is not brought again).
	 * Streams let several scans (threads, areas) be followed at once. */
	uint32_t ahead_stream;
	uint32_t _pad;
};

/** Read-ahead streams a context follows at once. */
#define UHMM_POL_STREAMS 4

/* ---- device faults ------------------------------------------------------ */

/** Access of a device fault. */
enum uhmm_pol_access { UHMM_POL_READ = 1, UHMM_POL_WRITE = 2, UHMM_POL_ATOMIC = 3 };

/** What the backend's own advice says of a page (uhmm_simdev_advise()). */
enum uhmm_pol_hint {
	UHMM_POL_HINT_NONE = 0,
	UHMM_POL_HINT_MAP_REMOTE = 1, /**< map it where it is */
};

/** One faulting page of a batch of device faults. */
struct uhmm_pol_dev_fault {
	uint64_t addr;        /**< page address */
	uint64_t lo, hi;      /**< the span the page may move with: within its
			       * 2 MiB block, managed, and under one advice */
	uint32_t access;      /**< enum uhmm_pol_access */
	uint32_t hint;        /**< enum uhmm_pol_hint */
	uhmm_loc where;       /**< where the page is now (0: system memory) */
	uint32_t flags;       /**< UHMM_POL_F_* */
	uhmm_loc preferred;   /**< UHMM_POL_F_PREFERRED: the advised location
			       * (uhmm_advise(); [lo, hi) is within its run) */
	uint32_t _pad;
};
/** The page has a preferred location (uhmm_pol_dev_fault.preferred). */
#define UHMM_POL_F_PREFERRED 1u
/** The page is advised read-mostly (UHMM_ADVISE_READ_MOSTLY); [lo, hi) is
 * within the run of that advice.  The built-in policy answers a read fault
 * on such a page UHMM_POL_DUPLICATE, any other MIGRATE. */
#define UHMM_POL_F_READ_MOSTLY 2u
/** The faulting device holds a read-only duplicate of the page already
 * (it is not in its page table: a read needs only a mapping of it).  The
 * built-in policy answers a read fault on such a page UHMM_POL_DUPLICATE
 * (which maps the duplicate), any other MIGRATE (which collapses it). */
#define UHMM_POL_F_DUPLICATED 4u

/* Device atomics (the atomics policy is the policy's: the backend says what
 * it knows of an atomic fault, the policy chooses the verb). */
/** An atomic fault on a page the device cannot make atomics on where it is
 * (system memory reached over a bus: not atomic with respect to the CPU).
 * The answer must be UHMM_POL_MIGRATE or UHMM_POL_EXCLUSIVE; MAP_REMOTE is
 * invalid.  (An atomic on a page in the device's own memory, or in its
 * coherent memory in place, has no such flag: it is placed as any fault.) */
#define UHMM_POL_F_ATOMIC_FAR (1u << 8)
/** The page is present in the CPU's page table (the CPU used it lately). */
#define UHMM_POL_F_CPU_PRESENT (1u << 9)
/** The backend's own atomics advice for the page (simdev:
 * uhmm_simdev_advise_atomics()): take it exclusively, or migrate it.
 * Neither: no advice (the built-in rule: exclusive if UHMM_POL_F_CPU_PRESENT,
 * else migrate). */
#define UHMM_POL_F_ATOMIC_EXCLUSIVE (1u << 10)
#define UHMM_POL_F_ATOMIC_MIGRATE (1u << 11)

/** Decision for a faulting page. */
enum uhmm_pol_dev_action {
	UHMM_POL_MIGRATE = 1,    /**< migrate [lo, hi) to the faulting device */
	UHMM_POL_MAP_REMOTE = 2, /**< map the page where it is, no migration */
	/** Take the page exclusively for the device (uhmm_make_exclusive(),
	 * mirror.h): it stays in system memory, out of the CPU's page table
	 * until the CPU touches it again.  Valid only for a fault with
	 * UHMM_POL_F_ATOMIC_FAR. */
	UHMM_POL_EXCLUSIVE = 3,
	/** Give the device read-only duplicates of [lo, hi) (as for
	 * read-mostly advice, uhmm_migrate() with UHMM_MIGRATE_DUPLICATE):
	 * the pages stay where they are, the device reads its own copy, and
	 * a write from any side collapses the duplicates first.  Valid only
	 * for a read fault (UHMM_POL_READ), with MIGRATE's span rules; a
	 * coherent device, which cannot hold a duplicate, migrates instead. */
	UHMM_POL_DUPLICATE = 4,
};

struct uhmm_pol_dev_act {
	uint32_t action;      /**< enum uhmm_pol_dev_action */
	uint32_t _pad;
	/** UHMM_POL_MIGRATE, UHMM_POL_DUPLICATE: the span to migrate or
	 * duplicate.  Valid: page-aligned, contains the page, within the
	 * fault's [lo, hi).  (Unused by the other actions.) */
	uint64_t lo, hi;
	/** Throttle: act no earlier than this long after the decision (the
	 * backend waits before serving the fault's block; thrashing
	 * control).  Valid: at most UHMM_POL_MAX_DELAY_NS. */
	uint64_t delay_ns;
};
/** Longest throttle a device-fault decision may ask for: 10 ms. */
#define UHMM_POL_MAX_DELAY_NS 10000000ull

/* ---- access counters (issue 17) ----------------------------------------- */

/** An access-counter notification: device @dev (the callback's argument)
 * made @count accesses to memory it maps remotely (system memory, reached
 * over its link) within one region since the region's last notification.
 * simdev counts per 64 KiB region and notifies at 256 accesses
 * (uhmm_simdev_opts.counter_region, .counter_threshold). */
struct uhmm_pol_counter {
	uint64_t addr, len;   /**< the region, clipped to the managed range
			       * that holds its accessed page */
	uint64_t count;       /**< accesses counted (the threshold) */
	uint64_t time_ns;     /**< CLOCK_MONOTONIC */
	uint32_t hint;        /**< the backend's advice of the region's first
			       * page (enum uhmm_pol_hint) */
	uint32_t flags;       /**< UHMM_POL_F_PREFERRED */
	uhmm_loc preferred;   /**< UHMM_POL_F_PREFERRED: the advised location
			       * of the region's first page (uhmm_advise()) */
	uint32_t _pad;
};

/** Decision for an access-counter notification. */
enum uhmm_pol_counter_action {
	UHMM_POL_CTR_IGNORE = 0,  /**< leave the region where it is */
	UHMM_POL_CTR_MIGRATE = 1, /**< migrate [lo, hi) to the device */
};

struct uhmm_pol_counter_act {
	uint32_t action;      /**< enum uhmm_pol_counter_action */
	uint32_t _pad;
	/** UHMM_POL_CTR_MIGRATE: the span.  Valid: page-aligned, non-empty,
	 * within the notification's [addr, addr + len). */
	uint64_t lo, hi;
};

/* ---- the policy --------------------------------------------------------- */

struct uhmm_policy_ops {
	uint32_t version;  /**< UHMM_POLICY_VERSION */
	uint32_t size;     /**< sizeof(struct uhmm_policy_ops) */
	const char *name;  /**< for messages; may be NULL */

	/**
	 * Called once when the policy is installed, with the @arg given to
	 * uhmm_policy_set() (NULL when loaded by UHMM_POLICY).  Returns the
	 * policy's state, passed to every other callback; NULL is a valid
	 * state.  A non-zero *err refuses the installation (uhmm_policy_set()
	 * returns it).  Optional.
	 */
	void *(*init)(const void *arg, int *err);
	/** Called once when the policy is removed (replaced, ejected, or at
	 * uhmm_ctx_destroy()), after its last callback returned.  Optional. */
	void (*exit)(void *st);

	/** A CPU fault on a device-resident page: what comes home.  @act
	 * holds the built-in decision on entry. */
	int (*cpu_fault)(void *st, const struct uhmm_pol_cpu_fault *f,
			 struct uhmm_pol_cpu_act *act);

	/** A batch of @n faults of device @dev, sorted by address, one per
	 * page: write one decision per fault to act[i] (which holds the
	 * built-in decisions on entry).  The atomics policy too: atomic
	 * faults on pages the device cannot make atomics on where they are
	 * (UHMM_POL_F_ATOMIC_FAR) are asked in a batch of their own, before
	 * the block's other faults, and answered MIGRATE or EXCLUSIVE (the
	 * built-in answer: EXCLUSIVE under the backend's advice
	 * UHMM_POL_F_ATOMIC_EXCLUSIVE, or with no advice for a page
	 * UHMM_POL_F_CPU_PRESENT; MIGRATE of the fault's span otherwise, the
	 * page alone where the backend's hint is MAP_REMOTE).  When the verb
	 * chosen is refused (the page busy, the device full), the backend
	 * tries the other before it gives up. */
	int (*dev_faults)(void *st, uhmm_loc dev, const struct uhmm_pol_dev_fault *f,
			  size_t n, struct uhmm_pol_dev_act *act);

	/**
	 * Device @dev needs @need_bytes more: order the @n candidates by
	 * preference to evict.  order[0..n) holds the built-in order on
	 * entry (least recently used first); write a permutation of 0..n-1,
	 * the preferred victim first.  The mechanism takes victims in that
	 * order, skipping blocks someone holds, until it has room.  The
	 * candidates never include blocks of the request that needs room.
	 * A device with more listed blocks than 1024 offers its 512 least
	 * and 512 most recently used.
	 */
	int (*evict_order)(void *st, uhmm_loc dev, uint64_t need_bytes,
			   const struct uhmm_pol_block *cand, size_t n, uint32_t *order);

	/** Notification: [addr, addr + len) moved from @from to @to (@from
	 * is 0 for pages that came from several places).  Every migration
	 * is reported: explicit ones, device faults', CPU faults' (with
	 * their fault-around), read-ahead's, eviction's.  No decision; may
	 * be NULL. */
	void (*migrated)(void *st, uint64_t addr, uint64_t len, uhmm_loc from,
			 uhmm_loc to, uint64_t time_ns);

	/* Callbacks after `migrated` are read only if @size covers them (a
	 * policy built against an older header has a smaller struct). */

	/**
	 * An access-counter notification of device @dev (struct
	 * uhmm_pol_counter): migrate the region to it, or not.  @act holds
	 * the built-in decision on entry: ignore a region whose first page
	 * the backend advised to map remotely, that prefers another location
	 * (uhmm_advise()), or that the thrashing control pinned to system
	 * memory; migrate the whole (clipped) region otherwise -- UVM's
	 * access-counter migrations.  Optional.
	 */
	int (*access_counter)(void *st, uhmm_loc dev, const struct uhmm_pol_counter *n,
			      struct uhmm_pol_counter_act *act);
};

/** Opaque handle of a context (uhmm/uhmm.h). */
typedef struct uhmm_ctx uhmm_ctx;

/**
 * uhmm_policy_set - install @ops as @ctx's policy (NULL: the built-in one).
 *
 * Calls @ops->init(@arg) first; the previous policy's exit() runs once its
 * last callback in flight has returned (this call waits for that, up to
 * 2 s).  @ops must stay valid until the policy is removed.  Thread-safe;
 * while it runs, each callback goes to the old or the new policy whole.
 *
 * Returns 0.  Errors: -EINVAL @ops->version is not UHMM_POLICY_VERSION or
 * @ops->size is smaller than the version-1 struct; the error init() set
 * (the old policy stays); -ETIMEDOUT a callback of the old policy did not
 * return within 2 s (the new policy is installed; the old one's exit() is
 * not called, its state is leaked); -EBADF @ctx is not a live context;
 * -ECHILD.
 */
UHMM_API int uhmm_policy_set(uhmm_ctx *ctx, const struct uhmm_policy_ops *ops,
			     const void *arg);

/** State of a context's policy (uhmm_policy_get()). */
struct uhmm_policy_info {
	char name[64];     /**< the installed policy's name ("default" for
			    * the built-in one) */
	char ejected[160]; /**< empty, or why the last plug-in was ejected */
	uint64_t ejections; /**< plug-ins ejected in this context's life */
};

/** Errors: -EINVAL @out is NULL; -EBADF; -ECHILD. */
UHMM_API int uhmm_policy_get(uhmm_ctx *ctx, struct uhmm_policy_info *out);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_POLICY_H */
