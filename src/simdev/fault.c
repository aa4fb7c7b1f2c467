/* SPDX-License-Identifier: MIT */
/*
 * fault.c - simdev's device faults: the fault buffer, the fault-service
 * thread (the "GMMU fault handler"), placement policies and advice.
 *
 * A lane whose translation misses queues {page, access, itself} in the
 * fault buffer and sleeps on its own condvar.  The service thread drains
 * the buffer in passes of at most fault_batch faults:
 *
 *   sort       by page; faults on one page become one (the strongest
 *              access wins; the others count as duplicates)
 *   replay     pages that are already mapped with the rights (another pass
 *              resolved them) are only replayed, counted as duplicates
 *   group      by 2 MiB block; then, in each block:
 *   atomics    atomic faults on pages not in this device's memory go by the
 *              atomic policy first (atomic.c): taken exclusively (EXCL
 *              entries) or migrated; an atomic never goes through a SYS
 *              entry
 *   runs       the other faults by runs of one placement policy
 *   resolve    MIGRATE_ON_TOUCH: uhmm_migrate() the run (clipped to what
 *              uhmm manages if it says -EFAULT), then range-fault the pages
 *              of the run that have no translation.  Migration refused
 *              (-ENOMEM: device full; -EBUSY, -EIO, ...): map remotely.
 *              MAP_REMOTE: range-fault the faulting pages, each run
 *              extended forward over pages with no translation up to the
 *              end of the aligned SD_MAP_AROUND window ("map-around", the
 *              device's fault-around).
 *   install    under pt_lock, if the notifier's sequence is unchanged
 *              (read_retry); otherwise range-fault again
 *   answer     each lane gets 0 (replay), -EBUSY (replay; range fault timed
 *              out or kept being invalidated) or the error ending its item
 *
 * Only pages without a valid translation are ever range-faulted: a launch
 * over an unchanged, already mirrored range raises no fault at all, so it
 * walks nothing (DESIGN.md hard point 8).  A range fault that fails over a
 * run (-EFAULT, -EPERM) is redone page by page for the faulting pages, so
 * each lane gets the error of its own page and access.
 *
 * Locks:
 *   fb_lock   (leaf) the buffer and the lanes' fault_* fields; only condvar
 *             waits under it.
 *   adv_lock  (leaf) the advice lists; nothing blocks under it.
 *   pt_lock   (mmu.c) taken here to look at and fill the page table.
 * The service thread calls uhmm_migrate() and uhmm_range_fault() with no
 * simdev lock held: both may invalidate (our callback takes pt_lock and the
 * unit locks) and fault pages in through uhmm's own fault-service thread.
 */
#define _GNU_SOURCE
#include "simdev/simdev_internal.h"
#include "core/trace.h"

#include <errno.h>
#include <signal.h>

#include <uhmm/topology.h>
#include <string.h>
#include <time.h>

#define PAGE ((uintptr_t)UHMM_PAGE_SIZE)
#define BLOCK ((uintptr_t)UHMM_HUGE_SIZE)
/* Map-around window of MAP_REMOTE faults, in bytes (aligned). */
#define SD_MAP_AROUND (64 * PAGE)
/* Range faults that keep being invalidated before install: give up, the
 * lanes fault again. */
#define SD_MAP_TRIES 8

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#define STAT_ADD(c, f, v) \
	atomic_fetch_add_explicit(&(c)->st.f, (v), memory_order_relaxed)

/* ---- advice ------------------------------------------------------------- */

/* Both lists' default is 0 (MIGRATE_ON_TOUCH, ATOMIC_AUTO). */
unsigned uhmm__advice_at(struct sd_compute *c, enum sd_adv_kind kind, uintptr_t va,
			 uintptr_t lo, uintptr_t hi, uintptr_t *rlo, uintptr_t *rhi)
{
	unsigned pol = 0;
	uintptr_t a = lo, b = hi;

	pthread_mutex_lock(&c->adv_lock);
	const struct sd_advice *adv = c->adv[kind].v;
	size_t nadv = c->adv[kind].n;
	/* First range that ends after va. */
	size_t l = 0, r = nadv;
	while (l < r) {
		size_t m = l + (r - l) / 2;
		if (adv[m].end <= va)
			l = m + 1;
		else
			r = m;
	}
	if (l < nadv && adv[l].start <= va) {
		pol = adv[l].advice;
		if (adv[l].start > a)
			a = adv[l].start;
		if (adv[l].end < b)
			b = adv[l].end;
	} else {
		if (l > 0 && adv[l - 1].end > a)
			a = adv[l - 1].end;
		if (l < nadv && adv[l].start < b)
			b = adv[l].start;
	}
	pthread_mutex_unlock(&c->adv_lock);
	*rlo = a;
	*rhi = b;
	return pol;
}

/*
 * Later advice replaces earlier advice over [start, end): cut the range out
 * of every entry, then (unless it is the default) insert it, merged with
 * touching neighbours of the same advice.  The list stays sorted, disjoint
 * and holds only non-default advice.
 */
