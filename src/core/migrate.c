/* SPDX-License-Identifier: MIT */
/*
 * migrate.c - moving pages between system memory and devices.
 *
 * A batch is at most one 2 MiB block of one range.  Its phases:
 *
 *   migrate_collect   lock the pages in address order; decide which move
 *   (alloc)           take device pages for them (fail: nothing changed)
 *   (invalidate)      tell the mirrors; a device fences before we go on
 *   migrate_unmap     take the pages out of the CPU page table (UFFDIO_MOVE
 *                     into EMPTY reserve slots).  From here a CPU access
 *                     faults and waits on the page lock, so no write can
 *                     land after the copy reads the page (hard point 2).
 *   migrate_copy      the destination's copy engine copies; holes become
 *                     zeroed device pages without a copy
 *   migrate_finalize  publish the new location and unlock; pages whose copy
 *                     failed go back to where they were, with their data
 *
 * Locks: fork_lock (read, around each batch toward a device), then page
 * locks in address order.  Sleeps on page locks, the copy engine, the pool
 * (EMPTY slots) and install requests served by the service thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/log.h"

/* ---- running copies ---- */

/* Run a batch on one device's copy engine, timing it.  Per-copy status in
 * the array; returns the first error or 0. */
int uhmm__copy_run(struct uhmm_ctx *ctx, struct uhmm_device *dev,
		   struct uhmm_copy *c, size_t n)
{
	if (!n)
		return 0;
	uint64_t t0 = uhmm__now_ns();
	uhmm_fence_t fence;
	int err = dev->ops->copy_submit(dev->priv, c, n, &fence);
	if (err) {
		for (size_t i = 0; i < n; i++)
			c[i].status = (int16_t)err;
	} else {
		err = dev->ops->copy_wait(dev->priv, fence);
	}
	STAT_ADD(ctx, copy_ns, uhmm__now_ns() - t0);
	STAT_INC(ctx, copy_batches);
	if (err)
		STAT_INC(ctx, copy_errors);
	return err;
}

/*
 * Copy pages [idx, idx + n) of r (locked, all device-resident) to buf
 * (page i at buf + i * 4K).  Pages whose copy fails twice get want[i] = 0.
 * Returns 0 or the first error.
 */
int uhmm__fetch_pages(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
		      size_t n, char *buf, uint8_t *want)
{
	struct uhmm_copy c[BATCH_PAGES];
	size_t map[BATCH_PAGES];
	int first_err = 0;
	size_t lost = 0;
	/* want[]: 1 to fetch, 5 fetched, 4 failed (retry), 0 given up. */
	for (int attempt = 0; attempt < 3; attempt++) {
		bool again = false;
		/* One copy batch per device met, in the order pages appear. */
		for (size_t first = 0; first < n; first++) {
			if (want[first] != 1)
				continue;
			unsigned dev = pg_devpriv(atomic_load_explicit(
				&range_page(r, idx + first)->word, memory_order_relaxed));
			size_t nc = 0;
			for (size_t i = first; i < n; i++) {
				struct uhmm_page *p = range_page(r, idx + i);
				if (want[i] != 1 ||
				    pg_devpriv(atomic_load_explicit(&p->word,
								    memory_order_relaxed)) != dev)
					continue;
				uint64_t dpfn = atomic_load_explicit(&p->dpfn,
								     memory_order_relaxed);
				/* Adjacent pages in adjacent frames: one copy. */
				if (nc && map[nc - 1] + c[nc - 1].npages == i &&
				    c[nc - 1].dpfn + c[nc - 1].npages == dpfn) {
					c[nc - 1].npages++;
					continue;
				}
				c[nc] = (struct uhmm_copy){
					.sys = buf + (i << PAGE_SHIFT),
					.dpfn = dpfn,
					.npages = 1,
					.dir = UHMM_COPY_FROM_DEVICE,
				};
				map[nc++] = i;
			}
			/* d is NULL only for a device uhmm_ctx_destroy()
			 * released after its evacuation failed: a detached
			 * device stays published until every page is home,
			 * and no page reaches it after that (a detach waits
			 * for the migrations toward it: uhmm__dev_hold). */
			struct uhmm_device *d = uhmm__dev_get(ctx, dev);
			int err = d ? uhmm__copy_run(ctx, d, c, nc) : -ENODEV;
			for (size_t k = 0; k < nc; k++) {
				for (size_t i = map[k]; i < map[k] + c[k].npages; i++) {
					if (d && !c[k].status) {
						want[i] = 5;
					} else {
						want[i] = attempt == 2 ? 0 : 4;
						lost += attempt == 2;
						again = true;
					}
				}
			}
			if (err && !first_err)
				first_err = err;
		}
		for (size_t i = 0; i < n; i++)
			if (want[i] == 4)
				want[i] = 1; /* retry these only */
		if (!again)
			break;
	}
	for (size_t i = 0; i < n; i++)
		if (want[i] == 5)
			want[i] = 1;
	return lost ? first_err : 0;
}

/* ---- toward the system ---- */

/*
 * Bring the device-resident pages of [idx, idx + n) of r home (those of
 * device only_dev, if not 0).  With a victim filter (eviction, evict.c),
 * pages are taken with trylock only: one someone holds is skipped and
 * counted in f->busy, and only those on f->dev (with a frame in
 * [f->lo, f->hi)) move; f->moved counts the pages whose device frame was
 * released.  Blocks of page state never created are skipped: nothing of
 * them is on a device.
 */
static int batch_to_system_locked(struct uhmm_ctx *ctx, struct uhmm_range *r,
				  size_t idx, size_t n, unsigned only_dev,
				  struct uhmm_victim *f);

static int batch_to_system(struct uhmm_ctx *ctx, struct uhmm_range *r,
			   size_t idx, size_t n, unsigned only_dev,
			   struct uhmm_victim *f)
{
	/* A coherent page is out of the CPU page table from its reclaim to
	 * its install: a fork then would give the child a hole.  So fork
	 * waits for such batches (fork_lock, for reading: taken before any
	 * page lock, as every migration toward a device does, and again by
	 * an eviction inside one, which glibc's reader-preferring rwlock
	 * allows), except its own (DEV_PRIVATE_ONLY, under the write lock). */
	if (only_dev == DEV_PRIVATE_ONLY)
		return batch_to_system_locked(ctx, r, idx, n, only_dev, f);
	pthread_rwlock_rdlock(&ctx->fork_lock);
	int err = batch_to_system_locked(ctx, r, idx, n, only_dev, f);
	pthread_rwlock_unlock(&ctx->fork_lock);
	return err;
}

static int batch_to_system_locked(struct uhmm_ctx *ctx, struct uhmm_range *r,
				  size_t idx, size_t n, unsigned only_dev,
				  struct uhmm_victim *f)
{
	uint8_t want[BATCH_PAGES], locked[BATCH_PAGES];
	size_t nwant = 0;
	/* collect */
	for (size_t i = 0; i < n; i++) {
		want[i] = locked[i] = 0;
		if (!range_blk_present(r, idx + i))
			continue;
		struct uhmm_page *p = range_page(r, idx + i);
		if (f) {
			uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
			if (pg_ondev(w) != f->dev) {
				/* Not a victim: leave it alone.  Held, it may
				 * be on its way to the device with frames
				 * already taken (uhmm_victim.inflight). */
				f->inflight += (w & PG_LOCKED) != 0;
				continue;
			}
			f->seen++;
			if (!uhmm__page_trylock(p)) {
				f->busy++;
				continue;
			}
		} else {
			uhmm__page_lock(p);
		}
		locked[i] = 1;
		uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
		unsigned d = pg_ondev(w);
		want[i] = d && (!only_dev || d == only_dev ||
				(only_dev == DEV_PRIVATE_ONLY && !pg_coh(w)));
		if (want[i] && f) {
			uint64_t dpfn = atomic_load_explicit(&p->dpfn, memory_order_relaxed);
			want[i] = d == f->dev && dpfn >= f->lo && dpfn < f->hi &&
				  (!f->va || f->va == r->start + ((idx + i) << PAGE_SHIFT));
		}
		if (!want[i] && f) {
			uhmm__page_unlock(ctx, p); /* moved meanwhile */
			locked[i] = 0;
		}
		nwant += want[i];
	}
	int err = 0;
	long slot = -1;
	char *bounce = NULL;
	uintptr_t va = r->start + (idx << PAGE_SHIFT), vend = va + (n << PAGE_SHIFT);
	bool inv = false;
	if (!nwant)
		goto unlock;

