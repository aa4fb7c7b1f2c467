/* SPDX-License-Identifier: MIT */
/*
 * uhmm/mirror.h - keeping a device page table in step with the CPU's:
 * interval notifiers, range fault, and uhmm_mprotect().
 *
 * These are the counterparts of the kernel's mmu_interval_notifier and
 * hmm_range_fault().  A device that mirrors the process's address space
 * subscribes to an interval with uhmm_notifier_insert(); uhmm calls its
 * invalidate callback before a change of the CPU page table becomes
 * visible where uhmm controls the order (its own migrations, MADV_DONTNEED
 * through the REMOVE event, uhmm_mprotect(), uhmm_change_mapping()), and as
 * soon as it learns of it otherwise (munmap, mremap).  The device fills its
 * page table from uhmm_range_fault() and uses the notifier's sequence
 * number to know whether what it read is still true.
 *
 * Which changes a notifier sees (the kernel's notifiers see every change
 * of every VMA; a user-space library sees only what reaches it):
 *
 *   memory uhmm manages (uhmm_alloc, uhmm_register):
 *     every change: its migrations, evictions, exclusive grabs and
 *     revocations, uhmm_mprotect() and uhmm_change_mapping() (before the
 *     change); madvise(DONTNEED/FREE/REMOVE) (through the REMOVE event
 *     the kernel posts before it discards); munmap, mremap and an
 *     mmap(MAP_FIXED) over it (just after the call returns: uhmm_sync()
 *     waits for them);
 *     uhmm_unregister/uhmm_free (UNMAP); context teardown (RELEASE).
 *     A plain mprotect(2) is not seen (use uhmm_mprotect()).
 *   memory uhmm does not manage (any other mapping a range fault covers):
 *     only what is made through uhmm: uhmm_mprotect() (PROTECTION) and
 *     uhmm_change_mapping() (the reason given), before the change; and
 *     context teardown.  munmap, mremap, mmap(MAP_FIXED), madvise and
 *     mprotect made directly are NOT seen: the device page table keeps
 *     its entries, and a device that reaches such pages through their
 *     virtual address (as the dmirror library does) reads whatever is
 *     mapped there now.  A mirror of unmanaged memory has the program's
 *     changes made through uhmm_change_mapping().  The dmirror preload
 *     library (uhmm/dmirror.h) does exactly that for every munmap,
 *     mremap, mmap(MAP_FIXED), madvise(DONTNEED/DONTNEED_LOCKED/FREE/
 *     REMOVE) and mprotect the program calls through libc's symbols
 *     while a device is open (not for libc's internal calls, e.g. free()
 *     of a large block, nor raw syscall()s).
 *
 * The pattern every mirror follows (it is the kernel's, Documentation/mm/
 * hmm.rst), with one lock of the device's own, here "pt_lock", taken both in
 * the invalidate callback and around the retry check:
 *
 *     struct uhmm_range_req req = {
 *         .notifier = n, .start = va, .end = va + len,
 *         .flags = UHMM_RF_FAULT_READ, .entries = entries,
 *         .timeout_ms = 1000,
 *     };
 *   again:
 *     err = uhmm_range_fault(ctx, &req);      // sets req.notifier_seq
 *     if (err)
 *         return err;                         // -EFAULT, -EPERM, -EBUSY...
 *     pthread_mutex_lock(&dev->pt_lock);
 *     if (uhmm_notifier_read_retry(n, req.notifier_seq)) {
 *         pthread_mutex_unlock(&dev->pt_lock);
 *         goto again;                         // something changed: redo
 *     }
 *     ... write entries[] into the device page table ...
 *     pthread_mutex_unlock(&dev->pt_lock);
 *
 *   static void invalidate(struct uhmm_notifier *n,
 *                          const struct uhmm_inv_event *ev, void *priv)
 *   {
 *       struct dev *dev = priv;
 *       pthread_mutex_lock(&dev->pt_lock);
 *       ... remove [ev->start, ev->end) from the device page table,
 *           flush TLBs, wait for accesses in flight (fence) ...
 *       pthread_mutex_unlock(&dev->pt_lock);
 *   }
 *
 * Why it is enough: the sequence number is made odd *before* the callback
 * runs.  A filler that checks read_retry under pt_lock either ran before the
 * callback took pt_lock (and the callback then removes what it wrote), or
 * after the sequence changed (and it retries).
 */
#ifndef UHMM_MIRROR_H
#define UHMM_MIRROR_H

