/* SPDX-License-Identifier: MIT */
/*
 * ctx.c - contexts and devices: creation, teardown, handle checking,
 * options, statistics.
 *
 * Locks: the handle registry's mutex (a leaf); ctx->dev_lock (a leaf,
 * guards attach/detach publishing into ctx->devs).  uhmm_ctx_destroy()
 * sleeps until calls in flight on the context have left;
 * uhmm_device_detach() until the device's users have (uhmm__dev_hold).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/log.h"
#include "util/futex.h"

void uhmm__assert_fail(const char *what, const char *file, int line)
{
	fprintf(stderr, "uhmm: assertion failed: %s (%s:%d)\n", what, file, line);
	abort();
}

uint64_t uhmm__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- the handle registry: which pointers are live contexts/devices ---- */

/*
 * Every call checks its handle here first, so a destroyed (or never
 * created) handle gets -EBADF instead of a use after free.  A handful of
 * handles live at once: a linear scan is fine.
 */
enum { H_CTX = UHMM__H_CTX, H_DEV = UHMM__H_DEV };
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { const void *h; int kind; } *reg;
static size_t nreg, capreg;

int uhmm__handle_add(const void *h, int kind)
{
	pthread_mutex_lock(&reg_lock);
	if (nreg == capreg) {
		size_t cap = capreg ? capreg * 2 : 16;
		void *n = uhmm__umem_realloc(reg, cap * sizeof(*reg));
		if (!n) {
			pthread_mutex_unlock(&reg_lock);
			return -ENOMEM;
		}
		reg = n;
		capreg = cap;
	}
	reg[nreg].h = h;
	reg[nreg++].kind = kind;
	pthread_mutex_unlock(&reg_lock);
	return 0;
}

void uhmm__handle_del(const void *h)
{
	pthread_mutex_lock(&reg_lock);
	for (size_t i = 0; i < nreg; i++) {
		if (reg[i].h == h) {
			reg[i] = reg[--nreg];
			break;
		}
	}
	pthread_mutex_unlock(&reg_lock);
}

static bool live_locked(const void *h, int kind)
{
	for (size_t i = 0; i < nreg; i++)
		if (reg[i].h == h && reg[i].kind == kind)
			return true;
	return false;
}

bool uhmm__handle_is(const void *h, int kind)
{
	if (!h)
		return false;
	pthread_mutex_lock(&reg_lock);
	bool live = live_locked(h, kind);
	pthread_mutex_unlock(&reg_lock);
	return live;
}

bool uhmm__handle_live(const void *h)
{
	if (!h)
		return false;
	pthread_mutex_lock(&reg_lock);
	bool live = live_locked(h, H_DEV);
	pthread_mutex_unlock(&reg_lock);
	return live;
}

struct uhmm_ctx *uhmm__live_contexts_hold(void)
{
	struct uhmm_ctx *head = NULL, **tail = &head;
	pid_t me = getpid();
	pthread_mutex_lock(&reg_lock);
	for (size_t i = 0; i < nreg; i++) {
		struct uhmm_ctx *c = (struct uhmm_ctx *)reg[i].h;
		if (reg[i].kind == H_CTX && c->pid == me && !atomic_load(&c->dying)) {
			/* Entered, as uhmm__ctx_enter does: destroy waits. */
			atomic_fetch_add(&c->calls, 1);
			*tail = c;
			tail = &c->fork_next;
		}
	}
	*tail = NULL;
	pthread_mutex_unlock(&reg_lock);
	return head;
}

int uhmm__ctx_enter(struct uhmm_ctx *ctx)
{
	if (!ctx)
		return -EBADF;
	pthread_mutex_lock(&reg_lock);
	bool live = live_locked(ctx, H_CTX) && !atomic_load(&ctx->dying);
	if (live)
		atomic_fetch_add(&ctx->calls, 1);
	pthread_mutex_unlock(&reg_lock);
	if (!live)
		return -EBADF;
	if (ctx->pid != getpid()) {
		uhmm__ctx_exit(ctx);
		return -ECHILD;
	}
	return 0;
}

