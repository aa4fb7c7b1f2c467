/* SPDX-License-Identifier: MIT */
/*
 * pool.c - the reserve: warm pages to move into place, empty slots to move
 * pages out into.
 *
 * Locks: pool->lock (a leaf: nothing is taken or waited for under it).
 * uhmm__pool_get_empty_wait() sleeps on pool->cond *without* holding any
 * page lock's worth of service-thread dependency: the slots it waits for
 * are returned by other migrations, never by the service thread alone.
 *
 * Why a second userfaultfd: UFFDIO_MOVE requires its destination to be
 * registered with the descriptor the ioctl is issued on.  Moving a managed
 * page out (migration to a device) needs a registered destination that is
 * not managed memory; the reserve is it.  Its descriptor asks for
 * UFFD_FEATURE_SIGBUS and no events: nothing may ever fault on an EMPTY
 * slot (that is a uhmm bug, and SIGBUS says so at once), and releasing
 * pages with MADV_DONTNEED sends no event that someone must read.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"

#define RESERVE_BLOCKS 96u /* 192 MiB of address space, not memory */

static inline bool bit(const uint64_t *bm, size_t i)
{
	return (bm[i >> 6] >> (i & 63)) & 1;
}
static inline void set_bit(uint64_t *bm, size_t i, bool v)
{
	if (v)
		bm[i >> 6] |= 1ull << (i & 63);
	else
		bm[i >> 6] &= ~(1ull << (i & 63));
}

int uhmm__pool_init(struct uhmm_ctx *ctx, size_t warm_pages, size_t max_pages)
{
	struct uhmm_pool *pool = &ctx->pool;
	/* Room for the lingering pages beside the EMPTY slots migrations
	 * need; none without a pool (pool_pages 0). */
	size_t max_full = warm_pages == 0 ? 0 : max_pages > warm_pages ? max_pages : warm_pages;
	size_t warm_blocks = (max_full + BATCH_PAGES - 1) / BATCH_PAGES;
	size_t nblocks = RESERVE_BLOCKS + warm_blocks;
	size_t len = nblocks * BATCH_PAGES * PAGE_SIZE;

	memset(pool, 0, sizeof(*pool));
	pool->ruffd = -1;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->cond, NULL);

	/* The reserve, 2 MiB aligned, in uhmm's own address space. */
	char *a = uhmm__umem_map(len, UHMM_HUGE_SIZE, UMEM_NORESERVE);
	if (!a)
		return -ENOMEM;
	pool->base = a;
	pool->nslots = nblocks * BATCH_PAGES;
	/* 4 KiB moves out of a THP would split it each time. */
	madvise(pool->base, len, MADV_NOHUGEPAGE);

	pool->full = uhmm__umem_calloc(pool->nslots / 64, sizeof(uint64_t));
	pool->busy = uhmm__umem_calloc(pool->nslots / 64, sizeof(uint64_t));
	if (!pool->full || !pool->busy)
		goto nomem;

	/* Warm the pool before registering: touching a registered EMPTY slot
	 * would raise SIGBUS. */
	size_t warm = warm_pages < pool->nslots ? warm_pages : pool->nslots;
	if (warm) {
		if (madvise(pool->base, warm * PAGE_SIZE, MADV_POPULATE_WRITE))
			memset(pool->base, 0, warm * PAGE_SIZE);
		for (size_t i = 0; i < warm; i++)
			set_bit(pool->full, i, true);
		pool->nfull_free = warm;
	}
	pool->target_full = warm ? warm : 0;
	pool->max_full = max_full;

	int err = uhmm__uffd_new_fd(ctx->user_mode_only, &pool->ruffd);
	if (err)
		goto fail;
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_SIGBUS };
	if (ioctl(pool->ruffd, UFFDIO_API, &api) < 0) {
		err = -errno;
		goto fail;
	}
	err = uhmm__uffd_register(pool->ruffd, (uintptr_t)pool->base, len);
	if (err)
		goto fail;
	return 0;
nomem:
	err = -ENOMEM;
fail:
	uhmm__pool_fini(pool);
	return err;
}

void uhmm__pool_fini(struct uhmm_pool *pool)
{
	if (pool->ruffd >= 0)
		close(pool->ruffd);
	if (pool->base)
		uhmm__umem_unmap(pool->base, pool->nslots * PAGE_SIZE);
	uhmm__umem_free(pool->full);
	uhmm__umem_free(pool->busy);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->cond);
	pool->base = NULL;
	pool->full = pool->busy = NULL;
	pool->ruffd = -1;
}

/* Find n contiguous free slots of the wanted kind inside one 2 MiB block.
 * Caller holds pool->lock. */
static long find_run_locked(struct uhmm_pool *pool, size_t n, bool want_full)
{
	size_t run = 0;
	for (size_t i = 0; i < pool->nslots; i++) {
		if (!(i & (BATCH_PAGES - 1)))
			run = 0; /* runs stay inside a block */
		/* Skip whole words that cannot help. */
		if (!(i & 63) && run == 0) {
			uint64_t f = pool->full[i >> 6], b = pool->busy[i >> 6];
			uint64_t ok = (want_full ? f : ~f) & ~b;
			if (!ok) {
				i += 63;
				continue;
			}
		}
		if (!bit(pool->busy, i) && bit(pool->full, i) == want_full) {
			if (++run == n)
				return (long)(i + 1 - n);
		} else {
			run = 0;
		}
	}
	return -1;
}

