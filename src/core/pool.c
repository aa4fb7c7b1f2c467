/* SPDX-License-Identifier: MIT */
/*
 * pool.c - the reserve: warm pages to move into place, empty slots to move
 * pages out into.
 *
 * Locks: pool->lock (a leaf: nothing is taken or waited for under it).
 * uhmm__pool_get_empty_wait() sleeps on pool->cond *without* holding any
 * page lock's worth of service-thread dependency, and only once the
 * reservation is exhausted, for UHMM_SETTLE_NS at most.
 *
 * Growth: the reserve is one large reservation of address space (about
 * the machine's RAM and swap, MAP_NORESERVE: no memory until a page is
 * moved in), registered once; the slots in use are its first nslots (the
 * extent), which grows by 2 MiB blocks when no EMPTY run is free and
 * shrinks back from the top when idle.  A slot's address never changes
 * (exclusive pages live there, simdev caches it, batches hold indices).
 * The bitmaps and per-block counts live in a NORESERVE mapping of their
 * own (umem, as the reservation) sized for the reservation: memory only for what the extent touched;
 * the counts make the run search skip blocks that cannot help.
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
#include <stddef.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"

#define RESERVE_MIN_BLOCKS 4u /* extent beside the warm pages at creation */
/* FULL pages above the ceiling left to the service thread to release. */
#define TRIM_BACKLOG (32u * BATCH_PAGES)

#define container_of_pool(p) \
	((struct uhmm_ctx *)((char *)(p) - offsetof(struct uhmm_ctx, pool)))

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

/* Publish the gauges (pool->lock held). */
static void gauges_locked(struct uhmm_pool *pool)
{
	struct uhmm_ctx *ctx = container_of_pool(pool);
	__atomic_store_n(&ctx->stats.reserve_slots, (uint64_t)pool->nslots, __ATOMIC_RELAXED);
	__atomic_store_n(&ctx->stats.reserve_slots_used, (uint64_t)pool->nused, __ATOMIC_RELAXED);
}

/* Set slot i's state, keeping the counts (pool->lock held). */
static void slot_set(struct uhmm_pool *pool, size_t i, bool busy, bool full)
{
	size_t blk = i / BATCH_PAGES;
	bool ob = bit(pool->busy, i), of = bit(pool->full, i);
	if (!ob)
		pool->nfree[of][blk]--;
	pool->nused -= ob || of;
	set_bit(pool->busy, i, busy);
	set_bit(pool->full, i, full);
	if (busy)
		set_bit(pool->thp, blk, false); /* uhmm__pool_put_huge sets it again */
	pool->nused += busy || full;
	if (!busy) {
		pool->nfree[full][blk]++;
		if (blk < pool->hint[full])
			pool->hint[full] = blk;
	}
}

/* Add a block of EMPTY slots at the top of the extent (pool->lock held). */
static bool grow_locked(struct uhmm_pool *pool)
{
	if (pool->nslots + BATCH_PAGES > pool->max_slots)
		return false;
	size_t blk = pool->nslots / BATCH_PAGES;
	pool->nfree[0][blk] = BATCH_PAGES;
	pool->nfree[1][blk] = 0;
	pool->nslots += BATCH_PAGES;
	if (blk < pool->hint[0])
		pool->hint[0] = blk;
	gauges_locked(pool);
	return true;
}

/* Drop the top blocks that are wholly free and EMPTY, down to min_slots,
 * and release their page tables and bitmap memory (pool->lock held: a
 * block dropped must not be grown into before its release is done). */
static void shrink_locked(struct uhmm_pool *pool)
{
	size_t old = pool->nslots;
	while (pool->nslots > pool->min_slots &&
	       pool->nfree[0][pool->nslots / BATCH_PAGES - 1] == BATCH_PAGES)
		pool->nslots -= BATCH_PAGES;
	if (pool->nslots == old)
		return;
	for (int k = 0; k < 2; k++)
		if (pool->hint[k] > pool->nslots / BATCH_PAGES)
			pool->hint[k] = pool->nslots / BATCH_PAGES;
	/* Empty slots have no page, but may keep page tables. */
	madvise(pool_slot(pool, pool->nslots), (old - pool->nslots) * PAGE_SIZE, MADV_DONTNEED);
	/* Bitmap words of dropped slots are 0 already: give back whole
	 * pages of them (they read as 0 again). */
	for (int k = 0; k < 2; k++) {
		uint64_t *bm = k ? pool->busy : pool->full;
		uintptr_t lo = ((uintptr_t)(bm + pool->nslots / 64) + PAGE_SIZE - 1) &
			       ~(uintptr_t)(PAGE_SIZE - 1);
		uintptr_t hi = (uintptr_t)(bm + old / 64) & ~(uintptr_t)(PAGE_SIZE - 1);
		if (hi > lo)
			madvise((void *)lo, hi - lo, MADV_DONTNEED);
	}
	gauges_locked(pool);
}