#include <stdbool.h>
#include <uhmm/uhmm.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Interval notifiers                                                        */

/** Why an invalidation happens (uhmm_inv_event.reason). */
enum uhmm_inv_reason {
	UHMM_INV_UNMAP = 1,   /**< munmap (or mmap(MAP_FIXED) over it, mremap
				   away: uhmm_change_mapping()): the range is gone */
	UHMM_INV_ZAP,         /**< madvise(DONTNEED/FREE/REMOVE): contents discarded */
	UHMM_INV_REMAP,       /**< mremap: the range moved to new_start */
	UHMM_INV_MIGRATE,     /**< pages change location; device = destination
				   (NULL: system memory) */
	UHMM_INV_EXCLUSIVE,   /**< a device takes pages exclusively (device) */
	UHMM_INV_PROTECTION,  /**< uhmm_mprotect() changes access rights */
	UHMM_INV_RELEASE,     /**< the context is being destroyed */
	UHMM_INV_REVOKE,      /**< the CPU takes back pages a device held
				   exclusively (device = the holder) */
};

/** What an invalidate callback is told. */
struct uhmm_inv_event {
	uintptr_t start, end;        /**< page-aligned, within the interval */
	enum uhmm_inv_reason reason;
	/** MIGRATE, EXCLUSIVE: the device the pages go to (NULL: system
	 * memory).  A device can skip invalidations it causes itself when it
	 * updates its page table on its own. */
	uhmm_device *device;
	uintptr_t new_start;         /**< REMAP: where start went */
};

struct uhmm_notifier;

/**
 * An invalidate callback.  It may sleep (until the device has fenced): the
 * change waits for it.  It runs in the thread that makes the change: an
 * application thread in uhmm_migrate()/uhmm_mprotect(), or uhmm's
 * fault-service thread.  So it must not touch managed memory, must not call
 * uhmm functions other than uhmm_notifier_read_begin/read_retry, and must
 * not wait for anything that needs those (a device access that is waiting
 * for a CPU fault to be served, for instance).  Callbacks of one notifier
 * never run concurrently.
 */
typedef void (*uhmm_invalidate_fn)(struct uhmm_notifier *n,
				   const struct uhmm_inv_event *ev, void *priv);

/**
 * uhmm_notifier_insert - subscribe to invalidations of [start, start + len).
 * @start, @len: page-aligned, len > 0, not wrapping; any address range
 *   (managed or not; only changes uhmm sees are reported).
 * @fn: the callback; @priv is passed to it.
 * Errors: -EINVAL, -EBADF, -ECHILD, -ENOMEM.
 */
UHMM_API int uhmm_notifier_insert(uhmm_ctx *ctx, uintptr_t start, size_t len,
				  uhmm_invalidate_fn fn, void *priv,
				  struct uhmm_notifier **out);

/**
 * uhmm_notifier_remove - unsubscribe and free @n.  Waits for a callback of
 * @n that is running; must not be called from a callback.  Notifiers still
 * inserted when the context is destroyed get a RELEASE event and are freed
 * by uhmm_ctx_destroy().  Errors: -EBADF.
 */
UHMM_API int uhmm_notifier_remove(struct uhmm_notifier *n);

/**
 * uhmm_notifier_read_begin - start reading the interval.  Sleeps while an
 * invalidation of @n is running, then returns the sequence number to give
 * to uhmm_notifier_read_retry().  Never fails.
 */
UHMM_API uint32_t uhmm_notifier_read_begin(struct uhmm_notifier *n);

/**
 * uhmm_notifier_read_retry - whether an invalidation of @n started since
 * read_begin returned @seq (then what was read may be stale).  Call it under
 * the lock the callback takes.  Never sleeps.
 */
UHMM_API bool uhmm_notifier_read_retry(struct uhmm_notifier *n, uint32_t seq);

/* ------------------------------------------------------------------------ */
/* Range fault                                                               */

/** Request flags (uhmm_range_req.flags). */
enum {
	UHMM_RF_SNAPSHOT = 0,        /**< report only; fault nothing in */
	UHMM_RF_FAULT_READ = 1u << 0,/**< make every page readable */
	UHMM_RF_FAULT_WRITE = 1u << 1,/**< make every page writable (implies read) */
	/**
	 * Peer access: a page private to another device that can reach the
	 * requester's peers (the same peer domain, uhmm/topology.h:
	 * UHMM_TOPO_PEER_ACCESS) is not brought home by a fault request; its
	 * entry says UHMM_RE_PEER (VALID, the owner and the frame) and the
	 * requester accesses it in the owner's memory over the peer link.
	 * Needs req->device (-EINVAL without).  A page held exclusively by
	 * another device, or on a device of another domain, is handled as
	 * without the flag.
	 */
	UHMM_RF_PEER = 1u << 2,
};

