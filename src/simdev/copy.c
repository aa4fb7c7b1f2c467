/* SPDX-License-Identifier: MIT */
/*
 * copy.c - simdev's copy engine: worker threads that run submitted batches
 * of copies in FIFO order, fences to wait for them, and the transfer model.
 *
 * Locks: struct copy_engine.lock guards the queue, the fence table, the
 * batch cache and the counters.  Under it a thread only waits on
 * work_cond / done_cond; copies, sleeps of the transfer model and malloc
 * all run without it.
 *
 * Life of a batch:
 *   submit    gets a fence, enters the fence table and the queue tail
 *   claim     workers take runs of its copies from the queue head; once
 *             every copy is claimed it leaves the queue (a batch may be
 *             split across workers)
 *   complete  the worker finishing its last copy (done == n) wakes waiters
 *   wait      the single waiter removes it from the fence table and frees it
 * A batch is freed only by copy_wait or at stop, never by a worker, so a
 * worker may touch its claimed copies without the lock.
 */
#define _GNU_SOURCE
#include "simdev/simdev_internal.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

/* With several threads a worker claims about this much of a batch at once. */
#define CLAIM_BYTES (256u << 10)
/* Spare batch structs kept for reuse. */
#define BATCH_CACHE_MAX 32u

struct copy_batch {
	struct uhmm_copy *copies;  /* the caller's array */
	size_t n;
	size_t claimed;            /* copies [0, claimed) belong to workers */
	size_t done;               /* copies finished; complete when == n */
	size_t err_idx;            /* lowest failing index, or SIZE_MAX */
	int err;                   /* its status */
	uhmm_fence_t fence;
	bool waited;               /* a copy_wait owns it */
	struct copy_batch *qnext;  /* queue link */
	struct copy_batch *hnext;  /* fence-table or cache link */
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ---- transfer model ----------------------------------------------------- */

/*
 * Least duration of copy @c: the link latency plus bytes / bandwidth.  A
 * ZERO fill happens inside the device, so it pays the latency only.
 */
static uint64_t transfer_ns(const struct simdev *sd, const struct uhmm_copy *c)
{
	uint64_t ns = sd->latency_ns;

	if (sd->bandwidth_gbps > 0 && c->dir != UHMM_COPY_ZERO) {
		/* GB/s = bytes per ns. */
		double t = (double)c->npages * UHMM_PAGE_SIZE / sd->bandwidth_gbps;
		ns = t >= 1.8e19 ? UINT64_MAX : sat_add(ns, (uint64_t)t);
	}
	return ns;
}

static void sleep_until(uint64_t deadline)
{
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / 1000000000ull),
		.tv_nsec = (long)(deadline % 1000000000ull),
	};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* ---- one copy ----------------------------------------------------------- */

static bool copy_is_valid(const struct devmem *dm, const struct uhmm_copy *c)
{
	switch (c->dir) {
	case UHMM_COPY_TO_DEVICE:
	case UHMM_COPY_FROM_DEVICE:
		if (!c->sys)
			return false;
		break;
	case UHMM_COPY_ZERO:
		break;
	default:
		return false;
	}
	return uhmm__devmem_range_ok(dm, c->dpfn, c->npages);
}

/*
 * Runs copy @c and returns its status.  An injected failure writes the
 * first half of the destination, then reports -EIO, as a link error in the
 * middle of a transfer would.
 */
static int copy_run_one(struct simdev *sd, const struct uhmm_copy *c)
{
	if (!copy_is_valid(&sd->mem, c))
		return -EINVAL;

	uint64_t model = transfer_ns(sd, c);
	uint64_t deadline = model ? sat_add(now_ns(), model) : 0;
	bool fail = uhmm__simdev_should_fail(&sd->fi[UHMM_SIMDEV_FAIL_COPY]);
	size_t bytes = (size_t)c->npages * UHMM_PAGE_SIZE;
	size_t len = fail ? (size_t)(c->npages / 2) * UHMM_PAGE_SIZE : bytes;
	unsigned char *dev = uhmm__devmem_ptr(&sd->mem, c->dpfn);

	switch (c->dir) {
	case UHMM_COPY_TO_DEVICE:
		memcpy(dev, c->sys, len);
		break;
	case UHMM_COPY_FROM_DEVICE:
		memcpy(c->sys, dev, len);
		break;
	default: /* UHMM_COPY_ZERO */
		memset(dev, 0, len);
		break;
	}
	if (deadline)
		sleep_until(deadline);
	if (fail)
		return -EIO;
	atomic_fetch_add_explicit(&sd->copies, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sd->bytes_copied, bytes, memory_order_relaxed);
	return 0;
}