	inv = uhmm__invalidate_start(ctx, va, vend, UHMM_INV_MIGRATE, NULL, 0);
	if (f && f->poison) {
		/* Lost, not moved (uhmm_device_page_lost): published poisoned. */
		for (size_t i = 0; i < n; i++) {
			if (!want[i])
				continue;
			uhmm__poison_locked(ctx, r, idx + i);
			want[i] = 2;
			f->moved++;
		}
		goto unlock;
	}
	/* Coherent pages in place go back into their frames first: from
	 * there on they are device-private pages (coherent.c). */
	for (size_t i = 0; i < n; i++) {
		if (!want[i] || !pg_coh(atomic_load_explicit(&range_page(r, idx + i)->word,
							      memory_order_relaxed)))
			continue;
		int e = uhmm__coh_reclaim(ctx, r, idx + i);
		if (e) {
			want[i] = 0; /* stays in place, with its data */
			if (!err)
				err = e == -EBUSY ? -EBUSY : -EFAULT;
		}
	}
	struct install_req req = { .r = r, .idx = idx, .n = n, .want = want,
				   .count = true };
	req.cause = f ? UHMM_TR_CAUSE_EVICT : UHMM_TR_CAUSE_CALL;
	req.t0 = uhmm__trace_t0(ctx);
	UHMM_PROBE(migrate_start, r->start + (idx << PAGE_SHIFT), n << PAGE_SHIFT,
		   f ? f->dev : 0, 0, req.cause);
	/* A whole aligned 2 MiB block, all of it coming home: into a warm
	 * THP, moved in as one PMD (docs/ARCHITECTURE.md "2 MiB on the CPU
	 * side"). */
	bool whole = ctx->move_in && n == BATCH_PAGES && !(va & (UHMM_HUGE_SIZE - 1)) &&
		     block_wants_thp(r, idx);
	for (size_t i = 0; i < n && whole; i++)
		whole = want[i] == 1;
	slot = whole ? uhmm__pool_get_huge(&ctx->pool, NULL, false) : -1;
	if (slot < 0)
		slot = ctx->move_in ? uhmm__pool_get(&ctx->pool, n, true) : -1;
	if (slot >= 0) {
		req.src = pool_slot(&ctx->pool, (size_t)slot);
		req.src_is_slots = true;
	} else {
		/* No warm run (past the pool's ceiling): a warm bounce
		 * buffer kept by the pool, and UFFDIO_COPY.  Mapping one per
		 * batch cost a page fault and a zeroing per page, and its
		 * unmapping a free: twice the time of a touch bringing the
		 * data back. */
		bounce = uhmm__pool_bounce_get(&ctx->pool);
		if (!bounce) {
			err = -ENOMEM;
			goto unlock;
		}
		req.src = bounce;
	}
	/* copy; then the service thread installs and unlocks what came back */
	int ferr = uhmm__fetch_pages(ctx, r, idx, n, req.src, want);
	if (ferr || !err)
		err = ferr;
	uhmm__install_request(ctx, &req);
	if (whole && slot >= 0) {
		bool all = true;
		for (size_t i = 0; i < n && all; i++)
			all = want[i] == 2;
		if (all && uhmm__thp_mapped(ctx->pagemap_fd, va)) {
			STAT_INC(ctx, thp_moves_in);
			UHMM_PROBE(thp_move, va, true);
		}
	}
	if (slot >= 0) {
		uint8_t full[BATCH_PAGES];
		for (size_t i = 0; i < n; i++)
			full[i] = want[i] != 2; /* a slot moved in is EMPTY now */
		uhmm__pool_put_run(&ctx->pool, (size_t)slot, n, full);
	}
	if (!err && req.result)
		err = req.result == -EEXIST ? -EIO : -EFAULT;
	uhmm__pol_migrated_runs(ctx, va, want, n, f ? f->dev : only_dev, 0);
	if (f) {
		for (size_t i = 0; i < n; i++)
			f->moved += want[i] >= 2;
		/* The range moved or went away meanwhile (its event was
		 * handled after we took the pages): what stayed on the
		 * device is the event's to release, soon. */
		if (req.result == -ENOENT)
			f->inflight++;
	}
unlock:
	for (size_t i = 0; i < n; i++)
		if (locked[i] && want[i] < 2)
			uhmm__page_unlock(ctx, range_page(r, idx + i));
	/* After every page is published: the mirrors may read again. */
	uhmm__invalidate_end(ctx, va, vend, inv);
	if (bounce)
		uhmm__pool_bounce_put(&ctx->pool, bounce);
	return err;
}

int uhmm__evict_batch(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx,
		      size_t n, struct uhmm_victim *v)
{
	return batch_to_system(ctx, r, idx, n, v->dev, v);
}

int uhmm__migrate_range_to_system(struct uhmm_ctx *ctx, struct uhmm_range *r,
				  size_t idx, size_t n, unsigned dev_id)
{
	int err = 0;
	for (size_t i = idx; i < idx + n;) {
		uintptr_t a = r->start + (i << PAGE_SHIFT);
		size_t room = (UHMM_HUGE_SIZE - (a & (UHMM_HUGE_SIZE - 1))) >> PAGE_SHIFT;
		size_t m = idx + n - i < room ? idx + n - i : room;
		/* No page state: nothing of it was ever on a device. */
		if (!range_blk_present(r, i) && !range_blk_present(r, i + m - 1)) {
			i += m;
			continue;
		}
		int e = batch_to_system(ctx, r, i, m, dev_id, NULL);
		if (e && !err)
			err = e;
		e = uhmm__revoke_range(ctx, r, i, m, dev_id == DEV_PRIVATE_ONLY ? 0 : dev_id);
		if (e && !err)
			err = e;
		i += m;
	}
	return err;
}

/* ---- toward a device ---- */

struct batch {
	struct uhmm_range *r;
	size_t idx, n;
	struct uhmm_device *dst;
	uint8_t kind[BATCH_PAGES];  /* what happens to each page, below */
	uint8_t alloc[BATCH_PAGES]; /* dpfn[i] was allocated for the page */
	uint64_t dpfn[BATCH_PAGES]; /* new device page */
	uint64_t old[BATCH_PAGES];  /* old device page (device to device) */
	unsigned olddev[BATCH_PAGES];
	long slot;                  /* EMPTY reserve run for the batch */
	bool thp;                   /* a THP moved out whole: the slots hold it */
	size_t nbusy;
	bool busy_nomove;           /* pages the move refuses (-EBUSY) go the no-move way */
	uint8_t sfull[BATCH_PAGES]; /* slot i holds a page (mincore after the move) */
	bool sknown;                /* sfull[] is exact: no restore moved pages out */
	uintptr_t xlo, xhi;         /* the request: never evicted for it */
	size_t ninflight;           /* frames counted in dst->frames_inflight */
	/* The frames are one 2 MiB device page (page i in frame huge - 1 + i):
	 * a whole aligned block moves (pstate.c, "device huge units"). */
	uint64_t huge;
	/* The no-move path (K_NOMOVE): the pages' data read into nbuf
	 * (page i at nbuf + i * 4K); wpd[i]: write-protected by us; drop[i]:
	 * the CPU copy is discarded at the end (MADV_DONTNEED). */
	char *nbuf;
	uint8_t wpd[BATCH_PAGES];
	uint8_t drop[BATCH_PAGES];
};