/* The reservation: RAM and swap (exclusive pages are memory the process
 * holds), plus the warm ceiling and the initial extent. */
static size_t reservation_blocks(size_t initial_blocks)
{
	struct sysinfo si;
	uint64_t bytes = 1ull << 32;
	if (sysinfo(&si) == 0)
		bytes = ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
	if (bytes > (1ull << 42)) /* 4 TiB: a bound on address space */
		bytes = 1ull << 42;
	return initial_blocks + (size_t)(bytes / UHMM_HUGE_SIZE) + 1;
}

int uhmm__pool_init(struct uhmm_ctx *ctx, size_t warm_pages, size_t max_pages)
{
	struct uhmm_pool *pool = &ctx->pool;
	/* Room for the lingering pages beside the EMPTY slots migrations
	 * need; none without a pool (pool_pages 0). */
	size_t max_full = warm_pages == 0 ? 0 : max_pages > warm_pages ? max_pages : warm_pages;
	size_t warm_blocks = (warm_pages + BATCH_PAGES - 1) / BATCH_PAGES;
	size_t min_blocks = RESERVE_MIN_BLOCKS + warm_blocks;
	size_t nblocks = reservation_blocks(min_blocks + (max_full + BATCH_PAGES - 1) / BATCH_PAGES);
	size_t len;

	memset(pool, 0, sizeof(*pool));
	pool->ruffd = -1;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->cond, NULL);

	/* The reserve, 2 MiB aligned, in uhmm's own address space.  A
	 * smaller reservation if this one is refused (strict overcommit
	 * counts even NORESERVE mappings). */
	char *a;
	for (;;) {
		len = nblocks * BATCH_PAGES * PAGE_SIZE;
		a = uhmm__umem_map(len, UHMM_HUGE_SIZE, UMEM_NORESERVE);
		if (a || nblocks == min_blocks)
			break;
		nblocks = nblocks / 2 > min_blocks ? nblocks / 2 : min_blocks;
	}
	if (!a)
		return -ENOMEM;
	pool->base = a;
	pool->max_slots = nblocks * BATCH_PAGES;
	/* 4 KiB moves out of a THP would split it each time. */
	madvise(pool->base, len, MADV_NOHUGEPAGE);

	/* Metadata: two bitmaps and two counts per block, for the whole
	 * reservation, touched only as the extent grows. */
	size_t bm = pool->max_slots / 8;
	size_t cnt = (2 * nblocks * sizeof(uint16_t) + 7) & ~(size_t)7;
	size_t thpbm = (nblocks + 63) / 64 * 8;
	pool->meta_len = (2 * bm + cnt + thpbm + PAGE_SIZE - 1) & ~(size_t)(PAGE_SIZE - 1);
	pool->meta = uhmm__umem_map(pool->meta_len, 0, UMEM_NORESERVE);
	if (!pool->meta)
		goto nomem;
	pool->full = pool->meta;
	pool->busy = (uint64_t *)((char *)pool->meta + bm);
	pool->nfree[0] = (uint16_t *)((char *)pool->meta + 2 * bm);
	pool->nfree[1] = pool->nfree[0] + nblocks;
	pool->thp = (uint64_t *)((char *)pool->meta + 2 * bm + cnt);
	pool->pagemap_fd = ctx->pagemap_fd;
	pool->thp_ok = uhmm__thp_probe();
	__atomic_store_n(&ctx->stats.thp_available, (uint64_t)pool->thp_ok, __ATOMIC_RELAXED);
	for (size_t b = 0; b < min_blocks; b++)
		grow_locked(pool);
	pool->min_slots = pool->nslots;

	/* Warm the pool before registering: touching a registered EMPTY slot
	 * would raise SIGBUS. */
	size_t warm = warm_pages < pool->nslots ? warm_pages : pool->nslots;
	if (warm) {
		if (madvise(pool->base, warm * PAGE_SIZE, MADV_POPULATE_WRITE))
			memset(pool->base, 0, warm * PAGE_SIZE);
		for (size_t i = 0; i < warm; i++)
			slot_set(pool, i, false, true);
		pool->nfull_free = warm;
	}
	gauges_locked(pool);
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
		uhmm__umem_unmap(pool->base, pool->max_slots * PAGE_SIZE);
	if (pool->meta)
		uhmm__umem_unmap(pool->meta, pool->meta_len);
	for (unsigned i = 0; i < pool->nbounce; i++)
		uhmm__umem_unmap(pool->bounce[i], BATCH_PAGES * PAGE_SIZE);
	pool->nbounce = 0;
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->cond);
	pool->base = NULL;
	pool->meta = NULL;
	pool->full = pool->busy = NULL;
	pool->ruffd = -1;
}

