/* SPDX-License-Identifier: MIT */
/*
 * fuzz_api.c - libFuzzer target: the input is a program of uhmm API calls.
 *
 * The bytes are a small bytecode (docs/FUZZING.md): one opcode byte, then
 * the op's argument bytes; reading past the end gives zeros.  The ops work
 * on four "slots" (memory obtained with uhmm_alloc, or mmap'd, registered
 * or not) and two simdevs, with hostile addresses and lengths (unaligned,
 * zero, wrapping, unmanaged, holes) mixed in.  A model of the process
 * tells, before every call, which errors the call may return by its
 * documentation, and a shadow copy of every byte the CPU and the device
 * wrote tells what memory must hold; anything else aborts (a crash for
 * libFuzzer).
 *
 * Determinism: one uhmm context per process (created at the first input);
 * each input creates its simdevs (one compute unit, one lane: work items
 * run in index order) and releases everything it made before returning:
 * ranges, mappings, notifiers, devices; it then checks that the context
 * manages no page any more.  Registered slots live at fixed addresses in a
 * region far from everything else (FZ_REGION), so the holes between them
 * stay holes; uhmm_alloc memory lands where uhmm puts it.
 *
 * FUZZ_API_TRACE=1 in the environment prints each op (for minimised
 * reproducers: ./fuzz_api crash-file).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

/* Internal (src/core/service.c): returns once every userfaultfd event read
 * so far has been handled, so that the model can follow munmap/mremap
 * without racing uhmm's service thread. */
struct uhmm_ctx;
void uhmm__service_sync(struct uhmm_ctx *ctx);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PG ((uintptr_t)4096)
#define NSLOT 4
#define NPOS 8                         /* slot positions in the region */
#define MAXP 128                       /* pages per slot at most */
#define FZ_REGION ((uintptr_t)0x200000000000ull) /* 32 TiB: nobody maps here */
#define POS_STRIDE ((uintptr_t)8 << 20)
#define MAX_OPS 48
#define MAX_RANGES 64
#define MAX_NOTIF 4
#define MAX_ITEMS 16
#define DEV_MEM ((uint64_t)2 << 20)    /* 512 pages: -ENOMEM is reachable */

/* ---- allowed results ---------------------------------------------------- */

enum {
	A_OK = 1u << 0, A_EINVAL = 1u << 1, A_EFAULT = 1u << 2, A_EPERM = 1u << 3,
	A_ENOMEM = 1u << 4, A_EBUSY = 1u << 5, A_EIO = 1u << 6, A_EBADF = 1u << 7,
	A_EEXIST = 1u << 8, A_EOPNOTSUPP = 1u << 9, A_ENOSPC = 1u << 10,
};

static uint32_t bit_of(int r)
{
	switch (r) {
	case 0: return A_OK;
	case -EINVAL: return A_EINVAL;
	case -EFAULT: return A_EFAULT;
	case -EPERM: return A_EPERM;
	case -ENOMEM: return A_ENOMEM;
	case -EBUSY: return A_EBUSY;
	case -EIO: return A_EIO;
	case -EBADF: return A_EBADF;
	case -EEXIST: return A_EEXIST;
	case -EOPNOTSUPP: return A_EOPNOTSUPP;
	case -ENOSPC: return A_ENOSPC;
	default: return 1u << 31;
	}
}

#define FUZZ_NAME "fuzz_api"
#include "fuzz_util.h"

#define CHECK(what, got, allowed)                                                  \
	do {                                                                       \
		int r_ = (got);                                                    \
		uint32_t al_ = (allowed);                                          \
		if (!(bit_of(r_) & al_))                                           \
			die("%s = %d (%s), allowed mask 0x%x (line %d)", (what), r_, \
			    r_ ? strerror(-r_) : "ok", al_, __LINE__);             \
	} while (0)

/* ---- the input ---------------------------------------------------------- */

static const uint8_t *in_p;
static size_t in_n;

static uint8_t get8(void)
{
	if (!in_n)
		return 0;
	in_n--;
	return *in_p++;
}

static uint16_t get16(void)
{
	uint16_t v = get8();
	return (uint16_t)(v | (uint16_t)get8() << 8);
}

static uint64_t get64(void)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)get8() << (8 * i);
	return v;
}

/* ---- the model ---------------------------------------------------------- */

enum { K_EMPTY, K_ALLOC, K_MAP };

struct slot {
	int kind;        /* K_ALLOC: from uhmm_alloc (outside the region) */
	char *base;
	size_t np;       /* pages of the span */
	uint8_t mapped[MAXP];
	uint8_t prot[MAXP]; /* PROT_* of mapped pages */
	uint8_t *shadow; /* MAXP * PG bytes: what memory must hold */
};

struct rng {
	uintptr_t start;
	size_t np;
	bool owned; /* uhmm_alloc */
	bool head;  /* owned: holds the allocation's first page (uhmm_free
		     * takes only that piece of an allocation cut by munmap) */
};

struct notif {
	struct uhmm_notifier *n;
	uintptr_t start, end;
	atomic_uint events;
};

static uhmm_ctx *g_ctx;
static struct slot g_slot[NSLOT];
static struct rng g_rng[MAX_RANGES];
static size_t g_nrng;
static uhmm_device *g_dev[2];
static bool g_dev_live[2];
static bool g_inj[2];    /* a copy failure may be armed: -EIO allowed */
static struct notif g_notif[MAX_NOTIF];
static struct uhmm_stats g_last_stats;
static atomic_uint g_bad_event;

static bool in_region(uintptr_t a)
{
	return a >= FZ_REGION && a < FZ_REGION + NPOS * POS_STRIDE;
}

static struct slot *slot_of(uintptr_t a, size_t *pg)
{
	for (int i = 0; i < NSLOT; i++) {
		struct slot *s = &g_slot[i];
		if (s->kind != K_EMPTY && a >= (uintptr_t)s->base &&
		    a < (uintptr_t)s->base + s->np * PG) {
			*pg = (a - (uintptr_t)s->base) / PG;
			return s;
		}
	}
	return NULL;
}

/* 1 mapped, 0 a hole, -1 unknown (outside the region and the slots). */
static int mapped_at(uintptr_t a, int *prot)
{
	size_t pg;
	struct slot *s = slot_of(a, &pg);
	*prot = 0;
	if (s && s->mapped[pg]) {
		*prot = s->prot[pg];
		return 1;
	}
	if (s && !in_region(a))
		return -1; /* a hole punched in an alloc: someone may map there */
	if (a < 65536)
		return 0; /* below vm.mmap_min_addr */
	return in_region(a) ? 0 : -1;
}

static bool managed_at(uintptr_t a)
{
	for (size_t i = 0; i < g_nrng; i++)
		if (a >= g_rng[i].start && a < g_rng[i].start + g_rng[i].np * PG)
			return true;
	return false;
}

/* What [a, a + n pages) holds, summarised. */
struct summary {
	bool unknown, hole, none, ro, unmanaged, managed_any;
};

static struct summary summarise(uintptr_t a, size_t n)
{
	struct summary s = { 0 };
	for (size_t i = 0; i < n; i++) {
		uintptr_t p = a + i * PG;
		int prot;
		int m = mapped_at(p, &prot);
		if (m < 0)
			s.unknown = true;
		else if (m == 0)
			s.hole = true;
		else if (!(prot & PROT_READ))
			s.none = true;
		else if (!(prot & PROT_WRITE))
			s.ro = true;
		if (managed_at(p))
			s.managed_any = true;
		else
			s.unmanaged = true;
	}
	return s;
}