enum {
	K_STAY = 0,     /* not moving: already there, or failed */
	K_FROM_CPU,     /* system page to move */
	K_FROM_DEV,     /* another device's page */
	K_HOLE,         /* never populated: zero device page */
	K_BUSY,         /* the kernel would not let the page go (-EBUSY) */
	K_DONE,         /* published at the destination */
	K_FROM_EXCL,    /* system page a device holds exclusively (in slot old) */
	K_RESTORE,      /* copy failed: the system page goes back */
	K_NOMOVE,       /* system page copied in place, then discarded */
};

/* The batch's frames are the 2 MiB device page at @hbase: frame k is
 * page k's (got[], b->huge).  Returns the number of frames. */
static size_t take_unit(struct batch *b, uint64_t *got, uint64_t hbase)
{
	for (size_t k = 0; k < BATCH_PAGES; k++)
		got[k] = hbase + k;
	b->huge = hbase + 1;
	return BATCH_PAGES;
}

/* Lock the pages and decide; allocate device pages for the movers. */
static int migrate_collect(struct uhmm_ctx *ctx, struct batch *b)
{
	size_t need = 0;
	/* Before any page is locked: read-ahead or fault-around that has
	 * not yet checked the epoch under its page locks moves nothing of
	 * these pages home after us (uhmm_migrate's promise, service.c). */
	atomic_fetch_add_explicit(&b->r->arr->dev_epoch, 1, memory_order_seq_cst);
	for (size_t i = 0; i < b->n; i++) {
		struct uhmm_page *p = range_page(b->r, b->idx + i);
		uhmm__page_lock(p);
		uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
		unsigned d = pg_dev(w);
		if (pg_loc(w) == LOC_DEV(b->dst->id) || pg_loc(w) == LOC_COH(b->dst->id)) {
			b->kind[i] = K_STAY;
		} else if (pg_loc(w) == LOC_POISON) {
			b->kind[i] = K_STAY; /* lost: uhmm_migrate says -EHWPOISON */
		} else if (pg_excl(w)) {
			/* Held exclusively: its data is in a reserve slot. */
			b->kind[i] = K_FROM_EXCL;
			b->olddev[i] = d;
			b->old[i] = atomic_load_explicit(&p->dpfn, memory_order_relaxed);
			need++;
		} else if (d) {
			b->kind[i] = K_FROM_DEV;
			b->olddev[i] = d;
			b->old[i] = atomic_load_explicit(&p->dpfn, memory_order_relaxed);
			need++;
		} else {
			b->kind[i] = K_FROM_CPU;
			need++;
		}
	}
	/* Closing (unregister) or gone (munmap, mremap): its address may
	 * hold someone else's pages by now. */
	if (atomic_load(&b->r->closing) || atomic_load(&b->r->dead))
		return -EFAULT;
	if (!need)
		return 0;
	/* Ours on the device from now on: the block is listed before its
	 * pages land, so an evictor that finds the device full meanwhile
	 * sees them held (in flight) and backs off to try again, instead of
	 * concluding that nothing can be evicted.  (Our publication frees no
	 * frame: its back-off ends by its 2 ms bound, not by a wake-up.) */
	struct uhmm_pagearr *a = b->r->arr;
	size_t b0 = (b->r->first + b->idx) / BATCH_PAGES;
	size_t b1 = (b->r->first + b->idx + b->n - 1) / BATCH_PAGES;
	for (size_t k = b0; k <= b1; k++) {
		/* (The block's first page may lie before the range.) */
		intptr_t off = (intptr_t)(k * BATCH_PAGES) - (intptr_t)b->r->first;
		uhmm__lru_touch(ctx, a, k, b->dst->id,
				(uintptr_t)((intptr_t)b->r->start + off * (intptr_t)PAGE_SIZE));
	}
	uint64_t got[BATCH_PAGES];
	size_t have = 0;
	uint32_t freed0 = atomic_load_explicit(&ctx->dev_freed, memory_order_acquire);
	/* A whole block of page state at a 2 MiB-aligned address, every page
	 * moving: one 2 MiB device page, if the device has one free (else
	 * 4 KiB pages, evicting as usual). */
	uint64_t hbase;
	bool unit = need == BATCH_PAGES && b->n == BATCH_PAGES &&
		    (b->r->first + b->idx) % BATCH_PAGES == 0 &&
		    !((b->r->start + (b->idx << PAGE_SHIFT)) & (UHMM_HUGE_SIZE - 1));
	if (unit && uhmm__dev_get_huge(b->dst, &hbase) == 1) {
		have = take_unit(b, got, hbase);
		unit = false;
	}
	while (have < need) {
		long n = uhmm__dev_get_frames(b->dst, need - have, got + have);
		if (n < 0) {
			uhmm__dev_put_frames(ctx, b->dst, got, have);
			return (int)n;
		}
		have += (size_t)n;
		if (have == need)
			break;
		/* The device is full: evict least recently used blocks that
		 * are not the request's own, with trylock only. */
		struct uhmm_victim v = { .dev = b->dst->id, .hi = UINT64_MAX };
		if (unit) {
			/* A batch that could be one unit, and no 2 MiB page
			 * free: once, a whole block's worth is evicted with
			 * our loose frames given back (the chunk they came
			 * from may be whole again), and a 2 MiB page asked for
			 * again; evicted units give theirs back whole.  Else
			 * the 4 KiB way.  (Eviction otherwise takes what it
			 * needs in loose frames, and a full device of units
			 * made no unit again: eviction_gives_units_back_whole.) */
			unit = false;
			uhmm__dev_put_frames(ctx, b->dst, got, have);
			have = 0;
			uhmm__evict(ctx, &v, need, b->xlo, b->xhi);
			if (v.moved && uhmm__dev_get_huge(b->dst, &hbase) == 1) {
				have = take_unit(b, got, hbase);
				break;
			}
		} else {
			uhmm__evict(ctx, &v, need - have, b->xlo, b->xhi);
		}
		if (v.moved)
			continue;
		/* Nothing moved.  Victims someone holds may be free soon, and
		 * so may the frames of other migrations in flight toward the
		 * device (their pages are held, not yet on it); and frames
		 * released meanwhile (other evictors walk the same LRU and
		 * rotate it under this walk, which may then miss the victims
		 * they take) may be ours on a new try: the caller backs off
		 * and tries again.  No victim at all: the request's own pages
		 * fill the device. */
		bool freed = uhmm__dev_freed_since(ctx, freed0);
		uhmm__dev_put_frames(ctx, b->dst, got, have);
		/* Frames other migrations toward the device hold before
		 * their pages land (of the request's own blocks too, which
		 * the walk does not look at: another thread migrating an
		 * overlapping part): they are victims soon, or given back. */
		bool others = atomic_load_explicit(&b->dst->frames_inflight,
						   memory_order_acquire) != 0;
		if (v.busy || v.inflight || freed || others)
			return -EAGAIN;
		/* The walk saw nothing to wait for.  But uhmm may hold frames
		 * of the device that no listed block shows yet or any more:
		 * duplicates being made (dup.c: taken, copied, recorded only
		 * then), another batch's frames while it evicts for the rest,
		 * frames an event is about to release (its range out of the
		 * table, the block dropped by a walk before the release).  The
		 * request fails at once only if what uhmm holds is its own
		 * blocks' pages, which no eviction for it may take; else it
		 * backs off, bounded, as for busy victims
		 * (a_dup_being_made_makes_the_request_wait_not_fail,
		 * unlisted_frames_make_the_request_wait_not_fail). */
		if (uhmm__dev_freed_since(ctx, freed0))
			return -EAGAIN;
		if (uhmm__dev_frames_elsewhere(ctx, b->dst->id, b->xlo, b->xhi))
			return -EINPROGRESS; /* a shorter back-off (batch_to_device) */
		return -ENOMEM;
	}
	atomic_fetch_add_explicit(&b->dst->frames_inflight, need, memory_order_acq_rel);
	b->ninflight = need;
	for (size_t i = 0, k = 0; i < b->n; i++)
		if (b->kind[i] != K_STAY) {
			b->dpfn[i] = got[k++];
			b->alloc[i] = 1;
		}
	return 0;
}

