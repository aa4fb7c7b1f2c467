/* SPDX-License-Identifier: MIT */
/*
 * rangefault.c - uhmm_range_fault(): what a device may map, faulted in on
 * request; and uhmm_mprotect().
 *
 * The walk is made of three steps, deciding kept apart from acting:
 *   rf_rights         the CPU mapping's rights over the range (VMAs):
 *                     decides -EFAULT / -EPERM before anything moves
 *   rf_fault_in       acts: pages on other devices come home (a migration,
 *                     which invalidates), then MADV_POPULATE_{READ,WRITE}
 *                     over the runs not on the requesting device
 *   rf_snapshot       reads uhmm's page state and the kernel's page table
 *                     (PAGEMAP_SCAN, or /proc/self/pagemap) into entries
 * and the whole is repeated if the notifier was invalidated meanwhile, so
 * the entries returned are final for req->notifier_seq.
 *
 * Locks: none of its own.  Sleeps in migrations (page locks), in populate
 * (whose faults the service thread serves; in SIGBUS mode this thread
 * serves them first, sb_fault_in), and in read_begin.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"

/* ---- kernel interfaces newer than the installed headers ---- */

/* PAGEMAP_SCAN: util/uffd_compat.h */

/* PROCMAP_QUERY (Linux 6.11) */
#ifndef PROCMAP_QUERY
struct procmap_query {
	uint64_t size, query_flags, query_addr, vma_start, vma_end, vma_flags;
	uint64_t vma_page_size, vma_offset, inode;
	uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
	uint64_t vma_name_addr, build_id_addr;
};
#define PROCMAP_QUERY _IOWR('f', 17, struct procmap_query)
#define PROCMAP_QUERY_VMA_READABLE 0x01
#define PROCMAP_QUERY_VMA_WRITABLE 0x02
#define PROCMAP_QUERY_COVERING_OR_NEXT_VMA 0x10
#endif

/* ---- rights ---- */

struct vma {
	uintptr_t start, end;
	bool r, w;
};

/* Next VMA covering addr or after it, by PROCMAP_QUERY.  1 found, 0 none,
 * -errno when the ioctl is not there. */
static int vma_query(struct uhmm_ctx *ctx, uintptr_t addr, struct vma *v)
{
	if (ctx->maps_fd < 0)
		return -ENOTTY;
	struct procmap_query q = { .size = sizeof(q), .query_addr = addr,
				   .query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA };
	if (ioctl(ctx->maps_fd, PROCMAP_QUERY, &q) < 0)
		return errno == ENOENT ? 0 : -errno;
	v->start = q.vma_start;
	v->end = q.vma_end;
	v->r = q.vma_flags & PROCMAP_QUERY_VMA_READABLE;
	v->w = q.vma_flags & PROCMAP_QUERY_VMA_WRITABLE;
	return 1;
}

/*
 * The rights of the CPU mapping over [start, end), one byte a page:
 * RIGHT_R, RIGHT_R | RIGHT_W, or 0 for a hole or an unreadable area.
 */
#define RIGHT_R 1
#define RIGHT_W 2

static void fill(uint8_t *rights, uintptr_t start, uintptr_t lo, uintptr_t hi,
		 uint8_t v)
{
	memset(rights + ((lo - start) >> PAGE_SHIFT), v, (hi - lo) >> PAGE_SHIFT);
}

static int rf_rights(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
		     uint8_t *rights)
{
	memset(rights, 0, (end - start) >> PAGE_SHIFT);
	uintptr_t at = start;
	int r;
	struct vma v = { 0 };
	while (at < end && (r = vma_query(ctx, at, &v)) == 1) {
		if (v.start >= end)
			return 0;
		uintptr_t lo = v.start > at ? v.start : at;
		uintptr_t hi = v.end < end ? v.end : end;
		fill(rights, start, lo, hi, v.r ? (RIGHT_R | (v.w ? RIGHT_W : 0)) : 0);
		at = hi;
	}
	if (at >= end || r == 0)
		return 0;

	/* No PROCMAP_QUERY: parse /proc/self/maps. */
	/* Not stdio: its buffers come from malloc (util/umem.h). */
	struct uhmm_lines f;
	int err = uhmm__lines_open(&f, "/proc/self/maps");
	if (err)
		return err;
	char line[512];
	while (uhmm__lines_next(&f, line, sizeof(line))) {
		unsigned long lo, hi;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 ||
		    hi <= start || lo >= end)
			continue;
		uintptr_t l = lo > start ? lo : start, h = hi < end ? hi : end;
		fill(rights, start, l, h,
		     perms[0] == 'r' ? (RIGHT_R | (perms[1] == 'w' ? RIGHT_W : 0)) : 0);
	}
	uhmm__lines_close(&f);
	return 0;
}

