/* SPDX-License-Identifier: MIT */
/*
 * uhmm/device.h - the interface a device backend implements.
 *
 * A backend is the driver of one device: it owns the device's private
 * memory, moves data between that memory and system memory with its copy
 * engine, and (for devices that run code) keeps a page table that mirrors
 * the process's.  uhmm calls the backend through a table of operations,
 * struct uhmm_device_ops, the counterpart of the kernel's dev_pagemap_ops
 * plus the parts of a GPU driver that migration needs.
 *
 * Device memory is addressed by device page frame numbers (dpfn): frame n
 * covers device bytes [n * 4096, (n + 1) * 4096).  uhmm never dereferences
 * device memory; it only hands dpfns back to the backend.
 *
 * Threading.  uhmm calls every operation from several threads at once (the
 * fault-service thread and any application thread running uhmm_migrate());
 * a backend serialises internally.  No operation may touch memory managed by
 * uhmm through the CPU other than the system buffers named in a copy
 * descriptor, and no operation may call back into uhmm.
 *
 * The software device (uhmm/simdev.h) is the reference implementation.
 */
#ifndef UHMM_DEVICE_H
#define UHMM_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Marks the library's exported symbols (everything else is hidden). */
#ifndef UHMM_API
#define UHMM_API __attribute__((visibility("default")))
#endif

/** Size of a device page: the unit of device memory and of migration. */
#define UHMM_PAGE_SIZE 4096u
/** Size of a huge device page (order UHMM_HUGE_ORDER). */
#define UHMM_HUGE_SIZE (2u << 20)
/** Order of a 2 MiB page in 4 KiB pages (2^9 = 512). */
#define UHMM_HUGE_ORDER 9u

/** Direction of one copy. */
enum uhmm_copy_dir {
	UHMM_COPY_TO_DEVICE = 1,   /**< system buffer -> device pages */
	UHMM_COPY_FROM_DEVICE = 2, /**< device pages -> system buffer */
	UHMM_COPY_ZERO = 3,        /**< fill device pages with zeros; sys unused */
};

/**
 * One copy of a batch.  The device range is npages contiguous frames
 * starting at dpfn; the system range is npages * 4096 bytes at sys.
 * The backend writes status: 0 on success or a negative errno (-EIO for a
 * transfer error).  A failed copy may have written part of its destination;
 * the caller treats the destination as garbage.
 */
struct uhmm_copy {
	void *sys;
	uint64_t dpfn;
	uint32_t npages;
	uint16_t dir;     /**< enum uhmm_copy_dir */
	int16_t status;   /**< out */
};

/** Opaque handle of a submitted batch, returned by copy_submit. */
typedef uint64_t uhmm_fence_t;

/* ------------------------------------------------------------------------ */
/* Describing a device (ops->describe, the topology query)                   */

/** What a link is made of (struct uhmm_link_desc.kind). */
enum uhmm_link_kind {
	UHMM_LINK_UNKNOWN = 0, /**< not described */
	UHMM_LINK_PCIE = 1,    /**< PCI Express (peers: P2P through a switch) */
	UHMM_LINK_NVLINK = 2,  /**< a GPU-to-GPU fabric (NVLink, xGMI class) */
	UHMM_LINK_C2C = 3,     /**< a cache-coherent chip-to-chip link (NVLink-C2C, CXL) */
	UHMM_LINK_MEMCPY = 4,  /**< no link: the same memory, copied by the CPU
				    (a software device without a transfer model) */
	UHMM_LINK_OTHER = 5,   /**< something else (figures of the backend's own) */
	/** Only in the topology query's pair matrix: no direct path between
	 * the two devices, their traffic goes through system memory (the
	 * `nvidia-smi topo -m` "SYS"). */
	UHMM_LINK_SYSTEM = 6,
	/** Only in the pair matrix, on its diagonal: the device's own memory. */
	UHMM_LINK_SELF = 7,
};