static void rng_add(uintptr_t start, size_t np, bool owned, bool head)
{
	if (g_nrng == MAX_RANGES)
		die("model: too many ranges");
	g_rng[g_nrng++] = (struct rng){ start, np, owned, owned && head };
}

static void rng_del(size_t i)
{
	g_rng[i] = g_rng[--g_nrng];
}

/* munmap of [a, b): ranges lose those pages (a range may split in two). */
static void rng_cut(uintptr_t a, uintptr_t b)
{
	for (size_t i = 0; i < g_nrng;) {
		struct rng r = g_rng[i];
		uintptr_t rs = r.start, re = r.start + r.np * PG;
		if (re <= a || rs >= b) {
			i++;
			continue;
		}
		rng_del(i);
		if (rs < a)
			rng_add(rs, (a - rs) / PG, r.owned, r.head);
		if (re > b)
			rng_add(b, (re - b) / PG, r.owned, false);
	}
}

static struct slot *slot_pick(uint8_t b)
{
	return &g_slot[b % NSLOT];
}

static uhmm_device *dev_pick(uint8_t b, int *idx)
{
	*idx = b & 1;
	return g_dev[b & 1];
}

static uint32_t inj_any(void)
{
	return (g_inj[0] || g_inj[1]) ? A_EIO : 0;
}

/* An address and a length (bytes) for an op on slot s, from 3 bytes:
 * page offset (may fall before or after the span), page count, and a
 * mode that makes them hostile. */
enum { AK_OK, AK_UNALIGNED_ADDR, AK_UNALIGNED_LEN, AK_ZERO, AK_WRAP, AK_NULL };

struct arg {
	uintptr_t a;
	size_t len;
	int kind;      /* AK_* */
	bool bad;      /* what calls that refuse NULL say -EINVAL to */
	bool shape;    /* unaligned, zero or wrapping: -EINVAL for every call */
};

static struct arg arg_pick(struct slot *s)
{
	uint8_t bo = get8(), bl = get8(), mode = get8();
	struct arg r = { 0 };
	uintptr_t base = s->kind == K_EMPTY ? FZ_REGION + (uintptr_t)(s - g_slot) * POS_STRIDE
					    : (uintptr_t)s->base;
	size_t np = s->kind == K_EMPTY ? 8 : s->np;
	long off = (long)(bo % (np + 4)) - 2;
	size_t n = 1 + bl % (np + 2);
	/* Outside the region (alloc slots), stay inside the span: the
	 * neighbours there are unknown. */
	if (!in_region(base)) {
		off = (long)(bo % np);
		if ((size_t)off + n > np)
			n = np - (size_t)off;
	}
	r.a = base + (uintptr_t)(off * (long)PG);
	r.len = n * PG;
	switch (mode % 16) {
	case 0: r.a += 1 + (mode >> 4); r.kind = AK_UNALIGNED_ADDR; break;
	case 1: r.len += 1 + (mode >> 4) * 3; r.kind = AK_UNALIGNED_LEN; break;
	case 2: r.len = 0; r.kind = AK_ZERO; break;
	case 3: r.len = SIZE_MAX & ~(PG - 1); r.kind = AK_WRAP; break;
	case 4: r.a = 0; r.kind = AK_NULL; break;
	default: break;
	}
	r.shape = r.kind != AK_OK && r.kind != AK_NULL;
	r.bad = r.kind != AK_OK;
	return r;
}

/* ---- notifier callback --------------------------------------------------- */

static void on_inv(struct uhmm_notifier *n, const struct uhmm_inv_event *ev, void *priv)
{
	struct notif *nf = priv;
	(void)n;
	if (ev->start >= ev->end || (ev->start | ev->end) & (PG - 1) ||
	    ev->start < nf->start || ev->end > nf->end || ev->reason < UHMM_INV_UNMAP ||
	    ev->reason > UHMM_INV_REVOKE)
		atomic_store(&g_bad_event, 1);
	atomic_fetch_add(&nf->events, 1);
}

/* Every notifier whose callback ran during a call must answer read_retry
 * true for a sequence number read before the call. */
struct seqsnap {
	uint32_t seq[MAX_NOTIF];
	unsigned ev[MAX_NOTIF];
};

static void seq_before(struct seqsnap *s)
{
	for (int i = 0; i < MAX_NOTIF; i++) {
		if (!g_notif[i].n)
			continue;
		s->seq[i] = uhmm_notifier_read_begin(g_notif[i].n);
		s->ev[i] = atomic_load(&g_notif[i].events);
	}
}

static void seq_after(const struct seqsnap *s)
{
	if (atomic_load(&g_bad_event))
		die("an invalidate event out of its interval or malformed");
	for (int i = 0; i < MAX_NOTIF; i++) {
		if (!g_notif[i].n)
			continue;
		if (atomic_load(&g_notif[i].events) != s->ev[i] &&
		    !uhmm_notifier_read_retry(g_notif[i].n, s->seq[i]))
			die("notifier %d invalidated but read_retry says no", i);
	}
}

/* ---- data checks ---------------------------------------------------------- */

/*
 * May the CPU touch page i of s?  Not while it lives on a device whose
 * copies are armed to fail: a CPU fault that cannot get the page back
 * loses it (uhmm poisons the address: "device N lost page", SIGBUS on
 * every later access), as a machine loses a page its memory cannot
 * return.  uhmm_migrate home reports the same failure as -EIO instead,
 * and cleanup_input disarms before its final check.
 */
static bool cpu_safe(struct slot *s, size_t i)
{
	if (!g_inj[0] && !g_inj[1])
		return true;
	struct uhmm_page_info pi = { 0 };
	if (uhmm_page_query(g_ctx, (const char *)s->base + i * PG, &pi) != 0 ||
	    pi.where != UHMM_WHERE_DEVICE)
		return true;
	for (int d = 0; d < 2; d++)
		if (g_inj[d] && pi.device == g_dev[d])
			return false;
	return true;
}

static void verify_pages(struct slot *s, size_t first, size_t n, const char *why)
{
	for (size_t i = first; i < first + n && i < s->np; i++) {
		if (!s->mapped[i] || !(s->prot[i] & PROT_READ) || !cpu_safe(s, i))
			continue;
		const uint8_t *m = (const uint8_t *)s->base + i * PG, *w = s->shadow + i * PG;
		if (memcmp(m, w, PG) != 0) {
			size_t k = 0;
			while (m[k] == w[k])
				k++;
			struct uhmm_page_info pi = { 0 };
			int q = uhmm_page_query(g_ctx, m, &pi);
			die("%s: slot %d page %zu byte %zu is 0x%02x, expected 0x%02x "
			    "(query %d where %u)", why, (int)(s - g_slot), i, k, m[k], w[k], q,
			    pi.where);
		}
	}
}

/* ---- ops ------------------------------------------------------------------ */

static void fill_pattern(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 31 + (i >> 12));
}