#define PM_PRESENT (1ull << 63)
#define PM_SWAP (1ull << 62)

/*
 * The no-move path, first half: the K_NOMOVE pages stay in the CPU page
 * table while they are copied.  They are write-protected first
 * (UFFDIO_WRITEPROTECT, where the ranges are registered for it: ctx->wp),
 * so a CPU write waits (a write-protect fault, parked on the page lock)
 * instead of landing after the copy read the page; reads go on.  A
 * read-only mapping is protected too: a plain mprotect to read-write
 * (uhmm is not told) may come in the middle of the migration of its
 * pages, which the application may not even wait for (a prefetch, a
 * device's fault), and a write after it would land in the CPU copy that
 * the discard below drops (test_readonly
 * readonly_write_after_mprotect_during_copy_is_kept).  (A kernel with
 * UFFDIO_MOVE has write-protection; one with neither refuses migrations
 * to a device: uhmm_migrate.)  The data is read through /proc/self/mem, whose
 * reads never wait on a userfault: a page that is missing (never
 * populated, or discarded by the application meanwhile) fails the read
 * instead of faulting into the service thread, which would park the
 * fault on the page we hold (a deadlock with the copy engine).  Missing
 * pages become holes (zeroed device pages).  Returns 0 or -EFAULT (some
 * pages could not be protected: they stay).
 */
static int nomove_read(struct uhmm_ctx *ctx, struct batch *b)
{
	int err = 0;
	uintptr_t va = b->r->start + (b->idx << PAGE_SHIFT);
	if (!b->nbuf)
		b->nbuf = uhmm__pool_bounce_get(&ctx->pool);
	if (!b->nbuf || ctx->mem_fd < 0) {
		for (size_t i = 0; i < b->n; i++)
			if (b->kind[i] == K_NOMOVE)
				b->kind[i] = K_STAY;
		return -ENOMEM;
	}
	/* Pages the CPU may not read (PROT_NONE) stay, as they do on the
	 * move path (-EFAULT): /proc/self/mem would read them. */
	uint8_t rights[BATCH_PAGES];
	if (uhmm__range_rights(ctx, va, va + (b->n << PAGE_SHIFT), rights))
		memset(rights, 0, b->n);
	for (size_t i = 0; i < b->n; i++) {
		if (b->kind[i] == K_NOMOVE && !(rights[i] & 1)) {
			b->kind[i] = K_STAY;
			err = -EFAULT;
		}
	}
	/* Holes (and discarded pages) first: no read for them. */
	uint64_t pm[BATCH_PAGES];
	bool pm_ok = ctx->pagemap_fd >= 0 &&
		     pread(ctx->pagemap_fd, pm, b->n * sizeof(pm[0]),
			   (off_t)((va >> PAGE_SHIFT) * sizeof(pm[0]))) ==
			     (ssize_t)(b->n * sizeof(pm[0]));
	for (size_t i = 0; i < b->n; i++) {
		if (b->kind[i] != K_NOMOVE)
			continue;
		uint32_t w = atomic_load_explicit(&range_page(b->r, b->idx + i)->word,
						  memory_order_relaxed);
		if (w & PG_DISCARD) {
			b->kind[i] = K_HOLE;
			b->drop[i] = 1; /* its zap may be on its way still */
		} else if (pm_ok && !(pm[i] & (PM_PRESENT | PM_SWAP))) {
			b->kind[i] = K_HOLE;
		}
	}
	for (size_t i = 0; i < b->n;) {
		if (b->kind[i] != K_NOMOVE) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < b->n && b->kind[j] == K_NOMOVE)
			j++;
		uintptr_t a = va + (i << PAGE_SHIFT);
		size_t len = (j - i) << PAGE_SHIFT;
		if (ctx->wp) {
			/* An event pending (mmap_changing) refuses it: it is
			 * read soon, but perhaps only once a thread waiting
			 * for a page we hold goes on.  So not long: the batch
			 * lets go of its pages and tries again
			 * (batch_to_device, -EAGAIN). */
			int e = uhmm__uffd_protect_yielding(ctx->uffd, a, len);
			if (e) {
				/* Gone or changed (munmap, mremap racing us):
				 * the pages stay. */
				for (size_t x = i; x < j; x++)
					b->kind[x] = K_STAY;
				err = e == -EAGAIN ? -EAGAIN : -EFAULT;
				i = j;
				continue;
			}
			memset(b->wpd + i, 1, j - i);
		}
		for (size_t x = i; x < j;) {
			ssize_t got = pread(ctx->mem_fd, b->nbuf + (x << PAGE_SHIFT),
					    (j - x) << PAGE_SHIFT,
					    (off_t)(va + (x << PAGE_SHIFT)));
			if (got >= (ssize_t)PAGE_SIZE) {
				x += (size_t)got >> PAGE_SHIFT;
				continue;
			}
			/* Missing (discarded meanwhile: its REMOVE marked
			 * it ZAPPED) or unreadable: a hole, and dropped at
			 * the end whatever it is now. */
			b->kind[x] = K_HOLE;
			b->drop[x] = 1;
			x++;
		}
		i = j;
	}
	return err;
}

/*
 * The no-move path, second half (before the pages are published on the
 * device): drop the CPU copies with MADV_DONTNEED, so that the next CPU
 * access takes a MISSING fault and is served from the device.  The
 * REMOVE event of that madvise is uhmm's own: the pages carry PG_OWNDISC
 * and the service thread consumes the marks instead of zapping the pages
 * (whose device copies would then be discarded).  The madvise returns
 * once the event is read; the wait makes sure it is handled too, before
 * the marks are cleared by the unlock.  A page that cannot be discarded
 * stays at home (K_STAY).
 */
static void nomove_drop(struct uhmm_ctx *ctx, struct batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		b->drop[i] = b->kind[i] == K_NOMOVE || (b->kind[i] == K_HOLE && b->drop[i]);
	uint8_t kept[BATCH_PAGES];
	memcpy(kept, b->drop, b->n);
	(void)uhmm__own_discard(ctx, b->r, b->idx, b->n, b->drop);
	/* Refused (page.c): the page stays at home, not moved. */
	for (size_t i = 0; i < b->n; i++)
		if (kept[i] && !b->drop[i])
			b->kind[i] = K_STAY;
}

/*
 * Page k of the batch that UFFDIO_MOVE refused (-EBUSY): busy, for the
 * caller to retry once the copy-on-write is broken; on the last try
 * (b->busy_nomove), a page of a large folio the kernel will not split
 * (a THP once shared with a fork child) is copied the no-move way instead,
 * where that way exists (write-protection and /proc/self/mem): its bytes
 * go to the device and the CPU's copy is discarded, nothing to put back.
 */
static void refused(struct uhmm_ctx *ctx, struct batch *b, size_t k)
{
	if (b->busy_nomove && ctx->wp && ctx->mem_fd >= 0) {
		b->kind[k] = K_NOMOVE;
		return;
	}
	b->kind[k] = K_BUSY;
	b->nbusy++;
}