int uhmm__range_rights(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
		       uint8_t *rights)
{
	return rf_rights(ctx, start, end, rights);
}

/* 0 if the CPU may write all of [start, end); -EPERM if part is read-only,
 * -EFAULT if part is a hole or unreadable. */
int uhmm__range_writable(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	size_t n = (end - start) >> PAGE_SHIFT;
	uint8_t *rights = uhmm__umem_malloc(n);
	if (!rights)
		return -ENOMEM;
	int err = rf_rights(ctx, start, end, rights);
	for (size_t i = 0; !err && i < n; i++) {
		if (!(rights[i] & RIGHT_R))
			err = -EFAULT;
		else if (!(rights[i] & RIGHT_W))
			err = -EPERM;
	}
	uhmm__umem_free(rights);
	return err;
}

/* ---- faulting in ---- */

/*
 * SIGBUS mode: MADV_POPULATE's faults on managed pages that are not present
 * are not served (the kernel raises no signal for them: the populate fails
 * with EFAULT).  So the missing managed pages of [start, end) are served
 * here first, by this thread, as its own touch would be (uhmm__serve_self:
 * zeros, a revocation, or a page come back from a device).
 */
static void sb_fault_in(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end, bool write)
{
	unsigned char vec[64];
	for (uintptr_t a = start; a < end;) {
		struct uhmm_range *r = uhmm__range_get(ctx, a);
		if (!r) {
			a += PAGE_SIZE;
			continue;
		}
		uintptr_t e = range_end(r) < end ? range_end(r) : end;
		while (a < e) {
			size_t n = (e - a) >> PAGE_SHIFT;
			if (n > sizeof(vec))
				n = sizeof(vec);
			if (mincore((void *)a, n << PAGE_SHIFT, vec)) {
				a = e; /* gone: populate will say */
				break;
			}
			for (size_t i = 0; i < n; i++)
				if (!(vec[i] & 1))
					uhmm__serve_self(ctx, r, a + (i << PAGE_SHIFT), write);
			a += n << PAGE_SHIFT;
		}
		uhmm__range_put(r);
	}
}

_Atomic(uhmm__rf_populate_hook_fn) uhmm__rf_populate_hook;

/* MADV_POPULATE_{READ,WRITE} of [start, end): 0 or -errno.  In SIGBUS mode
 * the managed pages missing are served first; one discarded or migrated
 * again before the populate reaches it (or a fill refused while events
 * are pending) makes it fail: again then, for up to UHMM_SETTLE_NS, as the
 * service thread settles a populate's fault (service.c, settle).
 *
 * A write populate also fails (EFAULT) on a write-protected page in that
 * mode: another device's read may have duplicated a page again (dup.c)
 * since rf_fault_in collapsed the range.  Before each retry of a write,
 * what is duplicated or protected is collapsed again, without waiting for
 * a page lock (uhmm__dup_collapse_write_try: this is a device's fault
 * path, and a page's holder may be waiting for that device; a page held
 * is left to the next retry, all of it bounded as before). */
static int populate(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end, bool write)
{
	uint64_t t0 = 0;
	uhmm__rf_populate_hook_fn hook =
		atomic_load_explicit(&uhmm__rf_populate_hook, memory_order_acquire);
	if (unlikely(hook))
		hook(ctx, start, end, write); /* tests: a device reads here */
	for (;;) {
		if (ctx->sigbus)
			sb_fault_in(ctx, start, end, write);
		if (!madvise((void *)start, end - start,
			     write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ))
			return 0;
		int err = errno;
		if (!ctx->sigbus || err != EFAULT)
			return -err;
		if (uhmm__settle_expired(&t0))
			return -err;
		if (write)
			uhmm__dup_collapse_write_try(ctx, start, end);
	}
}

/* Bring home the managed pages of [start, end) that live on a device other
 * than @self, then populate every run not on @self. */