/*
 * One entry per page (uhmm_range_req.entries).  The low 48 bits hold the
 * device frame for device-private pages of the requesting device; for a
 * system page the data is at the page's own virtual address.
 */
#define UHMM_RE_VALID (1ull << 63)   /**< the device may map the page */
#define UHMM_RE_WRITE (1ull << 62)   /**< ... for writing */
#define UHMM_RE_ZERO (1ull << 61)    /**< the shared zero page (read-only) */
#define UHMM_RE_DEVICE (1ull << 60)  /**< private to the requesting device */
#define UHMM_RE_REMOTE (1ull << 59)  /**< private to another device (not VALID) */
/** Mapped as part of a 2 MiB page: a system page in a huge page of the
 * CPU page table (a PMD-mapped transparent huge page: the entry's order,
 * UHMM_RE_ORDER, is 9 then); with UHMM_RE_DEVICE, a page of the 2 MiB-
 * aligned block that is one 2 MiB page of the requesting device
 * (device.h, ops->split): page i of the block in frame first + i, first a
 * multiple of 512, so the device may map the block with one entry.  Any
 * later change to part of the block comes with an invalidation of that
 * part first. */
#define UHMM_RE_HUGE (1ull << 58)
#define UHMM_RE_ERROR (1ull << 57)   /**< snapshot: a hole or an unreadable area */
/** Held exclusively by the requesting device (uhmm_make_exclusive): the
 * low 48 bits are the page number of the address where the device reaches
 * the data atomically ((e & UHMM_RE_DPFN_MASK) << 12).  Held by another
 * device: UHMM_RE_REMOTE, as a device-private page. */
#define UHMM_RE_EXCLUSIVE (1ull << 56)
/** In the coherent memory of the requesting device, mapped in place: a
 * system-addressable page (VALID, the data at its own address) that the
 * device reaches at local cost.  The low 48 bits hold its device frame,
 * for information only (the frame's slot is empty while the page is in
 * place). */
#define UHMM_RE_COHERENT (1ull << 55)
/** In the coherent memory of another device: a system-addressable page
 * (VALID, at its own address), reached over the link.  Low bits 0. */
#define UHMM_RE_COHERENT_REMOTE (1ull << 54)
/** Snapshot: the page was lost on a device (uhmm_device_page_lost); not
 * VALID.  A fault request over it fails with -EHWPOISON. */
#define UHMM_RE_POISON (1ull << 53)
#define UHMM_RE_DPFN_MASK ((1ull << 48) - 1)
/**
 * With UHMM_RF_PEER: the page is private to a peer of the requesting
 * device (VALID; WRITE as the CPU mapping allows): the data is in frame
 * UHMM_RE_PEER_DPFN(e) of the device whose id (uhmm_device_id) is
 * UHMM_RE_PEER_DEV(e) (uhmm_device_from_id(), uhmm/topology.h, finds
 * it).  The mapping holds until the page moves, which invalidates the
 * range first, as for the requester's own pages (UHMM_INV_MIGRATE; its
 * eviction, the owner's detach and a poisoning too).
 */
#define UHMM_RE_PEER (1ull << 52)
#define UHMM_RE_PEER_DPFN(e) ((e) & ((1ull << 40) - 1))
#define UHMM_RE_PEER_DEV(e) ((uint32_t)(((e) >> 40) & 0xff))
/** The order of the CPU mapping the page is part of, as the kernel's
 * hmm_pfn_to_map_order(): 0 for a 4 KiB page, 9 for a page of a 2 MiB
 * transparent huge page mapped by one PMD (with UHMM_RE_HUGE).  A device
 * may map the whole aligned 2 MiB with one entry when every page of it
 * says order 9 (one snapshot covers them all).  Bits 48-51 (not with
 * UHMM_RE_PEER, whose entries use them for the owner). */
#define UHMM_RE_ORDER_SHIFT 48
#define UHMM_RE_ORDER_MASK (0xfull << UHMM_RE_ORDER_SHIFT)
#define UHMM_RE_ORDER(e) ((unsigned)(((e) & UHMM_RE_ORDER_MASK) >> UHMM_RE_ORDER_SHIFT))