/* Find n contiguous free slots of the wanted kind inside one 2 MiB block,
 * the lowest such (the extent's top empties first, so it can shrink).
 * Blocks whose count of free slots of the kind is below n are skipped
 * whole: the search costs a look per block, not per slot.  Caller holds
 * pool->lock. */
static long find_run_locked(struct uhmm_pool *pool, size_t n, bool want_full,
			    bool avoid_thp)
{
	uint16_t *nf = pool->nfree[want_full];
	size_t nblocks = pool->nslots / BATCH_PAGES;
	for (size_t b = pool->hint[want_full]; b < nblocks; b++) {
		if (nf[b] == 0 && b == pool->hint[want_full]) {
			pool->hint[want_full] = b + 1; /* nothing of the kind below */
			continue;
		}
		if (nf[b] < n || (avoid_thp && bit(pool->thp, b)))
			continue;
		size_t run = 0;
		for (size_t i = b * BATCH_PAGES; i < (b + 1) * BATCH_PAGES; i++) {
			/* Skip whole words that cannot help. */
			if (!(i & 63) && run == 0) {
				uint64_t f = pool->full[i >> 6], bz = pool->busy[i >> 6];
				uint64_t ok = (want_full ? f : ~f) & ~bz;
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
	}
	return -1;
}

/* Take the run at s (pool->lock held). */
static void take_locked(struct uhmm_pool *pool, size_t s, size_t n, bool full)
{
	for (size_t i = 0; i < n; i++)
		slot_set(pool, s + i, true, full);
	if (full)
		pool->nfull_free -= n;
	pool->last_use_ns = uhmm__now_ns();
	gauges_locked(pool);
}

long uhmm__pool_get(struct uhmm_pool *pool, size_t n, bool want_full)
{
	if (!pool->base || n == 0 || n > BATCH_PAGES)
		return -1;
	pthread_mutex_lock(&pool->lock);
	/* A part of a warm THP block only if nothing else fits: a 4 KiB move
	 * out of it splits the huge page. */
	long s = find_run_locked(pool, n, want_full, want_full);
	if (s < 0 && want_full)
		s = find_run_locked(pool, n, true, false);
	if (s < 0 && !want_full && grow_locked(pool))
		s = find_run_locked(pool, n, false, false);
	if (s >= 0)
		take_locked(pool, (size_t)s, n, want_full);
	else
		pool->last_use_ns = uhmm__now_ns();
	pthread_mutex_unlock(&pool->lock);
	return s;
}

long uhmm__pool_get_empty_wait(struct uhmm_pool *pool, size_t n)
{
	if (!pool->base || n == 0 || n > BATCH_PAGES)
		return -1;
	pthread_mutex_lock(&pool->lock);
	long s;
	uint64_t t0 = 0;
	while ((s = find_run_locked(pool, n, false, false)) < 0) {
		if (grow_locked(pool))
			continue;
		/* The reservation is exhausted (the machine's memory is in
		 * the reserve): release the warm pages, then wait a bounded
		 * while for slots to come back. */
		if (pool->nfull_free) {
			pthread_mutex_unlock(&pool->lock);
			uhmm__pool_trim(pool, 0);
			pthread_mutex_lock(&pool->lock);
			if ((s = find_run_locked(pool, n, false, false)) >= 0)
				break;
		}
		if (uhmm__settle_expired(&t0))
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&pool->cond, &pool->lock, &ts);
	}
	if (s >= 0)
		take_locked(pool, (size_t)s, n, false);
	pthread_mutex_unlock(&pool->lock);
	return s;
}

/* Something for the idle release to do (pool->lock held). */
static bool idle_work_locked(struct uhmm_pool *pool)
{
	return pool->base &&
	       (pool->nfull_free > pool->target_full || pool->nbounce ||
		(pool->nslots > pool->min_slots &&
		 pool->nfree[0][pool->nslots / BATCH_PAGES - 1] == BATCH_PAGES));
}

/* The service thread does not watch the pool and there is idle work:
 * arm it (pool->lock held); the caller kicks it after the unlock. */
static bool arm_locked(struct uhmm_pool *pool)
{
	if (pool->idle_armed || !idle_work_locked(pool))
		return false;
	pool->idle_armed = true;
	return true;
}

static void kick(struct uhmm_pool *pool, bool arm)
{
	if (arm)
		uhmm__service_kick(container_of_pool(pool));
}

void uhmm__pool_put(struct uhmm_pool *pool, size_t s, bool full)
{
	pthread_mutex_lock(&pool->lock);
	UHMM_ASSERT(s < pool->nslots && bit(pool->busy, s));
	slot_set(pool, s, false, full);
	if (full)
		pool->nfull_free++;
	gauges_locked(pool);
	bool arm = arm_locked(pool);
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	kick(pool, arm);
}

void uhmm__pool_put_run(struct uhmm_pool *pool, size_t s, size_t n, const uint8_t *full)
{
	size_t nfull = 0;
	pthread_mutex_lock(&pool->lock);
	for (size_t i = 0; i < n; i++) {
		UHMM_ASSERT(s + i < pool->nslots && bit(pool->busy, s + i));
		slot_set(pool, s + i, false, full[i]);
		nfull += full[i] != 0;
	}
	pool->nfull_free += nfull;
	gauges_locked(pool);
	bool arm = arm_locked(pool);
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	kick(pool, arm);
}

int uhmm__pool_idle_wait_ms(struct uhmm_pool *pool, uint64_t idle_ns)
{
	pthread_mutex_lock(&pool->lock);
	bool above = idle_work_locked(pool);
	bool over = pool->base && pool->nfull_free > pool->max_full;
	uint64_t last = pool->last_use_ns;
	pool->idle_armed = above;
	pthread_mutex_unlock(&pool->lock);
	if (over)
		return 0; /* above the ceiling: release now (release_excess) */
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
	bool arm = arm_locked(pool);
	pthread_mutex_unlock(&pool->lock);
	return arm;
}

void uhmm__pool_release_excess(struct uhmm_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	size_t nfull = pool->nfull_free;
	pthread_mutex_unlock(&pool->lock);
	if (nfull <= pool->max_full)
		return;
	/* The service thread releases what is above the ceiling, on the
	 * other CPU: freeing 512 pages costs a third of a 2 MiB copy, which
	 * the migrating thread paid after each batch.  If it falls behind,
	 * the migration helps, so no more than TRIM_BACKLOG pages linger. */
	uhmm__service_kick(container_of_pool(pool));
	if (nfull > pool->max_full + TRIM_BACKLOG)
		uhmm__pool_trim(pool, pool->max_full + TRIM_BACKLOG);
}

void uhmm__pool_release_idle(struct uhmm_pool *pool)
{
	if (!pool->base)
		return;
	pthread_mutex_lock(&pool->lock);
	bool over = pool->nfull_free > pool->max_full;
	pthread_mutex_unlock(&pool->lock);
	if (over) {
		/* In use, but above the ceiling: only the excess goes. */
		uhmm__pool_trim(pool, pool->max_full);
		return;
	}
	uhmm__pool_trim(pool, pool->target_full);
	void *b[4];
	pthread_mutex_lock(&pool->lock);
	unsigned nb = pool->nbounce;
	memcpy(b, pool->bounce, sizeof(b));
	pool->nbounce = 0;
	shrink_locked(pool);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned i = 0; i < nb; i++)
		uhmm__umem_unmap(b[i], BATCH_PAGES * PAGE_SIZE);
}

