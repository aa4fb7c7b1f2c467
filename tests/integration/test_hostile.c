/* SPDX-License-Identifier: MIT */
/*
 * Hostile arguments to every public call (docs/RELIABILITY.md, issue part 4):
 * a table of rows, each naming a call, the function that performs it, a
 * hostile argument set (symbolic handles and addresses, resolved at run
 * time) and the error code the header documents for it.
 *
 * For each row the runner sets up a context holding managed data with a
 * known pattern -- some pages on a simdev, some in system memory, a
 * registered range between unmanaged neighbours, an allocation with an
 * unmapped hole in its middle -- records where every page lives, the
 * counters and the device's free memory, performs the call, checks the
 * code, then checks that nothing was lost or changed: the same locations
 * and sequence numbers (uhmm_page_query), the same counters, the same free
 * device memory, and the data.
 *
 * Hostile classes: NULL pointers, unaligned addresses and lengths, zero
 * lengths, ranges wrapping past UINTPTR_MAX, ranges straddling managed and
 * unmanaged memory or running into unmapped holes, stale handles
 * (destroyed contexts, detached devices and devices of destroyed contexts,
 * removed notifiers, closed dmirror handles), handles of the wrong kind,
 * wrong devices (another context's), bad flags and enum values, and
 * concurrent destroy/detach against threads calling in a loop.
 *
 * Rows whose call does not yet behave as documented carry .known_bug: they
 * are skipped with a note (HOSTILE_RUN_KNOWN_BUGS=1 runs them anyway).
 * The runner prints each row's name before running it, so a crash names
 * its row; a row that hangs is killed by a watchdog that names it too.
 *
 * Calls deliberately not in the table:
 *   uhmm_notifier_read_begin(), uhmm_notifier_read_retry(): "never fails"
 *     and have no error channel; a NULL or removed notifier is outside
 *     their contract (the read side of a live notifier is exercised by the
 *     range-fault rows).
 * The dmirror calls live in libuhmm-dmirror, which this program does not
 * link (it links the static library): they are reached through dlopen()
 * of the build tree's libuhmm-dmirror.so, with its own copy of uhmm.
 */
#define _GNU_SOURCE
#include "testlib.h"

#include <uhmm/dmirror.h>
#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG ((size_t)UHMM_PAGE_SIZE)
#define MiB ((size_t)1 << 20)
#define TOPPG ((uintptr_t)(UINTPTR_MAX & ~(uintptr_t)(PG - 1)))

/* Results of a performer that are not the call's own. */
#define OUT_CLOBBERED (-100001L) /* the call failed but wrote its out argument */
#define NOT_ABORTED (-100002L)   /* an accessor returned instead of aborting */
#define CHECK_FAILED (-100003L)  /* a helper's own check failed (printed) */

/* ---- the fixture's shape ------------------------------------------------- */

enum {
	BUF_PAGES = 256, /* uhmm_alloc: [0, BUF_DEV) on the simdev, rest on the CPU */
	BUF_DEV = 128,
	REG_MAP = 48,    /* a private mapping; REG_OFF.. registered; HOLE_OFF.. unmapped */
	REG_OFF = 16,
	REG_PAGES = 16,
	REG_DEV = 8,     /* the first REG_DEV registered pages on the simdev */
	HOLE_OFF = 40,
	BUF2_PAGES = 16, /* uhmm_alloc: [0, 4) on the simdev, [6, 10) unmapped */
	BUF2_DEV = 4,
	BUF2_HOLE = 6,
	BUF2_HOLE_END = 10,
	OBUF_PAGES = 16, /* the other context's buffer, [0, 8) on its simdev */
	SMALL = 4,       /* pages of the read-only, PROT_NONE and shared maps */
	NCHECK = BUF_PAGES + REG_PAGES + BUF2_PAGES,
};
#define SEED_BUF 0xb0f0ull
#define SEED_REG 0x7e60ull
#define SEED_BUF2 0xb2b2ull
#define SEED_OBUF 0x0b0full
#define SEED_DM 0xd171ull

/* Symbolic arguments, resolved when the row runs. */
enum ctxh { C_LIVE = 0, C_NULL, C_DEAD, C_OTHER, C_DEVPTR, C_JUNK };
enum devh {
	D_NULL = 0, D_LIVE, D_GONE, D_DEADCTX, D_FOREIGN, D_STUB, D_CTXPTR, D_JUNK,
};
enum nh { N_NULL = 0, N_LIVE, N_REMOVED, N_DEADCTX, N_FOREIGN, N_CTXPTR, N_DEVPTR };
enum base {
	B_ZERO = 0, B_BUF, B_BUF2, B_REG, B_REGMAP, B_HOLE, B_RO, B_NONE, B_SHARED,
	B_TOP, B_UNMAPPED, B_JUNK, B_OBUF, B_DMBUF, B_DMPTR,
};
struct addr {
	enum base base;
	long off; /* bytes */
};

/* Row flags. */
enum {
	R_NULL_OUT = 1u << 0,     /* pass NULL for the out/info argument */
	R_NULL_ENTRIES = 1u << 1, /* uhmm_range_fault: entries NULL */
	R_NULL_FN = 1u << 2,      /* NULL callback / kernel */
	R_NOFX = 1u << 3,         /* no fixture: the performer checks by itself */
	R_DMFX = 1u << 4,         /* the dmirror fixture instead of uhmm's */
	R_HAS_ALT = 1u << 5,      /* .alt is acceptable too */
};

struct fx;
struct row;
typedef long (*perform_fn)(struct fx *f, const struct row *r);

struct row {
	const char *group;     /* one cmocka test per group */
	const char *call;      /* the public call */
	const char *what;      /* the hostile argument set, in words */
	perform_fn perform;
	enum ctxh c;
	enum devh d;
	enum nh n;
	struct addr a, b;
	uint64_t len;
	uint64_t x;
	int v;
	unsigned flags;
	long expect, alt;
	const char *known_bug;
};

struct fx {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	struct uhmm_notifier *n;
	char *buf, *buf2, *regmap, *reg, *ro, *none, *shared;
	/* what must not change */
	char *pg[NCHECK];
	struct uhmm_page_info pi[NCHECK];
	struct uhmm_stats st;
	struct uhmm_simdev_meminfo mi;
	/* made on demand by a row */
	uhmm_ctx *octx;
	uhmm_device *odev, *stub;
	struct uhmm_notifier *on;
	char *obuf;
	/* placeholders in the two holes, removed just before the call (so
	 * that no mapping made meanwhile lands there) */
	char *plug_reg, *plug_buf2;
	/* dmirror fixture */
	uhmm_dmirror *dm;
	char *dmbuf;
	char *dmptr; /* the commands' buffer (ptr) */
	uint8_t dmsnap[16];
	/* scratch */
	uint64_t entries[BUF_PAGES * 2];
	char errbuf[256];
};

static char junk[64]; /* a pointer that was never a handle (nor page-aligned) */

/* ---- small helpers -------------------------------------------------------- */

static _Atomic unsigned ninv;
static void count_inv(struct uhmm_notifier *n, const struct uhmm_inv_event *ev, void *priv)
{
	(void)n, (void)ev, (void)priv;
	atomic_fetch_add(&ninv, 1);
}

static char *map_anon(size_t len, int prot, int flags)
{
	char *p = mmap(NULL, len, prot, flags | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

static bool is_unmapped(const void *p, size_t len)
{
	unsigned char v[64];
	for (size_t off = 0; off < len; off += PG)
		if (mincore((char *)p + off, PG, v) == 0 || errno != ENOMEM)
			return false;
	return true;
}

static char *fresh_unmapped(size_t len)
{
	char *p = map_anon(len, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	assert_int_equal(munmap(p, len), 0);
	return p;
}

static uhmm_ctx *mk_ctx(void)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx *c = NULL;
	uhmm_ctx_opts_init(&o);
	o.pool_pages = 256;
	ASSERT_OK(uhmm_ctx_create(&o, &c));
	return c;
}

static uhmm_device *mk_simdev(uhmm_ctx *ctx, size_t mem)
{
	struct uhmm_simdev_opts o;
	uhmm_device *d = NULL;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = mem;
	o.compute_units = 1;
	o.lanes_per_cu = 2;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &d));
	return d;
}

/* A backend that holds no memory: attach calls none of its ops. */
static long stub_alloc(void *priv, unsigned order, size_t n, uint64_t *dpfn)
{
	(void)priv, (void)order, (void)n, (void)dpfn;
	return 0;
}
static void stub_free(void *priv, unsigned order, size_t n, const uint64_t *dpfn)
{
	(void)priv, (void)order, (void)n, (void)dpfn;
}
static int stub_submit(void *priv, struct uhmm_copy *c, size_t n, uhmm_fence_t *fence)
{
	(void)priv, (void)c, (void)n, (void)fence;
	return -EIO;
}
static int stub_wait(void *priv, uhmm_fence_t fence)
{
	(void)priv, (void)fence;
	return -EIO;
}
static const struct uhmm_device_ops stub_ops = {
	.alloc = stub_alloc,
	.free = stub_free,
	.copy_submit = stub_submit,
	.copy_wait = stub_wait,
};

/* The other live context: its own simdev, and a buffer partly on it. */
static void other(struct fx *f)
{
	if (f->octx)
		return;
	f->octx = mk_ctx();
	f->odev = mk_simdev(f->octx, 8 * MiB);
	ASSERT_OK(uhmm_alloc(f->octx, OBUF_PAGES * PG, (void **)&f->obuf));
	uhmm_test_fill(f->obuf, OBUF_PAGES * PG, SEED_OBUF);
	ASSERT_OK(uhmm_migrate(f->octx, f->obuf, OBUF_PAGES / 2 * PG, f->odev, 0));
	ASSERT_OK(uhmm_notifier_insert(f->octx, (uintptr_t)f->obuf, OBUF_PAGES * PG,
				       count_inv, NULL, &f->on));
}

static uhmm_ctx *res_ctx(struct fx *f, enum ctxh h)
{
	switch (h) {
	case C_LIVE:
		return f->ctx;
	case C_NULL:
		return NULL;
	case C_DEAD: {
		uhmm_ctx *c = mk_ctx();
		ASSERT_OK(uhmm_ctx_destroy(c));
		return c; /* nothing creates a context before the call */
	}
	case C_OTHER:
		other(f);
		return f->octx;
	case C_DEVPTR:
		return (uhmm_ctx *)f->dev;
	case C_JUNK:
		return (uhmm_ctx *)junk;
	}
	return NULL;
}

static uhmm_device *res_dev(struct fx *f, enum devh h)
{
	switch (h) {
	case D_NULL:
		return NULL;
	case D_LIVE:
		return f->dev;
	case D_GONE: {
		uhmm_device *d = mk_simdev(f->ctx, 4 * MiB);
		ASSERT_OK(uhmm_device_detach(d));
		return d; /* nothing attaches a device before the call */
	}
	case D_DEADCTX: {
		uhmm_ctx *c = mk_ctx();
		uhmm_device *d = mk_simdev(c, 4 * MiB);
		ASSERT_OK(uhmm_ctx_destroy(c));
		return d;
	}
	case D_FOREIGN:
		other(f);
		return f->odev;
	case D_STUB:
		if (!f->stub)
			ASSERT_OK(uhmm_device_attach(f->ctx, &stub_ops, NULL, "stub", &f->stub));
		return f->stub;
	case D_CTXPTR:
		return (uhmm_device *)f->ctx;
	case D_JUNK:
		return (uhmm_device *)junk;
	}
	return NULL;
}

static struct uhmm_notifier *res_notifier(struct fx *f, enum nh h)
{
	struct uhmm_notifier *n = NULL;
	switch (h) {
	case N_NULL:
		return NULL;
	case N_LIVE:
		return f->n;
	case N_REMOVED:
		ASSERT_OK(uhmm_notifier_insert(f->ctx, (uintptr_t)f->buf, BUF_PAGES * PG,
					       count_inv, NULL, &n));
		ASSERT_OK(uhmm_notifier_remove(n));
		return n;
	case N_DEADCTX: {
		uhmm_ctx *c = mk_ctx();
		ASSERT_OK(uhmm_notifier_insert(c, PG, PG, count_inv, NULL, &n));
		ASSERT_OK(uhmm_ctx_destroy(c)); /* frees its notifiers */
		return n;
	}
	case N_FOREIGN:
		other(f);
		return f->on;
	case N_CTXPTR:
		return (struct uhmm_notifier *)f->ctx;
	case N_DEVPTR:
		return (struct uhmm_notifier *)f->dev;
	}
	return NULL;
}

static char *res_base(struct fx *f, enum base b)
{
	switch (b) {
	case B_ZERO:
		return NULL;
	case B_BUF:
		return f->buf;
	case B_BUF2:
		return f->buf2;
	case B_REG:
		return f->reg;
	case B_REGMAP:
		return f->regmap;
	case B_HOLE: {
		char *h = f->regmap + HOLE_OFF * PG;
		if (!is_unmapped(h, (REG_MAP - HOLE_OFF) * PG))
			fail_msg("the fixture's hole got mapped by someone");
		return h;
	}
	case B_RO:
		return f->ro;
	case B_NONE:
		return f->none;
	case B_SHARED:
		return f->shared;
	case B_TOP:
		return (char *)TOPPG;
	case B_UNMAPPED:
		return fresh_unmapped(8 * PG);
	case B_JUNK:
		return junk;
	case B_OBUF:
		other(f);
		return f->obuf;
	case B_DMBUF:
		return f->dmbuf;
	case B_DMPTR:
		return f->dmptr;
	}
	return NULL;
}

/* The holes open: from here to the call nothing maps memory. */
static void unplug(struct fx *f)
{
	if (f->plug_reg) {
		munmap(f->plug_reg, (REG_MAP - HOLE_OFF) * PG);
		f->plug_reg = NULL;
	}
	if (f->plug_buf2) {
		munmap(f->plug_buf2, (BUF2_HOLE_END - BUF2_HOLE) * PG);
		f->plug_buf2 = NULL;
	}
}

static char *plug(char *at, size_t len)
{
	char *p = mmap(at, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		       -1, 0);
	if (p != at)
		fail_msg("cannot plug the hole at %p", (void *)at);
	return p;
}

/* Resolve addresses after handles: making a stale handle maps memory. */
static char *res_addr(struct fx *f, struct addr a)
{
	if (f->regmap)
		unplug(f);
	return (char *)((uintptr_t)res_base(f, a.base) + (uintptr_t)a.off);
}

/* ---- the uhmm fixture ------------------------------------------------------ */

static void fx_record(struct fx *f)
{
	size_t k = 0;
	for (size_t i = 0; i < BUF_PAGES; i++)
		f->pg[k++] = f->buf + i * PG;
	for (size_t i = 0; i < REG_PAGES; i++)
		f->pg[k++] = f->reg + i * PG;
	for (size_t i = 0; i < BUF2_PAGES; i++)
		if (i < BUF2_HOLE || i >= BUF2_HOLE_END)
			f->pg[k++] = f->buf2 + i * PG;
	while (k < NCHECK)
		f->pg[k++] = NULL;
	for (size_t i = 0; i < NCHECK && f->pg[i]; i++)
		ASSERT_OK(uhmm_page_query(f->ctx, f->pg[i], &f->pi[i]));
	ASSERT_OK(uhmm_stats_get(f->ctx, &f->st));
	ASSERT_OK(uhmm_simdev_meminfo(f->dev, &f->mi));
}