long uhmm__pool_get(struct uhmm_pool *pool, size_t n, bool want_full)
{
	if (!pool->base || n == 0 || n > BATCH_PAGES)
		return -1;
	pthread_mutex_lock(&pool->lock);
	long s = find_run_locked(pool, n, want_full);
	pool->last_use_ns = uhmm__now_ns();
	if (s >= 0) {
		for (size_t i = 0; i < n; i++)
			set_bit(pool->busy, (size_t)s + i, true);
		if (want_full)
			pool->nfull_free -= n;
	}
	pthread_mutex_unlock(&pool->lock);
	return s;
}

long uhmm__pool_get_empty_wait(struct uhmm_pool *pool, size_t n)
{
	if (!pool->base || n == 0 || n > BATCH_PAGES)
		return -1;
	pthread_mutex_lock(&pool->lock);
	long s;
	bool waited = false;
	while ((s = find_run_locked(pool, n, false)) < 0) {
		/* No EMPTY run: release the lingering pages first.  If the
		 * warm pages left are so scattered that no block is free, and
		 * a while of waiting brought no run back, release them too:
		 * warm pages only save time, and the slots they hold may be
		 * the only ones no one will return. */
		size_t keep = pool->nfull_free > pool->target_full ? pool->target_full
				: waited ? 0 : pool->nfull_free;
		if (pool->nfull_free > keep) {
			pthread_mutex_unlock(&pool->lock);
			uhmm__pool_trim(pool, keep);
			pthread_mutex_lock(&pool->lock);
			continue;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		waited = pthread_cond_timedwait(&pool->cond, &pool->lock, &ts) == ETIMEDOUT;
	}
	for (size_t i = 0; i < n; i++)
		set_bit(pool->busy, (size_t)s + i, true);
	pool->last_use_ns = uhmm__now_ns();
	pthread_mutex_unlock(&pool->lock);
	return s;
}

void uhmm__pool_put(struct uhmm_pool *pool, size_t s, bool full)
{
	pthread_mutex_lock(&pool->lock);
	UHMM_ASSERT(bit(pool->busy, s));
	set_bit(pool->busy, s, false);
	set_bit(pool->full, s, full);
	if (full)
		pool->nfull_free++;
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
}

void uhmm__pool_put_run(struct uhmm_pool *pool, size_t s, size_t n, const uint8_t *full)
{
	size_t nfull = 0;
	pthread_mutex_lock(&pool->lock);
	for (size_t i = 0; i < n; i++) {
		UHMM_ASSERT(bit(pool->busy, s + i));
		set_bit(pool->busy, s + i, false);
		set_bit(pool->full, s + i, full[i]);
		nfull += full[i] != 0;
	}
	pool->nfull_free += nfull;
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
}

int uhmm__pool_idle_wait_ms(struct uhmm_pool *pool, uint64_t idle_ns)
{
	pthread_mutex_lock(&pool->lock);
	bool above = pool->base && pool->nfull_free > pool->target_full;
	uint64_t last = pool->last_use_ns;
	pool->idle_armed = above;
	pthread_mutex_unlock(&pool->lock);
	if (!above)
		return -1;
	uint64_t now = uhmm__now_ns();
	if (now - last >= idle_ns)
		return 0;
	return (int)((idle_ns - (now - last)) / 1000000) + 1;
}

bool uhmm__pool_arm_idle(struct uhmm_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	bool arm = !pool->idle_armed && pool->nfull_free > pool->target_full;
	if (arm)
		pool->idle_armed = true;
	pthread_mutex_unlock(&pool->lock);
	return arm;
}

void uhmm__pool_trim(struct uhmm_pool *pool, size_t keep)
{
	if (!pool->base)
		return;
	for (;;) {
		/* Take a block's worth of excess FULL slots, release them
		 * outside the lock, give them back EMPTY. */
		size_t take[BATCH_PAGES], nt = 0;
		pthread_mutex_lock(&pool->lock);
		for (size_t i = pool->nslots; i-- > 0 && nt < BATCH_PAGES &&
					      pool->nfull_free > keep;) {
			if (bit(pool->full, i) && !bit(pool->busy, i)) {
				set_bit(pool->busy, i, true);
				pool->nfull_free--;
				take[nt++] = i;
			}
		}
		pthread_mutex_unlock(&pool->lock);
		if (!nt)
			return;
		/* take[] is descending: release each contiguous run at once. */
		for (size_t k = 0; k < nt;) {
			size_t j = k + 1;
			while (j < nt && take[j] + 1 == take[j - 1])
				j++;
			madvise(pool_slot(pool, take[j - 1]), (j - k) * PAGE_SIZE,
				MADV_DONTNEED);
			k = j;
		}
		pthread_mutex_lock(&pool->lock);
		for (size_t k = 0; k < nt; k++) {
			set_bit(pool->busy, take[k], false);
			set_bit(pool->full, take[k], false);
		}
		pthread_cond_broadcast(&pool->cond);
		pthread_mutex_unlock(&pool->lock);
	}
}
