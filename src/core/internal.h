/* SPDX-License-Identifier: MIT */
/*
 * uhmm core internals, shared by the files of src/core/.  Prototypes are
 * grouped by the file that defines them.  uhmm__ names cross files; static
 * names do not.  Lock ranks are in docs/ARCHITECTURE.md ("Locking").
 */
#ifndef UHMM_CORE_INTERNAL_H
#define UHMM_CORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uhmm/mirror.h>
#include <uhmm/uhmm.h>

#include "policy/policy.h"
#include "util/uffd_compat.h"
#include "util/umem.h"
#include "core/trace.h"

#define PAGE_SHIFT 12
#define PAGE_SIZE 4096ul
#define BATCH_PAGES 512u /* a migration batch: one 2 MiB block */
#define MAX_DEVICES 256u /* device ids 1..255; 0 means "system memory" */

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#ifdef UHMM_DEBUG
#define UHMM_ASSERT(c) ((c) ? (void)0 : uhmm__assert_fail(#c, __FILE__, __LINE__))
#else
#define UHMM_ASSERT(c) ((void)0)
#endif
void uhmm__assert_fail(const char *what, const char *file, int line)
	__attribute__((noreturn));

/* ------------------------------------------------------------------------ */
/* Page state: 16 bytes a page (the figure docs/ARCHITECTURE.md promises).   */

/*
 * The page word.  Bits 0-3 are the lock and its companions; bits 8-15 the
 * device id (0: the page is in system memory; n: device-private on device
 * n, frame uhmm_page.dpfn).
 *
 *   LOCKED   a thread owns the page (a migration or a fault in service).
 *            Only the owner changes the location, dpfn and seq.
 *   WAITERS  some thread sleeps on the word (futex); the unlocker wakes all.
 *   PARKED   the service thread parked a CPU fault on the page; the unlocker
 *            signals the service thread, which re-dispatches parked faults.
 *   ZAPPED   the application discarded the page (MADV_DONTNEED / munmap)
 *            while it was locked; the unlocker discards the data instead of
 *            publishing it (uhmm__page_publish_unlock).  Set only by the
 *            service thread, only while LOCKED.
 *   DISCARD  the application asked for the page to be discarded (REMOVE
 *            read), and the kernel's zap, which follows the read, may not
 *            have happened yet.  A migration that takes the page out of the
 *            CPU page table treats it as empty, so old data cannot escape
 *            to a device ahead of the zap.  Cleared by the next CPU fault on
 *            the page (the zap is done: the page was missing) and by any
 *            change of location.  Set by the service thread under the lock.
 */
#define PG_LOCKED 0x1u
#define PG_WAITERS 0x2u
#define PG_PARKED 0x4u
#define PG_ZAPPED 0x8u
#define PG_DISCARD 0x10u
#define PG_LOCKBITS (PG_LOCKED | PG_WAITERS | PG_PARKED | PG_ZAPPED)
#define PG_EXCL 0x20u /* with a device id: held exclusively, data in slot dpfn */
/* With a device id: resident in that device's coherent memory, frame dpfn,
 * the page itself mapped in place at its address (coherent.c). */
#define PG_COH 0x40u
/* Without a device id: the page was lost on a device (poisoned): its data
 * is gone, a CPU access gets SIGBUS (coherent.c). */
#define PG_POISON 0x80u
/* OWNDISC: the lock owner (a no-move migration) is discarding the CPU page
 * itself (MADV_DONTNEED): the REMOVE event of that discard is uhmm's own,
 * and the service thread consumes the mark instead of zapping the page
 * (uhmm__ranges_own_discard).  Set only by the owner, cleared by the
 * service thread or by the unlock.  (Above the device id: the bits below
 * it are all taken.) */
#define PG_OWNDISC 0x10000u
/* DUP: the page is in system memory, present and write-protected in the
 * CPU page table (UFFDIO_WRITEPROTECT), and devices may hold read-only
 * duplicates of it (read-mostly advice; dup.c keeps the frames, by page).
 * Set and cleared by the lock owner; the unlock keeps it while the page
 * stays in system memory and is not discarded, and drops the duplicates
 * otherwise (their mirrors were invalidated by whoever moved or zapped
 * the page).  A CPU fault on the page collapses them first. */
#define PG_DUP 0x20000u
/* ZEPOCH: which of the two counts of pages left to their holders
 * (uhmm_ctx.zap_pending) a ZAPPED mark is in: set with ZAPPED by the
 * service thread, cleared with it (uhmm_sync waits for the marks made
 * before it: uhmm__zapped_wait, page.c). */
#define PG_ZEPOCH 0x40000000u
/* POPULATE: the owner (a coherent reclaim, coherent.c) is writing the page
 * in place with MADV_POPULATE_WRITE to break a fork child's sharing of it.
 * A CPU fault on the page meanwhile (it was discarded: missing) is served
 * with zeros by the service thread although the page is held
 * (uhmm__coh_serve_populate): the populate itself may be that fault.  Set
 * and cleared by the owner under uhmm_ctx.coh_pop_lock (coherent.c). */
#define PG_POPULATE 0x80000000u
#define PG_DEV_SHIFT 8
#define PG_DEV_MASK 0xff00u
#define PG_LOC_MASK (PG_DEV_MASK | PG_EXCL | PG_COH | PG_POISON)

/* Locations (the PG_LOC_MASK bits of a word). */
#define LOC_CPU 0u
#define LOC_DEV(id) ((uint32_t)(id) << PG_DEV_SHIFT)
#define LOC_EXCL(id) (((uint32_t)(id) << PG_DEV_SHIFT) | PG_EXCL)
#define LOC_COH(id) (((uint32_t)(id) << PG_DEV_SHIFT) | PG_COH)
#define LOC_POISON PG_POISON

/* The device a page is on or held by (0: the CPU has it). */
static inline unsigned pg_dev(uint32_t w)
{
	return (w & PG_DEV_MASK) >> PG_DEV_SHIFT;
}
static inline uint32_t pg_loc(uint32_t w)
{
	return w & PG_LOC_MASK;
}
/* The device whose private memory holds the page, or 0. */
static inline unsigned pg_devpriv(uint32_t w)
{
	return (w & (PG_EXCL | PG_COH)) ? 0 : pg_dev(w);
}
/* The device whose memory holds the page, private or coherent, or 0. */
static inline unsigned pg_ondev(uint32_t w)
{
	return (w & PG_EXCL) ? 0 : pg_dev(w);
}
static inline bool pg_coh(uint32_t w)
{
	return w & PG_COH;
}
static inline bool pg_excl(uint32_t w)
{
	return w & PG_EXCL;
}

struct uhmm_page {
	_Atomic uint32_t word;
	_Atomic uint32_t seq;  /* bumped by the lock owner at each move */
	_Atomic uint64_t dpfn; /* valid while pg_dev(word) != 0 */
};
_Static_assert(sizeof(struct uhmm_page) == 16, "16 bytes of metadata a page");

/*
 * Page state is created lazily, a 2 MiB block (512 pages, 8 KiB) at a time,
 * the first time uhmm needs the state of one of its pages: a page-state
 * array is a directory with one entry per block of the range, and an entry
 * stays empty (NULL) while nothing of the block was ever faulted, migrated
 * or locked.  An empty entry means: every page in system memory, unlocked,
 * seq 0.  Blocks are never freed before their array.
 */
struct uhmm_pblk {
	struct uhmm_page pages[BATCH_PAGES];
};
_Static_assert(sizeof(struct uhmm_pblk) == 8192, "a block of page state is 8 KiB");

struct uhmm_lru_node;
struct uhmm_pdir {
	struct uhmm_pblk *_Atomic blk;
	/* The block's entries in device LRUs (evict.c), under ctx->lru_lock. */
	struct uhmm_lru_node *lru;
};