char *uhmm__pool_bounce_get(struct uhmm_pool *pool)
{
	char *b = NULL;
	pthread_mutex_lock(&pool->lock);
	if (pool->nbounce)
		b = pool->bounce[--pool->nbounce];
	pool->last_use_ns = uhmm__now_ns();
	pthread_mutex_unlock(&pool->lock);
	if (b)
		return b;
	b = uhmm__umem_map(BATCH_PAGES * PAGE_SIZE, 0, 0);
	if (!b)
		return NULL;
	/* Populated at once: no page fault in the copy engine (without
	 * MADV_POPULATE_WRITE, the copy faults them in the first time). */
	(void)madvise(b, BATCH_PAGES * PAGE_SIZE, MADV_POPULATE_WRITE);
	return b;
}

void uhmm__pool_bounce_put(struct uhmm_pool *pool, char *b)
{
	pthread_mutex_lock(&pool->lock);
	bool kept = pool->nbounce < sizeof(pool->bounce) / sizeof(pool->bounce[0]);
	if (kept)
		pool->bounce[pool->nbounce++] = b;
	bool arm = arm_locked(pool);
	pthread_mutex_unlock(&pool->lock);
	kick(pool, arm);
	if (!kept)
		uhmm__umem_unmap(b, BATCH_PAGES * PAGE_SIZE);
}

