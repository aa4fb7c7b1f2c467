/* SPDX-License-Identifier: MIT */
/*
 * prefetch.c - asynchronous migration (uhmm_prefetch).
 *
 * A prefetch is a uhmm_migrate() run later by the context's prefetch thread,
 * in submission order.  The caller gets a handle at once; the handle's
 * eventfd becomes readable when the migration has finished, and its result
 * is the migration's.  The thread is started by the first prefetch of a
 * context and stopped at uhmm_ctx_destroy().
 *
 * Ordering.  A uhmm_migrate() of a
 * range that overlaps a prefetch submitted before it began waits until that
 * prefetch has finished: so the last call made decides where the pages end
 * up, as if the prefetch had been synchronous.  The prefetch thread's own
 * migrations do not wait (it runs the queue in order).  A prefetch of a
 * range that is unmapped or unregistered meanwhile finishes with that
 * migration's error (-EFAULT), having moved nothing that is gone.
 *
 * Locks: pf_lock (leaf; a condvar wait on pf_cond only): the queue and the
 * requests' state.  The thread holds no lock while it migrates.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "util/futex.h"

struct uhmm_prefetch_req {
	struct uhmm_ctx *ctx;
	uintptr_t start, end;
	uhmm_device *dst;
	uint64_t seq;          /* submission order */
	int fd;                /* eventfd, written once when done */
	int result;
	_Atomic uint32_t done; /* a futex: 1 once result is set */
	_Atomic int refs;      /* the caller's and the queue's */
	struct uhmm_prefetch_req *next;
};

/* The prefetch thread is running this thread's migrations. */
static __thread bool in_prefetch_thread __attribute__((tls_model("initial-exec")));

/* A handle lives until both the caller and the thread let go of it; it
 * never touches its context after it is done (the context may be gone). */
static void pf_put(struct uhmm_prefetch_req *pf)
{
	if (atomic_fetch_sub(&pf->refs, 1) != 1)
		return;
	if (pf->fd >= 0)
		close(pf->fd);
	uhmm__umem_free(pf);
}

static void *prefetch_main(void *arg)
{
	struct uhmm_ctx *ctx = arg;
	in_prefetch_thread = true;
	pthread_mutex_lock(&ctx->pf_lock);
	for (;;) {
		while (!ctx->pf_head && !ctx->pf_stop)
			pthread_cond_wait(&ctx->pf_cond, &ctx->pf_lock);
		struct uhmm_prefetch_req *pf = ctx->pf_head;
		if (!pf)
			break; /* stopping, nothing left */
		bool stop = ctx->pf_stop;
		pthread_mutex_unlock(&ctx->pf_lock);
		int r = stop ? -ECANCELED
			     : uhmm_migrate(ctx, (void *)pf->start, pf->end - pf->start, pf->dst, 0);
		/* Refused because the context is being destroyed. */
		if (r == -EBADF && atomic_load(&ctx->dying))
			r = -ECANCELED;
		if (!r && pf->dst)
			STAT_ADD(ctx, prefetched_bytes, pf->end - pf->start);
		pthread_mutex_lock(&ctx->pf_lock);
		ctx->pf_head = pf->next;
		if (!ctx->pf_head)
			ctx->pf_tail = &ctx->pf_head;
		pthread_cond_broadcast(&ctx->pf_cond);
		pthread_mutex_unlock(&ctx->pf_lock);
		pf->result = r;
		atomic_store_explicit(&pf->done, 1, memory_order_release);
		uhmm_futex_wake_all(&pf->done);
		uint64_t one = 1;
		if (write(pf->fd, &one, sizeof(one)) != sizeof(one)) {
			/* (An eventfd write fails only on overflow: impossible
			 * for one write.) */
		}
		pf_put(pf);
		pthread_mutex_lock(&ctx->pf_lock);
	}
	pthread_mutex_unlock(&ctx->pf_lock);
	return NULL;
}

void uhmm__prefetch_init(struct uhmm_ctx *ctx)
{
	pthread_mutex_init(&ctx->pf_lock, NULL);
	pthread_cond_init(&ctx->pf_cond, NULL);
	ctx->pf_tail = &ctx->pf_head;
}

/* Cancel what has not started, wait for what runs, stop the thread. */
void uhmm__prefetch_stop(struct uhmm_ctx *ctx)
{
	pthread_mutex_lock(&ctx->pf_lock);
	ctx->pf_stop = true;
	bool started = ctx->pf_started;
	pthread_cond_broadcast(&ctx->pf_cond);
	pthread_mutex_unlock(&ctx->pf_lock);
	if (started)
		uhmm__umem_thread_join(ctx->pf_thread, NULL);
}