static int rf_fault_in(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
		       unsigned self, bool write, struct uhmm_peer_cache *pc)
{
	int err = 0;
	uintptr_t run = start; /* start of the current run to populate */
	/* Read-mostly duplicates of pages to write collapse first (dup.c):
	 * the population below would wait on their write protection. */
	if (write)
		uhmm__dup_collapse_write(ctx, start, end);
	for (uintptr_t a = start; a < end && !err;) {
		struct uhmm_range *r = uhmm__range_get(ctx, a);
		if (!r) {
			a += PAGE_SIZE; /* not managed: populate as is */
			continue;
		}
		uintptr_t e = range_end(r) < end ? range_end(r) : end;
		for (; a < e; a += PAGE_SIZE) {
			size_t idx = (a - r->start) >> PAGE_SHIFT;
			uint32_t w = atomic_load_explicit(&range_page_peek(r, idx)->word,
							  memory_order_acquire);
			if (pg_loc(w) == LOC_POISON) {
				err = -EHWPOISON; /* lost on a device: a device error */
				break;
			}
			/* In place on a coherent device: a system page to
			 * every device (populated like one). */
			unsigned d = pg_coh(w) ? 0 : pg_dev(w);
			/* A peer's private page (UHMM_RF_PEER): mapped where it
			 * is, as the requester's own below. */
			bool peer = d && d != self && pc && !pg_excl(w) &&
				    uhmm__peer_ok(ctx, pc, d);
			if ((!d || d != self) && !peer) {
				if (d) /* another device's page: home first */
					err = uhmm__migrate_range_to_system(ctx, r, idx, 1, 0);
				if (err)
					break;
				continue;
			}
			/* On the requester (or a peer): it maps the device's
			 * copy; populate what came before. */
			if (run < a)
				err = populate(ctx, run, a, write);
			run = a + PAGE_SIZE;
		}
		uhmm__range_put(r);
	}
	if (err == -EHWPOISON)
		return err; /* uhmm's own poisoned page, above */
	if (!err && run < end)
		err = populate(ctx, run, end, write);
	if (err == -ENOMEM || err == -EINVAL || err == -EHWPOISON)
		err = -EFAULT; /* populate's way of saying "cannot map this" */
	return err;
}

/* ---- snapshot ---- */

/* Present / zero / huge for each page of [start, end), by PAGEMAP_SCAN, or
 * /proc/self/pagemap (no zero or huge information without it). */
static int rf_pagemap(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
		      uint64_t *ent)
{
	size_t n = (end - start) >> PAGE_SHIFT;
	static int no_scan;
	if (!__atomic_load_n(&no_scan, __ATOMIC_RELAXED)) {
		struct page_region vec[64];
		uintptr_t at = start;
		while (at < end) {
			struct pm_scan_arg a = {
				.size = sizeof(a), .start = at, .end = end,
				.vec = (uintptr_t)vec, .vec_len = 64,
				.category_anyof_mask = PAGE_IS_PRESENT,
				.return_mask = PAGE_IS_PRESENT | PAGE_IS_PFNZERO | PAGE_IS_HUGE,
			};
			long got = ioctl(ctx->pagemap_fd, PAGEMAP_SCAN, &a);
			if (got < 0) {
				if (errno == ENOTTY || errno == EINVAL) {
					__atomic_store_n(&no_scan, 1, __ATOMIC_RELAXED);
					goto fallback;
				}
				return -errno;
			}
			for (long k = 0; k < got; k++) {
				uint64_t fl = UHMM_RE_VALID;
				if (vec[k].categories & PAGE_IS_PFNZERO)
					fl |= UHMM_RE_ZERO;
				if (vec[k].categories & PAGE_IS_HUGE)
					fl |= UHMM_RE_HUGE | (9ull << UHMM_RE_ORDER_SHIFT);
				for (uint64_t x = vec[k].start; x < vec[k].end; x += PAGE_SIZE)
					ent[(x - start) >> PAGE_SHIFT] = fl;
			}
			if (a.walk_end <= at)
				break;
			at = a.walk_end;
		}
		return 0;
	}
fallback:
	for (size_t i = 0; i < n; i++) {
		uint64_t pm;
		off_t off = (off_t)(((start >> PAGE_SHIFT) + i) * 8);
		if (pread(ctx->pagemap_fd, &pm, 8, off) != 8)
			return -EIO;
		ent[i] = (pm >> 63) & 1 ? UHMM_RE_VALID : 0;
	}
	return 0;
}