/** One link: its kind and the figures a transfer over it is charged. */
struct uhmm_link_desc {
	uint32_t kind;         /**< enum uhmm_link_kind */
	uint32_t reserved;     /**< 0 */
	char name[16];         /**< short name ("pcie4", "nvlink", ...); "" unknown */
	double bandwidth_gbps; /**< per direction, 10^9 B/s; 0: unlimited or unknown */
	uint64_t latency_ns;   /**< per transfer; 0: none or unknown */
};

/** Kind of a device's memory (struct uhmm_device_desc.mem_kind). */
enum uhmm_mem_kind {
	UHMM_MEM_PRIVATE = 0,  /**< device-private: the CPU cannot address it */
	UHMM_MEM_COHERENT = 1, /**< coherent: addressable by the CPU (ops->coherent_mem) */
};

/** A backend's description of its device (ops->describe). */
struct uhmm_device_desc {
	uint32_t size;         /**< set by uhmm: the bytes of this struct it knows */
	int32_t numa_node;     /**< NUMA node of the device's memory; -1 none / unknown */
	uint64_t mem_bytes;    /**< memory the device has for uhmm; 0 unknown */
	struct uhmm_link_desc host; /**< the link to the CPU and system memory */
	/** The link to other devices (device-to-device copies and peer
	 * access), as seen from this device's end. */
	struct uhmm_link_desc peer;
	/**
	 * Peer access domain: two devices whose backends report the same
	 * non-NULL @peer_domain can reach each other's memory directly (a
	 * device maps a page resident on the other without migrating it).
	 * NULL: this device reaches no peer's memory.  Any pointer unique to
	 * the fabric (simdev: its ops table, every simdev of the process
	 * shares the process's memory).
	 */
	const void *peer_domain;
};

/**
 * Operations of a device backend.  All return 0 or a negative errno unless
 * stated.  Every operation may sleep.
 */
struct uhmm_device_ops {
	/**
	 * alloc - allocate device pages.
	 * @order: 0 for 4 KiB pages, UHMM_HUGE_ORDER for 2 MiB pages.
	 * @n: number of pages of that order wanted.
	 * @dpfn: out, n first frames (each 2 MiB page is 512 contiguous frames
	 *        starting at a multiple of 512).
	 * Returns the number of pages allocated (0..n; fewer than n when memory
	 * runs out) or a negative errno for other failures.  Allocated memory
	 * holds garbage.
	 */
	long (*alloc)(void *priv, unsigned order, size_t n, uint64_t *dpfn);

	/** free - return pages obtained from alloc (same order). Never fails. */
	void (*free)(void *priv, unsigned order, size_t n, const uint64_t *dpfn);

	/**
	 * copy_submit - queue a batch of copies on the copy engine.
	 * The array must stay valid until copy_wait returns for the fence.
	 * Returns 0 and sets *fence, or a negative errno (nothing queued).
	 */
	int (*copy_submit)(void *priv, struct uhmm_copy *copies, size_t n,
			   uhmm_fence_t *fence);

	/**
	 * copy_wait - wait for a batch to finish.  Afterwards every status of
	 * the batch is final.  Returns 0 when every copy succeeded, else the
	 * first failing copy's status.  Each fence is waited for exactly once.
	 */
	int (*copy_wait)(void *priv, uhmm_fence_t fence);

	/**
	 * fence - wait until every access the device has in flight (copies,
	 * kernels touching memory) has completed.  Optional (may be NULL).
	 */
	int (*fence)(void *priv);

	/** destroy - release the backend; called once, after every page is freed. */
	void (*destroy)(void *priv);

