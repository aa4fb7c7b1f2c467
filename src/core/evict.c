/* SPDX-License-Identifier: MIT */
/*
 * evict.c - device memory as a cache: the device LRUs and the victim walk.
 *
 * Each device has an LRU of the 2 MiB blocks of page state (struct
 * uhmm_pdir) that may have pages on it.  A block becomes the device's most
 * recently used when a migration toward the device allocates frames for it
 * (uhmm__lru_touch, called while the migrating thread holds the block's
 * pages, so a request that waits for memory sees a busy victim, not none).
 * Nothing removes a block when its pages leave the device by other ways (a
 * CPU fault, an munmap): the walk finds such a block empty and drops it.
 * So the list is exact about what may be there and approximate about order,
 * the way UVM's root-chunk LRU is updated on allocation, not on access.
 *
 * The victim rule (docs/ARCHITECTURE.md, "Eviction"): a request that needs
 * frames on a full device walks its LRU from the head, skipping blocks that
 * overlap the request itself, and evicts whole blocks: each victim page is
 * taken with *trylock* (uhmm__evict_batch), so an evictor never waits for a
 * page lock while it holds its own; a busy page is skipped and counted.
 * Evicting is a migration home with the usual order: lock, invalidate (the
 * device fences), copy, install by the service thread, publish (which
 * releases the frame), unlock.  A frame is reused only after its
 * publication, after the fence.  The caller decides what an empty-handed
 * walk means (migrate.c: fail when nothing could be evicted, back off and
 * wait when victims were busy).
 *
 * Locks: lru_lock, a leaf: held only to look at and relink entries, and to
 * take a reference on a block's array (uhmm__pagearr_tryget: an array whose
 * last reference is gone is being freed, and uhmm__lru_forget is waiting
 * for lru_lock to unlink it).  Ranges are found under ranges_lock after
 * lru_lock is dropped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "util/futex.h"

static void lru_unlink_locked(struct uhmm_lru *l, struct uhmm_lru_node *n)
{
	if (n->prev)
		n->prev->next = n->next;
	else
		l->head = n->next;
	if (n->next)
		n->next->prev = n->prev;
	else
		l->tail = n->prev;
	n->prev = n->next = NULL;
	l->n--;
}

static void lru_append_locked(struct uhmm_lru *l, struct uhmm_lru_node *n)
{
	n->next = NULL;
	n->prev = l->tail;
	if (l->tail)
		l->tail->next = n;
	else
		l->head = n;
	l->tail = n;
	l->n++;
}

/* Take n out of its block's chain. */
static void blk_unchain_locked(struct uhmm_lru_node *n)
{
	struct uhmm_lru_node **pp = &n->arr->dir[n->blk].lru;
	while (*pp != n)
		pp = &(*pp)->bnext;
	*pp = n->bnext;
}

void uhmm__lru_touch(struct uhmm_ctx *ctx, struct uhmm_pagearr *a, size_t blk,
		     unsigned dev, uintptr_t va)
{
	uint64_t now = uhmm__now_ns();
	pthread_mutex_lock(&ctx->lru_lock);
	struct uhmm_lru *l = &ctx->lru[dev];
	struct uhmm_lru_node *n = a->dir[blk].lru;
	while (n && n->dev != dev)
		n = n->bnext;
	if (n) {
		n->stamp = ++l->clock;
		n->va = va;
		n->last_ns = now;
		n->uses++;
		if (l->tail != n) {
			lru_unlink_locked(l, n);
			lru_append_locked(l, n);
		}
	} else if ((n = uhmm__umem_calloc(1, sizeof(*n)))) {
		/* (Out of memory: the block is not evictable until it is
		 * touched again; nothing is lost.) */
		n->arr = a;
		n->blk = blk;
		n->dev = dev;
		n->stamp = ++l->clock;
		n->va = va;
		n->first_ns = n->last_ns = now;
		n->uses = 1;
		n->bnext = a->dir[blk].lru;
		a->dir[blk].lru = n;
		lru_append_locked(l, n);
	}
	pthread_mutex_unlock(&ctx->lru_lock);
}

