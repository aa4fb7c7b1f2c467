/* SPDX-License-Identifier: MIT */
/*
 * simdev's compute side: kernels on managed memory, device faults and their
 * policies, the mirror (shootdown on invalidation, no walk on relaunch),
 * and kernels that meet unmapped, read-only or vanishing memory.
 * Counters, never timings, say what happened (DESIGN.md hard point 8).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "testlib.h"

#define MiB (1ul << 20)
#define GiB (1ul << 30)
#define PG 4096ul

struct fixture {
	uhmm_ctx *ctx;
	uhmm_device *dev;
};

static void setup_opts(struct fixture *f, const struct uhmm_simdev_opts *o)
{
	ASSERT_OK(uhmm_ctx_create(NULL, &f->ctx));
	ASSERT_OK(uhmm_simdev_create(f->ctx, o, &f->dev));
}

static void setup(struct fixture *f, uint64_t mem)
{
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = mem;
	setup_opts(f, &o);
}

static void teardown(struct fixture *f)
{
	ASSERT_OK(uhmm_ctx_destroy(f->ctx));
}

static struct uhmm_simdev_stats dstats(uhmm_device *dev)
{
	struct uhmm_simdev_stats s;
	ASSERT_OK(uhmm_simdev_stats(dev, &s));
	return s;
}


/* ---- kernels ------------------------------------------------------------ */

/* Work item idx reads (or writes) the word at buf + idx * stride. */
struct touch {
	char *buf;
	uint64_t stride;      /* bytes between work items */
	uint64_t wrap;        /* k_touch_wrap: bytes after which idx wraps */
	_Atomic uint64_t sum;
	_Atomic int started;
	int write;            /* store idx instead of loading */
};

/* (Shared counters are touched only when needed: contended atomics would
 * dominate the run time under TSan.) */
static void k_touch(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct touch *t = arg;
	if (!atomic_load_explicit(&t->started, memory_order_relaxed))
		atomic_store_explicit(&t->started, 1, memory_order_relaxed);
	void *p = t->buf + idx * t->stride;
	if (t->write) {
		uhmm_simdev_st64(wi, p, idx + 1);
		return;
	}
	uint64_t v = uhmm_simdev_ld64(wi, p);
	if (v)
		atomic_fetch_add_explicit(&t->sum, v, memory_order_relaxed);
}

static int touch_launch(uhmm_device *dev, void *buf, size_t len, uint64_t stride,
			int write, uint64_t *sum)
{
	struct touch t = { .buf = buf, .stride = stride, .write = write };
	int rc = uhmm_simdev_launch(dev, k_touch, len / stride, &t);
	if (sum)
		*sum = atomic_load(&t.sum);
	return rc;
}

/* ---- kernels on managed memory ------------------------------------------ */

struct saxpy {
	float a;
	float *x, *y;
	uint64_t per;
};

static void k_saxpy(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct saxpy *s = arg;
	for (uint64_t i = idx * s->per; i < (idx + 1) * s->per; i++) {
		uint32_t xb = uhmm_simdev_ld32(wi, &s->x[i]);
		uint32_t yb = uhmm_simdev_ld32(wi, &s->y[i]);
		float x, y;
		memcpy(&x, &xb, 4);
		memcpy(&y, &yb, 4);
		float r = s->a * x + y;
		memcpy(&yb, &r, 4);
		uhmm_simdev_st32(wi, &s->y[i], yb);
	}
}

static void saxpy_on_managed_memory(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	size_t n = 1u << 19; /* 2 MiB per vector; results exact in float */
	float *x, *y;
	ASSERT_OK(uhmm_alloc(f.ctx, n * 4, (void **)&x));
	ASSERT_OK(uhmm_alloc(f.ctx, n * 4, (void **)&y));
	for (size_t i = 0; i < n; i++) {
		x[i] = (float)i;
		y[i] = (float)(2 * i);
	}
	struct saxpy s = { .a = 3.0f, .x = x, .y = y, .per = 1024 };
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_saxpy, n / s.per, &s));
	/* Plain CPU reads: the pages come back by CPU faults. */
	for (size_t i = 0; i < n; i++)
		if (y[i] != (float)(5 * i))
			fail_msg("y[%zu] = %f, want %zu", i, (double)y[i], 5 * i);
	struct uhmm_simdev_stats st = dstats(f.dev);
	assert_int_equal(st.launches, 1);
	assert_int_equal(st.work_items, n / s.per);
	assert_true(st.faults >= 1);
	assert_int_equal(st.migrations, 2); /* one 2 MiB block each */
	assert_int_equal(st.kernel_errors, 0);
	struct uhmm_stats cs;
	ASSERT_OK(uhmm_stats_get(f.ctx, &cs));
	assert_true(cs.cpu_faults_device >= 1);
	teardown(&f);
}

struct histo {
	const uint32_t *data;
	uint32_t *bins;
	uint64_t per;
};

static void k_histo(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct histo *h = arg;
	for (uint64_t i = idx * h->per; i < (idx + 1) * h->per; i++) {
		uint32_t v = uhmm_simdev_ld32(wi, &h->data[i]);
		uhmm_simdev_atomic_add32(wi, &h->bins[v % 256], 1);
	}
}

static void histogram_with_atomics(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	size_t n = 1u << 18;
	uint32_t *data, *bins;
	ASSERT_OK(uhmm_alloc(f.ctx, n * 4, (void **)&data));
	ASSERT_OK(uhmm_alloc(f.ctx, 256 * 4, (void **)&bins));
	uint64_t want[256] = { 0 };
	for (size_t i = 0; i < n; i++) {
		data[i] = (uint32_t)((i * 2654435761u) >> 7);
		want[data[i] % 256]++;
	}
	struct histo h = { .data = data, .bins = bins, .per = 512 };
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_histo, n / h.per, &h));
	for (int b = 0; b < 256; b++)
		assert_int_equal(bins[b], want[b]);
	teardown(&f);
}

struct rmw {
	uint64_t *ctr32, *ctr64;
	uint64_t *slot;
};

/* cas loops, xchg and add on the same two words from every work item. */
static void k_rmw(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct rmw *r = arg;
	uint32_t *c32 = (uint32_t *)r->ctr32;
	for (;;) {
		uint32_t old = uhmm_simdev_ld32(wi, c32);
		if (uhmm_simdev_atomic_cas32(wi, c32, old, old + 1) == old)
			break;
	}
	uint64_t old = uhmm_simdev_ld64(wi, r->ctr64);
	while (uhmm_simdev_atomic_cas64(wi, r->ctr64, old, old + 2) != old)
		old = uhmm_simdev_ld64(wi, r->ctr64);
	uhmm_simdev_atomic_add64(wi, r->ctr64, 1);
	uint64_t prev = uhmm_simdev_atomic_xchg64(wi, &r->slot[idx], idx * 3);
	uhmm_simdev_atomic_xchg32(wi, (uint32_t *)&r->slot[idx] + 0, (uint32_t)prev);
}