static void op_alloc(void)
{
	struct slot *s = slot_pick(get8());
	uint8_t bn = get8(), mode = get8();
	void *p = &p;
	if (s->kind != K_EMPTY || mode % 8 == 7) {
		/* Hostile: zero, absurd, no out pointer. */
		int r;
		switch (mode % 3) {
		case 0:
			r = uhmm_alloc(g_ctx, 0, &p);
			trace("alloc(0) = %d", r);
			CHECK("uhmm_alloc(0)", r, A_EINVAL);
			break;
		case 1:
			r = uhmm_alloc(g_ctx, SIZE_MAX - (mode >> 2), &p);
			trace("alloc(huge) = %d", r);
			CHECK("uhmm_alloc(huge)", r, A_EINVAL | A_ENOMEM);
			break;
		default:
			r = uhmm_alloc(g_ctx, PG, NULL);
			trace("alloc(out NULL) = %d", r);
			CHECK("uhmm_alloc(NULL)", r, A_EINVAL);
			break;
		}
		if (p != &p)
			die("failed uhmm_alloc wrote *out");
		return;
	}
	size_t np = 1 + bn % MAXP;
	size_t len = np * PG - (mode & 1 ? (mode >> 1) % PG : 0); /* rounded up */
	int r = uhmm_alloc(g_ctx, len, &p);
	trace("alloc slot %d len %zu = %d %p", (int)(s - g_slot), len, r, p);
	CHECK("uhmm_alloc", r, A_OK);
	if ((uintptr_t)p & (UHMM_HUGE_SIZE - 1))
		die("uhmm_alloc: %p not 2 MiB aligned", p);
	s->kind = K_ALLOC;
	s->base = p;
	s->np = np;
	memset(s->mapped, 1, np);
	memset(s->prot, PROT_READ | PROT_WRITE, np);
	memset(s->shadow, 0, np * PG);
	rng_add((uintptr_t)p, np, true, true);
}

static void op_map(void)
{
	struct slot *s = slot_pick(get8());
	uint8_t bn = get8(), mode = get8();
	if (s->kind != K_EMPTY)
		return;
	/* A free position of the region. */
	uintptr_t at = 0;
	for (int k = 0; k < NPOS && !at; k++) {
		uintptr_t c = FZ_REGION + (uintptr_t)((mode + k) % NPOS) * POS_STRIDE;
		bool used = false;
		for (int i = 0; i < NSLOT; i++)
			if (g_slot[i].kind != K_EMPTY && (uintptr_t)g_slot[i].base == c)
				used = true;
		if (!used)
			at = c;
	}
	size_t np = 1 + bn % MAXP;
	void *p = mmap((void *)at, np * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED || p != (void *)at)
		die("mmap at %#lx: %s", (unsigned long)at, strerror(errno));
	s->kind = K_MAP;
	s->base = p;
	s->np = np;
	memset(s->mapped, 1, np);
	memset(s->prot, PROT_READ | PROT_WRITE, np);
	/* Touched or not: both kinds of page. */
	if (mode & 0x10) {
		fill_pattern(s->shadow, np * PG, mode);
		memcpy(p, s->shadow, np * PG);
	} else {
		memset(s->shadow, 0, np * PG);
	}
	int r = 1;
	if (mode & 0x20) {
		r = uhmm_register(g_ctx, p, np * PG);
		CHECK("uhmm_register(new mapping)", r, A_OK);
		rng_add((uintptr_t)p, np, false, false);
	}
	trace("map slot %d %p np %zu register %d", (int)(s - g_slot), p, np, r);
}

static void op_register(void)
{
	struct slot *s = slot_pick(get8());
	struct arg g = arg_pick(s);
	uint32_t allowed;
	if (g.bad) {
		allowed = A_EINVAL;
	} else {
		struct summary m = summarise(g.a, g.len / PG);
		if (m.unknown)
			return;
		allowed = 0;
		if (m.hole)
			allowed |= A_EFAULT;
		/* Read-only memory is managed (its pages migrate both ways);
		 * inaccessible memory is refused. */
		if (m.none)
			allowed |= A_EOPNOTSUPP;
		if (m.managed_any)
			allowed |= A_EEXIST;
		if (!allowed)
			allowed = A_OK;
	}
	int r = uhmm_register(g_ctx, (void *)g.a, g.len);
	trace("register %#lx +%#zx = %d", (unsigned long)g.a, g.len, r);
	CHECK("uhmm_register", r, allowed);
	if (!r)
		rng_add(g.a, g.len / PG, false, false);
}

/* Release a model range: the memory of an alloc'd one is unmapped. */
static void unmap_model(uintptr_t a, size_t np)
{
	for (size_t i = 0; i < np; i++) {
		size_t pg;
		struct slot *s = slot_of(a + i * PG, &pg);
		if (s)
			s->mapped[pg] = 0;
	}
	for (int i = 0; i < NSLOT; i++) {
		struct slot *s = &g_slot[i];
		if (s->kind == K_EMPTY)
			continue;
		size_t k = 0;
		while (k < s->np && !s->mapped[k])
			k++;
		if (k == s->np)
			s->kind = K_EMPTY;
	}
}

static void op_unregister(void)
{
	uint8_t sel = get8();
	struct slot *s = slot_pick(get8());
	struct arg g = arg_pick(s);
	/* Half of the time: exactly a range of the model. */
	if ((sel & 1) && g_nrng) {
		struct rng *rg = &g_rng[(sel >> 1) % g_nrng];
		g.a = rg->start;
		g.len = rg->np * PG;
		g.bad = false;
	}
	bool is_free = sel & 0x80;
	size_t hit = SIZE_MAX;
	for (size_t i = 0; i < g_nrng; i++)
		if (g_rng[i].start == g.a && g_rng[i].owned == is_free &&
		    (is_free ? g_rng[i].head : g_rng[i].np * PG == g.len))
			hit = i;
	int r;
	if (is_free) {
		r = uhmm_free(g_ctx, (void *)g.a);
		trace("free %#lx = %d", (unsigned long)g.a, r);
		CHECK("uhmm_free", r, hit == SIZE_MAX ? A_EINVAL : A_OK);
	} else {
		r = uhmm_unregister(g_ctx, (void *)g.a, g.len);
		trace("unregister %#lx +%#zx = %d", (unsigned long)g.a, g.len, r);
		CHECK("uhmm_unregister", r, hit == SIZE_MAX ? A_EINVAL : A_OK | inj_any());
	}
	if (r == 0) {
		struct rng rg = g_rng[hit];
		rng_del(hit);
		if (is_free)
			unmap_model(rg.start, rg.np);
	}
}