void uhmm__lru_forget(struct uhmm_ctx *ctx, struct uhmm_pagearr *a)
{
	pthread_mutex_lock(&ctx->lru_lock);
	for (size_t b = 0; b < a->nblk; b++) {
		struct uhmm_lru_node *n = a->dir[b].lru;
		while (n) {
			struct uhmm_lru_node *next = n->bnext;
			lru_unlink_locked(&ctx->lru[n->dev], n);
			uhmm__umem_free(n);
			n = next;
		}
		a->dir[b].lru = NULL;
	}
	pthread_mutex_unlock(&ctx->lru_lock);
}

void uhmm__lru_drop_dev(struct uhmm_ctx *ctx, unsigned dev)
{
	pthread_mutex_lock(&ctx->lru_lock);
	struct uhmm_lru *l = &ctx->lru[dev];
	while (l->head) {
		struct uhmm_lru_node *n = l->head;
		lru_unlink_locked(l, n);
		blk_unchain_locked(n);
		uhmm__umem_free(n);
	}
	pthread_mutex_unlock(&ctx->lru_lock);
}

/* Drop the block's entry if it is still in the list (another walk may
 * have) and nobody touched it since the walk saw its @stamp: a migration
 * that touched it meanwhile may have put pages on the device that the
 * walk did not see. */
static void lru_drop(struct uhmm_ctx *ctx, struct uhmm_pagearr *a, size_t blk,
		     unsigned dev, uint64_t stamp)
{
	pthread_mutex_lock(&ctx->lru_lock);
	struct uhmm_lru_node *n = a->dir[blk].lru;
	while (n && n->dev != dev)
		n = n->bnext;
	if (n && n->stamp == stamp) {
		lru_unlink_locked(&ctx->lru[dev], n);
		blk_unchain_locked(n);
		uhmm__umem_free(n);
	}
	pthread_mutex_unlock(&ctx->lru_lock);
}

#define MAX_PIECES 8

static bool overlaps_blk(const struct uhmm_range *x, const struct uhmm_pagearr *a,
			 size_t lo, size_t hi)
{
	return x->arr == a && x->first < hi && x->first + x->npages > lo;
}

/*
 * The live ranges mapping pages of block blk of a, with a reference each:
 * piece k is pages [idx[k], idx[k] + n[k]) of r[k].  *hidden is set when
 * pages of the block may be mapped where the walk cannot reach them now: a
 * piece in limbo (an mremap's destination displaced it; its own event
 * brings it back, device pages and all), or more pieces than MAX_PIECES.
 * Such a block stays listed: dropping it would leave those pages on the
 * device with no entry leading to them.
 */
static size_t find_pieces(struct uhmm_ctx *ctx, struct uhmm_pagearr *a, size_t blk,
			  struct uhmm_range **r, size_t *idx, size_t *n, bool *hidden)
{
	size_t lo = blk * BATCH_PAGES, hi = lo + BATCH_PAGES, k = 0;
	*hidden = false;
	pthread_rwlock_rdlock(&ctx->ranges_lock);
	for (size_t i = 0; i < ctx->nlimbo && !*hidden; i++)
		*hidden = overlaps_blk(ctx->limbo[i], a, lo, hi);
	for (size_t i = 0; i < ctx->nranges; i++) {
		struct uhmm_range *x = ctx->ranges[i];
		if (!overlaps_blk(x, a, lo, hi))
			continue;
		if (k == MAX_PIECES) {
			*hidden = true;
			break;
		}
		size_t s = x->first > lo ? x->first : lo;
		size_t e = x->first + x->npages < hi ? x->first + x->npages : hi;
		atomic_fetch_add_explicit(&x->refs, 1, memory_order_relaxed);
		r[k] = x;
		idx[k] = s - x->first;
		n[k] = e - s;
		k++;
	}
	pthread_rwlock_unlock(&ctx->ranges_lock);
	return k;
}

/* A candidate of a walk: the block (a reference on its array held) and
 * its entry's stamp when the walk took it. */
struct cand {
	struct uhmm_pagearr *a;
	size_t blk;
	uint64_t stamp;
};

/* Take the candidates (the whole list, or its cap / 2 least and most
 * recently used entries), least recently used first; at most @cap. */