/** A range fault request. */
struct uhmm_range_req {
	struct uhmm_notifier *notifier; /**< may be NULL (no retry detection) */
	uintptr_t start, end;           /**< page-aligned, start < end */
	uint32_t flags;                 /**< UHMM_RF_* */
	uint32_t timeout_ms;            /**< give up with -EBUSY after; 0 = 1000 */
	uhmm_device *device;            /**< the requester: tells DEVICE from REMOTE */
	uint64_t *entries;              /**< out: (end - start) / 4096 entries */
	uint32_t notifier_seq;          /**< out: for read_retry */
};

/**
 * uhmm_range_fault - snapshot [start, end) for a device, faulting pages in
 * if asked.
 *
 * With UHMM_RF_FAULT_READ or _WRITE, pages on another device are first
 * brought back to system memory (but those a peer of the requester holds,
 * with UHMM_RF_PEER: UHMM_RE_PEER), then the range is populated
 * (MADV_POPULATE_READ/WRITE: never-touched pages become the zero page for
 * reads, private pages are copied-on-write for writes, as a CPU access
 * would do), so every entry comes back VALID.  Access rights are checked
 * against the CPU mapping at the time of the call (PROCMAP_QUERY where the
 * kernel has it, /proc/self/maps otherwise).
 *
 * If the notifier is invalidated during the walk, the walk starts over;
 * after timeout_ms of that it gives up.  On success the entries are final
 * for notifier_seq: check uhmm_notifier_read_retry() under your lock before
 * using them (see the pattern at the top of this header).
 *
 * A snapshot (no fault flags) never fails for holes: their entries say
 * UHMM_RE_ERROR.  Never-touched pages have no flag set.
 *
 * uhmm follows munmap(), mremap() and madvise() just after they return
 * (uhmm_sync() in uhmm.h): a device that starts work for an application
 * thread should call uhmm_sync() before it uses its page table, as
 * uhmm_simdev_launch() does, so that work started after such a call never
 * uses an entry that call removed.
 *
 * Errors (as the kernel's): -EINVAL bad request (also: UHMM_RF_PEER
 * without req->device; req->notifier is
 * not NULL and not a live notifier of @ctx -- removed, freed with its
 * context, or not a notifier at all); -EFAULT a fault request meets a hole
 * or a PROT_NONE area (also: a fault-in the kernel refused); -EPERM a
 * write fault on a read-only area; -EBUSY the notifier kept being
 * invalidated past the timeout; -EHWPOISON a fault request meets a page
 * lost on a device (device.h, uhmm_device_page_lost); -EBADF @ctx is not a live context, or
 * req->device is not NULL and not a live device of @ctx (or is being
 * detached); -ECHILD; -ENOMEM (uhmm's memory); -EIO a device failed to
 * bring a page home (a fault request over another device's page), or
 * /proc/self/pagemap could not be read.  Removing req->notifier while the
 * call runs is the caller's error.  May sleep.
 */
UHMM_API int uhmm_range_fault(uhmm_ctx *ctx, struct uhmm_range_req *req);

/* ------------------------------------------------------------------------ */
/* Device-exclusive access                                                   */

/*
 * A device's atomics on system memory over a bus like PCIe are not atomic
 * with respect to the CPU: the page must be taken away from the CPU while
 * the device works on it (the kernel's make_device_exclusive()).
 *
 * uhmm_make_exclusive() brings each page to system memory if it is on a
 * device, tells the other mirrors (UHMM_INV_EXCLUSIVE, device = @dev), and
 * takes the page out of the CPU page table: CPU reads and writes both fault
 * from then on.  The data stays in a system page that uhmm owns; the device
 * reaches it at the address returned in @pages (and reported by
 * uhmm_range_fault as UHMM_RE_EXCLUSIVE), where ordinary CPU atomics are
 * atomic with respect to everything else.
 *
 * A CPU access to an exclusive page revokes it: the holder is told
 * (UHMM_INV_REVOKE) and fences its accesses in flight, then the page goes
 * back into the CPU page table with its latest contents and the access
 * proceeds.  Several CPU threads touching the page at once cost one
 * revocation.  Migrations, uhmm_unregister, fork and context teardown
 * revoke too; munmap and madvise(DONTNEED) release the page (its data is
 * discarded, as the kernel would).
 *
 * Limits (the kernel has the same): managed anonymous private memory only.
 * A read-only area is refused with -EPERM; pages pinned or shared
 * copy-on-write with a fork child are unshared first, and if the kernel
 * still will not let one go, the call fails with -EBUSY.  A page held by
 * another device changes holder (the other device is told first).
 */

