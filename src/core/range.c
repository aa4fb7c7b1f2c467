/* SPDX-License-Identifier: MIT */
/*
 * range.c - managed ranges: the table, uhmm_alloc/free/register/unregister,
 * and how the table follows munmap, madvise and mremap.
 *
 * Locks: ctx->ranges_lock (rwlock, a leaf: held only while the table is
 * read or edited, never across a sleep, a page lock or a system call that
 * raises a userfaultfd event).  A range found in the table is pinned by a
 * reference (uhmm__range_get/put), so a migration can use it after the lock
 * is dropped even if munmap takes it out of the table meanwhile.
 *
 * Page-state arrays are shared by the ranges split from one range (a munmap
 * of the middle, a partial mremap): a page's lock word never moves, so a
 * thread sleeping on it, or holding it, is never left with a stale copy.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"

/* ---- page-state arrays and range objects ---- */

static struct uhmm_range *range_new(uintptr_t start, size_t npages,
				    struct uhmm_pagearr *arr, size_t first,
				    bool owned)
{
	struct uhmm_range *r = uhmm__umem_calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->start = start;
	r->npages = npages;
	r->arr = arr;
	r->first = first;
	r->owned = owned;
	atomic_init(&r->refs, 1); /* the table's */
	uhmm__pagearr_get(arr);
	return r;
}

void uhmm__range_put(struct uhmm_range *r)
{
	if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1) {
		uhmm__pagearr_put(r->arr);
		uhmm__umem_free(r);
	}
}

/* ---- the table (sorted array) ---- */