	/**
	 * coherent_mem - optional (may be NULL): declare the device's memory
	 * coherent, i.e. addressable by the CPU (the kernel's
	 * MEMORY_DEVICE_COHERENT: CXL memory, NVLink-C2C, unified HBM).
	 * Called once, by uhmm_device_attach().  Sets *@base and *@len to the
	 * memory: an anonymous private read-write mapping of the backend's
	 * (it may be bound to a NUMA node), page-aligned, frame n at
	 * *@base + n * 4096 for every frame alloc can return.  Returns 0, or
	 * -EOPNOTSUPP for a device whose memory is private after all (the
	 * attach goes on as for private memory), or another negative errno
	 * (the attach fails with it).
	 *
	 * What uhmm then does with the mapping: it registers it with a
	 * userfaultfd of its own (write-protect mode: a hole stays an
	 * ordinary zero-fill for the copy engine) and moves pages between it
	 * and the application's addresses with UFFDIO_MOVE.  A page migrated
	 * to the device is copied into a frame by copy_submit, as for private
	 * memory, then that frame's page is moved into place at the page's
	 * address: the CPU reads and writes it there without a fault, and
	 * the frame's slot in the mapping is a hole until the page moves back
	 * (before any migration away from the device, eviction included, and
	 * before the frame is copied from).  So the backend must not touch a
	 * frame's bytes except through copies uhmm asks for, and must not
	 * unmap or change the mapping while attached.  The pages stay in the
	 * device's capacity (alloc/free, uhmm_device_stats), are evicted like
	 * private ones, and uhmm_range_fault reports them as system pages
	 * with UHMM_RE_COHERENT (mirror.h).
	 */
	int (*coherent_mem)(void *priv, void **base, size_t *len);

	/**
	 * describe - optional (may be NULL): describe the device for the
	 * topology query (uhmm/topology.h): its memory and its links to the
	 * CPU and to other devices.  uhmm zeroes *@out and sets out->size to
	 * the sizeof(struct uhmm_device_desc) it knows before the call; the
	 * backend fills the fields it knows that lie below out->size (a
	 * field left 0 reads "unknown").  Called at each query, from any
	 * thread, with the device held (not detached meanwhile); must not
	 * block for long nor call back into uhmm.  Returns 0, or a negative
	 * errno (the query then reports the device as undescribed, as when
	 * the op is NULL).
	 */
	int (*describe)(void *priv, struct uhmm_device_desc *out);

	/**
	 * split - optional (may be NULL): turn the 2 MiB page at frame @dpfn
	 * (a multiple of 512, obtained from alloc with UHMM_HUGE_ORDER) into
	 * 512 pages of order 0, frames @dpfn + i, all still allocated: the
	 * data does not move, and each is freed afterwards with free(order 0)
	 * on its own.  @order is UHMM_HUGE_ORDER.  Never fails, does not
	 * sleep beyond the backend's own lock.
	 *
	 * What uhmm does with it: only a backend that has split gets 2 MiB
	 * pages asked of it.  When a whole 2 MiB-aligned block of a range
	 * (512 pages, one block of page state) moves to a private device,
	 * uhmm asks alloc for one page of UHMM_HUGE_ORDER, page i of the
	 * block in frame @dpfn + i (and for 512 pages of order 0 when none
	 * is free); uhmm_range_fault reports such pages UHMM_RE_HUGE
	 * (mirror.h), so a mirror may map the block with one 2 MiB entry.
	 * The first page of the block that leaves the device, or whose frame
	 * is released for any reason (a 4 KiB migration, a CPU fault, an
	 * exclusive grab, a discard, munmap, eviction, poison), splits the
	 * unit first; the invalidation of that page reaches the mirrors
	 * before, so a mirror splits its 2 MiB entry then.  A whole block
	 * moving home is freed as 512 frames of order 0 after one split.
	 * Added in the device-huge-page revision: a backend built against an
	 * older header has no such field; it must zero the tail of its
	 * table (a static or zero-initialised struct does).
	 */
	void (*split)(void *priv, unsigned order, uint64_t dpfn);

	/**
	 * map_range - optional (may be NULL): map [@start, @end)
	 * (page-aligned) in the device's page table where its pages are now,
	 * as far as the device can reach them, with no fault (accessed-by
	 * advice, uhmm.h UHMM_ADVISE_ACCESSED_BY: the policy asks this after
	 * the advice and after every migration of pages of an advised range).
	 * A request, not a command: the backend queues it and returns
	 * (uhmm calls it from any thread, possibly with page locks held, so
	 * it must neither block nor call uhmm here); its own thread later
	 * range-faults the span as a snapshot (mirror.h, UHMM_RF_SNAPSHOT:
	 * nothing is faulted in) and installs what is VALID under the
	 * notifier's read_retry discipline.  Dropping a request (a full
	 * queue) is allowed: the device then faults, as without the advice.
	 */
	void (*map_range)(void *priv, uint64_t start, uint64_t end);
};