static void fx_setup(struct fx *f)
{
	memset(f, 0, sizeof(*f));
	f->ctx = mk_ctx();
	f->dev = mk_simdev(f->ctx, 16 * MiB);

	ASSERT_OK(uhmm_alloc(f->ctx, BUF_PAGES * PG, (void **)&f->buf));
	uhmm_test_fill(f->buf, BUF_PAGES * PG, SEED_BUF);
	ASSERT_OK(uhmm_migrate(f->ctx, f->buf, BUF_DEV * PG, f->dev, 0));

	f->regmap = map_anon(REG_MAP * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	assert_int_equal(munmap(f->regmap + HOLE_OFF * PG, (REG_MAP - HOLE_OFF) * PG), 0);
	f->plug_reg = plug(f->regmap + HOLE_OFF * PG, (REG_MAP - HOLE_OFF) * PG);
	uhmm_test_fill(f->regmap, HOLE_OFF * PG, SEED_REG);
	f->reg = f->regmap + REG_OFF * PG;
	ASSERT_OK(uhmm_register(f->ctx, f->reg, REG_PAGES * PG));
	ASSERT_OK(uhmm_migrate(f->ctx, f->reg, REG_DEV * PG, f->dev, 0));

	ASSERT_OK(uhmm_alloc(f->ctx, BUF2_PAGES * PG, (void **)&f->buf2));
	uhmm_test_fill(f->buf2, BUF2_PAGES * PG, SEED_BUF2);
	ASSERT_OK(uhmm_migrate(f->ctx, f->buf2, BUF2_DEV * PG, f->dev, 0));
	/* munmap waits until the service thread has read the UNMAP event. */
	assert_int_equal(munmap(f->buf2 + BUF2_HOLE * PG, (BUF2_HOLE_END - BUF2_HOLE) * PG), 0);
	f->plug_buf2 = plug(f->buf2 + BUF2_HOLE * PG, (BUF2_HOLE_END - BUF2_HOLE) * PG);
	/* ...and the UNMAP event is handled (asynchronously) soon after. */
	struct uhmm_page_info pi;
	uint64_t t0 = uhmm_test_now_ns();
	while (uhmm_page_query(f->ctx, f->buf2 + BUF2_HOLE * PG, &pi) != -EFAULT ||
	       uhmm_page_query(f->ctx, f->buf2 + (BUF2_HOLE_END - 1) * PG, &pi) != -EFAULT) {
		if (uhmm_test_now_ns() - t0 > 5000000000ull)
			fail_msg("the UNMAP event of buf2's hole was not handled");
		usleep(200);
	}

	f->ro = map_anon(SMALL * PG, PROT_READ, MAP_PRIVATE);
	f->none = map_anon(SMALL * PG, PROT_NONE, MAP_PRIVATE);
	f->shared = map_anon(SMALL * PG, PROT_READ | PROT_WRITE, MAP_SHARED);
	ASSERT_OK(uhmm_notifier_insert(f->ctx, (uintptr_t)f->buf, BUF_PAGES * PG, count_inv,
				       NULL, &f->n));
	fx_record(f);
}

/* NULL if nothing changed, else what did. */
static const char *fx_check(struct fx *f)
{
	char *e = f->errbuf;
	size_t es = sizeof(f->errbuf);
	for (size_t i = 0; i < NCHECK && f->pg[i]; i++) {
		struct uhmm_page_info pi;
		int err = uhmm_page_query(f->ctx, f->pg[i], &pi);
		if (err || pi.where != f->pi[i].where || pi.device != f->pi[i].device ||
		    pi.seq != f->pi[i].seq || pi.dpfn != f->pi[i].dpfn) {
			snprintf(e, es, "page %p: query %d where %u seq %u (was where %u seq %u)",
				 (void *)f->pg[i], err, pi.where, pi.seq, f->pi[i].where,
				 f->pi[i].seq);
			return e;
		}
	}
	struct uhmm_stats st;
	if (uhmm_stats_get(f->ctx, &st))
		return "uhmm_stats_get failed";
	const uint64_t *a = (const uint64_t *)&f->st, *b = (const uint64_t *)&st;
	for (size_t i = 0; i < sizeof(st) / sizeof(uint64_t); i++)
		if (b[i] < a[i]) {
			snprintf(e, es, "counter %zu went back: %llu -> %llu", i,
				 (unsigned long long)a[i], (unsigned long long)b[i]);
			return e;
		}
#define SAME(field)                                                           \
	if (st.field != f->st.field) {                                        \
		snprintf(e, es, "stats." #field " %llu -> %llu",              \
			 (unsigned long long)f->st.field, (unsigned long long)st.field); \
		return e;                                                     \
	}
	SAME(migrated_to_device_pages);
	SAME(migrated_to_system_pages);
	SAME(zero_filled_pages);
	SAME(cpu_faults_device);
	SAME(device_pages_freed_by_events);
	SAME(exclusive_grabs);
	SAME(managed_pages);
	SAME(metadata_bytes);
#undef SAME
	struct uhmm_simdev_meminfo mi;
	if (uhmm_simdev_meminfo(f->dev, &mi))
		return "uhmm_simdev_meminfo failed";
	if (mi.free_pages != f->mi.free_pages || mi.total_pages != f->mi.total_pages) {
		snprintf(e, es, "device free pages %llu -> %llu",
			 (unsigned long long)f->mi.free_pages, (unsigned long long)mi.free_pages);
		return e;
	}
	if (f->octx) {
		struct uhmm_simdev_meminfo omi;
		if (uhmm_simdev_meminfo(f->odev, &omi) ||
		    omi.free_pages != omi.total_pages - OBUF_PAGES / 2)
			return "the other context's device memory changed";
		for (size_t i = 0; i < OBUF_PAGES; i++) {
			struct uhmm_page_info pi;
			if (uhmm_page_query(f->octx, f->obuf + i * PG, &pi) ||
			    pi.where != (i < OBUF_PAGES / 2 ? UHMM_WHERE_DEVICE : UHMM_WHERE_CPU))
				return "a page of the other context moved";
		}
	}
	/* Last, as reading brings device pages home. */
	size_t bad;
	if ((bad = uhmm_test_check(f->buf, BUF_PAGES * PG, SEED_BUF)) != (size_t)-1) {
		snprintf(e, es, "data of buf lost at offset %zu", bad);
		return e;
	}
	if ((bad = uhmm_test_check(f->regmap, HOLE_OFF * PG, SEED_REG)) != (size_t)-1) {
		snprintf(e, es, "data of the registered map lost at offset %zu", bad);
		return e;
	}
	if ((bad = uhmm_test_check(f->buf2, BUF2_HOLE * PG, SEED_BUF2)) != (size_t)-1 ||
	    uhmm_test_check(f->buf2 + BUF2_HOLE_END * PG,
			    (BUF2_PAGES - BUF2_HOLE_END) * PG,
			    SEED_BUF2 + BUF2_HOLE_END * PG / 8) != (size_t)-1)
		return "data of buf2 lost";
	if (f->octx && uhmm_test_check(f->obuf, OBUF_PAGES * PG, SEED_OBUF) != (size_t)-1)
		return "data of the other context lost";
	return NULL;
}

static void fx_teardown(struct fx *f)
{
	unplug(f);
	if (f->octx) {
		ASSERT_OK(uhmm_ctx_destroy(f->octx));
		munmap(f->obuf, OBUF_PAGES * PG);
	}
	ASSERT_OK(uhmm_ctx_destroy(f->ctx));
	munmap(f->buf, BUF_PAGES * PG);
	munmap(f->buf2, BUF2_HOLE * PG);
	munmap(f->buf2 + BUF2_HOLE_END * PG, (BUF2_PAGES - BUF2_HOLE_END) * PG);
	munmap(f->regmap, HOLE_OFF * PG);
	munmap(f->ro, SMALL * PG);
	munmap(f->none, SMALL * PG);
	munmap(f->shared, SMALL * PG);
}

/* ---- performers: uhmm.h ------------------------------------------------------ */

enum copt { CO_NONE, CO_SIZE, CO_FLAGS, CO_FAULT_AROUND, CO_ZERO_AROUND, CO_POOL };

static long p_ctx_opts_init(struct fx *f, const struct row *r)
{
	(void)f, (void)r;
	uhmm_ctx_opts_init(NULL);
	return 0;
}

static long p_ctx_create(struct fx *f, const struct row *r)
{
	(void)f;
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	switch ((enum copt)r->v) {
	case CO_NONE:
		break;
	case CO_SIZE:
		o.size = (uint32_t)r->x;
		break;
	case CO_FLAGS:
		o.flags = (uint32_t)r->x;
		break;
	case CO_FAULT_AROUND:
		o.fault_around = (uint32_t)r->x;
		break;
	case CO_ZERO_AROUND:
		o.zero_around = (uint32_t)r->x;
		break;
	case CO_POOL:
		o.pool_pages = (uint32_t)r->x;
		break;
	}
	uhmm_ctx *c = (uhmm_ctx *)junk;
	long e = uhmm_ctx_create(&o, (r->flags & R_NULL_OUT) ? NULL : &c);
	if (!e) {
		uhmm_ctx_destroy(c);
		return 0;
	}
	return c == (uhmm_ctx *)junk ? e : OUT_CLOBBERED;
}

static long p_ctx_destroy(struct fx *f, const struct row *r)
{
	return uhmm_ctx_destroy(res_ctx(f, r->c));
}

static long p_ctx_info(struct fx *f, const struct row *r)
{
	struct uhmm_ctx_info ci;
	return uhmm_ctx_info(res_ctx(f, r->c), (r->flags & R_NULL_OUT) ? NULL : &ci);
}

static long p_sync(struct fx *f, const struct row *r)
{
	return uhmm_sync(res_ctx(f, r->c));
}

static long p_alloc(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	void *p = junk;
	long e = uhmm_alloc(c, (size_t)r->len, (r->flags & R_NULL_OUT) ? NULL : &p);
	if (!e) {
		uhmm_free(c, p);
		return 0;
	}
	return p == junk ? e : OUT_CLOBBERED;
}

static long p_free(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	return uhmm_free(c, res_addr(f, r->a));
}

static long p_register(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	char *a = res_addr(f, r->a);
	long e = uhmm_register(c, a, (size_t)r->len);
	if (!e)
		uhmm_unregister(c, a, (size_t)r->len);
	return e;
}

static long p_unregister(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	return uhmm_unregister(c, res_addr(f, r->a), (size_t)r->len);
}

static long p_migrate(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	uhmm_device *d = res_dev(f, r->d);
	return uhmm_migrate(c, res_addr(f, r->a), (size_t)r->len, d, (unsigned)r->x);
}

static long p_page_query(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	struct uhmm_page_info pi;
	return uhmm_page_query(c, res_addr(f, r->a), (r->flags & R_NULL_OUT) ? NULL : &pi);
}

enum attach_how {
	AT_OK, AT_NULL_OPS, AT_NO_ALLOC, AT_NO_FREE, AT_NO_SUBMIT, AT_NO_WAIT, AT_FULL,
};

static long p_attach(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	static struct uhmm_device_ops ops;
	ops = stub_ops;
	const struct uhmm_device_ops *o = &ops;
	switch ((enum attach_how)r->v) {
	case AT_NULL_OPS:
		o = NULL;
		break;
	case AT_NO_ALLOC:
		ops.alloc = NULL;
		break;
	case AT_NO_FREE:
		ops.free = NULL;
		break;
	case AT_NO_SUBMIT:
		ops.copy_submit = NULL;
		break;
	case AT_NO_WAIT:
		ops.copy_wait = NULL;
		break;
	default:
		break;
	}
	uhmm_device *extra[256];
	size_t nextra = 0;
	if (r->v == AT_FULL) {
		/* Fill the table: 255 devices per context, f->dev is one. */
		for (;;) {
			uhmm_device *d;
			int e = uhmm_device_attach(f->ctx, &stub_ops, NULL, "filler", &d);
			if (e == -ENOSPC)
				break;
			if (e || nextra == 256) {
				fprintf(stderr, "  filling the device table: %d after %zu\n", e,
					nextra);
				return CHECK_FAILED;
			}
			extra[nextra++] = d;
		}
	}
	uhmm_device *d = (uhmm_device *)junk;
	long e = uhmm_device_attach(c, o, NULL, "hostile", (r->flags & R_NULL_OUT) ? NULL : &d);
	for (size_t i = 0; i < nextra; i++)
		if (uhmm_device_detach(extra[i]))
			return CHECK_FAILED;
	if (!e) {
		uhmm_device_detach(d);
		return 0;
	}
	return d == (uhmm_device *)junk ? e : OUT_CLOBBERED;
}

static long p_detach(struct fx *f, const struct row *r)
{
	return uhmm_device_detach(res_dev(f, r->d));
}

/* The three accessors: 0 when they answer NULL (not a live device). */
static long p_device_priv(struct fx *f, const struct row *r)
{
	return uhmm_device_priv(res_dev(f, r->d)) ? 1 : 0;
}
static long p_device_name(struct fx *f, const struct row *r)
{
	return uhmm_device_name(res_dev(f, r->d)) ? 1 : 0;
}
static long p_device_ops_of(struct fx *f, const struct row *r)
{
	return uhmm_device_ops_of(res_dev(f, r->d)) ? 1 : 0;
}

static long p_stats_get(struct fx *f, const struct row *r)
{
	struct uhmm_stats st;
	return uhmm_stats_get(res_ctx(f, r->c), (r->flags & R_NULL_OUT) ? NULL : &st);
}

static long p_stats_print(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	FILE *null = fopen("/dev/null", "w");
	assert_non_null(null);
	long e = uhmm_stats_print(c, null);
	fclose(null);
	return e;
}

/* 0 when the answer is a non-empty string. */
static long p_strerror(struct fx *f, const struct row *r)
{
	(void)f;
	const char *s = uhmm_strerror((int)(int64_t)r->x);
	return s && *s ? 0 : 1;
}

/* ---- performers: mirror.h ------------------------------------------------------ */

static long p_notifier_insert(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	struct uhmm_notifier *n = (struct uhmm_notifier *)junk;
	long e = uhmm_notifier_insert(c, (uintptr_t)res_addr(f, r->a), (size_t)r->len,
				      (r->flags & R_NULL_FN) ? NULL : count_inv, NULL,
				      (r->flags & R_NULL_OUT) ? NULL : &n);
	if (!e) {
		uhmm_notifier_remove(n);
		return 0;
	}
	return n == (struct uhmm_notifier *)junk ? e : OUT_CLOBBERED;
}

static long p_notifier_remove(struct fx *f, const struct row *r)
{
	return uhmm_notifier_remove(res_notifier(f, r->n));
}

static long p_range_fault(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	struct uhmm_notifier *n = res_notifier(f, r->n);
	uhmm_device *d = res_dev(f, r->d);
	uintptr_t start = (uintptr_t)res_addr(f, r->a);
	uintptr_t end = (uintptr_t)res_addr(f, r->b);
	struct uhmm_range_req req = {
		.notifier = n,
		.start = start,
		.end = end,
		.flags = (uint32_t)r->x,
		.timeout_ms = 200,
		.device = d,
		.entries = (r->flags & R_NULL_ENTRIES) ? NULL : f->entries,
	};
	if (req.end > req.start && (req.end - req.start) / PG > BUF_PAGES * 2)
		fail_msg("row too long for the entries array");
	long e = uhmm_range_fault(c, (r->flags & R_NULL_OUT) ? NULL : &req);
	/* A snapshot over a hole succeeds: its entries say ERROR. */
	if (!e && r->v && !(f->entries[r->v] & UHMM_RE_ERROR)) {
		fprintf(stderr, "  entry %d is %#llx, not UHMM_RE_ERROR\n", r->v,
			(unsigned long long)f->entries[r->v]);
		return CHECK_FAILED;
	}
	return e;
}

static long p_make_exclusive(struct fx *f, const struct row *r)
{
	uhmm_device *d = res_dev(f, r->d);
	void *pages[32];
	return uhmm_make_exclusive(d, res_addr(f, r->a), (size_t)r->len,
				   r->len <= 32 ? pages : NULL);
}

static long p_check_exclusive(struct fx *f, const struct row *r)
{
	uhmm_device *d = res_dev(f, r->d);
	return uhmm_check_exclusive(d, res_addr(f, r->a), (size_t)r->len);
}

static long p_mprotect(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	return uhmm_mprotect(c, res_addr(f, r->a), (size_t)r->len, r->v);
}

/* ---- performers: simdev.h -------------------------------------------------- */

enum sopt { SO_NONE, SO_SIZE, SO_MEM, SO_THREADS, SO_BW, SO_CU, SO_LANES, SO_FB, SO_TLB, SO_NULL };

static long p_simdev_opts_init(struct fx *f, const struct row *r)
{
	(void)f, (void)r;
	uhmm_simdev_opts_init(NULL);
	return 0;
}

static long p_simdev_create(struct fx *f, const struct row *r)
{
	uhmm_ctx *c = res_ctx(f, r->c);
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 4 * MiB;
	o.compute_units = 1;
	o.lanes_per_cu = 1;
	switch ((enum sopt)r->v) {
	case SO_NONE:
	case SO_NULL:
		break;
	case SO_SIZE:
		o.size = (uint32_t)r->x;
		break;
	case SO_MEM:
		o.mem_bytes = r->x;
		break;
	case SO_THREADS:
		o.copy_threads = (uint32_t)r->x;
		break;
	case SO_BW:
		o.bandwidth_gbps = r->x == 1 ? -1.0 : r->x == 2 ? NAN : -INFINITY;
		break;
	case SO_CU:
		o.compute_units = (uint32_t)r->x;
		break;
	case SO_LANES:
		o.lanes_per_cu = (uint32_t)r->x;
		break;
	case SO_FB:
		o.fault_batch = (uint32_t)r->x;
		break;
	case SO_TLB:
		o.tlb_entries = (uint32_t)r->x;
		break;
	}
	uhmm_device *d = (uhmm_device *)junk;
	long e = uhmm_simdev_create(c, r->v == SO_NULL ? NULL : &o,
				    (r->flags & R_NULL_OUT) ? NULL : &d);
	if (!e) {
		uhmm_device_detach(d);
		return 0;
	}
	return d == (uhmm_device *)junk ? e : OUT_CLOBBERED;
}

static long p_simdev_meminfo(struct fx *f, const struct row *r)
{
	struct uhmm_simdev_meminfo mi;
	return uhmm_simdev_meminfo(res_dev(f, r->d), (r->flags & R_NULL_OUT) ? NULL : &mi);
}

static long p_simdev_inject(struct fx *f, const struct row *r)
{
	return uhmm_simdev_inject(res_dev(f, r->d), (enum uhmm_simdev_fault)r->v, 0, r->x);
}

static long p_simdev_stats(struct fx *f, const struct row *r)
{
	struct uhmm_simdev_stats s;
	return uhmm_simdev_stats(res_dev(f, r->d), (r->flags & R_NULL_OUT) ? NULL : &s);
}

static long p_simdev_advise(struct fx *f, const struct row *r)
{
	return uhmm_simdev_advise(res_dev(f, r->d), res_addr(f, r->a), (size_t)r->len,
				  (enum uhmm_simdev_advice)r->v);
}

static long p_simdev_advise_atomics(struct fx *f, const struct row *r)
{
	return uhmm_simdev_advise_atomics(res_dev(f, r->d), res_addr(f, r->a),
					  (size_t)r->len,
					  (enum uhmm_simdev_atomic_policy)r->v);
}

/* Kernels: one device access each, at the row's addresses. */
enum kop {
	K_NOP, K_LD8, K_LD16, K_LD32, K_LD64, K_ST8, K_ST16, K_ST32, K_ST64, K_COPY,
	K_ADD32, K_ADD64, K_XCHG32, K_XCHG64, K_CAS32, K_CAS64, K_NESTED, K_SPIN,
	K_GRAB_WI, K_NOPS
};

struct kargs {
	enum kop op;
	char *p, *q;
	size_t n;
	uhmm_device *dev;
	_Atomic int nested;
	_Atomic int started, release;
	uhmm_simdev_item *wi;
};

static void do_access(uhmm_simdev_item *wi, enum kop op, char *p, char *q, size_t n)
{
	switch (op) {
	case K_LD8: (void)uhmm_simdev_ld8(wi, p); break;
	case K_LD16: (void)uhmm_simdev_ld16(wi, p); break;
	case K_LD32: (void)uhmm_simdev_ld32(wi, p); break;
	case K_LD64: (void)uhmm_simdev_ld64(wi, p); break;
	case K_ST8: uhmm_simdev_st8(wi, p, 1); break;
	case K_ST16: uhmm_simdev_st16(wi, p, 1); break;
	case K_ST32: uhmm_simdev_st32(wi, p, 1); break;
	case K_ST64: uhmm_simdev_st64(wi, p, 1); break;
	case K_COPY: uhmm_simdev_copy(wi, p, q, n); break;
	case K_ADD32: (void)uhmm_simdev_atomic_add32(wi, p, 1); break;
	case K_ADD64: (void)uhmm_simdev_atomic_add64(wi, p, 1); break;
	case K_XCHG32: (void)uhmm_simdev_atomic_xchg32(wi, p, 1); break;
	case K_XCHG64: (void)uhmm_simdev_atomic_xchg64(wi, p, 1); break;
	case K_CAS32: (void)uhmm_simdev_atomic_cas32(wi, p, 0, 1); break;
	case K_CAS64: (void)uhmm_simdev_atomic_cas64(wi, p, 0, 1); break;
	default: break;
	}
}

static void kernel(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	(void)idx;
	struct kargs *k = arg;
	switch (k->op) {
	case K_NESTED:
		atomic_store(&k->nested, uhmm_simdev_launch(k->dev, kernel, 0, NULL));
		break;
	case K_SPIN: {
		atomic_store(&k->started, 1);
		uint64_t t0 = uhmm_test_now_ns();
		while (!atomic_load(&k->release) && uhmm_test_now_ns() - t0 < 5000000000ull)
			sched_yield();
		break;
	}
	case K_GRAB_WI:
		k->wi = wi;
		break;
	default:
		do_access(wi, k->op, k->p, k->q, k->n);
		break;
	}
}

static void *busy_launcher(void *arg)
{
	struct kargs *k = arg;
	return (void *)(intptr_t)uhmm_simdev_launch(k->dev, kernel, 1, k);
}

static long p_launch(struct fx *f, const struct row *r)
{
	uhmm_device *d = res_dev(f, r->d);
	static struct kargs k;
	memset(&k, 0, sizeof(k));
	k.op = (enum kop)r->v;
	k.p = res_addr(f, r->a);
	k.q = res_addr(f, r->b);
	k.n = (size_t)r->len;
	k.dev = d;
	if (k.op == K_SPIN) {
		/* Another launch runs on the device: -EBUSY. */
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, busy_launcher, &k), 0);
		uint64_t t0 = uhmm_test_now_ns();
		while (!atomic_load(&k.started) && uhmm_test_now_ns() - t0 < 5000000000ull)
			usleep(100);
		struct kargs nop = { .op = K_NOP };
		long e = uhmm_simdev_launch(d, kernel, 1, &nop);
		atomic_store(&k.release, 1);
		void *ret;
		pthread_join(t, &ret);
		if ((intptr_t)ret != 0)
			return CHECK_FAILED;
		return e;
	}
	long e = uhmm_simdev_launch(d, (r->flags & R_NULL_FN) ? NULL : kernel, r->x ? r->x : 1,
				    &k);
	if (k.op == K_NESTED && !e)
		return atomic_load(&k.nested);
	return e;
}

