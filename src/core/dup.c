/* SPDX-License-Identifier: MIT */
/*
 * dup.c - read-mostly duplicates (UHMM_ADVISE_READ_MOSTLY).
 *
 * A page advised read-mostly that a device reads (a device fault, or a
 * uhmm_migrate / uhmm_prefetch toward it) stays in system memory, present
 * and write-protected in the CPU page table, and the device gets a
 * read-only copy in a frame of its own: its duplicate.  The page word says
 * so with PG_DUP; the frames are kept here, by page-state address (stable:
 * an array never moves, and ranges split from one another share it), up
 * to UHMM_MAX_DUPLICATES devices a page.  The CPU copy is always current:
 * nothing writes a duplicated page without collapsing it first, so a fork
 * child, a migration home or a discard has nothing to fetch.
 *
 * Making one (dup_batch), pages locked in address order:
 *   write-protect the CPU page (a CPU write waits, parked on our lock) ->
 *   read it through /proc/self/mem (never a userfault) -> copy it into a
 *   new frame -> record the frame and set PG_DUP -> unlock.
 * Collapse (a CPU fault on the page, a write range fault, a migration
 * that moves the page, the unset of the advice), page locked:
 *   invalidate [va, va + 4K) for every mirror (UHMM_INV_MIGRATE without a
 *   device: no mirror keeps its entries, and they fence) -> free the
 *   frames -> clear PG_DUP -> remove the write protection (which wakes a
 *   CPU write waiting on it) -> invalidation end.
 * A page that leaves system memory or is discarded with PG_DUP set (its
 * mirrors invalidated by the mover or the event) loses its duplicates in
 * uhmm__page_publish_unlock (uhmm__dup_free_page).
 *
 * Locks: dup_lock, a leaf (frames are freed after it is dropped).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"

struct uhmm_dup {
	const struct uhmm_page *p; /* NULL: free slot */
	uintptr_t va;              /* where it was when duplicated */
	uint8_t dev[UHMM_MAX_DUPLICATES]; /* 0: none */
	uint64_t dpfn[UHMM_MAX_DUPLICATES];
};

void uhmm__dup_init(struct uhmm_ctx *ctx)
{
	pthread_mutex_init(&ctx->dup_lock, NULL);
}

/* ---- the table: open addressing, linear probing, backward-shift delete -- */

static size_t hash_of(const struct uhmm_page *p, size_t cap)
{
	uint64_t x = (uint64_t)(uintptr_t)p >> 4;
	x *= 0x9e3779b97f4a7c15ull;
	return (size_t)(x >> 17) & (cap - 1);
}

static struct uhmm_dup *find_locked(struct uhmm_ctx *ctx, const struct uhmm_page *p)
{
	if (!ctx->dup_n)
		return NULL;
	for (size_t i = hash_of(p, ctx->dup_cap);; i = (i + 1) & (ctx->dup_cap - 1)) {
		if (ctx->dup[i].p == p)
			return &ctx->dup[i];
		if (!ctx->dup[i].p)
			return NULL;
	}
}