void uhmm__prefetch_fini(struct uhmm_ctx *ctx)
{
	pthread_mutex_destroy(&ctx->pf_lock);
	pthread_cond_destroy(&ctx->pf_cond);
}

/*
 * Wait until every prefetch submitted before now that overlaps [a, b) has
 * finished (uhmm_migrate's ordering).  Bounded by those migrations.
 */
void uhmm__prefetch_order(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b)
{
	if (in_prefetch_thread || !atomic_load_explicit(&ctx->pf_any, memory_order_acquire))
		return;
	pthread_mutex_lock(&ctx->pf_lock);
	uint64_t upto = ctx->pf_seq;
	for (;;) {
		bool wait = false;
		for (struct uhmm_prefetch_req *pf = ctx->pf_head; pf && !wait; pf = pf->next)
			wait = pf->seq <= upto && pf->start < b && a < pf->end;
		if (!wait)
			break;
		pthread_cond_wait(&ctx->pf_cond, &ctx->pf_lock);
	}
	pthread_mutex_unlock(&ctx->pf_lock);
}

UHMM_API int uhmm_prefetch(uhmm_ctx *ctx, void *addr, size_t len, uhmm_device *dst,
			   unsigned flags, uhmm_prefetch_req **out)
{
	uintptr_t a = (uintptr_t)addr;
	if (!out || !addr || !len || ((a | len) & (PAGE_SIZE - 1)) || a + len < a || flags)
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	if (dst && uhmm__dev_hold(ctx, dst) == 0) {
		uhmm__dev_release(dst);
	} else if (dst) {
		uhmm__ctx_exit(ctx);
		return -EBADF;
	}
	struct uhmm_prefetch_req *pf = uhmm__umem_calloc(1, sizeof(*pf));
	if (!pf) {
		uhmm__ctx_exit(ctx);
		return -ENOMEM;
	}
	pf->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pf->fd < 0) {
		err = -errno;
		uhmm__umem_free(pf);
		uhmm__ctx_exit(ctx);
		return err;
	}
	pf->ctx = ctx;
	pf->start = a;
	pf->end = a + len;
	pf->dst = dst;
	pf->refs = 2;
	pthread_mutex_lock(&ctx->pf_lock);
	if (ctx->pf_stop) {
		err = -EBADF;
	} else if (!ctx->pf_started) {
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		err = uhmm__umem_thread_create(&ctx->pf_thread, prefetch_main, ctx);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (err > 0)
			err = -err;
		ctx->pf_started = !err;
	}
	if (!err)
		err = uhmm__advice_prefetched(ctx, a, a + len, dst ? dst->id : 0);
	if (!err) {
		uhmm__trace_prefetch(ctx, a, len, dst ? dst->id : 0);
		pf->seq = ++ctx->pf_seq;
		*ctx->pf_tail = pf;
		ctx->pf_tail = &pf->next;
		atomic_store_explicit(&ctx->pf_any, true, memory_order_release);
		pthread_cond_broadcast(&ctx->pf_cond);
	}
	pthread_mutex_unlock(&ctx->pf_lock);
	uhmm__ctx_exit(ctx);
	if (err) {
		close(pf->fd);
		uhmm__umem_free(pf);
		return err;
	}
	*out = pf;
	return 0;
}

UHMM_API int uhmm_prefetch_fd(const uhmm_prefetch_req *pf)
{
	return pf ? pf->fd : -EINVAL;
}

UHMM_API int uhmm_prefetch_wait(uhmm_prefetch_req *pf, int64_t timeout_ns)
{
	if (!pf)
		return -EINVAL;
	uint64_t t0 = timeout_ns > 0 ? uhmm__now_ns() : 0;
	while (!atomic_load_explicit(&pf->done, memory_order_acquire)) {
		if (timeout_ns == 0)
			return -EAGAIN;
		if (timeout_ns < 0) {
			uhmm_futex_wait(&pf->done, 0);
			continue;
		}
		uint64_t el = uhmm__now_ns() - t0;
		if (el >= (uint64_t)timeout_ns)
			return -ETIMEDOUT;
		uhmm_futex_wait_ns(&pf->done, 0, (uint64_t)timeout_ns - el);
	}
	return pf->result;
}

UHMM_API int uhmm_prefetch_release(uhmm_prefetch_req *pf)
{
	if (!pf)
		return -EINVAL;
	pf_put(pf);
	return 0;
}
