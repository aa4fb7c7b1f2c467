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
 * Which one is the context's policy's (src/policy, uhmm/policy.h): each
 * such fault is asked of uhmm_device_fault_policy() with
 * UHMM_POL_F_ATOMIC_FAR, what the CPU page table says
 * (UHMM_POL_F_CPU_PRESENT: a snapshot range fault says VALID, neither
 * DEVICE nor REMOTE) and the page's atomics advice (later advice over a
 * range replaces earlier: UHMM_POL_F_ATOMIC_EXCLUSIVE / _MIGRATE), and the
 * answer is UHMM_POL_EXCLUSIVE or UHMM_POL_MIGRATE with a span.  The
 * built-in rule: EXCLUSIVE and MIGRATE advice say it; AUTO (the default)
 * takes pages the CPU has in its page table exclusively and migrates the
 * others.  This file executes the verb.  Fallbacks (mechanism, not
 * choice): make_exclusive -EPERM/-EFAULT is the lanes' answer (the kernel
 * ends); other refusals (-EBUSY: the kernel would not let the page go)
 * migrate; a refused migration (not -EFAULT) tries exclusive; when both
 * were refused the lanes get the error of the second attempt.  A page uhmm
 * cannot take
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
#include <time.h>

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
			   uintptr_t mlo, uintptr_t mhi, int tried);

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
	atomic_migrate(c, fp, 1, fp->va, fp->va + PAGE, err);
}

/*
 * Migrates the run fp[0, n) (consecutive pages, pending atomics) to this
 * device and maps it: [mlo, mhi), which holds the run (the policy's span:
 * the whole placement run around it, what a non-atomic fault there would
 * move, or the run alone).  @tried: as for atomic_exclusive().
 */
static void atomic_migrate(struct sd_compute *c, struct sd_fpage *fp, size_t n,
			   uintptr_t mlo, uintptr_t mhi, int tried)
{
	uintptr_t lo = fp[0].va, hi = fp[n - 1].va + PAGE;

	if (mlo > lo || mhi < hi) {
		mlo = lo;
		mhi = hi;
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
			atomic_migrate(c, &fp[i], 1, fp[i].va, fp[i].va + PAGE, tried);
		return;
	}
	if (err != -EFAULT && !tried) {
		atomic_exclusive(c, fp, 1, err);
		return;
	}
	settle_page(c, fp, err);
}

/*
 * Decides how each pending atomic of fp[first, last] is resolved, from the
 * snapshot c->snap of [fp[first].va, ...): in place (our memory), from the
 * snapshot (held already), or as the context's policy says for the others
 * (uhmm_device_fault_policy with UHMM_POL_F_ATOMIC_FAR: exclusive or
 * migrate, and the span to migrate, kept in c->pol_a by fpage index in
 * c->pol_i).  Returns the policy's throttle (ns).
 */
static uint64_t classify(struct sd_compute *c, struct sd_fpage *fp, size_t first,
			 size_t last)
{
	uintptr_t lo = fp[first].va;
	struct uhmm_pol_dev_fault *q = c->pol_f;
	struct uhmm_pol_dev_act *a = c->pol_a;
	size_t m = 0;

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
		uintptr_t blk = f->va & ~(BLOCK - 1), plo, phi, x, y;
		unsigned place = uhmm__advice_at(c, SD_ADV_PLACE, f->va, blk, blk + BLOCK,
						 &plo, &phi);
		unsigned pol = uhmm__advice_at(c, SD_ADV_ATOMIC, f->va, f->va,
					       f->va + PAGE, &x, &y);
		bool present = (e & UHMM_RE_VALID) && !(e & UHMM_RE_REMOTE);
		struct uhmm_page_info pi;
		uhmm_loc where = 0;
		if (!uhmm_page_query(c->ctx, (void *)f->va, &pi) &&
		    pi.where == UHMM_WHERE_DEVICE && pi.device)
			where = uhmm_device_id(pi.device);
		q[m] = (struct uhmm_pol_dev_fault){
			.addr = f->va, .lo = plo, .hi = phi,
			.access = UHMM_POL_ATOMIC,
			.hint = place == UHMM_SIMDEV_MAP_REMOTE ? UHMM_POL_HINT_MAP_REMOTE
								: UHMM_POL_HINT_NONE,
			.where = where,
			.flags = UHMM_POL_F_ATOMIC_FAR |
				 (present ? UHMM_POL_F_CPU_PRESENT : 0) |
				 (pol == UHMM_SIMDEV_ATOMIC_EXCLUSIVE ? UHMM_POL_F_ATOMIC_EXCLUSIVE : 0) |
				 (pol == UHMM_SIMDEV_ATOMIC_MIGRATE ? UHMM_POL_F_ATOMIC_MIGRATE : 0),
		};
		c->pol_i[m++] = (uint32_t)i;
	}
	if (!m)
		return 0;
	if (uhmm_device_fault_policy(c->dev, q, m, a) < 0) {
		/* (Only if the device is going away: try a migration, which
		 * fails with what is wrong.) */
		for (size_t k = 0; k < m; k++)
			a[k] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MIGRATE,
							  .lo = q[k].addr, .hi = q[k].addr + PAGE };
	}
	uint64_t nap = 0;
	for (size_t k = 0; k < m; k++) {
		struct sd_fpage *f = &fp[c->pol_i[k]];
		f->how = a[k].action == UHMM_POL_EXCLUSIVE ? AT_EXCL : AT_MIGRATE;
		f->pol = (uint32_t)k;
		if (a[k].delay_ns > nap)
			nap = a[k].delay_ns;
	}
	return nap;
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
	uint64_t nap = classify(c, fp, first, last);
	install_held(c, fp, first, last, req.notifier_seq);
	if (nap) {
		/* Throttled by the policy (as fault.c's resolve_block). */
		struct timespec ts = { (time_t)(nap / 1000000000ull), (long)(nap % 1000000000ull) };
		nanosleep(&ts, NULL);
		STAT_ADD(c, throttle_ns, nap);
	}

	/* Runs of consecutive pages resolved the same way: one call each. */
	for (size_t i = first; i <= last;) {
		unsigned how = fp[i].how;
		if (!pending_atomic(&fp[i]) || (how != AT_EXCL && how != AT_MIGRATE)) {
			i++;
			continue;
		}
		/* (A run to migrate has one span: the policy's.) */
		const struct uhmm_pol_dev_act *ai = &c->pol_a[fp[i].pol];
		size_t j = i + 1;
		while (j <= last && pending_atomic(&fp[j]) && fp[j].how == how &&
		       fp[j].va == fp[j - 1].va + PAGE &&
		       (how == AT_EXCL || (c->pol_a[fp[j].pol].lo == ai->lo &&
					   c->pol_a[fp[j].pol].hi == ai->hi)))
			j++;
		if (how == AT_EXCL)
			atomic_exclusive(c, fp + i, j - i, 0);
		else
			atomic_migrate(c, fp + i, j - i, ai->lo, ai->hi, 0);
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
