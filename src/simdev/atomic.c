/* SPDX-License-Identifier: MIT */
/*
 * atomic.c - device atomics on pages outside device memory: the atomic
 * policy (uhmm_simdev_advise_atomics) and how a fault-service pass resolves
 * an atomic fault on a page that is not in this device's memory.
 *
 * A device's atomics over a bus are not atomic with respect to the CPU, so
 * an atomic is never made through the process's address (SYS entries carry
 * no PTE_A: the access misses and faults).  The pass resolves such a fault
 * in one of two ways:
 *
 *   exclusive  uhmm_make_exclusive(): the page leaves the CPU page table and
 *              the device reaches the data at a uhmm-owned address (an EXCL
 *              entry, accessed under the unit lock like device memory).  A
 *              CPU touch revokes it: our callback removes the entry and
 *              fences (mmu.c); the next atomic faults again.
 *   migrate    uhmm_migrate() to this device; the page becomes device
 *              memory (a DEV entry).  Under MIGRATE_ON_TOUCH placement the
 *              whole placement run of the block moves, as for other faults.
 *
 * Which one: the page's atomic policy (later advice over a range replaces
 * earlier).  EXCLUSIVE and MIGRATE say it; AUTO (the default) takes pages
 * the CPU has in its page table (a snapshot range fault says VALID, neither
 * DEVICE nor REMOTE) exclusively and migrates the others.  Fallbacks:
 * make_exclusive -EPERM/-EFAULT is the lanes' answer (the kernel ends);
 * other refusals (-EBUSY: the kernel would not let the page go) migrate;
 * a refused migration (not -EFAULT) tries exclusive; when both were refused
 * the lanes get the error of the second attempt.  A page uhmm cannot take
 * either way (unmanaged memory) gets -EFAULT: there is no way to make an
 * atomic on it atomic.  So a pass never answers an atomic fault with a SYS
 * mapping and a replay that would only fault again.
 *
 * Installing EXCL entries follows the mirror pattern (mirror.h): the
 * notifier sequence is read (read_begin) *before* make_exclusive, and the
 * entries go in under pt_lock only if read_retry says nothing happened
 * since.  Our own grab invalidates our notifier too (EXCLUSIVE, device =
 * us: uhmm cannot tell which notifier is whose), as may a CPU touch that
 * revoked the page already; then the pages[] make_exclusive returned may be
 * stale, and a snapshot range fault (its own sequence, the same check) says
 * where the pages are now: pages still held come back UHMM_RE_EXCLUSIVE
 * and get their EXCL entries from it.
 *
 * Locks: none of its own.  pt_lock (via fault.c helpers and here) around
 * page-table reads and installs; adv_lock inside uhmm__advice_at().  Every
 * uhmm call (range fault, make_exclusive, migrate) is made with no simdev
 * lock held: each may invalidate, and our callback takes pt_lock and the
 * unit locks.
 */
#define _GNU_SOURCE
#include "simdev/simdev_internal.h"

#include <errno.h>

#define PAGE ((uintptr_t)UHMM_PAGE_SIZE)
#define BLOCK ((uintptr_t)UHMM_HUGE_SIZE)

#define STAT_ADD(c, f, v) \
	atomic_fetch_add_explicit(&(c)->st.f, (v), memory_order_relaxed)

/* How a pending atomic fault is resolved (sd_fpage.how). */
enum {
	AT_NONE = 0,  /* not an atomic to resolve here */
	AT_PLACE,     /* in this device's memory: placement maps it DEV */
	AT_HELD,      /* already held exclusively: install from the snapshot */
	AT_EXCL,      /* take it exclusively */
	AT_MIGRATE,   /* migrate it to this device */
};

static bool pending_atomic(const struct sd_fpage *f)
{
	return !f->done && f->acc == SD_ATOMIC;
}

/* Answers one faulting page. */
static void settle_page(struct sd_compute *c, struct sd_fpage *f, int err)
{
	uhmm__fault_settle(c, f, 1, f->va, f->va + PAGE, err);
}

static void atomic_migrate(struct sd_compute *c, struct sd_fpage *fp, size_t n,
			   bool wide, int tried);

/*
 * Installs EXCL entries for [lo, lo + np pages) from c->xptrs, which
 * make_exclusive filled after read_begin returned @seq.  Stale: install
 * from a snapshot instead (see the top of the file).  Returns 0, -ENOMEM,
 * or the snapshot's error (-EBUSY: it kept going stale; the lanes replay).
 */
