/* SPDX-License-Identifier: MIT */
/*
 * simdev_internal.h - internals of the software device, shared by its files.
 *
 *   simdev.c  create/destroy, options, meminfo, fault injection, ops table
 *   devmem.c  device memory pool and its 4 KiB / 2 MiB page allocator
 *   copy.c    copy engine: worker threads, batches, fences, transfer model
 *
 * Locks (none is held while taking another, so there is no lock order):
 *   struct devmem.lock       allocator state; nothing blocks under it
 *   struct copy_engine.lock  queue, fences, counters; only condvar waits
 * Copies run with no lock held.  Statistics and fault injection are atomics.
 *
 * simdev includes only public and device headers (never src/core/).
 */
#ifndef UHMM_SIMDEV_INTERNAL_H
#define UHMM_SIMDEV_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <uhmm/device.h>
#include <uhmm/simdev.h>

/* Pages of a 2 MiB chunk. */
#define SIMDEV_CHUNK_PAGES (UHMM_HUGE_SIZE / UHMM_PAGE_SIZE)
#define SIMDEV_MAX_THREADS 8u

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
};

/* Maps the pool.  Errors: -EINVAL, -ENOMEM. */
int uhmm__devmem_init(struct devmem *dm, uint64_t bytes);
/* Unmaps the pool; pages still allocated are simply lost. */
void uhmm__devmem_fini(struct devmem *dm);
/* ops->alloc and ops->free (device.h), without fault injection. */
long uhmm__devmem_alloc(struct devmem *dm, unsigned order, size_t n, uint64_t *dpfn);
void uhmm__devmem_free(struct devmem *dm, unsigned order, size_t n,
		       const uint64_t *dpfn);
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
	uint64_t busy;                     /* copies submitted, not yet done */
	bool stop;                         /* threads exit once the queue is empty */
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

/* ------------------------------------------------------------------------ */
/* simdev.c                                                                  */

/*
 * One fault-injection point: the next `ok` operations succeed, the `fail`
 * after them fail, the rest succeed.  Both only count down.
 */
struct simdev_fault {
	_Atomic uint64_t ok;
	_Atomic uint64_t fail;
};

struct simdev {
	struct devmem mem;
	struct copy_engine eng;
	/* Transfer model, fixed at creation. */
	double bandwidth_gbps;             /* 0: unlimited */
	uint64_t latency_ns;
	struct simdev_fault fail_alloc;    /* counted per alloc call with n > 0 */
	struct simdev_fault fail_copy;     /* counted per valid struct uhmm_copy */
	_Atomic uint64_t copies;           /* copies completed successfully */
	_Atomic uint64_t bytes_copied;     /* bytes they moved (ZERO: filled) */
};

/*
 * Creates a simdev without attaching it to a context: maps the pool and
 * starts the copy threads.  @opts NULL means the defaults.
 * Errors: -EINVAL bad options; -ENOMEM; -EAGAIN thread creation failed.
 * Release with uhmm__simdev_ops.destroy(sd).
 */
int uhmm__simdev_new(const struct uhmm_simdev_opts *opts, struct simdev **out);

/* uhmm_simdev_meminfo() and uhmm_simdev_inject() on the backend itself. */
void uhmm__simdev_meminfo(struct simdev *sd, struct uhmm_simdev_meminfo *out);
int uhmm__simdev_inject(struct simdev *sd, enum uhmm_simdev_fault what,
			uint64_t after, uint64_t count);

/* Consumes one operation at @fp; true when that operation must fail. */
bool uhmm__simdev_should_fail(struct simdev_fault *fp);

/* The backend's operations; priv is a struct simdev *. */
extern const struct uhmm_device_ops uhmm__simdev_ops;

#endif /* UHMM_SIMDEV_INTERNAL_H */
