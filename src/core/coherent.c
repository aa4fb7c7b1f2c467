/* SPDX-License-Identifier: MIT */
/*
 * coherent.c - coherent device memory, and pages lost on a device.
 *
 * Coherent memory (the kernel's MEMORY_DEVICE_COHERENT) is device memory
 * the CPU can address.  A backend declares it with ops->coherent_mem: an
 * anonymous private mapping of its own (simdev's memory, possibly bound
 * to a NUMA node), frame n at base + n * 4K.  uhmm registers it with the
 * reserve's userfaultfd in write-protect mode (no missing faults: a hole
 * in it is an ordinary zero-fill for the backend's copy engine), which
 * makes it a destination of UFFDIO_MOVE.
 *
 * A page migrated to a coherent device is copied by the device's copy
 * engine into a frame, as for private memory; then the frame's page is
 * *lent*: moved into place at the page's address (UFFDIO_MOVE by the
 * service thread, an install request publishing LOC_COH with the frame).
 * The CPU then reads and writes it in place without a fault, a device
 * mirror maps it by address (uhmm_range_fault: VALID with
 * UHMM_RE_COHERENT), and the frame stays the device's (counted in its
 * frames, listed in its LRU, evicted like private pages).
 *
 * To move such a page anywhere (home, another device, eviction) it is
 * first *reclaimed*: moved back out of the address into its frame (under
 * the page lock, after the mirrors were told), which leaves an ordinary
 * device-private page (LOC_DEV) of the same device, absent from the CPU
 * page table; everything from there is the private-memory path.  LOC_DEV
 * on a coherent device is thus a state of its own too (a page lent
 * without success stays there): it behaves exactly as private memory.
 *
 * Poisoned pages: a backend reports a frame lost (uhmm_device_page_lost).
 * The page using it, found with the eviction walk limited to that frame,
 * becomes LOC_POISON under its lock (the mirrors told first): its data is
 * gone, a UFFDIO_POISON marker at its address makes a CPU access raise
 * SIGBUS with BUS_MCEERR_AR (as the kernel does for a hardware-poisoned
 * page), a device access (range fault) fails with -EHWPOISON, a migration
 * skips it and reports -EHWPOISON, and a discard (MADV_DONTNEED, munmap)
 * clears it: the kernel's zap removes the marker and the REMOVE/UNMAP
 * handler publishes the page as an empty system page.
 *
 * Locks: page locks (held by the callers), fork_lock for reading around a
 * reclaim (migrate.c); uhmm_ctx.coh_pop_lock, a spin lock innermost of
 * all, between a reclaim's populate and the service thread (populate()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/probes.h"

int uhmm__coh_attach(struct uhmm_ctx *ctx, struct uhmm_device *d)
{
	if (!d->ops->coherent_mem)
		return 0;
	void *base = NULL;
	size_t len = 0;
	int err = d->ops->coherent_mem(d->priv, &base, &len);
	if (err == -EOPNOTSUPP)
		return 0; /* this one is private */
	if (err)
		return err;
	if (!base || !len || (((uintptr_t)base | len) & (PAGE_SIZE - 1)))
		return -EINVAL;
	if (!ctx->has_move)
		return -EOPNOTSUPP; /* nothing moves a frame into place */
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)base, .len = len },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(ctx->pool.ruffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	d->coh_base = base;
	d->coh_len = len;
	return 0;
}

void uhmm__coh_detach(struct uhmm_ctx *ctx, struct uhmm_device *d)
{
	if (d->coh_base)
		(void)uhmm__uffd_unregister(ctx->pool.ruffd, (uintptr_t)d->coh_base,
					    d->coh_len);
	d->coh_base = NULL;
}

/*
 * Reclaim by copy, for a page in place in a read-only mapping (UFFDIO_MOVE
 * moves only out of writable ones: -EINVAL): its bytes are read into the
 * frame through /proc/self/mem (which never waits on a userfault: a page
 * zapped meanwhile fails the read, and is zeros), then the page is
 * discarded at its address (MADV_DONTNEED), an own discard (PG_OWNDISC,
 * as migrate.c's no-move path: the REMOVE event consumes the mark instead
 * of zapping the page we hold).  Not on the service thread, whose madvise
 * would wait for itself to read the event: -EBUSY there (the page stays
 * in place).  Returns 0, -EINVAL (the mapping is not read-only: gone or
 * changed), -EBUSY, or madvise's error (the page stays in place).
 */