/* A page-state array, shared by the ranges split from one another. */
struct uhmm_pagearr {
	_Atomic long refs;
	struct uhmm_ctx *ctx;
	size_t n;     /* pages */
	size_t nblk;  /* directory entries */
	size_t bytes; /* mapping size of this header and the directory */
	/* Bumped by every migration toward a device of these pages, before
	 * it locks them: speculative work (read-ahead, fault-around) that
	 * decided before a bump moves nothing home after it (service.c
	 * "uhmm_migrate's promise"). */
	_Atomic uint32_t dev_epoch;
	struct uhmm_pdir dir[];
};

/* The state of a page whose block was never created (range_page_peek):
 * read it, never lock or change it. */
extern const struct uhmm_page uhmm__page_none;
/* Create block b of a (pstate.c).  Never fails: out of memory for page
 * state aborts the process with a message (as the kernel OOMs). */
struct uhmm_pblk *uhmm__pblk_create(struct uhmm_pagearr *a, size_t b);

/*
 * Device huge units (pstate.c).  A block of page state whose 512 pages all
 * moved to a private device in one batch with one 2 MiB device page
 * (device.h, ops->split) has its flag set to that device's id: page i of
 * the block is in frame base + i (base a multiple of 512).  Invariant:
 * while the flag names device d, every page of the block is LOC_DEV(d)
 * in its frame of the unit, but for a page being published away (whose
 * publication splits the unit before it releases a frame).
 * HUGE_SPLITTING: a split in progress (the backend's split runs).
 */
#define HUGE_SPLITTING 0x8000u
/* The flag of @p's block (any page of the block). */
_Atomic uint16_t *uhmm__pblk_huge(const struct uhmm_page *p);
/* Did @p's block's CPU side last leave as one THP (migrate.c)?  Cleared
 * when the block's page state is created. */
_Atomic uint8_t *uhmm__pblk_cpu_thp(const struct uhmm_page *p);
/* Is @p's block one unit on device @dev? */
static inline bool uhmm__huge_on(const struct uhmm_page *p, unsigned dev)
{
	return atomic_load_explicit(uhmm__pblk_huge(p), memory_order_acquire) == dev;
}
/* Before @frame of device @dev, a frame of (locked) page @p, is released
 * or @p leaves the device: if @p's block is a unit on @dev, split it (the
 * backend's ops->split of the unit holding @frame) and clear the flag.
 * Waits (briefly: the split is a backend call that does not sleep) for a
 * split another thread runs. */
void uhmm__huge_split(struct uhmm_ctx *ctx, struct uhmm_page *p, unsigned dev,
		      uint64_t frame);
/* One 2 MiB page of @d (counted in frames_used as 512): 1 and *@base,
 * or 0 (none free, or a backend without split). */
long uhmm__dev_get_huge(struct uhmm_device *d, uint64_t *base);
/* Give back a 2 MiB page that no page was published in. */
void uhmm__dev_put_huge(struct uhmm_ctx *ctx, struct uhmm_device *d, uint64_t base);

/* A managed range: [start, start + npages * 4K), pages arr->pages[first..]. */
struct uhmm_range {
	uintptr_t start;
	size_t npages;
	struct uhmm_pagearr *arr;
	size_t first;
	_Atomic long refs;
	bool owned;       /* from uhmm_alloc: uhmm_free may unmap it */
	bool grown;       /* the grown tail of the range that ends at start
			   * (mremap grew its mapping: uhmm__ranges_grow);
			   * freed and unregistered with it */
	atomic_bool dead;    /* removed from the table */
	atomic_bool closing; /* being unregistered: no new device pages */
};

/* Page idx of r, creating its block of page state if needed. */
static inline struct uhmm_page *range_page(struct uhmm_range *r, size_t idx)
{
	size_t i = r->first + idx;
	struct uhmm_pblk *b = atomic_load_explicit(&r->arr->dir[i / BATCH_PAGES].blk,
						   memory_order_acquire);
	if (unlikely(!b))
		b = uhmm__pblk_create(r->arr, i / BATCH_PAGES);
	return &b->pages[i % BATCH_PAGES];
}
static inline bool block_wants_thp(struct uhmm_range *r, size_t idx)
{
	return r->owned || atomic_load_explicit(uhmm__pblk_cpu_thp(range_page(r, idx)),
						memory_order_relaxed);
}
/* Page idx of r to read only: &uhmm__page_none if its block was never
 * created (in system memory, unlocked). */
static inline const struct uhmm_page *range_page_peek(const struct uhmm_range *r, size_t idx)
{
	size_t i = r->first + idx;
	struct uhmm_pblk *b = atomic_load_explicit(&r->arr->dir[i / BATCH_PAGES].blk,
						   memory_order_acquire);
	return b ? &b->pages[i % BATCH_PAGES] : &uhmm__page_none;
}
/* Pages from idx to the end of idx's block of page state (at least 1). */
static inline size_t range_blk_left(const struct uhmm_range *r, size_t idx)
{
	return BATCH_PAGES - (r->first + idx) % BATCH_PAGES;
}
/* Does page idx of r have a block of page state? */
static inline bool range_blk_present(const struct uhmm_range *r, size_t idx)
{
	size_t i = r->first + idx;
	return atomic_load_explicit(&r->arr->dir[i / BATCH_PAGES].blk,
				    memory_order_acquire) != NULL;
}
static inline uintptr_t range_end(const struct uhmm_range *r)
{
	return r->start + (r->npages << PAGE_SHIFT);
}

/* ------------------------------------------------------------------------ */
/* Devices                                                                   */

struct uhmm_device {
	struct uhmm_ctx *ctx;
	const struct uhmm_device_ops *ops;
	void *priv;
	unsigned id;
	char name[32];
	/* Calls using the device (uhmm__dev_hold), and a dying bit while it
	 * is being detached (ctx.c). */
	_Atomic uint32_t users;
	/* Device frames (4 KiB) uhmm holds from the backend; pages evicted
	 * from it (evict.c). */
	_Atomic uint64_t frames_used;
	_Atomic uint64_t evicted_pages;
	/* Coherent memory (ops->coherent_mem): frame n is at coh_base + n *
	 * 4K, registered with the reserve's userfaultfd (coherent.c).  NULL:
	 * device-private memory only. */
	char *coh_base;
	size_t coh_len;
	_Atomic uint64_t coh_pages; /* pages resident in place */
	/* Frames taken by migrations toward the device that have not
	 * published their pages yet (migrate.c): a request that finds the
	 * device full and no victim backs off while there are any. */
	_Atomic uint64_t frames_inflight;
};

/* ------------------------------------------------------------------------ */
/* Eviction (evict.c)                                                        */

/* One block of page state that may have pages on a device: an entry of the
 * device's LRU (least recently used at the head).  Under ctx->lru_lock. */
struct uhmm_lru_node {
	struct uhmm_lru_node *prev, *next; /* the device's list */
	struct uhmm_lru_node *bnext;       /* the block's entries for other devices */
	struct uhmm_pagearr *arr;
	size_t blk;
	unsigned dev;
	uint64_t stamp;   /* the list's clock at its last touch: a walk drops
			     only an entry nobody touched while it looked */
	/* What the policy sees of it (uhmm_pol_block). */
	uintptr_t va;     /* address of the block's first page at the last touch */
	uint64_t first_ns, last_ns, uses;
};
struct uhmm_lru {
	struct uhmm_lru_node *head, *tail;
	size_t n;
	uint64_t clock;   /* ticks at each touch (stamps are unique) */
};

/* What a victim walk takes: pages on device dev with a frame in [lo, hi);
 * what it did: pages moved home (their frames released), pages seen on the
 * device, pages skipped because someone held them, and pages not on the
 * device but held (inflight: a migration toward the device holds its pages,
 * and frames for them, before they are published there; such frames are no
 * victim yet, but will be). */
struct uhmm_victim {
	unsigned dev;
	uint64_t lo, hi;
	size_t moved, seen, busy, inflight;
	bool poison; /* the pages found are lost, not moved (coherent.c) */
	uintptr_t va; /* non-zero: only the page at this address (coherent.c) */
};

