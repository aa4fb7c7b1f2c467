/* SPDX-License-Identifier: MIT */
/*
 * exclusive.c - device-exclusive access (the kernel's make_device_exclusive).
 *
 * A page held exclusively stays in system memory but leaves the CPU page
 * table: it is moved (UFFDIO_MOVE) into a reserve slot, where the holder
 * reaches it.  CPU reads and writes of its address then fault, and the
 * service thread revokes (service.c, serve_revoke): the holder is told and
 * fences, the slot's page is moved back, the access proceeds.
 *
 * Page state: LOC_EXCL(holder), dpfn = the slot.  A slot is BUSY in the pool
 * while a page is held; publishing any other location releases it
 * (page.c, drop_copy).
 *
 * Locks: fork_lock (read) around a grab, then page locks in address order,
 * then the pool lock.  Sleeps on page locks, invalidate callbacks and
 * install requests.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "core/internal.h"
#include "core/probes.h"

/* ---- giving pages back (migrations, detach, fork, teardown) ---- */

int uhmm__revoke_range(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
		       size_t n, unsigned dev_id)
{
	uint8_t want[BATCH_PAGES];
	char *srcv[BATCH_PAGES];
	size_t nwant = 0;
	unsigned holder = 0;
	for (size_t i = 0; i < n; i++) {
		const struct uhmm_page *p = range_page_peek(r, idx + i);
		uint32_t w = atomic_load_explicit(&p->word, memory_order_acquire);
		want[i] = pg_excl(w) && (!dev_id || pg_dev(w) == dev_id);
		nwant += want[i];
	}
	if (!nwant)
		return 0; /* the common case: nothing held, no lock taken */
	nwant = 0;
	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *p = range_page(r, idx + i);
		uhmm__page_lock(p);
		uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
		want[i] = pg_excl(w) && (!dev_id || pg_dev(w) == dev_id);
		if (want[i]) {
			srcv[i] = pool_slot(&ctx->pool,
					    atomic_load_explicit(&p->dpfn, memory_order_relaxed));
			holder = pg_dev(w);
			nwant++;
		} else {
			srcv[i] = NULL;
		}
	}
	uintptr_t va = r->start + (idx << PAGE_SHIFT), vend = va + (n << PAGE_SHIFT);
	bool inv = false;
	int err = 0;
	if (nwant) {
		/* One holder is named; several holders in a batch all hear the
		 * REVOKE for the range anyway. */
		inv = uhmm__invalidate_start(ctx, va, vend, UHMM_INV_REVOKE,
					     uhmm__dev_get(ctx, holder), 0);
		struct install_req req = { .r = r, .idx = idx, .n = n, .want = want,
					   .srcv = srcv, .src_is_slots = true };
		uhmm__install_request(ctx, &req);
		if (req.result)
			err = -EFAULT;
		STAT_ADD(ctx, exclusive_revocations, nwant);
	}
	for (size_t i = 0; i < n; i++)
		if (want[i] < 2)
			uhmm__page_unlock(ctx, range_page(r, idx + i));
	uhmm__invalidate_end(ctx, va, vend, inv);
	return err;
}

/* ---- taking pages ---- */

enum { G_KEEP, G_GRAB, G_TRANSFER, G_BUSY, G_FAIL };

/*
 * The pages of the batch at va that UFFDIO_MOVE refused for good (kind[]
 * G_BUSY, held; a THP once shared with an exited fork child: migrate.c,
 * "refused"):
 * each is write-protected (a CPU write waits for us), read through
 * /proc/self/mem, copied into its reserve slot (UFFDIO_COPY), and its CPU
 * copy discarded as uhmm's own, as the no-move migration does: the slot
 * then holds the page as a move would have left it.  Nothing is put back,
 * so nothing is lost if the mapping moves meanwhile (a remake's copy back
 * could).  A page this cannot take stays busy (unprotected).  Returns the
 * pages taken; kind[] says which.
 */