/* Move the system pages out of the CPU page table into reserve slots. */
static int migrate_unmap(struct uhmm_ctx *ctx, struct batch *b)
{
	int err = 0;
	/*
	 * Looked at again just before the pages leave: since the collect, an
	 * eviction (install requests, a back-off) may have taken long enough
	 * for the range to be unmapped and a new mapping registered at its
	 * address, whose pages the moves below would carry off and publish in
	 * the dead range's state (lost: uhmm-torture --dev-mib 4 read zeros
	 * where a CPU had just written).  The UNMAP's handler marks the range
	 * dead before a new mapping can be registered at its address
	 * (registration waits for the events read).  What is left is the
	 * window from here to the move, as before evictions existed, and a
	 * mapping the application writes at the address without registering
	 * it before that event is handled.
	 */
	if (atomic_load(&b->r->dead))
		return -EFAULT;
	b->slot = uhmm__pool_get_empty_wait(&ctx->pool, b->n);
	if (b->slot < 0)
		return -ENOMEM;
	char *slots = pool_slot(&ctx->pool, (size_t)b->slot);
	/* No UFFDIO_MOVE (a kernel before 6.8, or UHMM_NO_MOVE): every
	 * system page goes the no-move way. */
	if (!ctx->move_out)
		for (size_t i = 0; i < b->n; i++)
			if (b->kind[i] == K_FROM_CPU)
				b->kind[i] = K_NOMOVE;
	/* Which slots receive a page, as the moves tell (exact: no mincore
	 * of the slots afterwards, a system call per batch). */
	uint8_t got[BATCH_PAGES] = { 0 };
	bool exact = true, ex;
	/* A whole aligned 2 MiB block that is one THP on the CPU side moves
	 * with one UFFDIO_MOVE of its PMD, into a slot block whose PMD is
	 * empty (the run below is the block: a run of BATCH_PAGES slots is a
	 * whole aligned block of the reserve).  docs/ARCHITECTURE.md "2 MiB
	 * on the CPU side". */
	uintptr_t va0 = b->r->start + (b->idx << PAGE_SHIFT);
	bool whole = ctx->move_out && b->n == BATCH_PAGES && !(va0 & (UHMM_HUGE_SIZE - 1));
	for (size_t i = 0; i < b->n && whole; i++)
		whole = b->kind[i] == K_FROM_CPU;
	if (whole && uhmm__thp_mapped(ctx->pagemap_fd, va0)) {
		uhmm__pool_clear_pmd(&ctx->pool, (size_t)b->slot);
		b->thp = true;
	}
	for (size_t i = 0; i < b->n;) {
		if (b->kind[i] != K_FROM_CPU) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < b->n && b->kind[j] == K_FROM_CPU)
			j++;
		uintptr_t src = b->r->start + ((b->idx + i) << PAGE_SHIFT);
		size_t done = 0;
		long ret = uhmm__uffd_move_out_map(ctx->pool.ruffd, ctx->pagemap_fd,
						   (uintptr_t)slots + (i << PAGE_SHIFT),
						   src, (j - i) << PAGE_SHIFT,
						   UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, &done,
						   got + i, &ex);
		exact &= ex;
		size_t k = i + (done >> PAGE_SHIFT);
		if (ret >= 0) {
			i = j;
			continue;
		}
		if (ret == -EBUSY) {
			/* Shared with a fork child, or pinned: retried below
			 * after the copy-on-write is broken (or, on the last
			 * try, copied the no-move way). */
			refused(ctx, b, k);
			i = k + 1;
			continue;
		}
		if (j - k > 1) {
			/* UFFDIO_MOVE wants its source inside one mapping: the
			 * run may cross two (mprotect split the range).  Go
			 * one page at a time for the rest of it. */
			j = k + 1;
			size_t one;
			ret = uhmm__uffd_move_out_map(ctx->pool.ruffd, ctx->pagemap_fd,
						      (uintptr_t)slots + (k << PAGE_SHIFT),
						      b->r->start + ((b->idx + k) << PAGE_SHIFT),
						      PAGE_SIZE, UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
						      &one, got + k, &ex);
			exact &= ex;
			if (ret >= 0) {
				i = j;
				continue;
			}
			if (ret == -EBUSY) {
				refused(ctx, b, k);
				i = j;
				continue;
			}
		}
		/* The mapping is read-only (UFFDIO_MOVE moves only between
		 * writable mappings of equal rights): the page goes the
		 * no-move way.  Or it is gone or changed (munmap/mremap
		 * racing us): the page stays. */
		uintptr_t at = b->r->start + ((b->idx + k) << PAGE_SHIFT);
		bool ro = ret == -EINVAL &&
			  uhmm__range_writable(ctx, at, at + PAGE_SIZE) == -EPERM;
		b->kind[k] = ro ? K_NOMOVE : K_STAY;
		if (!ro)
			err = -EFAULT;
		i = k + 1;
	}
	/* Which slots received a page?  Holes were never populated.  A page
	 * the application discarded, whose zap may still be on its way, is
	 * empty whatever we found (PG_DISCARD). */
	unsigned char vec[BATCH_PAGES];
	if (exact)
		memcpy(vec, got, b->n); /* EMPTY slots before: only these filled */
	if (exact || mincore(slots, b->n << PAGE_SHIFT, vec) == 0) {
		for (size_t i = 0; i < b->n; i++) {
			uint32_t w = atomic_load_explicit(
				&range_page(b->r, b->idx + i)->word, memory_order_relaxed);
			b->sfull[i] = vec[i] & 1;
			if (b->kind[i] == K_FROM_CPU && (!(vec[i] & 1) || (w & PG_DISCARD)))
				b->kind[i] = K_HOLE;
		}
		/* Nothing else moves pages into or out of these slots (they
		 * are BUSY) until release_slots, but a restore. */
		b->sknown = true;
	}
	if (b->thp) {
		b->thp = uhmm__thp_mapped(ctx->pagemap_fd, (uintptr_t)slots);
		if (b->thp) {
			STAT_INC(ctx, thp_moves_out);
			UHMM_PROBE(thp_move, va0, false);
		}
	}
	/* What the block's CPU side was as it left, for its way home
	 * (block_wants_thp): one THP, or 4 KiB pages as soon as one page of
	 * it left by itself.  A batch that moved nothing out of the CPU page
	 * table (device to device, all holes) says nothing of it. */
	bool left_4k = false;
	for (size_t i = 0; i < b->n && !b->thp && !left_4k; i++)
		left_4k = b->kind[i] == K_FROM_CPU || b->kind[i] == K_NOMOVE;
	if (b->thp || left_4k) {
		_Atomic uint8_t *ct = uhmm__pblk_cpu_thp(range_page(b->r, b->idx));
		if (atomic_load_explicit(ct, memory_order_relaxed) != b->thp)
			atomic_store_explicit(ct, b->thp, memory_order_relaxed);
	}
	bool nomove = false;
	for (size_t i = 0; i < b->n && !nomove; i++)
		nomove = b->kind[i] == K_NOMOVE;
	if (nomove) {
		int e = nomove_read(ctx, b);
		if (e && !err)
			err = e;
	}
	return err;
}