static void op_migrate(void)
{
	struct slot *s = slot_pick(get8());
	struct arg g = arg_pick(s);
	uint8_t d = get8();
	int di = 0;
	uhmm_device *dst = (d & 2) ? dev_pick(d, &di) : NULL;
	unsigned flags = (d & 0xf0) == 0xf0 ? 1u << (d & 7) : 0;
	uint32_t allowed;
	/* UHMM_MIGRATE_MOVE is a flag (read-mostly pages move instead of
	 * being duplicated: nothing is advised read-mostly here, so it
	 * changes nothing); UHMM_MIGRATE_DUPLICATE leaves the pages where
	 * they are and gives the device read-only copies (the data checks
	 * hold either way); it needs a device; any other bit is -EINVAL. */
	if (g.bad || (flags & ~(UHMM_MIGRATE_MOVE | UHMM_MIGRATE_DUPLICATE)) ||
	    ((flags & UHMM_MIGRATE_DUPLICATE) && !dst)) {
		allowed = A_EINVAL;
	} else if (dst && !g_dev_live[di]) {
		allowed = A_EBADF | (managed_at(g.a) ? 0 : A_EFAULT);
	} else {
		struct summary m = summarise(g.a, g.len / PG);
		if (m.unmanaged) {
			allowed = A_EFAULT;
		} else {
			allowed = A_OK | A_EBUSY | inj_any();
			if (dst)
				allowed |= A_ENOMEM;
			/* Duplicates need write-protection (not in every
			 * kernel). */
			if (flags & UHMM_MIGRATE_DUPLICATE)
				allowed |= A_EOPNOTSUPP;
			/* Read-only pages migrate like writable ones. */
			if (m.none)
				allowed |= A_EPERM;
			/* Known (docs/FUZZING.md, finding 4): a PROT_NONE page
			 * gives -EFAULT, documented for unmanaged memory only. */
			if (m.none)
				allowed |= A_EFAULT;
		}
	}
	struct seqsnap sq;
	seq_before(&sq);
	int r = uhmm_migrate(g_ctx, (void *)g.a, g.len, dst, flags);
	trace("migrate %#lx +%#zx -> %s%d flags %#x = %d", (unsigned long)g.a, g.len,
	      dst ? "dev" : "home", di, flags, r);
	seq_after(&sq);
	CHECK("uhmm_migrate", r, allowed);
}

static void op_query(void)
{
	struct slot *s = slot_pick(get8());
	uint16_t off = get16();
	uint8_t mode = get8();
	uintptr_t base = s->kind == K_EMPTY ? FZ_REGION : (uintptr_t)s->base;
	uintptr_t a = base + off * 16u - 0x1000;
	if (!in_region(a) && (s->kind == K_EMPTY || a < base || a >= base + s->np * PG))
		a = base; /* outside the region: only the span is known */
	if (mode == 0xff) {
		CHECK("uhmm_page_query(info NULL)", uhmm_page_query(g_ctx, (void *)a, NULL),
		      A_EINVAL);
		return;
	}
	struct uhmm_page_info pi;
	int r = uhmm_page_query(g_ctx, (void *)a, &pi);
	trace("query %#lx = %d where %u", (unsigned long)a, r, r ? 0 : pi.where);
	CHECK("uhmm_page_query", r, managed_at(a) ? A_OK : A_EFAULT);
	if (r)
		return;
	if (pi.where > UHMM_WHERE_EXCLUSIVE)
		die("page_query: where %u", pi.where);
	if (pi.where != UHMM_WHERE_CPU &&
	    !((pi.device == g_dev[0] && g_dev_live[0]) || (pi.device == g_dev[1] && g_dev_live[1])))
		die("page_query: page on device %p, not a live device of ours",
		    (void *)pi.device);
}

/* A run of pages of s from page i with all of @need rights. */
/* From page i, how many pages mapped with the rights @need that the CPU
 * may touch (cpu_safe). */
static size_t cpu_run(struct slot *s, size_t i, int need)
{
	size_t n = 0;
	while (i + n < s->np && s->mapped[i + n] && (s->prot[i + n] & need) == need &&
	       cpu_safe(s, i + n))
		n++;
	return n;
}

static void op_cpu_write(void)
{
	struct slot *s = slot_pick(get8());
	uint16_t off = get16(), len = get16();
	uint8_t val = get8();
	if (s->kind == K_EMPTY)
		return;
	size_t o = off % (s->np * PG);
	size_t pg = o / PG;
	size_t room = cpu_run(s, pg, PROT_READ | PROT_WRITE) * PG;
	if (!room)
		return;
	room -= o % PG;
	size_t n = 1 + len % 8192;
	if (n > room)
		n = room;
	uint8_t *m = (uint8_t *)s->base + o;
	trace("cpu write slot %d +%zu n %zu val %u", (int)(s - g_slot), o, n, val);
	if (val & 1) {
		memset(m, val, n);
		memset(s->shadow + o, val, n);
	} else {
		for (size_t i = 0; i < n; i += 1 + val % 61) {
			m[i] = (uint8_t)(val + i);
			s->shadow[o + i] = (uint8_t)(val + i);
		}
	}
}

static void op_cpu_read(void)
{
	struct slot *s = slot_pick(get8());
	uint8_t first = get8(), n = get8();
	if (s->kind == K_EMPTY)
		return;
	trace("cpu read slot %d pages %zu +%d", (int)(s - g_slot), first % s->np, 1 + n % 16);
	verify_pages(s, first % s->np, 1 + n % 16, "cpu read");
}

static void op_range_fault(void)
{
	struct slot *s = slot_pick(get8());
	struct arg g = arg_pick(s);
	uint8_t fl = get8();
	int di = 0;
	uhmm_device *dev = (fl & 4) ? dev_pick(fl >> 3, &di) : NULL;
	struct uhmm_notifier *n = (fl & 0x20) ? g_notif[(fl >> 6) % MAX_NOTIF].n : NULL;
	uint32_t flags = fl & 3;
	if (flags == 3)
		flags = (fl & 0x80) ? (1u << 5) : 3; /* an unknown flag, or both */
	size_t np = g.len / PG;
	if (np > 4 * MAXP)
		np = 4 * MAXP; /* wrapping: rejected before entries are touched */
	uint64_t *ent = malloc((np ? np : 1) * sizeof(*ent));
	struct uhmm_range_req req = {
		.notifier = n, .start = g.a, .end = g.a + g.len, .flags = flags,
		.timeout_ms = 200, .device = dev, .entries = ent,
	};
	uint32_t allowed;
	struct summary m = { 0 };
	if (g.shape || (flags & ~3u)) {
		allowed = A_EINVAL;
	} else if (dev && !g_dev_live[di]) {
		allowed = A_EBADF;
	} else {
		m = summarise(g.a, np);
		if (m.unknown) {
			free(ent);
			return;
		}
		if (!flags)
			allowed = A_OK;
		else if (m.hole || m.none)
			allowed = A_EFAULT;
		else if ((flags & UHMM_RF_FAULT_WRITE) && m.ro)
			allowed = A_EPERM;
		else
			allowed = A_OK | inj_any();
		allowed |= A_EBUSY;
	}
	struct seqsnap sq;
	seq_before(&sq);
	int r = uhmm_range_fault(g_ctx, &req);
	trace("range_fault %#lx +%#zx flags %#x dev %d notif %d = %d", (unsigned long)g.a,
	      g.len, flags, dev ? di : -1, n != NULL, r);
	seq_after(&sq);
	CHECK("uhmm_range_fault", r, allowed);
	if (r == -EBUSY && !n)
		die("range_fault -EBUSY without a notifier");
	if (!r) {
		for (size_t i = 0; i < np; i++) {
			uint64_t e = ent[i];
			uintptr_t a = g.a + i * PG;
			int prot;
			int mp = mapped_at(a, &prot);
			if (flags && !(e & UHMM_RE_VALID))
				die("range_fault: page %zu not VALID after a fault (e %#" PRIx64 ")",
				    i, e);
			if ((flags & UHMM_RF_FAULT_WRITE) && !(e & UHMM_RE_WRITE))
				die("range_fault: page %zu not WRITE after a write fault", i);
			if ((e & UHMM_RE_REMOTE) && (e & UHMM_RE_VALID))
				die("range_fault: REMOTE and VALID");
			if ((e & UHMM_RE_DEVICE) && !dev)
				die("range_fault: DEVICE without a requesting device");
			if (!flags && mp == 0 && !(e & UHMM_RE_ERROR))
				die("range_fault: snapshot of a hole without ERROR (e %#" PRIx64 ")",
				    e);
			if (mp == 1 && (prot & PROT_READ) && (e & UHMM_RE_ERROR))
				die("range_fault: readable page %zu reported ERROR", i);
			if ((e & UHMM_RE_WRITE) && mp == 1 && !(prot & PROT_WRITE))
				die("range_fault: WRITE on a read-only page %zu", i);
			if ((e & UHMM_RE_EXCLUSIVE) && !managed_at(a))
				die("range_fault: EXCLUSIVE on an unmanaged page");
		}
		if (n)
			(void)uhmm_notifier_read_retry(n, req.notifier_seq);
	}
	free(ent);
}