/**
 * uhmm_make_exclusive - give @dev exclusive access to @npages pages at @addr.
 * @addr: page-aligned; @npages > 0; the range must be managed.
 * @pages: NULL, or an array of @npages that receives, for each page, the
 *   address where the device reaches its data.  Valid until the device is
 *   told (an invalidation of the page).
 * Returns 0 when every page is held by @dev.  Errors: -EINVAL; -EBADF @dev
 * is not a live device; -EFAULT part of the range is not managed (or not
 * mapped); -EOPNOTSUPP the memory is not anonymous private; -EPERM the
 * range is not writable; -EHWPOISON pages of the range were lost on a
 * device (device.h, uhmm_device_page_lost): they are not held (their
 * @pages entries NULL), every other page is; -EBUSY the kernel would not let a page go (pages
 * before it stay exclusive); -ENOMEM (memory, or the reserve where
 * exclusive pages' data live could not grow: it grows on demand up to
 * about the machine's RAM and swap); -ECHILD.  A detach of @dev waits
 * for the call and then revokes what it took; once the detach has started
 * the call fails with -EBADF.  May sleep.
 */
UHMM_API int uhmm_make_exclusive(uhmm_device *dev, void *addr, size_t npages,
				 void **pages);

/**
 * uhmm_check_exclusive - whether every page of the range is still held
 * exclusively by @dev.  Returns 1 (all held), 0 (some page is not), or a
 * negative errno (-EINVAL, -EBADF, -EFAULT not managed).  A snapshot.
 */
UHMM_API int uhmm_check_exclusive(uhmm_device *dev, void *addr, size_t npages);

/* ------------------------------------------------------------------------ */
/* Protection changes                                                        */

/**
 * A change of the CPU mapping, made by uhmm_change_mapping()'s caller:
 * returns 0 or a negative errno (what uhmm_change_mapping() returns).
 */
typedef int (*uhmm_change_fn)(void *arg);

/**
 * uhmm_change_mapping - make a change of the CPU mapping of
 * [start, start + len) with the notifiers over it told first.
 * @start, @len: page-aligned, len > 0, not wrapping; any memory, managed
 *   or not (this is how mirrors of unmanaged memory hear of changes: see
 *   the top of this header).
 * @reason: what @fn does: UHMM_INV_UNMAP (munmap, mmap(MAP_FIXED) over
 *   it, mremap away), UHMM_INV_ZAP (madvise(DONTNEED/FREE/REMOVE)),
 *   UHMM_INV_REMAP (@new_start: where the range goes), or
 *   UHMM_INV_PROTECTION (mprotect).
 * @new_start: UHMM_INV_REMAP only (page-aligned); 0 otherwise.
 * @fn, @arg: the change; @fn(@arg) runs once, in the calling thread, after
 *   every overlapping notifier's callback has returned and while their
 *   sequence numbers stay odd (a concurrent range fault over the range
 *   waits, or retries, until the change is over).
 * Returns @fn's result.  Errors (then @fn is not called): -EINVAL bad
 * range, @new_start, @reason or @fn NULL; -EBADF @ctx is not a live
 * context; -ECHILD @ctx belongs to the parent of a fork.
 * @fn must not call uhmm_range_fault() over the range (it would wait for
 * its own change, up to its timeout), insert or remove notifiers, or
 * destroy @ctx.  May sleep (the callbacks).  Thread-safe.
 */
UHMM_API int uhmm_change_mapping(uhmm_ctx *ctx, uintptr_t start, size_t len,
				 enum uhmm_inv_reason reason, uintptr_t new_start,
				 uhmm_change_fn fn, void *arg);

/**
 * uhmm_mprotect - mprotect(2) that tells the mirrors first.
 * mprotect sends no userfaultfd event, so a device mirror would keep a
 * write mapping of a page the CPU made read-only.  This call invalidates
 * [addr, addr + len) with UHMM_INV_PROTECTION, then changes the protection.
 * (uhmm_range_fault() checks rights at fault time in any case.)
 * Errors: -EINVAL @addr or @len not page-aligned, @len 0 or wrapping;
 * -EBADF, -ECHILD (uhmm.h, Conventions); mprotect's own errors, negated
 * (-ENOMEM part of the range is not mapped, -EACCES, -EINVAL a bad @prot).
 * Thread-safe; may sleep (the callbacks).
 */
UHMM_API int uhmm_mprotect(uhmm_ctx *ctx, void *addr, size_t len, int prot);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_MIRROR_H */