/* ------------------------------------------------------------------------ */
/* Device memory is a cache: what a backend may ask of uhmm                  */

typedef struct uhmm_device uhmm_device;

/*
 * When a migration toward a device (uhmm_migrate(), a device fault of a
 * simdev kernel, the migration an exclusive grab falls back to) finds the
 * device full, uhmm evicts: it moves the least recently used 2 MiB blocks of
 * the device's pages back to system memory (blocks of the request itself
 * excepted), then allocates again.  A backend whose memory is wanted for
 * something else (another tenant, a shrink) asks for the same with the two
 * calls below.  Neither may be called from inside a device operation (they
 * call the copy engine and the notifiers) or with page locks held.
 */

/**
 * uhmm_device_evict - free about @bytes of @dev's memory by moving pages
 * home, least recently used blocks first and whole blocks (so up to 2 MiB
 * more).  Pages someone holds (a migration or fault in flight) are skipped.
 * Returns the bytes moved (>= 0; less than asked when the device held less
 * or pages were busy), or -EBADF (@dev not a live device).
 * Sleeps on the copy engine, the device's fences and the fault-service
 * thread.
 */
UHMM_API long uhmm_device_evict(uhmm_device *dev, size_t bytes);

/**
 * uhmm_device_evict_frames - move home every page of @dev whose device
 * frame is in [@first, @first + @n) (the kernel's migrate_device_range
 * role).  Pages someone holds are waited for, up to 2 s in all.  Frames a
 * migration in flight has allocated but not yet published are not covered
 * (they are after it ends: call again).
 * Returns 0; -EBUSY if pages of the range were still held after 2 s (the
 * others moved); -EINVAL (@n 0, or the range wraps); -EBADF.
 */
UHMM_API int uhmm_device_evict_frames(uhmm_device *dev, uint64_t first, uint64_t n);

struct uhmm_pol_dev_fault;
struct uhmm_pol_dev_act;

/**
 * uhmm_device_fault_policy - ask the context's policy what to do with a
 * batch of @dev's faults (uhmm/policy.h: the built-in policy, or the
 * installed plug-in's dev_faults).  A backend that services its own
 * faults (simdev does) calls this with the faulting pages, sorted by
 * address, one per page, and acts on the answers: one per fault in
 * @act[0..n).  The answers are always valid (a plug-in's invalid answer is
 * replaced by the built-in one and the plug-in ejected).  Does not block
 * beyond the policy's own callback.
 * uhmm adds what the backend does not know: each fault's advice
 * (uhmm_advise(): flags, preferred) and its span [lo, hi) clipped to the
 * run of that advice; the backend fills addr, access, hint, where, and
 * [lo, hi) as the span it could move with the page (within its 2 MiB block
 * and what uhmm manages).
 * Returns 0; -EINVAL (@f or @act NULL with @n > 0); -ENOMEM; -EBADF @dev is
 * not a live device.
 */
UHMM_API int uhmm_device_fault_policy(uhmm_device *dev, const struct uhmm_pol_dev_fault *f,
				      size_t n, struct uhmm_pol_dev_act *act);

struct uhmm_pol_counter;
struct uhmm_pol_counter_act;

/**
 * uhmm_device_access_counter - ask the context's policy what to do with an
 * access-counter notification of @dev (uhmm/policy.h, access_counter):
 * the device's accesses to memory it maps remotely reached its threshold
 * in a region (the backend fills n->addr: an address it accessed in the
 * region, n->len: the region's size, a power of two from 4 KiB, the region
 * being [n->addr & ~(n->len - 1), + n->len); count; hint).  uhmm clips the
 * region to the managed range holding n->addr and adds the advice (flags,
 * preferred); the answer
 * in @act is always valid (UHMM_POL_CTR_IGNORE, or UHMM_POL_CTR_MIGRATE
 * with a span inside the clipped region), and the backend acts on it
 * (simdev: uhmm_migrate() of the span to itself, then maps it).  Does not
 * block beyond the policy's own callback.
 * Returns 0; -EINVAL (@n or @act NULL, n->len not a power of two from
 * 4 KiB to 1 TiB); -EFAULT n->addr is
 * not managed (nothing to migrate: @act says ignore); -ENOMEM; -EBADF
 * @dev is not a live device; -ECHILD.
 */