static void op_exclusive(void)
{
	struct slot *s = slot_pick(get8());
	struct arg g = arg_pick(s);
	uint8_t d = get8();
	int di;
	uhmm_device *dev = dev_pick(d, &di);
	size_t np = g.len / PG;
	if (g.kind == AK_WRAP)
		np = SIZE_MAX >> 12; /* a + npages pages wraps */
	bool addr_bad = !g.a || (g.a & (PG - 1)) || !np || g.kind == AK_WRAP;
	uint32_t allowed;
	struct summary m = { 0 };
	if (!addr_bad) {
		m = summarise(g.a, np);
		if (m.unknown)
			return;
	}
	if (d & 0x80) {
		/* check_exclusive instead: 1, 0, -EINVAL, -EBADF, -EFAULT */
		/* It stops at the first page not held: a range that is
		 * managed at its start may answer 0 before it meets the
		 * unmanaged part. */
		allowed = addr_bad ? A_EINVAL : !g_dev_live[di] ? A_EBADF
			: !managed_at(g.a) ? A_EFAULT : m.unmanaged ? A_EFAULT | A_OK : A_OK;
		int r = uhmm_check_exclusive(dev, (void *)g.a, np);
		trace("check_exclusive %#lx np %zu dev %d = %d", (unsigned long)g.a, np, di, r);
		if (r == 1 && m.unmanaged)
			die("check_exclusive: 1 (all held) for a partly unmanaged range");
		if (r == 1)
			r = 0;
		CHECK("uhmm_check_exclusive", r, allowed);
		return;
	}
	if (addr_bad)
		allowed = A_EINVAL;
	else if (!g_dev_live[di])
		allowed = A_EBADF;
	else if (m.unmanaged)
		allowed = A_EFAULT;
	else if (m.none)
		allowed = A_EPERM | A_EFAULT;
	else if (m.ro)
		allowed = A_EPERM;
	else
		allowed = A_OK | A_EBUSY | A_ENOMEM | inj_any();
	void **pages = (d & 0x40) && np <= 4 * MAXP ? calloc(np, sizeof(void *)) : NULL;
	struct seqsnap sq;
	seq_before(&sq);
	int r = uhmm_make_exclusive(dev, (void *)g.a, np, pages);
	trace("make_exclusive %#lx np %zu dev %d = %d", (unsigned long)g.a, np, di, r);
	seq_after(&sq);
	CHECK("uhmm_make_exclusive", r, allowed);
	if (!r) {
		int c = uhmm_check_exclusive(dev, (void *)g.a, np);
		if (c != 1)
			die("check_exclusive right after make_exclusive = %d", c);
		/* The device's view: the data, then a write through it. */
		for (size_t i = 0; pages && i < np; i++) {
			size_t pg;
			struct slot *ps = slot_of(g.a + i * PG, &pg);
			if (!ps || !pages[i])
				die("make_exclusive: no slot/page for page %zu", i);
			if (memcmp(pages[i], ps->shadow + pg * PG, PG) != 0)
				die("make_exclusive: device view of page %zu differs", i);
			uint8_t *q = pages[i];
			size_t k = (d * 97u + i * 13u) % PG;
			q[k] ^= 0x5a;
			ps->shadow[pg * PG + k] ^= 0x5a;
		}
	}
	free(pages);
}

static void op_mprotect(void)
{
	struct slot *s = slot_pick(get8());
	struct arg g = arg_pick(s);
	uint8_t pb = get8();
	static const int prots[4] = { PROT_READ, PROT_READ | PROT_WRITE, PROT_NONE,
				      PROT_READ | PROT_WRITE };
	int prot = prots[pb & 3];
	uint32_t allowed;
	if (g.shape) {
		/* uhmm_mprotect wants page-aligned, non-empty, no wrap */
		allowed = A_EINVAL;
	} else {
		struct summary m = summarise(g.a, g.len / PG);
		if (m.unknown)
			return;
		int p0;
		if (m.hole) {
			/* Only where the start is a hole (mprotect(2) changes
			 * nothing then: -ENOMEM); a hole later would apply in
			 * part. */
			if (mapped_at(g.a, &p0) != 0)
				return;
			allowed = A_ENOMEM;
		} else {
			allowed = A_OK;
		}
	}
	struct seqsnap sq;
	seq_before(&sq);
	int r = uhmm_mprotect(g_ctx, (void *)g.a, g.len, prot);
	trace("mprotect %#lx +%#zx %d = %d", (unsigned long)g.a, g.len, prot, r);
	seq_after(&sq);
	CHECK("uhmm_mprotect", r, allowed);
	if (!r)
		for (size_t i = 0; i < g.len / PG; i++) {
			size_t pg;
			struct slot *ps = slot_of(g.a + i * PG, &pg);
			ps->prot[pg] = (uint8_t)prot;
		}
}

static void op_madvise(void)
{
	struct slot *s = slot_pick(get8());
	struct arg g = arg_pick(s);
	if (g.bad || s->kind == K_EMPTY)
		return;
	struct summary m = summarise(g.a, g.len / PG);
	if (m.unknown || m.hole)
		return;
	struct seqsnap sq;
	seq_before(&sq);
	int r = madvise((void *)g.a, g.len, MADV_DONTNEED);
	trace("madvise DONTNEED %#lx +%#zx = %d", (unsigned long)g.a, g.len, r);
	seq_after(&sq);
	if (r)
		die("madvise: %s", strerror(errno));
	for (size_t i = 0; i < g.len / PG; i++) {
		size_t pg;
		struct slot *ps = slot_of(g.a + i * PG, &pg);
		memset(ps->shadow + pg * PG, 0, PG);
	}
}

static void op_munmap(void)
{
	struct slot *s = slot_pick(get8());
	struct arg g = arg_pick(s);
	if (g.bad || s->kind == K_EMPTY)
		return;
	struct summary m = summarise(g.a, g.len / PG);
	if (m.unknown)
		return;
	int r = munmap((void *)g.a, g.len);
	trace("munmap %#lx +%#zx = %d", (unsigned long)g.a, g.len, r);
	if (r)
		die("munmap: %s", strerror(errno));
	uhmm__service_sync((struct uhmm_ctx *)g_ctx);
	rng_cut(g.a, g.a + g.len);
	unmap_model(g.a, g.len / PG);
}