static int rf_snapshot(struct uhmm_ctx *ctx, struct uhmm_range_req *req,
		       unsigned self, const uint8_t *rights, struct uhmm_peer_cache *pc)
{
	size_t n = (req->end - req->start) >> PAGE_SHIFT;
	memset(req->entries, 0, n * sizeof(uint64_t));
	int err = rf_pagemap(ctx, req->start, req->end, req->entries);
	if (err)
		return err;
	for (size_t i = 0; i < n; i++) {
		uint64_t *e = &req->entries[i];
		if (!(rights[i] & RIGHT_R))
			*e = UHMM_RE_ERROR;
		else if ((*e & UHMM_RE_VALID) && !(*e & UHMM_RE_ZERO) &&
			 (rights[i] & RIGHT_W))
			*e |= UHMM_RE_WRITE;
	}
	/* Device-resident pages are absent from the CPU page table: uhmm's
	 * page state says where they are. */
	for (uintptr_t a = req->start; a < req->end;) {
		struct uhmm_range *r = uhmm__range_get(ctx, a);
		if (!r) {
			a += PAGE_SIZE;
			continue;
		}
		uintptr_t e = range_end(r) < req->end ? range_end(r) : req->end;
		for (; a < e; a += PAGE_SIZE) {
			const struct uhmm_page *p = range_page_peek(r, (a - r->start) >> PAGE_SHIFT);
			uint32_t w = atomic_load_explicit(&p->word, memory_order_acquire);
			unsigned d = pg_dev(w);
			size_t i = (a - req->start) >> PAGE_SHIFT;
			uint64_t *ent = &req->entries[i];
			if (pg_loc(w) == LOC_POISON && (rights[i] & RIGHT_R)) {
				*ent = UHMM_RE_POISON;
				continue;
			}
			if (unlikely(w & PG_DUP) && (rights[i] & RIGHT_R)) {
				/* Duplicated (read-mostly, dup.c): the requester's
				 * own read-only copy, or the CPU's, read-only too
				 * (a write must collapse it first). */
				uint64_t f = self ? uhmm__dup_frame(ctx, p, self, a) : UINT64_MAX;
				if (f != UINT64_MAX)
					*ent = UHMM_RE_VALID | UHMM_RE_DEVICE | (f & UHMM_RE_DPFN_MASK);
				else
					*ent &= ~UHMM_RE_WRITE;
				continue;
			}
			if (!d)
				continue;
			if (!(rights[i] & RIGHT_R))
				continue;
			if (pg_coh(w)) {
				/* In place: what the page table says (VALID if
				 * present), and whose memory it is.  Zapped
				 * while held: empty, as below. */
				if (w & PG_ZAPPED)
					*ent = 0;
				else if (*ent & UHMM_RE_VALID)
					*ent |= d == self
						? UHMM_RE_COHERENT |
						  (atomic_load_explicit(&p->dpfn,
									memory_order_relaxed) &
						   UHMM_RE_DPFN_MASK)
						: UHMM_RE_COHERENT_REMOTE;
				continue;
			}
			/* Discarded while someone holds it (an madvise's REMOVE
			 * handled meanwhile): the holder's unlock frees this copy,
			 * without an invalidation of its own, and the REMOVE's is
			 * over.  So the copy is no entry to give a device: the page
			 * is empty as of now (a fault on it waits for the holder).
			 * Found by the model (tests/model/page.pml, DISCARD). */
			if (w & PG_ZAPPED) {
				*ent = 0;
				continue;
			}
			uint64_t dpfn = atomic_load_explicit(&p->dpfn, memory_order_relaxed);
			uint64_t wr = (rights[i] & RIGHT_W) ? UHMM_RE_WRITE : 0;
			if (d != self && pc && !pg_excl(w) && uhmm__peer_ok(ctx, pc, d))
				*ent = UHMM_RE_VALID | UHMM_RE_PEER | wr | (uint64_t)d << 40 |
				       UHMM_RE_PEER_DPFN(dpfn);
			else if (d != self)
				*ent = UHMM_RE_REMOTE;
			else if (pg_excl(w)) /* the holder reaches it in its slot */
				*ent = UHMM_RE_VALID | UHMM_RE_EXCLUSIVE | wr |
				       (((uintptr_t)pool_slot(&ctx->pool, dpfn) >> PAGE_SHIFT) &
					UHMM_RE_DPFN_MASK);
			else /* HUGE: one 2 MiB device page holds its block */
				*ent = UHMM_RE_VALID | UHMM_RE_DEVICE | wr |
				       (uhmm__huge_on(p, d) ? UHMM_RE_HUGE : 0) |
				       (dpfn & UHMM_RE_DPFN_MASK);
		}
		uhmm__range_put(r);
	}
	return 0;
}