static size_t grab_by_copy(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
			   uintptr_t va, char *slots, uint8_t *kind, size_t n)
{
	if (!ctx->wp || ctx->mem_fd < 0 || pthread_equal(pthread_self(), ctx->service))
		return 0;
	char buf[PAGE_SIZE] __attribute__((aligned(64)));
	size_t taken = 0;
	for (size_t k = 0; k < n; k++) {
		if (kind[k] != G_BUSY)
			continue;
		uintptr_t a = va + (k << PAGE_SHIFT);
		size_t one = 0;
		if (uhmm__uffd_protect_yielding(ctx->uffd, a, PAGE_SIZE))
			continue;
		if (pread(ctx->mem_fd, buf, PAGE_SIZE, (off_t)a) != (ssize_t)PAGE_SIZE ||
		    uhmm__uffd_copy(ctx->pool.ruffd, (uintptr_t)slots + (k << PAGE_SHIFT), buf,
				    PAGE_SIZE, UFFDIO_COPY_MODE_DONTWAKE, true, &one) < 0 ||
		    one != PAGE_SIZE) {
			(void)uhmm__uffd_writeprotect(ctx->uffd, a, PAGE_SIZE, false);
			continue;
		}
		uint8_t gone = 1;
		(void)uhmm__own_discard(ctx, r, idx + k, 1, &gone);
		if (!gone) {
			/* Refused: the page stays where it is, and the slot's
			 * copy goes with the slot (unused). */
			(void)uhmm__uffd_writeprotect(ctx->uffd, a, PAGE_SIZE, false);
			continue;
		}
		kind[k] = G_GRAB;
		taken++;
	}
	return taken;
}

/* Grab pages [idx, idx + n) of r (one 2 MiB block at most) for dev; on
 * the last try (@busy_copy) the pages the move refuses are copied in. */
