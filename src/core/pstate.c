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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/internal.h"

const struct uhmm_page uhmm__page_none;

#define CHUNK_BYTES (2ul << 20)
#define CHUNK_BLOCKS (CHUNK_BYTES / sizeof(struct uhmm_pblk))

static pthread_mutex_t blk_lock = PTHREAD_MUTEX_INITIALIZER;
/* Free blocks, linked through their first 8 bytes. */
static void *blk_free;

static struct uhmm_pblk *blk_alloc(void)
{
	pthread_mutex_lock(&blk_lock);
	if (!blk_free) {
		char *c = uhmm__umem_map(CHUNK_BYTES, 0, 0);
		if (!c) {
			pthread_mutex_unlock(&blk_lock);
			fprintf(stderr, "uhmm: out of memory for page state\n");
			abort();
		}
		for (size_t i = CHUNK_BLOCKS; i-- > 0;) {
			void **b = (void **)(c + i * sizeof(struct uhmm_pblk));
			*b = blk_free;
			blk_free = b;
		}
	}
	void **b = blk_free;
	blk_free = *b;
	pthread_mutex_unlock(&blk_lock);
	memset(b, 0, sizeof(struct uhmm_pblk));
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