static void atomics_cas_xchg_add_are_exact(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	uint64_t *m;
	ASSERT_OK(uhmm_alloc(f.ctx, 2 * MiB, (void **)&m));
	size_t grid = 4096;
	for (size_t i = 0; i < grid; i++)
		m[512 + i] = 0xabcd00000000ull + i;
	struct rmw r = { .ctr32 = &m[0], .ctr64 = &m[1], .slot = &m[512] };
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_rmw, grid, &r));
	assert_int_equal(*(uint32_t *)&m[0], grid);
	assert_int_equal(m[1], 3 * grid);
	for (size_t i = 0; i < grid; i++) /* low half: the old low half back */
		assert_int_equal(m[512 + i], ((i * 3) & ~0xffffffffull) | (uint32_t)(0xabcd00000000ull + i));
	teardown(&f);
}

struct cpy {
	char *dst;
	const char *src;
	size_t len, per;
};

static void k_copy(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct cpy *c = arg;
	size_t off = idx * c->per;
	size_t n = off + c->per > c->len ? c->len - off : c->per;
	uhmm_simdev_copy(wi, c->dst + off, c->src + off, n);
}

static void copy_crosses_pages_at_any_alignment(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	char *a, *b;
	ASSERT_OK(uhmm_alloc(f.ctx, 4 * MiB, (void **)&a));
	ASSERT_OK(uhmm_alloc(f.ctx, 4 * MiB, (void **)&b));
	uhmm_test_fill(a, 4 * MiB, 11);
	/* src on the device, dst in system memory (remote), odd offsets. */
	ASSERT_OK(uhmm_migrate(f.ctx, a, 4 * MiB, f.dev, 0));
	ASSERT_OK(uhmm_simdev_advise(f.dev, b, 4 * MiB, UHMM_SIMDEV_MAP_REMOTE));
	size_t len = 3 * MiB + 12345;
	struct cpy c = { .dst = b + 7, .src = a + 3, .len = len, .per = 10007 };
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_copy, (len + c.per - 1) / c.per, &c));
	assert_int_equal(memcmp(b + 7, a + 3, len), 0);
	teardown(&f);
}

/* ---- faults, policies, the mirror --------------------------------------- */

static void eight_work_items_one_page_one_resolution(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	char *p;
	ASSERT_OK(uhmm_alloc(f.ctx, 2 * MiB, (void **)&p));
	uint64_t sum;
	/* Eight items, eight words of one page. */
	ASSERT_OK(touch_launch(f.dev, p + 5 * PG, 64, 8, 0, &sum));
	struct uhmm_simdev_stats st = dstats(f.dev);
	assert_true(st.faults >= 1);
	assert_int_equal(st.fault_resolutions, 1);
	/* Every fault was resolved or found resolved: nothing else. */
	assert_int_equal(st.faults, st.fault_resolutions + st.fault_duplicates);
	assert_int_equal(st.migrations, 1);
	assert_int_equal(sum, 0);
	teardown(&f);
}

static void relaunch_on_unchanged_mirror_walks_nothing(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	char *p;
	size_t len = GiB;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	ASSERT_OK(uhmm_simdev_advise(f.dev, p, len, UHMM_SIMDEV_MAP_REMOTE));
	uint64_t sum;
	ASSERT_OK(touch_launch(f.dev, p, len, PG, 0, &sum));
	struct uhmm_simdev_stats a = dstats(f.dev);
	assert_true(a.faults >= 1);
	assert_int_equal(a.range_fault_pages, len / PG); /* each page once */
	assert_int_equal(a.remote_maps, len / PG);
	assert_int_equal(a.migrations, 0);

	ASSERT_OK(touch_launch(f.dev, p, len, PG, 0, &sum));
	struct uhmm_simdev_stats b = dstats(f.dev);
	assert_int_equal(b.faults, a.faults);
	assert_int_equal(b.range_fault_calls, a.range_fault_calls);
	assert_int_equal(b.range_fault_pages, a.range_fault_pages);
	assert_int_equal(b.work_items, 2 * (len / PG));
	assert_true(b.tlb_misses > a.tlb_misses); /* it did translate */
	assert_int_equal(sum, 0);
	teardown(&f);
}

static void migrate_policy_moves_pages_to_device(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	char *p;
	size_t len = 4 * MiB;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 3);
	ASSERT_OK(touch_launch(f.dev, p, len, PG, 0, NULL));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	struct uhmm_simdev_stats st = dstats(f.dev);
	assert_int_equal(st.migrations, 2);
	assert_int_equal(st.remote_maps, 0);
	assert_int_equal(uhmm_test_check(p, len, 3), (size_t)-1);
	teardown(&f);
}

static void map_remote_policy_keeps_pages_in_system_memory(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	char *p;
	size_t len = 4 * MiB;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	ASSERT_OK(uhmm_simdev_advise(f.dev, p, len, UHMM_SIMDEV_MAP_REMOTE));
	ASSERT_OK(touch_launch(f.dev, p, len, PG, 1, NULL));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, NULL), len / PG);
	struct uhmm_simdev_stats st = dstats(f.dev);
	assert_int_equal(st.migrations, 0);
	assert_int_equal(st.remote_maps, len / PG);
	for (size_t i = 0; i < len / PG; i++)
		assert_int_equal(*(uint64_t *)(p + i * PG), i + 1);
	teardown(&f);
}

/* Later advice over part of a range replaces the earlier there only.
 * (Advice acts at the next device fault: valid mappings stay as they are.) */
static void advice_applies_per_range(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	char *p;
	size_t len = 8 * MiB;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	ASSERT_OK(uhmm_simdev_advise(f.dev, p, len, UHMM_SIMDEV_MAP_REMOTE));
	ASSERT_OK(uhmm_simdev_advise(f.dev, p + 2 * MiB, 4 * MiB,
				     UHMM_SIMDEV_MIGRATE_ON_TOUCH));
	ASSERT_OK(uhmm_simdev_advise(f.dev, p + 4 * MiB, 2 * MiB,
				     UHMM_SIMDEV_MAP_REMOTE));
	/* remote | migrate | remote | remote */
	ASSERT_OK(touch_launch(f.dev, p, len, PG, 1, NULL));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, 2 * MiB, NULL), 512);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p + 2 * MiB, 2 * MiB, f.dev), 512);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p + 4 * MiB, 4 * MiB, NULL), 1024);
	struct uhmm_simdev_stats st = dstats(f.dev);
	assert_int_equal(st.migrations, 1);
	assert_int_equal(st.remote_maps, 1536);
	for (size_t i = 0; i < len / PG; i++)
		assert_int_equal(*(uint64_t *)(p + i * PG), i + 1);
	teardown(&f);
}