UHMM_API int uhmm_range_fault(uhmm_ctx *ctx, struct uhmm_range_req *req)
{
	if (!req || !req->entries || req->start >= req->end ||
	    ((req->start | req->end) & (PAGE_SIZE - 1)) ||
	    (req->flags & ~(uint32_t)(UHMM_RF_FAULT_READ | UHMM_RF_FAULT_WRITE | UHMM_RF_PEER)) ||
	    ((req->flags & UHMM_RF_PEER) && !req->device))
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	/* The notifier is read all along: it must be one of ctx's.  (One
	 * removed while the call runs is the caller's error.) */
	if (req->notifier && !uhmm__notifier_of(req->notifier, ctx)) {
		err = -EINVAL;
		goto out_ctx;
	}
	unsigned self = 0;
	struct uhmm_device *dev = req->device;
	if (dev) {
		/* Held: its id must not be reused, nor pages reach it after
		 * its detach's evacuation, while we work for it. */
		err = uhmm__dev_hold(ctx, dev);
		if (err)
			goto out_ctx;
		self = dev->id;
	}
	/* Peers of the requester, asked of their backends once each. */
	struct uhmm_peer_cache peers, *pc = NULL;
	if (req->flags & UHMM_RF_PEER) {
		uhmm__peer_init(&peers, dev);
		pc = &peers;
	}
	bool write = req->flags & UHMM_RF_FAULT_WRITE;
	/* (A hole and a read-only page in one write fault: -EFAULT wins, as
	 * in the kernel, where the walk meets the hole as an error.) */
	bool fault = req->flags & (UHMM_RF_FAULT_READ | UHMM_RF_FAULT_WRITE);
	size_t n = (req->end - req->start) >> PAGE_SHIFT;
	uint64_t deadline = uhmm__now_ns() +
			    (uint64_t)(req->timeout_ms ? req->timeout_ms : 1000) * 1000000ull;
	STAT_INC(ctx, range_fault_calls);

	uint8_t *rights = uhmm__umem_malloc(n);
	if (!rights) {
		err = -ENOMEM;
		goto out;
	}
	for (;;) {
		uint32_t seq = 0;
		if (req->notifier &&
		    !uhmm__notifier_read_begin_until(req->notifier, deadline, &seq)) {
			err = -EBUSY; /* invalidated all along */
			break;
		}
		STAT_ADD(ctx, range_fault_pages, n);
		/* Decide from the CPU mapping's rights before acting. */
		err = rf_rights(ctx, req->start, req->end, rights);
		if (err)
			break;
		for (size_t i = 0; fault && i < n; i++) {
			if (!(rights[i] & RIGHT_R)) {
				err = -EFAULT;
				break;
			}
			if (write && !(rights[i] & RIGHT_W))
				err = -EPERM; /* unless a hole comes later */
		}
		if (err)
			break;
		if (fault) {
			err = rf_fault_in(ctx, req->start, req->end, self, write, pc);
			if (err)
				break;
		}
		err = rf_snapshot(ctx, req, self, rights, pc);
		if (err)
			break;
		bool complete = true;
		for (size_t i = 0; fault && i < n; i++)
			if (!(req->entries[i] & UHMM_RE_VALID) ||
			    (write && !(req->entries[i] & UHMM_RE_WRITE)))
				complete = false;
		bool stale = req->notifier && uhmm_notifier_read_retry(req->notifier, seq);
		if (complete && !stale) {
			/* Final for seq: entries cannot be trusted after an
			 * invalidation, which read_retry will tell. */
			req->notifier_seq = seq;
			break;
		}
		if (uhmm__now_ns() > deadline) {
			err = -EBUSY;
			break;
		}
	}
	uhmm__umem_free(rights);
out:
	if (dev)
		uhmm__dev_release(dev);
out_ctx:
	uhmm__ctx_exit(ctx);
	return err;
}

UHMM_API int uhmm_mprotect(uhmm_ctx *ctx, void *addr, size_t len, int prot)
{
	uintptr_t a = (uintptr_t)addr;
	if (!len || ((a | len) & (PAGE_SIZE - 1)) || a + len < a)
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	bool inv = uhmm__invalidate_start(ctx, a, a + len, UHMM_INV_PROTECTION, NULL, 0);
	if (mprotect(addr, len, prot))
		err = -errno;
	uhmm__invalidate_end(ctx, a, a + len, inv);
	uhmm__ctx_exit(ctx);
	return err;
}