static int grow_locked(struct uhmm_ctx *ctx)
{
	size_t cap = ctx->dup_cap ? ctx->dup_cap * 2 : 1024;
	struct uhmm_dup *t = uhmm__umem_calloc(cap, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (size_t k = 0; k < ctx->dup_cap; k++) {
		if (!ctx->dup[k].p)
			continue;
		size_t i = hash_of(ctx->dup[k].p, cap);
		while (t[i].p)
			i = (i + 1) & (cap - 1);
		t[i] = ctx->dup[k];
	}
	uhmm__umem_free(ctx->dup);
	ctx->dup = t;
	ctx->dup_cap = cap;
	return 0;
}

static struct uhmm_dup *insert_locked(struct uhmm_ctx *ctx, const struct uhmm_page *p,
				      uintptr_t va)
{
	struct uhmm_dup *e = find_locked(ctx, p);
	if (e)
		return e;
	if ((ctx->dup_n + 1) * 2 > ctx->dup_cap && grow_locked(ctx))
		return NULL;
	size_t i = hash_of(p, ctx->dup_cap);
	while (ctx->dup[i].p)
		i = (i + 1) & (ctx->dup_cap - 1);
	ctx->dup[i] = (struct uhmm_dup){ .p = p, .va = va };
	ctx->dup_n++;
	return &ctx->dup[i];
}

static void erase_locked(struct uhmm_ctx *ctx, struct uhmm_dup *e)
{
	size_t mask = ctx->dup_cap - 1;
	size_t i = (size_t)(e - ctx->dup);
	ctx->dup[i].p = NULL;
	ctx->dup_n--;
	for (size_t j = (i + 1) & mask; ctx->dup[j].p; j = (j + 1) & mask) {
		size_t h = hash_of(ctx->dup[j].p, ctx->dup_cap);
		/* Move j into the hole at i if its home is not in (i, j]. */
		bool stay = i <= j ? (h > i && h <= j) : (h > i || h <= j);
		if (stay)
			continue;
		ctx->dup[i] = ctx->dup[j];
		ctx->dup[j].p = NULL;
		i = j;
	}
}

static bool entry_empty(const struct uhmm_dup *e)
{
	for (unsigned k = 0; k < UHMM_MAX_DUPLICATES; k++)
		if (e->dev[k])
			return false;
	return true;
}

/* ---- queries ------------------------------------------------------------ */

uint64_t uhmm__dup_frame(struct uhmm_ctx *ctx, const struct uhmm_page *p, unsigned dev,
			 uintptr_t va)
{
	uint64_t f = UINT64_MAX;
	pthread_mutex_lock(&ctx->dup_lock);
	struct uhmm_dup *e = find_locked(ctx, p);
	/* Only at the address it was made for (an mremap moved the page
	 * since: the device reads the CPU copy): reclaim and detach
	 * invalidate that address before the frame goes. */
	for (unsigned k = 0; e && (!va || e->va == va) && k < UHMM_MAX_DUPLICATES; k++)
		if (e->dev[k] == dev)
			f = e->dpfn[k];
	pthread_mutex_unlock(&ctx->dup_lock);
	return f;
}

bool uhmm__dup_held(struct uhmm_ctx *ctx, uintptr_t va, unsigned dev)
{
	struct uhmm_range *r = uhmm__range_get(ctx, va);
	if (!r)
		return false;
	size_t idx = (va - r->start) >> PAGE_SHIFT;
	bool held = false;
	if (range_blk_present(r, idx)) {
		const struct uhmm_page *p = range_page_peek(r, idx);
		held = (atomic_load_explicit(&p->word, memory_order_acquire) & PG_DUP) &&
		       uhmm__dup_frame(ctx, p, dev, va & ~(uintptr_t)(PAGE_SIZE - 1)) !=
			       UINT64_MAX;
	}
	uhmm__range_put(r);
	return held;
}

unsigned uhmm__dup_count(struct uhmm_ctx *ctx, const struct uhmm_page *p)
{
	unsigned n = 0;
	pthread_mutex_lock(&ctx->dup_lock);
	struct uhmm_dup *e = find_locked(ctx, p);
	for (unsigned k = 0; e && k < UHMM_MAX_DUPLICATES; k++)
		n += e->dev[k] != 0;
	pthread_mutex_unlock(&ctx->dup_lock);
	return n;
}

/* Devices holding duplicates of p, as a list of ids (for the query). */
static unsigned dup_devs(struct uhmm_ctx *ctx, const struct uhmm_page *p,
			 uint8_t out[UHMM_MAX_DUPLICATES])
{
	unsigned n = 0;
	pthread_mutex_lock(&ctx->dup_lock);
	struct uhmm_dup *e = find_locked(ctx, p);
	for (unsigned k = 0; e && k < UHMM_MAX_DUPLICATES; k++)
		if (e->dev[k])
			out[n++] = e->dev[k];
	pthread_mutex_unlock(&ctx->dup_lock);
	return n;
}

void uhmm__dup_attrs(struct uhmm_ctx *ctx, const struct uhmm_page *p, uint64_t *dup_bytes,
		     uint64_t *dup_on)
{
	uint8_t d[UHMM_MAX_DUPLICATES];
	unsigned n = dup_devs(ctx, p, d);
	if (n)
		*dup_bytes += PAGE_SIZE;
	for (unsigned k = 0; k < n; k++)
		dup_on[d[k]] += PAGE_SIZE;
}

/* ---- dropping ----------------------------------------------------------- */

/* Take p's duplicates out of the table; with @inv, invalidate the mirrors
 * over the address they were made for (no device spared); then free their
 * frames. */
static void drop(struct uhmm_ctx *ctx, const struct uhmm_page *p, bool inv)
{
	uint8_t dev[UHMM_MAX_DUPLICATES] = { 0 };
	uint64_t dpfn[UHMM_MAX_DUPLICATES];
	uintptr_t va = 0;
	bool any = false;
	pthread_mutex_lock(&ctx->dup_lock);
	struct uhmm_dup *e = find_locked(ctx, p);
	if (e) {
		memcpy(dev, e->dev, sizeof(dev));
		memcpy(dpfn, e->dpfn, sizeof(dpfn));
		va = e->va;
		any = !entry_empty(e);
		erase_locked(ctx, e);
	}
	pthread_mutex_unlock(&ctx->dup_lock);
	if (!any)
		return;
	if (inv)
		uhmm__invalidate(ctx, va, va + PAGE_SIZE, UHMM_INV_MIGRATE, NULL, 0);
	for (unsigned k = 0; k < UHMM_MAX_DUPLICATES; k++) {
		if (!dev[k])
			continue;
		uhmm__dev_free_pages(ctx, dev[k], &dpfn[k], 1);
		STAT_INC(ctx, dup_dropped);
	}
}

/* Take p's duplicates out of the table and free their frames. */
void uhmm__dup_free_page(struct uhmm_ctx *ctx, const struct uhmm_page *p)
{
	drop(ctx, p, false);
}

/*
 * Duplicates dropped at an unlock (uhmm__page_publish_unlock) that a
 * device may still map, with no invalidation after they were handed out:
 *  - a page discarded while someone held it (an madvise's REMOVE found it
 *    locked and only marked it ZAPPED, page.c).  The REMOVE's own
 *    invalidation is over by the unlock, and in between a range fault
 *    may have given a device the duplicate's frame (rf_snapshot: the page
 *    still says PG_DUP) with a sequence nothing had changed since;
 *  - a page leaving home with duplicates: a migration toward a device
 *    that finds one made after its collapse.  Its invalidation is the
 *    device's own, through which simdev keeps its DEV entries, the
 *    duplicate's among them.
 * Freed with no invalidation of its own, the frame stayed mapped by the
 * device while it was reused (uhmm-torture --readmostly --sigbus: device
 * reads of stale data).  So: out of the table first (a range fault from
 * now on finds no frame and gives the CPU's view), then an invalidation
 * with no device (nothing spared; a range fault that found the frame
 * fails its read_retry, an entry installed is removed), then the frames
 * go.
 *
 * Why the holder may wait here (the cycle last tried, an empty entry in
 * rf_snapshot, made the device's fault path wait for the holder, and the
 * torture hung): this is the order every collapse already takes, page
 * lock -> invalidation, and the invalidation waits only for the
 * notifiers' callbacks, which take no page lock and never wait for a
 * device fault (simdev: pt_lock, unit locks, lanes inside one access to
 * device memory).  The device's fault path waits for nothing new: it
 * still gets the duplicate, or the CPU's view, without waiting on the
 * page.
 */
void uhmm__dup_drop_inv(struct uhmm_ctx *ctx, const struct uhmm_page *p)
{
	drop(ctx, p, true);
}

/*
 * Collapse pages [idx, idx + n) of r, which the caller holds; dup[i] says
 * which have PG_DUP.  One invalidation over the span.
 */
static void collapse_held(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx, size_t n,
			  const uint8_t *dup)
{
	size_t lo = n, hi = 0;
	for (size_t i = 0; i < n; i++)
		if (dup[i]) {
			if (lo == n)
				lo = i;
			hi = i + 1;
		}
	if (lo == n)
		return;
	uintptr_t va = r->start + ((idx + lo) << PAGE_SHIFT);
	uintptr_t vend = r->start + ((idx + hi) << PAGE_SHIFT);
	bool inv = uhmm__invalidate_start(ctx, va, vend, UHMM_INV_MIGRATE, NULL, 0);
	size_t gone = 0;
	for (size_t i = lo; i < hi; i++) {
		if (!dup[i])
			continue;
		struct uhmm_page *p = range_page(r, idx + i);
		if (atomic_load_explicit(&p->word, memory_order_relaxed) & PG_DUP) {
			uhmm__dup_free_page(ctx, p);
			atomic_fetch_and_explicit(&p->word, ~PG_DUP, memory_order_relaxed);
			gone++;
		}
	}
	uhmm__trace_dup(ctx, va, gone, 0u);
	/* The protection goes last: a CPU write waiting on it goes on now,
	 * when no device can read a stale duplicate any more.  (Gone or
	 * changed meanwhile: an munmap or mremap; nothing to write then.) */
	for (size_t i = lo; i < hi;) {
		if (!dup[i]) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < hi && dup[j])
			j++;
		uintptr_t a = r->start + ((idx + i) << PAGE_SHIFT);
		for (int k = 0; uhmm__uffd_writeprotect(ctx->uffd, a, (j - i) << PAGE_SHIFT,
							false) == -EAGAIN && k < 64; k++)
			sched_yield();
		i = j;
	}
	uhmm__invalidate_end(ctx, va, vend, inv);
}

