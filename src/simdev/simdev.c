/* SPDX-License-Identifier: MIT */
/*
 * simdev.c - the software device: options, creation and attachment, the
 * backend's ops table, memory info and fault injection.
 *
 * Locks: none of its own.  The ops forward to devmem.c and copy.c, which
 * take theirs; fault injection and statistics are lock-free atomics.
 *
 * Life of an attached simdev (uhmm_simdev_create): new (pool, copy
 * engine) -> attach -> compute start (page table, lanes, fault-service
 * thread, the notifier over the whole address space).  ops->destroy, called
 * by uhmm at detach or context destroy after every device page is freed,
 * runs it backwards: notifier, fault thread, lanes, copy engine, pool.
 */
#define _GNU_SOURCE
#include "simdev/simdev_internal.h"

#include <errno.h>
#include <math.h>
#include <string.h>

/* Numbers the default names simdev0, simdev1, ... across the process. */
static _Atomic unsigned simdev_seq;

void uhmm_simdev_opts_init(struct uhmm_simdev_opts *opts)
{
	if (!opts)
		return;
	*opts = (struct uhmm_simdev_opts){
		.size = sizeof(*opts),
		.copy_threads = 1,
		.mem_bytes = 1ull << 30,
		.bandwidth_gbps = 0,
		.latency_ns = 0,
		.name = NULL,
		.compute_units = 2,
		.lanes_per_cu = 8,
		.fault_batch = 256,
		.tlb_entries = 64,
	};
}

static int opts_check(const struct uhmm_simdev_opts *o)
{
	if (o->size < sizeof(*o))
		return -EINVAL;
	if (o->mem_bytes == 0 || o->mem_bytes % UHMM_HUGE_SIZE != 0)
		return -EINVAL;
	if (o->copy_threads == 0 || o->copy_threads > SIMDEV_MAX_THREADS)
		return -EINVAL;
	if (isnan(o->bandwidth_gbps) || o->bandwidth_gbps < 0)
		return -EINVAL;
	if (o->compute_units < 1 || o->compute_units > 16)
		return -EINVAL;
	if (o->lanes_per_cu < 1 || o->lanes_per_cu > 64)
		return -EINVAL;
	if (o->fault_batch < 1 || o->fault_batch > 4096)
		return -EINVAL;
	if (o->tlb_entries < 1 || o->tlb_entries > 4096 ||
	    (o->tlb_entries & (o->tlb_entries - 1)))
		return -EINVAL;
	return 0;
}

int uhmm__simdev_new(const struct uhmm_simdev_opts *opts, struct simdev **out)
{
	struct uhmm_simdev_opts defaults;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!opts) {
		uhmm_simdev_opts_init(&defaults);
		opts = &defaults;
	}
	int err = opts_check(opts);
	if (err)
		return err;

	struct simdev *sd = calloc(1, sizeof(*sd));
	if (!sd)
		return -ENOMEM;
	sd->bandwidth_gbps = opts->bandwidth_gbps;
	sd->latency_ns = opts->latency_ns;
	sd->compute_units = opts->compute_units;
	sd->lanes_per_cu = opts->lanes_per_cu;
	sd->fault_batch = opts->fault_batch;
	sd->tlb_entries = opts->tlb_entries;
	atomic_init(&sd->fail_alloc.ok, 0);
	atomic_init(&sd->fail_alloc.fail, 0);
	atomic_init(&sd->fail_copy.ok, 0);
	atomic_init(&sd->fail_copy.fail, 0);
	atomic_init(&sd->copies, 0);
	atomic_init(&sd->bytes_copied, 0);

	err = uhmm__devmem_init(&sd->mem, opts->mem_bytes);
	if (err)
		goto fail_free;
	err = uhmm__copy_start(sd, opts->copy_threads);
	if (err)
		goto fail_mem;
	*out = sd;
	return 0;

fail_mem:
	uhmm__devmem_fini(&sd->mem);
fail_free:
	free(sd);
	return err;
}

/* ---- fault injection ---------------------------------------------------- */

bool uhmm__simdev_should_fail(struct simdev_fault *fp)
{
	/* Disarmed (the usual case): two relaxed loads. */
	uint64_t ok = atomic_load_explicit(&fp->ok, memory_order_relaxed);
	while (ok > 0)
		if (atomic_compare_exchange_weak_explicit(&fp->ok, &ok, ok - 1,
							  memory_order_relaxed,
							  memory_order_relaxed))
			return false;
	uint64_t fail = atomic_load_explicit(&fp->fail, memory_order_relaxed);
	while (fail > 0)
		if (atomic_compare_exchange_weak_explicit(&fp->fail, &fail, fail - 1,
							  memory_order_relaxed,
							  memory_order_relaxed))
			return true;
	return false;
}

/*
 * Arms @fp.  Each operation consumes one unit of `ok`, else of `fail`, so
 * exactly @after operations pass before exactly @count fail, even under
 * concurrency.  An operation racing with the arming itself may count
 * against either the old or the new setting.
 */