static void op_mremap(void)
{
	struct slot *s = slot_pick(get8());
	uint8_t pos = get8();
	if (s->kind == K_EMPTY)
		return;
	uintptr_t to = FZ_REGION + (uintptr_t)(pos % NPOS) * POS_STRIDE;
	uintptr_t from = (uintptr_t)s->base, len = s->np * PG;
	for (int i = 0; i < NSLOT; i++)
		if (g_slot[i].kind != K_EMPTY && (uintptr_t)g_slot[i].base == to)
			return; /* only to a free position */
	/* Only a span that is one mapping: no hole, one protection, and
	 * either unmanaged or exactly one range.  (A span of several VMAs
	 * fails, and recent kernels move the VMAs before the one they refuse,
	 * e.g. a userfaultfd-registered one, before failing: the model could
	 * not follow.) */
	size_t nr = 0;
	bool exact = false;
	for (size_t i = 0; i < s->np; i++)
		if (!s->mapped[i] || s->prot[i] != s->prot[0])
			return;
	for (size_t i = 0; i < g_nrng; i++)
		if (g_rng[i].start < from + len && g_rng[i].start + g_rng[i].np * PG > from) {
			nr++;
			exact = g_rng[i].start == from && g_rng[i].np * PG == len;
		}
	if (nr > 1 || (nr == 1 && !exact))
		return;
	void *p = mremap((void *)from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)to);
	trace("mremap slot %d %#lx -> %#lx = %p", (int)(s - g_slot), (unsigned long)from,
	      (unsigned long)to, p);
	if (p == MAP_FAILED)
		die("mremap of one mapping: %s", strerror(errno));
	uhmm__service_sync((struct uhmm_ctx *)g_ctx);
	for (size_t i = 0; i < g_nrng; i++)
		if (g_rng[i].start >= from && g_rng[i].start < from + len)
			g_rng[i].start = g_rng[i].start - from + to;
	s->base = (char *)to;
	s->kind = K_MAP; /* in the region now; the ranges keep their kind */
}

/* ---- device kernels ---------------------------------------------------------- */

enum { KI_LD, KI_ST, KI_ADD, KI_XCHG, KI_CAS, KI_N };

struct kitem {
	uint8_t op, lg; /* size 1 << lg */
	uintptr_t addr;
	uint64_t val, expect, old;
	atomic_int done;
};

static void kernel(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct kitem *it = (struct kitem *)arg + idx;
	void *p = (void *)it->addr;
	uint64_t old = 0;
	switch (it->op * 4 + it->lg) {
	case KI_LD * 4 + 0: old = uhmm_simdev_ld8(wi, p); break;
	case KI_LD * 4 + 1: old = uhmm_simdev_ld16(wi, p); break;
	case KI_LD * 4 + 2: old = uhmm_simdev_ld32(wi, p); break;
	case KI_LD * 4 + 3: old = uhmm_simdev_ld64(wi, p); break;
	case KI_ST * 4 + 0: uhmm_simdev_st8(wi, p, (uint8_t)it->val); break;
	case KI_ST * 4 + 1: uhmm_simdev_st16(wi, p, (uint16_t)it->val); break;
	case KI_ST * 4 + 2: uhmm_simdev_st32(wi, p, (uint32_t)it->val); break;
	case KI_ST * 4 + 3: uhmm_simdev_st64(wi, p, it->val); break;
	case KI_ADD * 4 + 2: old = uhmm_simdev_atomic_add32(wi, p, (uint32_t)it->val); break;
	case KI_ADD * 4 + 3: old = uhmm_simdev_atomic_add64(wi, p, it->val); break;
	case KI_XCHG * 4 + 2: old = uhmm_simdev_atomic_xchg32(wi, p, (uint32_t)it->val); break;
	case KI_XCHG * 4 + 3: old = uhmm_simdev_atomic_xchg64(wi, p, it->val); break;
	case KI_CAS * 4 + 2:
		old = uhmm_simdev_atomic_cas32(wi, p, (uint32_t)it->expect, (uint32_t)it->val);
		break;
	case KI_CAS * 4 + 3: old = uhmm_simdev_atomic_cas64(wi, p, it->expect, it->val); break;
	default: break;
	}
	it->old = old;
	atomic_store(&it->done, 1);
}

static uint64_t shadow_get(uintptr_t a, unsigned sz)
{
	uint64_t v = 0;
	for (unsigned k = 0; k < sz; k++) {
		size_t pg;
		struct slot *s = slot_of(a + k, &pg);
		v |= (uint64_t)s->shadow[a + k - (uintptr_t)s->base] << (8 * k);
	}
	return v;
}

static void shadow_put(uintptr_t a, unsigned sz, uint64_t v)
{
	for (unsigned k = 0; k < sz; k++) {
		size_t pg;
		struct slot *s = slot_of(a + k, &pg);
		s->shadow[a + k - (uintptr_t)s->base] = (uint8_t)(v >> (8 * k));
	}
}