static int grab_batch(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
		      size_t n, struct uhmm_device *dev, void **out, size_t *busy,
		      bool busy_copy)
{
	uint8_t kind[BATCH_PAGES];
	uintptr_t va = r->start + (idx << PAGE_SHIFT), vend = va + (n << PAGE_SHIFT);

	/* Pages in device memory come home first (unlocked: a migration
	 * takes the locks itself), then everything is locked and decided. */
	for (int attempt = 0;; attempt++) {
		bool home = true;
		for (size_t i = 0; i < n; i++) {
			struct uhmm_page *p = range_page(r, idx + i);
			if (pg_devpriv(atomic_load_explicit(&p->word, memory_order_acquire))) {
				int e = uhmm__migrate_range_to_system(ctx, r, idx + i, 1, 0);
				if (e)
					return e;
			}
		}
		for (size_t i = 0; i < n; i++)
			uhmm__page_lock(range_page(r, idx + i));
		for (size_t i = 0; i < n && home; i++)
			if (pg_devpriv(atomic_load_explicit(&range_page(r, idx + i)->word,
							    memory_order_relaxed)))
				home = false;
		if (home)
			break;
		for (size_t i = 0; i < n; i++)
			uhmm__page_unlock(ctx, range_page(r, idx + i));
		if (attempt == 3)
			return -EBUSY; /* someone keeps migrating them away */
	}
	if (atomic_load(&r->closing) || atomic_load(&r->dead)) {
		for (size_t i = 0; i < n; i++)
			uhmm__page_unlock(ctx, range_page(r, idx + i));
		return -EFAULT;
	}

	size_t ngrab = 0;
	bool poisoned = false;
	for (size_t i = 0; i < n; i++) {
		uint32_t w = atomic_load_explicit(&range_page(r, idx + i)->word,
						  memory_order_relaxed);
		if (pg_loc(w) == LOC_POISON)
			kind[i] = G_FAIL, poisoned = true; /* lost (coherent.c) */
		else if (pg_loc(w) == LOC_EXCL(dev->id))
			kind[i] = G_KEEP;
		else if (pg_excl(w))
			kind[i] = G_TRANSFER; /* the other holder is told below */
		else
			kind[i] = G_GRAB, ngrab++;
	}
	long slot = -1;
	if (ngrab && (slot = uhmm__pool_get(&ctx->pool, n, false)) < 0) {
		for (size_t i = 0; i < n; i++)
			uhmm__page_unlock(ctx, range_page(r, idx + i));
		return -ENOMEM; /* no room in the reserve */
	}

	/* Every other mirror drops the pages (and fences) before they go. */
	bool inv = uhmm__invalidate_start(ctx, va, vend, UHMM_INV_EXCLUSIVE, dev, 0);
	char *slots = slot >= 0 ? pool_slot(&ctx->pool, (size_t)slot) : NULL;
	int err = 0;
	for (size_t i = 0; i < n;) {
		if (kind[i] != G_GRAB) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < n && kind[j] == G_GRAB)
			j++;
		size_t done = 0;
		long ret = uhmm__uffd_move_out(ctx->pool.ruffd, ctx->pagemap_fd, (uintptr_t)slots + (i << PAGE_SHIFT),
					   va + (i << PAGE_SHIFT), (j - i) << PAGE_SHIFT,
					   UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, &done);
		size_t k = i + (done >> PAGE_SHIFT);
		if (ret >= 0) {
			i = j;
		} else if (ret == -EBUSY) {
			kind[k] = G_BUSY; /* shared with a fork child, or pinned */
			(*busy)++;
			i = k + 1;
		} else if (j - k > 1) {
			/* The run may cross two mappings (mprotect split the
			 * range): the first page alone, then go on. */
			size_t one;
			ret = uhmm__uffd_move_out(ctx->pool.ruffd, ctx->pagemap_fd, (uintptr_t)slots + (k << PAGE_SHIFT),
					      va + (k << PAGE_SHIFT), PAGE_SIZE,
					      UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, &one);
			if (ret == -EBUSY) {
				kind[k] = G_BUSY;
				(*busy)++;
			} else if (ret < 0) {
				kind[k] = G_FAIL;
				err = -EFAULT;
			}
			i = k + 1;
		} else {
			kind[k] = G_FAIL;
			err = -EFAULT;
			i = j;
		}
	}
	/* The last try: pages the kernel will not let move are copied in. */
	if (busy_copy && slots && *busy)
		*busy -= grab_by_copy(ctx, r, idx, va, slots, kind, n);
	/* A hole becomes a zero page the device can work on; a page the
	 * application discarded (its zap may still be coming) too. */
	unsigned char vec[BATCH_PAGES];
	if (slots && mincore(slots, n << PAGE_SHIFT, vec))
		memset(vec, 1, n);
	for (size_t i = 0; i < n; i++) {
		if (kind[i] != G_GRAB)
			continue;
		char *s = slots + (i << PAGE_SHIFT);
		uint32_t w = atomic_load_explicit(&range_page(r, idx + i)->word,
						  memory_order_relaxed);
		size_t one;
		if (!(vec[i] & 1)) {
			if (uhmm__uffd_copy(ctx->pool.ruffd, (uintptr_t)s, ctx->zeros,
					    PAGE_SIZE, 0, true, &one) < 0) {
				kind[i] = G_FAIL;
				err = -ENOMEM;
			}
		} else if (w & PG_DISCARD) {
			memset(s, 0, PAGE_SIZE);
		}
	}

	size_t grabbed = 0;
	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *p = range_page(r, idx + i);
		uint64_t s = atomic_load_explicit(&p->dpfn, memory_order_relaxed);
		if (kind[i] == G_GRAB) {
			s = (size_t)slot + i;
			grabbed++;
		} else if (kind[i] == G_FAIL || kind[i] == G_BUSY) {
			if (slot >= 0)
				uhmm__pool_put(&ctx->pool, (size_t)slot + i, false);
			uhmm__page_unlock(ctx, p);
			if (out)
				out[i] = NULL;
			continue;
		} else if (slot >= 0) {
			uhmm__pool_put(&ctx->pool, (size_t)slot + i, false); /* unused */
		}
		if (out)
			out[i] = pool_slot(&ctx->pool, s);
		if (!uhmm__page_publish_unlock(ctx, p, LOC_EXCL(dev->id), s) && out)
			out[i] = NULL; /* discarded meanwhile: not held */
	}
	uhmm__invalidate_end(ctx, va, vend, inv);
	STAT_ADD(ctx, exclusive_grabs, grabbed);
	return err ? err : poisoned ? -EHWPOISON : 0;
}

/* Check the arguments of the two calls below and enter dev's context. */
static int excl_enter(uhmm_device *dev, uintptr_t a, size_t npages, uintptr_t *end,
		      struct uhmm_ctx **ctx)
{
	if (!a || !npages || (a & (PAGE_SIZE - 1)) || npages > (SIZE_MAX >> PAGE_SHIFT) ||
	    a + (npages << PAGE_SHIFT) < a)
		return -EINVAL;
	*end = a + (npages << PAGE_SHIFT);
	return uhmm__dev_enter(dev, ctx);
}