/* Index of the first range whose end is above addr.  Caller holds the lock. */
static size_t lower_bound_locked(struct uhmm_ctx *ctx, uintptr_t addr)
{
	size_t lo = 0, hi = ctx->nranges;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (range_end(ctx->ranges[mid]) <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct uhmm_range *find_locked(struct uhmm_ctx *ctx, uintptr_t addr)
{
	size_t i = lower_bound_locked(ctx, addr);
	if (i < ctx->nranges && ctx->ranges[i]->start <= addr)
		return ctx->ranges[i];
	return NULL;
}

static bool overlaps_locked(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	size_t i = lower_bound_locked(ctx, start);
	return i < ctx->nranges && ctx->ranges[i]->start < end;
}

static int insert_locked(struct uhmm_ctx *ctx, struct uhmm_range *r)
{
	if (ctx->nranges == ctx->cap_ranges) {
		size_t cap = ctx->cap_ranges ? ctx->cap_ranges * 2 : 16;
		void *n = uhmm__umem_realloc(ctx->ranges, cap * sizeof(*ctx->ranges));
		if (!n)
			return -ENOMEM;
		ctx->ranges = n;
		ctx->cap_ranges = cap;
	}
	size_t i = lower_bound_locked(ctx, r->start);
	memmove(&ctx->ranges[i + 1], &ctx->ranges[i],
		(ctx->nranges - i) * sizeof(*ctx->ranges));
	ctx->ranges[i] = r;
	ctx->nranges++;
	__atomic_fetch_add(&ctx->stats.managed_pages, r->npages, __ATOMIC_RELAXED);
	return 0;
}

static void remove_at_locked(struct uhmm_ctx *ctx, size_t i)
{
	struct uhmm_range *r = ctx->ranges[i];
	memmove(&ctx->ranges[i], &ctx->ranges[i + 1],
		(ctx->nranges - i - 1) * sizeof(*ctx->ranges));
	ctx->nranges--;
	__atomic_fetch_sub(&ctx->stats.managed_pages, r->npages, __ATOMIC_RELAXED);
	atomic_store(&r->dead, true);
}

struct uhmm_range *uhmm__range_get(struct uhmm_ctx *ctx, uintptr_t addr)
{
	pthread_rwlock_rdlock(&ctx->ranges_lock);
	struct uhmm_range *r = find_locked(ctx, addr);
	if (r)
		atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
	pthread_rwlock_unlock(&ctx->ranges_lock);
	return r;
}

static int cover_once(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
		      uintptr_t *gap)
{
	int err = 0;
	pthread_rwlock_rdlock(&ctx->ranges_lock);
	for (uintptr_t a = start; a < end;) {
		struct uhmm_range *r = find_locked(ctx, a);
		if (!r) {
			*gap = a;
			err = -EFAULT;
			break;
		}
		a = range_end(r);
	}
	pthread_rwlock_unlock(&ctx->ranges_lock);
	return err;
}

int uhmm__ranges_cover(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	uintptr_t gap = 0, last = 0;
	for (;;) {
		int err = cover_once(ctx, start, end, &gap);
		/* A gap that no tail fills (or the same gap again) ends it. */
		if (!err || (last && gap <= last) || uhmm__ranges_grow(ctx, gap))
			return err;
		last = gap;
	}
}

/* The end of the mapping (VMA) that holds both a - 1 and a, or 0. */
static uintptr_t vma_end_across(uintptr_t a)
{
	struct uhmm_lines f;
	if (uhmm__lines_open(&f, "/proc/self/maps"))
		return 0;
	char line[512];
	uintptr_t end = 0;
	while (uhmm__lines_next(&f, line, sizeof(line))) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		if (lo < a && hi > a) {
			end = hi;
			break;
		}
		if (lo >= a)
			break;
	}
	uhmm__lines_close(&f);
	return end;
}

/*
 * Registering splits the VMAs at the range's bounds, and a VMA registered
 * with our userfaultfd merges only with one registered alike: so a VMA
 * that holds a range's last page and goes on past its end grew (mremap),
 * and the grown part is registered with us (the kernel's VMA flags went
 * with it).  It is managed from now on, as the kernel's VMA grows.  The
 * tail is checked again once it is in the table: an munmap of it whose
 * UNMAP was handled before the insertion would otherwise leave it behind.
 */
/* A range leaves the table before it leaves the userfaultfd: meanwhile its
 * VMA may still be merged with a neighbour's, which would look grown. */
static void release_begin(struct uhmm_ctx *ctx)
{
	atomic_fetch_add_explicit(&ctx->releasing, 1, memory_order_seq_cst);
	atomic_fetch_add_explicit(&ctx->release_gen, 1, memory_order_seq_cst);
}

static void release_end(struct uhmm_ctx *ctx)
{
	atomic_fetch_sub_explicit(&ctx->releasing, 1, memory_order_seq_cst);
}

int uhmm__ranges_grow(struct uhmm_ctx *ctx, uintptr_t addr)
{
	uhmm__events_wait(ctx); /* the table as the mappings are */
	uint32_t gen = atomic_load_explicit(&ctx->release_gen, memory_order_seq_cst);
	if (atomic_load_explicit(&ctx->releasing, memory_order_seq_cst))
		return -EFAULT;
	pthread_rwlock_rdlock(&ctx->ranges_lock);
	size_t i = lower_bound_locked(ctx, addr);
	uintptr_t end = i ? range_end(ctx->ranges[i - 1]) : 0;
	uintptr_t next = i < ctx->nranges ? ctx->ranges[i]->start : UINTPTR_MAX;
	pthread_rwlock_unlock(&ctx->ranges_lock);
	if (next <= addr)
		return 0; /* managed meanwhile */
	if (!end)
		return -EFAULT;
	uintptr_t vend = vma_end_across(end);
	if (vend <= addr)
		return -EFAULT;
	if (vend > next)
		vend = next;
	size_t n = (vend - end) >> PAGE_SHIFT;
	struct uhmm_pagearr *arr = uhmm__pagearr_new(ctx, n);
	if (!arr)
		return -ENOMEM;
	struct uhmm_range *r = range_new(end, n, arr, 0, false);
	uhmm__pagearr_put(arr);
	if (!r)
		return -ENOMEM;
	r->grown = true;
	pthread_rwlock_wrlock(&ctx->ranges_lock);
	int err = overlaps_locked(ctx, end, vend) ? -EEXIST : insert_locked(ctx, r);
	pthread_rwlock_unlock(&ctx->ranges_lock);
	if (err) {
		uhmm__range_put(r);
		return err == -EEXIST ? 0 : err; /* (-EEXIST: grown meanwhile) */
	}
	/* An mremap moving a range next to ours merges their VMAs before
	 * its REMAP is read (the kernel's mmap_changing is raised until it
	 * is): what looked grown may be that range's new place.  A REMAP
	 * read but not handled yet displaces the tail when it is (dead). */
	atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed); /* ours */
	bool moved_in = uhmm__events_pending(ctx);
	if (!moved_in) {
		uhmm__events_wait(ctx);
		moved_in = atomic_load_explicit(&r->dead, memory_order_acquire);
	}
	if (moved_in || vma_end_across(end) < vend ||
	    atomic_load_explicit(&ctx->release_gen, memory_order_seq_cst) != gen ||
	    atomic_load_explicit(&ctx->releasing, memory_order_seq_cst)) {
		pthread_rwlock_wrlock(&ctx->ranges_lock);
		size_t k = lower_bound_locked(ctx, end);
		if (k < ctx->nranges && ctx->ranges[k] == r) {
			remove_at_locked(ctx, k);
			uhmm__range_put(r);
		}
		pthread_rwlock_unlock(&ctx->ranges_lock);
		uhmm__range_put(r);
		return -EFAULT;
	}
	uhmm__range_put(r);
	return 0;
}

/* ---- checking what the caller hands us ---- */

int uhmm__check_anon_private(uintptr_t start, uintptr_t end)
{
	return uhmm__check_vmas(start, end, VMA_NEED_WRITE);
}

/*
 * Every VMA of [start, end) must be private, anonymous and readable (and
 * writable with VMA_NEED_WRITE): read /proc/self/maps (the VMAs a fault
 * will meet).
 */