int uhmm__advise(struct sd_compute *c, enum sd_adv_kind kind, uintptr_t start,
		 uintptr_t end, unsigned advice)
{
	pthread_mutex_lock(&c->adv_lock);
	struct sd_advlist *list = &c->adv[kind];
	size_t cap = list->n + 3, n = 0;
	struct sd_advice *out = uhmm__umem_malloc(cap * sizeof(*out));
	if (!out) {
		pthread_mutex_unlock(&c->adv_lock);
		return -ENOMEM;
	}
	bool placed = advice == 0; /* the default is not stored */
	for (size_t i = 0; i < list->n; i++) {
		struct sd_advice e = list->v[i];
		if (e.end <= start || e.start >= end) {
			if (!placed && e.start >= end) {
				out[n++] = (struct sd_advice){ start, end, advice };
				placed = true;
			}
			out[n++] = e;
			continue;
		}
		if (e.start < start)
			out[n++] = (struct sd_advice){ e.start, start, e.advice };
		if (!placed) {
			out[n++] = (struct sd_advice){ start, end, advice };
			placed = true;
		}
		if (e.end > end)
			out[n++] = (struct sd_advice){ end, e.end, e.advice };
	}
	if (!placed)
		out[n++] = (struct sd_advice){ start, end, advice };
	/* Merge touching ranges of the same advice. */
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (m && out[m - 1].end == out[i].start &&
		    out[m - 1].advice == out[i].advice)
			out[m - 1].end = out[i].end;
		else
			out[m++] = out[i];
	}
	uhmm__umem_free(list->v);
	list->v = out;
	list->n = m;
	pthread_mutex_unlock(&c->adv_lock);
	return 0;
}

/* ---- mapping: range fault + install ------------------------------------- */

/*
 * A peer's page (UHMM_RE_PEER, asked for with UHMM_RF_PEER when peer access
 * is on): a PEER entry at the address of the peer's frame.  Only another
 * simdev's frames can be addressed.  Called under pt_lock after
 * read_retry said the entry is current, so the peer is alive (its detach
 * would have moved the page, invalidating the entry first).
 */
static uint64_t peer_pte(struct sd_compute *c, uint64_t e, uint64_t pte)
{
	struct simdev *peer = uhmm__simdev_of(uhmm_device_from_id(c->ctx,
								  UHMM_RE_PEER_DEV(e)));
	uint64_t frame = UHMM_RE_PEER_DPFN(e);

	if (!peer || peer == c->sd || !uhmm__devmem_range_ok(&peer->mem, frame, 1))
		return 0; /* (not addressable: the lane faults again) */
	return pte | PTE_PEER | ((e & UHMM_RE_WRITE) ? PTE_A : 0) |
	       (uint64_t)(uintptr_t)uhmm__devmem_ptr(&peer->mem, frame);
}

uint64_t uhmm__pte_of_entry(struct sd_compute *c, uint64_t e)
{
	uint64_t frame = e & UHMM_RE_DPFN_MASK;
	bool w = e & UHMM_RE_WRITE;
	uint64_t pte = PTE_R | (w ? PTE_W : 0);

	if (!(e & UHMM_RE_VALID))
		return 0;
	if (e & UHMM_RE_EXCLUSIVE) {
		/* Held by this device: the data is at uhmm's page frame << 12. */
		if (!frame) {
			simdev_bug("range fault gave an exclusive page at 0");
			return 0;
		}
		return pte | PTE_EXCL | (w ? PTE_A : 0) | frame << PTE_DPFN_SHIFT;
	}
	if (e & UHMM_RE_DEVICE) {
		if (!uhmm__devmem_range_ok(&c->sd->mem, frame, 1)) {
			simdev_bug("range fault gave frame %llu outside the pool",
				   (unsigned long long)frame);
			return 0;
		}
		return pte | PTE_DEV | (w ? PTE_A : 0) | frame << PTE_DPFN_SHIFT;
	}
	if (e & UHMM_RE_PEER)
		return peer_pte(c, e, pte);
	/* In place in our coherent memory: a SYS entry (the data is at the
	 * page's address) at local cost, and atomics in place (coherent
	 * memory is atomic with the CPU: no exclusive grab). */
	if (e & UHMM_RE_COHERENT)
		return pte | PTE_LOCAL | (w ? PTE_A : 0);
	return pte; /* SYS: never PTE_A (but coherent, above) */
}

/*
 * Writes the entries of a range fault of [lo, lo + np pages) into the page
 * table.  Caller holds pt_lock and has checked read_retry.  Entries that
 * are not VALID are left out (the lane faults again).  *@flush is set when
 * an entry was replaced by one of another kind or place (SYS by EXCL, say,
 * when no invalidation removed it first): TLBs may still cache the old one
 * with rights the new allows, so the caller shoots the range down after
 * dropping pt_lock.  (Upgrades of rights need no shootdown: a TLB entry
 * without the rights misses.)  Errors: -ENOMEM.
 */
/*
 * If entries[0, np) of [lo, ...) are one 2 MiB device page of ours (an
 * aligned block, every page UHMM_RE_DEVICE | UHMM_RE_HUGE in frame first +
 * i, first a multiple of 512, one set of rights), the block's 2 MiB PTE;
 * else 0.
 */