static int reclaim_by_copy(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx, char *f)
{
	uintptr_t va = r->start + (idx << PAGE_SHIFT);
	if (pthread_equal(pthread_self(), ctx->service) || ctx->mem_fd < 0)
		return -EBUSY;
	if (uhmm__range_writable(ctx, va, va + PAGE_SIZE) != -EPERM)
		return -EINVAL;
	if (pread(ctx->mem_fd, f, PAGE_SIZE, (off_t)va) != (ssize_t)PAGE_SIZE)
		(void)madvise(f, PAGE_SIZE, MADV_DONTNEED); /* zapped: zeros */
	uint8_t sel = 1;
	int err = uhmm__own_discard(ctx, r, idx, 1, &sel);
	if (err)
		(void)madvise(f, PAGE_SIZE, MADV_DONTNEED); /* in place still */
	return err;
}

/*
 * Breaking a fork child's sharing of a page in place: MADV_POPULATE_WRITE
 * of it, while we hold the page.  An application discard of the page
 * (MADV_DONTNEED: REMOVE read, the page marked ZAPPED, then the kernel's
 * zap) can come at any moment before or during it, and then the populate
 * is a missing userfault on the page we hold.  The service thread parks
 * a fault on a held page until its holder unlocks: here that was for ever
 * (uhmm-torture --coherent hung).  So the page says PG_POPULATE while the
 * populate runs, and the service thread serves a missing fault on such a
 * page with zeros (what the discard left; it clears ZAPPED: the discard
 * is applied, and what the application writes from then on is the page's
 * data, moved out with it).  coh_pop_lock makes "the flag is set" and the
 * fill one step for the service thread: the owner clears the flag under
 * it, so no fill lands after the owner went on to move the page out
 * (which would leave zeros in place of a page on the device).  The lock
 * (uhmm_ctx.coh_pop_lock, a spin lock: zero is unlocked) is held for a
 * flag change or one fill ioctl, never across a wait.
 */
_Atomic(uhmm__coh_populate_hook_fn) uhmm__coh_populate_hook;

/* coh_pop_lock: a spin lock (held for a flag change, or one fill ioctl). */
static void pop_lock(struct uhmm_ctx *ctx)
{
	while (atomic_exchange_explicit(&ctx->coh_pop_lock, 1, memory_order_acquire))
		sched_yield();
}

static void pop_unlock(struct uhmm_ctx *ctx)
{
	atomic_store_explicit(&ctx->coh_pop_lock, 0, memory_order_release);
}

static void populate(struct uhmm_ctx *ctx, struct uhmm_page *p, uintptr_t va)
{
	pop_lock(ctx);
	atomic_fetch_or_explicit(&p->word, PG_POPULATE, memory_order_release);
	pop_unlock(ctx);
	uhmm__coh_populate_hook_fn hook =
		atomic_load_explicit(&uhmm__coh_populate_hook, memory_order_acquire);
	if (unlikely(hook))
		hook(ctx, va); /* tests: the application discards here */
	(void)madvise((void *)va, PAGE_SIZE, MADV_POPULATE_WRITE);
	pop_lock(ctx);
	atomic_fetch_and_explicit(&p->word, ~PG_POPULATE, memory_order_release);
	pop_unlock(ctx);
}

bool uhmm__coh_serve_populate(struct uhmm_ctx *ctx, struct uhmm_page *p, uintptr_t pa,
			      uint64_t flags)
{
	if (flags & UFFD_PAGEFAULT_FLAG_WP)
		return false; /* not a discarded page: parked as usual */
	pop_lock(ctx);
	uint32_t w = atomic_load_explicit(&p->word, memory_order_acquire);
	if ((w & (PG_LOCKED | PG_POPULATE)) != (PG_LOCKED | PG_POPULATE)) {
		pop_unlock(ctx);
		return false;
	}
	/* Missing while in place: zapped (a discard; the REMOVE was handled
	 * before the zap, so the page is marked ZAPPED).  Zeros, and the
	 * waiters woken: the populate goes on.  EEXIST (filled already by
	 * an earlier fault of the two), EAGAIN (an event to read first: the
	 * thread faults again after the loop has read it): just the wake.
	 * No events are read here, so no new ZAPPED mark is cleared. */
	size_t done = 0;
	long ret = uhmm__uffd_copy(ctx->uffd, pa, ctx->zeros, PAGE_SIZE, 0, false, &done);
	if (ret >= 0 && done == PAGE_SIZE)
		uhmm__page_unzap(ctx, p);
	else
		uhmm__uffd_wake(ctx->uffd, pa, PAGE_SIZE);
	pop_unlock(ctx);
	STAT_INC(ctx, cpu_faults);
	return true;
}