/* A working set four times the device: blocks are evicted to make room
 * (device memory is a cache), the kernel completes with right data. */
static void device_memory_full_evicts(void **state)
{
	struct fixture f;
	setup(&f, 2 * MiB); /* one block of device memory */
	char *p;
	size_t len = 8 * MiB;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	ASSERT_OK(touch_launch(f.dev, p, len, PG, 1, NULL));
	size_t on_dev = uhmm_test_pages_on(f.ctx, p, len, f.dev);
	assert_true(on_dev <= 512);
	struct uhmm_simdev_stats st = dstats(f.dev);
	assert_int_equal(st.kernel_errors, 0);
	struct uhmm_stats cs;
	ASSERT_OK(uhmm_stats_get(f.ctx, &cs));
	assert_true(cs.evicted_pages > 0);
	for (size_t i = 0; i < len / PG; i++)
		assert_int_equal(*(uint64_t *)(p + i * PG), i + 1);
	teardown(&f);
}

static void invalidation_shoots_down_tlb(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	char *p;
	size_t len = 2 * MiB;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	for (size_t i = 0; i < len / PG; i++)
		*(uint64_t *)(p + i * PG) = 1;
	uint64_t sum;
	ASSERT_OK(touch_launch(f.dev, p, len, PG, 0, &sum));
	assert_int_equal(sum, len / PG);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	struct uhmm_simdev_stats a = dstats(f.dev);

	/* Back to system memory: the device must forget its translations. */
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	struct uhmm_simdev_stats b = dstats(f.dev);
	assert_true(b.invalidations > a.invalidations);
	assert_int_equal(b.shootdown_pages - a.shootdown_pages, len / PG);
	for (size_t i = 0; i < len / PG; i++)
		*(uint64_t *)(p + i * PG) = 2;

	ASSERT_OK(touch_launch(f.dev, p, len, PG, 0, &sum));
	assert_int_equal(sum, 2 * (len / PG)); /* the CPU's new data */
	struct uhmm_simdev_stats c = dstats(f.dev);
	assert_true(c.faults > b.faults);
	teardown(&f);
}

/* A CPU thread increments word 0 of a page with plain stores; the kernel
 * increments words 8.. of the same page (one per item); a third thread
 * migrates the page back and forth.  Nothing may be lost. */
struct race {
	uint64_t *page;
	_Atomic int stop;
	uint64_t rounds;
};

static void k_race(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct race *r = arg;
	uint64_t *w = &r->page[8 + idx];
	for (uint64_t i = 0; i < r->rounds; i++)
		uhmm_simdev_st64(wi, w, uhmm_simdev_ld64(wi, w) + 1);
}

static void *cpu_incrementer(void *arg)
{
	struct race *r = arg;
	volatile uint64_t *ctr = r->page;
	for (int i = 0; i < 20000; i++)
		*ctr = *ctr + 1;
	return NULL;
}

struct migrator {
	struct fixture *f;
	void *p;
	_Atomic int stop;
	_Atomic int moves;
	int err;      /* the first failure (cmocka asserts only in the main thread) */
};

static void *migrator_main(void *arg)
{
	struct migrator *m = arg;
	while (!atomic_load(&m->stop)) {
		int rc = uhmm_migrate(m->f->ctx, m->p, 2 * MiB,
				      (m->moves & 1) ? NULL : m->f->dev, 0);
		if (rc && !m->err)
			m->err = rc;
		m->moves++;
	}
	return NULL;
}

static void cpu_write_racing_device_access_is_not_lost(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(f.ctx, 2 * MiB, (void **)&p));
	struct race r = { .page = p, .rounds = 200 };
	struct migrator m = { .f = &f, .p = p };
	pthread_t cpu, mig;
	assert_int_equal(pthread_create(&mig, NULL, migrator_main, &m), 0);
	assert_int_equal(pthread_create(&cpu, NULL, cpu_incrementer, &r), 0);
	uint64_t grid = 64;
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_race, grid, &r));
	pthread_join(cpu, NULL);
	/* A loaded machine may not have run the migrator yet: at least one
	 * migration, and one home, before it stops. */
	while (atomic_load(&m.moves) < 2)
		sched_yield();
	atomic_store(&m.stop, 1);
	pthread_join(mig, NULL);
	ASSERT_OK(m.err);
	assert_int_equal(p[0], 20000);
	for (uint64_t i = 0; i < grid; i++)
		assert_int_equal(p[8 + i], r.rounds);
	teardown(&f);
}

/* ---- the address space changing under a running kernel ------------------ */

enum change { CH_MUNMAP, CH_DONTNEED, CH_MREMAP };

struct changer {
	struct touch *t;
	void *p;
	size_t len;
	void *to; /* CH_MREMAP: where */
	enum change what;
	int ok;
};

static void *changer_main(void *arg)
{
	struct changer *c = arg;
	while (!atomic_load(&c->t->started))
		sched_yield();
	switch (c->what) {
	case CH_MUNMAP:
		c->ok = munmap(c->p, c->len) == 0;
		break;
	case CH_DONTNEED:
		c->ok = madvise(c->p, c->len, MADV_DONTNEED) == 0;
		break;
	case CH_MREMAP:
		c->ok = mremap(c->p, c->len, c->len, MREMAP_MAYMOVE | MREMAP_FIXED,
			       c->to) == c->to;
		break;
	}
	return NULL;
}

/* k_touch over [buf, buf + wrap), idx wrapping. */
static void k_touch_wrap(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct touch *t = arg;
	if (!atomic_load_explicit(&t->started, memory_order_relaxed))
		atomic_store_explicit(&t->started, 1, memory_order_relaxed);
	(void)uhmm_simdev_ld64(wi, t->buf + (idx * t->stride) % t->wrap);
}

/*
 * Runs a kernel reading [p, p + len) over and over while another thread
 * makes the change @what once the kernel has started.
 */
static int run_with_change(struct fixture *f, void *p, size_t len, enum change what,
			   void *to)
{
	struct touch t = { .buf = p, .stride = 8, .wrap = len };
	struct changer c = { .t = &t, .p = p, .len = len, .to = to, .what = what };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, changer_main, &c), 0);
	int rc = uhmm_simdev_launch(f->dev, k_touch_wrap, 1u << 20, &t);
	pthread_join(th, NULL);
	assert_true(c.ok);
	if (rc != 0 && rc != -EFAULT)
		fail_msg("launch = %d (%s)", rc, uhmm_test_strerror(rc));
	return rc;
}

