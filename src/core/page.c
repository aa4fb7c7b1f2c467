/* SPDX-License-Identifier: MIT */
/*
 * page.c - the per-page lock and the publication of a page's location.
 *
 * Locks: the page lock (PG_LOCKED in struct uhmm_page.word), the role of
 * the kernel's folio lock.  Rank: below fork_lock, above ranges_lock, the
 * pool lock and the request lock (docs/ARCHITECTURE.md).  Several page locks
 * are taken in ascending address order only.
 *
 * Who sleeps on it: application threads in uhmm_migrate() and friends
 * (futex on the word).  The fault-service thread never does: it only
 * trylocks, and parks a fault on a locked page (PG_PARKED); the unlocker
 * then kicks the service thread, which re-dispatches the parked faults.
 * A fault on a busy page therefore waits once and is served once: no
 * spinning and no blind retry (DESIGN.md hard point 1).
 *
 * Lost wake-ups cannot happen: a sleeper or the service thread sets its bit
 * with a compare-and-swap that succeeds only while LOCKED is set, and the
 * unlocker clears all bits with one atomic operation and then looks at what
 * it removed.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "core/internal.h"
#include "util/futex.h"

_Atomic(uhmm__publish_hook_fn) uhmm__publish_hook;
_Atomic(uhmm__zapped_wait_hook_fn) uhmm__zapped_wait_hook;

/*
 * Pages left to their holders.  A REMOVE or UNMAP that meets a held page
 * only marks it ZAPPED; the holder finishes the discard when it unlocks
 * (the copy it was about to publish is dropped, the device frame freed).
 * uhmm_sync promises the discards that returned before it are applied, so
 * it waits for those marks too.  Each mark is counted in one of two
 * counts, zap_pending[zap_epoch & 1], and PG_ZEPOCH on the page says which;
 * it leaves its count when the mark is cleared (the unlock, or a zero-fill
 * of the page: uhmm__page_unzap).  uhmm_sync (after uhmm__events_wait: every
 * mark of an event that returned is counted) needs each count seen at zero
 * once: a mark made before sits in one of them.  To make the wait end while
 * new marks keep coming, it first flips the epoch away from the count it
 * waits for (new marks go into the other one).  Concurrent calls flipping
 * back only make a wait longer, never shorter.
 */
static void zap_counted(struct uhmm_ctx *ctx, unsigned b)
{
	if (atomic_fetch_sub_explicit(&ctx->zap_pending[b], 1, memory_order_release) == 1)
		uhmm_futex_wake_all(&ctx->zap_pending[b]);
}

/* A ZAPPED mark (word w) is cleared. */
static void zap_resolved(struct uhmm_ctx *ctx, uint32_t w)
{
	zap_counted(ctx, (w & PG_ZEPOCH) ? 1 : 0);
}

int uhmm__zapped_wait(struct uhmm_ctx *ctx)
{
	if (pthread_equal(pthread_self(), ctx->service))
		return 0; /* (a callback: the holders may be waiting for us) */
	for (unsigned b = 0; b < 2; b++) {
		uint32_t v = atomic_load_explicit(&ctx->zap_pending[b], memory_order_acquire);
		if (!v)
			continue;
		/* New marks into the other count. */
		uint32_t e = atomic_load_explicit(&ctx->zap_epoch, memory_order_relaxed);
		while ((e & 1) == b &&
		       !atomic_compare_exchange_weak_explicit(&ctx->zap_epoch, &e, e + 1,
							      memory_order_relaxed,
							      memory_order_relaxed))
			;
		uhmm__zapped_wait_hook_fn hook =
			atomic_load_explicit(&uhmm__zapped_wait_hook, memory_order_acquire);
		if (unlikely(hook))
			hook(ctx);
		/* Bounded on progress: the clock restarts whenever a mark
		 * goes; UHMM_SETTLE_NS without one, and a holder is stuck. */
		uint64_t t0 = 0;
		uint32_t last = v;
		while ((v = atomic_load_explicit(&ctx->zap_pending[b], memory_order_acquire)) != 0) {
			if (v < last)
				t0 = 0;
			last = v;
			if (uhmm__settle_expired(&t0))
				return -ETIMEDOUT;
			uhmm_futex_wait_ns(&ctx->zap_pending[b], v, BACKOFF_NS * 5);
		}
	}
	return 0;
}