static int install_excl(struct sd_compute *c, uintptr_t lo, size_t np, uint32_t seq)
{
	bool flush = false;
	int err = 0;

	pthread_mutex_lock(&c->pt_lock);
	if (uhmm_notifier_read_retry(c->notifier, seq)) {
		pthread_mutex_unlock(&c->pt_lock);
		return uhmm__fault_map_range(c, lo, lo + np * PAGE, 0);
	}
	/* Nothing invalidated the range since read_begin: every page is still
	 * held by us at the address make_exclusive gave, and a revocation
	 * from here on will wait for pt_lock and remove what we install. */
	for (size_t i = 0; i < np; i++) {
		uintptr_t x = (uintptr_t)c->xptrs[i];
		uintptr_t va = lo + i * PAGE;
		if (!x)
			continue; /* not held after all (discarded meanwhile) */
		if (x & (PAGE - 1)) {
			simdev_bug("make_exclusive gave page address %p", (void *)x);
			continue;
		}
		uint64_t pte = PTE_R | PTE_W | PTE_A | PTE_EXCL | (uint64_t)x;
		uint64_t old = uhmm__pt_lookup_locked(c, va);
		if (old == pte)
			continue;
		err = uhmm__pt_set_locked(c, va, pte);
		if (err)
			break;
		/* A SYS entry left in place (uhmm did not invalidate it):
		 * TLBs may cache it, and a read through it would revoke our
		 * own hold.  Shoot it down below. */
		if (old)
			flush = true;
	}
	pthread_mutex_unlock(&c->pt_lock);
	if (flush)
		uhmm__tlb_shootdown(c, lo / PAGE, (lo + np * PAGE - 1) / PAGE);
	return err;
}

/*
 * Takes the run fp[0, n) (consecutive pages, pending atomics) exclusively
 * and installs EXCL entries.  @tried: 0, or the error of a migration
 * already refused for this page (then no fallback, and that is the answer
 * unless exclusive says -EPERM/-EFAULT).
 */
static void atomic_exclusive(struct sd_compute *c, struct sd_fpage *fp, size_t n,
			     int tried)
{
	uintptr_t lo = fp[0].va, hi = fp[n - 1].va + PAGE;

	uint32_t seq = uhmm_notifier_read_begin(c->notifier);
	int err = uhmm_make_exclusive(c->dev, (void *)lo, n, c->xptrs);
	if (!err) {
		STAT_ADD(c, exclusive_pages, n);
		uhmm__fault_settle(c, fp, n, lo, hi, install_excl(c, lo, n, seq));
		return;
	}
	if (n > 1) {
		/* Each page its own answer (pages before a refused one may
		 * be held already: taking them again is harmless). */
		for (size_t i = 0; i < n; i++)
			atomic_exclusive(c, &fp[i], 1, tried);
		return;
	}
	if (err == -EPERM || err == -EFAULT) {
		settle_page(c, fp, err);
		return;
	}
	if (tried) {
		settle_page(c, fp, tried);
		return;
	}
	atomic_migrate(c, fp, 1, false, err);
}

/*
 * Migrates the run fp[0, n) (consecutive pages, pending atomics) to this
 * device and maps it.  @wide: migrate the whole placement run around it if
 * that is MIGRATE_ON_TOUCH (what a non-atomic fault there would do).
 * @tried: as for atomic_exclusive().
 */
static void atomic_migrate(struct sd_compute *c, struct sd_fpage *fp, size_t n,
			   bool wide, int tried)
{
	uintptr_t lo = fp[0].va, hi = fp[n - 1].va + PAGE;
	uintptr_t mlo = lo, mhi = hi;

	if (wide) {
		uintptr_t blk = lo & ~(BLOCK - 1), a, b;
		unsigned pol = uhmm__advice_at(c, SD_ADV_PLACE, lo, blk, blk + BLOCK,
					       &a, &b);
		if (pol == UHMM_SIMDEV_MIGRATE_ON_TOUCH && b >= hi) {
			mlo = a;
			mhi = b;
		}
	}
	/* (MOVE: read-mostly pages move too, their duplicates collapse.) */
	int err = uhmm_migrate(c->ctx, (void *)mlo, mhi - mlo, c->dev, UHMM_MIGRATE_MOVE);
	if (!err) {
		STAT_ADD(c, migrations, 1);
		/* If a CPU touch takes a page back before this maps it, the
		 * entry is SYS without PTE_A: the lane faults again. */
		uhmm__fault_map_run(c, fp, n, lo, hi);
		return;
	}
	if (n > 1 || mlo != lo || mhi != hi) {
		/* Part of the range may be unmanaged, or one page refused:
		 * each faulting page alone. */
		for (size_t i = 0; i < n; i++)
			atomic_migrate(c, &fp[i], 1, false, tried);
		return;
	}
	if (err != -EFAULT && !tried) {
		atomic_exclusive(c, fp, 1, err);
		return;
	}
	settle_page(c, fp, err);
}

/* Decides how each pending atomic of fp[first, last] is resolved, from the
 * snapshot c->snap of [fp[first].va, ...). */