static size_t snapshot(struct uhmm_ctx *ctx, unsigned dev, struct cand *c,
		       struct uhmm_pol_block *pb, struct uhmm_victim *v, size_t cap)
{
	size_t k = 0;
	pthread_mutex_lock(&ctx->lru_lock);
	struct uhmm_lru *l = &ctx->lru[dev];
	size_t half = cap / 2, i = 0;
	for (struct uhmm_lru_node *n = l->head; n && k < cap; n = n->next, i++) {
		if (half && l->n > cap && i == half) {
			/* Skip to the most recent half. */
			n = l->tail;
			for (size_t j = 1; j < half; j++)
				n = n->prev;
			i = l->n - half;
		}
		if (!uhmm__pagearr_tryget(n->arr)) {
			/* Being freed: uhmm__lru_forget unlinks it, and its
			 * frames were released or are about to be. */
			v->inflight++;
			continue;
		}
		c[k] = (struct cand){ n->arr, n->blk, n->stamp };
		pb[k] = (struct uhmm_pol_block){ .addr = n->va, .last_use = n->last_ns,
						 .first_use = n->first_ns, .uses = n->uses };
		k++;
	}
	pthread_mutex_unlock(&ctx->lru_lock);
	/* Advice, after lru_lock (both are leaves). */
	for (size_t j = 0; j < k; j++) {
		uintptr_t lo = 0, hi = UINTPTR_MAX;
		if (uhmm__advice_preferred(ctx, pb[j].addr, &lo, &hi) == dev + 1)
			pb[j].flags |= UHMM_POL_BLK_PREFERRED;
	}
	return k;
}

/* Move the entry of block blk of a to the tail, if nobody touched it since
 * @stamp: a block kept busy does not stay in front of the next walk. */
static void lru_rotate(struct uhmm_ctx *ctx, struct uhmm_pagearr *a, size_t blk,
		       unsigned dev, uint64_t stamp)
{
	pthread_mutex_lock(&ctx->lru_lock);
	struct uhmm_lru_node *n = a->dir[blk].lru;
	while (n && n->dev != dev)
		n = n->bnext;
	if (n && n->stamp == stamp && ctx->lru[dev].tail != n) {
		lru_unlink_locked(&ctx->lru[dev], n);
		lru_append_locked(&ctx->lru[dev], n);
	}
	pthread_mutex_unlock(&ctx->lru_lock);
}

/* Evict what of candidate c is on the device; true if c is to be dropped
 * from the list (nothing of it left there, nobody holding a page of it). */
static bool evict_one(struct uhmm_ctx *ctx, struct uhmm_victim *v, const struct cand *c,
		      uintptr_t xlo, uintptr_t xhi, size_t *blocks)
{
	struct uhmm_range *r[MAX_PIECES];
	size_t idx[MAX_PIECES], n[MAX_PIECES];
	bool hidden;
	size_t np = find_pieces(ctx, c->a, c->blk, r, idx, n, &hidden);
	size_t moved0 = v->moved, seen0 = v->seen, busy0 = v->busy;
	size_t inflight0 = v->inflight;
	/* No live range maps the block (an munmap or mremap on its way):
	 * pages it may have on the device are released by the event, soon;
	 * the request waits for that, it does not fail.  Pages the walk
	 * cannot reach now (limbo) come back: both count as in flight, and
	 * the second keeps the block listed. */
	if (!np || hidden)
		v->inflight++;
	bool own = false;
	for (size_t k = 0; k < np; k++) {
		uintptr_t va = r[k]->start + (idx[k] << PAGE_SHIFT);
		uintptr_t vend = va + (n[k] << PAGE_SHIFT);
		if (va < xhi && xlo < vend) {
			own = true; /* the request's own: never a victim */
			continue;
		}
		/* Batches stop at 2 MiB boundaries of the address. */
		for (size_t i = idx[k]; i < idx[k] + n[k];) {
			uintptr_t x = r[k]->start + (i << PAGE_SHIFT);
			size_t room = (UHMM_HUGE_SIZE - (x & (UHMM_HUGE_SIZE - 1))) >> PAGE_SHIFT;
			size_t m = idx[k] + n[k] - i < room ? idx[k] + n[k] - i : room;
			(void)uhmm__evict_batch(ctx, r[k], i, m, v);
			i += m;
		}
	}
	uhmm__trace_evict(ctx, v->dev, np ? r[0]->start + (idx[0] << PAGE_SHIFT) : 0, (v->moved - moved0) << PAGE_SHIFT);
	for (size_t k = 0; k < np; k++)
		uhmm__range_put(r[k]);
	if (v->moved != moved0)
		(*blocks)++;
	/* Nothing of it on the device any more, and nobody holding a page of
	 * it (a migration toward the device holds its pages before they land
	 * there, after it touched the block): out of the list. */
	return !own && !hidden && v->seen == seen0 && v->busy == busy0 &&
	       (v->inflight == inflight0 || !np);
}