int uhmm__coh_reclaim(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx)
{
	struct uhmm_page *p = range_page(r, idx);
	uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
	UHMM_ASSERT((w & PG_LOCKED) && pg_coh(w));
	struct uhmm_device *d = uhmm__dev_get(ctx, pg_dev(w));
	if (!d || !d->coh_base)
		return -ENODEV;
	uint64_t dpfn = atomic_load_explicit(&p->dpfn, memory_order_relaxed);
	char *f = coh_frame(d, dpfn);
	uintptr_t va = r->start + (idx << PAGE_SHIFT);
	/* The range was unmapped: its address may hold a new mapping
	 * already, whose page a move would carry off (a new mapping read
	 * zeros in uhmm-torture --coherent).  The page stays; the unmap's
	 * event releases it. */
	if (atomic_load_explicit(&r->dead, memory_order_acquire))
		return -EFAULT;
	int err = 0;
	unsigned char v = 1;
	if (mincore((void *)va, PAGE_SIZE, &v) == 0 && !(v & 1)) {
		/* Not in place: the kernel zapped it (a discard whose event
		 * is on its way).  What it holds is zeros. */
		(void)madvise(f, PAGE_SIZE, MADV_DONTNEED);
	} else {
		for (int attempt = 0;; attempt++) {
			size_t done = 0;
			long ret = uhmm__uffd_move_out(ctx->pool.ruffd, ctx->pagemap_fd,
						       (uintptr_t)f, va, PAGE_SIZE,
						       UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, &done);
			if (ret >= 0)
				break;
			if (attempt == 2) {
				err = (int)ret;
				break;
			}
			if (ret == -EINVAL) {
				/* A read-only mapping: by copy. */
				err = reclaim_by_copy(ctx, r, idx, f);
				break;
			}
			if (ret == -EEXIST) {
				/* The frame kept a copy (the lend copied
				 * instead of moving): the page is the truth. */
				(void)madvise(f, PAGE_SIZE, MADV_DONTNEED);
			} else if (ret == -EBUSY) {
				/* Shared with a fork child (fork leaves
				 * coherent pages in place, copy-on-write):
				 * a write of our own breaks the sharing.
				 * The page may be discarded before or during
				 * the populate, which then waits in a
				 * userfault on the page we hold: the service
				 * thread serves that one with zeros
				 * (PG_POPULATE, uhmm__coh_serve_populate).
				 * A page seen discarded is taken as zeros at
				 * once, as above. */
				uint32_t pw = atomic_load_explicit(&p->word,
								   memory_order_relaxed);
				if ((pw & PG_ZAPPED) ||
				    (mincore((void *)va, PAGE_SIZE, &v) == 0 && !(v & 1))) {
					(void)madvise(f, PAGE_SIZE, MADV_DONTNEED);
					break;
				}
				populate(ctx, p, va);
			} else {
				err = (int)ret;
				break;
			}
		}
	}
	if (err)
		return err;
	atomic_fetch_and_explicit(&p->word, ~PG_COH, memory_order_relaxed);
	atomic_fetch_sub_explicit(&d->coh_pages, 1, memory_order_relaxed);
	return 0;
}

void uhmm__coh_lend(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
		    size_t n, struct uhmm_device *d, const uint64_t *dpfn, uint8_t *want)
{
	char *srcv[BATCH_PAGES];
	size_t lent = 0, first = SIZE_MAX;
	bool linear = true; /* frame of page i at frame(first) + (i - first) */
	for (size_t i = 0; i < n; i++) {
		srcv[i] = want[i] == 1 ? coh_frame(d, dpfn[i]) : NULL;
		if (want[i] != 1)
			continue;
		lent++;
		if (first == SIZE_MAX)
			first = i;
		else if (dpfn[i] - dpfn[first] != i - first)
			linear = false;
	}
	if (!lent)
		return;
	struct install_req req = { .r = r, .idx = idx, .n = n, .want = want,
				   .srcv = srcv, .src_is_slots = true,
				   .loc = LOC_COH(d->id), .dpfnv = dpfn };
	/* The allocator gives adjacent frames as a rule: then the frames are
	 * one source, and the install moves whole runs with one call each
	 * (page by page otherwise: a call each).  (src is only read at the
	 * pages wanted, which lie inside the mapping.) */
	if (linear && dpfn[first] >= first) {
		req.srcv = NULL;
		req.src = coh_frame(d, dpfn[first] - first);
	}
	uhmm__install_request(ctx, &req);
}

/* UFFDIO_POISON at va, waiting out a change of the address space. */
static void poison_at(struct uhmm_ctx *ctx, uintptr_t va)
{
	if (!ctx->has_poison)
		return; /* (then a CPU access reads zeros: docs/ARCHITECTURE.md) */
	uint64_t t0 = 0;
	for (;;) {
		int e = uhmm__uffd_poison(ctx->uffd, va, PAGE_SIZE);
		if (e != -EAGAIN || uhmm__settle_expired(&t0))
			return;
		sched_yield();
	}
}