void uhmm__page_unzap(struct uhmm_ctx *ctx, struct uhmm_page *p)
{
	/*
	 * Read-mostly duplicates (dup.c) of a page filled with zeros are of
	 * the data a discard dropped: a page is duplicated only while
	 * present, and it was missing for this fill.  They must go here,
	 * the mirrors told first (uhmm__dup_drop_inv), as the unlock of a
	 * ZAPPED page does: clearing ZAPPED below makes that unlock keep
	 * PG_DUP.  (A neighbour in a CPU fault's zero-around window, held
	 * while an madvise's REMOVE marked it: devices kept reading the old
	 * bytes, then a reused frame's; uhmm-torture --readmostly --sigbus.)
	 * The holder waits in that invalidation with the page locked, the
	 * order of every collapse (page lock -> invalidation).
	 */
	if (unlikely(atomic_load_explicit(&p->word, memory_order_relaxed) & PG_DUP)) {
		uhmm__dup_drop_inv(ctx, p);
		atomic_fetch_and_explicit(&p->word, ~PG_DUP, memory_order_relaxed);
	}
	uint32_t w = atomic_fetch_and_explicit(&p->word, ~(PG_DISCARD | PG_ZAPPED | PG_ZEPOCH),
					       memory_order_release);
	if (w & PG_ZAPPED)
		zap_resolved(ctx, w);
}

bool uhmm__page_trylock(struct uhmm_page *p)
{
	uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
	while (!(w & PG_LOCKED)) {
		if (atomic_compare_exchange_weak_explicit(
			    &p->word, &w, w | PG_LOCKED, memory_order_acquire,
			    memory_order_relaxed))
			return true;
	}
	return false;
}

void uhmm__page_lock(struct uhmm_page *p)
{
	uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
	for (;;) {
		if (!(w & PG_LOCKED)) {
			if (atomic_compare_exchange_weak_explicit(
				    &p->word, &w, w | PG_LOCKED,
				    memory_order_acquire, memory_order_relaxed))
				return;
			continue;
		}
		if (!(w & PG_WAITERS) &&
		    !atomic_compare_exchange_weak_explicit(
			    &p->word, &w, w | PG_WAITERS, memory_order_relaxed,
			    memory_order_relaxed))
			continue;
		uhmm_futex_wait(&p->word, w | PG_WAITERS);
		w = atomic_load_explicit(&p->word, memory_order_relaxed);
	}
}

bool uhmm__page_park(struct uhmm_page *p)
{
	uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
	while (w & PG_LOCKED) {
		if (w & PG_PARKED)
			return true;
		if (atomic_compare_exchange_weak_explicit(
			    &p->word, &w, w | PG_PARKED, memory_order_relaxed,
			    memory_order_relaxed))
			return true;
	}
	return false;
}

static void after_unlock(struct uhmm_ctx *ctx, struct uhmm_page *p,
			 uint32_t old)
{
	if (old & PG_WAITERS)
		uhmm_futex_wake_all(&p->word);
	if (old & PG_PARKED)
		uhmm__service_kick(ctx);
}

/* Release a copy of page @p that no location refers to any more. */
static void drop_copy(struct uhmm_ctx *ctx, struct uhmm_page *p, uint32_t loc,
		      uint64_t dpfn)
{
	/* A frame of a 2 MiB device unit: the unit becomes 512 pages first
	 * (pstate.c, "device huge units"). */
	if (pg_devpriv(loc) && !pg_coh(loc))
		uhmm__huge_split(ctx, p, pg_devpriv(loc), dpfn);
	if (loc & PG_EXCL) {
		/* A reserve slot: FULL if it still holds the page (a copy
		 * installed it, or the data was discarded), EMPTY if it was
		 * moved into place. */
		unsigned char v = 1;
		mincore(pool_slot(&ctx->pool, dpfn), PAGE_SIZE, &v);
		uhmm__pool_put(&ctx->pool, dpfn, v & 1);
	} else if (pg_dev(loc)) {
		uhmm__dev_free_pages(ctx, pg_dev(loc), &dpfn, 1);
	}
}

/* Gauges of coherent.c's locations: pages in place on a coherent device,
 * poisoned pages. */
static void loc_gauges(struct uhmm_ctx *ctx, const struct uhmm_page *p, uint32_t prev,
		       uint32_t nw)
{
	if (pg_coh(prev) != pg_coh(nw)) {
		struct uhmm_device *d = uhmm__dev_get(ctx, pg_dev(pg_coh(prev) ? prev : nw));
		if (d)
			atomic_fetch_add_explicit(&d->coh_pages, pg_coh(nw) ? 1 : (uint64_t)-1,
						  memory_order_relaxed);
	}
	if ((pg_loc(prev) == LOC_POISON) != (pg_loc(nw) == LOC_POISON))
		atomic_fetch_add_explicit(&ctx->poisoned_now,
					  pg_loc(nw) == LOC_POISON ? 1 : (uint64_t)-1,
					  memory_order_relaxed);
	if (pg_loc(prev) == LOC_POISON && pg_loc(nw) != LOC_POISON)
		uhmm__poison_forget(p);
}