static void op_launch(void)
{
	int di;
	uint8_t d = get8();
	uhmm_device *dev = dev_pick(d, &di);
	size_t n = d >> 4; /* 0..15 work items */
	struct kitem *it = calloc(MAX_ITEMS, sizeof(*it));
	uint32_t pred[MAX_ITEMS];
	bool unknown = false;
	for (size_t i = 0; i < n; i++) {
		struct slot *s = slot_pick(get8());
		uint8_t o = get8();
		uint16_t off = get16();
		it[i].op = o % KI_N;
		it[i].lg = (uint8_t)((o >> 3) & 3);
		if (it[i].op >= KI_ADD && it[i].lg < 2)
			it[i].lg = (uint8_t)(it[i].lg + 2);
		it[i].val = get64();
		unsigned sz = 1u << it[i].lg;
		uintptr_t base = s->kind == K_EMPTY ? FZ_REGION : (uintptr_t)s->base;
		size_t span = s->kind == K_EMPTY ? 4 * PG : s->np * PG;
		uintptr_t a;
		if (in_region(base) && (o & 0x80))
			a = base + off * 8u - 0x2000; /* may leave the span */
		else
			a = base + off % span;
		if (!(o & 0x20))
			a &= ~(uintptr_t)(sz - 1);
		if (!in_region(a) && (!s->kind || a < base || a + sz > base + span))
			a = base; /* outside the region: stay in the span */
		if (!in_region(base) && a + sz > base + span)
			a = base + span - sz;
		it[i].addr = a;
		/* What the access must give. */
		int prot;
		uint32_t p;
		int m0 = mapped_at(a, &prot), p1;
		int m1 = mapped_at(a + sz - 1, &p1);
		bool mapped = m0 == 1 && m1 == 1;
		int pr = mapped ? prot & p1 : 0;
		bool write = it[i].op != KI_LD, atomic = it[i].op >= KI_ADD;
		if (m0 < 0 || m1 < 0)
			unknown = true; /* a hole punched in an alloc: not ours to know */
		if (a & (sz - 1))
			p = A_EINVAL;
		else if (!mapped || !(pr & PROT_READ))
			p = A_EFAULT;
		else if (write && !(pr & PROT_WRITE))
			/* An atomic on unmanaged read-only memory: both apply. */
			p = A_EPERM | (atomic && !managed_at(a) ? A_EFAULT : 0);
		else if (atomic && !managed_at(a))
			p = A_EFAULT;
		else if (managed_at(a))
			p = A_OK | A_ENOMEM | inj_any();
		else
			p = A_OK;
		pred[i] = p;
		if (it[i].op == KI_CAS && mapped && (pr & PROT_READ) && (o & 0x40))
			it[i].expect = shadow_get(a, sz); /* a CAS that succeeds */
	}
	if (unknown) {
		free(it);
		return;
	}
	struct seqsnap sq;
	seq_before(&sq);
	int r = uhmm_simdev_launch(dev, kernel, n, it);
	trace("launch dev %d items %zu = %d", di, n, r);
	seq_after(&sq);
	if (!g_dev_live[di]) {
		CHECK("uhmm_simdev_launch(detached)", r, A_EINVAL);
		free(it);
		return;
	}
	bool failed = false;
	for (size_t i = 0; i < n; i++) {
		unsigned sz = 1u << it[i].lg;
		uint64_t mask = sz == 8 ? ~0ull : (1ull << (8 * sz)) - 1;
		trace("  item %zu op %u size %u at %#lx: pred %#x done %d", i, it[i].op, sz,
		      (unsigned long)it[i].addr, pred[i], atomic_load(&it[i].done));
		if (failed) {
			if (atomic_load(&it[i].done))
				die("kernel: item %zu ran after the failing one", i);
			continue;
		}
		if (!atomic_load(&it[i].done)) {
			failed = true;
			if (r == 0)
				die("kernel: item %zu did not run, launch returned 0", i);
			CHECK("kernel item's error", r, pred[i] & ~A_OK);
			continue;
		}
		if (!(pred[i] & A_OK))
			die("kernel: item %zu (op %u at %#lx) succeeded, expected mask %#x", i,
			    it[i].op, (unsigned long)it[i].addr, pred[i]);
		uint64_t cur = shadow_get(it[i].addr, sz);
		switch (it[i].op) {
		case KI_LD:
			if ((it[i].old & mask) != cur)
				die("kernel: item %zu loaded %#" PRIx64 ", shadow %#" PRIx64, i,
				    it[i].old, cur);
			break;
		case KI_ST:
			shadow_put(it[i].addr, sz, it[i].val & mask);
			break;
		default:
			if ((it[i].old & mask) != cur)
				die("kernel: atomic item %zu old %#" PRIx64 ", shadow %#" PRIx64, i,
				    it[i].old, cur);
			if (it[i].op == KI_ADD)
				shadow_put(it[i].addr, sz, (cur + it[i].val) & mask);
			else if (it[i].op == KI_XCHG)
				shadow_put(it[i].addr, sz, it[i].val & mask);
			else if (cur == (it[i].expect & mask))
				shadow_put(it[i].addr, sz, it[i].val & mask);
			break;
		}
	}
	if (!failed)
		CHECK("uhmm_simdev_launch", r, A_OK);
	free(it);
}

static void op_advise(void)
{
	int di;
	uhmm_device *dev = dev_pick(get8(), &di);
	struct slot *s = slot_pick(get8());
	struct arg g = arg_pick(s);
	uint8_t pol = get8();
	int r;
	uint32_t ok = g.shape ? A_EINVAL : A_OK;
	if (g.kind == AK_ZERO || g.kind == AK_NULL)
		ok = A_OK | A_EINVAL; /* an empty range, page 0: either way */
	if (pol & 1) {
		int adv = (pol >> 1) % 3;
		r = uhmm_simdev_advise(dev, (void *)g.a, g.len, (enum uhmm_simdev_advice)adv);
		trace("advise %#lx +%#zx %d = %d", (unsigned long)g.a, g.len, adv, r);
		CHECK("uhmm_simdev_advise", r, (!g_dev_live[di] || adv == 2) ? A_EINVAL : ok);
	} else {
		int adv = (pol >> 1) % 4;
		r = uhmm_simdev_advise_atomics(dev, (void *)g.a, g.len,
					       (enum uhmm_simdev_atomic_policy)adv);
		trace("advise_atomics %#lx +%#zx %d = %d", (unsigned long)g.a, g.len, adv, r);
		CHECK("uhmm_simdev_advise_atomics", r,
		      (!g_dev_live[di] || adv == 3) ? A_EINVAL : ok | A_ENOMEM);
	}
}

/* ---- notifiers, devices, stats -------------------------------------------- */

static void op_notifier(void)
{
	uint8_t sel = get8();
	struct notif *nf = &g_notif[sel % MAX_NOTIF];
	struct slot *s = slot_pick(get8());
	struct arg g = arg_pick(s);
	if (nf->n) {
		trace("notifier %d remove", sel % MAX_NOTIF);
		CHECK("uhmm_notifier_remove", uhmm_notifier_remove(nf->n), A_OK);
		nf->n = NULL;
		return;
	}
	if (sel & 0x80) { /* the whole space, or a hostile one */
		g.a = PG;
		g.len = ((uintptr_t)1 << 47) - 2 * PG;
		g.shape = false;
	}
	bool bad = g.shape;
	nf->start = g.a;
	nf->end = g.a + g.len;
	atomic_store(&nf->events, 0);
	struct uhmm_notifier *out = NULL;
	int r = uhmm_notifier_insert(g_ctx, g.a, g.len, (sel & 0x40) ? NULL : on_inv, nf, &out);
	trace("notifier %d insert %#lx +%#zx = %d", sel % MAX_NOTIF, (unsigned long)g.a,
	      g.len, r);
	CHECK("uhmm_notifier_insert", r, (bad || (sel & 0x40)) ? A_EINVAL : A_OK);
	if (!r)
		nf->n = out;
}

static void op_detach(void)
{
	int di;
	uhmm_device *dev = dev_pick(get8(), &di);
	struct seqsnap sq;
	seq_before(&sq);
	int r = uhmm_device_detach(dev);
	trace("detach dev %d = %d", di, r);
	seq_after(&sq);
	CHECK("uhmm_device_detach", r, g_dev_live[di] ? A_OK | (g_inj[di] ? A_EIO : 0) : A_EBADF);
	if (!r)
		g_dev_live[di] = false;
}

static void op_inject(void)
{
	int di;
	uint8_t b = get8();
	uhmm_device *dev = dev_pick(b, &di);
	uint8_t after = get8();
	enum uhmm_simdev_fault what = (b & 2) ? UHMM_SIMDEV_FAIL_COPY : UHMM_SIMDEV_FAIL_ALLOC;
	uint64_t count = 1 + (b >> 2) % 3;
	if (b & 0x80)
		what = (enum uhmm_simdev_fault)7; /* no such point */
	int r = uhmm_simdev_inject(dev, what, after % 16, count);
	trace("inject dev %d what %d after %u count %" PRIu64 " = %d", di, what, after % 16,
	      count, r);
	CHECK("uhmm_simdev_inject", r,
	      (!g_dev_live[di] || (b & 0x80)) ? A_EINVAL : A_OK);
	if (!r && what == UHMM_SIMDEV_FAIL_COPY)
		g_inj[di] = true;
}