static uint64_t huge_pte_of(struct sd_compute *c, uintptr_t lo, size_t np,
			    const uint64_t *entries)
{
	const uint64_t kind = UHMM_RE_VALID | UHMM_RE_DEVICE | UHMM_RE_HUGE;
	if ((lo & (UHMM_HUGE_SIZE - 1)) || np != UHMM_HUGE_SIZE / PAGE)
		return 0;
	uint64_t first = entries[0] & UHMM_RE_DPFN_MASK;
	uint64_t wr = entries[0] & UHMM_RE_WRITE;
	if ((entries[0] & kind) != kind || first % np ||
	    !uhmm__devmem_range_ok(&c->sd->mem, first, np))
		return 0;
	for (size_t i = 1; i < np; i++)
		if ((entries[i] & (kind | UHMM_RE_WRITE)) != (kind | wr) ||
		    (entries[i] & UHMM_RE_DPFN_MASK) != first + i)
			return 0;
	return uhmm__pte_of_entry(c, entries[0]) | PTE_HUGE;
}

static int install_locked(struct sd_compute *c, uintptr_t lo, size_t np,
			  const uint64_t *entries, bool *flush)
{
	uint64_t remote = 0, peer = 0;
	int err = 0;

	/* A block on the device as one 2 MiB page: one entry covers it. */
	uint64_t hpte = huge_pte_of(c, lo, np, entries);
	if (hpte) {
		if (uhmm__pt_lookup_locked(c, lo) == hpte)
			return 0; /* mapped so already */
		/* Entries of another kind or place (none should be: a page
		 * that comes to the device is invalidated first) may be in
		 * TLBs: shoot them down, as below. */
		for (size_t i = 0; i < np && !*flush; i++) {
			uint64_t old = uhmm__pt_lookup_locked(c, lo + i * PAGE);
			uint64_t pte = (hpte & ~PTE_HUGE) + ((uint64_t)i << PTE_DPFN_SHIFT);
			if (old && ((old ^ pte) & (PTE_FENCED | PTE_ADDR_MASK)))
				*flush = true;
		}
		return uhmm__pt_set_huge_locked(c, lo, hpte);
	}

	for (size_t i = 0; i < np; i++) {
		uintptr_t va = lo + i * PAGE;
		uint64_t pte = uhmm__pte_of_entry(c, entries[i]);
		if (!pte)
			continue;
		uint64_t old = uhmm__pt_lookup_locked(c, va);
		if ((old & ~PTE_HUGE) == pte)
			continue; /* (in a 2 MiB entry: left whole) */
		err = uhmm__pt_set_locked(c, va, pte);
		if (err)
			break;
		if (old && ((old ^ pte) & (PTE_FENCED | PTE_ADDR_MASK)))
			*flush = true;
		if (!(pte & PTE_FENCED) && !(entries[i] & UHMM_RE_COHERENT))
			remote++; /* (our coherent memory is local) */
		if (pte & PTE_PEER)
			peer++;
	}
	STAT_ADD(c, remote_maps, remote);
	STAT_ADD(c, peer_maps, peer);
	return err;
}

/* Range-faults [lo, hi) (within one block) for @acc (0: snapshot) and
 * installs it. */
int uhmm__fault_map_range(struct sd_compute *c, uintptr_t lo, uintptr_t hi,
			  unsigned acc)
{
	size_t np = (hi - lo) / PAGE;

	for (int tries = 0;; tries++) {
		struct uhmm_range_req req = {
			.notifier = c->notifier,
			.start = lo,
			.end = hi,
			.flags = (acc == 0 ? UHMM_RF_SNAPSHOT
				  : acc == SD_READ ? UHMM_RF_FAULT_READ
						   : UHMM_RF_FAULT_WRITE) |
				 (atomic_load_explicit(&c->sd->peer_access, memory_order_relaxed)
					  ? UHMM_RF_PEER : 0),
			.timeout_ms = 1000,
			.device = c->dev,
			.entries = c->entries,
		};
		STAT_ADD(c, range_fault_calls, 1);
		STAT_ADD(c, range_fault_pages, np);
		int err = uhmm_range_fault(c->ctx, &req);
		if (err)
			return err;
		bool flush = false;
		pthread_mutex_lock(&c->pt_lock);
		if (uhmm_notifier_read_retry(c->notifier, req.notifier_seq)) {
			pthread_mutex_unlock(&c->pt_lock);
			if (tries + 1 >= SD_MAP_TRIES)
				return -EBUSY;
			continue;
		}
		err = install_locked(c, lo, np, c->entries, &flush);
		pthread_mutex_unlock(&c->pt_lock);
		if (flush)
			uhmm__tlb_shootdown(c, lo / PAGE, (hi - 1) / PAGE);
		return err;
	}
}

/* Answers the pending faulting pages of @fp that lie in [lo, hi). */
void uhmm__fault_settle(struct sd_compute *c, struct sd_fpage *fp, size_t n,
			uintptr_t lo, uintptr_t hi, int err)
{
	uint64_t resolved = 0;

	if (!err)
		pthread_mutex_lock(&c->pt_lock);
	for (size_t i = 0; i < n; i++) {
		if (fp[i].done || fp[i].va < lo || fp[i].va >= hi)
			continue;
		fp[i].done = true;
		fp[i].err = err;
		if (!err && pte_allows(uhmm__pt_lookup_locked(c, fp[i].va), fp[i].acc))
			resolved++;
	}
	if (!err)
		pthread_mutex_unlock(&c->pt_lock);
	STAT_ADD(c, fault_resolutions, resolved);
}