void uhmm__poison_locked(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx)
{
	struct uhmm_page *p = range_page(r, idx);
	uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
	uintptr_t va = r->start + (idx << PAGE_SHIFT);
	if (pg_coh(w)) {
		/* In place: out of the page table first (into its frame,
		 * whose content is dropped: the data is lost). */
		if (uhmm__coh_reclaim(ctx, r, idx) == 0) {
			struct uhmm_device *d = uhmm__dev_get(ctx, pg_dev(w));
			if (d)
				(void)madvise(coh_frame(d, atomic_load_explicit(
							      &p->dpfn, memory_order_relaxed)),
					      PAGE_SIZE, MADV_DONTNEED);
		}
	}
	/* The kernel's poison marker: a CPU access gets the kernel's SIGBUS,
	 * with BUS_MCEERR_AR where it has CONFIG_MEMORY_FAILURE, BUS_ADRERR
	 * elsewhere, which uhmm's SIGBUS handler then reports as the former
	 * (sigbus.c: the address is noted first). */
	bool noted = uhmm__poison_note(p, va) == 0;
	/* (Not at the address of a dead range: a new mapping may be there.) */
	if (!atomic_load_explicit(&r->dead, memory_order_acquire))
		poison_at(ctx, va);
	STAT_INC(ctx, poisoned_pages);
	UHMM_PROBE(poison, pg_dev(atomic_load_explicit(&p->word, memory_order_relaxed)),
		   atomic_load_explicit(&p->dpfn, memory_order_relaxed), va);
	/* The frame goes back to the backend with the publication (it said
	 * the frame is bad: whether it reuses it is its business). */
	if (!uhmm__page_publish_unlock(ctx, p, LOC_POISON, 0) && noted)
		uhmm__poison_forget(p); /* discarded meanwhile: not poisoned */
}

/* A CPU fault met a poisoned page whose marker is gone (service.c). */
void uhmm__poison_fault(struct uhmm_ctx *ctx, uintptr_t addr)
{
	poison_at(ctx, addr & ~(PAGE_SIZE - 1)); /* (and wakes the thread) */
}

bool uhmm__poisoned_in(struct uhmm_ctx *ctx, uintptr_t a, size_t len)
{
	if (!atomic_load_explicit(&ctx->poisoned_now, memory_order_relaxed))
		return false;
	for (uintptr_t x = a; x < a + len;) {
		struct uhmm_range *r = uhmm__range_get(ctx, x);
		if (!r) {
			x += PAGE_SIZE;
			continue;
		}
		uintptr_t e = range_end(r) < a + len ? range_end(r) : a + len;
		bool found = false;
		for (; x < e && !found;) {
			size_t i = (x - r->start) >> PAGE_SHIFT;
			if (!range_blk_present(r, i)) {
				x += range_blk_left(r, i) << PAGE_SHIFT;
				continue;
			}
			found = pg_loc(atomic_load_explicit(&range_page_peek(r, i)->word,
							    memory_order_relaxed)) == LOC_POISON;
			x += PAGE_SIZE;
		}
		uhmm__range_put(r);
		if (found)
			return true;
	}
	return false;
}

/* ---- what a backend may report ---- */

static int page_lost(uhmm_device *dev, uint64_t dpfn, uintptr_t va)
{
	struct uhmm_ctx *ctx;
	int err = uhmm__backend_call_enter(dev, &ctx);
	if (err)
		return err;
	/* The eviction walk, limited to the frame, finds its page (there is
	 * no reverse map); a page someone holds is waited for, as
	 * uhmm_device_evict_frames does. */
	uint64_t t0 = 0;
	for (;;) {
		uint32_t seen = atomic_load_explicit(&ctx->dev_freed, memory_order_acquire);
		struct uhmm_victim v = { .dev = dev->id, .lo = dpfn, .hi = dpfn + 1,
					 .poison = true, .va = va };
		uhmm__evict(ctx, &v, 1, 0, 0);
		if (v.moved) {
			err = 0;
			break;
		}
		if (!v.busy && !v.inflight) {
			err = -ENOENT; /* no page uses the frame */
			break;
		}
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

UHMM_API int uhmm_device_page_lost(uhmm_device *dev, uint64_t dpfn)
{
	return page_lost(dev, dpfn, 0);
}

UHMM_API int uhmm_device_page_lost_at(uhmm_device *dev, uint64_t dpfn, const void *addr)
{
	uintptr_t va = (uintptr_t)addr & ~(uintptr_t)(PAGE_SIZE - 1);
	if (!va)
		return -EINVAL;
	return page_lost(dev, dpfn, va);
}