void uhmm__dup_collapse_locked(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx)
{
	uint8_t one = 1;
	collapse_held(ctx, r, idx, 1, &one);
}

#define PM_UFFD_WP (1ull << 57)

/*
 * Collapse what of [idx, idx + n) of r (n <= BATCH_PAGES) is duplicated.
 * @stray: also unprotect pages at home that are write-protected without
 * duplicates (PG_DUP cleared or never set: a page that left and came back
 * with its protection, found by the pagemap), which a write range fault
 * could not populate in SIGBUS or user-mode-only mode.
 * @nowait: never wait for a page lock: a page someone holds is skipped
 * (uhmm__dup_collapse_write_try).
 */
static void collapse_batch(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx, size_t n,
			   bool stray, bool nowait)
{
	uint8_t dup[BATCH_PAGES];
	uint64_t pm[BATCH_PAGES];
	uintptr_t va = r->start + (idx << PAGE_SHIFT);
	bool pm_ok = stray && ctx->pagemap_fd >= 0 &&
		     pread(ctx->pagemap_fd, pm, n * sizeof(pm[0]),
			   (off_t)((va >> PAGE_SHIFT) * sizeof(pm[0]))) == (ssize_t)(n * sizeof(pm[0]));
	bool any = false;
	for (size_t i = 0; i < n; i++) {
		uint32_t w = atomic_load_explicit(&range_page_peek(r, idx + i)->word,
						  memory_order_acquire);
		dup[i] = (w & PG_DUP) || (pm_ok && (pm[i] & PM_UFFD_WP) && pg_loc(w) == LOC_CPU);
		any |= dup[i];
	}
	if (!any)
		return;
	/* Lock them (address order; we hold nothing else) and look again. */
	for (size_t i = 0; i < n; i++) {
		if (!dup[i])
			continue;
		struct uhmm_page *p = range_page(r, idx + i);
		if (nowait) {
			if (!uhmm__page_trylock(p)) {
				dup[i] = 0; /* held: the caller's next retry */
				continue;
			}
		} else {
			uhmm__page_lock(p);
		}
		uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
		if (!(w & PG_DUP) && !(pm_ok && pg_loc(w) == LOC_CPU)) {
			uhmm__page_unlock(ctx, p);
			dup[i] = 0;
		}
	}
	collapse_held(ctx, r, idx, n, dup);
	for (size_t i = 0; i < n; i++)
		if (dup[i])
			uhmm__page_unlock(ctx, range_page(r, idx + i));
}

