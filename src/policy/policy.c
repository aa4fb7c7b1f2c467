/* SPDX-License-Identifier: MIT */
/*
 * policy.c - the policy layer: the built-in decisions, and the plug-in
 * dispatcher that checks a plug-in's decisions and ejects a misbehaving one.
 *
 * Every question of the mechanism is answered here in two steps: the
 * built-in decision is made (and the built-in state, e.g. the read-ahead
 * scans, kept up to date whatever is installed), then, if a plug-in is
 * installed and has the callback, it is called with the built-in decision
 * in its output and may change it.  Its answer is checked (each callback's
 * rules are in include/uhmm/policy.h); an invalid answer, a non-zero
 * return, or a call longer than the budget ejects the plug-in, and the
 * built-in decision stands.
 *
 * Installing and ejecting.  The plug-in in use is ctx->pol.cur.  A caller
 * announces itself in users[phase] before it loads cur and leaves after its
 * callback returned; uhmm_policy_set() swaps cur, flips the phase and waits
 * for the old phase's callers to leave before it calls the old exit().  A
 * caller that announced itself after that wait began loads cur after the
 * swap (both sequentially consistent), so it never sees the old plug-in.
 * An ejection happens inside a call (its own phase is not empty): the
 * ejector only swaps cur to NULL and puts the plug-in on the zombie list;
 * its exit() runs at the next uhmm_policy_set() or at context destroy.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"
#include "core/probes.h"
#include "core/log.h"
#include "policy/policy.h"

#define PG ((uint64_t)UHMM_PAGE_SIZE)
#define BLK ((uint64_t)UHMM_HUGE_SIZE)
#define SET_WAIT_NS 2000000000ull
/* Read-ahead windows longer than this are invalid (policy.h). */
#define MAX_AHEAD (256ull << 20)

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- the built-in policy ------------------------------------------------ */

/*
 * CPU fault: the fault-around block (fault_around pages, aligned in the
 * address space, clipped to the range) comes home.  Read-ahead: a fault on
 * the block right after a scan's last faulting block, or inside the window
 * the scan last asked for (the reader skipped blocks brought ahead for it),
 * continues the scan, whose window moves to readahead_pages past this block
 * (whole blocks); any other fault starts a candidate scan in the least
 * recent slot, whose next consecutive block starts the read-ahead.
 */
static void builtin_cpu_fault(struct uhmm_polctx *p, const struct uhmm_pol_cpu_fault *f,
			      bool readahead, struct uhmm_pol_cpu_act *a)
{
	uint64_t bsz = (uint64_t)p->fault_around * PG;
	uint64_t page = f->addr & ~(PG - 1);
	uint64_t lo = page - (page % bsz), hi = lo + bsz;
	if (lo < f->range_start)
		lo = f->range_start;
	if (hi > f->range_end)
		hi = f->range_end;
	*a = (struct uhmm_pol_cpu_act){ .lo = lo, .hi = hi };
	uint64_t win = (uint64_t)p->readahead_pages * PG;
	if (!readahead || !win || p->fault_around < 2)
		return;
	uint64_t blk = page - (page % bsz);
	pthread_mutex_lock(&p->scan_lock);
	struct uhmm_pol_scan *s = NULL, *lru = &p->scans[0];
	for (unsigned i = 0; i < UHMM_POL_STREAMS; i++) {
		struct uhmm_pol_scan *x = &p->scans[i];
		if (x->used && (blk == x->last + bsz ||
				(x->wend > x->last && blk > x->last && blk < x->wend))) {
			s = x;
			break;
		}
		if (x->used < lru->used)
			lru = x;
	}
	if (!s) {
		*lru = (struct uhmm_pol_scan){ .last = blk, .wend = 0, .used = ++p->scan_clock };
	} else {
		/* A scan's fault brings its whole 2 MiB block home: one copy
		 * and one move (a PMD where the block goes back whole), and
		 * the reader's next faults are a block away instead of a
		 * fault-around block (measured: fault_around 512 read 0.87-
		 * 0.95x memcpy where 64 with read-ahead read 0.49-0.65x). */
		uint64_t b2 = page & ~(BLK - 1), e2 = b2 + BLK;
		if (b2 < f->range_start)
			b2 = f->range_start;
		if (e2 > f->range_end)
			e2 = f->range_end;
		if (b2 < a->lo)
			a->lo = b2;
		if (e2 > a->hi)
			a->hi = e2;
		uint64_t end = a->hi > blk + bsz ? a->hi : blk + bsz;
		s->wend = end + (win + bsz - 1) / bsz * bsz;
		s->last = end - bsz;
		s->used = ++p->scan_clock;
		uint64_t e = s->wend < f->range_end ? s->wend : f->range_end;
		if (end < e) {
			a->ahead_lo = end;
			a->ahead_hi = e;
			a->ahead_stream = (uint32_t)(s - p->scans);
		}
	}
	pthread_mutex_unlock(&p->scan_lock);
}