static void munmap_while_kernel_runs_fails_cleanly(void **state)
{
	for (int remote = 0; remote < 2; remote++) {
		struct fixture f;
		setup(&f, 64 * MiB);
		char *p;
		size_t len = 2 * MiB;
		ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
		uhmm_test_fill(p, len, 5);
		if (remote)
			ASSERT_OK(uhmm_simdev_advise(f.dev, p, len, UHMM_SIMDEV_MAP_REMOTE));
		int rc = run_with_change(&f, p, len, CH_MUNMAP, NULL);
		struct uhmm_simdev_stats st = dstats(f.dev);
		assert_int_equal(st.kernel_errors, rc ? 1 : 0);
		/* The device still works. */
		char *q;
		ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&q));
		ASSERT_OK(touch_launch(f.dev, q, len, PG, 1, NULL));
		assert_int_equal(*(uint64_t *)(q + PG), 2);
		teardown(&f);
	}
}

/* Counts words that are neither the pattern nor zero. */
struct seen {
	const uint64_t *buf;
	uint64_t words;
	uint64_t seed;
	_Atomic int started;
	_Atomic uint64_t bad, nonzero;
};

static uint64_t pattern_word(uint64_t seed, uint64_t i)
{
	uint64_t w;
	uhmm_test_fill(&w, 8, seed + i);
	return w;
}

static void k_seen(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct seen *s = arg;
	if (!atomic_load_explicit(&s->started, memory_order_relaxed))
		atomic_store_explicit(&s->started, 1, memory_order_relaxed);
	uint64_t i = idx % s->words;
	uint64_t v = uhmm_simdev_ld64(wi, &s->buf[i]);
	if (v)
		atomic_fetch_add(&s->nonzero, 1);
	if (v && v != pattern_word(s->seed, i))
		atomic_fetch_add(&s->bad, 1);
}

static void *dontneed_main(void *arg)
{
	struct seen *s = arg;
	while (!atomic_load(&s->started))
		sched_yield();
	if (madvise((void *)s->buf, s->words * 8, MADV_DONTNEED))
		atomic_fetch_add(&s->bad, 1000000);
	return NULL;
}

static void madvise_while_kernel_runs_sees_new_state_or_fails(void **state)
{
	for (int remote = 0; remote < 2; remote++) {
		struct fixture f;
		setup(&f, 64 * MiB);
		uint64_t *p;
		size_t len = 2 * MiB;
		ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
		uhmm_test_fill(p, len, 9);
		if (remote)
			ASSERT_OK(uhmm_simdev_advise(f.dev, p, len, UHMM_SIMDEV_MAP_REMOTE));
		struct seen s = { .buf = p, .words = len / 8, .seed = 9 };
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, dontneed_main, &s), 0);
		ASSERT_OK(uhmm_simdev_launch(f.dev, k_seen, 4 * s.words, &s));
		pthread_join(th, NULL);
		assert_int_equal(atomic_load(&s.bad), 0);
		/* Afterwards the device reads what the CPU would: zeros. */
		struct seen z = { .buf = p, .words = len / 8, .seed = 9 };
		ASSERT_OK(uhmm_simdev_launch(f.dev, k_seen, z.words, &z));
		assert_int_equal(atomic_load(&z.nonzero), 0);
		for (size_t i = 0; i < len / 8; i++)
			assert_int_equal(p[i], 0);
		teardown(&f);
	}
}

static void mremap_while_kernel_runs(void **state)
{
	for (int remote = 0; remote < 2; remote++) {
		struct fixture f;
		setup(&f, 64 * MiB);
		char *p;
		size_t len = 2 * MiB;
		ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
		uhmm_test_fill(p, len, 13);
		if (remote)
			ASSERT_OK(uhmm_simdev_advise(f.dev, p, len, UHMM_SIMDEV_MAP_REMOTE));
		void *to = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(to != MAP_FAILED);
		(void)run_with_change(&f, p, len, CH_MREMAP, to);
		/* The data moved with the mapping, device-resident pages too. */
		assert_int_equal(uhmm_test_check(to, len, 13), (size_t)-1);
		uint64_t sum;
		ASSERT_OK(touch_launch(f.dev, to, len, PG, 0, &sum));
		teardown(&f);
		munmap(to, len);
	}
}

/* ---- kernel errors ------------------------------------------------------ */