static void collapse_range(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b, bool stray,
			   bool nowait);

void uhmm__dup_collapse_range(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b)
{
	collapse_range(ctx, a, b, false, false);
}

void uhmm__dup_collapse_write(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b)
{
	collapse_range(ctx, a, b, true, false);
}

/*
 * uhmm__dup_collapse_write for the retries of a write range fault's
 * populate in SIGBUS mode (rangefault.c, populate): a device read may
 * duplicate a page again, and write-protect it, between the range fault's
 * collapse and its populate, which cannot wait for a write-protect fault
 * in that mode (it fails EFAULT until the protection goes).  This runs on
 * a device's fault path, which must not wait for a page lock: a holder
 * may be waiting for that very device (a blocking collapse here stopped
 * uhmm-torture --readmostly --sigbus in its watchdog once in 60 runs:
 * migrate, dev-atomic, mprotect and dev-write stuck).  So a page someone
 * holds is skipped; the populate fails again and the next retry tries
 * again, all of it bounded by the retries' UHMM_SETTLE_NS.  What it does
 * wait for, with pages locked, is the collapse's invalidation: the order
 * every collapse takes (page lock -> invalidation), whose callbacks take
 * no page lock and never wait for a device fault.
 */
void uhmm__dup_collapse_write_try(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b)
{
	collapse_range(ctx, a, b, true, true);
}