/*
 * Maps [lo, hi) for the strongest access of the pending faulting pages of
 * @fp inside it.  If that fails with an error that belongs to a page
 * (-EFAULT, -EPERM) and the run is more than one page, each faulting page
 * is mapped alone for its own access, so that it gets its own answer.
 */
void uhmm__fault_map_run(struct sd_compute *c, struct sd_fpage *fp, size_t n,
			 uintptr_t lo, uintptr_t hi)
{
	unsigned acc = SD_READ;

	for (size_t i = 0; i < n; i++)
		if (!fp[i].done && fp[i].va >= lo && fp[i].va < hi && fp[i].acc > acc)
			acc = fp[i].acc;
	int err = uhmm__fault_map_range(c, lo, hi, acc);
	/* (-EHWPOISON: a page of the run was lost: it alone fails.) */
	if ((err == -EFAULT || err == -EPERM || err == -EHWPOISON) && hi - lo > PAGE) {
		for (size_t i = 0; i < n; i++) {
			if (fp[i].done || fp[i].va < lo || fp[i].va >= hi)
				continue;
			uintptr_t va = fp[i].va;
			int e = uhmm__fault_map_range(c, va, va + PAGE, fp[i].acc);
			uhmm__fault_settle(c, &fp[i], 1, va, va + PAGE, e);
		}
		return;
	}
	uhmm__fault_settle(c, fp, n, lo, hi, err);
}

/*
 * Whether the page at @va needs a range fault: no translation, or (for a
 * pending faulting page) one without the rights.  Caller holds pt_lock.
 */
static bool needs_map_locked(struct sd_compute *c, uintptr_t va,
			     const struct sd_fpage *f)
{
	uint64_t pte = uhmm__pt_lookup_locked(c, va);
	if (!pte)
		return true;
	return f && !f->done && f->va == va && !pte_allows(pte, f->acc);
}

/*
 * MAP_REMOTE, and the fallback of a refused migration: range-fault the
 * pending faulting pages of [lo, hi), each run extended forward over pages
 * without translation to the end of its map-around window.
 */
static void map_remote(struct sd_compute *c, struct sd_fpage *fp, size_t n,
		       uintptr_t lo, uintptr_t hi)
{
	size_t i = 0;

	while (i < n) {
		if (fp[i].done) {
			i++;
			continue;
		}
		uintptr_t a = fp[i].va, b = a + PAGE;
		size_t j = i + 1;
		pthread_mutex_lock(&c->pt_lock);
		for (;;) {
			uintptr_t lim = ((b - PAGE) & ~(SD_MAP_AROUND - 1)) + SD_MAP_AROUND;
			if (lim > hi)
				lim = hi;
			while (b < lim && needs_map_locked(c, b, NULL))
				b += PAGE;
			while (j < n && fp[j].va < b)
				j++;
			if (j < n && fp[j].va == b && !fp[j].done) {
				b += PAGE; /* mapped without the rights: take it */
				j++;
				continue;
			}
			break;
		}
		pthread_mutex_unlock(&c->pt_lock);
		uhmm__fault_map_run(c, fp + i, j - i, a, b);
		i = j;
	}
}

/* Range-faults the pages of [lo, hi) that need it, in runs. */
static void map_missing(struct sd_compute *c, struct sd_fpage *fp, size_t n,
			uintptr_t lo, uintptr_t hi)
{
	uintptr_t va = lo;
	size_t k = 0;

	while (va < hi) {
		pthread_mutex_lock(&c->pt_lock);
		while (k < n && fp[k].va < va)
			k++;
		while (va < hi && !needs_map_locked(c, va, k < n ? &fp[k] : NULL)) {
			va += PAGE;
			while (k < n && fp[k].va < va)
				k++;
		}
		uintptr_t a = va;
		while (va < hi && needs_map_locked(c, va, k < n ? &fp[k] : NULL)) {
			va += PAGE;
			while (k < n && fp[k].va < va)
				k++;
		}
		pthread_mutex_unlock(&c->pt_lock);
		if (a < va)
			uhmm__fault_map_run(c, fp, n, a, va);
	}
	/* A faulting page mapped meanwhile by nobody else's doing cannot
	 * exist (only this thread installs); answer any left as replays. */
	uhmm__fault_settle(c, fp, n, lo, hi, 0);
}

/* [*a, *b): the pages around @va within [lo, hi) that uhmm manages. */
static void managed_extent(struct sd_compute *c, uintptr_t va, uintptr_t lo,
			   uintptr_t hi, uintptr_t *a, uintptr_t *b)
{
	struct uhmm_page_info pi;

	*a = *b = va;
	if (uhmm_page_query(c->ctx, (void *)va, &pi))
		return;
	while (*a > lo && !uhmm_page_query(c->ctx, (void *)(*a - PAGE), &pi))
		*a -= PAGE;
	*b = va + PAGE;
	while (*b < hi && !uhmm_page_query(c->ctx, (void *)*b, &pi))
		*b += PAGE;
}

/*
 * MIGRATE_ON_TOUCH over [lo, hi) (one block, one policy): migrate it, then
 * map what moved.  Part of it not managed (-EFAULT): migrate the managed
 * extents around the faulting pages instead, and map unmanaged faulting
 * pages remotely.  Migration refused otherwise: map remotely.
 */