/* An accessor used outside a kernel aborts the process (documented):
 * checked in a child.  wi: r->x 0 NULL, 1 junk, 2 a work item of a launch
 * that is over (its device and context destroyed). */
static long p_accessor_outside(struct fx *f, const struct row *r)
{
	(void)f;
	uhmm_simdev_item *wi = NULL;
	static char word[64] __attribute__((aligned(64)));
	if (r->x == 1) {
		wi = (uhmm_simdev_item *)junk;
	} else if (r->x == 2) {
		uhmm_ctx *c = mk_ctx();
		uhmm_device *d = mk_simdev(c, 4 * MiB);
		struct kargs k = { .op = K_GRAB_WI };
		ASSERT_OK(uhmm_simdev_launch(d, kernel, 1, &k));
		ASSERT_OK(uhmm_ctx_destroy(c));
		wi = k.wi;
	}
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0)
			dup2(fd, 2);
		do_access(wi, (enum kop)r->v, word, word + 32, 8);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT)
		return 0;
	fprintf(stderr, "  child: %s %d\n", WIFSIGNALED(status) ? "signal" : "exit",
		WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	return NOT_ABORTED;
}

/* ---- performers: dmirror.h (through dlopen) ---------------------------------- */

static struct {
	bool tried, ok;
	void *lib;
	int (*open)(int, uhmm_dmirror **);
	int (*cmd)(uhmm_dmirror *, unsigned, struct uhmm_dmirror_cmd *);
	int (*map)(uhmm_dmirror *, void *, size_t, int, int, void **);
	int (*mprotect)(void *, size_t, int);
	int (*close)(uhmm_dmirror *);
	int (*shutdown)(void);
} dm;

static bool dm_load(void)
{
	if (dm.tried)
		return dm.ok;
	dm.tried = true;
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 64);
	if (n <= 0)
		return false;
	exe[n] = '\0';
	char *slash = strrchr(exe, '/');
	if (!slash)
		return false;
	strcpy(slash, "/../libuhmm-dmirror.so");
	/* RTLD_LOCAL: its open/mmap/mprotect wrappers stay out of our way. */
	dm.lib = dlopen(exe, RTLD_NOW | RTLD_LOCAL);
	if (!dm.lib) {
		fprintf(stderr, "  dlopen(%s): %s\n", exe, dlerror());
		return false;
	}
#define SYM(field, name)                                                      \
	do {                                                                  \
		*(void **)&dm.field = dlsym(dm.lib, name);                    \
		if (!dm.field)                                                \
			return false;                                         \
	} while (0)
	SYM(open, "uhmm_dmirror_open");
	SYM(cmd, "uhmm_dmirror_cmd");
	SYM(map, "uhmm_dmirror_map");
	SYM(mprotect, "uhmm_dmirror_mprotect");
	SYM(close, "uhmm_dmirror_close");
	SYM(shutdown, "uhmm_dmirror_shutdown");
#undef SYM
	dm.ok = true;
	return true;
}

static int dm_do(struct fx *f, unsigned req, void *addr, void *ptr, uint64_t npages)
{
	struct uhmm_dmirror_cmd c = {
		.addr = (uint64_t)(uintptr_t)addr,
		.ptr = (uint64_t)(uintptr_t)(ptr ? ptr : f->dmptr),
		.npages = npages,
	};
	uhmm_dmirror *h = f->dm;
	return dm.cmd(h, req, &c);
}