static void collapse_range(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b, bool stray,
			   bool nowait)
{
	if (!atomic_load_explicit(&ctx->rm_any, memory_order_acquire))
		return;
	for (uintptr_t x = a; x < b;) {
		struct uhmm_range *r = uhmm__range_get(ctx, x);
		if (!r) {
			x += PAGE_SIZE;
			continue;
		}
		size_t idx = (x - r->start) >> PAGE_SHIFT;
		size_t e = ((b < range_end(r) ? b : range_end(r)) - r->start) >> PAGE_SHIFT;
		while (idx < e) {
			if (!range_blk_present(r, idx)) {
				size_t k = range_blk_left(r, idx);
				idx += k < e - idx ? k : e - idx;
				continue;
			}
			size_t n = range_blk_left(r, idx);
			if (n > e - idx)
				n = e - idx;
			collapse_batch(ctx, r, idx, n, stray, nowait);
			idx += n;
		}
		x = r->start + (e << PAGE_SHIFT);
		uhmm__range_put(r);
	}
}

/*
 * Take one of device @dev's duplicates whose page lies outside [xlo, xhi)
 * and whose frame is in [flo, fhi) out of the table: *va and *dpfn say
 * which.  PG_DUP stays on the page (a fault collapses what is left).
 * False if there is none.
 */