static void access_to_unmapped_memory_ends_kernel_with_efault(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	char *hole = mmap(NULL, 4 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(hole != MAP_FAILED);
	/* PROT_NONE, then nothing at all. */
	assert_int_equal(touch_launch(f.dev, hole, 2 * PG, PG, 0, NULL), -EFAULT);
	assert_int_equal(munmap(hole, 4 * PG), 0);
	assert_int_equal(touch_launch(f.dev, hole, 4 * PG, PG, 1, NULL), -EFAULT);
	assert_int_equal(touch_launch(f.dev, NULL, PG, 8, 0, NULL), -EFAULT);
	struct uhmm_simdev_stats st = dstats(f.dev);
	assert_int_equal(st.kernel_errors, 3);
	assert_int_equal(st.work_items, 0); /* failed items do not count */
	teardown(&f);
}

static void access_to_unmanaged_memory_maps_it_remotely(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	size_t len = 256 * PG;
	uint64_t *p = aligned_alloc(PG, len);
	assert_non_null(p);
	for (size_t i = 0; i < len / 8; i++)
		p[i] = i;
	uint64_t sum;
	ASSERT_OK(touch_launch(f.dev, p, len, 8, 0, &sum));
	assert_int_equal(sum, (len / 8) * (len / 8 - 1) / 2);
	assert_int_equal(dstats(f.dev).migrations, 0);
	teardown(&f);
	free(p);
}

/*
 * Memory uhmm does not manage sends no events: after a plain mprotect the
 * device's remote mapping is stale, and its next access meets SIGSEGV in
 * the lane.  The kernel ends with -EFAULT; the process lives on (hard
 * point 4).
 */
static void vanished_system_page_ends_kernel_not_process(void **state)
{
#ifdef __SANITIZE_THREAD__
	/* The lane's siglongjmp out of its SIGSEGV handler crashes TSan's own
	 * runtime about one run in three (not the code under test: the plain
	 * and ASan builds run this 0 failures in 80).  Covered there. */
	TEST_SKIP("TSan cannot follow a siglongjmp out of a SIGSEGV handler");
#endif
	struct fixture f;
	setup(&f, 64 * MiB);
	size_t len = 16 * PG;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	ASSERT_OK(touch_launch(f.dev, p, len, PG, 1, NULL));
	uint64_t faults = dstats(f.dev).faults;
	assert_int_equal(mprotect(p, len, PROT_NONE), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(touch_launch(f.dev, p, len, PG, 0, NULL), -EFAULT);
	struct uhmm_simdev_stats st = dstats(f.dev);
	assert_int_equal(st.faults, faults); /* the signal ended it, no fault */
	assert_int_equal(st.kernel_errors, 3);
	/* The lanes are fine: a good kernel runs. */
	assert_int_equal(mprotect(p, len, PROT_READ | PROT_WRITE), 0);
	uint64_t sum;
	ASSERT_OK(touch_launch(f.dev, p, len, PG, 0, &sum));
	assert_int_equal(sum, 16 * 17 / 2);
	munmap(p, len);
	teardown(&f);
}

static void write_to_readonly_memory_is_eperm(void **state)
{
	for (int on_dev = 0; on_dev < 2; on_dev++) {
		struct fixture f;
		setup(&f, 64 * MiB);
		char *p;
		size_t len = 2 * MiB;
		ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
		for (size_t i = 0; i < len / PG; i++)
			*(uint64_t *)(p + i * PG) = 1;
		if (on_dev)
			ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
		/* The device mapped it writable first. */
		ASSERT_OK(touch_launch(f.dev, p, len, PG, 1, NULL));
		ASSERT_OK(uhmm_mprotect(f.ctx, p, len, PROT_READ));
		uint64_t sum;
		ASSERT_OK(touch_launch(f.dev, p, len, PG, 0, &sum));
		uint64_t n = len / PG;
		assert_int_equal(sum, n * (n + 1) / 2);
		assert_int_equal(touch_launch(f.dev, p, len, PG, 1, NULL), -EPERM);
		ASSERT_OK(uhmm_mprotect(f.ctx, p, len, PROT_READ | PROT_WRITE));
		teardown(&f);
	}
}

static _Atomic int unaligned_returned;

static void k_unaligned(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	char *p = arg;
	switch (idx % 3) {
	case 0:
		(void)uhmm_simdev_ld32(wi, p + 2);
		break;
	case 1:
		uhmm_simdev_st16(wi, p + 1, 1);
		break;
	default:
		(void)uhmm_simdev_atomic_add64(wi, p + 4, 1);
		break;
	}
	atomic_store(&unaligned_returned, 1); /* must not get here */
}

static void unaligned_access_is_einval(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	char *p;
	ASSERT_OK(uhmm_alloc(f.ctx, 2 * MiB, (void **)&p));
	for (int i = 0; i < 3; i++)
		assert_int_equal(uhmm_simdev_launch(f.dev, k_unaligned, 3, p), -EINVAL);
	assert_int_equal(atomic_load(&unaligned_returned), 0);
	assert_int_equal(dstats(f.dev).faults, 0); /* refused before translating */
	teardown(&f);
}

/* ---- API ---------------------------------------------------------------- */

struct blocker {
	_Atomic int entered, release;
};

static void k_block(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct blocker *b = arg;
	atomic_store(&b->entered, 1);
	while (!atomic_load(&b->release))
		usleep(100);
}

static void *launch_blocker(void *arg)
{
	void **a = arg;
	return (void *)(intptr_t)uhmm_simdev_launch(a[0], k_block, 1, a[1]);
}

struct nested {
	uhmm_device *dev;
	int rc;
};

static void k_nested(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct nested *n = arg;
	n->rc = uhmm_simdev_launch(n->dev, k_block, 1, NULL);
}

static void launch_and_advise_reject_bad_arguments(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	assert_int_equal(uhmm_simdev_launch(NULL, k_block, 1, NULL), -EINVAL);
	assert_int_equal(uhmm_simdev_launch(f.dev, NULL, 1, NULL), -EINVAL);
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_block, 0, NULL)); /* empty grid */
	char *p;
	ASSERT_OK(uhmm_alloc(f.ctx, 2 * MiB, (void **)&p));
	assert_int_equal(uhmm_simdev_advise(f.dev, p + 1, PG, UHMM_SIMDEV_MAP_REMOTE), -EINVAL);
	assert_int_equal(uhmm_simdev_advise(f.dev, p, 0, UHMM_SIMDEV_MAP_REMOTE), -EINVAL);
	assert_int_equal(uhmm_simdev_advise(f.dev, p, PG, (enum uhmm_simdev_advice)9), -EINVAL);
	assert_int_equal(uhmm_simdev_advise(NULL, p, PG, UHMM_SIMDEV_MAP_REMOTE), -EINVAL);
	assert_int_equal(uhmm_simdev_stats(f.dev, NULL), -EINVAL);

	/* One launch at a time. */
	struct blocker b = { 0 };
	void *args[2] = { f.dev, &b };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, launch_blocker, args), 0);
	while (!atomic_load(&b.entered))
		usleep(100);
	assert_int_equal(uhmm_simdev_launch(f.dev, k_block, 1, &b), -EBUSY);
	atomic_store(&b.release, 1);
	void *ret;
	pthread_join(th, &ret);
	assert_int_equal((intptr_t)ret, 0);

	/* Not from a kernel. */
	struct nested n = { .dev = f.dev };
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_nested, 1, &n));
	assert_int_equal(n.rc, -EINVAL);

	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	uhmm_device *d2;
	o.tlb_entries = 48;
	assert_int_equal(uhmm_simdev_create(f.ctx, &o, &d2), -EINVAL);
	uhmm_simdev_opts_init(&o);
	o.compute_units = 17;
	assert_int_equal(uhmm_simdev_create(f.ctx, &o, &d2), -EINVAL);
	uhmm_simdev_opts_init(&o);
	o.lanes_per_cu = 0;
	assert_int_equal(uhmm_simdev_create(f.ctx, &o, &d2), -EINVAL);
	uhmm_simdev_opts_init(&o);
	o.fault_batch = 4097;
	assert_int_equal(uhmm_simdev_create(f.ctx, &o, &d2), -EINVAL);
	teardown(&f);
}

/* The smallest machine: one unit, one lane, a one-entry TLB, one fault a
 * pass.  Same answers, more faults. */
static void tiny_device_computes_the_same(void **state)
{
	struct fixture f;
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 16 * MiB;
	o.compute_units = 1;
	o.lanes_per_cu = 1;
	o.tlb_entries = 1;
	o.fault_batch = 1;
	setup_opts(&f, &o);
	size_t n = 1u << 16;
	uint32_t *data, *bins;
	ASSERT_OK(uhmm_alloc(f.ctx, n * 4, (void **)&data));
	ASSERT_OK(uhmm_alloc(f.ctx, 256 * 4, (void **)&bins));
	uint64_t want[256] = { 0 };
	for (size_t i = 0; i < n; i++) {
		data[i] = (uint32_t)(i * 40503u);
		want[data[i] % 256]++;
	}
	struct histo h = { .data = data, .bins = bins, .per = 256 };
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_histo, n / h.per, &h));
	for (int b = 0; b < 256; b++)
		assert_int_equal(bins[b], want[b]);
	/* Device detach brings everything home. */
	ASSERT_OK(uhmm_device_detach(f.dev));
	teardown(&f);
}

/* ---- a launch of one work item ------------------------------------------ */

struct where {
	char *buf;            /* a page the item reads through the device */
	pid_t tid;            /* the thread the item ran on */
	int usr1_blocked;     /* SIGUSR1 blocked while it ran */
	uint64_t word;
};

static void k_where(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct where *w = arg;
	sigset_t cur;
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	if (idx == 0) {
		w->tid = gettid();
		w->usr1_blocked = sigismember(&cur, SIGUSR1);
	}
	w->word = uhmm_simdev_ld64(wi, w->buf);
}