bool uhmm__page_publish_unlock(struct uhmm_ctx *ctx, struct uhmm_page *p,
			       uint32_t loc, uint64_t dpfn)
{
	bool published = true;
	uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
	uint32_t prev = pg_loc(w);
	uint64_t prev_dpfn = atomic_load_explicit(&p->dpfn, memory_order_relaxed);
	UHMM_ASSERT(w & PG_LOCKED);
	UHMM_ASSERT(!(loc & ~PG_LOC_MASK));
	if (loc == LOC_CPU)
		dpfn = 0;
	/* Same copy: a device page or slot kept, possibly by a new holder. */
	bool same_copy = loc != LOC_CPU && pg_excl(loc) == pg_excl(prev) &&
			 prev != LOC_CPU && dpfn == prev_dpfn &&
			 (pg_excl(loc) || loc == prev);

	/*
	 * Zapped while we held it: the application discarded the page, so what
	 * we were about to publish is garbage.  Release it; the page becomes an
	 * empty system page (the next CPU fault fills zeros, as the kernel does
	 * after MADV_DONTNEED).
	 */
	if (unlikely(w & PG_ZAPPED)) {
		if (loc != LOC_CPU && !same_copy)
			drop_copy(ctx, p, loc, dpfn);
		loc = LOC_CPU;
		dpfn = 0;
		same_copy = false;
		published = false;
	}
	/*
	 * The previous copy is released here, while the page is still locked:
	 * once it is unlocked, a detach or destroy may lock it, find it home,
	 * and release the device under our feet.
	 */
	if (loc != prev || dpfn != prev_dpfn) {
		if (prev != LOC_CPU && !same_copy)
			drop_copy(ctx, p, prev, prev_dpfn);
		atomic_store_explicit(&p->dpfn, dpfn, memory_order_relaxed);
		atomic_fetch_add_explicit(&p->seq, 1, memory_order_relaxed);
	}
	/* Release: whoever locks the page next sees dpfn and the data.
	 * DISCARD survives only an unlock that leaves the page in place.
	 *
	 * The service thread may mark the page ZAPPED at any moment while we
	 * hold it (an madvise's REMOVE read now), also after the look above:
	 * so the word is replaced only if it is still the one we decided on.
	 * If ZAPPED came meanwhile, the copy we were publishing is garbage
	 * too: release it and publish an empty system page.  (Published as it
	 * was, it let a CPU touch bring the discarded data back.) */
	uint32_t nw = loc;
	/* (A coherent page in place that becomes a system page stays where
	 * it is too: uhmm__page_zap's DISCARD for it survives.) */
	if ((loc == prev && dpfn == prev_dpfn) || (loc == LOC_CPU && pg_coh(prev)))
		nw |= w & PG_DISCARD;
	/* Read-mostly duplicates (dup.c) stay while the page stays at home
	 * and is not discarded; else they go, the mirrors told before the
	 * frames are freed (uhmm__dup_drop_inv), but by a discard of a page
	 * nobody held (uhmm__page_zap's own unlock, inside the REMOVE's
	 * invalidation).  Discarded while we held it: the REMOVE's
	 * invalidation is over, and a range fault since may have handed a
	 * device a duplicate.  Leaving home with duplicates (one made between
	 * a migration's collapse and its lock): the migration's invalidation
	 * spares the destination's device entries, a duplicate's among them. */
	if (unlikely(w & PG_DUP)) {
		if (loc == LOC_CPU && !(w & PG_ZAPPED) && !(nw & PG_DISCARD))
			nw |= PG_DUP;
		else if ((w & PG_ZAPPED) || loc != LOC_CPU)
			uhmm__dup_drop_inv(ctx, p);
		else
			uhmm__dup_free_page(ctx, p);
	}
	/* Zapped: the kernel's zap of the page may still be on its way (the
	 * REMOVE is handled after it is read, the zap follows the read), so
	 * what is present now is stale until then: DISCARD, as uhmm__page_zap
	 * marks an unlocked page.  (Without it, a migration that locked the
	 * page next moved the stale page out before the zap came.) */
	if (unlikely(w & PG_ZAPPED))
		nw |= PG_DISCARD;
	uhmm__publish_hook_fn hook = atomic_load_explicit(&uhmm__publish_hook,
							  memory_order_acquire);
	if (unlikely(hook))
		hook(ctx, p); /* tests: the service thread strikes here */
	while (!atomic_compare_exchange_weak_explicit(&p->word, &w, nw,
						      memory_order_release,
						      memory_order_relaxed)) {
		if (!(w & PG_ZAPPED))
			continue; /* WAITERS or PARKED added: try again */
		if (nw & PG_DUP)
			uhmm__dup_drop_inv(ctx, p);
		if (loc != LOC_CPU) {
			drop_copy(ctx, p, loc, dpfn);
			atomic_store_explicit(&p->dpfn, 0, memory_order_relaxed);
			atomic_fetch_add_explicit(&p->seq, 1, memory_order_relaxed);
			loc = LOC_CPU;
			dpfn = 0;
			published = false;
		}
		nw = LOC_CPU | PG_DISCARD;
	}
	if (unlikely((prev | nw) & (PG_COH | PG_POISON)))
		loc_gauges(ctx, p, prev, nw);
	if (unlikely(w & PG_ZAPPED))
		zap_resolved(ctx, w); /* the discard is applied: uhmm_sync */
	after_unlock(ctx, p, w);
	return published;
}