UHMM_API int uhmm_device_access_counter(uhmm_device *dev, const struct uhmm_pol_counter *n,
					struct uhmm_pol_counter_act *act);

/**
 * uhmm_device_page_lost - the backend lost device frame @dpfn (an
 * uncorrectable memory error: the kernel's memory_failure() for device
 * memory).  The page that used the frame is *poisoned*: its data is gone,
 * and, as the kernel does for a hardware-poisoned page,
 *   - a CPU access to it raises SIGBUS with si_code BUS_MCEERR_AR at its
 *     address (a UFFDIO_POISON marker; on kernels without UFFDIO_POISON,
 *     before 6.6, it reads zeros instead);
 *   - a device access (uhmm_range_fault with a fault flag) fails with
 *     -EHWPOISON; a snapshot reports it UHMM_RE_POISON;
 *   - uhmm_migrate() over it, either way, leaves it and moves the rest of
 *     the range, then returns -EHWPOISON; uhmm_make_exclusive too;
 *   - discarding it (madvise(MADV_DONTNEED), munmap, uhmm_free) clears it:
 *     the address reads zeros again (after munmap: whatever is mapped there
 *     next);
 *   - mremap() moves it with the page: the new address is poisoned, the
 *     old one is whatever is mapped there next.
 * Any number of pages may be poisoned at once.
 * Nothing else is lost: the other pages of the range, on the device or
 * not, keep their data.  Counted in uhmm_stats.poisoned_pages.  A page of
 * coherent memory (in place at its address) is taken out of place first.
 * The frame goes back to the backend (free): retiring it is the backend's
 * choice.  Not from inside a device operation; may sleep (the device's
 * fences, the fault-service thread); a page someone holds is waited for,
 * up to 2 s.
 * Returns 0; -ENOENT no page uses the frame (nothing was lost); -EBUSY the
 * page stayed held for 2 s; -EBADF @dev is not a live device; -ECHILD.
 */
UHMM_API int uhmm_device_page_lost(uhmm_device *dev, uint64_t dpfn);

/**
 * uhmm_device_page_lost_at - uhmm_device_page_lost() for a backend that
 * knows which page it believes uses frame @dpfn: the page at @addr (any
 * address in it).  Only that page is poisoned, if it still uses the
 * frame: a page that moved off the frame meanwhile (evicted, migrated:
 * the frame perhaps reused by another page) is left alone.  Same rules
 * and errors as uhmm_device_page_lost, -ENOENT also when the page at
 * @addr does not use the frame, and -EINVAL @addr NULL (page 0).
 */
UHMM_API int uhmm_device_page_lost_at(uhmm_device *dev, uint64_t dpfn, const void *addr);

/** A device's memory as uhmm sees it (uhmm_device_stats()). */
struct uhmm_device_stats {
	uint64_t bytes_in_use;   /**< frames uhmm holds from the backend, in bytes */
	uint64_t evicted_pages;  /**< pages evicted from the device so far */
	uint64_t evicted_bytes;
	uint64_t lru_blocks;     /**< 2 MiB blocks in its LRU (may hold pages) */
	/** gauge: pages of coherent memory mapped in place at their address
	 * (also in bytes_in_use); 0 for a private device */
	uint64_t coherent_pages;
	/** 1: the device's memory is coherent (ops->coherent_mem) */
	uint32_t coherent;
};

/** Errors: -EINVAL @out NULL; -EBADF. */
UHMM_API int uhmm_device_stats(uhmm_device *dev, struct uhmm_device_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_DEVICE_H */