/*
 * The prefetcher (UVM's, in outline): of the faulting page's span, migrate
 * the largest naturally aligned subregion around the page (a power of two
 * of pages, up to the 2 MiB block, inside the span) of which more than
 * pf_threshold % is either already on @dev or faulting in this batch; at
 * least the page.  pf_threshold 100 migrates the faulting pages alone; a
 * sequential access doubles what it brings at each fault (pages 0, 1, 2-3,
 * 4-7, ...: about 10 faults for a block instead of 512).
 */
/* Pages of [bit, bit + n) set in the block's bitmap (n a power of two,
 * bit a multiple of n). */
static unsigned bits_set(const uint64_t *bm, unsigned bit, unsigned n)
{
	if (n >= 64) {
		unsigned c = 0;
		for (unsigned w = bit / 64; w < (bit + n) / 64; w++)
			c += (unsigned)__builtin_popcountll(bm[w]);
		return c;
	}
	uint64_t m = ((1ull << n) - 1) << (bit % 64);
	return (unsigned)__builtin_popcountll(bm[bit / 64] & m);
}

/* The bitmap of the 2 MiB block at @blk: pages on @dev, or faulting in
 * this batch (f[0..n), sorted). */
static void block_bitmap(struct uhmm_ctx *ctx, uhmm_loc dev, uint64_t blk,
			 const struct uhmm_pol_dev_fault *f, size_t n, uint64_t *bm)
{
	memset(bm, 0, (BLK / PG / 64) * sizeof(*bm));
	for (size_t k = 0; k < n; k++)
		if ((f[k].addr & ~(BLK - 1)) == blk) {
			unsigned b = (unsigned)((f[k].addr - blk) / PG);
			bm[b / 64] |= 1ull << (b % 64);
		}
	for (uint64_t x = blk; x < blk + BLK;) {
		struct uhmm_range *r = uhmm__range_get(ctx, x);
		if (!r) {
			x += PG;
			continue;
		}
		uint64_t e = range_end(r) < blk + BLK ? range_end(r) : blk + BLK;
		for (; x < e; x += PG) {
			size_t idx = (x - r->start) >> PAGE_SHIFT;
			if (!range_blk_present(r, idx))
				continue;
			uint32_t w = atomic_load_explicit(&range_page_peek(r, idx)->word,
							  memory_order_relaxed);
			if (pg_loc(w) == LOC_DEV(dev)) {
				unsigned b = (unsigned)((x - blk) / PG);
				bm[b / 64] |= 1ull << (b % 64);
			}
		}
		uhmm__range_put(r);
	}
}

/*
 * The prefetcher (UVM's, in outline): of the faulting page's span, migrate
 * the largest naturally aligned subregion around the page (a power of two
 * of pages, up to the 2 MiB block, inside the span) of which more than
 * pf_threshold % is either already on @dev or faulting in this batch; at
 * least the page.  pf_threshold 100 migrates the faulting pages alone; a
 * sequential access doubles what it brings at each fault (pages 0, 1, 2-3,
 * 4-7, ...: about 10 faults for a block instead of 512).
 */
static void prefetch_span(const struct uhmm_polctx *p, const uint64_t *bm, uint64_t blk,
			  const struct uhmm_pol_dev_fault *fi, struct uhmm_pol_dev_act *a)
{
	uint64_t page = fi->addr & ~(PG - 1);
	a->lo = page;
	a->hi = page + PG;
	for (uint64_t sz = 2 * PG; sz <= BLK; sz *= 2) {
		uint64_t lo = page & ~(sz - 1), hi = lo + sz;
		if (lo < fi->lo || hi > fi->hi)
			break;
		unsigned have = bits_set(bm, (unsigned)((lo - blk) / PG), (unsigned)(sz / PG));
		if ((uint64_t)have * 100 > (uint64_t)p->pf_threshold * (sz / PG)) {
			a->lo = lo;
			a->hi = hi;
		}
	}
}

/* Device faults: the backend's advice (map remotely) is followed; the rest
 * migrates its whole span (the block, or what of it is managed under one
 * advice): migrate on touch; a read of read-mostly pages duplicates them. */