static void classify(struct sd_compute *c, struct sd_fpage *fp, size_t first,
		     size_t last)
{
	uintptr_t lo = fp[first].va;

	for (size_t i = first; i <= last; i++) {
		struct sd_fpage *f = &fp[i];
		if (!pending_atomic(f))
			continue;
		uint64_t e = c->snap[(f->va - lo) / PAGE];
		if (e & (UHMM_RE_DEVICE | UHMM_RE_COHERENT)) {
			/* (Our coherent memory: atomics in place.) */
			f->how = AT_PLACE;
			continue;
		}
		if ((e & UHMM_RE_VALID) && (e & UHMM_RE_EXCLUSIVE)) {
			f->how = AT_HELD;
			continue;
		}
		uintptr_t a, b;
		unsigned pol = uhmm__advice_at(c, SD_ADV_ATOMIC, f->va, f->va,
					       f->va + PAGE, &a, &b);
		bool present = (e & UHMM_RE_VALID) && !(e & UHMM_RE_REMOTE);
		f->how = pol == UHMM_SIMDEV_ATOMIC_EXCLUSIVE ||
				 (pol == UHMM_SIMDEV_ATOMIC_AUTO && present)
			 ? AT_EXCL
			 : AT_MIGRATE;
	}
}

/*
 * Pages the snapshot found held by us already (their EXCL entries were
 * removed by an invalidation that did not end the hold, or never made):
 * install them from the snapshot if it is still current, else take them
 * again.
 */
static void install_held(struct sd_compute *c, struct sd_fpage *fp, size_t first,
			 size_t last, uint32_t seq)
{
	uintptr_t lo = fp[first].va;
	bool flush = false;

	pthread_mutex_lock(&c->pt_lock);
	bool stale = uhmm_notifier_read_retry(c->notifier, seq);
	for (size_t i = first; i <= last; i++) {
		struct sd_fpage *f = &fp[i];
		if (!pending_atomic(f) || f->how != AT_HELD)
			continue;
		uint64_t e = c->snap[(f->va - lo) / PAGE];
		uint64_t pte = stale ? 0 : uhmm__pte_of_entry(c, e);
		if (!(pte & PTE_A)) {
			f->how = AT_EXCL;
			continue;
		}
		uint64_t old = uhmm__pt_lookup_locked(c, f->va);
		f->err = old == pte ? 0 : uhmm__pt_set_locked(c, f->va, pte);
		if (old && old != pte)
			flush = true;
	}
	pthread_mutex_unlock(&c->pt_lock);
	if (flush) /* an entry of another kind was replaced: see install_excl */
		uhmm__tlb_shootdown(c, lo / PAGE, fp[last].va / PAGE);
	for (size_t i = first; i <= last; i++) {
		struct sd_fpage *f = &fp[i];
		if (pending_atomic(f) && f->how == AT_HELD)
			settle_page(c, f, f->err);
	}
}

void uhmm__atomic_resolve(struct sd_compute *c, struct sd_fpage *fp, size_t n)
{
	size_t first = n, last = 0;

	for (size_t i = 0; i < n; i++) {
		fp[i].how = AT_NONE;
		if (pending_atomic(&fp[i])) {
			if (first == n)
				first = i;
			last = i;
		}
	}
	if (first == n)
		return;

	/* Where the pages are: one snapshot over the atomics of the block
	 * (at most 512 pages: fp is one block). */
	uintptr_t lo = fp[first].va, hi = fp[last].va + PAGE;
	struct uhmm_range_req req = {
		.notifier = c->notifier,
		.start = lo,
		.end = hi,
		.flags = UHMM_RF_SNAPSHOT,
		.timeout_ms = 1000,
		.device = c->dev,
		.entries = c->snap,
	};
	STAT_ADD(c, range_fault_calls, 1);
	STAT_ADD(c, range_fault_pages, (hi - lo) / PAGE);
	int err = uhmm_range_fault(c->ctx, &req);
	if (err) {
		/* -EBUSY: kept changing; the lanes replay and fault again. */
		for (size_t i = first; i <= last; i++)
			if (pending_atomic(&fp[i]))
				settle_page(c, &fp[i], err);
		return;
	}
	classify(c, fp, first, last);
	install_held(c, fp, first, last, req.notifier_seq);

	/* Runs of consecutive pages resolved the same way: one call each. */
	for (size_t i = first; i <= last;) {
		unsigned how = fp[i].how;
		if (!pending_atomic(&fp[i]) || (how != AT_EXCL && how != AT_MIGRATE)) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j <= last && pending_atomic(&fp[j]) && fp[j].how == how &&
		       fp[j].va == fp[j - 1].va + PAGE)
			j++;
		if (how == AT_EXCL)
			atomic_exclusive(c, fp + i, j - i, 0);
		else
			atomic_migrate(c, fp + i, j - i, true, 0);
		i = j;
	}
}

UHMM_API int uhmm_simdev_advise_atomics(uhmm_device *dev, void *addr, size_t len,
					enum uhmm_simdev_atomic_policy policy)
{
	struct simdev *sd = uhmm__simdev_of(dev);
	uintptr_t a = (uintptr_t)addr;

	if (!sd || !sd->comp || len == 0 || (a | len) & (UHMM_PAGE_SIZE - 1) ||
	    len > UINTPTR_MAX - a)
		return -EINVAL;
	if (policy != UHMM_SIMDEV_ATOMIC_AUTO && policy != UHMM_SIMDEV_ATOMIC_EXCLUSIVE &&
	    policy != UHMM_SIMDEV_ATOMIC_MIGRATE)
		return -EINVAL;
	return uhmm__advise(sd->comp, SD_ADV_ATOMIC, a, a + len, policy);
}