int uhmm__check_vmas(uintptr_t start, uintptr_t end, unsigned flags)
{
	/* Not stdio: its buffers come from malloc (util/umem.h). */
	struct uhmm_lines f;
	int err = uhmm__lines_open(&f, "/proc/self/maps");
	if (err)
		return err;
	char line[512];
	uintptr_t covered = start;
	while (covered < end && uhmm__lines_next(&f, line, sizeof(line))) {
		unsigned long lo, hi, off, ino;
		char perms[8], dev[16];
		int pos = 0;
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &lo, &hi, perms,
			   &off, dev, &ino, &pos) < 6)
			continue;
		if (hi <= covered || lo >= end)
			continue;
		if (lo > covered) {
			err = -EFAULT; /* a hole */
			break;
		}
		const char *path = line + pos;
		bool anon = ino == 0 && (path[0] == '\n' || path[0] == '\0' ||
					 !strncmp(path, "[heap]", 6) ||
					 !strncmp(path, "[anon:", 6));
		if (perms[3] != 'p' || !anon || perms[0] != 'r' ||
		    ((flags & VMA_NEED_WRITE) && perms[1] != 'w')) {
			err = -EOPNOTSUPP;
			break;
		}
		covered = hi;
	}
	uhmm__lines_close(&f);
	if (!err && covered < end)
		err = -EFAULT;
	return err;
}

static int add_range(struct uhmm_ctx *ctx, uintptr_t start, size_t len,
		     bool owned)
{
	/* SIGBUS mode: a thread's stack on a device could not take the
	 * signal that brings it back (stacks.c).  (uhmm_alloc's memory is
	 * fresh: no stack.) */
	if (!owned && ctx->sigbus) {
		int e = uhmm__check_no_stack(start, start + len);
		if (e)
			return e;
	}
	size_t n = len >> PAGE_SHIFT;
	struct uhmm_pagearr *arr = uhmm__pagearr_new(ctx, n);
	if (!arr)
		return -ENOMEM;
	struct uhmm_range *r = range_new(start, n, arr, 0, owned);
	uhmm__pagearr_put(arr); /* the range holds it now */
	if (!r)
		return -ENOMEM;

	/*
	 * munmap and mremap return once the service thread has *read* their
	 * events, maybe before it handled them: a new mapping at the same
	 * address would otherwise meet the old range still in the table, or
	 * be cut by the old range's late UNMAP.  Let the handling catch up.
	 */
	uhmm__service_sync(ctx);
	int err;
	uint64_t t0 = 0;
	for (;;) {
		pthread_rwlock_wrlock(&ctx->ranges_lock);
		if (overlaps_locked(ctx, start, start + len))
			err = -EEXIST;
		else
			err = insert_locked(ctx, r);
		pthread_rwlock_unlock(&ctx->ranges_lock);
		/*
		 * Still there: the old range's UNMAP may not even be posted
		 * yet (its munmap preempted between releasing the mmap lock
		 * and posting it), but the kernel has raised mmap_changing
		 * already.  Wait for the event while the probe says one is on
		 * its way (bounded); a true overlap fails at once.
		 */
		if (err != -EEXIST || !uhmm__events_pending(ctx))
			break;
		if (uhmm__settle_expired(&t0))
			break;
		sched_yield();
		uhmm__service_sync(ctx);
	}
	if (err) {
		uhmm__range_put(r);
		return err;
	}
	/* Registered after it is in the table: a fault is never unknown. */
	err = uhmm__uffd_register_wp(ctx->uffd, start, len, ctx->wp);
	if (err) {
		pthread_rwlock_wrlock(&ctx->ranges_lock);
		size_t i = lower_bound_locked(ctx, start);
		if (i < ctx->nranges && ctx->ranges[i] == r)
			remove_at_locked(ctx, i);
		pthread_rwlock_unlock(&ctx->ranges_lock);
		uhmm__range_put(r);
		/* -EBUSY: a userfaultfd registered the memory already, another
		 * context's or the program's own; not "held by the kernel". */
		if (err == -EBUSY)
			return -EADDRINUSE;
		return err == -EINVAL ? -EOPNOTSUPP : err;
	}
	return 0;
}

/* Take the range starting exactly at start (and, if len, of that length)
 * out of the table; returns it with the table's reference, or NULL. */
static struct uhmm_range *take_exact(struct uhmm_ctx *ctx, uintptr_t start,
				     size_t len, bool owned)
{
	struct uhmm_range *r = NULL;
	pthread_rwlock_wrlock(&ctx->ranges_lock);
	size_t i = lower_bound_locked(ctx, start);
	if (i < ctx->nranges && ctx->ranges[i]->start == start &&
	    ctx->ranges[i]->owned == owned &&
	    (!owned || ctx->ranges[i]->first == 0) && /* the allocation's start */
	    (!len || ctx->ranges[i]->npages << PAGE_SHIFT == len)) {
		r = ctx->ranges[i];
		remove_at_locked(ctx, i);
	}
	pthread_rwlock_unlock(&ctx->ranges_lock);
	return r;
}

/* ---- public calls ---- */

