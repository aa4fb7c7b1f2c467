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
};

#ifdef __cplusplus
}
#endif
#endif /* UHMM_DEVICE_H */