static void builtin_dev_faults(struct uhmm_polctx *p, uhmm_loc dev,
			       const struct uhmm_pol_dev_fault *f, size_t n,
			       struct uhmm_pol_dev_act *a)
{
	uint64_t now = mono_ns();
	uint64_t bm[BLK / PG / 64], bm_blk = UINT64_MAX;
	for (size_t i = 0; i < n; i++) {
		if (f[i].flags & UHMM_POL_F_ATOMIC_FAR) {
			/* An atomic the device cannot make where the page is:
			 * take the page exclusively when advised so, or, with
			 * no advice, when the CPU has it in its page table
			 * (it is using it: a migration would only come back);
			 * else migrate it (with its span, as any fault of
			 * the block, unless the backend maps the span
			 * remotely: the page alone). */
			bool excl = (f[i].flags & UHMM_POL_F_ATOMIC_EXCLUSIVE) ||
				    (!(f[i].flags & UHMM_POL_F_ATOMIC_MIGRATE) &&
				     (f[i].flags & UHMM_POL_F_CPU_PRESENT));
			uint64_t page = f[i].addr & ~(PG - 1);
			if (excl)
				a[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_EXCLUSIVE };
			else if (f[i].hint == UHMM_POL_HINT_MAP_REMOTE)
				a[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MIGRATE,
								  .lo = page, .hi = page + PG };
			else
				a[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MIGRATE,
								  .lo = f[i].lo, .hi = f[i].hi };
			continue;
		}
		/* A preferred location elsewhere: pages in system memory are
		 * mapped where they are (a device's private memory cannot be
		 * mapped by another: those migrate).  Thrashing: throttled,
		 * then pinned to system memory and mapped remotely. */
		uint64_t thr = uhmm__thrash_state(p, f[i].addr, now);
		bool stay = f[i].hint == UHMM_POL_HINT_MAP_REMOTE ||
			    ((f[i].flags & UHMM_POL_F_PREFERRED) && f[i].preferred != dev &&
			     f[i].where == 0) ||
			    (thr == UINT64_MAX && f[i].where == 0);
		if (stay)
			a[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MAP_REMOTE };
		else
			a[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MIGRATE,
							  .lo = f[i].lo, .hi = f[i].hi };
		if (!stay && p->pf_threshold) {
			uint64_t blk = f[i].addr & ~(BLK - 1);
			if (blk != bm_blk) {
				block_bitmap(p->ctx, dev, blk, f, n, bm);
				bm_blk = blk;
			}
			prefetch_span(p, bm, blk, &f[i], &a[i]);
		}
		/* Read-mostly advice: a read gets a duplicate (the CPU keeps
		 * its copy); a write moves the pages (collapsing theirs). */
		if (!stay && (f[i].flags & (UHMM_POL_F_READ_MOSTLY | UHMM_POL_F_DUPLICATED)) &&
		    f[i].access == UHMM_POL_READ)
			a[i].action = UHMM_POL_DUPLICATE;
		if (thr && thr != UINT64_MAX)
			a[i].delay_ns = thr;
	}
}

/* Eviction: least recently used first (the order offered), blocks advised
 * to prefer the device after all others. */
static void builtin_evict_order(const struct uhmm_pol_block *c, size_t n, uint32_t *order)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (!(c[i].flags & UHMM_POL_BLK_PREFERRED))
			order[k++] = (uint32_t)i;
	for (size_t i = 0; i < n; i++)
		if (c[i].flags & UHMM_POL_BLK_PREFERRED)
			order[k++] = (uint32_t)i;
}

/* Access counters: migrate a hot remotely mapped region to the device that
 * accesses it, unless the backend maps it remotely on purpose, it prefers
 * another location, or the thrashing control pinned it to system memory. */
static void builtin_access_counter(struct uhmm_polctx *p, uhmm_loc dev,
				   const struct uhmm_pol_counter *n,
				   struct uhmm_pol_counter_act *a)
{
	bool stay = n->hint == UHMM_POL_HINT_MAP_REMOTE ||
		    ((n->flags & UHMM_POL_F_PREFERRED) && n->preferred != dev) ||
		    uhmm__thrash_state(p, n->addr, mono_ns()) == UINT64_MAX;
	if (stay)
		*a = (struct uhmm_pol_counter_act){ .action = UHMM_POL_CTR_IGNORE };
	else
		*a = (struct uhmm_pol_counter_act){ .action = UHMM_POL_CTR_MIGRATE,
						    .lo = n->addr, .hi = n->addr + n->len };
}

/* ---- plug-in calls ------------------------------------------------------ */