static void migrate_and_map(struct sd_compute *c, struct sd_fpage *fp, size_t n,
			    uintptr_t lo, uintptr_t hi, bool clipped, bool dup)
{
	/* The policy's verb: move (read-mostly pages' duplicates collapse
	 * to this device) or duplicate. */
	unsigned flags = dup ? UHMM_MIGRATE_DUPLICATE : UHMM_MIGRATE_MOVE;
	int err = uhmm_migrate(c->ctx, (void *)lo, hi - lo, c->dev, flags);

	/* -EHWPOISON: everything moved but pages lost on a device, which
	 * the mapping below fails alone (uhmm__fault_map_run). */
	if (!err || err == -EHWPOISON) {
		STAT_ADD(c, migrations, 1);
		map_missing(c, fp, n, lo, hi);
		return;
	}
	if (err == -EFAULT && !clipped) {
		size_t i = 0;
		while (i < n) {
			if (fp[i].done) {
				i++;
				continue;
			}
			uintptr_t a, b;
			managed_extent(c, fp[i].va, lo, hi, &a, &b);
			if (a == b) {
				map_remote(c, fp + i, 1, fp[i].va, fp[i].va + PAGE);
				i++;
				continue;
			}
			size_t j = i;
			while (j < n && fp[j].va < b)
				j++;
			migrate_and_map(c, fp + i, j - i, a, b, true, dup);
			i = j;
		}
		return;
	}
	map_remote(c, fp, n, lo, hi);
}

/*
 * Resolves the pending faulting pages of one 2 MiB block: atomics on pages
 * outside device memory by the atomic policy, the rest as the context's
 * policy says (uhmm_device_fault_policy: by default, migrate the block, or
 * what of it is under one advice; map remotely where the advice says so).
 * (A placement migration of the block may then take back pages just made
 * exclusive - a MIGRATE invalidation removes their EXCL entries first - and
 * the atomics replay on device memory: correct, only slower.)
 */
static void resolve_block(struct sd_compute *c, struct sd_fpage *fp, size_t n,
			  uintptr_t blk)
{
	struct uhmm_pol_dev_fault *f = c->pol_f;
	struct uhmm_pol_dev_act *a = c->pol_a;
	size_t m = 0;

	uhmm__atomic_resolve(c, fp, n);
	for (size_t i = 0; i < n; i++) {
		if (fp[i].done)
			continue;
		uintptr_t lo, hi;
		unsigned pol = uhmm__advice_at(c, SD_ADV_PLACE, fp[i].va, blk,
					       blk + BLOCK, &lo, &hi);
		struct uhmm_page_info pi;
		uhmm_loc where = 0;
		if (!uhmm_page_query(c->ctx, (void *)fp[i].va, &pi) &&
		    pi.where == UHMM_WHERE_DEVICE && pi.device)
			where = uhmm_device_id(pi.device);
		f[m] = (struct uhmm_pol_dev_fault){
			.addr = fp[i].va, .lo = lo, .hi = hi,
			.access = fp[i].acc == SD_ATOMIC ? UHMM_POL_ATOMIC
				  : fp[i].acc == SD_WRITE ? UHMM_POL_WRITE : UHMM_POL_READ,
			.hint = pol == UHMM_SIMDEV_MAP_REMOTE ? UHMM_POL_HINT_MAP_REMOTE
							      : UHMM_POL_HINT_NONE,
			.where = where,
		};
		c->pol_i[m++] = (uint32_t)i;
	}
	if (!m)
		return;
	if (uhmm_device_fault_policy(c->dev, f, m, a) < 0) {
		/* (Only if the device is going away: map what can be.) */
		for (size_t k = 0; k < m; k++)
			a[k] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MAP_REMOTE };
	}
	/* Throttled (thrashing control): serve the block that much later. */
	uint64_t nap = 0;
	for (size_t k = 0; k < m; k++)
		if (a[k].delay_ns > nap)
			nap = a[k].delay_ns;
	if (nap) {
		struct timespec ts = { (time_t)(nap / 1000000000ull), (long)(nap % 1000000000ull) };
		nanosleep(&ts, NULL);
		STAT_ADD(c, throttle_ns, nap);
	}
	/* Runs of consecutive faults with one decision (one span). */
	for (size_t k = 0; k < m;) {
		size_t j = k + 1;
		while (j < m && a[j].action == a[k].action && f[j].lo == f[k].lo &&
		       f[j].hi == f[k].hi &&
		       (a[k].action != UHMM_POL_MIGRATE ||
			(a[j].lo == a[k].lo && a[j].hi == a[k].hi)))
			j++;
		struct sd_fpage *run = fp + c->pol_i[k];
		size_t cnt = c->pol_i[j - 1] - c->pol_i[k] + 1;
		if (a[k].action == UHMM_POL_MIGRATE || a[k].action == UHMM_POL_DUPLICATE)
			migrate_and_map(c, run, cnt, a[k].lo, a[k].hi, false,
					a[k].action == UHMM_POL_DUPLICATE);
		else
			map_remote(c, run, cnt, f[k].lo, f[k].hi);
		k = j;
	}
}

/* ---- the service pass --------------------------------------------------- */

static int lane_cmp(const void *x, const void *y)
{
	const struct uhmm_simdev_item *a = *(struct uhmm_simdev_item *const *)x;
	const struct uhmm_simdev_item *b = *(struct uhmm_simdev_item *const *)y;
	return a->fault_page < b->fault_page ? -1 : a->fault_page > b->fault_page;
}