/* ------------------------------------------------------------------------ */
/* Warm page pool (pool.c)                                                  */

/*
 * The reserve: an anonymous private region registered with a second
 * userfaultfd (SIGBUS mode, no events) so that it can be the destination of
 * UFFDIO_MOVE.  Its slots are EMPTY (no page) or FULL (a populated page), and
 * BUSY while an operation owns them.  Migration to a device moves managed
 * pages into EMPTY slots (they become FULL: the warm pool refills itself);
 * a fault moves FULL slots into managed memory (they become EMPTY).
 */
struct uhmm_pool {
	int ruffd;
	char *base;         /* the reservation: max_slots slots, never moves */
	size_t nslots;      /* the extent in use: slots [0, nslots) (blocks) */
	size_t min_slots;   /* the extent at creation: never shrinks below */
	size_t max_slots;   /* the reservation's size: never grows above */
	/* Bitmaps (max_slots bits) and per-block counts of free EMPTY
	 * (nfree[0]) and free FULL (nfree[1]) slots, in one NORESERVE mapping
	 * of their own: memory only for the extent's part. */
	void *meta;
	size_t meta_len;
	uint64_t *full;
	uint64_t *busy;
	uint16_t *nfree[2];
	size_t hint[2];     /* no block below has a free slot of the kind */
	size_t nused;       /* slots BUSY or FULL (a gauge for uhmm_stats) */
	size_t nfull_free;  /* FULL and not BUSY */
	size_t target_full; /* keep this many FULL free slots when idle */
	size_t max_full;    /* and at most this many (pages moved out linger) */
	uint64_t last_use_ns; /* last uhmm__pool_get*: the pool is in use */
	bool idle_armed;    /* the service thread watches for the idle release */
	/* Warm bounce buffers (BATCH_PAGES pages each, populated) kept for
	 * migrations home that find no FULL run. */
	void *bounce[4];
	unsigned nbounce;
	/* Transparent huge pages (docs/ARCHITECTURE.md "2 MiB on the CPU
	 * side"): thp[] has a bit per block of the reservation, set while the
	 * block is FULL, free and holds one PMD-mapped THP (a warm huge page
	 * to move in whole); cleared when a slot of it is taken.  thp_ok: the
	 * process can get THPs (probed once, uhmm__thp_probe). */
	uint64_t *thp;
	bool thp_ok;
	int pagemap_fd;     /* the context's, for uhmm__thp_mapped */
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

int uhmm__pool_init(struct uhmm_ctx *ctx, size_t warm_pages, size_t max_pages);
void uhmm__pool_fini(struct uhmm_pool *pool);
/* A run of n contiguous free slots, all FULL (want_full) or all EMPTY.
 * Returns the first slot or -1.  Never blocks.  An EMPTY run grows the
 * reserve when none is free: -1 then only if the reservation is exhausted
 * (or n is 0 or above BATCH_PAGES). */
long uhmm__pool_get(struct uhmm_pool *pool, size_t n, bool want_full);
/* As uhmm__pool_get(EMPTY); when the reservation is exhausted, releases the
 * warm pages and waits for slots to be returned, at most UHMM_SETTLE_NS;
 * -1 after that. */
long uhmm__pool_get_empty_wait(struct uhmm_pool *pool, size_t n);
/* A populated bounce buffer of BATCH_PAGES pages (NULL: no memory);
 * give it back with uhmm__pool_bounce_put.  Kept warm between calls. */
char *uhmm__pool_bounce_get(struct uhmm_pool *pool);
void uhmm__pool_bounce_put(struct uhmm_pool *pool, char *b);
/* The idle release (service thread): warm pages down to target_full, the
 * extent down to its initial size where its top blocks are free; while
 * the pool is in use, only the warm pages above max_full. */
void uhmm__pool_release_idle(struct uhmm_pool *pool);
/* After a migration to a device: the FULL pages above max_full are left
 * to the service thread (kicked), and released here only beyond a
 * backlog. */
void uhmm__pool_release_excess(struct uhmm_pool *pool);
/* Return slot s; full: whether it now holds a page. */
void uhmm__pool_put(struct uhmm_pool *pool, size_t s, bool full);
/* Return slots [s, s + n) at once (one lock, one wake-up): slot s + i is
 * FULL if full[i], else EMPTY. */
void uhmm__pool_put_run(struct uhmm_pool *pool, size_t s, size_t n, const uint8_t *full);
/* Release FULL free slots above keep (madvise, outside the lock). */
void uhmm__pool_trim(struct uhmm_pool *pool, size_t keep);
/* -1 if no idle work (FULL free slots above the idle target, a shrinkable
 * extent, bounce buffers); else the ms until the pool has gone idle_ns
 * without a uhmm__pool_get* (0: it has, or it is above its ceiling:
 * uhmm__pool_release_idle now). */
int uhmm__pool_idle_wait_ms(struct uhmm_pool *pool, uint64_t idle_ns);
/* True (once) if the pool went above its idle target while the service
 * thread was not watching: the caller kicks it. */
bool uhmm__pool_arm_idle(struct uhmm_pool *pool);
/* Whole 2 MiB blocks of the reserve as one transparent huge page.
 * uhmm__pool_get_huge: a free FULL block holding a THP (taken BUSY, slot
 * index returned), else, if @make and THPs are available, an EMPTY block
 * into which a freshly allocated THP was moved (*fresh true: it reads as
 * zeros; fresh may be NULL); -1 if neither.  (Homes take warm ones only:
 * a fresh THP costs its allocation and clearing, as much as the copy;
 * uhmm-bench's 1 GiB migration home past the pool's ceiling took 3x.)
 * uhmm__pool_put_huge: give a block back FULL, as a warm THP if its
 * slots are PMD-mapped now.  uhmm__pool_clear_pmd: before a THP is moved
 * whole into EMPTY block s, free the page table 4 KiB moves left there
 * (UFFDIO_MOVE moves a PMD only into an empty PMD). */
long uhmm__pool_get_huge(struct uhmm_pool *pool, bool *fresh, bool make);
void uhmm__pool_put_huge(struct uhmm_pool *pool, size_t s);
void uhmm__pool_clear_pmd(struct uhmm_pool *pool, size_t s);
/* Is the 2 MiB at a (aligned) mapped by one PMD, a THP?  (PAGEMAP_SCAN;
 * false where it cannot tell.) */
/*
 * Does block @idx / 512 of r come home as a THP when it comes home whole?
 * uhmm_alloc's ranges always (range->owned); registered memory keeps what
 * the process had: a block whose CPU side last left as one THP
 * (uhmm__pblk_cpu_thp, set and cleared by migrate.c), else at 4 KiB (a
 * fresh THP for memory that never had one would be zeroed for nothing).
 * docs/ARCHITECTURE.md "2 MiB on the CPU side".  The block exists (a
 * page of it is held).
 */
static inline bool block_wants_thp(struct uhmm_range *r, size_t idx);

bool uhmm__thp_mapped(int pagemap_fd, uintptr_t a);
/* Probe THP availability once per process: sysfs enabled/defrag,
 * prctl(PR_GET_THP_DISABLE).  Returns true if MADV_HUGEPAGE memory can
 * get THPs. */
bool uhmm__thp_probe(void);
static inline char *pool_slot(struct uhmm_pool *pool, size_t s)
{
	return pool->base + (s << PAGE_SHIFT);
}

/* ------------------------------------------------------------------------ */
/* The context                                                               */

/* A request from a migrating thread that the service thread install pages. */
struct install_req {
	struct uhmm_range *r;
	size_t idx, n;       /* pages idx .. idx + n - 1, all locked by requester */
	/* in: 1 = install src page i.  out: 2 installed (moved: the source
	 * slot is empty), 6 installed (copied: the source keeps its page),
	 * 3 discarded (zapped meanwhile), 0 left where it was.  2, 3 and 6
	 * are published and unlocked by the service thread; 0 and 1 stay the
	 * requester's to unlock. */
	uint8_t *want;
	char *src;           /* page i's data at src + i * 4K ... */
	char **srcv;         /* ... or at srcv[i] if set (slots: moved) */
	bool src_is_slots;   /* src lies in the reserve: UFFDIO_MOVE, else COPY */
	bool count;          /* a migration to the system (not a restore) */
	uint8_t cause;       /* why, for the trace (UHMM_TR_CAUSE_*) */
	uint64_t t0;         /* when it began, for the trace (0: unknown) */
	/* Publish installed pages here (coherent memory: LOC_COH, frame
	 * dpfnv[i]) instead of system memory (loc 0). */
	uint32_t loc;
	const uint64_t *dpfnv;
	int result;
	_Atomic uint32_t done;
	struct install_req *next;
};

/* A CPU fault a SIGBUS handler hands to the service thread (sigbus.c):
 * the handler waits on done. */
struct fault_req {
	uintptr_t addr;
	uint64_t flags;          /* UFFD_PAGEFAULT_FLAG_WRITE */
	bool unknown;            /* out: the address is not managed */
	_Atomic uint32_t done;
	struct fault_req *next;
};

/* A CPU fault waiting for its page (service thread only). */
struct parked_fault {
	uintptr_t addr;
	uint64_t flags;
	uint32_t seq; /* the page's seq when the message was read */
	uint32_t epoch; /* its pages' dev_epoch then (fault-around's limit) */
	struct fault_req *req; /* a SIGBUS handler's (else NULL: a message) */
	uint32_t tid; /* the faulting thread (the message's; 0: unknown) */
};

struct uhmm_ctx {
	pid_t pid;
	int uffd;
	int evfd;                 /* wakes the service thread */
	uint64_t features;
	bool user_mode_only;
	bool has_move;            /* the kernel has UFFDIO_MOVE */
	bool move_in;             /* install pages with it (else UFFDIO_COPY) */
	bool move_out;            /* take pages out toward a device with it
				   * (else the no-move path, migrate.c) */
	bool wp;                  /* ranges registered for write-protection */
	int mem_fd;               /* /proc/self/mem: reads that never wait
				   * on a userfault (the no-move path) */
	bool has_poison;
	/* UHMM_CTX_SIGBUS: faulting threads serve themselves (sigbus.c). */
	bool sigbus;
	unsigned sb_slot;         /* its entry in sigbus.c's table */
	/* fork.c's list of the contexts it holds across fork() (under its
	 * fork_mutex; see uhmm__live_contexts_hold). */
	struct uhmm_ctx *fork_next;
	/* Threads other than the service thread installing pages now
	 * (uhmm__sb_enter: SIGBUS-mode faulting threads, the page remake's
	 * copy back): the service thread waits for none to be left before
	 * it reads events. */
	_Atomic uint32_t sb_active;
	struct uhmm_ctx_opts opts;