UHMM_API int uhmm_alloc(uhmm_ctx *ctx, size_t len, void **out)
{
	if (!out || len == 0 || len > ((size_t)1 << 46))
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	len = (len + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
	char *raw = mmap(NULL, len + UHMM_HUGE_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED) {
		err = -ENOMEM;
		goto out;
	}
	uintptr_t a = ((uintptr_t)raw + UHMM_HUGE_SIZE - 1) &
		      ~(uintptr_t)(UHMM_HUGE_SIZE - 1);
	if (a > (uintptr_t)raw)
		munmap(raw, a - (uintptr_t)raw);
	munmap((char *)a + len, (uintptr_t)raw + UHMM_HUGE_SIZE - a);
	/* Transparent huge pages where the machine has them (the service
	 * thread fills untouched blocks with one, service.c). */
	(void)madvise((void *)a, len, MADV_HUGEPAGE);
	err = add_range(ctx, a, len, true);
	if (err) {
		munmap((void *)a, len);
		goto out;
	}
	*out = (void *)a;
out:
	uhmm__ctx_exit(ctx);
	return err;
}

/* Lock every page (waiting for migrations in flight), discard device
 * copies.  The range is out of the table: nobody new can find it. */
static void drain_and_discard(struct uhmm_ctx *ctx, struct uhmm_range *r)
{
	for (size_t i = 0; i < r->npages; i++) {
		if (!range_blk_present(r, i)) {
			i += range_blk_left(r, i) - 1; /* never used: nothing to drain */
			continue;
		}
		struct uhmm_page *p = range_page(r, i);
		uhmm__page_lock(p);
		(void)uhmm__page_publish_unlock(ctx, p, 0, 0); /* frees the copy */
	}
}

/*
 * The grown tails (uhmm__ranges_grow) that follow a range ending at end
 * go with it: released by uhmm_free (device copies discarded, unmapped:
 * the mapping grew) or uhmm_unregister (their pages brought home first;
 * -EIO if one could not be).
 */
static int release_tails(struct uhmm_ctx *ctx, uintptr_t end, bool unmap)
{
	int err = 0;
	for (;;) {
		struct uhmm_range *t = uhmm__range_get(ctx, end);
		if (!t || t->start != end || !t->grown) {
			if (t)
				uhmm__range_put(t);
			return err;
		}
		size_t len = t->npages << PAGE_SHIFT;
		if (!unmap) {
			int e = uhmm__migrate_range_to_system(ctx, t, 0, t->npages, 0);
			if (e) {
				uhmm__range_put(t);
				return e;
			}
		}
		uhmm__range_put(t);
		release_begin(ctx);
		t = take_exact(ctx, end, len, false);
		if (!t) {
			release_end(ctx);
			return err;
		}
		uhmm__invalidate(ctx, end, end + len, UHMM_INV_UNMAP, NULL, 0);
		uhmm__uffd_unregister(ctx->uffd, end, len);
		release_end(ctx);
		if (unmap) {
			drain_and_discard(ctx, t);
			munmap((void *)end, len);
		}
		uhmm__range_put(t);
		end += len;
	}
}

UHMM_API int uhmm_free(uhmm_ctx *ctx, void *addr)
{
	if (!addr || ((uintptr_t)addr & (PAGE_SIZE - 1)))
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	release_begin(ctx);
	struct uhmm_range *r = take_exact(ctx, (uintptr_t)addr, 0, true);
	if (!r) {
		release_end(ctx);
		err = -EINVAL;
		goto out;
	}
	size_t len = r->npages << PAGE_SHIFT;
	/* Mirrors drop the range before its device pages are freed (they
	 * could be handed out again while a device still maps them). */
	uhmm__invalidate(ctx, r->start, r->start + len, UHMM_INV_UNMAP, NULL, 0);
	/* Unregister first: munmap then raises no UNMAP event, and threads
	 * asleep in a fault on the range wake up (to meet SIGSEGV). */
	uhmm__uffd_unregister(ctx->uffd, r->start, len);
	release_end(ctx);
	drain_and_discard(ctx, r);
	munmap(addr, len);
	uhmm__range_put(r);
	(void)release_tails(ctx, (uintptr_t)addr + len, true);
out:
	uhmm__ctx_exit(ctx);
	return err;
}

UHMM_API int uhmm_register(uhmm_ctx *ctx, void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;
	if (!addr || !len || ((a | len) & (PAGE_SIZE - 1)) || a + len < a)
		return -EINVAL;
	/* uhmm's own memory (util/umem.h) is never managed. */
	if (uhmm__umem_owns(a, len))
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	/* Read-only memory too: its pages migrate by the no-move path
	 * (migrate.c), and come back read-only. */
	err = uhmm__check_vmas(a, a + len, 0);
	if (!err)
		err = add_range(ctx, a, len, false);
	uhmm__ctx_exit(ctx);
	return err;
}

/*
 * Adoption of private file mappings (UHMM_REGISTER_ADOPT_FILE): the first
 * readable MAP_PRIVATE file mapping met in [*at, end) becomes anonymous
 * memory in place with the same contents and rights.  Its contents are
 * copied (through /proc/self/mem: a page past the file's end, which would
 * raise SIGBUS, reads as zeros) into a fresh anonymous mapping, given the
 * mapping's rights, and moved over it with one mremap(MREMAP_FIXED), which
 * replaces the file mapping atomically: no instant sees the range unmapped
 * or empty.  *at is set past what was looked at; returns 1 if a mapping
 * was adopted, 0 if none is left, -errno.
 */
static int adopt_one(struct uhmm_ctx *ctx, uintptr_t *at, uintptr_t end)
{
	struct uhmm_lines f;
	int err = uhmm__lines_open(&f, "/proc/self/maps");
	if (err)
		return err;
	char line[512];
	uintptr_t lo = 0, hi = 0;
	int prot = 0;
	bool found = false;
	while (!found && uhmm__lines_next(&f, line, sizeof(line))) {
		unsigned long l, h, off, ino;
		char perms[8], dev[16];
		int pos = 0;
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &l, &h, perms, &off, dev,
			   &ino, &pos) < 6)
			continue;
		if (h <= *at || l >= end)
			continue;
		if (perms[3] != 'p' || ino == 0 || perms[0] != 'r')
			continue; /* anonymous, shared or unreadable: not ours to adopt */
		lo = l > *at ? l : *at;
		hi = h < end ? h : end;
		prot = PROT_READ | (perms[1] == 'w' ? PROT_WRITE : 0) |
		       (perms[2] == 'x' ? PROT_EXEC : 0);
		found = true;
	}
	uhmm__lines_close(&f);
	if (!found) {
		*at = end;
		return 0;
	}
	size_t len = hi - lo;
	char *n = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (n == MAP_FAILED)
		return -ENOMEM;
	for (size_t o = 0; o < len;) {
		ssize_t got = ctx->mem_fd >= 0 ? pread(ctx->mem_fd, n + o, len - o, (off_t)(lo + o)) : -1;
		if (got >= (ssize_t)PAGE_SIZE)
			o += (size_t)got & ~(PAGE_SIZE - 1);
		else
			o += PAGE_SIZE; /* unreadable (past the file's end): zeros */
	}
	if (mprotect(n, len, prot) ||
	    mremap(n, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)lo) == MAP_FAILED) {
		err = -errno;
		munmap(n, len);
		return err == -ENOMEM ? -ENOMEM : -EOPNOTSUPP;
	}
	*at = hi;
	return 1;
}