int uhmm__dev_enter(uhmm_device *dev, struct uhmm_ctx **out)
{
	if (!dev)
		return -EBADF;
	/* Both checks under one lock: the device cannot be freed between
	 * finding it live and entering its context (detach enters too). */
	pthread_mutex_lock(&reg_lock);
	bool live = live_locked(dev, H_DEV) && live_locked(dev->ctx, H_CTX) &&
		    !atomic_load(&dev->ctx->dying);
	struct uhmm_ctx *ctx = live ? dev->ctx : NULL;
	if (live)
		atomic_fetch_add(&ctx->calls, 1);
	pthread_mutex_unlock(&reg_lock);
	if (!live)
		return -EBADF;
	if (ctx->pid != getpid()) {
		uhmm__ctx_exit(ctx);
		return -ECHILD;
	}
	*out = ctx;
	return 0;
}

#define CTX_DYING 0x80000000u

void uhmm__ctx_exit(struct uhmm_ctx *ctx)
{
	/* Nothing of ctx is read after the decrement but its result: the
	 * wake is a futex call on the address, which reads nothing. */
	if (atomic_fetch_sub(&ctx->calls, 1) == (CTX_DYING | 1))
		uhmm_futex_wake_all(&ctx->calls);
}

/*
 * Device users.  A call that uses a device for longer than one look at it
 * (a migration toward it, a range fault on its behalf, an exclusive grab, a
 * simdev launch) holds it; uhmm_device_detach() sets DEV_DYING, so that no
 * new hold succeeds, waits until the holds in flight are released, and only
 * then brings the device's pages home: nothing can put a page on it after
 * the evacuation.  A hold never waits (a launch's own device faults take
 * holds while detach waits for the launch: they fail at once with -EBADF,
 * the launch ends, detach goes on).  The count and the bit share one word,
 * so a release touches the device once: detach may free it as soon as it
 * sees the count reach zero (the wake-up after that is a futex call on the
 * address, which reads nothing).
 */
#define DEV_DYING 0x80000000u

int uhmm__dev_hold(struct uhmm_ctx *ctx, struct uhmm_device *dev)
{
	if (!dev)
		return -EBADF;
	pthread_mutex_lock(&reg_lock);
	bool ok = live_locked(dev, H_DEV) && dev->ctx == ctx &&
		  !(atomic_load(&dev->users) & DEV_DYING);
	if (ok)
		atomic_fetch_add(&dev->users, 1);
	pthread_mutex_unlock(&reg_lock);
	return ok ? 0 : -EBADF;
}

void uhmm__dev_release(struct uhmm_device *dev)
{
	if (atomic_fetch_sub(&dev->users, 1) == (DEV_DYING | 1))
		uhmm_futex_wake_all(&dev->users);
}

/* ---- options ---- */

