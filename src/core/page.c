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
#include "core/internal.h"
#include "util/futex.h"

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

bool uhmm__page_publish_unlock(struct uhmm_ctx *ctx, struct uhmm_page *p,
			       unsigned dev, uint64_t dpfn)
{
	bool published = true;
	uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
	unsigned prev = pg_dev(w);
	uint64_t prev_dpfn = atomic_load_explicit(&p->dpfn, memory_order_relaxed);
	UHMM_ASSERT(w & PG_LOCKED);
	UHMM_ASSERT(dev < MAX_DEVICES);

	/*
	 * Zapped while we held it: the application discarded the page, so what
	 * we were about to publish is garbage.  Free it; the page becomes an
	 * empty system page (the next CPU fault fills zeros, as the kernel does
	 * after MADV_DONTNEED).
	 */
	if (unlikely(w & PG_ZAPPED)) {
		if (dev && (dev != prev || dpfn != prev_dpfn))
			uhmm__dev_free_pages(ctx, dev, &dpfn, 1);
		dev = 0;
		dpfn = 0;
		published = false;
	}
	/*
	 * The previous device copy is freed here, while the page is still
	 * locked: once it is unlocked, a detach or destroy may lock it, find
	 * it home, and release the device under our feet.
	 */
	if (dev != prev || (dev && dpfn != prev_dpfn)) {
		if (prev)
			uhmm__dev_free_pages(ctx, prev, &prev_dpfn, 1);
		atomic_store_explicit(&p->dpfn, dpfn, memory_order_relaxed);
		atomic_fetch_add_explicit(&p->seq, 1, memory_order_relaxed);
	}
	/* Release: whoever locks the page next sees dpfn and the data.
	 * DISCARD survives only an unlock that leaves the page in place. */
	uint32_t nw = (uint32_t)dev << PG_DEV_SHIFT;
	if (dev == prev && (!dev || dpfn == prev_dpfn))
		nw |= w & PG_DISCARD;
	uint32_t old = atomic_exchange_explicit(&p->word, nw,
						memory_order_release);
	/* ZAPPED is only set while locked, by the service thread, which never
	 * holds another thread's page: it cannot appear after our check. */
	UHMM_ASSERT(!(old & PG_ZAPPED) || (w & PG_ZAPPED));
	after_unlock(ctx, p, old);
	return published;
}

void uhmm__page_unlock(struct uhmm_ctx *ctx, struct uhmm_page *p)
{
	uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
	(void)uhmm__page_publish_unlock(ctx, p, pg_dev(w),
					atomic_load_explicit(&p->dpfn,
							     memory_order_relaxed));
}

void uhmm__page_zap(struct uhmm_ctx *ctx, struct uhmm_page *p)
{
	for (;;) {
		if (uhmm__page_trylock(p)) {
			if (pg_dev(atomic_load_explicit(&p->word, memory_order_relaxed))) {
				STAT_INC(ctx, device_pages_freed_by_events);
			} else {
				/* In system memory: the kernel zaps it after we
				 * return; until then nobody may carry it off. */
				atomic_fetch_or_explicit(&p->word, PG_DISCARD,
							 memory_order_relaxed);
			}
			/* Home and empty; publishing frees the device copy. */
			(void)uhmm__page_publish_unlock(ctx, p, 0, 0);
			return;
		}
		uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
		if ((w & PG_LOCKED) &&
		    atomic_compare_exchange_weak_explicit(
			    &p->word, &w, w | PG_ZAPPED, memory_order_relaxed,
			    memory_order_relaxed))
			return;
	}
}