	/* Managed ranges, sorted by start.  ranges_lock is a leaf: never held
	 * while sleeping on anything else. */
	pthread_rwlock_t ranges_lock;
	struct uhmm_range **ranges;
	size_t nranges, cap_ranges;
	/* Limbo: pieces of ranges an mremap's destination displaced while
	 * their own UNMAP or REMAP event was still on its way (range.c).
	 * Unsorted, usually empty; under ranges_lock too. */
	struct uhmm_range **limbo;
	size_t nlimbo;

	/* Devices by id; slots are published/cleared under dev_lock. */
	pthread_mutex_t dev_lock;
	struct uhmm_device *_Atomic devs[MAX_DEVICES];

	/* Device LRUs of blocks (evict.c); lru_lock is a leaf.  dev_freed
	 * counts device frames given back (a futex: a request waiting for
	 * device memory sleeps on it). */
	pthread_mutex_t lru_lock;
	struct uhmm_lru lru[MAX_DEVICES];
	_Atomic uint32_t dev_freed;

	/* Held for reading by every migration toward a device, for writing by
	 * the fork handler while it brings every device page home. */
	pthread_rwlock_t fork_lock;

	struct uhmm_pool pool;
	char *zeros;              /* 2 MiB of read-only zeros (UFFDIO_COPY source) */
	char *probe;              /* one registered zero page: uhmm__events_pending
				   * (NULL: no probe) */

	/* Service thread. */
	pthread_t service;
	atomic_bool stop;
	/* EV_READING from just before the service thread reads the userfaultfd
	 * until it has handled the events it read: munmap, mremap and madvise
	 * return as soon as their event is read, so a caller that sees this
	 * clear knows every one of them that returned has been followed.
	 * EV_WAITERS: someone sleeps on it (uhmm__events_wait). */
	_Atomic uint32_t events_busy;
	/* Pages the service thread marked ZAPPED while someone held them
	 * (their discard is finished by the holder's unlock), in two counts:
	 * a mark goes into zap_pending[zap_epoch & 1] (PG_ZEPOCH says which)
	 * and leaves it when the mark is cleared.  uhmm_sync flips the epoch
	 * and waits for the other count to drain (page.c). */
	_Atomic uint32_t zap_epoch;
	_Atomic uint32_t zap_pending[2];
	/* coherent.c: a reclaim's populate against the service thread's
	 * zero-fill of its page (PG_POPULATE); a spin lock, 0: free. */
	_Atomic uint32_t coh_pop_lock;
	pthread_mutex_t req_lock;
	struct install_req *req_head, **req_tail;
	struct fault_req *freq_head, **freq_tail; /* under req_lock too */
	struct parked_fault *parked; /* service thread only */
	size_t nparked, cap_parked;
	char *bounce;                /* service thread only: BATCH_PAGES pages */
	/* Read-ahead windows the policy asked for, one per stream
	 * (uhmm_pol_cpu_act.ahead_*; service.c); service thread only.
	 * [next, end) is still to bring home (next == end: nothing), from
	 * pages of arr, unless a migration toward a device bumped its
	 * dev_epoch past epoch. */
	struct readahead {
		uintptr_t next, end;
		const struct uhmm_pagearr *arr;
		uint32_t epoch;
	} ra[UHMM_POL_STREAMS];
	unsigned ra_turn;
	/* Ranges being released (uhmm_free, uhmm_unregister: out of the
	 * table, still registered with the userfaultfd) and a count of such
	 * releases begun: uhmm__ranges_grow takes no tail while one may be
	 * under way (range.c). */
	_Atomic uint32_t releasing, release_gen;
	/* REMOVE/UNMAP/REMAP events handled so far (service thread only). */
	uint64_t events_seen;

	/* Interval notifiers (notifier.c). */
	pthread_rwlock_t notifier_lock;
	struct uhmm_notifier *notifiers;
	_Atomic size_t nnotifiers;

	/* /proc/self/pagemap and /proc/self/maps (range faults). */
	int pagemap_fd, maps_fd;

	/* Handles in use: destroy waits for calls in flight.  The count and
	 * CTX_DYING share one word, so the last call out learns from its own
	 * decrement that a destroy waits, and reads the context no more (the
	 * destroyer may free it as soon as the count reaches zero). */
	_Atomic uint32_t calls;
	atomic_bool dying;

	/* Prefetches (prefetch.c): a FIFO run by pf_thread, started by the
	 * first one.  pf_lock is a leaf. */
	pthread_mutex_t pf_lock;
	pthread_cond_t pf_cond;
	struct uhmm_prefetch_req *pf_head, **pf_tail;
	uint64_t pf_seq;
	bool pf_stop, pf_started;
	atomic_bool pf_any;       /* a prefetch was ever submitted */
	pthread_t pf_thread;

	/* Advice by address (advice.c); adv_lock is a leaf. */
	pthread_rwlock_t adv_lock;
	struct uhmm_adv *adv;
	size_t nadv;
	atomic_bool adv_any;      /* some advice was ever given */
	/* Read-mostly duplicates (dup.c): rm_any once read-mostly advice
	 * was given or duplicates asked for (UHMM_MIGRATE_DUPLICATE: the
	 * policy's verb) (write-protect faults on pages at home are then ours to
	 * clear); the duplicates' frames by page, under dup_lock (a leaf). */
	atomic_bool rm_any;
	pthread_mutex_t dup_lock;
	struct uhmm_dup *dup;
	size_t dup_cap, dup_n;