/*
 * One pass over c->batch[0, k), sorted by page on return.  The lanes' fault
 * fields are stable: each lane sleeps until answered.
 */
static void service_pass(struct sd_compute *c, unsigned k)
{
	struct uhmm_simdev_item **b = c->batch;
	struct sd_fpage *fp = c->fpages;
	size_t nu = 0;
	uint64_t t0 = now_ns();

	uhmm__sort(b, k, sizeof(*b), lane_cmp); /* qsort may malloc */
	for (unsigned i = 0; i < k; i++) {
		if (nu && fp[nu - 1].va == b[i]->fault_page) {
			if (b[i]->fault_acc > fp[nu - 1].acc)
				fp[nu - 1].acc = b[i]->fault_acc;
			continue;
		}
		fp[nu++] = (struct sd_fpage){ .va = b[i]->fault_page,
					      .acc = b[i]->fault_acc
					      };
	}
	uint64_t dups = k - nu;

	/* Resolved by an earlier pass since the lanes looked: replay. */
	pthread_mutex_lock(&c->pt_lock);
	for (size_t u = 0; u < nu; u++) {
		if (pte_allows(uhmm__pt_lookup_locked(c, fp[u].va), fp[u].acc)) {
			fp[u].done = true;
			fp[u].err = 0;
			dups += 1; /* its other faults are counted above */
		}
	}
	pthread_mutex_unlock(&c->pt_lock);
	STAT_ADD(c, fault_duplicates, dups);
	UHMM_PROBE(dev_fault_batch, uhmm_device_id(c->dev), k, nu);
	for (size_t u = 0, f1 = 1; (UHMM__TRACING() || UHMM_PROBE_ON(dev_fault)) && u < nu; u++)
		if (!fp[u].done) {
			uhmm__trace_dev_fault(c->ctx, c->dev, fp[u].va, fp[u].acc, f1);
			f1 = 0;
		}

	for (size_t i = 0; i < nu;) {
		uintptr_t blk = fp[i].va & ~(BLOCK - 1);
		size_t j = i + 1;
		while (j < nu && (fp[j].va & ~(BLOCK - 1)) == blk)
			j++;
		resolve_block(c, fp + i, j - i, blk);
		i = j;
	}

	/* Answer (both arrays are sorted by page). */
	pthread_mutex_lock(&c->fb_lock);
	size_t u = 0;
	for (unsigned i = 0; i < k; i++) {
		while (fp[u].va != b[i]->fault_page)
			u++;
		b[i]->fault_err = fp[u].done ? fp[u].err : -EBUSY;
		b[i]->fault_done = true;
		pthread_cond_signal(&b[i]->fault_cond);
	}
	pthread_mutex_unlock(&c->fb_lock);

	STAT_ADD(c, fault_batches, 1);
	STAT_ADD(c, fault_service_ns, now_ns() - t0);
}

/* ---- map requests (accessed-by advice) ---------------------------------- */

void uhmm__fault_map_request(struct sd_compute *c, uintptr_t lo, uintptr_t hi)
{
	if (lo < SD_VA_START)
		lo = SD_VA_START;
	if (hi > SD_VA_END)
		hi = SD_VA_END;
	if (lo >= hi)
		return;
	pthread_mutex_lock(&c->fb_lock);
	if (c->fb_stop || c->mj_off) {
		pthread_mutex_unlock(&c->fb_lock);
		return;
	}
	struct sd_mapjob *last = c->mj_n ? &c->mj[c->mj_n - 1] : NULL;
	if (last && !last->count && lo <= last->hi && hi >= last->lo) {
		/* Touches the last one still pending: one request. */
		last->lo = lo < last->lo ? lo : last->lo;
		last->hi = hi > last->hi ? hi : last->hi;
	} else if (c->mj_n < SD_MAPJOBS) {
		c->mj[c->mj_n++] = (struct sd_mapjob){ lo, hi, 0 };
		c->mj_queued++;
	} else {
		STAT_ADD(c, map_requests_dropped, 1);
		pthread_mutex_unlock(&c->fb_lock);
		return;
	}
	STAT_ADD(c, map_requests, 1);
	pthread_cond_signal(&c->fb_cond);
	pthread_mutex_unlock(&c->fb_lock);
}

void uhmm__fault_map_drain(struct sd_compute *c)
{
	pthread_mutex_lock(&c->fb_lock);
	uint64_t want = c->mj_queued;
	/* (Bounded: the service thread serves them, each a few snapshots.) */
	while (c->mj_done < want && !c->fb_stop && !c->mj_off)
		pthread_cond_wait(&c->mj_cond, &c->fb_lock);
	pthread_mutex_unlock(&c->fb_lock);
}

void uhmm__fault_map_off(struct sd_compute *c)
{
	if (!c->fault_inited)
		return;
	pthread_mutex_lock(&c->fb_lock);
	c->mj_off = true;
	c->mj_n = 0;
	pthread_cond_broadcast(&c->mj_cond);
	/* (Bounded: a request is a few snapshots, a notification a
	 * migration; neither waits for this thread.) */
	while (c->mj_busy)
		pthread_cond_wait(&c->mj_cond, &c->fb_lock);
	pthread_mutex_unlock(&c->fb_lock);
}

