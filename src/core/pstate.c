/* SPDX-License-Identifier: MIT */
/*
 * pstate.c - page-state arrays, created a 2 MiB block at a time.
 *
 * A range's page state is a directory with one entry per 512 pages; an
 * entry's block (8 KiB: 16 bytes a page) is created the first time uhmm
 * needs the state of one of its pages (a fault, a migration, a lock), so a
 * 1 TiB allocation costs its directory (16 bytes per 2 MiB) until touched,
 * and walks over it (a migration home, a query) skip empty entries.
 *
 * Blocks come from 2 MiB chunks of uhmm's own memory (umem) carved into 256 blocks,
 * process-wide, and go back to a free list when their array dies.  Locks:
 * blk_lock, a leaf (nothing is waited for under it).  Creating a block is a
 * compare-and-swap on the directory entry: two threads creating the same
 * block agree on the first, the loser's goes back to the free list.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/internal.h"

const struct uhmm_page uhmm__page_none;

#define CHUNK_BYTES (2ul << 20)
#define CHUNK_BLOCKS (CHUNK_BYTES / sizeof(struct uhmm_pblk))

/*
 * A chunk is 2 MiB-aligned; its first 8 KiB is its header, the other 255
 * blocks are handed out.  The header holds the per-block flags that have
 * no room in a block (512 pages x 16 bytes exactly): the block of a page
 * is the page's address rounded down to 8 KiB, its header the address
 * rounded down to 2 MiB.  So the flags cost 1/256 of page state, nothing
 * per page, and are found from a page alone (uhmm__page_publish_unlock).
 */
struct chunk_hdr {
	/* uhmm__pblk_huge(): per block of the chunk, block 0 unused */
	_Atomic uint16_t huge[CHUNK_BLOCKS];
	/* uhmm__pblk_cpu_thp(): likewise */
	_Atomic uint8_t cpu_thp[CHUNK_BLOCKS];
};
_Static_assert(sizeof(struct chunk_hdr) <= sizeof(struct uhmm_pblk),
	       "a chunk's header fits in its first block");

/* The header of @p's chunk, and @p's block's index in it. */
static struct chunk_hdr *hdr_of(const struct uhmm_page *p, size_t *blk)
{
	uintptr_t a = (uintptr_t)p;
	*blk = (a & (CHUNK_BYTES - 1)) / sizeof(struct uhmm_pblk);
	return (struct chunk_hdr *)(a & ~(CHUNK_BYTES - 1));
}

_Atomic uint16_t *uhmm__pblk_huge(const struct uhmm_page *p)
{
	size_t i;
	return &hdr_of(p, &i)->huge[i];
}

_Atomic uint8_t *uhmm__pblk_cpu_thp(const struct uhmm_page *p)
{
	size_t i;
	return &hdr_of(p, &i)->cpu_thp[i];
}

static pthread_mutex_t blk_lock = PTHREAD_MUTEX_INITIALIZER;
/* Free blocks, linked through their first 8 bytes. */
static void *blk_free;

static struct uhmm_pblk *blk_alloc(void)
{
	pthread_mutex_lock(&blk_lock);
	if (!blk_free) {
		char *c = uhmm__umem_map(CHUNK_BYTES, CHUNK_BYTES, 0);
		if (!c) {
			pthread_mutex_unlock(&blk_lock);
			fprintf(stderr, "uhmm: out of memory for page state\n");
			abort();
		}
		for (size_t i = CHUNK_BLOCKS; i-- > 1;) {
			void **b = (void **)(c + i * sizeof(struct uhmm_pblk));
			*b = blk_free;
			blk_free = b;
		}
	}
	void **b = blk_free;
	blk_free = *b;
	pthread_mutex_unlock(&blk_lock);
	memset(b, 0, sizeof(struct uhmm_pblk));
	atomic_store_explicit(uhmm__pblk_huge((struct uhmm_page *)(void *)b), 0,
			      memory_order_relaxed);
	atomic_store_explicit(uhmm__pblk_cpu_thp((struct uhmm_page *)(void *)b), 0,
			      memory_order_relaxed);
	return (struct uhmm_pblk *)b;
}

static void blk_release(struct uhmm_pblk *b)
{
	pthread_mutex_lock(&blk_lock);
	*(void **)b = blk_free;
	blk_free = b;
	pthread_mutex_unlock(&blk_lock);
}

struct uhmm_pblk *uhmm__pblk_create(struct uhmm_pagearr *a, size_t i)
{
	struct uhmm_pblk *expect = NULL, *b = blk_alloc();
	if (atomic_compare_exchange_strong_explicit(&a->dir[i].blk, &expect, b,
						    memory_order_acq_rel,
						    memory_order_acquire)) {
		STAT_ADD(a->ctx, metadata_bytes, sizeof(*b));
		return b;
	}
	blk_release(b);
	return expect;
}