/* ---- queue, fence table, cache (all under eng->lock) -------------------- */

static struct copy_batch **fence_bucket_locked(struct copy_engine *eng,
					       uhmm_fence_t fence)
{
	return &eng->fences[fence % COPY_FENCE_BUCKETS];
}

static struct copy_batch *fence_find_locked(struct copy_engine *eng,
					    uhmm_fence_t fence)
{
	for (struct copy_batch *b = *fence_bucket_locked(eng, fence); b; b = b->hnext)
		if (b->fence == fence)
			return b;
	return NULL;
}

static void fence_del_locked(struct copy_engine *eng, struct copy_batch *b)
{
	struct copy_batch **pp = fence_bucket_locked(eng, b->fence);
	while (*pp != b)
		pp = &(*pp)->hnext;
	*pp = b->hnext;
	b->hnext = NULL;
}

/* Number of copies, from b->claimed on, that the next worker takes. */
static size_t claim_count_locked(const struct copy_engine *eng,
				 const struct copy_batch *b)
{
	size_t left = b->n - b->claimed;
	if (eng->nthreads == 1)
		return left;

	size_t k = 0;
	uint64_t bytes = 0;
	while (k < left && (k == 0 || bytes < CLAIM_BYTES))
		bytes += (uint64_t)b->copies[b->claimed + k++].npages * UHMM_PAGE_SIZE;
	return k;
}

/* ---- workers ------------------------------------------------------------ */

static void *copy_worker(void *arg)
{
	struct simdev *sd = arg;
	struct copy_engine *eng = &sd->eng;

	pthread_mutex_lock(&eng->lock);
	for (;;) {
		while (!eng->head && !eng->stop)
			pthread_cond_wait(&eng->work_cond, &eng->lock);
		struct copy_batch *b = eng->head;
		if (!b)
			break; /* stop, and nothing left to run */

		size_t first = b->claimed;
		size_t k = claim_count_locked(eng, b);
		b->claimed += k;
		if (b->claimed == b->n) {
			eng->head = b->qnext;
			if (!eng->head)
				eng->tail = NULL;
			b->qnext = NULL;
		}
		/* Work is left: hand it to an idle sibling. */
		if (eng->head && eng->nthreads > 1)
			pthread_cond_signal(&eng->work_cond);
		pthread_mutex_unlock(&eng->lock);

		/* b stays allocated until done == n, which needs our k below. */
		size_t err_idx = SIZE_MAX;
		int err = 0;
		for (size_t i = first; i < first + k; i++) {
			int st = copy_run_one(sd, &b->copies[i]);
			b->copies[i].status = (int16_t)st;
			if (st && err_idx == SIZE_MAX) {
				err_idx = i;
				err = st;
			}
		}

		pthread_mutex_lock(&eng->lock);
		if (err_idx < b->err_idx) {
			b->err_idx = err_idx;
			b->err = err;
		}
		b->done += k;
		eng->busy -= k;
		if (b->done == b->n)
			pthread_cond_broadcast(&eng->done_cond);
	}
	pthread_mutex_unlock(&eng->lock);
	return NULL;
}

static void engine_free_batches(struct copy_engine *eng)
{
	for (unsigned i = 0; i < COPY_FENCE_BUCKETS; i++) {
		while (eng->fences[i]) {
			struct copy_batch *b = eng->fences[i];
			eng->fences[i] = b->hnext;
			free(b);
		}
	}
	while (eng->cache) {
		struct copy_batch *b = eng->cache;
		eng->cache = b->hnext;
		free(b);
	}
	eng->ncache = 0;
}