static void check_stats(void)
{
	struct uhmm_stats st;
	CHECK("uhmm_stats_get", uhmm_stats_get(g_ctx, &st), A_OK);
	const uint64_t *a = (const uint64_t *)&g_last_stats, *b = (const uint64_t *)&st;
	size_t nf = sizeof(st) / sizeof(uint64_t);
	for (size_t i = 0; i < nf; i++) {
		/* The gauges go both ways; the counters only grow. */
		if (&b[i] == &st.metadata_bytes || &b[i] == &st.managed_pages ||
		    &b[i] == &st.metadata_dir_bytes || &b[i] == &st.private_bytes ||
		    &b[i] == &st.reserve_slots || &b[i] == &st.reserve_slots_used)
			continue;
		if (b[i] < a[i])
			die("stats field %zu went down: %" PRIu64 " -> %" PRIu64, i, a[i], b[i]);
	}
	g_last_stats = st;
	for (int d = 0; d < 2; d++) {
		struct uhmm_simdev_meminfo mi;
		int r = uhmm_simdev_meminfo(g_dev[d], &mi);
		CHECK("uhmm_simdev_meminfo", r, g_dev_live[d] ? A_OK : A_EINVAL);
		if (!r && (mi.free_pages > mi.total_pages || mi.total_pages != DEV_MEM / PG))
			die("meminfo: free %" PRIu64 " total %" PRIu64, mi.free_pages,
			    mi.total_pages);
		struct uhmm_simdev_stats ss;
		CHECK("uhmm_simdev_stats", uhmm_simdev_stats(g_dev[d], &ss),
		      g_dev_live[d] ? A_OK : A_EINVAL);
	}
}

static void op_stats(void)
{
	trace("stats");
	check_stats();
}

static void op_verify(void)
{
	struct slot *s = slot_pick(get8());
	if (s->kind == K_EMPTY)
		return;
	trace("verify slot %d", (int)(s - g_slot));
	verify_pages(s, 0, s->np, "verify");
}

/* ---- per input ---------------------------------------------------------------- */

static void setup_process(void)
{
	g_trace = getenv("FUZZ_API_TRACE") != NULL;
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.pool_pages = 256;
	int r = uhmm_ctx_create(&o, &g_ctx);
	if (r)
		die("uhmm_ctx_create: %d", r);
	for (int i = 0; i < NSLOT; i++) {
		g_slot[i].shadow = malloc(MAXP * PG);
		if (!g_slot[i].shadow)
			abort();
	}
	CHECK("uhmm_stats_get", uhmm_stats_get(g_ctx, &g_last_stats), A_OK);
}

static void devs_create(void)
{
	for (int i = 0; i < 2; i++) {
		struct uhmm_simdev_opts so;
		uhmm_simdev_opts_init(&so);
		so.mem_bytes = DEV_MEM;
		so.compute_units = 1;
		so.lanes_per_cu = 1; /* work items in index order */
		so.tlb_entries = 4;
		so.name = i ? "fz1" : "fz0";
		int r = uhmm_simdev_create(g_ctx, &so, &g_dev[i]);
		if (r)
			die("uhmm_simdev_create: %d", r);
		g_dev_live[i] = true;
		g_inj[i] = false;
	}
}

static void cleanup_input(void)
{
	g_opno = 9999;
	trace("cleanup");
	for (int i = 0; i < MAX_NOTIF; i++) {
		if (g_notif[i].n)
			CHECK("uhmm_notifier_remove", uhmm_notifier_remove(g_notif[i].n), A_OK);
		g_notif[i].n = NULL;
	}
	for (int d = 0; d < 2; d++) {
		if (g_dev_live[d]) {
			CHECK("inject disarm", uhmm_simdev_inject(g_dev[d], UHMM_SIMDEV_FAIL_COPY, 0, 0),
			      A_OK);
			CHECK("inject disarm", uhmm_simdev_inject(g_dev[d], UHMM_SIMDEV_FAIL_ALLOC, 0, 0),
			      A_OK);
		}
		g_inj[d] = false;
	}
	/* Everything readable again, then every byte checked. */
	for (int i = 0; i < NSLOT; i++) {
		struct slot *s = &g_slot[i];
		if (s->kind == K_EMPTY)
			continue;
		for (size_t k = 0; k < s->np;) {
			size_t n = 0;
			while (k + n < s->np && s->mapped[k + n])
				n++;
			if (!n) {
				k++;
				continue;
			}
			CHECK("uhmm_mprotect(RW)",
			      uhmm_mprotect(g_ctx, s->base + k * PG, n * PG, PROT_READ | PROT_WRITE),
			      A_OK);
			memset(s->prot + k, PROT_READ | PROT_WRITE, n);
			k += n;
		}
		verify_pages(s, 0, s->np, "final check");
	}
	/* The devices go: every page comes home. */
	for (int d = 0; d < 2; d++) {
		if (g_dev_live[d])
			CHECK("uhmm_device_detach", uhmm_device_detach(g_dev[d]), A_OK);
		g_dev_live[d] = false;
	}
	for (int i = 0; i < NSLOT; i++)
		if (g_slot[i].kind != K_EMPTY)
			verify_pages(&g_slot[i], 0, g_slot[i].np, "after detach");
	/* Ranges: exactly as the model has them. */
	while (g_nrng) {
		struct rng rg = g_rng[g_nrng - 1];
		if (rg.owned && !rg.head) {
			/* A piece of an allocation cut by munmap: released
			 * by munmap too (uhmm follows the event). */
			CHECK("uhmm_free(piece)", uhmm_free(g_ctx, (void *)rg.start), A_EINVAL);
			if (munmap((void *)rg.start, rg.np * PG))
				die("munmap: %s", strerror(errno));
			uhmm__service_sync((struct uhmm_ctx *)g_ctx);
		} else if (rg.owned)
			CHECK("uhmm_free(cleanup)", uhmm_free(g_ctx, (void *)rg.start), A_OK);
		else
			CHECK("uhmm_unregister(cleanup)",
			      uhmm_unregister(g_ctx, (void *)rg.start, rg.np * PG), A_OK);
		g_nrng--;
		if (rg.owned)
			unmap_model(rg.start, rg.np);
	}
	for (int i = 0; i < NSLOT; i++) {
		struct slot *s = &g_slot[i];
		if (s->kind != K_EMPTY)
			for (size_t k = 0; k < s->np; k++)
				if (s->mapped[k])
					munmap(s->base + k * PG, PG);
		s->kind = K_EMPTY;
	}
	uhmm__service_sync((struct uhmm_ctx *)g_ctx);
	check_stats();
	if (g_last_stats.managed_pages != 0)
		die("after cleanup the context still manages %" PRIu64 " pages",
		    g_last_stats.managed_pages);
}

typedef void (*op_fn)(void);
static const op_fn ops[] = {
	op_alloc,     op_map,     op_register, op_unregister, op_migrate, op_migrate,
	op_query,     op_cpu_write, op_cpu_read, op_range_fault, op_exclusive, op_mprotect,
	op_madvise,   op_munmap,  op_mremap,   op_launch,     op_launch,  op_advise,
	op_notifier,  op_detach,  op_inject,   op_stats,      op_verify,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {
		setup_process();
		init = true;
	}
	in_p = data;
	in_n = size;
	devs_create();
	for (g_opno = 0; g_opno < MAX_OPS && in_n; g_opno++) {
		uint8_t op = get8();
		ops[op % (sizeof(ops) / sizeof(ops[0]))]();
	}
	cleanup_input();
	return 0;
}