static bool take_one(struct uhmm_ctx *ctx, unsigned dev, uintptr_t xlo, uintptr_t xhi,
		     uint64_t flo, uint64_t fhi, uintptr_t *va, uint64_t *dpfn)
{
	bool found = false;
	pthread_mutex_lock(&ctx->dup_lock);
	for (size_t i = 0; i < ctx->dup_cap && !found; i++) {
		struct uhmm_dup *e = &ctx->dup[i];
		if (!e->p || (e->va >= xlo && e->va < xhi))
			continue;
		for (unsigned k = 0; k < UHMM_MAX_DUPLICATES; k++) {
			if (e->dev[k] != dev || e->dpfn[k] < flo || e->dpfn[k] >= fhi)
				continue;
			*va = e->va;
			*dpfn = e->dpfn[k];
			e->dev[k] = 0;
			if (entry_empty(e))
				erase_locked(ctx, e);
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&ctx->dup_lock);
	return found;
}

/*
 * Take up to @want of device @dev's duplicates whose pages lie outside
 * [xlo, xhi), in frames [flo, fhi), out of the table, their mirrors invalidated, and free their
 * frames (device memory is needed: duplicates are the cheapest victims,
 * the CPU copy being current).  Without the page lock: PG_DUP stays, and
 * the next CPU fault on the page finds nothing to drop but the
 * protection.  Returns how many were freed.
 */
size_t uhmm__dup_reclaim(struct uhmm_ctx *ctx, unsigned dev, size_t want, uintptr_t xlo,
			 uintptr_t xhi, uint64_t flo, uint64_t fhi)
{
	size_t freed = 0;
	if (!atomic_load_explicit(&ctx->rm_any, memory_order_acquire))
		return 0;
	uintptr_t va;
	uint64_t dpfn;
	while (freed < want && take_one(ctx, dev, xlo, xhi, flo, fhi, &va, &dpfn)) {
		uhmm__invalidate(ctx, va, va + PAGE_SIZE, UHMM_INV_MIGRATE, NULL, 0);
		uhmm__dev_free_pages(ctx, dev, &dpfn, 1);
		STAT_INC(ctx, dup_dropped);
		freed++;
	}
	return freed;
}

void uhmm__dup_drop_dev(struct uhmm_ctx *ctx, struct uhmm_device *d)
{
	uintptr_t va;
	uint64_t dpfn;
	while (take_one(ctx, d->id, 1, 0, 0, UINT64_MAX, &va, &dpfn)) {
		/* The device may map it still: it is told before the frame goes. */
		uhmm__invalidate(ctx, va, va + PAGE_SIZE, UHMM_INV_MIGRATE, NULL, 0);
		uhmm__dev_put_frames(ctx, d, &dpfn, 1);
		STAT_INC(ctx, dup_dropped);
	}
}

void uhmm__dup_fini(struct uhmm_ctx *ctx)
{
	for (size_t i = 0; i < ctx->dup_cap; i++) {
		struct uhmm_dup *e = &ctx->dup[i];
		if (!e->p)
			continue;
		for (unsigned k = 0; k < UHMM_MAX_DUPLICATES; k++)
			if (e->dev[k])
				uhmm__dev_free_pages(ctx, e->dev[k], &e->dpfn[k], 1);
	}
	uhmm__umem_free(ctx->dup);
	ctx->dup = NULL;
	ctx->dup_cap = ctx->dup_n = 0;
	/* (dup_lock stays usable: device_release looks once more.) */
}

/* ---- making duplicates -------------------------------------------------- */

#define PM_PRESENT (1ull << 63)

/*
 * Write-protect [a, a + len) of r, registering the range for it first if
 * it is not (a range made after the advice was given).  0 or -errno.
 */
static int protect(struct uhmm_ctx *ctx, struct uhmm_range *r, uintptr_t a, size_t len)
{
	int e = 0;
	for (int tries = 0; tries < 2; tries++) {
		e = uhmm__uffd_protect_yielding(ctx->uffd, a, len);
		if (e != -EINVAL && e != -ENOENT)
			return e;
		/* Not registered for write-protection: register it. */
		if (uhmm__uffd_register_wp(ctx->uffd, r->start, r->npages << PAGE_SHIFT, true))
			return e;
	}
	return e;
}

/*
 * Duplicate pages [idx, idx + n) of r (one block at most) on device d,
 * those in system memory.  Returns 0, or -ENOMEM (d full: the pages that
 * did not fit are not duplicated), -EIO (a copy failed), -EAGAIN / -EFAULT
 * (the protection could not be set: an event pending, the mapping gone).
 */
static int dup_batch(struct uhmm_ctx *ctx, struct uhmm_range *r, size_t idx, size_t n,
		     struct uhmm_device *d)
{
	uintptr_t va = r->start + (idx << PAGE_SHIFT);
	uint8_t want[BATCH_PAGES];
	int err = 0;
	/* Pages on another device (private) come home first. */
	for (size_t i = 0; i < n;) {
		uint32_t w = atomic_load_explicit(&range_page_peek(r, idx + i)->word,
						  memory_order_acquire);
		unsigned od = pg_devpriv(w);
		if (!od || od == d->id) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < n && pg_devpriv(atomic_load_explicit(&range_page_peek(r, idx + j)->word,
								memory_order_acquire)) == od)
			j++;
		int e = uhmm__migrate_range_to_system(ctx, r, idx + i, j - i, od);
		if (e && !err)
			err = e;
		i = j;
	}
	pthread_rwlock_rdlock(&ctx->fork_lock);
	/* Lock in address order; keep what is at home, not discarded, not
	 * duplicated on d yet, and has room for one more duplicate. */
	size_t cand = 0;
	for (size_t i = 0; i < n; i++) {
		struct uhmm_page *p = range_page(r, idx + i);
		uhmm__page_lock(p);
		uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
		want[i] = pg_loc(w) == LOC_CPU && !(w & (PG_DISCARD | PG_ZAPPED));
		if (want[i] && (w & PG_DUP) &&
		    (uhmm__dup_frame(ctx, p, d->id, 0) != UINT64_MAX ||
		     uhmm__dup_count(ctx, p) >= UHMM_MAX_DUPLICATES))
			want[i] = 0;
		if (!want[i])
			uhmm__page_unlock(ctx, p);
		cand += want[i];
	}
	if (!cand)
		goto out;
	/* Never populated: nothing to duplicate (the device maps it as
	 * without the advice). */
	uint64_t pm[BATCH_PAGES];
	bool pm_ok = ctx->pagemap_fd >= 0 &&
		     pread(ctx->pagemap_fd, pm, n * sizeof(pm[0]),
			   (off_t)((va >> PAGE_SHIFT) * sizeof(pm[0]))) == (ssize_t)(n * sizeof(pm[0]));
	uint8_t rights[BATCH_PAGES];
	if (uhmm__range_rights(ctx, va, va + (n << PAGE_SHIFT), rights))
		memset(rights, 0, n);
	for (size_t i = 0; i < n; i++) {
		if (want[i] && (!pm_ok || !(pm[i] & PM_PRESENT) || !(rights[i] & 1))) {
			want[i] = 0;
			uhmm__page_unlock(ctx, range_page(r, idx + i));
		}
	}
	char *buf = uhmm__pool_bounce_get(&ctx->pool);
	if (!buf || ctx->mem_fd < 0) {
		err = -ENOMEM;
		for (size_t i = 0; i < n; i++)
			if (want[i]) {
				want[i] = 0;
				uhmm__page_unlock(ctx, range_page(r, idx + i));
			}
		if (buf)
			uhmm__pool_bounce_put(&ctx->pool, buf);
		goto out;
	}
	/* Protect, then read: a CPU write after the protection waits for us
	 * (its fault parks on our lock) and then collapses the page. */
	uint8_t wpd[BATCH_PAGES] = { 0 };
	for (size_t i = 0; i < n;) {
		if (!want[i]) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < n && want[j])
			j++;
		uintptr_t a = va + (i << PAGE_SHIFT);
		int e = protect(ctx, r, a, (j - i) << PAGE_SHIFT);
		if (e) {
			err = e == -EAGAIN ? -EAGAIN : -EFAULT;
			for (size_t x = i; x < j; x++) {
				want[x] = 0;
				uhmm__page_unlock(ctx, range_page(r, idx + x));
			}
		} else {
			memset(wpd + i, 1, j - i);
			ssize_t got = pread(ctx->mem_fd, buf + (i << PAGE_SHIFT),
					    (j - i) << PAGE_SHIFT, (off_t)a);
			/* Short: pages discarded meanwhile are not duplicated. */
			size_t ok = got > 0 ? (size_t)got >> PAGE_SHIFT : 0;
			for (size_t x = i + ok; x < j; x++)
				want[x] = 0; /* unlocked below, unprotected */
		}
		i = j;
	}
	/* Frames, then the copy. */
	uint64_t dpfn[BATCH_PAGES];
	struct uhmm_copy c[BATCH_PAGES];
	size_t k = 0, map[BATCH_PAGES];
	for (size_t i = 0; i < n; i++)
		if (want[i])
			map[k++] = i;
	long got = k ? uhmm__dev_get_frames(d, k, dpfn) : 0;
	if (got < 0)
		got = 0;
	if ((size_t)got < k && uhmm__dup_reclaim(ctx, d->id, k - (size_t)got, va,
						 va + (n << PAGE_SHIFT), 0, UINT64_MAX)) {
		long more = uhmm__dev_get_frames(d, k - (size_t)got, dpfn + got);
		if (more > 0)
			got += more;
	}
	uint8_t nofit[BATCH_PAGES] = { 0 };
	if ((size_t)got < k) {
		/* The device is full (of pages, not duplicates): these move
		 * instead, below, with eviction. */
		for (size_t m = (size_t)got; m < k; m++) {
			want[map[m]] = 0;
			nofit[map[m]] = 1;
		}
		k = (size_t)got;
	}
	/* One copy a run of pages consecutive in the buffer and in frames
	 * (each copy costs the link's latency). */
	size_t nc = 0, cfirst[BATCH_PAGES];
	for (size_t m = 0; m < k; m++) {
		if (nc && map[m] == map[m - 1] + 1 && dpfn[m] == dpfn[m - 1] + 1) {
			c[nc - 1].npages++;
			continue;
		}
		cfirst[nc] = m;
		c[nc++] = (struct uhmm_copy){ .sys = buf + (map[m] << PAGE_SHIFT), .dpfn = dpfn[m],
					      .npages = 1, .dir = UHMM_COPY_TO_DEVICE };
	}
	if (nc && uhmm__copy_run(ctx, d, c, nc)) {
		for (size_t x = 0; x < nc; x++) {
			if (!c[x].status)
				continue;
			for (size_t m = cfirst[x]; m < cfirst[x] + c[x].npages; m++) {
				want[map[m]] = 0;
				uhmm__dev_put_frames(ctx, d, &dpfn[m], 1);
				dpfn[m] = UINT64_MAX;
			}
			err = -EIO;
		}
	}
	uhmm__pool_bounce_put(&ctx->pool, buf);
	/* Record them.  Out of memory for the table: not duplicated. */
	size_t made = 0;
	for (size_t m = 0; m < k; m++) {
		if (dpfn[m] == UINT64_MAX)
			continue;
		size_t i = map[m];
		struct uhmm_page *p = range_page(r, idx + i);
		bool ok = false;
		pthread_mutex_lock(&ctx->dup_lock);
		struct uhmm_dup *e = insert_locked(ctx, p, va + (i << PAGE_SHIFT));
		for (unsigned s = 0; e && s < UHMM_MAX_DUPLICATES && !ok; s++)
			if (!e->dev[s]) {
				e->dev[s] = (uint8_t)d->id;
				e->dpfn[s] = dpfn[m];
				ok = true;
			}
		pthread_mutex_unlock(&ctx->dup_lock);
		if (!ok) {
			want[i] = 0;
			uhmm__dev_put_frames(ctx, d, &dpfn[m], 1);
			err = -ENOMEM;
			continue;
		}
		atomic_fetch_or_explicit(&p->word, PG_DUP, memory_order_relaxed);
		STAT_INC(ctx, dup_made);
		made++;
	}
	uhmm__trace_dup(ctx, va, made, d->id);
	/* Unlock; pages protected but not duplicated lose the protection
	 * (unless an earlier duplicate of theirs needs it). */
	for (size_t i = 0; i < n; i++) {
		if (!wpd[i])
			continue;
		struct uhmm_page *p = range_page(r, idx + i);
		if (!want[i] && !(atomic_load_explicit(&p->word, memory_order_relaxed) & PG_DUP))
			(void)uhmm__uffd_writeprotect(ctx->uffd, va + (i << PAGE_SHIFT), PAGE_SIZE,
						      false);
		uhmm__page_unlock(ctx, p);
	}
	pthread_rwlock_unlock(&ctx->fork_lock);
	for (size_t i = 0; i < n;) {
		if (!nofit[i]) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < n && nofit[j])
			j++;
		int e = uhmm_migrate(ctx, (void *)(va + (i << PAGE_SHIFT)), (j - i) << PAGE_SHIFT,
				     d, UHMM_MIGRATE_MOVE);
		if (e && !err)
			err = e;
		i = j;
	}
	return err;