int uhmm__copy_start(struct simdev *sd, unsigned nthreads)
{
	struct copy_engine *eng = &sd->eng;

	memset(eng, 0, sizeof(*eng));
	if (nthreads == 0 || nthreads > SIMDEV_MAX_THREADS)
		return -EINVAL;
	eng->nthreads = nthreads;
	eng->next_fence = 1;
	pthread_mutex_init(&eng->lock, NULL);
	pthread_cond_init(&eng->work_cond, NULL);
	pthread_cond_init(&eng->done_cond, NULL);

	/* Library threads take no signals meant for the application. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int err = 0;
	for (unsigned i = 0; i < nthreads; i++) {
		if (pthread_create(&eng->threads[i], NULL, copy_worker, sd) != 0) {
			err = -EAGAIN;
			break;
		}
		char name[16];
		snprintf(name, sizeof(name), "uhmm-copy%u", i);
		pthread_setname_np(eng->threads[i], name);
		eng->started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	if (err)
		uhmm__copy_stop(sd);
	return err;
}

void uhmm__copy_stop(struct simdev *sd)
{
	struct copy_engine *eng = &sd->eng;

	pthread_mutex_lock(&eng->lock);
	eng->stop = true;
	pthread_cond_broadcast(&eng->work_cond);
	pthread_mutex_unlock(&eng->lock);
	for (unsigned i = 0; i < eng->started; i++)
		pthread_join(eng->threads[i], NULL);
	eng->started = 0;

	/* No thread left: batches nobody waited for are simply released. */
	engine_free_batches(eng);
	pthread_cond_destroy(&eng->done_cond);
	pthread_cond_destroy(&eng->work_cond);
	pthread_mutex_destroy(&eng->lock);
}

/* ---- submit / wait / fence ---------------------------------------------- */

int uhmm__copy_submit(struct simdev *sd, struct uhmm_copy *copies, size_t n,
		      uhmm_fence_t *fence)
{
	struct copy_engine *eng = &sd->eng;

	if (!fence || (n && !copies))
		return -EINVAL;

	pthread_mutex_lock(&eng->lock);
	struct copy_batch *b = eng->cache;
	if (b) {
		eng->cache = b->hnext;
		eng->ncache--;
	} else {
		pthread_mutex_unlock(&eng->lock);
		b = malloc(sizeof(*b));
		if (!b)
			return -ENOMEM;
		pthread_mutex_lock(&eng->lock);
	}
	if (eng->stop) {
		pthread_mutex_unlock(&eng->lock);
		free(b);
		return -ESHUTDOWN;
	}

	*b = (struct copy_batch){
		.copies = copies,
		.n = n,
		.err_idx = SIZE_MAX,
		.fence = eng->next_fence++,
	};
	struct copy_batch **bucket = fence_bucket_locked(eng, b->fence);
	b->hnext = *bucket;
	*bucket = b;
	if (n > 0) { /* an empty batch is complete at once */
		if (eng->tail)
			eng->tail->qnext = b;
		else
			eng->head = b;
		eng->tail = b;
		eng->busy += n;
		pthread_cond_signal(&eng->work_cond);
	}
	*fence = b->fence;
	pthread_mutex_unlock(&eng->lock);
	return 0;
}

int uhmm__copy_wait(struct simdev *sd, uhmm_fence_t fence)
{
	struct copy_engine *eng = &sd->eng;

	pthread_mutex_lock(&eng->lock);
	struct copy_batch *b = fence_find_locked(eng, fence);
	if (!b || b->waited) {
		pthread_mutex_unlock(&eng->lock);
		return -EINVAL;
	}
	b->waited = true;
	while (b->done < b->n)
		pthread_cond_wait(&eng->done_cond, &eng->lock);
	/* Every status of the batch is final (written before done grew). */
	fence_del_locked(eng, b);
	int ret = b->err;
	if (eng->ncache < BATCH_CACHE_MAX) {
		b->hnext = eng->cache;
		eng->cache = b;
		eng->ncache++;
		b = NULL;
	}
	pthread_mutex_unlock(&eng->lock);
	free(b);
	return ret;
}

int uhmm__copy_fence(struct simdev *sd)
{
	struct copy_engine *eng = &sd->eng;

	pthread_mutex_lock(&eng->lock);
	while (eng->busy > 0)
		pthread_cond_wait(&eng->done_cond, &eng->lock);
	pthread_mutex_unlock(&eng->lock);
	return 0;
}