/*
 * A grid of one has no parallelism to be had: the caller's thread runs the
 * item (as lane 0), sparing two scheduler round trips (uhmm-bench mirror).
 * It blocks asynchronous signals meanwhile, as lanes do, and gives its
 * mask back; a device fault of the item is served, and an access that
 * cannot be ends the launch, not the caller.
 */
static void one_item_launch_runs_in_the_callers_thread(void **state)
{
#ifdef __SANITIZE_THREAD__
	/* (The -EFAULT case leaves a SIGSEGV handler by siglongjmp: see
	 * vanished_system_page_ends_kernel_not_process.) */
	TEST_SKIP("TSan cannot follow a siglongjmp out of a SIGSEGV handler");
#endif
	struct fixture f;
	setup(&f, 64 * MiB);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(f.ctx, 2 * MiB, (void **)&p));
	p[0] = 0x5eed;
	struct where w = { .buf = (char *)p };
	sigset_t before, after;
	pthread_sigmask(SIG_BLOCK, NULL, &before);
	assert_false(sigismember(&before, SIGUSR1));

	ASSERT_OK(uhmm_simdev_launch(f.dev, k_where, 1, &w));
	assert_int_equal(w.tid, gettid());
	assert_true(w.usr1_blocked);
	assert_int_equal(w.word, 0x5eed);
	struct uhmm_page_info pi;
	ASSERT_OK(uhmm_page_query(f.ctx, p, &pi));
	assert_int_equal(pi.where, UHMM_WHERE_DEVICE); /* its device fault migrated it */
	pthread_sigmask(SIG_BLOCK, NULL, &after);
	assert_false(sigismember(&after, SIGUSR1));

	/* More items than one: the lanes run them. */
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_where, 2, &w));
	assert_int_not_equal(w.tid, gettid());

	/* An access that cannot be resolved, in the caller's thread: the
	 * launch fails, the caller lives on with its mask, the device too. */
	char *q = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(q != MAP_FAILED);
	w.buf = q;
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_where, 1, &w)); /* mapped remotely */
	assert_int_equal(mprotect(q, PG, PROT_NONE), 0);      /* no event: stale */
	assert_int_equal(uhmm_simdev_launch(f.dev, k_where, 1, &w), -EFAULT);
	assert_int_equal(w.tid, gettid());
	pthread_sigmask(SIG_BLOCK, NULL, &after);
	assert_false(sigismember(&after, SIGUSR1));
	w.buf = (char *)p;
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_where, 1, &w));
	assert_int_equal(w.word, 0x5eed);
	munmap(q, PG);
	teardown(&f);
}

/* ---- issue 16: float accessors, vectors, block launches, the lane TLB ---- */

/* Lanes cache translations (the inline path) only where membarrier(2)
 * PRIVATE_EXPEDITED is allowed; elsewhere every access is out of line and
 * the lane-hit counts below are 0. */
static bool inline_path_on(void)
{
	long q = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
	return q > 0 && (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED);
}

struct fl {
	float *f;       /* n floats */
	double *d;      /* n doubles */
	float *fsum;    /* atomic targets */
	double *dsum;
	float *fsys;    /* an atomic target left in system memory */
	size_t n;
};

/* Item i: f[i] = 2 * f[i] + 0.5, d[i] = d[i] / 4 (exact in binary). */
static void k_float(uhmm_simdev_item *wi, uint64_t i, void *arg)
{
	struct fl *a = arg;
	uhmm_simdev_stf32(wi, &a->f[i], 2.0f * uhmm_simdev_ldf32(wi, &a->f[i]) + 0.5f);
	uhmm_simdev_stf64(wi, &a->d[i], uhmm_simdev_ldf64(wi, &a->d[i]) / 4.0);
}

static void float_and_double_accessors(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	struct fl a = { .n = 3 * 1024 + 7 };
	ASSERT_OK(uhmm_alloc(f.ctx, a.n * 4, (void **)&a.f));
	ASSERT_OK(uhmm_alloc(f.ctx, a.n * 8, (void **)&a.d));
	for (size_t i = 0; i < a.n; i++) {
		a.f[i] = (float)i - 100.25f;
		a.d[i] = (double)i * 1e10 + 0.75;
	}
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_float, a.n, &a));
	for (size_t i = 0; i < a.n; i++) {
		assert_true(a.f[i] == 2.0f * ((float)i - 100.25f) + 0.5f);
		assert_true(a.d[i] == ((double)i * 1e10 + 0.75) / 4.0);
	}
	/* Again with the data already on the device: the inline path. */
	struct uhmm_simdev_stats s0 = dstats(f.dev);
	ASSERT_OK(uhmm_migrate(f.ctx, a.f, (a.n * 4 + PG - 1) & ~(PG - 1), f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, a.d, (a.n * 8 + PG - 1) & ~(PG - 1), f.dev, 0));
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_float, a.n, &a));
	struct uhmm_simdev_stats s1 = dstats(f.dev);
	assert_true(s1.tlb_lane_hits > s0.tlb_lane_hits || !inline_path_on());
	for (size_t i = 0; i < a.n; i++) {
		float w = 2.0f * ((float)i - 100.25f) + 0.5f;
		assert_true(a.f[i] == 2.0f * w + 0.5f);
		assert_true(a.d[i] == ((double)i * 1e10 + 0.75) / 16.0);
	}
	teardown(&f);
}

/* Every item adds 1.0f and 0.5 to counters on device memory, and 2.0f to
 * one in system memory (the atomic policy takes it: out-of-line path). */
static void k_fadd(uhmm_simdev_item *wi, uint64_t i, void *arg)
{
	struct fl *a = arg;
	(void)i;
	uhmm_simdev_atomic_addf32(wi, a->fsum, 1.0f);
	uhmm_simdev_atomic_addf64(wi, a->dsum, 0.5);
	uhmm_simdev_atomic_addf32(wi, a->fsys, 2.0f);
}

static void float_atomic_add_from_many_items_is_exact(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	char *p, *q;
	ASSERT_OK(uhmm_alloc(f.ctx, PG, (void **)&p));
	ASSERT_OK(uhmm_alloc(f.ctx, PG, (void **)&q));
	memset(p, 0, PG);
	memset(q, 0, PG);
	struct fl a = { .fsum = (float *)p, .dsum = (double *)(p + 64), .fsys = (float *)q };
	*a.fsum = 0.25f;
	ASSERT_OK(uhmm_migrate(f.ctx, p, PG, f.dev, 0));
	uint64_t grid = 20000; /* partial sums are integers below 2^24: exact */
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_fadd, grid, &a));
	assert_true(*a.fsum == 0.25f + (float)grid);
	assert_true(*a.dsum == 0.5 * (double)grid);
	assert_true(*a.fsys == 2.0f * (float)grid);
	struct uhmm_simdev_stats st = dstats(f.dev);
	assert_int_equal(st.kernel_errors, 0);
	assert_true(st.tlb_lane_hits > 0 || !inline_path_on());
	teardown(&f);
}