UHMM_API int uhmm_register_flags(uhmm_ctx *ctx, void *addr, size_t len, unsigned flags)
{
	uintptr_t a = (uintptr_t)addr;
	if (flags & ~(unsigned)UHMM_REGISTER_ADOPT_FILE)
		return -EINVAL;
	if (!(flags & UHMM_REGISTER_ADOPT_FILE))
		return uhmm_register(ctx, addr, len);
	if (!addr || !len || ((a | len) & (PAGE_SIZE - 1)) || a + len < a)
		return -EINVAL;
	if (uhmm__umem_owns(a, len))
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	/* Nothing is adopted under a managed range (its pages are not the
	 * file's to begin with), nor where the rest would be refused. */
	pthread_rwlock_rdlock(&ctx->ranges_lock);
	bool busy = overlaps_locked(ctx, a, a + len);
	pthread_rwlock_unlock(&ctx->ranges_lock);
	err = busy ? -EEXIST : 0;
	for (uintptr_t at = a; !err && at < a + len;) {
		int e = adopt_one(ctx, &at, a + len);
		if (e < 0)
			err = e;
	}
	if (!err)
		err = uhmm__check_vmas(a, a + len, 0);
	if (!err)
		err = add_range(ctx, a, len, false);
	uhmm__ctx_exit(ctx);
	return err;
}

UHMM_API int uhmm_unregister(uhmm_ctx *ctx, void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;
	if (!addr || !len || ((a | len) & (PAGE_SIZE - 1)) || a + len < a)
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	struct uhmm_range *r = uhmm__range_get(ctx, a);
	if (!r || r->start != a || r->owned || r->npages << PAGE_SHIFT != len) {
		err = -EINVAL;
		goto out;
	}
	/*
	 * Closing: migrations toward a device refuse the range from now on
	 * (they check after locking their pages, so one that checked earlier
	 * still holds its pages and the sweep below waits for it).  The range
	 * stays in the table meanwhile so that faults on it are served.
	 */
	if (atomic_exchange(&r->closing, true)) {
		err = -EINVAL; /* another unregister is at work */
		goto out;
	}
	err = uhmm__migrate_range_to_system(ctx, r, 0, r->npages, 0);
	if (err) {
		atomic_store(&r->closing, false);
		goto out;
	}
	release_begin(ctx);
	struct uhmm_range *t = take_exact(ctx, a, len, false);
	if (t) {
		/* uhmm no longer sees changes of it: mirrors let it go. */
		uhmm__invalidate(ctx, a, a + len, UHMM_INV_UNMAP, NULL, 0);
		uhmm__uffd_unregister(ctx->uffd, a, len);
		release_end(ctx);
		uhmm__range_put(t);
		/* And its grown tails (mremap), which it was. */
		err = release_tails(ctx, a + len, false);
	} else {
		release_end(ctx);
	}
out:
	if (r)
		uhmm__range_put(r);
	uhmm__ctx_exit(ctx);
	return err;
}