static int migrate_copy(struct uhmm_ctx *ctx, struct batch *b)
{
	struct uhmm_copy c[BATCH_PAGES];
	size_t map[BATCH_PAGES], nc = 0;
	char *slots = pool_slot(&ctx->pool, (size_t)b->slot);
	int err = 0;

	/* Device to device goes through a bounce buffer (old device -> bounce
	 * -> new device), one copy batch per source device.  Not through the
	 * slots: an EMPTY reserve slot must never be touched (SIGBUS). */
	uint8_t seen[BATCH_PAGES] = { 0 };
	char *bounce = NULL;
	for (size_t i = 0; i < b->n && !bounce; i++) {
		if (b->kind[i] != K_FROM_DEV)
			continue;
		bounce = uhmm__umem_map(b->n << PAGE_SHIFT, 0, 0);
		if (!bounce) {
			for (size_t x = 0; x < b->n; x++)
				if (b->kind[x] == K_FROM_DEV)
					b->kind[x] = K_STAY;
			err = -ENOMEM;
		}
	}
	for (size_t first = 0; first < b->n; first++) {
		if (b->kind[first] != K_FROM_DEV || seen[first])
			continue;
		unsigned dev = b->olddev[first];
		nc = 0;
		for (size_t i = first; i < b->n; i++) {
			if (b->kind[i] != K_FROM_DEV || b->olddev[i] != dev)
				continue;
			seen[i] = 1;
			c[nc] = (struct uhmm_copy){ .sys = bounce + (i << PAGE_SHIFT),
						    .dpfn = b->old[i], .npages = 1,
						    .dir = UHMM_COPY_FROM_DEVICE };
			map[nc++] = i;
		}
		/* NULL only after a failed destroy (uhmm__fetch_pages) */
		struct uhmm_device *d = uhmm__dev_get(ctx, dev);
		int e = d ? uhmm__copy_run(ctx, d, c, nc) : -ENODEV;
		for (size_t k = 0; e && k < nc; k++)
			if (!d || c[k].status)
				b->kind[map[k]] = K_STAY; /* stays on the old device */
		if (e && !err)
			err = e;
	}

	/* Everything else goes to the destination in one batch; adjacent
	 * pages with adjacent device frames become one copy. */
	nc = 0;
	for (size_t i = 0; i < b->n; i++) {
		uint8_t k = b->kind[i];
		if (k == K_FROM_EXCL) { /* never adjacent: a copy of its own */
			c[nc] = (struct uhmm_copy){ .sys = pool_slot(&ctx->pool, b->old[i]),
						    .dpfn = b->dpfn[i], .npages = 1,
						    .dir = UHMM_COPY_TO_DEVICE };
			map[nc++] = i;
			continue;
		}
		if (k != K_FROM_CPU && k != K_FROM_DEV && k != K_HOLE && k != K_NOMOVE)
			continue;
		uint16_t dir = k == K_HOLE ? UHMM_COPY_ZERO : UHMM_COPY_TO_DEVICE;
		if (nc && c[nc - 1].dir == dir && map[nc - 1] + c[nc - 1].npages == i &&
		    b->kind[map[nc - 1]] == k &&
		    c[nc - 1].dpfn + c[nc - 1].npages == b->dpfn[i]) {
			c[nc - 1].npages++;
			continue;
		}
		char *src = k == K_FROM_DEV ? bounce : k == K_NOMOVE ? b->nbuf : slots;
		c[nc] = (struct uhmm_copy){ .sys = dir == UHMM_COPY_ZERO ? NULL
							     : src + (i << PAGE_SHIFT),
					    .dpfn = b->dpfn[i], .npages = 1, .dir = dir };
		map[nc++] = i;
	}
	int e = uhmm__copy_run(ctx, b->dst, c, nc);
	for (size_t k = 0; e && k < nc; k++) {
		if (!c[k].status)
			continue;
		for (size_t i = map[k]; i < map[k] + c[k].npages; i++) {
			/* Failed: a system page goes back (restore), a hole
			 * stays a hole, another device keeps its copy, a
			 * page copied in place never left. */
			b->kind[i] = b->kind[i] == K_FROM_CPU ? K_RESTORE : K_STAY;
		}
	}
	if (bounce)
		uhmm__umem_unmap(bounce, b->n << PAGE_SHIFT);
	return err ? err : e;
}

/*
 * A batch holding one 2 MiB device page: if every page of the block lands,
 * the block becomes a unit on the destination (its flag set before any
 * page is published, so that a page zapped meanwhile, whose publication
 * releases its frame, splits it first); else the page is split now and its
 * frames are released one by one as any batch's.
 */
static void huge_finalize(struct uhmm_ctx *ctx, struct batch *b)
{
	struct uhmm_page *p0 = range_page(b->r, b->idx);
	bool all = true;
	for (size_t i = 0; i < b->n && all; i++) {
		uint8_t k = b->kind[i];
		all = k == K_FROM_CPU || k == K_FROM_DEV || k == K_HOLE || k == K_FROM_EXCL ||
		      k == K_NOMOVE;
	}
	if (!all) {
		b->dst->ops->split(b->dst->priv, UHMM_HUGE_ORDER, b->huge - 1);
		b->huge = 0;
		return;
	}
	/* From a unit on another device (all our pages are locked, all were
	 * there): that one is split first, so that their publication, which
	 * releases their old frames, finds the flag naming the old device. */
	uint16_t v = atomic_load_explicit(uhmm__pblk_huge(p0), memory_order_acquire);
	if (v && v != b->dst->id)
		uhmm__huge_split(ctx, p0, v, b->old[0]);
	atomic_store_explicit(uhmm__pblk_huge(p0), (uint16_t)b->dst->id,
			      memory_order_release);
	STAT_INC(ctx, dev_huge_units);
}

static void migrate_finalize(struct uhmm_ctx *ctx, struct batch *b)
{
	size_t moved = 0, bytes = 0, zeros = 0, nrestore = 0, nlend = 0;
	uint8_t want[BATCH_PAGES], lend[BATCH_PAGES];

	/* The no-move path: the CPU copies go before the device copies are
	 * published; a page whose copy failed never left (and is no longer
	 * protected once it is unlocked, below). */
	nomove_drop(ctx, b);
	if (b->huge)
		huge_finalize(ctx, b);
	for (size_t i = 0; i < b->n; i++) {
		struct uhmm_page *p = range_page(b->r, b->idx + i);
		uint8_t k = b->kind[i];
		want[i] = lend[i] = 0;
		if (k == K_FROM_CPU || k == K_FROM_DEV || k == K_HOLE || k == K_FROM_EXCL ||
		    k == K_NOMOVE) {
			moved++;
			if (k == K_HOLE)
				zeros++;
			else
				bytes += PAGE_SIZE;
			b->kind[i] = K_DONE;
			if (b->dst->coh_base) {
				lend[i] = 1; /* below */
				nlend++;
				continue;
			}
			/* Published (the old device copy freed), or, zapped
			 * meanwhile, discarded: no device page is left over. */
			(void)uhmm__page_publish_unlock(ctx, p, LOC_DEV(b->dst->id), b->dpfn[i]);
		} else {
			if (k == K_RESTORE) {
				want[i] = 1;
				nrestore++;
			}
			if (b->alloc[i])
				uhmm__dev_put_frames(ctx, b->dst, &b->dpfn[i], 1);
		}
	}
	if (nlend) {
		/* A coherent destination: the frames move into place, and
		 * the service thread publishes them LOC_COH (coherent.c).  A
		 * page it could not put in place (its mapping went away or
		 * changed meanwhile) stays in its frame, as a private page of
		 * the device: a CPU touch brings it home. */
		uint8_t asked[BATCH_PAGES];
		memcpy(asked, lend, b->n);
		uhmm__coh_lend(ctx, b->r, b->idx, b->n, b->dst, b->dpfn, lend);
		for (size_t i = 0; i < b->n; i++)
			if (asked[i] && lend[i] < 2)
				(void)uhmm__page_publish_unlock(ctx, range_page(b->r, b->idx + i),
								LOC_DEV(b->dst->id), b->dpfn[i]);
	}
	if (nrestore) {
		b->sknown = false; /* release_slots asks the page table */
		/* Put the source pages back; the service thread does it so
		 * that a concurrent madvise() is honoured (service.c). */
		struct install_req req = { .r = b->r, .idx = b->idx, .n = b->n,
					   .want = want,
					   .src = pool_slot(&ctx->pool, (size_t)b->slot),
					   .src_is_slots = true };
		uhmm__install_request(ctx, &req);
	}
	/* Pages not published above nor by the install are still ours;
	 * those we write-protected and kept are writable again first. */
	uintptr_t va = b->r->start + (b->idx << PAGE_SHIFT);
	for (size_t i = 0; i < b->n; i++)
		if (b->wpd[i] && b->kind[i] != K_DONE)
			(void)uhmm__uffd_writeprotect(ctx->uffd, va + (i << PAGE_SHIFT),
						      PAGE_SIZE, false);
	for (size_t i = 0; i < b->n; i++)
		if (b->kind[i] != K_DONE && want[i] < 2)
			uhmm__page_unlock(ctx, range_page(b->r, b->idx + i));
	STAT_ADD(ctx, migrated_to_device_pages, moved);
	STAT_ADD(ctx, migrated_to_device_bytes, bytes);
	STAT_ADD(ctx, zero_filled_pages, zeros);
}

/* For the trace: pages a finalized batch published at its destination,
 * and where the first of those from another device came from (else 0). */