/*
 * The victim walk.  The device's listed blocks are offered to the policy
 * (uhmm__pol_evict_order: least recently used first by default), then taken
 * in its order until @want pages moved, each block at most once.
 */
size_t uhmm__evict(struct uhmm_ctx *ctx, struct uhmm_victim *v, size_t want,
		   uintptr_t xlo, uintptr_t xhi)
{
	uint64_t t0 = uhmm__now_ns();
	/* Read-mostly duplicates first (dup.c): dropping one costs no copy.
	 * Counted as progress (allocate again), not as evicted pages.  Those
	 * of the request's own pages too: it collapsed its own already (a
	 * migration that moves them), or they are other pages of its
	 * blocks. */
	size_t dropped = v->poison ? 0 : uhmm__dup_reclaim(ctx, v->dev, want, 0, 0,
							  v->lo, v->hi);
	v->moved += dropped;
	if (dropped >= want)
		return v->moved;
	want -= dropped;
	size_t start_moved = v->moved, start_busy = v->busy;
	size_t blocks = 0;
	/* Sized by the list as it is (a few blocks on a small device), not
	 * for UHMM_POL_MAX_CAND: 68 KiB of arrays for every call was a
	 * mapping and its page faults, per eviction, on the fault path.
	 * Entries listed after this look wait for the next walk. */
	pthread_mutex_lock(&ctx->lru_lock);
	size_t cap = ctx->lru[v->dev].n;
	pthread_mutex_unlock(&ctx->lru_lock);
	if (cap > UHMM_POL_MAX_CAND)
		cap = UHMM_POL_MAX_CAND;
	struct cand *c = NULL;
	struct uhmm_pol_block *pb = NULL;
	uint32_t *order = NULL;
	if (cap) {
		c = uhmm__umem_malloc(cap * sizeof(*c));
		pb = uhmm__umem_malloc(cap * sizeof(*pb));
		order = uhmm__umem_malloc(cap * sizeof(*order));
	}
	size_t nc = c && pb && order ? snapshot(ctx, v->dev, c, pb, v, cap) : 0;
	if (nc)
		uhmm__pol_evict_order(ctx, v->dev, (uint64_t)want << PAGE_SHIFT, pb, nc, order);
	size_t i = 0;
	for (; i < nc && v->moved - start_moved < want; i++) {
		const struct cand *x = &c[order[i]];
		if (evict_one(ctx, v, x, xlo, xhi, &blocks))
			lru_drop(ctx, x->a, x->blk, v->dev, x->stamp);
		else
			lru_rotate(ctx, x->a, x->blk, v->dev, x->stamp);
	}
	for (size_t k = 0; k < nc; k++)
		uhmm__pagearr_put(c[k].a);
	uhmm__umem_free(c);
	uhmm__umem_free(pb);
	uhmm__umem_free(order);
	size_t moved = v->moved - start_moved;
	if (moved && !v->poison) { /* (lost pages are not evicted ones) */
		struct uhmm_device *d = uhmm__dev_get(ctx, v->dev);
		if (d)
			atomic_fetch_add_explicit(&d->evicted_pages, moved, memory_order_relaxed);
		STAT_ADD(ctx, evicted_pages, moved);
		STAT_ADD(ctx, evicted_bytes, moved << PAGE_SHIFT);
		STAT_ADD(ctx, evicted_blocks, blocks);
	}
	STAT_ADD(ctx, evict_busy, v->busy - start_busy);
	STAT_ADD(ctx, evict_ns, uhmm__now_ns() - t0);
	return v->moved;
}

