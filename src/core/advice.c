/* SPDX-License-Identifier: MIT */
/*
 * advice.c - advice per address range (uhmm_advise), the last prefetch
 * destination, and the attribute query (uhmm_range_attrs).
 *
 * The advice is a sorted list of disjoint entries [start, end) with what
 * was said of them; what nobody advised has no entry.  Advice belongs to
 * addresses, like madvise's: it stays when the pages move, and an munmap
 * does not clear it (a new mapping at the address inherits it; a program
 * re-advises, as with madvise).  Mechanism only stores and reports it: the
 * policy (src/policy) decides what it means.
 *
 * Locks: adv_lock, a leaf rwlock (nothing else is taken under it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/internal.h"
#include "policy/policy.h"

struct uhmm_adv {
	uintptr_t start, end;
	uint32_t preferred;     /* location + 1; 0: no advice */
	uint32_t last_prefetch; /* location + 1; 0: never prefetched */
	/* Accessed-by devices (UHMM_ADVISE_ACCESSED_BY): bit id % 64 of
	 * word id / 64 for the device of that id. */
	uint64_t acc_by[4];
	uint32_t read_mostly;   /* 1: advised read-mostly */
};

static bool acc_any(const struct uhmm_adv *e)
{
	return e->acc_by[0] | e->acc_by[1] | e->acc_by[2] | e->acc_by[3];
}

void uhmm__advice_init(struct uhmm_ctx *ctx)
{
	pthread_rwlock_init(&ctx->adv_lock, NULL);
}

void uhmm__advice_fini(struct uhmm_ctx *ctx)
{
	uhmm__umem_free(ctx->adv);
	ctx->adv = NULL;
	ctx->nadv = 0;
	pthread_rwlock_destroy(&ctx->adv_lock);
}

/* First entry that ends after @a. */
static size_t find_locked(const struct uhmm_ctx *ctx, uintptr_t a)
{
	size_t l = 0, r = ctx->nadv;
	while (l < r) {
		size_t m = l + (r - l) / 2;
		if (ctx->adv[m].end <= a)
			l = m + 1;
		else
			r = m;
	}
	return l;
}

/*
 * Apply @set to [a, b): entries are cut at a and b, the part inside gets
 * set(), gaps inside get an entry first.  Empty entries are dropped and
 * equal neighbours merged.  -ENOMEM changes nothing.
 */
static int update(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b,
		  void (*set)(struct uhmm_adv *, uint32_t), uint32_t v)
{
	pthread_rwlock_wrlock(&ctx->adv_lock);
	size_t cap = 2 * ctx->nadv + 3;
	struct uhmm_adv *out = uhmm__umem_malloc(cap * sizeof(*out));
	if (!out) {
		pthread_rwlock_unlock(&ctx->adv_lock);
		return -ENOMEM;
	}
	size_t n = 0;
	uintptr_t cur = a; /* inside [a, b): covered up to here */
	for (size_t i = 0; i <= ctx->nadv; i++) {
		struct uhmm_adv e = i < ctx->nadv ? ctx->adv[i]
						  : (struct uhmm_adv){ .start = UINTPTR_MAX, .end = UINTPTR_MAX };
		/* A gap of [a, b) before e. */
		if (cur < b && e.start > cur) {
			uintptr_t ge = e.start < b ? e.start : b;
			struct uhmm_adv g = { .start = cur, .end = ge };
			set(&g, v);
			out[n++] = g;
			cur = ge;
		}
		if (i == ctx->nadv)
			break;
		if (e.end <= a || e.start >= b) {
			out[n++] = e;
			continue;
		}
		if (e.start < a) {
			struct uhmm_adv l = e;
			l.end = a;
			out[n++] = l;
		}
		struct uhmm_adv m = e;
		m.start = e.start > a ? e.start : a;
		m.end = e.end < b ? e.end : b;
		set(&m, v);
		out[n++] = m;
		cur = m.end;
		if (e.end > b) {
			struct uhmm_adv r = e;
			r.start = b;
			out[n++] = r;
		}
	}
	/* Drop empty entries, merge equal neighbours. */
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (!out[i].preferred && !out[i].last_prefetch && !acc_any(&out[i]) &&
		    !out[i].read_mostly)
			continue;
		if (k && out[k - 1].end == out[i].start &&
		    out[k - 1].preferred == out[i].preferred &&
		    out[k - 1].last_prefetch == out[i].last_prefetch &&
		    !memcmp(out[k - 1].acc_by, out[i].acc_by, sizeof(out[i].acc_by)) &&
		    out[k - 1].read_mostly == out[i].read_mostly) {
			out[k - 1].end = out[i].end;
			continue;
		}
		out[k++] = out[i];
	}
	uhmm__umem_free(ctx->adv);
	ctx->adv = out;
	ctx->nadv = k;
	pthread_rwlock_unlock(&ctx->adv_lock);
	return 0;
}