out:
	pthread_rwlock_unlock(&ctx->fork_lock);
	return err;
}

/* Duplicate [a, b) (read-mostly, within one range run) on d. */
static int dup_run(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b, struct uhmm_device *d)
{
	int err = 0;
	for (uintptr_t x = a; x < b;) {
		struct uhmm_range *r = uhmm__range_get(ctx, x);
		if (!r)
			return err ? err : -EFAULT;
		size_t idx = (x - r->start) >> PAGE_SHIFT;
		size_t room = (UHMM_HUGE_SIZE - (x & (UHMM_HUGE_SIZE - 1))) >> PAGE_SHIFT;
		size_t n = (b - x) >> PAGE_SHIFT;
		if (n > room)
			n = room;
		if (n > r->npages - idx)
			n = r->npages - idx;
		/* -EAGAIN: an event is pending (the protection is refused
		 * while the kernel's mmap_changing is set); once it is read,
		 * the batch is tried again, a few times, then -EBUSY. */
		int e;
		for (int k = 0; (e = dup_batch(ctx, r, idx, n, d)) == -EAGAIN && k < 8; k++) {
			uhmm__events_wait(ctx);
			sched_yield();
		}
		if (e == -EAGAIN)
			e = -EBUSY;
		if (e && !err)
			err = e;
		uhmm__range_put(r);
		x += n << PAGE_SHIFT;
	}
	return err;
}

int uhmm__dup_migrate(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b, struct uhmm_device *dst,
		      bool all)
{
	int err = 0;
	for (uintptr_t x = a; x < b;) {
		uintptr_t lo = x, hi = b;
		bool rm = all || uhmm__advice_read_mostly(ctx, x, &lo, &hi);
		int e;
		if (rm && !dst->coh_base)
			e = dup_run(ctx, x, hi, dst);
		else
			e = uhmm_migrate(ctx, (void *)x, hi - x, dst, UHMM_MIGRATE_MOVE);
		if (e && !err)
			err = e;
		x = hi;
	}
	return err;
}