struct uhmm_pagearr *uhmm__pagearr_new(struct uhmm_ctx *ctx, size_t n)
{
	size_t nblk = (n + BATCH_PAGES - 1) / BATCH_PAGES;
	size_t bytes = sizeof(struct uhmm_pagearr) + nblk * sizeof(struct uhmm_pdir);
	bytes = (bytes + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
	/* Pages of uhmm's own: zeroed, and the untouched part of a big
	 * directory costs nothing. */
	struct uhmm_pagearr *a = uhmm__umem_map(bytes, 0, UMEM_NORESERVE);
	if (!a)
		return NULL;
	atomic_init(&a->refs, 1);
	a->ctx = ctx;
	a->n = n;
	a->nblk = nblk;
	a->bytes = bytes;
	STAT_ADD(ctx, metadata_dir_bytes, nblk * sizeof(struct uhmm_pdir));
	return a;
}

void uhmm__pagearr_get(struct uhmm_pagearr *a)
{
	atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
}

bool uhmm__pagearr_tryget(struct uhmm_pagearr *a)
{
	long r = atomic_load_explicit(&a->refs, memory_order_relaxed);
	while (r > 0)
		if (atomic_compare_exchange_weak_explicit(&a->refs, &r, r + 1,
							  memory_order_acquire,
							  memory_order_relaxed))
			return true;
	return false;
}

void uhmm__pagearr_put(struct uhmm_pagearr *a)
{
	if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) != 1)
		return;
	struct uhmm_ctx *ctx = a->ctx;
	/* Out of the device LRUs first: an evictor may be looking at the
	 * entries (it takes its reference with uhmm__pagearr_tryget, under
	 * lru_lock, so none can be taken after this). */
	uhmm__lru_forget(ctx, a);
	size_t nb = 0;
	for (size_t i = 0; i < a->nblk; i++) {
		struct uhmm_pblk *b = atomic_load_explicit(&a->dir[i].blk, memory_order_relaxed);
		if (b) {
			/* Read-mostly duplicates of its pages (dup.c) go with
			 * it: the range was unmapped or unregistered, its
			 * mirrors invalidated; the block may serve another
			 * array next. */
			if (atomic_load_explicit(&ctx->rm_any, memory_order_acquire))
				for (size_t k = 0; k < BATCH_PAGES; k++)
					if (atomic_load_explicit(&b->pages[k].word,
								 memory_order_relaxed) & PG_DUP)
						uhmm__dup_free_page(ctx, &b->pages[k]);
			blk_release(b);
			nb++;
		}
	}
	__atomic_fetch_sub(&ctx->stats.metadata_bytes, nb * sizeof(struct uhmm_pblk),
			   __ATOMIC_RELAXED);
	__atomic_fetch_sub(&ctx->stats.metadata_dir_bytes, a->nblk * sizeof(struct uhmm_pdir),
			   __ATOMIC_RELAXED);
	uhmm__umem_unmap(a, a->bytes);
}

/* ---- device huge units ---- */

/* UHMM_DEV_HUGE=0: no device huge pages (every block in 4 KiB pages, as
 * before issue 18: for comparisons).  Read once. */
static int dev_huge_on = -1;

static bool dev_huge_enabled(void)
{
	int v = __atomic_load_n(&dev_huge_on, __ATOMIC_RELAXED);
	if (v < 0) {
		const char *e = getenv("UHMM_DEV_HUGE");
		v = !(e && e[0] == '0' && !e[1]);
		__atomic_store_n(&dev_huge_on, v, __ATOMIC_RELAXED);
	}
	return v;
}

long uhmm__dev_get_huge(struct uhmm_device *d, uint64_t *base)
{
	if (!d->ops->split || d->coh_base || !dev_huge_enabled())
		return 0;
	long got = d->ops->alloc(d->priv, UHMM_HUGE_ORDER, 1, base);
	if (got != 1)
		return 0;
	if (*base % BATCH_PAGES) {
		/* A backend breaking device.h's contract: take no risk. */
		d->ops->free(d->priv, UHMM_HUGE_ORDER, 1, base);
		return 0;
	}
	atomic_fetch_add_explicit(&d->frames_used, BATCH_PAGES, memory_order_relaxed);
	return 1;
}

void uhmm__dev_put_huge(struct uhmm_ctx *ctx, struct uhmm_device *d, uint64_t base)
{
	atomic_fetch_sub_explicit(&d->frames_used, BATCH_PAGES, memory_order_relaxed);
	d->ops->free(d->priv, UHMM_HUGE_ORDER, 1, &base);
	uhmm__dev_freed(ctx);
}

void uhmm__huge_split(struct uhmm_ctx *ctx, struct uhmm_page *p, unsigned dev,
		      uint64_t frame)
{
	_Atomic uint16_t *h = uhmm__pblk_huge(p);
	uint16_t v = atomic_load_explicit(h, memory_order_acquire);
	for (unsigned spin = 0;; spin++) {
		if (v == HUGE_SPLITTING) {
			/* Another page of the block is splitting it: a
			 * backend call that does not sleep.  Its frames must
			 * not be freed before (they are one page still). */
			if (spin > 64)
				sched_yield();
			v = atomic_load_explicit(h, memory_order_acquire);
			continue;
		}
		if (v != dev)
			return;
		if (atomic_compare_exchange_weak_explicit(h, &v, HUGE_SPLITTING,
							  memory_order_acq_rel,
							  memory_order_acquire))
			break;
	}
	uint64_t base = frame & ~(uint64_t)(BATCH_PAGES - 1);
	struct uhmm_device *d = uhmm__dev_get(ctx, dev);
	if (d)
		d->ops->split(d->priv, UHMM_HUGE_ORDER, base);
	STAT_INC(ctx, dev_huge_splits);
	atomic_store_explicit(h, 0, memory_order_release);
}