static void set_preferred(struct uhmm_adv *e, uint32_t v)
{
	e->preferred = v;
}

static void set_prefetch(struct uhmm_adv *e, uint32_t v)
{
	e->last_prefetch = v;
}

/* v: the device id, | 0x100 to set its accessed-by bit (else cleared). */
static void set_accessed_by(struct uhmm_adv *e, uint32_t v)
{
	unsigned id = v & 0xff;
	if (v & 0x100)
		e->acc_by[id / 64] |= 1ull << (id % 64);
	else
		e->acc_by[id / 64] &= ~(1ull << (id % 64));
}

/*
 * The devices advised to access some page of [a, b) (a bitmap by id, as
 * uhmm_adv.acc_by).  False, *out zero, when there are none.
 */
bool uhmm__advice_accessed_by(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b,
			      uint64_t out[4])
{
	memset(out, 0, 4 * sizeof(*out));
	if (!atomic_load_explicit(&ctx->adv_any, memory_order_acquire))
		return false;
	pthread_rwlock_rdlock(&ctx->adv_lock);
	for (size_t i = find_locked(ctx, a); i < ctx->nadv && ctx->adv[i].start < b; i++)
		for (unsigned w = 0; w < 4; w++)
			out[w] |= ctx->adv[i].acc_by[w];
	pthread_rwlock_unlock(&ctx->adv_lock);
	return out[0] | out[1] | out[2] | out[3];
}

static void set_read_mostly(struct uhmm_adv *e, uint32_t v)
{
	e->read_mostly = v;
}

bool uhmm__advice_read_mostly(struct uhmm_ctx *ctx, uintptr_t va, uintptr_t *lo,
			      uintptr_t *hi)
{
	if (!atomic_load_explicit(&ctx->rm_any, memory_order_acquire))
		return false;
	pthread_rwlock_rdlock(&ctx->adv_lock);
	size_t i = find_locked(ctx, va);
	bool rm = i < ctx->nadv && ctx->adv[i].start <= va && ctx->adv[i].read_mostly;
	if (rm) {
		size_t s = i, e = i;
		while (s > 0 && ctx->adv[s - 1].end == ctx->adv[s].start &&
		       ctx->adv[s - 1].read_mostly)
			s--;
		while (e + 1 < ctx->nadv && ctx->adv[e + 1].start == ctx->adv[e].end &&
		       ctx->adv[e + 1].read_mostly)
			e++;
		if (ctx->adv[s].start > *lo)
			*lo = ctx->adv[s].start;
		if (ctx->adv[e].end < *hi)
			*hi = ctx->adv[e].end;
	} else {
		/* Not read-mostly up to the next entry that is. */
		for (size_t k = i; k-- > 0;)
			if (ctx->adv[k].read_mostly) {
				if (ctx->adv[k].end > *lo)
					*lo = ctx->adv[k].end;
				break;
			}
		for (size_t k = i; k < ctx->nadv; k++)
			if (ctx->adv[k].read_mostly && ctx->adv[k].start > va) {
				if (ctx->adv[k].start < *hi)
					*hi = ctx->adv[k].start;
				break;
			}
	}
	pthread_rwlock_unlock(&ctx->adv_lock);
	return rm;
}

int uhmm__advice_prefetched(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b, unsigned loc)
{
	return update(ctx, a, b, set_prefetch, loc + 1);
}

/*
 * The preferred location advised at @va (location + 1, 0 for none), and
 * the run around it with the same advice, clipped to [*lo, *hi).
 */