/*
 * Frames of device @dev that uhmm holds beyond the pages of the request's
 * own blocks: the blocks of page state that the live ranges over
 * [xlo, xhi) overlap, whose pages are never the request's victims
 * (evict_one).  Counted whole (a block shared by two ranges, each piece
 * of it: counted more than once, which errs toward failing at once, as
 * before).  The page words are read without locks, after which
 * frames_used: a page published meanwhile came from frames that were in
 * flight (the caller looked at those already).
 */
bool uhmm__dev_frames_elsewhere(struct uhmm_ctx *ctx, unsigned dev, uintptr_t xlo,
				uintptr_t xhi)
{
	struct uhmm_device *d = uhmm__dev_get(ctx, dev);
	if (!d || !atomic_load_explicit(&d->frames_used, memory_order_acquire))
		return false;
	uint64_t own = 0;
	const struct uhmm_pagearr *la = NULL;
	size_t lb = SIZE_MAX;
	pthread_rwlock_rdlock(&ctx->ranges_lock);
	for (size_t k = 0; k < ctx->nranges && xlo < xhi; k++) {
		const struct uhmm_range *x = ctx->ranges[k];
		uintptr_t s = x->start > xlo ? x->start : xlo;
		uintptr_t e = range_end(x) < xhi ? range_end(x) : xhi;
		if (s >= e)
			continue;
		size_t b0 = (x->first + ((s - x->start) >> PAGE_SHIFT)) / BATCH_PAGES;
		size_t b1 = (x->first + ((e - x->start - 1) >> PAGE_SHIFT)) / BATCH_PAGES;
		for (size_t b = b0; b <= b1; b++) {
			if (x->arr == la && b == lb)
				continue; /* the previous piece's last block */
			la = x->arr;
			lb = b;
			const struct uhmm_pblk *pb =
				atomic_load_explicit(&x->arr->dir[b].blk, memory_order_acquire);
			for (size_t i = 0; pb && i < BATCH_PAGES; i++)
				own += pg_ondev(atomic_load_explicit(&pb->pages[i].word,
								     memory_order_relaxed)) == dev;
		}
	}
	pthread_rwlock_unlock(&ctx->ranges_lock);
	return atomic_load_explicit(&d->frames_used, memory_order_acquire) > own;
}

#define FREED_WAITERS 1u

void uhmm__dev_freed(struct uhmm_ctx *ctx)
{
	uint32_t old = atomic_fetch_add_explicit(&ctx->dev_freed, 2, memory_order_release);
	if (old & FREED_WAITERS) {
		atomic_fetch_and_explicit(&ctx->dev_freed, ~FREED_WAITERS, memory_order_relaxed);
		uhmm_futex_wake_all(&ctx->dev_freed);
	}
}

bool uhmm__dev_freed_since(struct uhmm_ctx *ctx, uint32_t seen)
{
	uint32_t w = atomic_load_explicit(&ctx->dev_freed, memory_order_acquire);
	return (w & ~FREED_WAITERS) != (seen & ~FREED_WAITERS);
}

void uhmm__dev_freed_wait(struct uhmm_ctx *ctx, uint32_t seen, uint64_t max_ns)
{
	uint32_t w = atomic_fetch_or_explicit(&ctx->dev_freed, FREED_WAITERS,
					      memory_order_acquire) | FREED_WAITERS;
	if (uhmm__dev_freed_since(ctx, seen))
		return;
	uhmm_futex_wait_ns(&ctx->dev_freed, w, max_ns);
}

/* ---- what a backend may ask for ---- */

int uhmm__backend_call_enter(uhmm_device *dev, struct uhmm_ctx **ctx)
{
	int err = uhmm__dev_enter(dev, ctx);
	if (err)
		return err;
	err = uhmm__dev_hold(*ctx, dev);
	if (err)
		uhmm__ctx_exit(*ctx);
	return err;
}

UHMM_API long uhmm_device_evict(uhmm_device *dev, size_t bytes)
{
	struct uhmm_ctx *ctx;
	int err = uhmm__backend_call_enter(dev, &ctx);
	if (err)
		return err;
	struct uhmm_victim v = { .dev = dev->id, .hi = UINT64_MAX };
	size_t want = (bytes + PAGE_SIZE - 1) >> PAGE_SHIFT;
	if (want)
		uhmm__evict(ctx, &v, want, 0, 0);
	uhmm__dev_release(dev);
	uhmm__ctx_exit(ctx);
	return (long)(v.moved << PAGE_SHIFT);
}

