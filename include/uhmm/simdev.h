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

/** Fault injection points (uhmm_simdev_inject()). */
enum uhmm_simdev_fault {
	UHMM_SIMDEV_FAIL_ALLOC = 1, /**< alloc returns no pages */
	UHMM_SIMDEV_FAIL_COPY = 2,  /**< a copy completes with -EIO */
};

/**
 * uhmm_simdev_inject - make device operations fail, for testing.
 * @what:  which operation.
 * @after: let this many operations of that kind succeed first.
 * @count: then fail this many (0 disarms).
 * Copies are counted one struct uhmm_copy at a time, allocations one
 * alloc call at a time.  A failing copy may have written part of its
 * destination.  Thread-safe.
 * Errors: -EINVAL.
 */
UHMM_API int uhmm_simdev_inject(uhmm_device *dev, enum uhmm_simdev_fault what,
		       uint64_t after, uint64_t count);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_SIMDEV_H */