static struct uhmm_polrt *pol_enter(struct uhmm_polctx *p, unsigned *ph)
{
	*ph = atomic_load(&p->phase) & 1;
	atomic_fetch_add(&p->users[*ph], 1);
	return atomic_load(&p->cur);
}

static void pol_leave(struct uhmm_polctx *p, unsigned ph)
{
	atomic_fetch_sub(&p->users[ph], 1);
}

/* Eject @rt (if it still is the one installed) for @why. */
static void eject(struct uhmm_ctx *ctx, struct uhmm_polrt *rt, const char *cb,
		  const char *why)
{
	struct uhmm_polctx *p = &ctx->pol;
	struct uhmm_polrt *expect = rt;
	if (!atomic_compare_exchange_strong(&p->cur, &expect, NULL))
		return; /* another thread ejected it, or it was replaced */
	pthread_mutex_lock(&p->zlock);
	rt->next = p->zombies;
	p->zombies = rt;
	snprintf(p->ejected, sizeof(p->ejected), "%s: %s %s", rt->name, cb, why);
	p->ejections++;
	pthread_mutex_unlock(&p->zlock);
	STAT_INC(ctx, policy_ejections);
	fprintf(stderr, "uhmm: policy %s ejected (%s %s); the built-in policy takes over\n",
		rt->name, cb, why);
	UHMM_PROBE(policy_eject, rt->name, cb, why);
	UHMM_LOG(UHMM_LOG_WARN, "context %p: policy %s ejected (%s %s): built-in policy",
		 (void *)ctx, rt->name, cb, why);
}

/* The call took too long, or returned an error: eject.  True if it did. */
static bool call_failed(struct uhmm_ctx *ctx, struct uhmm_polrt *rt, const char *cb,
			int ret, uint64_t t0)
{
	uint64_t dt = mono_ns() - t0;
	if (ret) {
		char why[64];
		snprintf(why, sizeof(why), "returned %d", ret);
		eject(ctx, rt, cb, why);
		return true;
	}
	if (dt > ctx->pol.budget_ns) {
		char why[80];
		snprintf(why, sizeof(why), "took %llu us (budget %llu us)",
			 (unsigned long long)(dt / 1000),
			 (unsigned long long)(ctx->pol.budget_ns / 1000));
		eject(ctx, rt, cb, why);
		return true;
	}
	return false;
}

static bool cpu_act_valid(const struct uhmm_pol_cpu_fault *f, const struct uhmm_pol_cpu_act *a)
{
	uint64_t page = f->addr & ~(PG - 1);
	if ((a->lo | a->hi) & (PG - 1) || a->lo > page || a->hi <= page ||
	    a->hi - a->lo > BLK || a->lo < f->range_start || a->hi > f->range_end)
		return false;
	if (a->ahead_lo == a->ahead_hi)
		return true;
	return !((a->ahead_lo | a->ahead_hi) & (PG - 1)) && a->ahead_lo < a->ahead_hi &&
	       a->ahead_hi - a->ahead_lo <= MAX_AHEAD && a->ahead_lo >= f->range_start &&
	       a->ahead_hi <= f->range_end && a->ahead_stream < UHMM_POL_STREAMS;
}

void uhmm__pol_cpu_fault(struct uhmm_ctx *ctx, const struct uhmm_pol_cpu_fault *f,
			 bool readahead, struct uhmm_pol_cpu_act *act)
{
	struct uhmm_polctx *p = &ctx->pol;
	builtin_cpu_fault(p, f, readahead, act);
	unsigned ph;
	struct uhmm_polrt *rt = pol_enter(p, &ph);
	if (rt && rt->ops->cpu_fault) {
		struct uhmm_pol_cpu_act mine = *act;
		uint64_t t0 = mono_ns();
		int ret = rt->ops->cpu_fault(rt->st, f, &mine);
		if (!call_failed(ctx, rt, "cpu_fault", ret, t0)) {
			if (cpu_act_valid(f, &mine))
				*act = mine;
			else
				eject(ctx, rt, "cpu_fault", "returned an invalid window");
		}
	}
	pol_leave(p, ph);
}

static bool dev_act_valid(const struct uhmm_pol_dev_fault *f, const struct uhmm_pol_dev_act *a)
{
	if (a->delay_ns > UHMM_POL_MAX_DELAY_NS)
		return false;
	if (a->action == UHMM_POL_MAP_REMOTE)
		return !(f->flags & UHMM_POL_F_ATOMIC_FAR);
	if (a->action == UHMM_POL_EXCLUSIVE)
		return f->flags & UHMM_POL_F_ATOMIC_FAR;
	if (a->action == UHMM_POL_DUPLICATE && f->access != UHMM_POL_READ)
		return false; /* a write would collapse it at once */
	if (a->action != UHMM_POL_MIGRATE && a->action != UHMM_POL_DUPLICATE)
		return false;
	return !((a->lo | a->hi) & (PG - 1)) && a->lo <= f->addr && f->addr < a->hi &&
	       a->lo >= f->lo && a->hi <= f->hi;
}