static size_t batch_done(const struct batch *b)
{
	size_t k = 0;
	for (size_t i = 0; i < b->n; i++)
		k += b->kind[i] == K_DONE;
	return k;
}

static unsigned batch_from(const struct batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->kind[i] == K_DONE && b->olddev[i])
			return b->olddev[i];
	return 0;
}

/* Release the batch's reserve slots: those holding a page stay FULL. */
static void release_slots(struct uhmm_ctx *ctx, struct batch *b)
{
	if (b->slot < 0)
		return;
	if (!b->sknown) {
		char *slots = pool_slot(&ctx->pool, (size_t)b->slot);
		if (mincore(slots, b->n << PAGE_SHIFT, b->sfull))
			memset(b->sfull, 1, b->n); /* cannot tell: assume populated */
		for (size_t i = 0; i < b->n; i++)
			b->sfull[i] &= 1;
	}
	bool allfull = b->thp && b->n == BATCH_PAGES;
	for (size_t i = 0; i < b->n && allfull; i++)
		allfull = b->sfull[i];
	if (allfull)
		uhmm__pool_put_huge(&ctx->pool, (size_t)b->slot); /* a warm THP */
	else
		uhmm__pool_put_run(&ctx->pool, (size_t)b->slot, b->n, b->sfull);
	/* The pages moved out linger in the pool up to its ceiling: the data
	 * coming back is moved into them (include/uhmm/uhmm.h,
	 * pool_max_pages); an idle context releases them (service.c), and
	 * the service thread those above the ceiling, at once. */
	uhmm__pool_release_excess(&ctx->pool);
	if (uhmm__pool_arm_idle(&ctx->pool))
		uhmm__service_kick(ctx);
}

static int batch_to_device_once(struct uhmm_ctx *ctx, struct uhmm_range *r,
				size_t idx, size_t n, struct uhmm_device *dst,
				uintptr_t xlo, uintptr_t xhi, size_t *busy_out, bool busy_nomove)
{
	struct batch *b = uhmm__umem_malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;
	*b = (struct batch){ .r = r, .idx = idx, .n = n, .dst = dst, .slot = -1,
			     .xlo = xlo, .xhi = xhi, .busy_nomove = busy_nomove };
	uint64_t t0 = uhmm__trace_t0(ctx);
	UHMM_PROBE(migrate_start, r->start + (idx << PAGE_SHIFT), n << PAGE_SHIFT, 0, dst->id,
		   uhmm__trace_cause());
	int err = migrate_collect(ctx, b);
	bool moves = false;
	for (size_t i = 0; i < n && !err && !moves; i++)
		moves = b->kind[i] != K_STAY;
	if (err || !moves) {
		/* Failed, or every page is at dst already: nothing changes,
		 * so no mirror is told and no reserve slot is taken. */
		for (size_t i = 0; i < n; i++)
			uhmm__page_unlock(ctx, range_page(r, idx + i));
		uhmm__umem_free(b);
		return err;
	}
	/* invalidate: the mirrors drop the pages and fence, before any page
	 * changes (hard point 2).  The pages stay locked, so nobody can map
	 * them again until we are done. */
	uintptr_t va = r->start + (idx << PAGE_SHIFT), vend = va + (n << PAGE_SHIFT);
	bool inv = uhmm__invalidate_start(ctx, va, vend, UHMM_INV_MIGRATE, dst, 0);
	int e0 = 0;
	/* Pages in place on a coherent device go back into their frames: a
	 * device-to-device move from there on (coherent.c). */
	for (size_t i = 0; i < n; i++) {
		if (b->kind[i] != K_FROM_DEV ||
		    !pg_coh(atomic_load_explicit(&range_page(r, idx + i)->word,
						 memory_order_relaxed)))
			continue;
		int e = uhmm__coh_reclaim(ctx, r, idx + i);
		if (e) {
			b->kind[i] = K_STAY; /* stays in place (its frame is freed below) */
			if (!e0)
				e0 = e == -EBUSY ? -EBUSY : -EFAULT;
		}
	}
	int e1 = migrate_unmap(ctx, b);
	if (!e1)
		e1 = e0;
	int e2 = b->slot >= 0 ? migrate_copy(ctx, b) : 0;
	if (b->slot < 0) {
		atomic_fetch_sub_explicit(&dst->frames_inflight, b->ninflight,
					  memory_order_acq_rel);
		if (b->nbuf)
			uhmm__pool_bounce_put(&ctx->pool, b->nbuf);
		if (b->huge)
			uhmm__dev_put_huge(ctx, b->dst, b->huge - 1);
		for (size_t i = 0; i < n && !b->huge; i++)
			if (b->alloc[i])
				uhmm__dev_put_frames(ctx, b->dst, &b->dpfn[i], 1);
		for (size_t i = 0; i < n; i++)
			uhmm__page_unlock(ctx, range_page(r, idx + i));
		uhmm__invalidate_end(ctx, va, vend, inv);
		uhmm__umem_free(b);
		return e1;
	}
	uhmm_loc from = 0;
	uint8_t moved[BATCH_PAGES];
	for (size_t i = 0; i < n; i++) {
		moved[i] = b->kind[i] != K_STAY && b->kind[i] != K_BUSY &&
			   b->kind[i] != K_RESTORE ? 2 : 0;
		if (moved[i] && !from && b->kind[i] == K_FROM_DEV)
			from = b->olddev[i];
	}
	migrate_finalize(ctx, b);
	uhmm__trace_migrate(ctx, va, n << PAGE_SHIFT, batch_done(b), batch_from(b), dst->id, uhmm__trace_cause(), t0);
	/* Published or given back: no longer in flight. */
	atomic_fetch_sub_explicit(&dst->frames_inflight, b->ninflight, memory_order_acq_rel);
	/* Every page is published: the mirrors may read again. */
	uhmm__invalidate_end(ctx, va, vend, inv);
	uhmm__pol_migrated_runs(ctx, va, moved, n, from, b->dst->id);
	release_slots(ctx, b);
	if (b->nbuf)
		uhmm__pool_bounce_put(&ctx->pool, b->nbuf);
	*busy_out = b->nbusy;
	uhmm__umem_free(b);
	return e2 ? e2 : e1;
}

/*
 * A batch toward a device that backs off while the device is full of pages
 * other threads hold: it holds no page lock while it waits (an evictor
 * never waits for a page lock while it holds some, docs/ARCHITECTURE.md
 * "Eviction"), wakes when a device frame is released or after BACKOFF_NS,
 * and tries again, for up to UHMM_SETTLE_NS: then -ENOMEM.
 */
static int batch_to_device(struct uhmm_ctx *ctx, struct uhmm_range *r,
			   size_t idx, size_t n, struct uhmm_device *dst,
			   uintptr_t xlo, uintptr_t xhi, size_t *busy_out, bool busy_nomove)
{
	uint64_t t0 = 0, t_else = 0;
	for (;;) {
		int err = batch_to_device_once(ctx, r, idx, n, dst, xlo, xhi, busy_out,
					       busy_nomove);
		if (err != -EAGAIN && err != -EINPROGRESS)
			return err;
		STAT_INC(ctx, evict_backoffs);
		if (uhmm__settle_expired(&t0))
			return -ENOMEM;
		/* Frames held where no walk looks are released or listed
		 * within milliseconds (a copy, an event); a request that saw
		 * nothing else for ELSEWHERE_NS gives up: frames no page holds
		 * for longer are not worth 2 s of every fitting request (a
		 * device's fault path tries page after page). */
		if (err == -EINPROGRESS) {
			uint64_t now = uhmm__now_ns();
			if (!t_else)
				t_else = now;
			else if (now - t_else > ELSEWHERE_NS)
				return -ENOMEM;
		} else {
			t_else = 0;
		}
		/* Counted from now: the failed try gave its own frames back,
		 * which must not wake it (a retry without a pause, 2 s of
		 * spinning); a frame someone released since the try is
		 * found by the next one, at most BACKOFF_NS later. */
		uint32_t seen = atomic_load_explicit(&ctx->dev_freed, memory_order_acquire);
		uhmm__dev_freed_wait(ctx, seen, BACKOFF_NS);
	}
}