unsigned uhmm__advice_preferred(struct uhmm_ctx *ctx, uintptr_t va, uintptr_t *lo,
				uintptr_t *hi)
{
	if (!atomic_load_explicit(&ctx->adv_any, memory_order_acquire))
		return 0;
	pthread_rwlock_rdlock(&ctx->adv_lock);
	size_t i = find_locked(ctx, va);
	unsigned pref = 0;
	/* Extend over neighbours with the same preferred location (they
	 * differ in last_prefetch only). */
	if (i < ctx->nadv && ctx->adv[i].start <= va) {
		pref = ctx->adv[i].preferred;
		size_t s = i, e = i;
		while (s > 0 && ctx->adv[s - 1].end == ctx->adv[s].start &&
		       ctx->adv[s - 1].preferred == pref)
			s--;
		while (e + 1 < ctx->nadv && ctx->adv[e + 1].start == ctx->adv[e].end &&
		       ctx->adv[e + 1].preferred == pref)
			e++;
		if (pref) {
			if (ctx->adv[s].start > *lo)
				*lo = ctx->adv[s].start;
			if (ctx->adv[e].end < *hi)
				*hi = ctx->adv[e].end;
		} else {
			/* No preference here: clip at the nearest preferences. */
			for (size_t k = s; k-- > 0;)
				if (ctx->adv[k].preferred) {
					if (ctx->adv[k].end > *lo)
						*lo = ctx->adv[k].end;
					break;
				}
			for (size_t k = e + 1; k < ctx->nadv; k++)
				if (ctx->adv[k].preferred) {
					if (ctx->adv[k].start < *hi)
						*hi = ctx->adv[k].start;
					break;
				}
		}
	} else {
		for (size_t k = i; k-- > 0;)
			if (ctx->adv[k].preferred) {
				if (ctx->adv[k].end > *lo)
					*lo = ctx->adv[k].end;
				break;
			}
		for (size_t k = i; k < ctx->nadv; k++)
			if (ctx->adv[k].preferred) {
				if (ctx->adv[k].start < *hi)
					*hi = ctx->adv[k].start;
				break;
			}
	}
	pthread_rwlock_unlock(&ctx->adv_lock);
	return pref;
}

/*
 * Read-mostly advice over [a, b): the ranges are registered for write-
 * protection (a CPU write to a duplicated page must fault); the unset
 * collapses the duplicates.
 */