void uhmm__page_unlock(struct uhmm_ctx *ctx, struct uhmm_page *p)
{
	uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
	(void)uhmm__page_publish_unlock(ctx, p, pg_loc(w),
					atomic_load_explicit(&p->dpfn,
							     memory_order_relaxed));
}

void uhmm__page_zap(struct uhmm_ctx *ctx, struct uhmm_page *p)
{
	for (;;) {
		if (uhmm__page_trylock(p)) {
			uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
			if (pg_dev(w))
				STAT_INC(ctx, device_pages_freed_by_events);
			if (!pg_dev(w) || pg_coh(w)) {
				/* In the CPU page table (system memory, or a
				 * coherent page in place): the kernel zaps it
				 * after we return; until then nobody may carry
				 * it off (a migration that moved the stale page
				 * out before the zap brought the discarded data
				 * back: uhmm-torture --coherent). */
				atomic_fetch_or_explicit(&p->word, PG_DISCARD,
							 memory_order_relaxed);
			}
			/* Home and empty; publishing frees the device copy. */
			(void)uhmm__page_publish_unlock(ctx, p, LOC_CPU, 0);
			return;
		}
		uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
		/* The owner's own discard (PG_OWNDISC): this REMOVE is its
		 * event (the first one to come over the page), not the
		 * application's; consumed, the mark makes a second one the
		 * application's. */
		if ((w & (PG_LOCKED | PG_OWNDISC)) == (PG_LOCKED | PG_OWNDISC) &&
		    atomic_compare_exchange_weak_explicit(
			    &p->word, &w, w & ~PG_OWNDISC, memory_order_relaxed,
			    memory_order_relaxed))
			return;
		if ((w & PG_LOCKED) && !(w & PG_OWNDISC)) {
			if (w & PG_ZAPPED)
				return; /* marked (and counted) already */
			/* Counted before it is marked: the holder's unlock
			 * may clear the mark at once. */
			unsigned b = atomic_load_explicit(&ctx->zap_epoch, memory_order_relaxed) & 1;
			atomic_fetch_add_explicit(&ctx->zap_pending[b], 1, memory_order_relaxed);
			if (atomic_compare_exchange_weak_explicit(
				    &p->word, &w, w | PG_ZAPPED | (b ? PG_ZEPOCH : 0),
				    memory_order_relaxed, memory_order_relaxed))
				return;
			zap_counted(ctx, b);
		}
	}
}

int uhmm__own_discard(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx, size_t n,
		      uint8_t *sel)
{
	UHMM_ASSERT(n <= BATCH_PAGES && !pthread_equal(pthread_self(), ctx->service));
	uintptr_t va = r->start + (idx << PAGE_SHIFT);
	uint8_t marked[BATCH_PAGES];
	bool any = false;
	for (size_t i = 0; i < n; i++) {
		marked[i] = sel[i] != 0;
		if (marked[i]) {
			atomic_fetch_or_explicit(&range_page(r, idx + i)->word, PG_OWNDISC,
						 memory_order_relaxed);
			any = true;
		}
	}
	if (!any)
		return 0;
	int err = 0;
	for (size_t i = 0; i < n;) {
		if (!sel[i]) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < n && sel[j])
			j++;
		if (madvise((void *)(va + (i << PAGE_SHIFT)), (j - i) << PAGE_SHIFT,
			    MADV_DONTNEED)) {
			/* Page by page (the run may cross two mappings, or
			 * one of them changed): those refused stay. */
			for (size_t x = i; x < j; x++) {
				if (!madvise((void *)(va + (x << PAGE_SHIFT)), PAGE_SIZE,
					     MADV_DONTNEED))
					continue;
				if (!err)
					err = -errno;
				sel[x] = 0;
			}
		}
		i = j;
	}
	/* madvise returned once its event was read; handled too, before the
	 * marks go (a mark cleared first would make our REMOVE look like
	 * the application's: the page zapped, its data lost). */
	uhmm__events_wait(ctx);
	for (size_t i = 0; i < n; i++)
		if (marked[i])
			atomic_fetch_and_explicit(&range_page(r, idx + i)->word, ~PG_OWNDISC,
						  memory_order_relaxed);
	return err;
}