UHMM_API int uhmm_device_evict_frames(uhmm_device *dev, uint64_t first, uint64_t n)
{
	if (!n || first + n < first)
		return -EINVAL;
	struct uhmm_ctx *ctx;
	int err = uhmm__backend_call_enter(dev, &ctx);
	if (err)
		return err;
	/* Walk until no page with a frame in the range is left; pages
	 * someone holds are waited for (a frame released, or a while), for
	 * up to UHMM_SETTLE_NS. */
	uint64_t t0 = 0;
	for (;;) {
		uint32_t seen = atomic_load_explicit(&ctx->dev_freed, memory_order_acquire);
		struct uhmm_victim v = { .dev = dev->id, .lo = first, .hi = first + n };
		uhmm__evict(ctx, &v, SIZE_MAX, 0, 0);
		if (!v.busy)
			break;
		if (uhmm__settle_expired(&t0)) {
			err = -EBUSY;
			break;
		}
		uhmm__dev_freed_wait(ctx, seen, BACKOFF_NS);
	}
	uhmm__dev_release(dev);
	uhmm__ctx_exit(ctx);
	return err;
}

UHMM_API int uhmm_device_stats(uhmm_device *dev, struct uhmm_device_stats *out)
{
	if (!out)
		return -EINVAL;
	struct uhmm_ctx *ctx;
	int err = uhmm__dev_enter(dev, &ctx);
	if (err)
		return err;
	memset(out, 0, sizeof(*out));
	out->bytes_in_use = atomic_load_explicit(&dev->frames_used, memory_order_relaxed)
			    << PAGE_SHIFT;
	out->evicted_pages = atomic_load_explicit(&dev->evicted_pages, memory_order_relaxed);
	out->evicted_bytes = out->evicted_pages << PAGE_SHIFT;
	pthread_mutex_lock(&ctx->lru_lock);
	out->lru_blocks = ctx->lru[dev->id].n;
	pthread_mutex_unlock(&ctx->lru_lock);
	out->coherent_pages = atomic_load_explicit(&dev->coh_pages, memory_order_relaxed);
	out->coherent = dev->coh_base != NULL;
	uhmm__ctx_exit(ctx);
	return 0;
}

/*
 * Debugging aid for stress programs (tests/torture): count the pages on
 * device dev in every range (table and limbo), those in blocks its LRU
 * lists, and the frames uhmm holds from it.  Pages on the device outside
 * listed blocks are pages no eviction can reach; frames beyond the pages
 * found are frames no page state points to.  Reads page words without
 * locks: a snapshot, exact only when nothing moves.
 */
UHMM_API void uhmm__debug_device_census(uhmm_ctx *ctx, unsigned dev, uint64_t *pages,
					uint64_t *listed, uint64_t *frames)
{
	*pages = *listed = *frames = 0;
	if (!dev || dev >= MAX_DEVICES)
		return;
	pthread_rwlock_rdlock(&ctx->ranges_lock);
	pthread_mutex_lock(&ctx->lru_lock);
	for (size_t k = 0; k < ctx->nranges + ctx->nlimbo; k++) {
		struct uhmm_range *r = k < ctx->nranges ? ctx->ranges[k]
							: ctx->limbo[k - ctx->nranges];
		for (size_t i = 0; i < r->npages; i++) {
			const struct uhmm_page *p = range_page_peek(r, i);
			uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
			if (pg_ondev(w) != dev) /* private or coherent */
				continue;
			(*pages)++;
			struct uhmm_lru_node *n = r->arr->dir[(r->first + i) / BATCH_PAGES].lru;
			while (n && n->dev != dev)
				n = n->bnext;
			*listed += n != NULL;
		}
	}
	pthread_mutex_unlock(&ctx->lru_lock);
	pthread_rwlock_unlock(&ctx->ranges_lock);
	struct uhmm_device *d = uhmm__dev_get(ctx, dev);
	if (d)
		*frames = atomic_load_explicit(&d->frames_used, memory_order_relaxed);
}