void uhmm__pol_dev_faults(struct uhmm_ctx *ctx, uhmm_loc dev,
			  const struct uhmm_pol_dev_fault *f, size_t n,
			  struct uhmm_pol_dev_act *act)
{
	struct uhmm_polctx *p = &ctx->pol;
	builtin_dev_faults(p, dev, f, n, act);
	unsigned ph;
	struct uhmm_polrt *rt = pol_enter(p, &ph);
	if (rt && rt->ops->dev_faults && n) {
		struct uhmm_pol_dev_act *mine = uhmm__umem_malloc(n * sizeof(*mine));
		if (mine) {
			memcpy(mine, act, n * sizeof(*mine));
			uint64_t t0 = mono_ns();
			int ret = rt->ops->dev_faults(rt->st, dev, f, n, mine);
			if (!call_failed(ctx, rt, "dev_faults", ret, t0)) {
				bool ok = true;
				for (size_t i = 0; i < n && ok; i++)
					ok = dev_act_valid(&f[i], &mine[i]);
				if (ok)
					memcpy(act, mine, n * sizeof(*mine));
				else
					eject(ctx, rt, "dev_faults", "returned an invalid action");
			}
			uhmm__umem_free(mine);
		}
	}
	pol_leave(p, ph);
}

void uhmm__pol_evict_order(struct uhmm_ctx *ctx, uhmm_loc dev, uint64_t need_bytes,
			   const struct uhmm_pol_block *cand, size_t n, uint32_t *order)
{
	struct uhmm_polctx *p = &ctx->pol;
	builtin_evict_order(cand, n, order);
	unsigned ph;
	struct uhmm_polrt *rt = pol_enter(p, &ph);
	if (rt && rt->ops->evict_order && n > 1) {
		uint32_t mine[UHMM_POL_MAX_CAND];
		memcpy(mine, order, n * sizeof(*mine));
		uint64_t t0 = mono_ns();
		int ret = rt->ops->evict_order(rt->st, dev, need_bytes, cand, n, mine);
		if (!call_failed(ctx, rt, "evict_order", ret, t0)) {
			/* A permutation of 0..n-1. */
			uint64_t seen[UHMM_POL_MAX_CAND / 64] = { 0 };
			bool ok = true;
			for (size_t i = 0; i < n && ok; i++) {
				uint32_t k = mine[i];
				ok = k < n && !(seen[k / 64] & (1ull << (k % 64)));
				if (ok)
					seen[k / 64] |= 1ull << (k % 64);
			}
			if (ok)
				memcpy(order, mine, n * sizeof(*mine));
			else
				eject(ctx, rt, "evict_order", "returned no permutation of the candidates");
		}
	}
	pol_leave(p, ph);
}

static bool counter_act_valid(const struct uhmm_pol_counter *n,
			      const struct uhmm_pol_counter_act *a)
{
	if (a->action == UHMM_POL_CTR_IGNORE)
		return true;
	return a->action == UHMM_POL_CTR_MIGRATE && !((a->lo | a->hi) & (PG - 1)) &&
	       a->lo < a->hi && a->lo >= n->addr && a->hi <= n->addr + n->len;
}

void uhmm__pol_access_counter(struct uhmm_ctx *ctx, uhmm_loc dev,
			      const struct uhmm_pol_counter *n,
			      struct uhmm_pol_counter_act *act)
{
	struct uhmm_polctx *p = &ctx->pol;
	builtin_access_counter(p, dev, n, act);
	unsigned ph;
	struct uhmm_polrt *rt = pol_enter(p, &ph);
	if (rt && rt->ops->size >= offsetof(struct uhmm_policy_ops, access_counter) +
					   sizeof(rt->ops->access_counter) &&
	    rt->ops->access_counter) {
		struct uhmm_pol_counter_act mine = *act;
		uint64_t t0 = mono_ns();
		int ret = rt->ops->access_counter(rt->st, dev, n, &mine);
		if (!call_failed(ctx, rt, "access_counter", ret, t0)) {
			if (counter_act_valid(n, &mine))
				*act = mine;
			else
				eject(ctx, rt, "access_counter", "returned an invalid decision");
		}
	}
	pol_leave(p, ph);
	uhmm__trace_counter(ctx, dev, n->addr, n->len, n->count,
			    act->action == UHMM_POL_CTR_MIGRATE);
}