UHMM_API int uhmm_sync(uhmm_ctx *ctx)
{
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	uhmm__events_wait(ctx);
	/* And the discards that met held pages, which their holders finish
	 * (page.c, "Pages left to their holders"). */
	err = uhmm__zapped_wait(ctx);
	uhmm__ctx_exit(ctx);
	return err;
}

UHMM_API int uhmm_page_query(uhmm_ctx *ctx, const void *addr,
			     struct uhmm_page_info *info)
{
	if (!info)
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	struct uhmm_range *r = uhmm__range_get(ctx, (uintptr_t)addr);
	if (!r) {
		err = -EFAULT;
		goto out;
	}
	const struct uhmm_page *p = range_page_peek(r, ((uintptr_t)addr - r->start) >> PAGE_SHIFT);
	uint32_t w = atomic_load_explicit(&p->word, memory_order_acquire);
	memset(info, 0, sizeof(*info));
	info->seq = atomic_load_explicit(&p->seq, memory_order_relaxed);
	if (pg_loc(w) == LOC_POISON)
		info->where = UHMM_WHERE_POISONED;
	if (pg_dev(w)) {
		info->where = pg_excl(w) ? UHMM_WHERE_EXCLUSIVE
			      : pg_coh(w) ? UHMM_WHERE_COHERENT : UHMM_WHERE_DEVICE;
		info->device = uhmm__dev_get(ctx, pg_dev(w));
		info->dpfn = atomic_load_explicit(&p->dpfn, memory_order_relaxed);
	}
	uhmm__range_put(r);
out:
	uhmm__ctx_exit(ctx);
	return err;
}

/* ---- following the CPU page table (service thread) ---- */

bool uhmm__ranges_own_discard(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	/* Every page marked?  The marks are set by the owners of the locks
	 * before their madvise, which waits for this event to be read: they
	 * cannot change under us but by our own hand. */
	for (int pass = 0; pass < 2; pass++) {
		for (uintptr_t a = start; a < end;) {
			struct uhmm_range *r = uhmm__range_get(ctx, a);
			if (!r)
				return false;
			uintptr_t e = range_end(r) < end ? range_end(r) : end;
			for (uintptr_t x = a; x < e; x += PAGE_SIZE) {
				size_t i = (x - r->start) >> PAGE_SHIFT;
				if (!range_blk_present(r, i)) {
					uhmm__range_put(r);
					return false;
				}
				struct uhmm_page *p = range_page(r, i);
				uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
				if (!pass && (w & (PG_LOCKED | PG_OWNDISC)) != (PG_LOCKED | PG_OWNDISC)) {
					uhmm__range_put(r);
					return false;
				}
				if (pass)
					atomic_fetch_and_explicit(&p->word, ~PG_OWNDISC,
								  memory_order_relaxed);
			}
			a = e;
			uhmm__range_put(r);
		}
	}
	return true;
}

void uhmm__ranges_zap(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	for (uintptr_t a = start; a < end;) {
		struct uhmm_range *r = uhmm__range_get(ctx, a);
		if (!r) {
			/* Skip to the next range, if any. */
			pthread_rwlock_rdlock(&ctx->ranges_lock);
			size_t i = lower_bound_locked(ctx, a);
			a = i < ctx->nranges ? ctx->ranges[i]->start : end;
			pthread_rwlock_unlock(&ctx->ranges_lock);
			continue;
		}
		uintptr_t e = range_end(r) < end ? range_end(r) : end;
		for (uintptr_t x = a; x < e; x += PAGE_SIZE) {
			size_t i = (x - r->start) >> PAGE_SHIFT;
			/* A block never created holds no device page, and in
			 * memory uhmm_alloc'd no page can be present without
			 * a fault that created it: nothing to mark.  Memory
			 * registered may have had pages before uhmm knew it:
			 * they get their DISCARD mark. */
			if (r->owned && !range_blk_present(r, i)) {
				x += (range_blk_left(r, i) - 1) << PAGE_SHIFT;
				continue;
			}
			uhmm__page_zap(ctx, range_page(r, i));
		}
		a = e;
		uhmm__range_put(r);
	}
}

/* Drop the pieces of a split (NULL ones are skipped). */
static void put_pieces(struct uhmm_range *a, struct uhmm_range *b, struct uhmm_range *c)
{
	struct uhmm_range *all[3] = { a, b, c };
	for (int k = 0; k < 3; k++)
		if (all[k])
			uhmm__range_put(all[k]);
}

/*
 * Split r around [cs, ce), a part of it: three new ranges sharing its page
 * array, *left and *right NULL where r has nothing outside the part.
 * -ENOMEM leaves nothing allocated.
 */
static int split_range(struct uhmm_range *r, uintptr_t cs, uintptr_t ce,
		       struct uhmm_range **left, struct uhmm_range **mid,
		       struct uhmm_range **right)
{
	size_t off = (cs - r->start) >> PAGE_SHIFT, n = (ce - cs) >> PAGE_SHIFT;
	*mid = range_new(cs, n, r->arr, r->first + off, r->owned);
	*left = cs > r->start ? range_new(r->start, off, r->arr, r->first, r->owned) : NULL;
	*right = ce < range_end(r) ? range_new(ce, (range_end(r) - ce) >> PAGE_SHIFT,
					       r->arr, r->first + off + n, r->owned)
				   : NULL;
	if (*mid && (cs == r->start || *left) && (ce == range_end(r) || *right)) {
		/* A grown tail's pieces stay tails (of what precedes them). */
		if (*left)
			(*left)->grown = r->grown;
		(*mid)->grown = r->grown;
		if (*right)
			(*right)->grown = r->grown;
		return 0;
	}
	put_pieces(*left, *mid, *right);
	*left = *mid = *right = NULL;
	return -ENOMEM;
}