void uhmm__pool_trim(struct uhmm_pool *pool, size_t keep)
{
	if (!pool->base)
		return;
	for (;;) {
		/* Take a block's worth of excess FULL slots, from the top,
		 * release them outside the lock, give them back EMPTY. */
		size_t take[BATCH_PAGES], nt = 0;
		pthread_mutex_lock(&pool->lock);
		/* Warm THP blocks last: they bring a whole block home as one
		 * PMD ("2 MiB on the CPU side"). */
		for (int pass = 0; pass < 2; pass++)
		for (size_t b = pool->nslots / BATCH_PAGES; b-- > 0 && nt < BATCH_PAGES &&
							   pool->nfull_free > keep;) {
			if (!pool->nfree[1][b] || bit(pool->thp, b) != (pass == 1))
				continue;
			for (size_t i = (b + 1) * BATCH_PAGES; i-- > b * BATCH_PAGES &&
							       nt < BATCH_PAGES &&
							       pool->nfull_free > keep;) {
				if (bit(pool->full, i) && !bit(pool->busy, i)) {
					slot_set(pool, i, true, true);
					pool->nfull_free--;
					take[nt++] = i;
				}
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
		for (size_t k = 0; k < nt; k++)
			slot_set(pool, take[k], false, false);
		gauges_locked(pool);
		pthread_cond_broadcast(&pool->cond);
		pthread_mutex_unlock(&pool->lock);
	}
}

/* ---- transparent huge pages (docs/ARCHITECTURE.md "2 MiB on the CPU side") ---- */

static bool sysfs_word(const char *path, const char *want)
{
	char buf[128];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	/* The setting in force is the bracketed word: "always [madvise] never" */
	char *l = strchr(buf, '['), *r = l ? strchr(l, ']') : NULL;
	if (!r)
		return false;
	*r = 0;
	return strstr(want, l + 1) != NULL;
}

bool uhmm__thp_probe(void)
{
	/* Per process, but a prctl can change it: looked at for each
	 * context (cheap). */
#ifndef PR_GET_THP_DISABLE
#define PR_GET_THP_DISABLE 42
#endif
	if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1)
		return false;
	/* enabled "always" or "madvise" (uhmm asks with MADV_HUGEPAGE);
	 * defrag "never" still gives THPs when free ones exist. */
	return sysfs_word("/sys/kernel/mm/transparent_hugepage/enabled", "always madvise");
}

bool uhmm__thp_mapped(int pagemap_fd, uintptr_t a)
{
	if (pagemap_fd < 0)
		return false;
	struct page_region v[2];
	struct pm_scan_arg arg = {
		.size = sizeof(arg), .start = a, .end = a + UHMM_HUGE_SIZE,
		.vec = (uintptr_t)v, .vec_len = 2,
		.category_anyof_mask = PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_PRESENT | PAGE_IS_HUGE,
	};
	long n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
	return n == 1 && v[0].start == a && v[0].end == a + UHMM_HUGE_SIZE &&
	       (v[0].categories & PAGE_IS_HUGE);
}

void uhmm__pool_clear_pmd(struct uhmm_pool *pool, size_t s)
{
	/* EMPTY slots have no page; this frees the empty page table 4 KiB
	 * moves left (Linux 6.14+ with CONFIG_PT_RECLAIM: a MADV_DONTNEED of
	 * a whole aligned 2 MiB frees its PTE table).  Measured on 6.18:
	 * without it, a THP moved in is split into 512 PTEs. */
	(void)madvise(pool_slot(pool, s), UHMM_HUGE_SIZE, MADV_DONTNEED);
}

/* A fresh THP (zeroed by the kernel) moved into EMPTY block s.  True if
 * the block is one PMD-mapped THP now; false: nothing is in it. */
static bool fill_huge(struct uhmm_pool *pool, size_t s)
{
	char *t = uhmm__umem_map(UHMM_HUGE_SIZE, UHMM_HUGE_SIZE, UMEM_NORESERVE);
	if (!t)
		return false;
	bool ok = false;
	if (madvise(t, UHMM_HUGE_SIZE, MADV_HUGEPAGE) == 0 &&
	    madvise(t, UHMM_HUGE_SIZE, MADV_POPULATE_WRITE) == 0 &&
	    uhmm__thp_mapped(pool->pagemap_fd, (uintptr_t)t)) {
		uhmm__pool_clear_pmd(pool, s);
		size_t done = 0;
		long ret = uhmm__uffd_move(pool->ruffd, (uintptr_t)pool_slot(pool, s), (uintptr_t)t,
					   UHMM_HUGE_SIZE, 0, &done);
		ok = ret >= 0 && done == UHMM_HUGE_SIZE &&
		     uhmm__thp_mapped(pool->pagemap_fd, (uintptr_t)pool_slot(pool, s));
		if (!ok && done)
			(void)madvise(pool_slot(pool, s), UHMM_HUGE_SIZE, MADV_DONTNEED);
	}
	uhmm__umem_unmap(t, UHMM_HUGE_SIZE);
	return ok;
}

long uhmm__pool_get_huge(struct uhmm_pool *pool, bool *fresh, bool make)
{
	if (fresh)
		*fresh = false;
	/* pool_pages 0: no warm pool, installs copy from a bounce buffer
	 * (UFFDIO_COPY), huge or not. */
	if (!pool->base || !pool->thp_ok || pool->max_full == 0)
		return -1;
	pthread_mutex_lock(&pool->lock);
	size_t nblocks = pool->nslots / BATCH_PAGES;
	for (size_t b = 0; b < nblocks; b++) {
		if (!bit(pool->thp, b) || pool->nfree[1][b] != BATCH_PAGES)
			continue;
		take_locked(pool, b * BATCH_PAGES, BATCH_PAGES, true);
		pthread_mutex_unlock(&pool->lock);
		/* Still one PMD?  (A THP can be split behind our back only
		 * by memory pressure; then it is 512 warm pages, still
		 * right, just not huge.) */
		return (long)(b * BATCH_PAGES);
	}
	pthread_mutex_unlock(&pool->lock);
	if (!make)
		return -1;
	/* No warm one: a fresh THP into an EMPTY block. */
	long s = uhmm__pool_get(pool, BATCH_PAGES, false);
	if (s < 0)
		return -1;
	if (!fill_huge(pool, (size_t)s)) {
		uint8_t none[BATCH_PAGES] = { 0 };
		uhmm__pool_put_run(pool, (size_t)s, BATCH_PAGES, none);
		return -1;
	}
	if (fresh)
		*fresh = true; /* zeroed by the kernel */
	return s;
}

void uhmm__pool_put_huge(struct uhmm_pool *pool, size_t s)
{
	bool huge = uhmm__thp_mapped(pool->pagemap_fd, (uintptr_t)pool_slot(pool, s));
	pthread_mutex_lock(&pool->lock);
	UHMM_ASSERT(s % BATCH_PAGES == 0 && s + BATCH_PAGES <= pool->nslots);
	for (size_t i = s; i < s + BATCH_PAGES; i++) {
		UHMM_ASSERT(bit(pool->busy, i));
		slot_set(pool, i, false, true);
	}
	pool->nfull_free += BATCH_PAGES;
	if (huge)
		set_bit(pool->thp, s / BATCH_PAGES, true);
	gauges_locked(pool);
	bool arm = arm_locked(pool);
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	kick(pool, arm);
}