/*
 * Accessed-by: the devices advised to access [addr, addr + len) are asked
 * to map it where it is (a backend verb that only queues: this runs under
 * page locks, after a migration installed its pages).
 */
void uhmm__pol_map_accessors(struct uhmm_ctx *ctx, uint64_t addr, uint64_t len)
{
	uint64_t bm[4];
	if (!uhmm__advice_accessed_by(ctx, addr, addr + len, bm))
		return;
	for (unsigned id = 1; id < MAX_DEVICES && id < 256; id++) {
		if (!(bm[id / 64] & (1ull << (id % 64))))
			continue;
		struct uhmm_device *d = uhmm__dev_get(ctx, id);
		if (!d || uhmm__dev_hold(ctx, d))
			continue;
		if (d->ops->map_range)
			d->ops->map_range(d->priv, addr, addr + len);
		uhmm__dev_release(d);
	}
}

void uhmm__pol_migrated(struct uhmm_ctx *ctx, uint64_t addr, uint64_t len, uhmm_loc from,
			uhmm_loc to)
{
	struct uhmm_polctx *p = &ctx->pol;
	uint64_t now = mono_ns();
	uhmm__thrash_moved(ctx, addr, len, to, now);
	uhmm__pol_map_accessors(ctx, addr, len);
	unsigned ph;
	struct uhmm_polrt *rt = pol_enter(p, &ph);
	if (rt && rt->ops->migrated) {
		uint64_t t0 = mono_ns();
		rt->ops->migrated(rt->st, addr, len, from, to, now);
		(void)call_failed(ctx, rt, "migrated", 0, t0);
	}
	pol_leave(p, ph);
}

void uhmm__pol_migrated_runs(struct uhmm_ctx *ctx, uint64_t va, const uint8_t *st,
			     size_t n, uhmm_loc from, uhmm_loc to)
{
	for (size_t i = 0; i < n;) {
		if (st[i] != 2 && st[i] != 6) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < n && (st[j] == 2 || st[j] == 6))
			j++;
		uhmm__pol_migrated(ctx, va + i * PG, (j - i) * PG, from, to);
		i = j;
	}
}

/* ---- installing --------------------------------------------------------- */

/* Wait until no caller of phase @ph is left, for up to SET_WAIT_NS. */
static bool drain(struct uhmm_polctx *p, unsigned ph)
{
	uint64_t t0 = mono_ns();
	while (atomic_load(&p->users[ph])) {
		if (mono_ns() - t0 > SET_WAIT_NS)
			return false;
		struct timespec ts = { 0, 50 * 1000 };
		nanosleep(&ts, NULL);
	}
	return true;
}

/* Both phases drained: no callback of anything but cur can be running. */
static bool quiesce(struct uhmm_polctx *p)
{
	unsigned old = atomic_fetch_xor(&p->phase, 1) & 1;
	if (!drain(p, old))
		return false;
	/* Callers of the new phase that loaded a plug-in swapped out before
	 * the flip: flip back and wait for them as well. */
	old = atomic_fetch_xor(&p->phase, 1) & 1;
	return drain(p, old);
}

static void rt_free(struct uhmm_polrt *rt, bool call_exit)
{
	if (call_exit && rt->ops->exit)
		rt->ops->exit(rt->st);
	if (rt->dl)
		dlclose(rt->dl);
	uhmm__umem_free(rt);
}

/* Exit the zombies (after quiesce). */
static void zombies_free(struct uhmm_polctx *p, bool call_exit)
{
	pthread_mutex_lock(&p->zlock);
	struct uhmm_polrt *z = p->zombies;
	p->zombies = NULL;
	pthread_mutex_unlock(&p->zlock);
	while (z) {
		struct uhmm_polrt *next = z->next;
		rt_free(z, call_exit);
		z = next;
	}
}

static int rt_new(const struct uhmm_policy_ops *ops, const void *arg, void *dl,
		  struct uhmm_polrt **out)
{
	if (!ops || ops->version != UHMM_POLICY_VERSION ||
	    ops->size < offsetof(struct uhmm_policy_ops, migrated) + sizeof(ops->migrated))
		return -EINVAL;
	struct uhmm_polrt *rt = uhmm__umem_calloc(1, sizeof(*rt));
	if (!rt)
		return -ENOMEM;
	rt->ops = ops;
	rt->dl = dl;
	snprintf(rt->name, sizeof(rt->name), "%s", ops->name ? ops->name : "(unnamed)");
	if (ops->init) {
		int err = 0;
		rt->st = ops->init(arg, &err);
		if (err) {
			uhmm__umem_free(rt);
			return err > 0 ? -err : err;
		}
	}
	*out = rt;
	return 0;
}