struct vec {
	uint32_t *u;
	double *d;
	float *f;
	size_t off, n;   /* the span: elements [off, off + n) */
	int bad;         /* 1: an unaligned span */
};

/* One item: load a span, add 1 to each element, store it back. */
static void k_vec(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct vec *v = arg;
	uint32_t ub[2048];
	double db[1024];
	float fb[2048];
	(void)idx;
	if (v->bad) {
		uhmm_simdev_ld32v(wi, ub, (uint32_t *)((char *)v->u + 2), 4);
		return;
	}
	uhmm_simdev_ld32v(wi, ub, v->u + v->off, v->n);
	uhmm_simdev_ldf64v(wi, db, v->d + v->off, v->n);
	uhmm_simdev_ldf32v(wi, fb, v->f + v->off, v->n);
	for (size_t i = 0; i < v->n; i++) {
		ub[i] += 1;
		db[i] += 1;
		fb[i] += 1;
	}
	uhmm_simdev_st32v(wi, v->u + v->off, ub, v->n);
	uhmm_simdev_stf64v(wi, v->d + v->off, db, v->n);
	uhmm_simdev_stf32v(wi, v->f + v->off, fb, v->n);
	uhmm_simdev_st64v(wi, (uint64_t *)(void *)v->d, (uint64_t *)(void *)db, 0);
}

static void vector_helpers_within_and_across_pages(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	struct vec v = { 0 };
	size_t n = 4 * 1024;
	ASSERT_OK(uhmm_alloc(f.ctx, n * 4, (void **)&v.u));
	ASSERT_OK(uhmm_alloc(f.ctx, n * 8, (void **)&v.d));
	ASSERT_OK(uhmm_alloc(f.ctx, n * 4, (void **)&v.f));
	for (size_t i = 0; i < n; i++) {
		v.u[i] = (uint32_t)i;
		v.d[i] = (double)i;
		v.f[i] = (float)i;
	}
	ASSERT_OK(uhmm_migrate(f.ctx, v.u, n * 4, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, v.d, n * 8, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, v.f, n * 4, f.dev, 0));
	/* Within one page of each array (the doubles: 512 a page)... */
	v.off = 8;
	v.n = 500;
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_vec, 1, &v));
	/* ... then a span across pages of all three (split, handled). */
	v.off = 1000;
	v.n = 1000;
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_vec, 1, &v));
	for (size_t i = 0; i < n; i++) {
		unsigned k = (i >= 8 && i < 508) + (i >= 1000 && i < 2000);
		assert_int_equal(v.u[i], i + k);
		assert_true(v.d[i] == (double)(i + k));
		assert_true(v.f[i] == (float)(i + k));
	}
	/* An unaligned span ends the kernel with -EINVAL. */
	v.bad = 1;
	assert_int_equal(uhmm_simdev_launch(f.dev, k_vec, 1, &v), -EINVAL);
	teardown(&f);
}

struct blk {
	uint32_t *count;    /* per work item */
	uint32_t *calls;    /* [0]: block calls */
	uint64_t grid, block;
	_Atomic int bad;    /* a block of the wrong shape */
};

static void k_blocks(uhmm_simdev_item *wi, uint64_t first, uint64_t n, void *arg)
{
	struct blk *b = arg;
	if (first % b->block || n == 0 || n > b->block || first + n > b->grid ||
	    (n < b->block && first + n != b->grid))
		atomic_store(&b->bad, 1);
	for (uint64_t i = first; i < first + n; i++)
		uhmm_simdev_atomic_add32(wi, &b->count[i], 1);
	uhmm_simdev_atomic_add32(wi, &b->calls[0], 1);
}

static void block_launch_covers_every_item_once(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	struct blk b = { .grid = 100003, .block = 64 };
	ASSERT_OK(uhmm_alloc(f.ctx, b.grid * 4, (void **)&b.count));
	ASSERT_OK(uhmm_alloc(f.ctx, PG, (void **)&b.calls));
	memset(b.count, 0, b.grid * 4);
	b.calls[0] = 0;
	ASSERT_OK(uhmm_simdev_launch_blocks(f.dev, k_blocks, b.grid, b.block, &b));
	assert_int_equal(atomic_load(&b.bad), 0);
	for (uint64_t i = 0; i < b.grid; i++)
		assert_int_equal(b.count[i], 1);
	assert_int_equal(b.calls[0], (b.grid + b.block - 1) / b.block);
	struct uhmm_simdev_stats st = dstats(f.dev);
	assert_int_equal(st.work_items, b.grid); /* items, not blocks */

	/* One block bigger than the grid: one call (in the caller). */
	b.block = 1u << 20;
	b.calls[0] = 0;
	ASSERT_OK(uhmm_simdev_launch_blocks(f.dev, k_blocks, b.grid, b.block, &b));
	assert_int_equal(b.calls[0], 1);
	assert_int_equal(b.count[b.grid - 1], 2);
	assert_int_equal(atomic_load(&b.bad), 0);
	/* Nothing to run; bad arguments. */
	ASSERT_OK(uhmm_simdev_launch_blocks(f.dev, k_blocks, 0, 64, &b));
	assert_int_equal(uhmm_simdev_launch_blocks(f.dev, k_blocks, 10, 0, &b), -EINVAL);
	assert_int_equal(uhmm_simdev_launch_blocks(f.dev, NULL, 10, 1, &b), -EINVAL);
	assert_int_equal(uhmm_simdev_launch_blocks(NULL, k_blocks, 10, 1, &b), -EINVAL);
	teardown(&f);
}

/* One item (the caller's thread: one lane, one TLB) walks three arrays in
 * step: x[i], y[i], z[i], i over every word. */
struct three {
	uint64_t *x, *y, *z;
	size_t n;
	uint64_t sum;
};

static void k_three(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct three *t = arg;
	uint64_t s = 0;
	(void)idx;
	for (size_t i = 0; i < t->n; i++) {
		s += uhmm_simdev_ld64(wi, &t->x[i]);
		s += uhmm_simdev_ld64(wi, &t->y[i]);
		uhmm_simdev_st64(wi, &t->z[i], s);
	}
	t->sum = s;
}