/* The options table: name, environment variable, default, bounds. */
static const struct {
	const char *env;
	size_t off;
	uint32_t def, min, max;
} options[] = {
	{ "UHMM_FAULT_AROUND", offsetof(struct uhmm_ctx_opts, fault_around), 64, 1, 512 },
	{ "UHMM_ZERO_AROUND", offsetof(struct uhmm_ctx_opts, zero_around), 64, 1, 512 },
	{ "UHMM_POOL_PAGES", offsetof(struct uhmm_ctx_opts, pool_pages), 4096, 0, 1u << 20 },
	{ "UHMM_STATS", offsetof(struct uhmm_ctx_opts, print_stats), 0, 0, 1 },
	{ "UHMM_POOL_MAX_PAGES", offsetof(struct uhmm_ctx_opts, pool_max_pages), 65536, 0, 1u << 20 },
	{ "UHMM_READAHEAD_PAGES", offsetof(struct uhmm_ctx_opts, readahead_pages), 512, 0, 65536 },
	{ "UHMM_SPIN_US", offsetof(struct uhmm_ctx_opts, spin_us), 0, 0, 10000 },
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static uint32_t *opt_field(struct uhmm_ctx_opts *o, size_t i)
{
	return (uint32_t *)((char *)o + options[i].off);
}

UHMM_API void uhmm_ctx_opts_init(struct uhmm_ctx_opts *opts)
{
	if (!opts)
		return;
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
	for (size_t i = 0; i < NOPTIONS; i++)
		*opt_field(opts, i) = options[i].def;
}

static int opts_resolve(const struct uhmm_ctx_opts *in, struct uhmm_ctx_opts *o)
{
	uhmm_ctx_opts_init(o);
	if (in) {
		/* A program built against an older header passes the smaller
		 * struct it knows: the fields it does not have keep their
		 * defaults.  One built against a newer header is refused. */
		if (in->size != UHMM_CTX_OPTS_SIZE_V1 && in->size != UHMM_CTX_OPTS_SIZE_V2 &&
		    in->size != UHMM_CTX_OPTS_SIZE_V3 && in->size != UHMM_CTX_OPTS_SIZE_V4 &&
		    in->size != sizeof(*in))
			return -EINVAL;
		memcpy(o, in, in->size);
		o->size = sizeof(*o);
	}
	if (o->flags & ~(uint32_t)(UHMM_CTX_REQUIRE_KERNEL_FAULTS |
				   UHMM_CTX_USER_MODE_ONLY | UHMM_CTX_NO_MOVE |
				   UHMM_CTX_SIGBUS | UHMM_CTX_NO_STAT))
		return -EINVAL;
	/* SIGBUS mode serves no kernel access (uhmm.h). */
	if ((o->flags & UHMM_CTX_REQUIRE_KERNEL_FAULTS) && (o->flags & UHMM_CTX_SIGBUS))
		return -EINVAL;
	if ((o->flags & UHMM_CTX_REQUIRE_KERNEL_FAULTS) &&
	    (o->flags & UHMM_CTX_USER_MODE_ONLY))
		return -EINVAL;
	for (size_t i = 0; i < NOPTIONS; i++) {
		const char *e = getenv(options[i].env);
		if (e && *e) {
			char *end;
			unsigned long v = strtoul(e, &end, 0);
			if (*end == '\0')
				*opt_field(o, i) = (uint32_t)v;
		}
		uint32_t v = *opt_field(o, i);
		if (v < options[i].min || v > options[i].max)
			return -EINVAL;
	}
	return 0;
}

/* ---- contexts ---- */

/*
 * The probe: one page registered with the context's userfaultfd and filled
 * with the zero page once, never touched.  Filling it again answers EAGAIN
 * while the kernel's mmap_changing is raised (an munmap, mremap or madvise
 * of managed memory whose event is posted, or about to be, and not read
 * yet) and EEXIST otherwise: uhmm__events_pending().  Without it (any
 * step failing) uhmm works as before, without that answer.
 */
static void probe_init(struct uhmm_ctx *ctx)
{
	char *p = uhmm__umem_map(PAGE_SIZE, 0, UMEM_RDONLY);
	if (!p)
		return;
	size_t done;
	if (uhmm__uffd_register(ctx->uffd, (uintptr_t)p, PAGE_SIZE) == 0) {
		if (uhmm__uffd_zeropage(ctx->uffd, (uintptr_t)p, PAGE_SIZE, &done) == 0) {
			ctx->probe = p;
			return;
		}
		uhmm__uffd_unregister(ctx->uffd, (uintptr_t)p, PAGE_SIZE);
	}
	uhmm__umem_unmap(p, PAGE_SIZE);
}

/* Unregistered first: its munmap must raise no event (nobody may read it). */
static void probe_fini(struct uhmm_ctx *ctx)
{
	if (!ctx->probe)
		return;
	uhmm__uffd_unregister(ctx->uffd, (uintptr_t)ctx->probe, PAGE_SIZE);
	uhmm__umem_unmap(ctx->probe, PAGE_SIZE);
	ctx->probe = NULL;
}

UHMM_API int uhmm_ctx_create(const struct uhmm_ctx_opts *opts, uhmm_ctx **out)
{
	if (!out)
		return -EINVAL;
	struct uhmm_ctx *ctx = uhmm__umem_calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	int err = opts_resolve(opts, &ctx->opts);
	if (err) {
		uhmm__umem_free(ctx);
		return err;
	}
	ctx->pid = getpid();
	ctx->uffd = ctx->evfd = ctx->pagemap_fd = ctx->maps_fd = ctx->mem_fd = -1;
	pthread_rwlock_init(&ctx->ranges_lock, NULL);
	pthread_rwlock_init(&ctx->fork_lock, NULL);
	pthread_rwlock_init(&ctx->notifier_lock, NULL);
	pthread_mutex_init(&ctx->dev_lock, NULL);
	pthread_mutex_init(&ctx->req_lock, NULL);
	pthread_mutex_init(&ctx->lru_lock, NULL);
	uhmm__pol_init(ctx);
	uhmm__prefetch_init(ctx);
	uhmm__advice_init(ctx);
	uhmm__dup_init(ctx);

	err = uhmm__uffd_open(ctx);
	if (err)
		goto fail;
	/* For range faults: page table (PAGEMAP_SCAN or pagemap reads) and
	 * VMA rights (PROCMAP_QUERY where the kernel has it). */
	ctx->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	/* The no-move path reads managed pages through it (migrate.c). */
	ctx->mem_fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
	const char *nq = getenv("UHMM_NO_PROCMAP_QUERY"); /* test the fallback */
	ctx->maps_fd = nq && *nq == '1' ? -1
					: open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (ctx->pagemap_fd < 0)
		UHMM_LOG(UHMM_LOG_WARN, "context %p: no /proc/self/pagemap (%s): range faults "
			 "report no zero or huge pages", (void *)ctx, strerror(errno));
	if (ctx->mem_fd < 0)
		UHMM_LOG(UHMM_LOG_WARN, "context %p: no /proc/self/mem: read-only memory "
			 "cannot leave for a device", (void *)ctx);
	ctx->zeros = uhmm__umem_map(UHMM_HUGE_SIZE, 0, UMEM_RDONLY);
	ctx->bounce = uhmm__umem_map(BATCH_PAGES * PAGE_SIZE, 0, UMEM_POPULATE);
	if (!ctx->zeros || !ctx->bounce) {
		err = -ENOMEM;
		goto fail;
	}
	probe_init(ctx);
	err = uhmm__pool_init(ctx, ctx->opts.pool_pages, ctx->opts.pool_max_pages);
	if (err)
		goto fail;
	const char *tp = getenv("UHMM_TRACE");
	if (tp && *tp)
		ctx->opts.trace_path = tp;
	if (ctx->opts.trace_path) {
		err = uhmm__trace_open(ctx, ctx->opts.trace_path);
		if (err)
			goto fail;
	}
	err = uhmm__service_start(ctx);
	if (err)
		goto fail;
	err = uhmm__handle_add(ctx, H_CTX);
	if (err) {
		uhmm__service_stop(ctx);
		goto fail;
	}
	if (ctx->sigbus) {
		err = uhmm__sigbus_add(ctx);
		if (err) {
			uhmm__handle_del(ctx);
			uhmm__service_stop(ctx);
			goto fail;
		}
	}
	uhmm__fork_init();
	uhmm__statpub_start(ctx); /* the live view (uhmm-stat), if wanted */
	*out = ctx;
	return 0;
fail:
	uhmm__trace_close(ctx);
	if (ctx->pool.base)
		uhmm__pool_fini(&ctx->pool);
	uhmm__umem_unmap(ctx->zeros, UHMM_HUGE_SIZE);
	uhmm__umem_unmap(ctx->bounce, BATCH_PAGES * PAGE_SIZE);
	probe_fini(ctx);
	if (ctx->uffd >= 0)
		close(ctx->uffd);
	if (ctx->pagemap_fd >= 0)
		close(ctx->pagemap_fd);
	if (ctx->maps_fd >= 0)
		close(ctx->maps_fd);
	if (ctx->mem_fd >= 0)
		close(ctx->mem_fd);
	pthread_rwlock_destroy(&ctx->ranges_lock);
	pthread_rwlock_destroy(&ctx->fork_lock);
	pthread_rwlock_destroy(&ctx->notifier_lock);
	pthread_mutex_destroy(&ctx->dev_lock);
	pthread_mutex_destroy(&ctx->req_lock);
	pthread_mutex_destroy(&ctx->lru_lock);
	uhmm__prefetch_fini(ctx);
	uhmm__advice_fini(ctx);
	uhmm__pol_fini(ctx);
	uhmm__umem_free(ctx);
	return err;
}

static void device_release(struct uhmm_ctx *ctx, struct uhmm_device *d);

UHMM_API int uhmm_ctx_destroy(uhmm_ctx *ctx)
{
	if (!ctx)
		return -EBADF;
	/* Refuse new calls, then wait for the ones in flight. */
	pthread_mutex_lock(&reg_lock);
	bool live = live_locked(ctx, H_CTX) && !atomic_exchange(&ctx->dying, true);
	if (live)
		atomic_fetch_or(&ctx->calls, CTX_DYING);
	pthread_mutex_unlock(&reg_lock);
	if (!live)
		return -EBADF;
	if (ctx->pid != getpid()) {
		pthread_mutex_lock(&reg_lock);
		atomic_fetch_and(&ctx->calls, ~CTX_DYING);
		atomic_store(&ctx->dying, false);
		pthread_mutex_unlock(&reg_lock);
		return -ECHILD;
	}
	uint32_t c;
	while ((c = atomic_load(&ctx->calls)) != CTX_DYING)
		uhmm_futex_wait(&ctx->calls, c);
	uhmm__handle_del(ctx);
	uhmm__statpub_stop(ctx); /* its file goes first: the context is going */
	/* Prefetches not started end -ECANCELED (the one running ended with
	 * the calls above). */
	uhmm__prefetch_stop(ctx);

	/* Every page home while the service thread still installs them. */
	/* A munmap that returned just before is followed first: its range
	 * would otherwise be evacuated into memory that is gone. */
	uhmm__events_wait(ctx);
	int err = uhmm__evacuate(ctx, 0);
	/* Mirrors drop everything; devices may remove their notifiers as
	 * they are destroyed; the rest are freed here. */
	uhmm__invalidate(ctx, 0, UINTPTR_MAX, UHMM_INV_RELEASE, NULL, 0);
	uhmm__dup_fini(ctx); /* read-mostly duplicates' frames, before the devices go */
	for (unsigned id = 1; id < MAX_DEVICES; id++) {
		struct uhmm_device *d = atomic_load(&ctx->devs[id]);
		if (d)
			device_release(ctx, d);
	}
	uhmm__notifiers_free_all(ctx);
	uhmm__service_stop(ctx);
	if (ctx->opts.print_stats)
		uhmm__stats_print(ctx, stderr);
	uhmm__ranges_release_all(ctx);
	/* Unregistered: no more SIGBUS of ours; wait for handlers still
	 * running on the context. */
	if (ctx->sigbus)
		uhmm__sigbus_del(ctx);
	uhmm__trace_close(ctx); /* nothing records any more */
	uhmm__pool_fini(&ctx->pool);
	uhmm__umem_unmap(ctx->zeros, UHMM_HUGE_SIZE);
	uhmm__umem_unmap(ctx->bounce, BATCH_PAGES * PAGE_SIZE);
	probe_fini(ctx);
	close(ctx->uffd);
	if (ctx->pagemap_fd >= 0)
		close(ctx->pagemap_fd);
	if (ctx->maps_fd >= 0)
		close(ctx->maps_fd);
	if (ctx->mem_fd >= 0)
		close(ctx->mem_fd);
	pthread_rwlock_destroy(&ctx->ranges_lock);
	pthread_rwlock_destroy(&ctx->fork_lock);
	pthread_rwlock_destroy(&ctx->notifier_lock);
	pthread_mutex_destroy(&ctx->dev_lock);
	pthread_mutex_destroy(&ctx->req_lock);
	pthread_mutex_destroy(&ctx->lru_lock);
	/* After the service thread and the devices: no callback is left. */
	uhmm__prefetch_fini(ctx);
	uhmm__advice_fini(ctx);
	uhmm__pol_fini(ctx);
	uhmm__umem_free(ctx);
	return err ? -EIO : 0;
}

UHMM_API int uhmm_ctx_info(uhmm_ctx *ctx, struct uhmm_ctx_info *info)
{
	if (!info)
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	memset(info, 0, sizeof(*info));
	info->uffd_features = ctx->features;
	info->user_mode_only = ctx->user_mode_only;
	info->has_move = ctx->move_in;
	info->fault_around = ctx->opts.fault_around;
	info->zero_around = ctx->opts.zero_around;
	info->pool_pages = ctx->opts.pool_pages;
	info->sigbus = ctx->sigbus;
	uhmm__ctx_exit(ctx);
	return 0;
}

/* ---- devices ---- */

struct uhmm_device *uhmm__dev_get(struct uhmm_ctx *ctx, unsigned id)
{
	return id && id < MAX_DEVICES ? atomic_load(&ctx->devs[id]) : NULL;
}

void uhmm__dev_free_pages(struct uhmm_ctx *ctx, unsigned id,
			  const uint64_t *dpfn, size_t n)
{
	struct uhmm_device *d = uhmm__dev_get(ctx, id);
	if (d)
		uhmm__dev_put_frames(ctx, d, dpfn, n);
}

long uhmm__dev_get_frames(struct uhmm_device *d, size_t n, uint64_t *dpfn)
{
	long got = d->ops->alloc(d->priv, 0, n, dpfn);
	if (got > 0)
		atomic_fetch_add_explicit(&d->frames_used, (uint64_t)got, memory_order_relaxed);
	return got;
}

void uhmm__dev_put_frames(struct uhmm_ctx *ctx, struct uhmm_device *d,
			  const uint64_t *dpfn, size_t n)
{
	if (!n)
		return;
	/* Counted out before the frames go back (and in after they came,
	 * above): bytes_in_use never shows more than uhmm holds, even to
	 * someone who took the freed frames meanwhile (another tenant). */
	atomic_fetch_sub_explicit(&d->frames_used, (uint64_t)n, memory_order_relaxed);
	d->ops->free(d->priv, 0, n, dpfn);
	uhmm__dev_freed(ctx);
}

UHMM_API int uhmm_device_attach(uhmm_ctx *ctx, const struct uhmm_device_ops *ops,
				void *priv, const char *name, uhmm_device **out)
{
	if (!ops || !out || !ops->alloc || !ops->free || !ops->copy_submit ||
	    !ops->copy_wait)
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	struct uhmm_device *d = uhmm__umem_calloc(1, sizeof(*d));
	if (!d) {
		err = -ENOMEM;
		goto out;
	}
	d->ctx = ctx;
	d->ops = ops;
	d->priv = priv;
	err = uhmm__coh_attach(ctx, d); /* coherent memory (coherent.c) */
	if (err) {
		uhmm__umem_free(d);
		goto out;
	}
	pthread_mutex_lock(&ctx->dev_lock);
	for (unsigned id = 1; id < MAX_DEVICES; id++) {
		if (!atomic_load(&ctx->devs[id])) {
			d->id = id;
			break;
		}
	}
	if (d->id) {
		snprintf(d->name, sizeof(d->name), "%s", name ? name : "device");
		err = uhmm__handle_add(d, H_DEV);
		if (!err)
			atomic_store(&ctx->devs[d->id], d);
		if (!err) uhmm__trace_device(ctx, d->id, d->name, 0);
	} else {
		err = -ENOSPC;
	}
	pthread_mutex_unlock(&ctx->dev_lock);
	if (err) {
		uhmm__coh_detach(ctx, d);
		uhmm__umem_free(d);
	} else {
		*out = d;
	}
out:
	uhmm__ctx_exit(ctx);
	return err;
}

static void device_release(struct uhmm_ctx *ctx, struct uhmm_device *d)
{
	uhmm__handle_del(d);
	uhmm__lru_drop_dev(ctx, d->id);
	uhmm__dup_drop_dev(ctx, d);
	pthread_mutex_lock(&ctx->dev_lock);
	atomic_store(&ctx->devs[d->id], NULL);
	pthread_mutex_unlock(&ctx->dev_lock);
	uhmm__coh_detach(ctx, d);
	if (d->ops->destroy)
		d->ops->destroy(d->priv);
	uhmm__umem_free(d);
}

UHMM_API int uhmm_device_detach(uhmm_device *dev)
{
	struct uhmm_ctx *ctx;
	int err = uhmm__dev_enter(dev, &ctx);
	if (err)
		return err;
	/* No new users (a second detach gets -EBADF), then wait for the
	 * ones in flight: a migration toward the device that started before
	 * would otherwise publish its pages there after the evacuation.
	 * (Checked live again: a detach that entered with us may have
	 * finished and freed the device.) */
	pthread_mutex_lock(&reg_lock);
	bool first = live_locked(dev, H_DEV) &&
		     !(atomic_fetch_or(&dev->users, DEV_DYING) & DEV_DYING);
	pthread_mutex_unlock(&reg_lock);
	if (!first) {
		uhmm__ctx_exit(ctx);
		return -EBADF;
	}
	uint32_t u;
	while ((u = atomic_load(&dev->users)) != DEV_DYING)
		uhmm_futex_wait(&dev->users, u);
	uhmm__events_wait(ctx); /* a munmap just returned: not into the void */
	err = uhmm__evacuate(ctx, dev->id);
	if (err)
		atomic_fetch_and(&dev->users, ~DEV_DYING); /* stays attached */
	else
		device_release(ctx, dev);
	uhmm__ctx_exit(ctx);
	return err ? -EIO : 0;
}

/* The accessors check the handle: a detached device gives NULL, never a
 * read of freed memory. */
UHMM_API void *uhmm_device_priv(const uhmm_device *dev)
{
	return uhmm__handle_live(dev) ? dev->priv : NULL;
}

UHMM_API const char *uhmm_device_name(const uhmm_device *dev)
{
	return uhmm__handle_live(dev) ? dev->name : NULL;
}

UHMM_API const struct uhmm_device_ops *uhmm_device_ops_of(const uhmm_device *dev)
{
	return uhmm__handle_live(dev) ? dev->ops : NULL;
}

UHMM_API uint32_t uhmm_device_id(const uhmm_device *dev)
{
	return uhmm__handle_live(dev) ? dev->id : 0;
}