/*
 * Cut [start, end) out of the table.  Ranges partly inside are split into
 * the parts outside, sharing the page array.  Returns the removed pieces
 * (as new ranges covering just the cut part, so the caller can walk them)
 * through *cut / *ncut.  Caller holds the write lock.
 */
static int cut_locked(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
		      struct uhmm_range ***cut, size_t *ncut)
{
	*cut = NULL;
	*ncut = 0;
	size_t i = lower_bound_locked(ctx, start);
	while (i < ctx->nranges && ctx->ranges[i]->start < end) {
		struct uhmm_range *r = ctx->ranges[i];
		uintptr_t cs = r->start > start ? r->start : start;
		uintptr_t ce = range_end(r) < end ? range_end(r) : end;
		struct uhmm_range *left, *mid, *right;
		if (split_range(r, cs, ce, &left, &mid, &right))
			return -ENOMEM;
		void *grown = uhmm__umem_realloc(*cut, (*ncut + 1) * sizeof(**cut));
		if (!grown) {
			put_pieces(left, mid, right);
			return -ENOMEM;
		}
		*cut = grown;
		(*cut)[(*ncut)++] = mid;
		remove_at_locked(ctx, i);
		uhmm__range_put(r);
		if (left && insert_locked(ctx, left) == 0)
			i++;
		else if (left)
			uhmm__range_put(left);
		if (right && insert_locked(ctx, right) == 0)
			i++;
		else if (right)
			uhmm__range_put(right);
	}
	return 0;
}

/*
 * Limbo.  munmap and mremap post their events after releasing the mmap
 * lock, so another thread can map the freed address, or mremap a range onto
 * it, before the first event is even queued: the events then arrive out of
 * order.  Seen from here: a REMAP whose destination still holds a range of
 * the table.  That range is stale (an mremap onto a live managed range
 * unmaps it first, and that UNMAP is queued before the REMAP), its own
 * UNMAP or REMAP is on its way, and it must not be applied to the range
 * just moved in.  So the destination's old pieces go to limbo, and every
 * later UNMAP or REMAP is applied, address by address, to limbo first and
 * to the table only where limbo has nothing.  (Should a legitimate event
 * for the moved range come before the late one, each is applied to the
 * other's range: both end up applied, which is what the address space
 * did.)
 */

/* Append r to limbo.  Caller holds the write lock. */
static int limbo_add_locked(struct uhmm_ctx *ctx, struct uhmm_range *r)
{
	void *n = uhmm__umem_realloc(ctx->limbo, (ctx->nlimbo + 1) * sizeof(*ctx->limbo));
	if (!n)
		return -ENOMEM;
	ctx->limbo = n;
	ctx->limbo[ctx->nlimbo++] = r;
	return 0;
}

static int by_start(const void *a, const void *b)
{
	uintptr_t x = (*(struct uhmm_range *const *)a)->start;
	uintptr_t y = (*(struct uhmm_range *const *)b)->start;
	return x < y ? -1 : x > y;
}

/* Append r to the array *v of *n. */
static int push(struct uhmm_range ***v, size_t *n, struct uhmm_range *r)
{
	void *g = uhmm__umem_realloc(*v, (*n + 1) * sizeof(**v));
	if (!g)
		return -ENOMEM;
	*v = g;
	(*v)[(*n)++] = r;
	return 0;
}

/*
 * Take [start, end) out of limbo first, then out of the table where limbo
 * had nothing: the pieces, sorted by address, through *out / *nout (new
 * ranges covering just the part taken, as cut_locked() gives).  Caller
 * holds the write lock.
 */