/* Install @rt (NULL: built-in); the caller holds set_lock. */
static int install_locked(struct uhmm_ctx *ctx, struct uhmm_polrt *rt)
{
	struct uhmm_polctx *p = &ctx->pol;
	struct uhmm_polrt *old = atomic_exchange(&p->cur, rt);
	if (!quiesce(p)) {
		/* Someone is still in a callback of the old plug-in: its state
		 * may be in use, so it is left as it is (policy.h: leaked);
		 * the zombies wait for a later call. */
		return -ETIMEDOUT;
	}
	if (old)
		rt_free(old, true);
	zombies_free(p, true);
	return 0;
}

UHMM_API int uhmm_policy_set(uhmm_ctx *ctx, const struct uhmm_policy_ops *ops,
			     const void *arg)
{
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	struct uhmm_polrt *rt = NULL;
	if (ops) {
		err = rt_new(ops, arg, NULL, &rt);
		if (err) {
			uhmm__ctx_exit(ctx);
			return err;
		}
	}
	pthread_mutex_lock(&ctx->pol.set_lock);
	err = install_locked(ctx, rt);
	pthread_mutex_unlock(&ctx->pol.set_lock);
	uhmm__ctx_exit(ctx);
	return err;
}

UHMM_API int uhmm_policy_get(uhmm_ctx *ctx, struct uhmm_policy_info *out)
{
	if (!out)
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	struct uhmm_polctx *p = &ctx->pol;
	memset(out, 0, sizeof(*out));
	unsigned ph;
	struct uhmm_polrt *rt = pol_enter(p, &ph);
	snprintf(out->name, sizeof(out->name), "%s", rt ? rt->name : "default");
	pol_leave(p, ph);
	pthread_mutex_lock(&p->zlock);
	snprintf(out->ejected, sizeof(out->ejected), "%s", p->ejected);
	out->ejections = p->ejections;
	pthread_mutex_unlock(&p->zlock);
	uhmm__ctx_exit(ctx);
	return 0;
}

/*
 * UHMM_POLICY=path.so: the shared object exports `uhmm_policy`, a const
 * struct uhmm_policy_ops.  A policy that cannot be loaded is said once on
 * stderr and the context runs the built-in policy (the variable is the
 * user's, not the program's: the context is still created).
 */
static void load_from_env(struct uhmm_ctx *ctx)
{
	const char *path = getenv("UHMM_POLICY");
	if (!path || !*path)
		return;
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		fprintf(stderr, "uhmm: UHMM_POLICY=%s: %s; using the built-in policy\n", path,
			dlerror());
		return;
	}
	const struct uhmm_policy_ops *ops = dlsym(dl, "uhmm_policy");
	struct uhmm_polrt *rt;
	int err = ops ? rt_new(ops, NULL, dl, &rt) : -ENOENT;
	if (err) {
		fprintf(stderr, "uhmm: UHMM_POLICY=%s: %s; using the built-in policy\n", path,
			ops ? strerror(-err) : "no symbol uhmm_policy");
		dlclose(dl);
		return;
	}
	atomic_store(&ctx->pol.cur, rt);
	UHMM_LOG(UHMM_LOG_INFO, "context %p: policy %s loaded from UHMM_POLICY=%s", (void *)ctx,
		 rt->name, path);
}

int uhmm__pol_init(struct uhmm_ctx *ctx)
{
	struct uhmm_polctx *p = &ctx->pol;
	pthread_mutex_init(&p->set_lock, NULL);
	pthread_mutex_init(&p->zlock, NULL);
	pthread_mutex_init(&p->scan_lock, NULL);
	p->fault_around = ctx->opts.fault_around;
	p->readahead_pages = ctx->opts.readahead_pages;
	/* Wall-clock time: generous enough that a callback preempted on a
	 * loaded machine (a scheduler slice or two) is not taken for one
	 * that loops or blocks. */
	p->budget_ns = 10 * 1000 * 1000;
	uhmm__thrash_init(p);
	p->ctx = ctx;
	/* The prefetcher's threshold, %: 0 migrates the whole span (the
	 * block) at the first fault, 100 the faulting pages alone. */
	p->pf_threshold = 0;
	const char *t = getenv("UHMM_PREFETCH_THRESHOLD");
	if (t && *t) {
		char *end;
		unsigned long v = strtoul(t, &end, 0);
		if (!*end && v <= 100)
			p->pf_threshold = (uint32_t)v;
	}
	const char *b = getenv("UHMM_POLICY_BUDGET_US");
	if (b && *b) {
		char *end;
		unsigned long v = strtoul(b, &end, 0);
		if (!*end && v > 0 && v <= 10 * 1000 * 1000)
			p->budget_ns = (uint64_t)v * 1000;
	}
	load_from_env(ctx);
	return 0;
}