int uhmm__simdev_inject(struct simdev *sd, enum uhmm_simdev_fault what,
			uint64_t after, uint64_t count)
{
	struct simdev_fault *fp;

	switch (what) {
	case UHMM_SIMDEV_FAIL_ALLOC:
		fp = &sd->fail_alloc;
		break;
	case UHMM_SIMDEV_FAIL_COPY:
		fp = &sd->fail_copy;
		break;
	default:
		return -EINVAL;
	}
	/* Disarm first so no operation sees the new `ok` with the old `fail`. */
	atomic_store(&fp->fail, 0);
	atomic_store(&fp->ok, count ? after : 0);
	atomic_store(&fp->fail, count);
	return 0;
}

void uhmm__simdev_meminfo(struct simdev *sd, struct uhmm_simdev_meminfo *out)
{
	memset(out, 0, sizeof(*out));
	uhmm__devmem_info(&sd->mem, &out->total_pages, &out->free_pages,
			  &out->huge_free);
	out->copies = atomic_load_explicit(&sd->copies, memory_order_relaxed);
	out->bytes_copied = atomic_load_explicit(&sd->bytes_copied,
						 memory_order_relaxed);
}

/* ---- ops table ---------------------------------------------------------- */

static long simdev_alloc(void *priv, unsigned order, size_t n, uint64_t *dpfn)
{
	struct simdev *sd = priv;

	if ((order == 0 || order == UHMM_HUGE_ORDER) && n > 0 && dpfn &&
	    uhmm__simdev_should_fail(&sd->fail_alloc))
		return 0;
	return uhmm__devmem_alloc(&sd->mem, order, n, dpfn);
}

static void simdev_free(void *priv, unsigned order, size_t n, const uint64_t *dpfn)
{
	struct simdev *sd = priv;
	uhmm__devmem_free(&sd->mem, order, n, dpfn);
}

static int simdev_copy_submit(void *priv, struct uhmm_copy *copies, size_t n,
			      uhmm_fence_t *fence)
{
	return uhmm__copy_submit(priv, copies, n, fence);
}

static int simdev_copy_wait(void *priv, uhmm_fence_t fence)
{
	return uhmm__copy_wait(priv, fence);
}

static int simdev_fence(void *priv)
{
	return uhmm__copy_fence(priv);
}

/* Called once, after every page is freed and every fence waited for. */
static void simdev_destroy(void *priv)
{
	struct simdev *sd = priv;

	if (!sd)
		return;
	uhmm__compute_stop(sd);
	uhmm__copy_stop(sd);
	uhmm__devmem_fini(&sd->mem);
	free(sd);
}

const struct uhmm_device_ops uhmm__simdev_ops = {
	.alloc = simdev_alloc,
	.free = simdev_free,
	.copy_submit = simdev_copy_submit,
	.copy_wait = simdev_copy_wait,
	.fence = simdev_fence,
	.destroy = simdev_destroy,
};

/* ---- public API --------------------------------------------------------- */

int uhmm_simdev_create(uhmm_ctx *ctx, const struct uhmm_simdev_opts *opts,
		       uhmm_device **out)
{
	struct simdev *sd;
	char namebuf[32];

	if (!out)
		return -EINVAL;
	if (!ctx)
		return -EBADF;
	int err = uhmm__simdev_new(opts, &sd);
	if (err)
		return err;

	const char *name = opts ? opts->name : NULL;
	if (!name) {
		snprintf(namebuf, sizeof(namebuf), "simdev%u",
			 atomic_fetch_add(&simdev_seq, 1));
		name = namebuf;
	}
	err = uhmm_device_attach(ctx, &uhmm__simdev_ops, sd, name, out);
	if (err) {
		simdev_destroy(sd);
		return err;
	}
	err = uhmm__compute_start(sd, ctx, *out);
	if (err) {
		/* Nothing is on the device yet: detach only destroys it. */
		(void)uhmm_device_detach(*out);
		*out = NULL;
		return err;
	}
	return 0;
}

struct simdev *uhmm__simdev_of(uhmm_device *dev)
{
	if (!dev || uhmm_device_ops_of(dev) != &uhmm__simdev_ops)
		return NULL;
	return uhmm_device_priv(dev);
}

int uhmm_simdev_meminfo(uhmm_device *dev, struct uhmm_simdev_meminfo *out)
{
	struct simdev *sd = uhmm__simdev_of(dev);

	if (!sd || !out)
		return -EINVAL;
	uhmm__simdev_meminfo(sd, out);
	return 0;
}

int uhmm_simdev_inject(uhmm_device *dev, enum uhmm_simdev_fault what,
		       uint64_t after, uint64_t count)
{
	struct simdev *sd = uhmm__simdev_of(dev);

	if (!sd)
		return -EINVAL;
	return uhmm__simdev_inject(sd, what, after, count);
}

int uhmm_simdev_stats(uhmm_device *dev, struct uhmm_simdev_stats *out)
{
	struct simdev *sd = uhmm__simdev_of(dev);

	if (!sd || !sd->comp || !out)
		return -EINVAL;
	uhmm__compute_stats(sd->comp, out);
	return 0;
}