/* ---- the public call ---- */

static int migrate_one_batch(struct uhmm_ctx *ctx, uintptr_t a, size_t n,
			     struct uhmm_device *dst, uintptr_t xlo, uintptr_t xhi)
{
	struct uhmm_range *r = uhmm__range_get(ctx, a);
	if (!r)
		return -EFAULT;
	size_t idx = (a - r->start) >> PAGE_SHIFT;
	if (idx + n > r->npages)
		n = r->npages - idx;
	int err;
	if (!dst) {
		err = uhmm__migrate_range_to_system(ctx, r, idx, n, 0);
	} else {
		size_t busy = 0;
		err = batch_to_device(ctx, r, idx, n, dst, xlo, xhi, &busy, false);
		if (busy && (!err || err == -EBUSY)) {
			/* Break copy-on-write sharing (a fork child still maps
			 * the page) by populating for write, then try again.
			 * Only the pages still present: the rest of the batch
			 * is on the device now, and populating over it would
			 * fault, which a user-mode-only or SIGBUS-mode
			 * userfaultfd refuses (EFAULT, the pages after it left
			 * shared: -EBUSY for ever). */
			uhmm__unshare_present(a, n);
			busy = 0;
			err = batch_to_device(ctx, r, idx, n, dst, xlo, xhi, &busy, false);
			/* Still refused: pages of a large folio the kernel will
			 * not split; their bytes go the no-move way (copied,
			 * the CPU's copy discarded: unlike a remake, nothing
			 * has to be put back, so nothing can be lost when the
			 * mapping moves meanwhile). */
			if (busy && (!err || err == -EBUSY)) {
				busy = 0;
				err = batch_to_device(ctx, r, idx, n, dst, xlo, xhi, &busy, true);
			}
			if (busy) {
				STAT_ADD(ctx, migrate_busy, busy);
				if (!err)
					err = -EBUSY;
			}
		}
	}
	uhmm__range_put(r);
	return err;
}

void uhmm__unshare_present(uintptr_t a, size_t n)
{
	/* mincore() of anonymous memory: 1 for a page in the CPU page table
	 * (or the zero page, or in the swap cache), 0 for an absent one (on
	 * a device, held exclusively, never populated). */
	unsigned char vec[BATCH_PAGES];
	if (n > BATCH_PAGES || mincore((void *)a, n << PAGE_SHIFT, vec))
		return;
	for (size_t i = 0; i < n;) {
		if (!(vec[i] & 1)) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < n && (vec[j] & 1))
			j++;
		/* A write fault on a present page is the kernel's own (copy
		 * on write), never the userfaultfd's.  A page migrated away
		 * since mincore fails this run alone (EFAULT) or, in full
		 * mode, is served; either way only the retry is affected. */
		madvise((void *)(a + (i << PAGE_SHIFT)), (j - i) << PAGE_SHIFT,
			MADV_POPULATE_WRITE);
		i = j;
	}
}

UHMM_API int uhmm_migrate(uhmm_ctx *ctx, void *addr, size_t len,
			  uhmm_device *dst, unsigned flags)
{
	uintptr_t a = (uintptr_t)addr;
	if (!addr || !len || ((a | len) & (PAGE_SIZE - 1)) || a + len < a ||
	    (flags & ~(UHMM_MIGRATE_MOVE | UHMM_MIGRATE_DUPLICATE)) ||
	    ((flags & UHMM_MIGRATE_MOVE) && (flags & UHMM_MIGRATE_DUPLICATE)) ||
	    ((flags & UHMM_MIGRATE_DUPLICATE) && !dst))
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	uhmm__prefetch_order(ctx, a, a + len);
	/* Held for the whole call, not just looked at: a detach waits for
	 * us, so no page reaches @dst after its evacuation. */
	if (dst) {
		err = uhmm__dev_hold(ctx, dst);
		if (err)
			goto out_ctx;
	}
	err = uhmm__ranges_cover(ctx, a, a + len);
	if (err)
		goto out;
	/* Duplicates asked for (the policy's verb): as read-mostly advice,
	 * over every page.  They need the CPU copy write-protected. */
	if (flags & UHMM_MIGRATE_DUPLICATE) {
		if (!ctx->wp && !dst->coh_base) {
			err = -EOPNOTSUPP;
			goto out;
		}
		/* Before the first duplicate: whoever may meet one (a
		 * collapse, a reclaim, a migration that moves it) sees it. */
		atomic_store_explicit(&ctx->rm_any, true, memory_order_release);
		err = uhmm__dup_migrate(ctx, a, a + len, dst, true);
		goto out;
	}
	/* Read-mostly advice (dup.c): duplicate instead, or collapse the
	 * duplicates of what moves. */
	if (dst && atomic_load_explicit(&ctx->rm_any, memory_order_acquire)) {
		uintptr_t lo = a, hi = a + len;
		if (!(flags & UHMM_MIGRATE_MOVE) &&
		    (uhmm__advice_read_mostly(ctx, a, &lo, &hi) || hi < a + len)) {
			err = uhmm__dup_migrate(ctx, a, a + len, dst, false);
			goto out;
		}
		uhmm__dup_collapse_range(ctx, a, a + len);
	}
	if (dst && !ctx->move_out && !ctx->wp) {
		/* Neither UFFDIO_MOVE nor write-protection: nothing keeps a
		 * CPU write from landing after the copy. */
		err = -EOPNOTSUPP;
		goto out;
	}
	if (dst)
		pthread_rwlock_rdlock(&ctx->fork_lock);
	int first = 0;
	for (uintptr_t x = a; x < a + len;) {
		size_t room = (UHMM_HUGE_SIZE - (x & (UHMM_HUGE_SIZE - 1))) >> PAGE_SHIFT;
		size_t n = ((a + len - x) >> PAGE_SHIFT) < room ? (a + len - x) >> PAGE_SHIFT
								: room;
		struct uhmm_range *r = uhmm__range_get(ctx, x);
		if (r) {
			/* Batches stop at range boundaries too. */
			size_t left = (range_end(r) - x) >> PAGE_SHIFT;
			if (n > left)
				n = left;
			uhmm__range_put(r);
		}
		int e = migrate_one_batch(ctx, x, n, dst, a, a + len);
		if (e == -EBUSY) {
			if (!first)
				first = e;
		} else if (e) {
			first = e;
			break; /* earlier batches stay migrated */
		}
		x += n << PAGE_SHIFT;
	}
	if (dst) {
		pthread_rwlock_unlock(&ctx->fork_lock);
		/* The ceiling holds when the call returns: what the service
		 * thread has not released yet (release_slots) goes now. */
		uhmm__pool_trim(&ctx->pool, ctx->pool.max_full);
	}
	err = first;
	/* Poisoned pages stayed where they are (the rest moved). */
	if (!err && uhmm__poisoned_in(ctx, a, len))
		err = -EHWPOISON;
out:
	if (dst)
		uhmm__dev_release(dst);
out_ctx:
	uhmm__ctx_exit(ctx);
	return err;
}

int uhmm__evacuate(struct uhmm_ctx *ctx, unsigned dev_id)
{
	int err = 0;
	for (uintptr_t a = 0;;) {
		/* Walk the table by address, one range at a time. */
		struct uhmm_range *r = NULL;
		pthread_rwlock_rdlock(&ctx->ranges_lock);
		for (size_t i = 0; i < ctx->nranges; i++) {
			if (ctx->ranges[i]->start >= a) {
				r = ctx->ranges[i];
				atomic_fetch_add(&r->refs, 1);
				break;
			}
		}
		pthread_rwlock_unlock(&ctx->ranges_lock);
		if (!r)
			break;
		int e = uhmm__migrate_range_to_system(ctx, r, 0, r->npages, dev_id);
		if (e && !err)
			err = e;
		a = range_end(r);
		uhmm__range_put(r);
	}
	return err;
}