	/* The policy layer's side (src/policy). */
	struct uhmm_polctx pol;

	struct uhmm_stats stats; /* updated with __atomic builtins */

	/* Recording (trace.c; NULL: none).  Set before the service thread
	 * starts, cleared after everything that records has stopped. */
	struct uhmm_trace *trace;
	/* Pages poisoned now (LOC_POISON): a migration over a range looks
	 * for them only when there are some (coherent.c). */
	_Atomic uint64_t poisoned_now;
	/* The live view's publisher (statpub.c; NULL: none). */
	struct uhmm_statpub *statpub;
};

#define STAT_ADD(ctx, field, v) \
	__atomic_fetch_add(&(ctx)->stats.field, (uint64_t)(v), __ATOMIC_RELAXED)
#define STAT_INC(ctx, field) STAT_ADD(ctx, field, 1)

/* advice.c */
/* Whether va is advised read-mostly; [*lo, *hi) is clipped to the run
 * around it with the same answer. */
bool uhmm__advice_read_mostly(struct uhmm_ctx *ctx, uintptr_t va, uintptr_t *lo,
			      uintptr_t *hi);

/* dup.c: read-mostly duplicates. */
void uhmm__dup_init(struct uhmm_ctx *ctx);
/* Frees every duplicate (the context is going: mirrors were released). */
void uhmm__dup_fini(struct uhmm_ctx *ctx);
/* uhmm_migrate toward dst over [a, b) with read-mostly advice somewhere
 * in it: duplicates the read-mostly runs (@all: every page, the
 * UHMM_MIGRATE_DUPLICATE verb), moves the rest.  Entered; rm_any set. */
int uhmm__dup_migrate(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b,
		      struct uhmm_device *dst, bool all);
/* Collapse every duplicate of [a, b) to the CPU copy (mirrors
 * invalidated, frames freed, protection removed).  No page lock held. */
void uhmm__dup_collapse_range(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b);
/* The same, and remove a write protection left on pages at home without
 * duplicates (before a write range fault populates them). */
void uhmm__dup_collapse_write(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b);
/* The same without waiting for a page lock: pages someone holds are
 * skipped (a write range fault's populate retries, on a device's fault
 * path).  No page lock held. */
void uhmm__dup_collapse_write_try(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b);
/* The same for page idx of r, which the caller holds (a CPU fault). */
void uhmm__dup_collapse_locked(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx);
/* Free page p's duplicates (its mirrors were invalidated).  Any lock. */
void uhmm__dup_free_page(struct uhmm_ctx *ctx, const struct uhmm_page *p);
/* Free the duplicates of page p, discarded (ZAPPED) while its caller held
 * it, or leaving home: the mirrors over the address they were made for are
 * invalidated first (no device spared).  Caller holds p (its unlock), no
 * lock a notifier callback takes. */
void uhmm__dup_drop_inv(struct uhmm_ctx *ctx, const struct uhmm_page *p);
/* The frame of device dev's duplicate of p, or UINT64_MAX; with va != 0,
 * only if it was made for that address. */
uint64_t uhmm__dup_frame(struct uhmm_ctx *ctx, const struct uhmm_page *p, unsigned dev,
			 uintptr_t va);
/* Whether device @dev holds a duplicate of the page at @va (a look, no
 * lock held after it). */
bool uhmm__dup_held(struct uhmm_ctx *ctx, uintptr_t va, unsigned dev);
/* Devices holding a duplicate of p (0 if none). */
unsigned uhmm__dup_count(struct uhmm_ctx *ctx, const struct uhmm_page *p);
/* Add p's duplicates to a uhmm_range_attrs' counts. */
void uhmm__dup_attrs(struct uhmm_ctx *ctx, const struct uhmm_page *p, uint64_t *dup_bytes,
		     uint64_t *dup_on);
/* Free up to want of device dev's duplicates of pages outside [xlo, xhi),
 * in frames [flo, fhi) (eviction: device memory is needed).  Returns how
 * many. */
size_t uhmm__dup_reclaim(struct uhmm_ctx *ctx, unsigned dev, size_t want, uintptr_t xlo,
			 uintptr_t xhi, uint64_t flo, uint64_t fhi);
/* Drop device d's duplicates (detach). */
void uhmm__dup_drop_dev(struct uhmm_ctx *ctx, struct uhmm_device *d);

void uhmm__advice_init(struct uhmm_ctx *ctx);
void uhmm__advice_fini(struct uhmm_ctx *ctx);
/* The preferred location (+1; 0 none) at va, and clip [*lo, *hi) to the
 * run around va with that same advice. */
unsigned uhmm__advice_preferred(struct uhmm_ctx *ctx, uintptr_t va, uintptr_t *lo,
				uintptr_t *hi);
int uhmm__advice_prefetched(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b, unsigned loc);

/* prefetch.c */
void uhmm__prefetch_init(struct uhmm_ctx *ctx);
void uhmm__prefetch_stop(struct uhmm_ctx *ctx);
void uhmm__prefetch_fini(struct uhmm_ctx *ctx);
/* uhmm_migrate's ordering after earlier prefetches of [a, b). */
void uhmm__prefetch_order(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b);

/* ctx.c */
int uhmm__ctx_enter(struct uhmm_ctx *ctx);
void uhmm__ctx_exit(struct uhmm_ctx *ctx);
/* Enter the context of a live device (-EBADF, -ECHILD). */
int uhmm__dev_enter(uhmm_device *dev, struct uhmm_ctx **ctx);
/* Use a live device of ctx for the length of a call (the caller has
 * entered ctx): detach waits until it is released.  Never waits: -EBADF if
 * the device is not live, not ctx's, or being detached. */
int uhmm__dev_hold(struct uhmm_ctx *ctx, struct uhmm_device *dev);
void uhmm__dev_release(struct uhmm_device *dev);
/* A backend's call (evict.c): enter the device's context and hold the
 * device (a detach waits); undo with uhmm__dev_release, uhmm__ctx_exit. */
int uhmm__backend_call_enter(uhmm_device *dev, struct uhmm_ctx **ctx);
struct uhmm_device *uhmm__dev_get(struct uhmm_ctx *ctx, unsigned id);
void uhmm__dev_free_pages(struct uhmm_ctx *ctx, unsigned id,
			  const uint64_t *dpfn, size_t n);
uint64_t uhmm__now_ns(void);
/* Frames from and back to a device's backend, counted in frames_used
 * (and a release wakes requests waiting for device memory). */
long uhmm__dev_get_frames(struct uhmm_device *d, size_t n, uint64_t *dpfn);
void uhmm__dev_put_frames(struct uhmm_ctx *ctx, struct uhmm_device *d,
			  const uint64_t *dpfn, size_t n);

/* topology.c: whether devices are peers of a range fault's requester
 * (the same non-NULL peer domain, ops->describe), asked once a device per
 * call.  known[0]: asked; known[1]: the answer. */
struct uhmm_peer_cache {
	const void *self_dom;
	uint8_t known[2][MAX_DEVICES / 8];
};
void uhmm__peer_init(struct uhmm_peer_cache *pc, struct uhmm_device *self);
bool uhmm__peer_ok(struct uhmm_ctx *ctx, struct uhmm_peer_cache *pc, unsigned id);

/* uffd.c */
int uhmm__uffd_open(struct uhmm_ctx *ctx);
int uhmm__uffd_new_fd(bool user_mode_only, int *fd_out);
int uhmm__uffd_register(int fd, uintptr_t start, size_t len);
/* With wp, also for write-protection (UFFDIO_REGISTER_MODE_WP). */
int uhmm__uffd_register_wp(int fd, uintptr_t start, size_t len, bool wp);
/* UFFDIO_WRITEPROTECT: set (wp) or clear it; clearing wakes the threads
 * waiting on a write-protect fault there.  -EAGAIN while an event of the
 * descriptor is pending (the kernel's mmap_changing). */
int uhmm__uffd_writeprotect(int fd, uintptr_t start, size_t len, bool wp);
/* Write-protect, an -EAGAIN (an event pending) tried again up to 16 times
 * with a yield between: a pending event is read soon, but perhaps only
 * once a thread waiting on a page the caller holds goes on, so not long.
 * 0 or the last error. */
int uhmm__uffd_protect_yielding(int fd, uintptr_t start, size_t len);
int uhmm__uffd_unregister(int fd, uintptr_t start, size_t len);
/* Each returns bytes handled (>= 0), or -errno with *done set to the bytes
 * handled before the error.  The kernel's count of a failed call can fall
 * short (uffd.c): a move's is checked against the page tables always, a
 * copy's when @dst_empty says the destination was all missing before (so
 * a present page there is one this call put in).  A zero-fill's is not. */
/* How long uhmm waits for a transient EAGAIN of the fill and move ioctls to
 * pass (a change of the address space in flight, a page in transit) before
 * it gives up on the call: 2 s. */
#define UHMM_SETTLE_NS 2000000000ull
/* The clock of a wait bounded by UHMM_SETTLE_NS: *t0 is 0 before the first
 * call, which starts it; true once the bound has passed. */
static inline bool uhmm__settle_expired(uint64_t *t0)
{
	uint64_t now = uhmm__now_ns();
	if (!*t0) {
		*t0 = now;
		return false;
	}
	return now - *t0 > UHMM_SETTLE_NS;
}
long uhmm__uffd_move(int fd, uintptr_t dst, uintptr_t src, size_t len,
		     uint64_t mode, size_t *done);
long uhmm__uffd_copy(int fd, uintptr_t dst, const void *src, size_t len,
		     uint64_t mode, bool dst_empty, size_t *done);
/* uhmm__uffd_move for application threads taking pages out of managed
 * memory into the reserve: an EAGAIN with nothing moved (the kernel met a
 * page in transit: under migration or compaction, a THP being split) is
 * tried again, yielding, for up to UHMM_SETTLE_NS; -EAGAIN after that.
 * With UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, holes are found in pagemap_fd
 * (/proc/self/pagemap; -1: let the kernel skip them) and skipped without
 * asking the kernel (see uffd.c); they count as done. */
long uhmm__uffd_move_out(int fd, int pagemap_fd, uintptr_t dst, uintptr_t src, size_t len,
			 uint64_t mode, size_t *done);
/* The same, telling which pages it moved: moved[i] is set to 1 for each
 * page i of [src, src + len) the kernel moved (holes skipped stay as they
 * were).  *exact is cleared where it cannot tell (pagemap unreadable, or
 * a range not all mapped: the kernel skipped the holes itself); the
 * caller then asks mincore().  Saves that mincore per batch. */
long uhmm__uffd_move_out_map(int fd, int pagemap_fd, uintptr_t dst, uintptr_t src,
			     size_t len, uint64_t mode, size_t *done, uint8_t *moved,
			     bool *exact);
int uhmm__uffd_zeropage(int fd, uintptr_t dst, size_t len, size_t *done);
int uhmm__uffd_wake(int fd, uintptr_t addr, size_t len);
int uhmm__uffd_poison(int fd, uintptr_t addr, size_t len);

/* range.c */
/* 0 if [start, end) is mapped, private, anonymous, readable and writable;
 * -EFAULT (a hole) or -EOPNOTSUPP otherwise. */
int uhmm__check_anon_private(uintptr_t start, uintptr_t end);
/* The same with flags: VMA_NEED_WRITE (else read-only memory passes). */
#define VMA_NEED_WRITE 1u
int uhmm__check_vmas(uintptr_t start, uintptr_t end, unsigned flags);
/* Find the range containing addr and take a reference, or NULL. */
struct uhmm_range *uhmm__range_get(struct uhmm_ctx *ctx, uintptr_t addr);
void uhmm__range_put(struct uhmm_range *r);
/* 0 if [start, end) is covered by managed ranges, -EFAULT otherwise.
 * What is not covered is first looked at as a grown tail
 * (uhmm__ranges_grow). */
int uhmm__ranges_cover(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end);
/* Is addr in the grown tail of a managed range (mremap grew the mapping
 * in place, or moved and grew it: the kernel's VMA, registered with our
 * userfaultfd, goes on past the range's end)?  Then the tail, up to the
 * mapping's end or the next range, becomes a managed range (grown) and
 * 0 is returned; -EFAULT otherwise.  Reads /proc/self/maps. */
int uhmm__ranges_grow(struct uhmm_ctx *ctx, uintptr_t addr);
/* Take [start, end) out of the table (splitting ranges); device pages of
 * the part are freed; locked ones are marked ZAPPED.  Service thread only
 * (never blocks on a page). */
void uhmm__ranges_unmap(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end);
/* A REMOVE of [start, end): if every page of it is marked PG_OWNDISC (a
 * no-move migration discarding the CPU copy of pages it holds), consume
 * the marks and return true: the event is uhmm's own.  Service thread. */
bool uhmm__ranges_own_discard(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end);
/* Discard device pages of [start, end) (MADV_DONTNEED).  Service thread. */
void uhmm__ranges_zap(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end);
/* mremap moved [from, from + len) to to.  Service thread. */
void uhmm__ranges_remap(struct uhmm_ctx *ctx, uintptr_t from, uintptr_t to,
			size_t len);
void uhmm__ranges_release_all(struct uhmm_ctx *ctx);

/* pstate.c */
/* A page-state array of n pages, every block empty; one reference. */
struct uhmm_pagearr *uhmm__pagearr_new(struct uhmm_ctx *ctx, size_t n);
void uhmm__pagearr_get(struct uhmm_pagearr *a);
/* Take a reference unless the array is being freed (its count is 0). */
bool uhmm__pagearr_tryget(struct uhmm_pagearr *a);
void uhmm__pagearr_put(struct uhmm_pagearr *a);

/* page.c */
bool uhmm__page_trylock(struct uhmm_page *p);
void uhmm__page_lock(struct uhmm_page *p);
/* Service thread: p is locked by someone else; mark it PARKED.  Returns
 * false if it was unlocked meanwhile (then try to lock it again). */
bool uhmm__page_park(struct uhmm_page *p);
/*
 * Publish a new location (LOC_CPU, LOC_DEV(id) with its device frame, or
 * LOC_EXCL(id) with its reserve slot) and unlock; returns true.  The page's
 * previous copy, if the new location does not use it, is released first,
 * under the lock (a device page freed, a reserve slot returned).  If the
 * page was ZAPPED while locked, returns false instead: the new copy and the
 * previous one are both released and the page is an empty system page.
 * Wakes sleepers and the service thread as the word says.
 */
bool uhmm__page_publish_unlock(struct uhmm_ctx *ctx, struct uhmm_page *p,
			       uint32_t loc, uint64_t dpfn);
/* Unlock without moving the page (ZAPPED is honoured as above). */
void uhmm__page_unlock(struct uhmm_ctx *ctx, struct uhmm_page *p);
/* Service thread: discard a page's device copy now, or mark it ZAPPED. */
void uhmm__page_zap(struct uhmm_ctx *ctx, struct uhmm_page *p);
/*
 * uhmm's own discard of pages it holds: the CPU copies of the pages i of
 * [idx, idx + n) of r (n <= BATCH_PAGES) with sel[i] set, each locked by the
 * caller, are dropped with MADV_DONTNEED, whose REMOVE events are uhmm's
 * own: the pages carry PG_OWNDISC, which the REMOVE handler consumes
 * instead of taking the event for the application's discard
 * (uhmm__page_zap).  Returns once the events are handled and the marks
 * cleared.  A run madvise refuses is tried page by page; a page still
 * refused gets sel[i] = 0 (its CPU copy stays in place).  Not on the
 * service thread (its madvise would wait for itself to read the event).
 * 0, or the first madvise error (-errno) of a page left in place.  Used by
 * the no-move migration (migrate.c), the page remake (migrate.c) and the
 * reclaim of a read-only coherent page by copy (coherent.c).
 */
int uhmm__own_discard(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx, size_t n,
		      uint8_t *sel);
/* The holder of p (or the service thread for a page in populate): zeros
 * are in place at its address now, what a discard leaves; clear ZAPPED and
 * DISCARD (the discard is finished: uhmm_sync no longer waits for it).
 * Read-mostly duplicates of p are of the discarded data: dropped first,
 * the mirrors invalidated (uhmm__dup_drop_inv). */
void uhmm__page_unzap(struct uhmm_ctx *ctx, struct uhmm_page *p);
/* uhmm_sync: wait until the ZAPPED marks made before the call are cleared
 * (their holders published the pages), bounded: 0, or -ETIMEDOUT after
 * UHMM_SETTLE_NS without one cleared.  Returns 0 at once in the service
 * thread. */
int uhmm__zapped_wait(struct uhmm_ctx *ctx);
/* Tests only: called by uhmm__zapped_wait when it is about to sleep for a
 * holder (NULL: nothing). */
typedef void (*uhmm__zapped_wait_hook_fn)(struct uhmm_ctx *);
extern _Atomic(uhmm__zapped_wait_hook_fn) uhmm__zapped_wait_hook;
/* Tests only: called by uhmm__page_publish_unlock between its decision and
 * the store that unlocks (NULL: nothing). */
typedef void (*uhmm__publish_hook_fn)(struct uhmm_ctx *, struct uhmm_page *);
extern _Atomic(uhmm__publish_hook_fn) uhmm__publish_hook;
/* Tests only: called by the service thread while it handles a REMOVE, UNMAP
 * or REMAP event, after the notifiers' callbacks and before uhmm's state
 * changes (NULL: nothing). */
typedef void (*uhmm__event_hook_fn)(struct uhmm_ctx *, uintptr_t start, uintptr_t end);
extern _Atomic(uhmm__event_hook_fn) uhmm__event_hook;
/* Tests only: called by uhmm_range_fault before it populates [start, end)
 * (rangefault.c, populate; NULL: nothing). */
typedef void (*uhmm__rf_populate_hook_fn)(struct uhmm_ctx *, uintptr_t start, uintptr_t end,
					  bool write);
extern _Atomic(uhmm__rf_populate_hook_fn) uhmm__rf_populate_hook;

/* service.c */
int uhmm__service_start(struct uhmm_ctx *ctx);
void uhmm__service_stop(struct uhmm_ctx *ctx);
void uhmm__service_kick(struct uhmm_ctx *ctx);
/* Hand an install request to the service thread and wait for it. */
void uhmm__install_request(struct uhmm_ctx *ctx, struct install_req *req);
/* Wait until the service thread has handled every event it has read. */
void uhmm__service_sync(struct uhmm_ctx *ctx);
/* Is a change of the address space posted, or about to be, whose event the
 * service thread has not read (the kernel's mmap_changing)?  A fill of the
 * probe page answers EAGAIN then, EEXIST otherwise.  False without a probe. */
bool uhmm__events_pending(struct uhmm_ctx *ctx);
/* Wait until every munmap/mremap/madvise of managed memory that has returned
 * has been followed (cheap when none is in flight: one load).  Returns at
 * once in the service thread. */
void uhmm__events_wait(struct uhmm_ctx *ctx);
/* Install pages of a request (service thread; also used by its faults). */
void uhmm__install_pages(struct uhmm_ctx *ctx, struct install_req *req);

/*
 * SIGBUS mode (service.c).  uhmm__serve_self: serve the CPU fault at addr,
 * in r (a reference the caller holds), on the faulting thread.  May sleep
 * on the page lock, the copy engine, device fences and the service thread.
 * uhmm__fault_request: hand the fault to the service thread and wait until
 * it is served (false: the address is not managed, not even as the grown
 * tail of a range, uhmm__ranges_grow).  uhmm__sb_enter/leave bracket an install by a thread
 * other than the service thread (a faulting thread; the page remake's copy
 * back, in every mode): enter fails while the service thread reads or
 * handles events; a bracket never waits on anything.
 */
void uhmm__serve_self(struct uhmm_ctx *ctx, struct uhmm_range *r, uintptr_t addr,
		      bool write);
bool uhmm__fault_request(struct uhmm_ctx *ctx, uintptr_t addr, bool write);
bool uhmm__sb_enter(struct uhmm_ctx *ctx);
void uhmm__sb_leave(struct uhmm_ctx *ctx);

/* sigbus.c */
/* Enter a SIGBUS-mode context in the handler's table (installing the
 * handler the first time); take it out and wait for handlers running on
 * it.  -EMFILE: too many SIGBUS-mode contexts. */
int uhmm__sigbus_add(struct uhmm_ctx *ctx);
void uhmm__sigbus_del(struct uhmm_ctx *ctx);
/* In a fork child: forget the parent's contexts. */
void uhmm__sigbus_atfork_child(void);
/* Set by a faulting thread's serve_self that met a poisoned page: its
 * SIGBUS is then passed on as BUS_MCEERR_AR (coherent.c). */
extern __thread bool uhmm__sb_poisoned __attribute__((tls_model("initial-exec")));
/* Poisoned pages' addresses, for the SIGBUS handler (coherent.c): noted
 * when a page is poisoned (installing the handler), forgotten when it is
 * not any more (p identifies the entry). */
int uhmm__poison_note(const struct uhmm_page *p, uintptr_t addr);
void uhmm__poison_forget(const struct uhmm_page *p);
/* An mremap moved [from, from + len) to @to: its poisoned addresses too. */
void uhmm__poison_remap(uintptr_t from, uintptr_t to, size_t len);

/* migrate.c */
/* Bring pages [idx, idx + n) of r that live on a device back to system
 * memory (any device, or only dev_id if non-zero; DEV_PRIVATE_ONLY: any
 * device, but coherent pages in place stay, which only fork's prepare
 * handler asks for, holding fork_lock for writing).  May sleep. */
#define DEV_PRIVATE_ONLY 0x10000u
int uhmm__migrate_range_to_system(struct uhmm_ctx *ctx, struct uhmm_range *r,
				  size_t idx, size_t n, unsigned dev_id);
/* Run a batch on a device's copy engine (timed).  First error or 0. */
int uhmm__copy_run(struct uhmm_ctx *ctx, struct uhmm_device *dev,
		   struct uhmm_copy *c, size_t n);
/* Copy device-resident pages [idx, idx + n) of r (locked; want[i] == 1 for
 * those wanted) into buf, page i at buf + i * 4K.  A page whose copy fails
 * three times gets want[i] = 0.  Returns 0, or the error if a page failed. */
int uhmm__fetch_pages(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
		      size_t n, char *buf, uint8_t *want);
/* Every page of every range on dev_id (0: any device) back home. */
int uhmm__evacuate(struct uhmm_ctx *ctx, unsigned dev_id);
/* Break copy-on-write sharing (a fork child) of the pages of [a, a + n
 * pages) present in the CPU page table, n <= BATCH_PAGES; absent pages
 * are not touched (no fault).  No page lock may be held. */
void uhmm__unshare_present(uintptr_t a, size_t n);

/* evict.c */
/* Note that block blk of a has (or is getting) pages on device dev: it
 * becomes the device's most recently used.  Takes lru_lock. */
void uhmm__lru_touch(struct uhmm_ctx *ctx, struct uhmm_pagearr *a, size_t blk,
		     unsigned dev, uintptr_t va);
/* Take a dying array's blocks out of every LRU. */
void uhmm__lru_forget(struct uhmm_ctx *ctx, struct uhmm_pagearr *a);
/* Empty a departing device's LRU. */
void uhmm__lru_drop_dev(struct uhmm_ctx *ctx, unsigned dev);
/*
 * Move pages of v->dev (frames in [v->lo, v->hi)) home, least recently
 * used blocks first, whole blocks, until at least want pages have been
 * moved or every block was tried once.  Never evicts a page in
 * [xlo, xhi) (the request's own) and never waits for a page lock: busy
 * pages are skipped (v->busy, and counted in evict_busy).  May sleep on
 * the copy engine, the notifiers and the service thread.  Returns
 * v->moved.
 */
size_t uhmm__evict(struct uhmm_ctx *ctx, struct uhmm_victim *v, size_t want,
		   uintptr_t xlo, uintptr_t xhi);
/* Does uhmm hold frames of device dev beyond the pages on it of the 2 MiB
 * blocks of page state that [xlo, xhi) overlaps (a request's own blocks,
 * never its victims)?  Frames in flight, being made duplicates, or about
 * to be released, that a walk cannot see: a request that found no victim
 * waits for them instead of failing (migrate.c). */
bool uhmm__dev_frames_elsewhere(struct uhmm_ctx *ctx, unsigned dev, uintptr_t xlo,
				uintptr_t xhi);
/* Device frames were released: wake requests waiting for device memory. */
void uhmm__dev_freed(struct uhmm_ctx *ctx);
/* Have device frames been released since the count read as seen? */
bool uhmm__dev_freed_since(struct uhmm_ctx *ctx, uint32_t seen);
/* How long a request waits for busy victims between two tries, at most (a
 * frame released wakes it sooner). */
#define BACKOFF_NS 2000000ull
/* How long a request waits, at most, for frames uhmm holds where no walk
 * looks (uhmm__dev_frames_elsewhere) when nothing else is busy. */
#define ELSEWHERE_NS 200000000ull
/* Wait (at most max_ns) for device frames to be released after the count
 * was seen at seen. */
void uhmm__dev_freed_wait(struct uhmm_ctx *ctx, uint32_t seen, uint64_t max_ns);
/* migrate.c: batch_to_system with a victim filter (trylock only). */
int uhmm__evict_batch(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
		      size_t n, struct uhmm_victim *v);

/* stats.c */
void uhmm__stats_print(struct uhmm_ctx *ctx, void *fp);

/* statpub.c: the live view (docs/STAT.md).  Start publishing (a context
 * in the registry; a failure only leaves the context without it); stop
 * and remove the file (destroy, once no call is in flight). */
void uhmm__statpub_start(struct uhmm_ctx *ctx);
void uhmm__statpub_stop(struct uhmm_ctx *ctx);

/* stacks.c: 0, or -EOPNOTSUPP if [start, end) meets a mapping holding a
 * thread stack (SIGBUS mode's rule, uhmm_register). */
int uhmm__check_no_stack(uintptr_t start, uintptr_t end);

/* notifier.c */
/*
 * Tell every notifier overlapping [start, end) that it is about to change:
 * returns when all callbacks have; the notifiers' sequences stay odd until
 * uhmm__invalidate_end() (pass it start's result) once the change is
 * complete.  Called with the pages of the change locked, or by the service
 * thread for events.  uhmm__invalidate() is both at once (for changes that
 * have already happened).
 */
bool uhmm__invalidate_start(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
			    enum uhmm_inv_reason reason, struct uhmm_device *dev,
			    uintptr_t new_start);
void uhmm__invalidate_end(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
			  bool started);
void uhmm__invalidate(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
		      enum uhmm_inv_reason reason, struct uhmm_device *dev,
		      uintptr_t new_start);
void uhmm__notifiers_free_all(struct uhmm_ctx *ctx);
bool uhmm__notifier_read_begin_until(struct uhmm_notifier *n, uint64_t deadline,
				     uint32_t *seq);
/* Is n a live notifier of ctx? */
bool uhmm__notifier_of(struct uhmm_notifier *n, struct uhmm_ctx *ctx);

/* rangefault.c */
int uhmm__range_writable(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end);
/* The CPU's rights on each page of [start, end): rights[i] is 1 (read),
 * 3 (read and write) or 0 (a hole, or no access).  0 or -errno. */
int uhmm__range_rights(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
		       uint8_t *rights);

/* exclusive.c */
/* Give pages [idx, idx + n) of r back to the CPU if a device holds them
 * exclusively (dev_id: only that holder; 0: any).  May sleep. */
int uhmm__revoke_range(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
		       size_t n, unsigned dev_id);

/* fork.c */
void uhmm__fork_init(void);

/* coherent.c: coherent device memory and poisoned pages. */
/* Ask a backend being attached for coherent memory and register it (0:
 * none or done; -errno: the attach fails). */
int uhmm__coh_attach(struct uhmm_ctx *ctx, struct uhmm_device *d);
void uhmm__coh_detach(struct uhmm_ctx *ctx, struct uhmm_device *d);
static inline char *coh_frame(const struct uhmm_device *d, uint64_t dpfn)
{
	return d->coh_base + (dpfn << PAGE_SHIFT);
}
/* Page idx of r (locked, LOC_COH) goes back into its device frame: from
 * then on it is a device-private page of that device (LOC_DEV), absent
 * from the CPU page table.  0, or -errno with the page left in place. */
int uhmm__coh_reclaim(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx);
/* Service thread: a CPU fault (flags: the message's) at pa on page p of r,
 * which someone holds.  If the holder is a reclaim writing it in place
 * (PG_POPULATE) and the fault is a missing one, serve it with zeros (the
 * page was discarded) and return true; false: park it as usual. */
bool uhmm__coh_serve_populate(struct uhmm_ctx *ctx, struct uhmm_page *p, uintptr_t pa,
			      uint64_t flags);
/* Tests only: called by a reclaim right before its MADV_POPULATE_WRITE
 * (NULL: nothing). */
typedef void (*uhmm__coh_populate_hook_fn)(struct uhmm_ctx *, uintptr_t va);
extern _Atomic(uhmm__coh_populate_hook_fn) uhmm__coh_populate_hook;
/* Lend pages of a batch (locked, copied into frames dpfn[i] of coherent
 * device d, want[i] 1) into place and publish them LOC_COH; pages not
 * lent stay locked with want[i] 0 or 1 (install_req's want codes). */
void uhmm__coh_lend(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
		    size_t n, struct uhmm_device *d, const uint64_t *dpfn, uint8_t *want);
/* Make page idx of r (locked, on v->dev) lost: publish LOC_POISON. */
void uhmm__poison_locked(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx);
/* A CPU fault met a poisoned page at addr (service.c; unlocked): its
 * marker again (the thread's next touch is the SIGBUS). */
void uhmm__poison_fault(struct uhmm_ctx *ctx, uintptr_t addr);
/* Does [a, a + len) hold a poisoned page?  Cheap when none exists. */
bool uhmm__poisoned_in(struct uhmm_ctx *ctx, uintptr_t a, size_t len);

/* Handle registry (ctx.c). */
enum { UHMM__H_CTX = 1, UHMM__H_DEV = 2, UHMM__H_NOTIFIER = 3 };
int uhmm__handle_add(const void *h, int kind);
void uhmm__handle_del(const void *h);
bool uhmm__handle_is(const void *h, int kind);
/* Is h a live device handle? */
bool uhmm__handle_live(const void *h);
/* The live contexts of this process (for the fork handlers), linked
 * through ctx->fork_next, each entered (uhmm__ctx_enter: a destroy waits
 * for its uhmm__ctx_exit).  No table, no allocation: it cannot fail. */
struct uhmm_ctx *uhmm__live_contexts_hold(void);

/* Debugging aid for stress programs (stats.c): the parked faults and
 * their pages, read without locks. */
UHMM_API void uhmm__debug_dump_parked(uhmm_ctx *ctx, FILE *f);
/* evict.c: the pages on a device, those in listed blocks, its frames. */
UHMM_API void uhmm__debug_device_census(uhmm_ctx *ctx, unsigned dev, uint64_t *pages,
					uint64_t *listed, uint64_t *frames);

#endif /* UHMM_CORE_INTERNAL_H */