static void dmfx_setup(struct fx *f)
{
	fx_setup(f); /* for its unmanaged maps and holes */
	ASSERT_OK(dm.open(0, &f->dm));
	f->dmbuf = map_anon(16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	f->dmptr = map_anon(16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	uhmm_test_fill(f->dmbuf, 16 * PG, SEED_DM);
	ASSERT_OK(dm_do(f, UHMM_DMIRROR_MIGRATE_TO_DEV, f->dmbuf, NULL, 8));
	ASSERT_OK(dm_do(f, UHMM_DMIRROR_SNAPSHOT, f->dmbuf, f->dmsnap, 16));
	for (int i = 0; i < 8; i++)
		assert_int_equal(f->dmsnap[i] & 0xf0, UHMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL);
}

static const char *dmfx_check(struct fx *f)
{
	uint8_t snap[16];
	if (dm_do(f, UHMM_DMIRROR_SNAPSHOT, f->dmbuf, snap, 16))
		return "SNAPSHOT failed";
	if (memcmp(snap, f->dmsnap, 16))
		return "a page of the dmirror buffer moved";
	char *tmp = malloc(16 * PG);
	assert_non_null(tmp);
	int e = dm_do(f, UHMM_DMIRROR_READ, f->dmbuf, tmp, 16);
	size_t bad = uhmm_test_check(tmp, 16 * PG, SEED_DM);
	free(tmp);
	if (e || bad != (size_t)-1)
		return "the device reads lost data";
	if (uhmm_test_check(f->dmbuf, 16 * PG, SEED_DM) != (size_t)-1)
		return "the CPU reads lost data";
	return fx_check(f);
}

static void dmfx_teardown(struct fx *f)
{
	munmap(f->dmbuf, 16 * PG);
	munmap(f->dmptr, 16 * PG);
	ASSERT_OK(dm.close(f->dm));
	ASSERT_OK(dm.shutdown());
	fx_teardown(f);
}

/* Handles for dmirror rows: r->n N_LIVE the fixture's, N_NULL NULL,
 * N_REMOVED a closed handle, N_CTXPTR junk. */
static uhmm_dmirror *res_dm(struct fx *f, enum nh h)
{
	uhmm_dmirror *x = NULL;
	switch (h) {
	case N_LIVE:
		return f->dm;
	case N_REMOVED:
		ASSERT_OK(dm.open(1, &x));
		ASSERT_OK(dm.close(x));
		return x;
	case N_CTXPTR:
		return (uhmm_dmirror *)junk;
	default:
		return NULL;
	}
}

static long p_dm_open(struct fx *f, const struct row *r)
{
	(void)f;
	uhmm_dmirror *h = (uhmm_dmirror *)junk;
	long e = dm.open(r->v, (r->flags & R_NULL_OUT) ? NULL : &h);
	if (!e) {
		dm.close(h);
		return 0;
	}
	return h == (uhmm_dmirror *)junk ? e : OUT_CLOBBERED;
}

static long p_dm_cmd(struct fx *f, const struct row *r)
{
	uhmm_dmirror *h = res_dm(f, r->n);
	char *a = res_addr(f, r->a), *b = res_addr(f, r->b);
	struct uhmm_dmirror_cmd c = {
		.addr = (uint64_t)(uintptr_t)a,
		.ptr = (uint64_t)(uintptr_t)b,
		.npages = r->len,
		.cpages = 77,
		.faults = 77,
	};
	long e = dm.cmd(h, (unsigned)r->v, (r->flags & R_NULL_OUT) ? NULL : &c);
	if (e && (c.cpages != 77 || c.faults != 77))
		return OUT_CLOBBERED; /* "@cmd is written only when the call succeeds" */
	return e;
}

static long p_dm_map(struct fx *f, const struct row *r)
{
	uhmm_dmirror *h = res_dm(f, r->n);
	void *p = junk;
	long e = dm.map(h, NULL, (size_t)r->len, (int)r->x, r->v,
			(r->flags & R_NULL_OUT) ? NULL : &p);
	if (!e) {
		munmap(p, (size_t)r->len);
		return 0;
	}
	return p == junk ? e : OUT_CLOBBERED;
}

static long p_dm_mprotect(struct fx *f, const struct row *r)
{
	return dm.mprotect(res_addr(f, r->a), (size_t)r->len, r->v);
}

static long p_dm_close(struct fx *f, const struct row *r)
{
	return dm.close(res_dm(f, r->n));
}

static long p_dm_shutdown(struct fx *f, const struct row *r)
{
	(void)f, (void)r;
	return dm.shutdown(); /* the fixture's handle is open */
}

/* ---- performers: concurrent destroy / detach ------------------------------ */

enum race_op { RACE_MIGRATE, RACE_RANGE_FAULT, RACE_LAUNCH };
enum race_kill { KILL_DESTROY, KILL_DETACH };

struct racer {
	enum race_op op;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	struct uhmm_notifier *n;
	char *buf;
	size_t len;
	uint64_t *entries;
	_Atomic int stop, killed;
	_Atomic long calls, after;
	long bad; /* first result outside the allowed set (0 if none) */
	const char *bad_call;
	_Atomic int done;
};

static void race_kernel(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	char *buf = arg;
	(void)uhmm_simdev_ld32(wi, buf + idx * PG);
}

static bool race_allowed(enum race_op op, long e)
{
	switch (op) {
	case RACE_MIGRATE:
		return e == 0 || e == -EBADF;
	case RACE_RANGE_FAULT:
		return e == 0 || e == -EBADF || e == -EBUSY;
	case RACE_LAUNCH:
		/* -EINVAL "@dev not a simdev" (called after); -EBADF a device
		 * fault met the destroy/detach (which waited for the launch) */
		return e == 0 || e == -EINVAL || e == -EBADF;
	}
	return false;
}

static void *racer_main(void *p)
{
	struct racer *rc = p;
	while (!atomic_load(&rc->stop)) {
		int killed = atomic_load(&rc->killed);
		long e1 = 0, e2 = 0;
		const char *c1 = "", *c2 = "";
		switch (rc->op) {
		case RACE_MIGRATE:
			c1 = "uhmm_migrate(to the device)";
			e1 = uhmm_migrate(rc->ctx, rc->buf, rc->len, rc->dev, 0);
			c2 = "uhmm_migrate(home)";
			e2 = uhmm_migrate(rc->ctx, rc->buf, rc->len, NULL, 0);
			break;
		case RACE_RANGE_FAULT: {
			struct uhmm_range_req req = {
				.notifier = rc->n,
				.start = (uintptr_t)rc->buf,
				.end = (uintptr_t)rc->buf + rc->len,
				.flags = UHMM_RF_FAULT_READ,
				.timeout_ms = 100,
				.device = rc->dev,
				.entries = rc->entries,
			};
			c1 = "uhmm_migrate(to the device)";
			e1 = uhmm_migrate(rc->ctx, rc->buf, rc->len / 2, rc->dev, 0);
			if (e1 == -EBADF && rc->dev)
				e1 = 0; /* the device went first: fine */
			c2 = "uhmm_range_fault";
			req.device = NULL; /* bring the pages back */
			e2 = uhmm_range_fault(rc->ctx, &req);
			break;
		}
		case RACE_LAUNCH:
			c1 = "uhmm_simdev_launch";
			e1 = uhmm_simdev_launch(rc->dev, race_kernel, rc->len / PG, rc->buf);
			break;
		}
		atomic_fetch_add(&rc->calls, 1);
		if (killed)
			atomic_fetch_add(&rc->after, 1);
		if (!rc->bad && !race_allowed(rc->op, e1)) {
			rc->bad = e1;
			rc->bad_call = c1;
		}
		if (!rc->bad && !race_allowed(rc->op, e2)) {
			rc->bad = e2;
			rc->bad_call = c2;
		}
	}
	atomic_store(&rc->done, 1);
	return NULL;
}

/* r->v: enum race_op; r->x: enum race_kill.  Several rounds, the kill at a
 * different moment each time.  0 when every round went as documented. */
static long p_race(struct fx *f, const struct row *r)
{
	(void)f;
	enum race_op op = (enum race_op)r->v;
	enum race_kill kill = (enum race_kill)r->x;
	const size_t len = MiB;
	static uint64_t entries[2 * MiB / 4096];
	for (int round = 0; round < 4; round++) {
		uhmm_ctx *ctx = mk_ctx();
		uhmm_device *keep = mk_simdev(ctx, 8 * MiB);
		uhmm_device *dev = mk_simdev(ctx, 8 * MiB);
		char *buf;
		ASSERT_OK(uhmm_alloc(ctx, len, (void **)&buf));
		uhmm_test_fill(buf, len, 1000 + (uint64_t)round);
		struct uhmm_notifier *n = NULL;
		if (op == RACE_RANGE_FAULT)
			ASSERT_OK(uhmm_notifier_insert(ctx, (uintptr_t)buf, len, count_inv, NULL, &n));
		static struct racer rc;
		memset(&rc, 0, sizeof(rc));
		rc.op = op;
		rc.ctx = ctx;
		rc.dev = dev;
		rc.n = n;
		rc.buf = buf;
		rc.len = op == RACE_LAUNCH ? 64 * PG : len;
		rc.entries = entries;
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, racer_main, &rc), 0);
		/* Let it get going, then pull the rug at a varying moment. */
		while (atomic_load(&rc.calls) < 1)
			usleep(200);
		usleep((useconds_t)(round * 1500));
		long ke = kill == KILL_DESTROY ? uhmm_ctx_destroy(ctx) : uhmm_device_detach(dev);
		atomic_store(&rc.killed, 1);
		/* The racer must see the handle dead a few times, promptly. */
		uint64_t t0 = uhmm_test_now_ns();
		while (atomic_load(&rc.after) < 3 && uhmm_test_now_ns() - t0 < 5000000000ull)
			usleep(200);
		atomic_store(&rc.stop, 1);
		t0 = uhmm_test_now_ns();
		while (!atomic_load(&rc.done) && uhmm_test_now_ns() - t0 < 5000000000ull)
			usleep(1000);
		if (!atomic_load(&rc.done)) {
			fprintf(stderr, "  round %d: the racing thread hangs\n", round);
			return CHECK_FAILED; /* it is stuck: leave it */
		}
		pthread_join(t, NULL);
		if (ke) {
			fprintf(stderr, "  round %d: the %s returned %ld\n", round,
				kill == KILL_DESTROY ? "destroy" : "detach", ke);
			return ke;
		}
		if (rc.bad) {
			fprintf(stderr, "  round %d: %s returned %ld (%s)\n", round, rc.bad_call,
				rc.bad, strerror((int)-rc.bad));
			if (kill == KILL_DETACH) /* no data read: it may SIGBUS */
				fprintf(stderr, "  round %d: %zu pages of %zu home after detach\n",
					round, uhmm_test_pages_on(ctx, buf, len, NULL), len / PG);
			return rc.bad;
		}
		if (kill == KILL_DETACH) {
			/* Every page home, nothing on the surviving device. */
			size_t home = uhmm_test_pages_on(ctx, buf, len, NULL);
			if (home != len / PG) {
				fprintf(stderr, "  round %d: %zu pages of %zu home after detach\n",
					round, home, len / PG);
				return CHECK_FAILED;
			}
			struct uhmm_simdev_meminfo mi;
			ASSERT_OK(uhmm_simdev_meminfo(keep, &mi));
			assert_true(mi.free_pages == mi.total_pages);
		}
		size_t bad = uhmm_test_check(buf, len, 1000 + (uint64_t)round);
		if (bad != (size_t)-1) {
			fprintf(stderr, "  round %d: data lost at offset %zu\n", round, bad);
			return CHECK_FAILED;
		}
		if (kill == KILL_DETACH)
			ASSERT_OK(uhmm_ctx_destroy(ctx));
		munmap(buf, len);
	}
	return 0;
}

/* ---- the table --------------------------------------------------------------- */

#define A(b, o) { (b), (long)(o) }
#define ALT(x) .alt = (x), .flags = R_HAS_ALT
#define ALTF(x, fl) .alt = (x), .flags = R_HAS_ALT | (fl)
#define WRAPLEN ((uint64_t)(SIZE_MAX & ~(PG - 1)))
#define RW (PROT_READ | PROT_WRITE)