static int advise_read_mostly(struct uhmm_ctx *ctx, uintptr_t a, uintptr_t b, bool on)
{
	int err = uhmm__ranges_cover(ctx, a, b);
	if (err)
		return err;
	if (on) {
		if (!(ctx->features & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
			return -EOPNOTSUPP;
		for (uintptr_t x = a; x < b;) {
			struct uhmm_range *r = uhmm__range_get(ctx, x);
			if (!r)
				return -EFAULT;
			err = uhmm__uffd_register_wp(ctx->uffd, r->start, r->npages << PAGE_SHIFT,
						     true);
			x = range_end(r);
			uhmm__range_put(r);
			if (err)
				return err == -ENOMEM ? -ENOMEM : -EFAULT;
		}
		/* Before the advice: whoever sees it sees rm_any. */
		atomic_store_explicit(&ctx->rm_any, true, memory_order_release);
	}
	err = update(ctx, a, b, set_read_mostly, on);
	if (err)
		return err;
	atomic_store_explicit(&ctx->adv_any, true, memory_order_release);
	if (!on)
		uhmm__dup_collapse_range(ctx, a, b);
	return 0;
}

UHMM_API int uhmm_advise(uhmm_ctx *ctx, void *addr, size_t len, int advice, uhmm_device *dev)
{
	uintptr_t a = (uintptr_t)addr;
	if (!addr || !len || ((a | len) & (PAGE_SIZE - 1)) || a + len < a)
		return -EINVAL;
	bool acc = advice == UHMM_ADVISE_ACCESSED_BY || advice == UHMM_ADVISE_UNSET_ACCESSED_BY;
	if (advice != UHMM_ADVISE_PREFERRED_LOCATION &&
	    advice != UHMM_ADVISE_UNSET_PREFERRED_LOCATION && !acc &&
	    advice != UHMM_ADVISE_READ_MOSTLY && advice != UHMM_ADVISE_UNSET_READ_MOSTLY)
		return -EINVAL;
	if (acc && !dev)
		return -EINVAL; /* (the CPU maps whatever is in system memory) */
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	if (advice == UHMM_ADVISE_READ_MOSTLY || advice == UHMM_ADVISE_UNSET_READ_MOSTLY) {
		err = advise_read_mostly(ctx, a, a + len, advice == UHMM_ADVISE_READ_MOSTLY);
		if (!err)
			uhmm__trace_advice(ctx, a, len, (unsigned)advice, 0);
		goto out;
	}
	unsigned loc = 0;
	if (dev && (advice == UHMM_ADVISE_PREFERRED_LOCATION || acc)) {
		err = uhmm__dev_hold(ctx, dev);
		if (err)
			goto out;
		loc = dev->id;
		uhmm__dev_release(dev);
	}
	err = uhmm__ranges_cover(ctx, a, a + len);
	if (err)
		goto out;
	if (acc)
		err = update(ctx, a, a + len, set_accessed_by,
			     loc | (advice == UHMM_ADVISE_ACCESSED_BY ? 0x100 : 0));
	else
		err = update(ctx, a, a + len, set_preferred,
			     advice == UHMM_ADVISE_PREFERRED_LOCATION ? loc + 1 : 0);
	if (!err) {
		atomic_store_explicit(&ctx->adv_any, true, memory_order_release);
		uhmm__trace_advice(ctx, a, len, (unsigned)advice, loc);
		/* The device maps the range where it is now (the policy's
		 * part: the same as after a migration). */
		if (advice == UHMM_ADVISE_ACCESSED_BY)
			uhmm__pol_map_accessors(ctx, a, len);
	}
out:
	uhmm__ctx_exit(ctx);
	return err;
}

UHMM_API int uhmm_range_attrs(uhmm_ctx *ctx, const void *addr, size_t len,
			      struct uhmm_range_attrs *out)
{
	uintptr_t a = (uintptr_t)addr;
	if (!out || !addr || !len || ((a | len) & (PAGE_SIZE - 1)) || a + len < a)
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	err = uhmm__ranges_cover(ctx, a, a + len);
	if (err) {
		uhmm__ctx_exit(ctx);
		return err;
	}
	memset(out, 0, sizeof(*out));
	/* Advice: one value over the whole range, or none / mixed. */
	pthread_rwlock_rdlock(&ctx->adv_lock);
	int64_t pref = INT64_MIN, pf = INT64_MIN, rm = INT64_MIN; /* not seen yet */
	uint64_t accby[4] = { ~0ull, ~0ull, ~0ull, ~0ull }; /* over every piece */
	uintptr_t cur = a, end = a + len;
	size_t i = find_locked(ctx, a);
	while (cur < end) {
		uint32_t p = 0, q = 0, m = 0;
		uintptr_t next;
		if (i < ctx->nadv && ctx->adv[i].start <= cur) {
			p = ctx->adv[i].preferred;
			q = ctx->adv[i].last_prefetch;
			for (unsigned w = 0; w < 4; w++)
				accby[w] &= ctx->adv[i].acc_by[w];
			m = ctx->adv[i].read_mostly;
			next = ctx->adv[i].end < end ? ctx->adv[i].end : end;
			i++;
		} else {
			memset(accby, 0, sizeof(accby));
			next = i < ctx->nadv && ctx->adv[i].start < end ? ctx->adv[i].start : end;
		}
		int64_t vp = (int64_t)p - 1, vq = (int64_t)q - 1;
		pref = pref == INT64_MIN ? vp : pref == vp ? pref : UHMM_ATTR_MIXED;
		pf = pf == INT64_MIN ? vq : pf == vq ? pf : UHMM_ATTR_MIXED;
		int64_t vm = m ? 1 : UHMM_ATTR_NONE;
		rm = rm == INT64_MIN ? vm : rm == vm ? rm : UHMM_ATTR_MIXED;
		cur = next;
	}
	pthread_rwlock_unlock(&ctx->adv_lock);
	out->preferred = (int32_t)pref;
	out->last_prefetch = (int32_t)pf;
	memcpy(out->accessed_by, accby, sizeof(accby));
	out->read_mostly = (int32_t)rm;
	/* Residency, page by page (blocks of page state never created: in
	 * system memory). */
	for (uintptr_t x = a; x < a + len;) {
		struct uhmm_range *r = uhmm__range_get(ctx, x);
		if (!r) {
			x += PAGE_SIZE; /* (unmapped meanwhile: not resident anywhere) */
			continue;
		}
		size_t pi = (x - r->start) >> PAGE_SHIFT;
		size_t e = (((a + len) < range_end(r) ? a + len : range_end(r)) - r->start) >> PAGE_SHIFT;
		while (pi < e) {
			if (!range_blk_present(r, pi)) {
				size_t k = range_blk_left(r, pi);
				if (k > e - pi)
					k = e - pi;
				out->bytes_cpu += (uint64_t)k << PAGE_SHIFT;
				pi += k;
				continue;
			}
			uint32_t w = atomic_load_explicit(&range_page_peek(r, pi)->word,
							  memory_order_relaxed);
			if (pg_excl(w))
				out->bytes_exclusive += PAGE_SIZE;
			else if (pg_loc(w) == LOC_CPU) {
				out->bytes_cpu += PAGE_SIZE;
				if (w & PG_DUP)
					uhmm__dup_attrs(ctx, range_page_peek(r, pi),
							&out->bytes_duplicated, out->bytes_dup_on);
			}
			else
				out->bytes_on[pg_dev(w)] += PAGE_SIZE;
			pi++;
		}
		x = r->start + (e << PAGE_SHIFT);
		uhmm__range_put(r);
	}
	uhmm__ctx_exit(ctx);
	return 0;
}