UHMM_API int uhmm_make_exclusive(uhmm_device *dev, void *addr, size_t npages,
				 void **pages)
{
	uintptr_t a = (uintptr_t)addr, end;
	struct uhmm_ctx *ctx;
	int err = excl_enter(dev, a, npages, &end, &ctx);
	if (err)
		return err;
	/* Held while pages are given to it: a detach waits for us, so its
	 * evacuation revokes everything we grab. */
	err = uhmm__dev_hold(ctx, dev);
	if (err)
		goto out_ctx;
	if (!ctx->has_move) {
		err = -EOPNOTSUPP;
		goto out;
	}
	err = uhmm__ranges_cover(ctx, a, end);
	if (err) {
		/* Say why: not anonymous private memory, or just not managed. */
		int kind = uhmm__check_anon_private(a, end);
		if (kind == -EOPNOTSUPP && uhmm__range_writable(ctx, a, end) == 0)
			err = -EOPNOTSUPP;
		goto out;
	}
	err = uhmm__range_writable(ctx, a, end);
	if (err)
		goto out;

	pthread_rwlock_rdlock(&ctx->fork_lock);
	bool poisoned = false;
	for (uintptr_t x = a; x < end && !err;) {
		struct uhmm_range *r = uhmm__range_get(ctx, x);
		if (!r) {
			err = -EFAULT;
			break;
		}
		size_t room = (UHMM_HUGE_SIZE - (x & (UHMM_HUGE_SIZE - 1))) >> PAGE_SHIFT;
		size_t left = (range_end(r) - x) >> PAGE_SHIFT;
		size_t n = (end - x) >> PAGE_SHIFT;
		n = n < room ? n : room;
		n = n < left ? n : left;
		size_t busy = 0;
		void **out = pages ? pages + ((x - a) >> PAGE_SHIFT) : NULL;
		size_t idx = (x - r->start) >> PAGE_SHIFT;
		err = grab_batch(ctx, r, idx, n, dev, out, &busy, false);
		if (err == -EHWPOISON) {
			/* A lost page: not held; the others are, go on. */
			poisoned = true;
			err = 0;
		}
		if (!err && busy) {
			/* Unshare (copy-on-write with a fork child) and retry:
			 * only the pages still present.  The grabbed ones are
			 * holes now, and a populate faulting on one would be
			 * served as a CPU touch (full mode: the grab revoked)
			 * or refused (user-mode-only, SIGBUS: EFAULT, the
			 * pages after it left shared). */
			uhmm__unshare_present(x, n);
			busy = 0;
			err = grab_batch(ctx, r, idx, n, dev, out, &busy, false);
			if (err == -EHWPOISON)
				err = 0;
			/* Still refused: pages of a large folio the kernel
			 * will not split (migrate.c); copied into their slots
			 * instead (grab_by_copy). */
			if (!err && busy) {
				busy = 0;
				err = grab_batch(ctx, r, idx, n, dev, out, &busy, true);
				if (err == -EHWPOISON)
					err = 0;
			}
			if (!err && busy)
				err = -EBUSY;
		}
		uhmm__range_put(r);
		x += n << PAGE_SHIFT;
	}
	if (!err && poisoned)
		err = -EHWPOISON;
	pthread_rwlock_unlock(&ctx->fork_lock);
	UHMM_PROBE(exclusive_grab, dev->id, a, npages, err);
out:
	uhmm__dev_release(dev);
out_ctx:
	uhmm__ctx_exit(ctx);
	return err;
}

UHMM_API int uhmm_check_exclusive(uhmm_device *dev, void *addr, size_t npages)
{
	uintptr_t a = (uintptr_t)addr, end;
	struct uhmm_ctx *ctx;
	int err = excl_enter(dev, a, npages, &end, &ctx);
	if (err)
		return err;
	int held = 1;
	for (uintptr_t x = a; x < end && held == 1;) {
		struct uhmm_range *r = uhmm__range_get(ctx, x);
		if (!r) {
			held = -EFAULT;
			break;
		}
		uintptr_t e = range_end(r) < end ? range_end(r) : end;
		for (; x < e; x += PAGE_SIZE) {
			uint32_t w = atomic_load_explicit(
				&range_page_peek(r, (x - r->start) >> PAGE_SHIFT)->word,
				memory_order_acquire);
			if (pg_loc(w) != LOC_EXCL(dev->id)) {
				held = 0;
				break;
			}
		}
		uhmm__range_put(r);
	}
	uhmm__ctx_exit(ctx);
	return held;
}