static int take_locked(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
		       struct uhmm_range ***out, size_t *nout)
{
	struct uhmm_range **v = NULL;
	size_t n = 0;
	int err = 0;
	for (size_t i = 0; i < ctx->nlimbo && !err;) {
		struct uhmm_range *r = ctx->limbo[i];
		if (range_end(r) <= start || r->start >= end) {
			i++;
			continue;
		}
		uintptr_t cs = r->start > start ? r->start : start;
		uintptr_t ce = range_end(r) < end ? range_end(r) : end;
		struct uhmm_range *left, *mid, *right;
		if (split_range(r, cs, ce, &left, &mid, &right)) {
			err = -ENOMEM;
			break;
		}
		if (push(&v, &n, mid)) {
			put_pieces(left, mid, right);
			err = -ENOMEM;
			break;
		}
		/* r leaves limbo; what it keeps outside [start, end) stays. */
		ctx->limbo[i] = ctx->limbo[--ctx->nlimbo];
		uhmm__range_put(r);
		if (left)
			ctx->limbo[ctx->nlimbo++] = left; /* the slot r had */
		if (right && (err = limbo_add_locked(ctx, right)))
			uhmm__range_put(right);
		i = 0; /* the array changed: look again from the start */
	}
	/* The table, in the gaps between limbo's pieces.  (qsort's array
	 * may not be NULL, even empty.) */
	if (n > 1)
		uhmm__sort(v, n, sizeof(*v), by_start); /* qsort may malloc */
	size_t nlim = n;
	uintptr_t at = start;
	for (size_t i = 0; i <= nlim && !err; i++) {
		uintptr_t gap_end = i < nlim ? v[i]->start : end;
		if (gap_end > at) {
			struct uhmm_range **cut;
			size_t ncut;
			err = cut_locked(ctx, at, gap_end, &cut, &ncut);
			for (size_t k = 0; k < ncut; k++) {
				if (!err && push(&v, &n, cut[k]) == 0)
					continue;
				uhmm__range_put(cut[k]);
				err = -ENOMEM;
			}
			uhmm__umem_free(cut);
		}
		if (i < nlim)
			at = range_end(v[i]);
	}
	if (n > 1)
		uhmm__sort(v, n, sizeof(*v), by_start); /* qsort may malloc */
	*out = v;
	*nout = n;
	return err;
}

void uhmm__ranges_unmap(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	struct uhmm_range **cut;
	size_t ncut;
	pthread_rwlock_wrlock(&ctx->ranges_lock);
	int err = take_locked(ctx, start, end, &cut, &ncut);
	pthread_rwlock_unlock(&ctx->ranges_lock);
	if (err)
		fprintf(stderr, "uhmm: out of memory following munmap\n");
	for (size_t k = 0; k < ncut; k++) {
		struct uhmm_range *r = cut[k];
		for (size_t i = 0; i < r->npages; i++) {
			if (!range_blk_present(r, i)) {
				i += range_blk_left(r, i) - 1; /* nothing on a device */
				continue;
			}
			uhmm__page_zap(ctx, range_page(r, i));
		}
		atomic_store(&r->dead, true);
		uhmm__range_put(r);
	}
	uhmm__umem_free(cut);
}

void uhmm__ranges_remap(struct uhmm_ctx *ctx, uintptr_t from, uintptr_t to,
			size_t len)
{
	struct uhmm_range **cut, **stale = NULL;
	size_t ncut, nstale = 0;
	pthread_rwlock_wrlock(&ctx->ranges_lock);
	int err = take_locked(ctx, from, from + len, &cut, &ncut);
	/* What the destination still holds is stale (above): to limbo. */
	if (!err && overlaps_locked(ctx, to, to + len)) {
		err = cut_locked(ctx, to, to + len, &stale, &nstale);
		for (size_t k = 0; k < nstale; k++) {
			if (!err && limbo_add_locked(ctx, stale[k]) == 0) {
				STAT_INC(ctx, ranges_displaced);
				continue;
			}
			uhmm__range_put(stale[k]);
			err = -ENOMEM;
		}
		uhmm__umem_free(stale);
	}
	for (size_t k = 0; !err && k < ncut; k++) {
		/* Same pages, new address: device-resident data follows. */
		struct uhmm_range *r = cut[k];
		struct uhmm_range *moved = range_new(to + (r->start - from), r->npages,
						     r->arr, r->first, r->owned);
		if (moved)
			moved->grown = r->grown;
		if (!moved || insert_locked(ctx, moved)) {
			if (moved)
				uhmm__range_put(moved);
			err = -ENOMEM;
		}
	}
	pthread_rwlock_unlock(&ctx->ranges_lock);
	if (err)
		fprintf(stderr, "uhmm: cannot follow mremap (%s)\n", strerror(-err));
	else if (atomic_load_explicit(&ctx->poisoned_now, memory_order_relaxed))
		uhmm__poison_remap(from, to, len); /* (coherent.c, sigbus.c) */
	for (size_t k = 0; k < ncut; k++) {
		atomic_store(&cut[k]->dead, true);
		uhmm__range_put(cut[k]);
	}
	uhmm__umem_free(cut);
}

void uhmm__ranges_release_all(struct uhmm_ctx *ctx)
{
	pthread_rwlock_wrlock(&ctx->ranges_lock);
	while (ctx->nranges) {
		struct uhmm_range *r = ctx->ranges[ctx->nranges - 1];
		uhmm__uffd_unregister(ctx->uffd, r->start, r->npages << PAGE_SHIFT);
		remove_at_locked(ctx, ctx->nranges - 1);
		uhmm__range_put(r);
	}
	uhmm__umem_free(ctx->ranges);
	ctx->ranges = NULL;
	ctx->cap_ranges = 0;
	/* Pieces whose late event never came (their addresses are not ours). */
	while (ctx->nlimbo)
		uhmm__range_put(ctx->limbo[--ctx->nlimbo]);
	uhmm__umem_free(ctx->limbo);
	ctx->limbo = NULL;
	pthread_rwlock_unlock(&ctx->ranges_lock);
}