static void tlb_keeps_three_2mib_aligned_arrays(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	struct three t = { .n = 2 * MiB / 8 };
	ASSERT_OK(uhmm_alloc(f.ctx, 2 * MiB, (void **)&t.x));
	ASSERT_OK(uhmm_alloc(f.ctx, 2 * MiB, (void **)&t.y));
	ASSERT_OK(uhmm_alloc(f.ctx, 2 * MiB, (void **)&t.z));
	/* Page i of each has the same low 9 bits of its page number. */
	assert_int_equal((uintptr_t)t.x % (2 * MiB), 0);
	assert_int_equal((uintptr_t)t.y % (2 * MiB), 0);
	assert_int_equal((uintptr_t)t.z % (2 * MiB), 0);
	for (size_t i = 0; i < t.n; i++) {
		t.x[i] = 1;
		t.y[i] = 2;
	}
	ASSERT_OK(uhmm_migrate(f.ctx, t.x, 2 * MiB, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, t.y, 2 * MiB, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, t.z, 2 * MiB, f.dev, 0));
	struct uhmm_simdev_stats a = dstats(f.dev);
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_three, 1, &t));
	struct uhmm_simdev_stats b = dstats(f.dev);
	uint64_t hits = b.tlb_hits - a.tlb_hits, misses = b.tlb_misses - a.tlb_misses;
	/* Every access is counted once, and once more after each device
	 * fault (the access is translated again when the fault replays). */
	assert_int_equal(hits + misses, 3 * t.n + (b.faults - a.faults));
	/* 3 pages a step of 512 words: a miss per page (a direct-mapped TLB
	 * indexed by the low bits missed on every access here). */
	assert_true(misses <= 3 * (t.n / 512) + 16);
	if (inline_path_on())
		assert_true(b.tlb_lane_hits - a.tlb_lane_hits >= 3 * t.n - 2 * misses);
	assert_int_equal(t.sum, 3 * t.n);
	assert_int_equal(t.z[t.n - 1], 3 * t.n);
	teardown(&f);
}

/*
 * The inline path observes an invalidation: a kernel reads a
 * device-resident page through its lane TLB (a cached translation); a CPU
 * thread migrates the page home and writes it; the kernel's next load must
 * see the CPU's value and its store must reach the page in system memory.
 * A stale translation would read and write the freed device frame.
 */
struct inval {
	struct fixture *f;
	uint64_t *page;
	_Atomic int phase;  /* 1: kernel holds the translation; 2: CPU done */
	uint64_t seen_before, seen_after;
	int err;
};

static void k_inval(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct inval *v = arg;
	(void)idx;
	for (int i = 0; i < 100; i++) /* hits: the translation is cached */
		v->seen_before = uhmm_simdev_ld64(wi, v->page);
	atomic_store(&v->phase, 1);
	while (atomic_load(&v->phase) != 2)
		sched_yield();
	v->seen_after = uhmm_simdev_ld64(wi, v->page);
	uhmm_simdev_st64(wi, &v->page[1], 3);
}

static void *inval_cpu(void *arg)
{
	struct inval *v = arg;
	while (atomic_load(&v->phase) != 1)
		sched_yield();
	v->err = uhmm_migrate(v->f->ctx, v->page, PG, NULL, 0);
	v->page[0] = 2; /* system memory now */
	atomic_store(&v->phase, 2);
	return NULL;
}

static void invalidation_is_seen_by_the_inline_path(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB);
	struct inval v = { .f = &f };
	ASSERT_OK(uhmm_alloc(f.ctx, PG, (void **)&v.page));
	v.page[0] = 1;
	v.page[1] = 0;
	ASSERT_OK(uhmm_migrate(f.ctx, v.page, PG, f.dev, 0));
	struct uhmm_simdev_stats a = dstats(f.dev);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, inval_cpu, &v), 0);
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_inval, 1, &v));
	pthread_join(t, NULL);
	ASSERT_OK(v.err);
	struct uhmm_simdev_stats b = dstats(f.dev);
	if (inline_path_on())
		assert_true(b.tlb_lane_hits - a.tlb_lane_hits >= 99);
	assert_int_equal(v.seen_before, 1);
	assert_int_equal(v.seen_after, 2);
	assert_int_equal(v.page[1], 3);
	assert_int_equal(v.page[0], 2);
	teardown(&f);
}

/* ---- signals ------------------------------------------------------------ */

static sigjmp_buf app_env;
static volatile sig_atomic_t app_handled;

static void app_segv(int sig)
{
	app_handled = 1;
	siglongjmp(app_env, 1);
}

static void application_sigsegv_still_reaches_its_handler(void **state)
{
	struct sigaction sa, old;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = app_segv;
	sa.sa_flags = SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGSEGV, &sa, &old), 0);
	struct fixture f;
	setup(&f, 64 * MiB); /* simdev's handler chains to app_segv */
	char *hole = mmap(NULL, PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(hole != MAP_FAILED);
	if (sigsetjmp(app_env, 1) == 0)
		*(volatile char *)hole = 1;
	assert_int_equal(app_handled, 1);
	munmap(hole, PG);
	teardown(&f);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(saxpy_on_managed_memory),
	cmocka_unit_test(histogram_with_atomics),
	cmocka_unit_test(atomics_cas_xchg_add_are_exact),
	cmocka_unit_test(copy_crosses_pages_at_any_alignment),
	cmocka_unit_test(eight_work_items_one_page_one_resolution),
	cmocka_unit_test(relaunch_on_unchanged_mirror_walks_nothing),
	cmocka_unit_test(migrate_policy_moves_pages_to_device),
	cmocka_unit_test(map_remote_policy_keeps_pages_in_system_memory),
	cmocka_unit_test(advice_applies_per_range),
	cmocka_unit_test(device_memory_full_evicts),
	cmocka_unit_test(invalidation_shoots_down_tlb),
	cmocka_unit_test(cpu_write_racing_device_access_is_not_lost),
	cmocka_unit_test(munmap_while_kernel_runs_fails_cleanly),
	cmocka_unit_test(madvise_while_kernel_runs_sees_new_state_or_fails),
	cmocka_unit_test(mremap_while_kernel_runs),
	cmocka_unit_test(access_to_unmapped_memory_ends_kernel_with_efault),
	cmocka_unit_test(access_to_unmanaged_memory_maps_it_remotely),
	cmocka_unit_test(vanished_system_page_ends_kernel_not_process),
	cmocka_unit_test(write_to_readonly_memory_is_eperm),
	cmocka_unit_test(unaligned_access_is_einval),
	cmocka_unit_test(launch_and_advise_reject_bad_arguments),
	cmocka_unit_test(tiny_device_computes_the_same),
	cmocka_unit_test(one_item_launch_runs_in_the_callers_thread),
	cmocka_unit_test(application_sigsegv_still_reaches_its_handler),
	cmocka_unit_test(float_and_double_accessors),
	cmocka_unit_test(float_atomic_add_from_many_items_is_exact),
	cmocka_unit_test(vector_helpers_within_and_across_pages),
	cmocka_unit_test(block_launch_covers_every_item_once),
	cmocka_unit_test(tlb_keeps_three_2mib_aligned_arrays),
	cmocka_unit_test(invalidation_is_seen_by_the_inline_path),
};

UHMM_TEST_MAIN(tests)