/* ---- access counters ---------------------------------------------------- */

void uhmm__counter_hit(struct sd_compute *c, uintptr_t va)
{
	if (!c->ctr)
		return;
	uint64_t reg = (uint64_t)va >> c->sd->counter_shift;
	uint64_t key = (reg + 1) << SD_CTR_BITS; /* (user VAs: < 2^48) */
	uint64_t thr = c->sd->counter_threshold;
	struct sd_ctr *e = &c->ctr[((reg * 0x9e3779b97f4a7c15ull) >> 40) & (SD_CTR_SLOTS - 1)];
	uint64_t old = atomic_load_explicit(&e->w, memory_order_relaxed), nw, n;
	do {
		/* Another region's slot is taken over (its count is lost);
		 * the access that reaches the threshold restarts the count. */
		n = ((old & ~(uint64_t)SD_CTR_MAX) == key ? old & SD_CTR_MAX : 0) + 1;
		nw = key | (n == thr ? 0 : n);
	} while (!atomic_compare_exchange_weak_explicit(&e->w, &old, nw, memory_order_relaxed,
							memory_order_relaxed));
	if (n != thr)
		return;
	STAT_ADD(c, counter_notifications, 1);
	/* lo: the accessed page; hi - lo: the region's size. */
	uintptr_t pg = va & ~(PAGE - 1);
	struct sd_mapjob j = { pg, pg + ((uintptr_t)1 << c->sd->counter_shift), n };
	pthread_mutex_lock(&c->fb_lock);
	bool dup = false;
	for (unsigned i = 0; i < c->mj_n && !dup; i++)
		dup = c->mj[i].count && (c->mj[i].lo >> c->sd->counter_shift) == reg;
	if (!c->fb_stop && !c->mj_off && !dup && c->mj_n < SD_MAPJOBS) {
		c->mj[c->mj_n++] = j;
		c->mj_queued++;
		pthread_cond_signal(&c->fb_cond);
	}
	pthread_mutex_unlock(&c->fb_lock);
}

static void serve_map_job(struct sd_compute *c, uintptr_t lo, uintptr_t hi);

/* A notification: the policy says; migrate the region, and map it. */
static void serve_counter(struct sd_compute *c, uintptr_t va, uint64_t len, uint64_t count)
{
	uintptr_t blk = va & ~(BLOCK - 1), a, b;
	unsigned place = uhmm__advice_at(c, SD_ADV_PLACE, va, blk, blk + BLOCK, &a, &b);
	struct uhmm_pol_counter n = {
		.addr = va, .len = len, .count = count,
		.hint = place == UHMM_SIMDEV_MAP_REMOTE ? UHMM_POL_HINT_MAP_REMOTE
							: UHMM_POL_HINT_NONE,
	};
	struct uhmm_pol_counter_act act;
	if (uhmm_device_access_counter(c->dev, &n, &act) || act.action != UHMM_POL_CTR_MIGRATE)
		return;
	int err = uhmm_migrate(c->ctx, (void *)(uintptr_t)act.lo, act.hi - act.lo, c->dev, 0);
	if (err && err != -EHWPOISON)
		return; /* (refused: it stays remote; the count starts again) */
	STAT_ADD(c, counter_migrations, 1);
	serve_map_job(c, act.lo, act.hi);
}

/* Maps [lo, hi) where it is: a snapshot per block, what is VALID goes in. */
static void serve_map_job(struct sd_compute *c, uintptr_t lo, uintptr_t hi)
{
	for (uintptr_t a = lo; a < hi;) {
		uintptr_t b = (a & ~(BLOCK - 1)) + BLOCK;
		if (b > hi)
			b = hi;
		(void)uhmm__fault_map_range(c, a, b, 0); /* (errors: it faults later) */
		a = b;
	}
}

static void *fault_main(void *arg)
{
	struct sd_compute *c = arg;

	uhmm__trace_thread_cause(UHMM_TR_CAUSE_DEV_FAULT);
	pthread_mutex_lock(&c->fb_lock);
	for (;;) {
		while (!c->fb_stop && c->fb_n == 0 && c->mj_n == 0)
			pthread_cond_wait(&c->fb_cond, &c->fb_lock);
		if (c->fb_stop)
			break;
		if (c->fb_n == 0) {
			/* No fault waiting: a map request. */
			struct sd_mapjob j = c->mj[0];
			memmove(c->mj, c->mj + 1, (c->mj_n - 1) * sizeof(*c->mj));
			c->mj_n--;
			c->mj_busy = true;
			pthread_mutex_unlock(&c->fb_lock);
			if (j.count)
				serve_counter(c, j.lo, j.hi - j.lo, j.count);
			else
				serve_map_job(c, j.lo, j.hi);
			pthread_mutex_lock(&c->fb_lock);
			c->mj_done++;
			c->mj_busy = false;
			pthread_cond_broadcast(&c->mj_cond);
			continue;
		}
		unsigned k = c->fb_n < c->fault_batch ? c->fb_n : c->fault_batch;
		memcpy(c->batch, c->fb, k * sizeof(*c->fb));
		memmove(c->fb, c->fb + k, (c->fb_n - k) * sizeof(*c->fb));
		c->fb_n -= k;
		pthread_mutex_unlock(&c->fb_lock);
		service_pass(c, k);
		pthread_mutex_lock(&c->fb_lock);
	}
	/* Stopping: nobody will resolve what is left. */
	for (unsigned i = 0; i < c->fb_n; i++) {
		c->fb[i]->fault_err = -ENODEV;
		c->fb[i]->fault_done = true;
		pthread_cond_signal(&c->fb[i]->fault_cond);
	}
	c->fb_n = 0;
	c->mj_n = 0;
	pthread_cond_broadcast(&c->mj_cond);
	pthread_mutex_unlock(&c->fb_lock);
	return NULL;
}