void uhmm__pol_fini(struct uhmm_ctx *ctx)
{
	struct uhmm_polctx *p = &ctx->pol;
	struct uhmm_polrt *rt = atomic_exchange(&p->cur, NULL);
	if (rt)
		rt_free(rt, true);
	zombies_free(p, true);
	uhmm__thrash_fini(p);
	pthread_mutex_destroy(&p->set_lock);
	pthread_mutex_destroy(&p->zlock);
	pthread_mutex_destroy(&p->scan_lock);
}

UHMM_API int uhmm_device_access_counter(uhmm_device *dev, const struct uhmm_pol_counter *n,
					struct uhmm_pol_counter_act *act)
{
	if (!n || !act || n->len < PG || (n->len & (n->len - 1)) || n->len > (1ull << 40))
		return -EINVAL;
	*act = (struct uhmm_pol_counter_act){ .action = UHMM_POL_CTR_IGNORE };
	struct uhmm_ctx *ctx;
	int err = uhmm__dev_enter(dev, &ctx);
	if (err)
		return err;
	struct uhmm_pol_counter g = *n;
	g.addr &= ~(n->len - 1);
	g.flags = 0;
	g.preferred = 0;
	g.time_ns = mono_ns();
	/* Clipped to the managed range holding the accessed page. */
	struct uhmm_range *r = uhmm__range_get(ctx, (uintptr_t)n->addr);
	if (!r) {
		uhmm__ctx_exit(ctx);
		return -EFAULT;
	}
	uint64_t lo = g.addr > r->start ? g.addr : r->start;
	uint64_t hi = g.addr + g.len < range_end(r) ? g.addr + g.len : range_end(r);
	uhmm__range_put(r);
	uintptr_t plo = lo, phi = hi;
	unsigned pref = uhmm__advice_preferred(ctx, lo, &plo, &phi);
	if (pref) {
		g.flags |= UHMM_POL_F_PREFERRED;
		g.preferred = pref - 1;
	}
	g.addr = lo;
	g.len = hi - lo;
	uhmm__pol_access_counter(ctx, dev->id, &g, act);
	uhmm__ctx_exit(ctx);
	return 0;
}

UHMM_API int uhmm_device_fault_policy(uhmm_device *dev, const struct uhmm_pol_dev_fault *f,
				      size_t n, struct uhmm_pol_dev_act *act)
{
	if (n && (!f || !act))
		return -EINVAL;
	struct uhmm_ctx *ctx;
	int err = uhmm__dev_enter(dev, &ctx);
	if (err)
		return err;
	/* The advice the backend does not know: each fault's preferred
	 * location, its span clipped to the run of that advice. */
	struct uhmm_pol_dev_fault *g = n ? uhmm__umem_malloc(n * sizeof(*g)) : NULL;
	if (n && !g) {
		uhmm__ctx_exit(ctx);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		g[i] = f[i];
		uintptr_t lo = g[i].lo, hi = g[i].hi;
		unsigned pref = uhmm__advice_preferred(ctx, g[i].addr, &lo, &hi);
		if (pref) {
			g[i].flags |= UHMM_POL_F_PREFERRED;
			g[i].preferred = pref - 1;
		}
		/* Read-mostly or not: the span within that run too (a
		 * duplicate must not reach pages without the advice, a move
		 * must not take pages with it). */
		if (uhmm__advice_read_mostly(ctx, g[i].addr, &lo, &hi) &&
		    !(g[i].flags & UHMM_POL_F_ATOMIC_FAR))
			g[i].flags |= UHMM_POL_F_READ_MOSTLY;
		if (atomic_load_explicit(&ctx->rm_any, memory_order_acquire) &&
		    uhmm__dup_held(ctx, g[i].addr, dev->id))
			g[i].flags |= UHMM_POL_F_DUPLICATED;
		g[i].lo = lo;
		g[i].hi = hi;
	}
	uhmm__pol_dev_faults(ctx, dev->id, g, n, act);
	uhmm__umem_free(g);
	uhmm__ctx_exit(ctx);
	return 0;
}