static const struct row rows[] = {
	/* ===== uhmm.h: contexts ===== */
	{ "core_ctx", "uhmm_ctx_opts_init", "NULL opts", p_ctx_opts_init, .expect = 0 },
	{ "core_ctx", "uhmm_ctx_create", "NULL out", p_ctx_create, .flags = R_NULL_OUT, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_create", "opts.size 0", p_ctx_create, .v = CO_SIZE, .x = 0, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_create", "opts.size one short", p_ctx_create, .v = CO_SIZE, .x = sizeof(struct uhmm_ctx_opts) - 1, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_create", "REQUIRE_KERNEL_FAULTS|USER_MODE_ONLY", p_ctx_create, .v = CO_FLAGS, .x = UHMM_CTX_REQUIRE_KERNEL_FAULTS | UHMM_CTX_USER_MODE_ONLY, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_create", "unknown flag 1<<5", p_ctx_create, .v = CO_FLAGS, .x = 1u << 5, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_create", "unknown flag 1<<31", p_ctx_create, .v = CO_FLAGS, .x = 1u << 31, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_create", "fault_around 0", p_ctx_create, .v = CO_FAULT_AROUND, .x = 0, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_create", "fault_around 513", p_ctx_create, .v = CO_FAULT_AROUND, .x = 513, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_create", "fault_around UINT32_MAX", p_ctx_create, .v = CO_FAULT_AROUND, .x = UINT32_MAX, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_create", "zero_around 0", p_ctx_create, .v = CO_ZERO_AROUND, .x = 0, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_create", "zero_around 513", p_ctx_create, .v = CO_ZERO_AROUND, .x = 513, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_create", "pool_pages UINT32_MAX", p_ctx_create, .v = CO_POOL, .x = UINT32_MAX, .expect = -EINVAL, ALT(-ENOMEM) },
	{ "core_ctx", "uhmm_ctx_destroy", "NULL", p_ctx_destroy, .c = C_NULL, .expect = -EBADF },
	{ "core_ctx", "uhmm_ctx_destroy", "destroyed context", p_ctx_destroy, .c = C_DEAD, .expect = -EBADF },
	{ "core_ctx", "uhmm_ctx_destroy", "a device handle", p_ctx_destroy, .c = C_DEVPTR, .expect = -EBADF },
	{ "core_ctx", "uhmm_ctx_destroy", "never a handle", p_ctx_destroy, .c = C_JUNK, .expect = -EBADF },
	{ "core_ctx", "uhmm_ctx_info", "NULL info", p_ctx_info, .flags = R_NULL_OUT, .expect = -EINVAL },
	{ "core_ctx", "uhmm_ctx_info", "NULL context", p_ctx_info, .c = C_NULL, .expect = -EBADF },
	{ "core_ctx", "uhmm_ctx_info", "destroyed context", p_ctx_info, .c = C_DEAD, .expect = -EBADF },
	{ "core_ctx", "uhmm_ctx_info", "a device handle", p_ctx_info, .c = C_DEVPTR, .expect = -EBADF },
	{ "core_ctx", "uhmm_ctx_info", "never a handle", p_ctx_info, .c = C_JUNK, .expect = -EBADF },
	{ "core_ctx", "uhmm_sync", "NULL context", p_sync, .c = C_NULL, .expect = -EBADF },
	{ "core_ctx", "uhmm_sync", "destroyed context", p_sync, .c = C_DEAD, .expect = -EBADF },
	{ "core_ctx", "uhmm_sync", "a device handle", p_sync, .c = C_DEVPTR, .expect = -EBADF },
	{ "core_ctx", "uhmm_sync", "never a handle", p_sync, .c = C_JUNK, .expect = -EBADF },

	/* ===== uhmm.h: alloc, free, register, unregister ===== */
	{ "core_range", "uhmm_alloc", "len 0", p_alloc, .len = 0, .expect = -EINVAL },
	{ "core_range", "uhmm_alloc", "NULL out", p_alloc, .len = PG, .flags = R_NULL_OUT, .expect = -EINVAL },
	{ "core_range", "uhmm_alloc", "len SIZE_MAX", p_alloc, .len = SIZE_MAX, .expect = -EINVAL, ALT(-ENOMEM) },
	{ "core_range", "uhmm_alloc", "len wraps when rounded up", p_alloc, .len = SIZE_MAX - PG + 2, .expect = -EINVAL, ALT(-ENOMEM) },
	{ "core_range", "uhmm_alloc", "NULL context", p_alloc, .c = C_NULL, .len = PG, .expect = -EBADF },
	{ "core_range", "uhmm_alloc", "destroyed context", p_alloc, .c = C_DEAD, .len = PG, .expect = -EBADF },
	{ "core_range", "uhmm_alloc", "a device handle", p_alloc, .c = C_DEVPTR, .len = PG, .expect = -EBADF },
	{ "core_range", "uhmm_free", "NULL", p_free, .a = A(B_ZERO, 0), .expect = -EINVAL },
	{ "core_range", "uhmm_free", "unaligned", p_free, .a = A(B_BUF, 1), .expect = -EINVAL },
	{ "core_range", "uhmm_free", "inside an allocation", p_free, .a = A(B_BUF, PG), .expect = -EINVAL },
	{ "core_range", "uhmm_free", "a registered range", p_free, .a = A(B_REG, 0), .expect = -EINVAL },
	{ "core_range", "uhmm_free", "unmanaged memory", p_free, .a = A(B_REGMAP, 0), .expect = -EINVAL },
	{ "core_range", "uhmm_free", "unmapped", p_free, .a = A(B_UNMAPPED, 0), .expect = -EINVAL },
	{ "core_range", "uhmm_free", "top page", p_free, .a = A(B_TOP, 0), .expect = -EINVAL },
	{ "core_range", "uhmm_free", "after the hole of a split allocation", p_free, .a = A(B_BUF2, BUF2_HOLE_END * PG), .expect = -EINVAL },
	{ "core_range", "uhmm_free", "another context's allocation", p_free, .a = A(B_OBUF, 0), .expect = -EINVAL },
	{ "core_range", "uhmm_free", "wrong context", p_free, .c = C_OTHER, .a = A(B_BUF, 0), .expect = -EINVAL },
	{ "core_range", "uhmm_free", "NULL context", p_free, .c = C_NULL, .a = A(B_BUF, 0), .expect = -EBADF },
	{ "core_range", "uhmm_free", "destroyed context", p_free, .c = C_DEAD, .a = A(B_BUF, 0), .expect = -EBADF },
	{ "core_range", "uhmm_free", "a device handle", p_free, .c = C_DEVPTR, .a = A(B_BUF, 0), .expect = -EBADF },
	{ "core_range", "uhmm_register", "NULL addr", p_register, .a = A(B_ZERO, 0), .len = PG, .expect = -EFAULT, ALT(-EINVAL) },
	{ "core_range", "uhmm_register", "unaligned addr", p_register, .a = A(B_REGMAP, 1), .len = PG, .expect = -EINVAL },
	{ "core_range", "uhmm_register", "unaligned len", p_register, .a = A(B_REGMAP, 0), .len = PG + 1, .expect = -EINVAL },
	{ "core_range", "uhmm_register", "len 0", p_register, .a = A(B_REGMAP, 0), .len = 0, .expect = -EINVAL },
	{ "core_range", "uhmm_register", "wraps from the top page", p_register, .a = A(B_TOP, 0), .len = 2 * PG, .expect = -EINVAL },
	{ "core_range", "uhmm_register", "ends exactly at 2^64", p_register, .a = A(B_TOP, 0), .len = PG, .expect = -EINVAL, ALT(-EFAULT) },
	{ "core_range", "uhmm_register", "len wraps", p_register, .a = A(B_REGMAP, 0), .len = WRAPLEN, .expect = -EINVAL },
	{ "core_range", "uhmm_register", "unmanaged into managed", p_register, .a = A(B_REGMAP, (REG_OFF - 2) * PG), .len = 4 * PG, .expect = -EEXIST },
	{ "core_range", "uhmm_register", "managed into unmanaged", p_register, .a = A(B_REG, (REG_PAGES - 2) * PG), .len = 4 * PG, .expect = -EEXIST },
	{ "core_range", "uhmm_register", "an allocation", p_register, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .expect = -EEXIST },
	{ "core_range", "uhmm_register", "mapped into a hole", p_register, .a = A(B_REGMAP, (HOLE_OFF - 2) * PG), .len = 4 * PG, .expect = -EFAULT },
	{ "core_range", "uhmm_register", "unmapped", p_register, .a = A(B_UNMAPPED, 0), .len = 4 * PG, .expect = -EFAULT },
	/* Issue 15: read-only memory is managed (its pages take the no-move path). */
	{ "core_range", "uhmm_register", "read-only", p_register, .a = A(B_RO, 0), .len = SMALL * PG, .expect = 0 },
	{ "core_range", "uhmm_register", "PROT_NONE", p_register, .a = A(B_NONE, 0), .len = SMALL * PG, .expect = -EOPNOTSUPP },
	{ "core_range", "uhmm_register", "shared", p_register, .a = A(B_SHARED, 0), .len = SMALL * PG, .expect = -EOPNOTSUPP },
	{ "core_range", "uhmm_register", "NULL context", p_register, .c = C_NULL, .a = A(B_REGMAP, 0), .len = PG, .expect = -EBADF },
	{ "core_range", "uhmm_register", "destroyed context", p_register, .c = C_DEAD, .a = A(B_REGMAP, 0), .len = PG, .expect = -EBADF },
	{ "core_range", "uhmm_register", "a device handle", p_register, .c = C_DEVPTR, .a = A(B_REGMAP, 0), .len = PG, .expect = -EBADF },
	{ "core_range", "uhmm_unregister", "NULL addr", p_unregister, .a = A(B_ZERO, 0), .len = PG, .expect = -EINVAL },
	{ "core_range", "uhmm_unregister", "unaligned addr", p_unregister, .a = A(B_REG, 1), .len = REG_PAGES * PG, .expect = -EINVAL },
	{ "core_range", "uhmm_unregister", "unaligned len", p_unregister, .a = A(B_REG, 0), .len = REG_PAGES * PG - 1, .expect = -EINVAL },
	{ "core_range", "uhmm_unregister", "len 0", p_unregister, .a = A(B_REG, 0), .len = 0, .expect = -EINVAL },
	{ "core_range", "uhmm_unregister", "wraps", p_unregister, .a = A(B_REG, 0), .len = WRAPLEN, .expect = -EINVAL },
	{ "core_range", "uhmm_unregister", "head only", p_unregister, .a = A(B_REG, 0), .len = PG, .expect = -EINVAL },
	{ "core_range", "uhmm_unregister", "straddles into unmanaged", p_unregister, .a = A(B_REG, 0), .len = (REG_PAGES + 1) * PG, .expect = -EINVAL },
	{ "core_range", "uhmm_unregister", "starts in unmanaged", p_unregister, .a = A(B_REGMAP, (REG_OFF - 1) * PG), .len = (REG_PAGES + 1) * PG, .expect = -EINVAL },
	{ "core_range", "uhmm_unregister", "an allocation", p_unregister, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .expect = -EINVAL },
	{ "core_range", "uhmm_unregister", "wrong context", p_unregister, .c = C_OTHER, .a = A(B_REG, 0), .len = REG_PAGES * PG, .expect = -EINVAL },
	{ "core_range", "uhmm_unregister", "NULL context", p_unregister, .c = C_NULL, .a = A(B_REG, 0), .len = REG_PAGES * PG, .expect = -EBADF },
	{ "core_range", "uhmm_unregister", "destroyed context", p_unregister, .c = C_DEAD, .a = A(B_REG, 0), .len = REG_PAGES * PG, .expect = -EBADF },
	{ "core_range", "uhmm_unregister", "never a handle", p_unregister, .c = C_JUNK, .a = A(B_REG, 0), .len = REG_PAGES * PG, .expect = -EBADF },

	/* ===== uhmm.h: migrate, page query ===== */
	{ "core_migrate", "uhmm_migrate", "NULL addr", p_migrate, .d = D_LIVE, .a = A(B_ZERO, 0), .len = PG, .expect = -EINVAL, ALT(-EFAULT) },
	{ "core_migrate", "uhmm_migrate", "unaligned addr", p_migrate, .d = D_LIVE, .a = A(B_BUF, BUF_DEV * PG + 1), .len = PG, .expect = -EINVAL },
	{ "core_migrate", "uhmm_migrate", "unaligned addr, home", p_migrate, .a = A(B_BUF, PG / 2), .len = PG, .expect = -EINVAL },
	{ "core_migrate", "uhmm_migrate", "unaligned len", p_migrate, .d = D_LIVE, .a = A(B_BUF, BUF_DEV * PG), .len = PG + 1, .expect = -EINVAL },
	{ "core_migrate", "uhmm_migrate", "len 0", p_migrate, .d = D_LIVE, .a = A(B_BUF, BUF_DEV * PG), .len = 0, .expect = -EINVAL },
	{ "core_migrate", "uhmm_migrate", "flags 1", p_migrate, .d = D_LIVE, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .x = 1, .expect = -EINVAL },
	{ "core_migrate", "uhmm_migrate", "flags 1<<31, home", p_migrate, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .x = 1u << 31, .expect = -EINVAL },
	{ "core_migrate", "uhmm_migrate", "wraps from the top page", p_migrate, .d = D_LIVE, .a = A(B_TOP, 0), .len = 2 * PG, .expect = -EINVAL },
	{ "core_migrate", "uhmm_migrate", "ends exactly at 2^64", p_migrate, .a = A(B_TOP, 0), .len = PG, .expect = -EINVAL, ALT(-EFAULT) },
	{ "core_migrate", "uhmm_migrate", "len wraps", p_migrate, .d = D_LIVE, .a = A(B_BUF, 0), .len = WRAPLEN, .expect = -EINVAL },
	{ "core_migrate", "uhmm_migrate", "len wraps, home", p_migrate, .a = A(B_BUF, PG), .len = (uint64_t)0 - PG, .expect = -EINVAL },
	{ "core_migrate", "uhmm_migrate", "managed into unmanaged (reg)", p_migrate, .d = D_LIVE, .a = A(B_REG, 0), .len = (REG_PAGES + 1) * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "unmanaged into managed (reg)", p_migrate, .d = D_LIVE, .a = A(B_REGMAP, (REG_OFF - 1) * PG), .len = 4 * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "device pages into unmanaged, home", p_migrate, .a = A(B_REGMAP, (REG_OFF - 1) * PG), .len = (REG_PAGES + 2) * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "past the end of an allocation", p_migrate, .d = D_LIVE, .a = A(B_BUF, 0), .len = (BUF_PAGES + 1) * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "past the end, home", p_migrate, .a = A(B_BUF, 0), .len = (BUF_PAGES + 1) * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "before the start", p_migrate, .d = D_LIVE, .a = A(B_BUF, -(long)PG), .len = 2 * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "across an unmapped hole", p_migrate, .d = D_LIVE, .a = A(B_BUF2, 0), .len = BUF2_PAGES * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "across an unmapped hole, home", p_migrate, .a = A(B_BUF2, 0), .len = BUF2_PAGES * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "into an unmapped hole", p_migrate, .d = D_LIVE, .a = A(B_BUF2, (BUF2_HOLE - 1) * PG), .len = 2 * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "mapped unmanaged", p_migrate, .d = D_LIVE, .a = A(B_REGMAP, 0), .len = 4 * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "unmapped", p_migrate, .d = D_LIVE, .a = A(B_UNMAPPED, 0), .len = 4 * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "read-only unmanaged", p_migrate, .d = D_LIVE, .a = A(B_RO, 0), .len = SMALL * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "top page", p_migrate, .d = D_LIVE, .a = A(B_TOP, -(long)PG), .len = PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "another context's memory", p_migrate, .d = D_LIVE, .a = A(B_OBUF, 0), .len = OBUF_PAGES * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "wrong context for the memory", p_migrate, .c = C_OTHER, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .expect = -EFAULT },
	{ "core_migrate", "uhmm_migrate", "another context's device", p_migrate, .d = D_FOREIGN, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .expect = -EBADF },
	{ "core_migrate", "uhmm_migrate", "detached device", p_migrate, .d = D_GONE, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .expect = -EBADF },
	{ "core_migrate", "uhmm_migrate", "device of a destroyed context", p_migrate, .d = D_DEADCTX, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .expect = -EBADF },
	{ "core_migrate", "uhmm_migrate", "a context handle as device", p_migrate, .d = D_CTXPTR, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .expect = -EBADF },
	{ "core_migrate", "uhmm_migrate", "never a device", p_migrate, .d = D_JUNK, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .expect = -EBADF },
	{ "core_migrate", "uhmm_migrate", "NULL context", p_migrate, .c = C_NULL, .d = D_LIVE, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .expect = -EBADF },
	{ "core_migrate", "uhmm_migrate", "destroyed context", p_migrate, .c = C_DEAD, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .expect = -EBADF },
	{ "core_migrate", "uhmm_migrate", "a device handle as context", p_migrate, .c = C_DEVPTR, .a = A(B_BUF, 0), .len = BUF_PAGES * PG, .expect = -EBADF },
	{ "core_migrate", "uhmm_page_query", "NULL info", p_page_query, .a = A(B_BUF, 0), .flags = R_NULL_OUT, .expect = -EINVAL },
	{ "core_migrate", "uhmm_page_query", "NULL addr", p_page_query, .a = A(B_ZERO, 0), .expect = -EFAULT },
	{ "core_migrate", "uhmm_page_query", "just past an allocation", p_page_query, .a = A(B_BUF, BUF_PAGES * PG), .expect = -EFAULT },
	{ "core_migrate", "uhmm_page_query", "just before a registered range", p_page_query, .a = A(B_REG, -1), .expect = -EFAULT },
	{ "core_migrate", "uhmm_page_query", "in an unmapped hole", p_page_query, .a = A(B_BUF2, BUF2_HOLE * PG), .expect = -EFAULT },
	{ "core_migrate", "uhmm_page_query", "unmapped", p_page_query, .a = A(B_UNMAPPED, 0), .expect = -EFAULT },
	{ "core_migrate", "uhmm_page_query", "UINTPTR_MAX", p_page_query, .a = A(B_TOP, PG - 1), .expect = -EFAULT },
	{ "core_migrate", "uhmm_page_query", "wrong context", p_page_query, .c = C_OTHER, .a = A(B_BUF, 0), .expect = -EFAULT },
	{ "core_migrate", "uhmm_page_query", "NULL context", p_page_query, .c = C_NULL, .a = A(B_BUF, 0), .expect = -EBADF },
	{ "core_migrate", "uhmm_page_query", "destroyed context", p_page_query, .c = C_DEAD, .a = A(B_BUF, 0), .expect = -EBADF },
	{ "core_migrate", "uhmm_page_query", "never a handle", p_page_query, .c = C_JUNK, .a = A(B_BUF, 0), .expect = -EBADF },

	/* ===== uhmm.h: devices, statistics, strerror ===== */
	{ "core_device", "uhmm_device_attach", "NULL ops", p_attach, .v = AT_NULL_OPS, .expect = -EINVAL },
	{ "core_device", "uhmm_device_attach", "ops without alloc", p_attach, .v = AT_NO_ALLOC, .expect = -EINVAL },
	{ "core_device", "uhmm_device_attach", "ops without free", p_attach, .v = AT_NO_FREE, .expect = -EINVAL },
	{ "core_device", "uhmm_device_attach", "ops without copy_submit", p_attach, .v = AT_NO_SUBMIT, .expect = -EINVAL },
	{ "core_device", "uhmm_device_attach", "ops without copy_wait", p_attach, .v = AT_NO_WAIT, .expect = -EINVAL },
	{ "core_device", "uhmm_device_attach", "NULL out", p_attach, .flags = R_NULL_OUT, .expect = -EINVAL },
	{ "core_device", "uhmm_device_attach", "a 256th device", p_attach, .v = AT_FULL, .expect = -ENOSPC },
	{ "core_device", "uhmm_device_attach", "NULL context", p_attach, .c = C_NULL, .expect = -EBADF },
	{ "core_device", "uhmm_device_attach", "destroyed context", p_attach, .c = C_DEAD, .expect = -EBADF },
	{ "core_device", "uhmm_device_attach", "a device handle as context", p_attach, .c = C_DEVPTR, .expect = -EBADF },
	{ "core_device", "uhmm_device_detach", "NULL", p_detach, .d = D_NULL, .expect = -EBADF },
	{ "core_device", "uhmm_device_detach", "detached", p_detach, .d = D_GONE, .expect = -EBADF },
	{ "core_device", "uhmm_device_detach", "of a destroyed context", p_detach, .d = D_DEADCTX, .expect = -EBADF },
	{ "core_device", "uhmm_device_detach", "a context handle", p_detach, .d = D_CTXPTR, .expect = -EBADF },
	{ "core_device", "uhmm_device_detach", "never a handle", p_detach, .d = D_JUNK, .expect = -EBADF },
	{ "core_device", "uhmm_device_priv", "NULL", p_device_priv, .d = D_NULL, .expect = 0 },
	{ "core_device", "uhmm_device_priv", "detached", p_device_priv, .d = D_GONE, .expect = 0 },
	{ "core_device", "uhmm_device_priv", "of a destroyed context", p_device_priv, .d = D_DEADCTX, .expect = 0 },
	{ "core_device", "uhmm_device_priv", "a context handle", p_device_priv, .d = D_CTXPTR, .expect = 0 },
	{ "core_device", "uhmm_device_name", "NULL", p_device_name, .d = D_NULL, .expect = 0 },
	{ "core_device", "uhmm_device_name", "detached", p_device_name, .d = D_GONE, .expect = 0 },
	{ "core_device", "uhmm_device_name", "of a destroyed context", p_device_name, .d = D_DEADCTX, .expect = 0 },
	{ "core_device", "uhmm_device_name", "never a handle", p_device_name, .d = D_JUNK, .expect = 0 },
	{ "core_device", "uhmm_device_ops_of", "NULL", p_device_ops_of, .d = D_NULL, .expect = 0 },
	{ "core_device", "uhmm_device_ops_of", "detached", p_device_ops_of, .d = D_GONE, .expect = 0 },
	{ "core_device", "uhmm_device_ops_of", "of a destroyed context", p_device_ops_of, .d = D_DEADCTX, .expect = 0 },
	{ "core_device", "uhmm_device_ops_of", "a context handle", p_device_ops_of, .d = D_CTXPTR, .expect = 0 },
	{ "core_device", "uhmm_stats_get", "NULL out", p_stats_get, .flags = R_NULL_OUT, .expect = -EINVAL },
	{ "core_device", "uhmm_stats_get", "NULL context", p_stats_get, .c = C_NULL, .expect = -EBADF },
	{ "core_device", "uhmm_stats_get", "destroyed context", p_stats_get, .c = C_DEAD, .expect = -EBADF },
	{ "core_device", "uhmm_stats_get", "a device handle", p_stats_get, .c = C_DEVPTR, .expect = -EBADF },
	{ "core_device", "uhmm_stats_print", "NULL context", p_stats_print, .c = C_NULL, .expect = -EBADF },
	{ "core_device", "uhmm_stats_print", "destroyed context", p_stats_print, .c = C_DEAD, .expect = -EBADF },
	{ "core_device", "uhmm_stats_print", "never a handle", p_stats_print, .c = C_JUNK, .expect = -EBADF },
	{ "core_device", "uhmm_strerror", "INT_MIN", p_strerror, .x = (uint64_t)(int64_t)INT_MIN, .expect = 0 },
	{ "core_device", "uhmm_strerror", "INT_MAX", p_strerror, .x = (uint64_t)INT_MAX, .expect = 0 },
	{ "core_device", "uhmm_strerror", "a positive errno", p_strerror, .x = EBADF, .expect = 0 },
	{ "core_device", "uhmm_strerror", "-100000", p_strerror, .x = (uint64_t)(int64_t)-100000, .expect = 0 },

	/* ===== mirror.h: notifiers ===== */
	{ "mirror_notifier", "uhmm_notifier_insert", "NULL fn", p_notifier_insert, .a = A(B_BUF, 0), .len = PG, .flags = R_NULL_FN, .expect = -EINVAL },
	{ "mirror_notifier", "uhmm_notifier_insert", "NULL out", p_notifier_insert, .a = A(B_BUF, 0), .len = PG, .flags = R_NULL_OUT, .expect = -EINVAL },
	{ "mirror_notifier", "uhmm_notifier_insert", "len 0", p_notifier_insert, .a = A(B_BUF, 0), .len = 0, .expect = -EINVAL },
	{ "mirror_notifier", "uhmm_notifier_insert", "unaligned start", p_notifier_insert, .a = A(B_BUF, 8), .len = PG, .expect = -EINVAL },
	{ "mirror_notifier", "uhmm_notifier_insert", "unaligned len", p_notifier_insert, .a = A(B_BUF, 0), .len = PG - 8, .expect = -EINVAL },
	{ "mirror_notifier", "uhmm_notifier_insert", "wraps from the top page", p_notifier_insert, .a = A(B_TOP, 0), .len = 2 * PG, .expect = -EINVAL },
	{ "mirror_notifier", "uhmm_notifier_insert", "len wraps", p_notifier_insert, .a = A(B_BUF, 0), .len = WRAPLEN, .expect = -EINVAL },
	{ "mirror_notifier", "uhmm_notifier_insert", "NULL context", p_notifier_insert, .c = C_NULL, .a = A(B_BUF, 0), .len = PG, .expect = -EBADF },
	{ "mirror_notifier", "uhmm_notifier_insert", "destroyed context", p_notifier_insert, .c = C_DEAD, .a = A(B_BUF, 0), .len = PG, .expect = -EBADF },
	{ "mirror_notifier", "uhmm_notifier_insert", "a device handle", p_notifier_insert, .c = C_DEVPTR, .a = A(B_BUF, 0), .len = PG, .expect = -EBADF },
	{ "mirror_notifier", "uhmm_notifier_remove", "NULL", p_notifier_remove, .n = N_NULL, .expect = -EBADF },
	{ "mirror_notifier", "uhmm_notifier_remove", "removed", p_notifier_remove, .n = N_REMOVED, .expect = -EBADF },
	{ "mirror_notifier", "uhmm_notifier_remove", "freed by its context's destroy", p_notifier_remove, .n = N_DEADCTX, .expect = -EBADF },
	{ "mirror_notifier", "uhmm_notifier_remove", "a context handle", p_notifier_remove, .n = N_CTXPTR, .expect = -EBADF },
	{ "mirror_notifier", "uhmm_notifier_remove", "a device handle", p_notifier_remove, .n = N_DEVPTR, .expect = -EBADF },

	/* ===== mirror.h: range fault ===== */
	{ "mirror_range_fault", "uhmm_range_fault", "NULL req", p_range_fault, .flags = R_NULL_OUT, .expect = -EINVAL },
	{ "mirror_range_fault", "uhmm_range_fault", "NULL entries", p_range_fault, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .x = UHMM_RF_FAULT_READ, .flags = R_NULL_ENTRIES, .expect = -EINVAL },
	{ "mirror_range_fault", "uhmm_range_fault", "start == end", p_range_fault, .a = A(B_BUF, PG), .b = A(B_BUF, PG), .expect = -EINVAL },
	{ "mirror_range_fault", "uhmm_range_fault", "start > end", p_range_fault, .a = A(B_BUF, 2 * PG), .b = A(B_BUF, PG), .x = UHMM_RF_FAULT_READ, .expect = -EINVAL },
	{ "mirror_range_fault", "uhmm_range_fault", "start > end, wrapped", p_range_fault, .a = A(B_TOP, 0), .b = A(B_ZERO, PG), .x = UHMM_RF_FAULT_WRITE, .expect = -EINVAL },
	{ "mirror_range_fault", "uhmm_range_fault", "unaligned start", p_range_fault, .a = A(B_BUF, 1), .b = A(B_BUF, PG), .expect = -EINVAL },
	{ "mirror_range_fault", "uhmm_range_fault", "unaligned end", p_range_fault, .a = A(B_BUF, 0), .b = A(B_BUF, PG + 1), .x = UHMM_RF_FAULT_READ, .expect = -EINVAL },
	{ "mirror_range_fault", "uhmm_range_fault", "flags 1<<2", p_range_fault, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .x = 1u << 2, .expect = -EINVAL },
	{ "mirror_range_fault", "uhmm_range_fault", "flags 1<<31", p_range_fault, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .x = 1u << 31 | UHMM_RF_FAULT_READ, .expect = -EINVAL },
	{ "mirror_range_fault", "uhmm_range_fault", "read fault across a hole of managed memory", p_range_fault, .a = A(B_BUF2, 0), .b = A(B_BUF2, BUF2_PAGES * PG), .x = UHMM_RF_FAULT_READ, .expect = -EFAULT },
	{ "mirror_range_fault", "uhmm_range_fault", "write fault across a hole of managed memory", p_range_fault, .a = A(B_BUF2, 0), .b = A(B_BUF2, BUF2_PAGES * PG), .x = UHMM_RF_FAULT_WRITE, .expect = -EFAULT },
	{ "mirror_range_fault", "uhmm_range_fault", "read fault from managed into unmapped", p_range_fault, .a = A(B_BUF2, (BUF2_HOLE - 2) * PG), .b = A(B_BUF2, (BUF2_HOLE + 2) * PG), .x = UHMM_RF_FAULT_READ, .expect = -EFAULT },
	{ "mirror_range_fault", "uhmm_range_fault", "read fault into a hole", p_range_fault, .a = A(B_REGMAP, (HOLE_OFF - 2) * PG), .b = A(B_REGMAP, (HOLE_OFF + 2) * PG), .x = UHMM_RF_FAULT_READ, .expect = -EFAULT },
	{ "mirror_range_fault", "uhmm_range_fault", "read fault on PROT_NONE", p_range_fault, .a = A(B_NONE, 0), .b = A(B_NONE, SMALL * PG), .x = UHMM_RF_FAULT_READ, .expect = -EFAULT },
	{ "mirror_range_fault", "uhmm_range_fault", "write fault on read-only", p_range_fault, .a = A(B_RO, 0), .b = A(B_RO, SMALL * PG), .x = UHMM_RF_FAULT_WRITE, .expect = -EPERM },
	{ "mirror_range_fault", "uhmm_range_fault", "snapshot across a hole succeeds", p_range_fault, .a = A(B_BUF2, 0), .b = A(B_BUF2, BUF2_PAGES * PG), .v = BUF2_HOLE, .expect = 0 },
	{ "mirror_range_fault", "uhmm_range_fault", "another context's device", p_range_fault, .d = D_FOREIGN, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .x = UHMM_RF_FAULT_READ, .expect = -EBADF },
	{ "mirror_range_fault", "uhmm_range_fault", "detached device", p_range_fault, .d = D_GONE, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .x = UHMM_RF_FAULT_READ, .expect = -EBADF },
	{ "mirror_range_fault", "uhmm_range_fault", "device of a destroyed context", p_range_fault, .d = D_DEADCTX, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .expect = -EBADF },
	{ "mirror_range_fault", "uhmm_range_fault", "a context handle as device", p_range_fault, .d = D_CTXPTR, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .expect = -EBADF },
	{ "mirror_range_fault", "uhmm_range_fault", "removed notifier", p_range_fault, .n = N_REMOVED, .d = D_LIVE, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .x = UHMM_RF_FAULT_READ, .expect = -EINVAL, ALT(-EBADF) },
	{ "mirror_range_fault", "uhmm_range_fault", "notifier freed by its context's destroy", p_range_fault, .n = N_DEADCTX, .d = D_LIVE, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .expect = -EINVAL, ALT(-EBADF) },
	{ "mirror_range_fault", "uhmm_range_fault", "a context handle as notifier", p_range_fault, .n = N_CTXPTR, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .expect = -EINVAL, ALT(-EBADF) },
	{ "mirror_range_fault", "uhmm_range_fault", "NULL context", p_range_fault, .c = C_NULL, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .expect = -EBADF },
	{ "mirror_range_fault", "uhmm_range_fault", "destroyed context", p_range_fault, .c = C_DEAD, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .x = UHMM_RF_FAULT_READ, .expect = -EBADF },
	{ "mirror_range_fault", "uhmm_range_fault", "a device handle as context", p_range_fault, .c = C_DEVPTR, .a = A(B_BUF, 0), .b = A(B_BUF, PG), .expect = -EBADF },

	/* ===== mirror.h: device-exclusive access, mprotect ===== */
	{ "mirror_exclusive", "uhmm_make_exclusive", "NULL addr", p_make_exclusive, .d = D_LIVE, .a = A(B_ZERO, 0), .len = 1, .expect = -EINVAL, ALT(-EFAULT) },
	{ "mirror_exclusive", "uhmm_make_exclusive", "unaligned addr", p_make_exclusive, .d = D_LIVE, .a = A(B_BUF, BUF_DEV * PG + 4), .len = 1, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_make_exclusive", "npages 0", p_make_exclusive, .d = D_LIVE, .a = A(B_BUF, BUF_DEV * PG), .len = 0, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_make_exclusive", "npages SIZE_MAX", p_make_exclusive, .d = D_LIVE, .a = A(B_BUF, 0), .len = SIZE_MAX, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_make_exclusive", "npages whose bytes wrap", p_make_exclusive, .d = D_LIVE, .a = A(B_BUF, 0), .len = SIZE_MAX / PG, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_make_exclusive", "wraps from the top page", p_make_exclusive, .d = D_LIVE, .a = A(B_TOP, 0), .len = 2, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_make_exclusive", "managed into unmanaged", p_make_exclusive, .d = D_LIVE, .a = A(B_REG, (REG_PAGES - 1) * PG), .len = 2, .expect = -EFAULT },
	{ "mirror_exclusive", "uhmm_make_exclusive", "unmanaged into managed", p_make_exclusive, .d = D_LIVE, .a = A(B_REGMAP, (REG_OFF - 1) * PG), .len = 2, .expect = -EFAULT },
	{ "mirror_exclusive", "uhmm_make_exclusive", "across an unmapped hole", p_make_exclusive, .d = D_LIVE, .a = A(B_BUF2, 0), .len = BUF2_PAGES, .expect = -EFAULT },
	{ "mirror_exclusive", "uhmm_make_exclusive", "mapped unmanaged", p_make_exclusive, .d = D_LIVE, .a = A(B_REGMAP, 0), .len = 4, .expect = -EFAULT },
	{ "mirror_exclusive", "uhmm_make_exclusive", "unmapped", p_make_exclusive, .d = D_LIVE, .a = A(B_UNMAPPED, 0), .len = 4, .expect = -EFAULT },
	{ "mirror_exclusive", "uhmm_make_exclusive", "shared memory", p_make_exclusive, .d = D_LIVE, .a = A(B_SHARED, 0), .len = SMALL, .expect = -EOPNOTSUPP },
	{ "mirror_exclusive", "uhmm_make_exclusive", "another context's device", p_make_exclusive, .d = D_FOREIGN, .a = A(B_BUF, BUF_DEV * PG), .len = 4, .expect = -EFAULT },
	{ "mirror_exclusive", "uhmm_make_exclusive", "NULL device", p_make_exclusive, .d = D_NULL, .a = A(B_BUF, BUF_DEV * PG), .len = 4, .expect = -EBADF },
	{ "mirror_exclusive", "uhmm_make_exclusive", "detached device", p_make_exclusive, .d = D_GONE, .a = A(B_BUF, BUF_DEV * PG), .len = 4, .expect = -EBADF },
	{ "mirror_exclusive", "uhmm_make_exclusive", "device of a destroyed context", p_make_exclusive, .d = D_DEADCTX, .a = A(B_BUF, BUF_DEV * PG), .len = 4, .expect = -EBADF },
	{ "mirror_exclusive", "uhmm_make_exclusive", "a context handle", p_make_exclusive, .d = D_CTXPTR, .a = A(B_BUF, BUF_DEV * PG), .len = 4, .expect = -EBADF },
	{ "mirror_exclusive", "uhmm_check_exclusive", "NULL addr", p_check_exclusive, .d = D_LIVE, .a = A(B_ZERO, 0), .len = 1, .expect = -EINVAL, ALT(-EFAULT) },
	{ "mirror_exclusive", "uhmm_check_exclusive", "unaligned addr", p_check_exclusive, .d = D_LIVE, .a = A(B_BUF, 4), .len = 1, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_check_exclusive", "npages 0", p_check_exclusive, .d = D_LIVE, .a = A(B_BUF, 0), .len = 0, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_check_exclusive", "wraps from the top page", p_check_exclusive, .d = D_LIVE, .a = A(B_TOP, 0), .len = 2, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_check_exclusive", "npages SIZE_MAX", p_check_exclusive, .d = D_LIVE, .a = A(B_BUF, 0), .len = SIZE_MAX, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_check_exclusive", "unmanaged into managed", p_check_exclusive, .d = D_LIVE, .a = A(B_REGMAP, (REG_OFF - 1) * PG), .len = 2, .expect = -EFAULT },
	/* Managed first: "some page is not held" (0) is as true as -EFAULT. */
	{ "mirror_exclusive", "uhmm_check_exclusive", "managed into unmanaged", p_check_exclusive, .d = D_LIVE, .a = A(B_BUF, (BUF_PAGES - 1) * PG), .len = 2, .expect = -EFAULT, ALT(0) },
	{ "mirror_exclusive", "uhmm_check_exclusive", "unmapped", p_check_exclusive, .d = D_LIVE, .a = A(B_UNMAPPED, 0), .len = 2, .expect = -EFAULT },
	{ "mirror_exclusive", "uhmm_check_exclusive", "NULL device", p_check_exclusive, .d = D_NULL, .a = A(B_BUF, 0), .len = 1, .expect = -EBADF },
	{ "mirror_exclusive", "uhmm_check_exclusive", "detached device", p_check_exclusive, .d = D_GONE, .a = A(B_BUF, 0), .len = 1, .expect = -EBADF },
	{ "mirror_exclusive", "uhmm_check_exclusive", "device of a destroyed context", p_check_exclusive, .d = D_DEADCTX, .a = A(B_BUF, 0), .len = 1, .expect = -EBADF },
	{ "mirror_exclusive", "uhmm_check_exclusive", "never a handle", p_check_exclusive, .d = D_JUNK, .a = A(B_BUF, 0), .len = 1, .expect = -EBADF },
	{ "mirror_exclusive", "uhmm_mprotect", "len 0", p_mprotect, .a = A(B_BUF, 0), .len = 0, .v = RW, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_mprotect", "unaligned addr", p_mprotect, .a = A(B_BUF, 1), .len = PG, .v = RW, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_mprotect", "unaligned len", p_mprotect, .a = A(B_BUF, 0), .len = PG + 1, .v = RW, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_mprotect", "wraps from the top page", p_mprotect, .a = A(B_TOP, 0), .len = 2 * PG, .v = RW, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_mprotect", "len wraps", p_mprotect, .a = A(B_BUF, 0), .len = WRAPLEN, .v = RW, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_mprotect", "bad prot", p_mprotect, .a = A(B_BUF, 0), .len = PG, .v = 0x7ff0, .expect = -EINVAL },
	{ "mirror_exclusive", "uhmm_mprotect", "mapped into a hole (mprotect's ENOMEM)", p_mprotect, .a = A(B_REGMAP, (HOLE_OFF - 1) * PG), .len = 2 * PG, .v = RW, .expect = -ENOMEM },
	{ "mirror_exclusive", "uhmm_mprotect", "managed across a hole", p_mprotect, .a = A(B_BUF2, 0), .len = BUF2_PAGES * PG, .v = RW, .expect = -ENOMEM },
	{ "mirror_exclusive", "uhmm_mprotect", "NULL context", p_mprotect, .c = C_NULL, .a = A(B_BUF, 0), .len = PG, .v = RW, .expect = -EBADF },
	{ "mirror_exclusive", "uhmm_mprotect", "destroyed context", p_mprotect, .c = C_DEAD, .a = A(B_BUF, 0), .len = PG, .v = RW, .expect = -EBADF },
	{ "mirror_exclusive", "uhmm_mprotect", "a device handle", p_mprotect, .c = C_DEVPTR, .a = A(B_BUF, 0), .len = PG, .v = RW, .expect = -EBADF },

	/* ===== simdev.h: creation, info, injection, advice ===== */
	{ "simdev_device", "uhmm_simdev_opts_init", "NULL opts", p_simdev_opts_init, .expect = 0 },
	{ "simdev_device", "uhmm_simdev_create", "NULL out", p_simdev_create, .flags = R_NULL_OUT, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "NULL context", p_simdev_create, .c = C_NULL, .expect = -EBADF },
	{ "simdev_device", "uhmm_simdev_create", "destroyed context", p_simdev_create, .c = C_DEAD, .expect = -EBADF },
	{ "simdev_device", "uhmm_simdev_create", "a device handle as context", p_simdev_create, .c = C_DEVPTR, .expect = -EBADF },
	{ "simdev_device", "uhmm_simdev_create", "never a handle", p_simdev_create, .c = C_JUNK, .expect = -EBADF },
	{ "simdev_device", "uhmm_simdev_create", "opts.size 0", p_simdev_create, .v = SO_SIZE, .x = 0, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "mem_bytes 0", p_simdev_create, .v = SO_MEM, .x = 0, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "mem_bytes 2 MiB + 4 KiB", p_simdev_create, .v = SO_MEM, .x = 2 * MiB + PG, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "mem_bytes 2^62", p_simdev_create, .v = SO_MEM, .x = 1ull << 62, .expect = -ENOMEM, ALT(-EINVAL) },
	{ "simdev_device", "uhmm_simdev_create", "copy_threads 0", p_simdev_create, .v = SO_THREADS, .x = 0, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "copy_threads 9", p_simdev_create, .v = SO_THREADS, .x = 9, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "bandwidth -1", p_simdev_create, .v = SO_BW, .x = 1, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "bandwidth NaN", p_simdev_create, .v = SO_BW, .x = 2, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "bandwidth -inf", p_simdev_create, .v = SO_BW, .x = 3, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "compute_units 0", p_simdev_create, .v = SO_CU, .x = 0, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "compute_units 17", p_simdev_create, .v = SO_CU, .x = 17, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "lanes_per_cu 0", p_simdev_create, .v = SO_LANES, .x = 0, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "lanes_per_cu 65", p_simdev_create, .v = SO_LANES, .x = 65, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "fault_batch 0", p_simdev_create, .v = SO_FB, .x = 0, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "fault_batch 4097", p_simdev_create, .v = SO_FB, .x = 4097, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "tlb_entries 0", p_simdev_create, .v = SO_TLB, .x = 0, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "tlb_entries 3", p_simdev_create, .v = SO_TLB, .x = 3, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_create", "tlb_entries 8192", p_simdev_create, .v = SO_TLB, .x = 8192, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_meminfo", "NULL out", p_simdev_meminfo, .d = D_LIVE, .flags = R_NULL_OUT, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_meminfo", "NULL device", p_simdev_meminfo, .d = D_NULL, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_meminfo", "detached", p_simdev_meminfo, .d = D_GONE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_meminfo", "of a destroyed context", p_simdev_meminfo, .d = D_DEADCTX, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_meminfo", "another backend's device", p_simdev_meminfo, .d = D_STUB, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_meminfo", "a context handle", p_simdev_meminfo, .d = D_CTXPTR, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_inject", "what 0", p_simdev_inject, .d = D_LIVE, .v = 0, .x = 1, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_inject", "what 99", p_simdev_inject, .d = D_LIVE, .v = 99, .x = 1, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_inject", "what -1", p_simdev_inject, .d = D_LIVE, .v = -1, .x = 1, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_inject", "NULL device", p_simdev_inject, .d = D_NULL, .v = UHMM_SIMDEV_FAIL_COPY, .x = 1, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_inject", "detached", p_simdev_inject, .d = D_GONE, .v = UHMM_SIMDEV_FAIL_COPY, .x = 1, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_inject", "another backend's device", p_simdev_inject, .d = D_STUB, .v = UHMM_SIMDEV_FAIL_ALLOC, .x = 1, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_stats", "NULL out", p_simdev_stats, .d = D_LIVE, .flags = R_NULL_OUT, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_stats", "NULL device", p_simdev_stats, .d = D_NULL, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_stats", "detached", p_simdev_stats, .d = D_GONE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_stats", "of a destroyed context", p_simdev_stats, .d = D_DEADCTX, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_stats", "another backend's device", p_simdev_stats, .d = D_STUB, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise", "len 0", p_simdev_advise, .d = D_LIVE, .a = A(B_BUF, 0), .len = 0, .v = UHMM_SIMDEV_MAP_REMOTE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise", "unaligned addr", p_simdev_advise, .d = D_LIVE, .a = A(B_BUF, 1), .len = PG, .v = UHMM_SIMDEV_MAP_REMOTE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise", "unaligned len", p_simdev_advise, .d = D_LIVE, .a = A(B_BUF, 0), .len = 3, .v = UHMM_SIMDEV_MAP_REMOTE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise", "wraps from the top page", p_simdev_advise, .d = D_LIVE, .a = A(B_TOP, 0), .len = 2 * PG, .v = UHMM_SIMDEV_MAP_REMOTE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise", "advice 2", p_simdev_advise, .d = D_LIVE, .a = A(B_BUF, 0), .len = PG, .v = 2, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise", "advice -1", p_simdev_advise, .d = D_LIVE, .a = A(B_BUF, 0), .len = PG, .v = -1, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise", "NULL device", p_simdev_advise, .d = D_NULL, .a = A(B_BUF, 0), .len = PG, .v = UHMM_SIMDEV_MAP_REMOTE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise", "detached", p_simdev_advise, .d = D_GONE, .a = A(B_BUF, 0), .len = PG, .v = UHMM_SIMDEV_MAP_REMOTE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise", "another backend's device", p_simdev_advise, .d = D_STUB, .a = A(B_BUF, 0), .len = PG, .v = UHMM_SIMDEV_MAP_REMOTE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise_atomics", "len 0", p_simdev_advise_atomics, .d = D_LIVE, .a = A(B_BUF, 0), .len = 0, .v = UHMM_SIMDEV_ATOMIC_MIGRATE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise_atomics", "unaligned addr", p_simdev_advise_atomics, .d = D_LIVE, .a = A(B_BUF, 1), .len = PG, .v = UHMM_SIMDEV_ATOMIC_MIGRATE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise_atomics", "len wraps", p_simdev_advise_atomics, .d = D_LIVE, .a = A(B_BUF, 0), .len = WRAPLEN, .v = UHMM_SIMDEV_ATOMIC_MIGRATE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise_atomics", "policy 3", p_simdev_advise_atomics, .d = D_LIVE, .a = A(B_BUF, 0), .len = PG, .v = 3, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise_atomics", "policy INT_MIN", p_simdev_advise_atomics, .d = D_LIVE, .a = A(B_BUF, 0), .len = PG, .v = INT_MIN, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise_atomics", "detached", p_simdev_advise_atomics, .d = D_GONE, .a = A(B_BUF, 0), .len = PG, .v = UHMM_SIMDEV_ATOMIC_MIGRATE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise_atomics", "of a destroyed context", p_simdev_advise_atomics, .d = D_DEADCTX, .a = A(B_BUF, 0), .len = PG, .v = UHMM_SIMDEV_ATOMIC_MIGRATE, .expect = -EINVAL },
	{ "simdev_device", "uhmm_simdev_advise_atomics", "a context handle", p_simdev_advise_atomics, .d = D_CTXPTR, .a = A(B_BUF, 0), .len = PG, .v = UHMM_SIMDEV_ATOMIC_MIGRATE, .expect = -EINVAL },

	/* ===== simdev.h: launch and the accessors inside kernels ===== */
	{ "simdev_launch", "uhmm_simdev_launch", "NULL kernel", p_launch, .d = D_LIVE, .flags = R_NULL_FN, .expect = -EINVAL },
	{ "simdev_launch", "uhmm_simdev_launch", "NULL device", p_launch, .d = D_NULL, .expect = -EINVAL },
	{ "simdev_launch", "uhmm_simdev_launch", "detached device", p_launch, .d = D_GONE, .expect = -EINVAL },
	{ "simdev_launch", "uhmm_simdev_launch", "device of a destroyed context", p_launch, .d = D_DEADCTX, .expect = -EINVAL },
	{ "simdev_launch", "uhmm_simdev_launch", "another backend's device", p_launch, .d = D_STUB, .expect = -EINVAL },
	{ "simdev_launch", "uhmm_simdev_launch", "a context handle", p_launch, .d = D_CTXPTR, .expect = -EINVAL },
	{ "simdev_launch", "uhmm_simdev_launch", "from inside a kernel", p_launch, .d = D_LIVE, .v = K_NESTED, .expect = -EINVAL },
	{ "simdev_launch", "uhmm_simdev_launch", "while another launch runs", p_launch, .d = D_LIVE, .v = K_SPIN, .expect = -EBUSY },
	{ "simdev_launch", "uhmm_simdev_ld8", "NULL", p_launch, .d = D_LIVE, .v = K_LD8, .a = A(B_ZERO, 0), .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_ld16", "unaligned", p_launch, .d = D_LIVE, .v = K_LD16, .a = A(B_BUF, BUF_DEV * PG + 1), .expect = -EINVAL },
	{ "simdev_launch", "uhmm_simdev_ld32", "unaligned, device page", p_launch, .d = D_LIVE, .v = K_LD32, .a = A(B_BUF, 2), .expect = -EINVAL },
	{ "simdev_launch", "uhmm_simdev_ld64", "UINTPTR_MAX - 7", p_launch, .d = D_LIVE, .v = K_LD64, .a = A(B_TOP, PG - 8), .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_ld32", "unmapped hole", p_launch, .d = D_LIVE, .v = K_LD32, .a = A(B_HOLE, 0), .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_ld32", "PROT_NONE", p_launch, .d = D_LIVE, .v = K_LD32, .a = A(B_NONE, 0), .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_ld64", "hole of a managed allocation", p_launch, .d = D_LIVE, .v = K_LD64, .a = A(B_BUF2, BUF2_HOLE * PG), .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_st8", "NULL", p_launch, .d = D_LIVE, .v = K_ST8, .a = A(B_ZERO, 0), .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_st16", "read-only", p_launch, .d = D_LIVE, .v = K_ST16, .a = A(B_RO, 0), .expect = -EPERM },
	{ "simdev_launch", "uhmm_simdev_st32", "unaligned", p_launch, .d = D_LIVE, .v = K_ST32, .a = A(B_BUF, 6), .expect = -EINVAL },
	{ "simdev_launch", "uhmm_simdev_st64", "unmapped hole", p_launch, .d = D_LIVE, .v = K_ST64, .a = A(B_HOLE, 8), .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_copy", "length wraps", p_launch, .d = D_LIVE, .v = K_COPY, .a = A(B_REGMAP, 0), .b = A(B_REGMAP, PG), .len = SIZE_MAX, .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_copy", "from a hole", p_launch, .d = D_LIVE, .v = K_COPY, .a = A(B_REGMAP, 0), .b = A(B_HOLE, 0), .len = 64, .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_copy", "to read-only", p_launch, .d = D_LIVE, .v = K_COPY, .a = A(B_RO, 0), .b = A(B_REGMAP, 0), .len = 64, .expect = -EPERM },
	{ "simdev_launch", "uhmm_simdev_copy", "NULL destination", p_launch, .d = D_LIVE, .v = K_COPY, .a = A(B_ZERO, 0), .b = A(B_REGMAP, 0), .len = 8, .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_atomic_add32", "unmanaged memory", p_launch, .d = D_LIVE, .v = K_ADD32, .a = A(B_REGMAP, 0), .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_atomic_add64", "unaligned", p_launch, .d = D_LIVE, .v = K_ADD64, .a = A(B_BUF, 4), .expect = -EINVAL },
	{ "simdev_launch", "uhmm_simdev_atomic_xchg32", "read-only", p_launch, .d = D_LIVE, .v = K_XCHG32, .a = A(B_RO, 0), .expect = -EPERM, ALT(-EFAULT) },
	{ "simdev_launch", "uhmm_simdev_atomic_xchg64", "unmapped hole", p_launch, .d = D_LIVE, .v = K_XCHG64, .a = A(B_HOLE, 0), .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_atomic_cas32", "NULL", p_launch, .d = D_LIVE, .v = K_CAS32, .a = A(B_ZERO, 0), .expect = -EFAULT },
	{ "simdev_launch", "uhmm_simdev_atomic_cas64", "PROT_NONE", p_launch, .d = D_LIVE, .v = K_CAS64, .a = A(B_NONE, 0), .expect = -EFAULT },

	/* ===== simdev.h: the accessors outside a kernel abort (in a child) ===== */
	{ "simdev_accessors", "uhmm_simdev_ld8", "NULL work item", p_accessor_outside, .v = K_LD8, .x = 0, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_ld16", "junk work item", p_accessor_outside, .v = K_LD16, .x = 1, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_ld32", "work item of a finished launch", p_accessor_outside, .v = K_LD32, .x = 2, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_ld64", "NULL work item", p_accessor_outside, .v = K_LD64, .x = 0, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_st8", "junk work item", p_accessor_outside, .v = K_ST8, .x = 1, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_st16", "NULL work item", p_accessor_outside, .v = K_ST16, .x = 0, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_st32", "work item of a finished launch", p_accessor_outside, .v = K_ST32, .x = 2, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_st64", "NULL work item", p_accessor_outside, .v = K_ST64, .x = 0, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_copy", "NULL work item", p_accessor_outside, .v = K_COPY, .x = 0, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_atomic_add32", "junk work item", p_accessor_outside, .v = K_ADD32, .x = 1, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_atomic_add64", "NULL work item", p_accessor_outside, .v = K_ADD64, .x = 0, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_atomic_xchg32", "NULL work item", p_accessor_outside, .v = K_XCHG32, .x = 0, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_atomic_xchg64", "work item of a finished launch", p_accessor_outside, .v = K_XCHG64, .x = 2, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_atomic_cas32", "NULL work item", p_accessor_outside, .v = K_CAS32, .x = 0, .flags = R_NOFX, .expect = 0 },
	{ "simdev_accessors", "uhmm_simdev_atomic_cas64", "junk work item", p_accessor_outside, .v = K_CAS64, .x = 1, .flags = R_NOFX, .expect = 0 },

	/* ===== dmirror.h (libuhmm-dmirror, through dlopen) ===== */
	{ "dmirror", "uhmm_dmirror_open", "devnum -1", p_dm_open, .v = -1, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_open", "devnum 4", p_dm_open, .v = 4, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_open", "devnum INT_MAX", p_dm_open, .v = INT_MAX, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_open", "device-coherent 2", p_dm_open, .v = 2, .flags = R_DMFX, .expect = 0 },
	{ "dmirror", "uhmm_dmirror_open", "device-coherent 3", p_dm_open, .v = 3, .flags = R_DMFX, .expect = 0 },
	{ "dmirror", "uhmm_dmirror_open", "NULL out", p_dm_open, .v = 0, .flags = R_DMFX | R_NULL_OUT, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_cmd", "NULL handle", p_dm_cmd, .n = N_NULL, .v = UHMM_DMIRROR_READ, .a = A(B_DMBUF, 0), .b = A(B_DMPTR, 0), .len = 1, .flags = R_DMFX, .expect = -EBADF },
	{ "dmirror", "uhmm_dmirror_cmd", "closed handle", p_dm_cmd, .n = N_REMOVED, .v = UHMM_DMIRROR_READ, .a = A(B_DMBUF, 0), .b = A(B_DMPTR, 0), .len = 1, .flags = R_DMFX, .expect = -EBADF },
	{ "dmirror", "uhmm_dmirror_cmd", "never a handle", p_dm_cmd, .n = N_CTXPTR, .v = UHMM_DMIRROR_READ, .a = A(B_DMBUF, 0), .b = A(B_DMPTR, 0), .len = 1, .flags = R_DMFX, .expect = -EBADF },
	{ "dmirror", "uhmm_dmirror_cmd", "NULL cmd", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_READ, .flags = R_DMFX | R_NULL_OUT, .expect = -EFAULT },
	{ "dmirror", "uhmm_dmirror_cmd", "request 10", p_dm_cmd, .n = N_LIVE, .v = 10, .a = A(B_DMBUF, 0), .b = A(B_DMPTR, 0), .len = 1, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_cmd", "request UINT_MAX", p_dm_cmd, .n = N_LIVE, .v = -1, .a = A(B_DMBUF, 0), .b = A(B_DMPTR, 0), .len = 1, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_cmd", "MIGRATE_TO_DEV unaligned", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_MIGRATE_TO_DEV, .a = A(B_DMBUF, 8 * PG + 8), .b = A(B_DMPTR, 0), .len = 1, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_cmd", "MIGRATE_TO_DEV npages 0", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_MIGRATE_TO_DEV, .a = A(B_DMBUF, 8 * PG), .b = A(B_DMPTR, 0), .len = 0, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_cmd", "MIGRATE_TO_SYS wraps", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_MIGRATE_TO_SYS, .a = A(B_TOP, 0), .b = A(B_DMPTR, 0), .len = 2, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_cmd", "READ npages 2^60", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_READ, .a = A(B_DMBUF, 0), .b = A(B_DMPTR, 0), .len = 1ull << 60, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_cmd", "READ of a hole", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_READ, .a = A(B_UNMAPPED, 0), .b = A(B_DMPTR, 0), .len = 2, .flags = R_DMFX, .expect = -EFAULT },
	{ "dmirror", "uhmm_dmirror_cmd", "READ into read-only ptr", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_READ, .a = A(B_DMBUF, 0), .b = A(B_RO, 0), .len = 2, .flags = R_DMFX, .expect = -EFAULT },
	{ "dmirror", "uhmm_dmirror_cmd", "WRITE from a NULL ptr", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_WRITE, .a = A(B_DMBUF, 0), .b = A(B_ZERO, 0), .len = 2, .flags = R_DMFX, .expect = -EFAULT },
	{ "dmirror", "uhmm_dmirror_cmd", "WRITE to read-only", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_WRITE, .a = A(B_RO, 0), .b = A(B_DMPTR, 0), .len = 2, .flags = R_DMFX, .expect = -EPERM },
	{ "dmirror", "uhmm_dmirror_cmd", "WRITE into a hole", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_WRITE, .a = A(B_UNMAPPED, 0), .b = A(B_DMPTR, 0), .len = 2, .flags = R_DMFX, .expect = -EFAULT },
	{ "dmirror", "uhmm_dmirror_cmd", "MIGRATE_TO_DEV of a hole", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_MIGRATE_TO_DEV, .a = A(B_UNMAPPED, 0), .b = A(B_DMPTR, 0), .len = 2, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_cmd", "MIGRATE_TO_DEV of shared memory", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_MIGRATE_TO_DEV, .a = A(B_SHARED, 0), .b = A(B_DMPTR, 0), .len = 2, .flags = R_DMFX, .expect = -ENOENT },
	/* Read-only memory cannot be managed: "-EFAULT memory that cannot be
	 * managed" is as documented as -EPERM. */
	{ "dmirror", "uhmm_dmirror_cmd", "EXCLUSIVE of read-only", p_dm_cmd, .n = N_LIVE, .v = UHMM_DMIRROR_EXCLUSIVE, .a = A(B_RO, 0), .b = A(B_DMPTR, 0), .len = 2, .expect = -EPERM, ALTF(-EFAULT, R_DMFX) },
	{ "dmirror", "uhmm_dmirror_map", "NULL out", p_dm_map, .n = N_LIVE, .len = PG, .x = RW, .v = MAP_PRIVATE, .flags = R_DMFX | R_NULL_OUT, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_map", "len 0", p_dm_map, .n = N_LIVE, .len = 0, .x = RW, .v = MAP_PRIVATE, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_map", "neither shared nor private", p_dm_map, .n = N_LIVE, .len = PG, .x = RW, .v = 0, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_map", "NULL handle", p_dm_map, .n = N_NULL, .len = PG, .x = RW, .v = MAP_PRIVATE, .flags = R_DMFX, .expect = -EBADF },
	{ "dmirror", "uhmm_dmirror_map", "closed handle", p_dm_map, .n = N_REMOVED, .len = PG, .x = RW, .v = MAP_PRIVATE, .flags = R_DMFX, .expect = -EBADF },
	{ "dmirror", "uhmm_dmirror_mprotect", "unaligned", p_dm_mprotect, .a = A(B_DMBUF, 1), .len = PG, .v = RW, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_mprotect", "into a hole", p_dm_mprotect, .a = A(B_REGMAP, (HOLE_OFF - 1) * PG), .len = 2 * PG, .v = RW, .flags = R_DMFX, .expect = -ENOMEM },
	{ "dmirror", "uhmm_dmirror_mprotect", "wraps", p_dm_mprotect, .a = A(B_TOP, 0), .len = 2 * PG, .v = RW, .expect = -EINVAL, ALTF(-ENOMEM, R_DMFX) },
	{ "dmirror", "uhmm_dmirror_mprotect", "bad prot", p_dm_mprotect, .a = A(B_DMBUF, 0), .len = PG, .v = 0x7ff0, .flags = R_DMFX, .expect = -EINVAL },
	{ "dmirror", "uhmm_dmirror_close", "NULL", p_dm_close, .n = N_NULL, .flags = R_DMFX, .expect = -EBADF },
	{ "dmirror", "uhmm_dmirror_close", "closed", p_dm_close, .n = N_REMOVED, .flags = R_DMFX, .expect = -EBADF },
	{ "dmirror", "uhmm_dmirror_close", "never a handle", p_dm_close, .n = N_CTXPTR, .flags = R_DMFX, .expect = -EBADF },
	{ "dmirror", "uhmm_dmirror_shutdown", "a handle still open", p_dm_shutdown, .flags = R_DMFX, .expect = -EBUSY },

	/* ===== concurrent destroy / detach (each its own ctest entry) ===== */
	{ "race_destroy_migrate", "uhmm_migrate", "loop vs uhmm_ctx_destroy", p_race, .v = RACE_MIGRATE, .x = KILL_DESTROY, .flags = R_NOFX, .expect = 0 },
	{ "race_destroy_range_fault", "uhmm_range_fault", "loop vs uhmm_ctx_destroy", p_race, .v = RACE_RANGE_FAULT, .x = KILL_DESTROY, .flags = R_NOFX, .expect = 0 },
	{ "race_destroy_launch", "uhmm_simdev_launch", "loop vs uhmm_ctx_destroy", p_race, .v = RACE_LAUNCH, .x = KILL_DESTROY, .flags = R_NOFX, .expect = 0 },
	{ "race_detach_migrate", "uhmm_migrate", "loop vs uhmm_device_detach", p_race, .v = RACE_MIGRATE, .x = KILL_DETACH, .flags = R_NOFX, .expect = 0 },
	{ "race_detach_range_fault", "uhmm_range_fault", "loop vs uhmm_device_detach", p_race, .v = RACE_RANGE_FAULT, .x = KILL_DETACH, .flags = R_NOFX, .expect = 0 },
	{ "race_detach_launch", "uhmm_simdev_launch", "loop vs uhmm_device_detach", p_race, .v = RACE_LAUNCH, .x = KILL_DETACH, .flags = R_NOFX, .expect = 0 },
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

/* ---- the runner ------------------------------------------------------------------ */

static const struct row *volatile cur_row;

static void watchdog(int sig)
{
	(void)sig;
	const struct row *r = cur_row;
	static const char msg[] = "\nhostile: row hangs: ";
	ssize_t w = write(2, msg, sizeof(msg) - 1);
	if (r) {
		w = write(2, r->call, strlen(r->call));
		w = write(2, ": ", 2);
		w = write(2, r->what, strlen(r->what));
	}
	w = write(2, "\n", 1);
	(void)w;
	_exit(3);
}

static const char *errname(long e, char *buf, size_t n)
{
	if (e == OUT_CLOBBERED)
		return "failed but wrote its out argument";
	if (e == NOT_ABORTED)
		return "returned instead of aborting";
	if (e == CHECK_FAILED)
		return "check failed (above)";
	if (e < 0 && e > -4096)
		snprintf(buf, n, "%ld %s", e, strerror((int)-e));
	else
		snprintf(buf, n, "%ld", e);
	return buf;
}

static void run_group(const char *group)
{
	static struct fx f;
	bool run_known = getenv("HOSTILE_RUN_KNOWN_BUGS") &&
			 *getenv("HOSTILE_RUN_KNOWN_BUGS") == '1';
	/* The environment wins over the options: keep it out of the way. */
	unsetenv("UHMM_FAULT_AROUND");
	unsetenv("UHMM_ZERO_AROUND");
	unsetenv("UHMM_POOL_PAGES");
	unsetenv("UHMM_STATS");
	signal(SIGALRM, watchdog);
	int nrun = 0, nfail = 0, nknown = 0;
	for (size_t i = 0; i < NROWS; i++) {
		const struct row *r = &rows[i];
		if (strcmp(r->group, group))
			continue;
		if (r->known_bug && !run_known) {
			fprintf(stderr, "[ KNOWN BUG ] %s(%s): %s -- skipped\n", r->call, r->what,
				r->known_bug);
			nknown++;
			continue;
		}
		if ((r->flags & R_DMFX) && !dm_load()) {
			fprintf(stderr, "[ SKIP ROW ] %s(%s): libuhmm-dmirror.so not found\n",
				r->call, r->what);
			continue;
		}
		fprintf(stderr, "[ ROW ] %s(%s)\n", r->call, r->what);
		cur_row = r;
		alarm(r->perform == p_race ? 50 : 20);
		if (r->flags & R_DMFX)
			dmfx_setup(&f);
		else if (!(r->flags & R_NOFX))
			fx_setup(&f);
		long got = r->perform(&f, r);
		const char *lost = NULL;
		if (r->flags & R_DMFX) {
			lost = dmfx_check(&f);
			dmfx_teardown(&f);
		} else if (!(r->flags & R_NOFX)) {
			lost = fx_check(&f);
			fx_teardown(&f);
		}
		alarm(0);
		cur_row = NULL;
		nrun++;
		bool ok = got == r->expect || ((r->flags & R_HAS_ALT) && got == r->alt);
		char b1[64], b2[64];
		if (!ok) {
			nfail++;
			fprintf(stderr, "[ FAIL ROW ] %s(%s): got %s, documented %s\n", r->call,
				r->what, errname(got, b1, sizeof(b1)),
				errname(r->expect, b2, sizeof(b2)));
		}
		if (lost) {
			nfail += ok;
			fprintf(stderr, "[ FAIL ROW ] %s(%s): changed something: %s\n", r->call,
				r->what, lost);
		}
		if (r->known_bug && ok && !lost)
			fprintf(stderr, "[ FIXED? ] %s(%s) passes: unmark its known bug\n",
				r->call, r->what);
	}
	fprintf(stderr, "%s: %d rows run, %d failed, %d known bugs skipped\n", group, nrun,
		nfail, nknown);
	if (nfail)
		fail_msg("%d row(s) of %s failed (listed above)", nfail, group);
}

#define GROUP(name)                                                           \
	static void name(void **state)                                        \
	{                                                                     \
		(void)state;                                                  \
		run_group(#name);                                             \
	}
GROUP(core_ctx)
GROUP(core_range)
GROUP(core_migrate)
GROUP(core_device)
GROUP(mirror_notifier)
GROUP(mirror_range_fault)
GROUP(mirror_exclusive)
GROUP(simdev_device)
GROUP(simdev_launch)
GROUP(simdev_accessors)
GROUP(dmirror)
GROUP(race_destroy_migrate)
GROUP(race_destroy_range_fault)
GROUP(race_destroy_launch)
GROUP(race_detach_migrate)
GROUP(race_detach_range_fault)
GROUP(race_detach_launch)

/* Every row belongs to a group that runs. */
static void table_is_complete(void **state)
{
	(void)state;
	static const char *const groups[] = {
		"core_ctx", "core_range", "core_migrate", "core_device", "mirror_notifier",
		"mirror_range_fault", "mirror_exclusive", "simdev_device", "simdev_launch",
		"simdev_accessors", "dmirror", "race_destroy_migrate",
		"race_destroy_range_fault", "race_destroy_launch", "race_detach_migrate",
		"race_detach_range_fault", "race_detach_launch",
	};
	for (size_t i = 0; i < NROWS; i++) {
		bool found = false;
		for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++)
			found |= !strcmp(rows[i].group, groups[g]);
		if (!found)
			fail_msg("row %zu (%s) is in no group", i, rows[i].call);
	}
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(table_is_complete),
	cmocka_unit_test(core_ctx),
	cmocka_unit_test(core_range),
	cmocka_unit_test(core_migrate),
	cmocka_unit_test(core_device),
	cmocka_unit_test(mirror_notifier),
	cmocka_unit_test(mirror_range_fault),
	cmocka_unit_test(mirror_exclusive),
	cmocka_unit_test(simdev_device),
	cmocka_unit_test(simdev_launch),
	cmocka_unit_test(simdev_accessors),
	cmocka_unit_test(dmirror),
	cmocka_unit_test(race_destroy_migrate),
	cmocka_unit_test(race_destroy_range_fault),
	cmocka_unit_test(race_destroy_launch),
	cmocka_unit_test(race_detach_migrate),
	cmocka_unit_test(race_detach_range_fault),
	cmocka_unit_test(race_detach_launch),
};

UHMM_TEST_MAIN(tests)