int uhmm__fault_raise(struct sd_compute *c, struct uhmm_simdev_item *wi,
		      uintptr_t page, unsigned acc)
{
	pthread_mutex_lock(&c->fb_lock);
	if (c->fb_stop) {
		pthread_mutex_unlock(&c->fb_lock);
		return -ENODEV;
	}
	wi->fault_page = page;
	wi->fault_acc = acc;
	wi->fault_done = false;
	c->fb[c->fb_n++] = wi;
	STAT_ADD(c, faults, 1);
	pthread_cond_signal(&c->fb_cond);
	while (!wi->fault_done)
		pthread_cond_wait(&wi->fault_cond, &c->fb_lock);
	int err = wi->fault_err;
	pthread_mutex_unlock(&c->fb_lock);
	return err;
}

/* ---- setup -------------------------------------------------------------- */

int uhmm__fault_init(struct sd_compute *c)
{
	pthread_mutex_init(&c->fb_lock, NULL);
	pthread_cond_init(&c->fb_cond, NULL);
	pthread_cond_init(&c->mj_cond, NULL);
	pthread_mutex_init(&c->adv_lock, NULL);
	c->fault_inited = true;
	c->mj = uhmm__umem_calloc(SD_MAPJOBS, sizeof(*c->mj));
	if (c->sd->counters) {
		c->ctr = uhmm__umem_calloc(SD_CTR_SLOTS, sizeof(*c->ctr));
		if (!c->ctr)
			return -ENOMEM;
	}
	c->fb = uhmm__umem_calloc(c->nlanes, sizeof(*c->fb));
	c->batch = uhmm__umem_calloc(c->fault_batch, sizeof(*c->batch));
	c->fpages = uhmm__umem_calloc(c->fault_batch, sizeof(*c->fpages));
	c->entries = uhmm__umem_calloc(BLOCK / PAGE, sizeof(*c->entries));
	c->snap = uhmm__umem_calloc(BLOCK / PAGE, sizeof(*c->snap));
	c->xptrs = uhmm__umem_calloc(BLOCK / PAGE, sizeof(*c->xptrs));
	c->pol_f = uhmm__umem_calloc(c->fault_batch, sizeof(*c->pol_f));
	c->pol_a = uhmm__umem_calloc(c->fault_batch, sizeof(*c->pol_a));
	c->pol_i = uhmm__umem_calloc(c->fault_batch, sizeof(*c->pol_i));
	if (!c->fb || !c->batch || !c->fpages || !c->entries || !c->snap ||
	    !c->xptrs || !c->pol_f || !c->pol_a || !c->pol_i || !c->mj)
		return -ENOMEM;
	return 0;
}

int uhmm__fault_start(struct sd_compute *c)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = uhmm__umem_thread_create(&c->fault_thread, fault_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		return -EAGAIN;
	pthread_setname_np(c->fault_thread, "uhmm-devfault");
	c->fault_started = true;
	return 0;
}

void uhmm__fault_stop(struct sd_compute *c)
{
	if (!c->fault_started)
		return;
	pthread_mutex_lock(&c->fb_lock);
	c->fb_stop = true;
	pthread_cond_broadcast(&c->fb_cond);
	pthread_mutex_unlock(&c->fb_lock);
	uhmm__umem_thread_join(c->fault_thread, NULL);
	c->fault_started = false;
}

/* Safe on a partly initialised compute (calloc'd struct). */
void uhmm__fault_fini(struct sd_compute *c)
{
	uhmm__umem_free(c->fb);
	uhmm__umem_free(c->batch);
	uhmm__umem_free(c->fpages);
	uhmm__umem_free(c->entries);
	uhmm__umem_free(c->snap);
	uhmm__umem_free(c->xptrs);
	uhmm__umem_free(c->pol_f);
	uhmm__umem_free(c->pol_a);
	uhmm__umem_free(c->pol_i);
	uhmm__umem_free(c->mj);
	c->mj = NULL;
	uhmm__umem_free(c->ctr);
	c->ctr = NULL;
	c->pol_f = NULL;
	c->pol_a = NULL;
	c->pol_i = NULL;
	c->fb = NULL;
	c->batch = NULL;
	c->fpages = NULL;
	c->entries = NULL;
	c->snap = NULL;
	c->xptrs = NULL;
	for (unsigned k = 0; k < SD_ADV_KINDS; k++) {
		uhmm__umem_free(c->adv[k].v);
		c->adv[k].v = NULL;
		c->adv[k].n = 0;
	}
	if (!c->fault_inited)
		return;
	c->fault_inited = false;
	pthread_mutex_destroy(&c->fb_lock);
	pthread_cond_destroy(&c->fb_cond);
	pthread_cond_destroy(&c->mj_cond);
	pthread_mutex_destroy(&c->adv_lock);
}
