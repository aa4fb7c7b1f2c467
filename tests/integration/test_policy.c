/* SPDX-License-Identifier: MIT */
/*
 * test_policy.c - the policy layer (uhmm/policy.h): plug-ins change the
 * decisions of CPU faults, device faults and eviction; a misbehaving one is
 * ejected and the built-in policy takes over with nothing lost; a policy
 * can be loaded from a shared object named by UHMM_POLICY.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uhmm/device.h>
#include <uhmm/policy.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "testlib.h"

#define PG 4096ul
#define BLK (2ul << 20)

static uhmm_ctx *mkctx(uint64_t dev_bytes, uhmm_device **dev)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.fault_around = 16;
	o.readahead_pages = 0;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = dev_bytes;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, dev));
	return ctx;
}

static uint64_t ejections(uhmm_ctx *ctx)
{
	struct uhmm_stats st;
	ASSERT_OK(uhmm_stats_get(ctx, &st));
	return st.policy_ejections;
}

/* ---- plug-ins ----------------------------------------------------------- */

static _Atomic int inits, exits, calls;

static void *count_init(const void *arg, int *err)
{
	(void)err;
	atomic_fetch_add(&inits, 1);
	return (void *)arg;
}

static void count_exit(void *st)
{
	(void)st;
	atomic_fetch_add(&exits, 1);
}

/* Only the faulting page comes home. */
static int one_page(void *st, const struct uhmm_pol_cpu_fault *f, struct uhmm_pol_cpu_act *a)
{
	(void)st;
	atomic_fetch_add(&calls, 1);
	a->lo = f->addr & ~(PG - 1);
	a->hi = a->lo + PG;
	a->ahead_lo = a->ahead_hi = 0;
	return 0;
}

/* A window that does not contain the faulting page. */
static int bad_window(void *st, const struct uhmm_pol_cpu_fault *f, struct uhmm_pol_cpu_act *a)
{
	(void)st;
	(void)f;
	a->hi = a->lo; /* empty */
	return 0;
}

static int fails(void *st, const struct uhmm_pol_cpu_fault *f, struct uhmm_pol_cpu_act *a)
{
	(void)st;
	(void)f;
	(void)a;
	return -EIO;
}

static int slow(void *st, const struct uhmm_pol_cpu_fault *f, struct uhmm_pol_cpu_act *a)
{
	(void)st;
	(void)f;
	(void)a;
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	return 0;
}

static struct uhmm_policy_ops ops_of(const char *name)
{
	return (struct uhmm_policy_ops){ .version = UHMM_POLICY_VERSION,
					 .size = sizeof(struct uhmm_policy_ops),
					 .name = name, .init = count_init, .exit = count_exit };
}

/* ---- installing --------------------------------------------------------- */

static void *refuse_init(const void *arg, int *err)
{
	(void)arg;
	*err = -ENOTSUP;
	return NULL;
}

/* Bad structs are refused and change nothing; an init that refuses keeps
 * the old policy; the built-in one is called "default". */
static void set_checks_what_it_installs(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	struct uhmm_policy_info pi;
	ASSERT_OK(uhmm_policy_get(ctx, &pi));
	assert_string_equal(pi.name, "default");
	assert_int_equal(uhmm_policy_get(ctx, NULL), -EINVAL);

	struct uhmm_policy_ops o = ops_of("mine");
	o.version = 99;
	assert_int_equal(uhmm_policy_set(ctx, &o, NULL), -EINVAL);
	o = ops_of("mine");
	o.size = 8;
	assert_int_equal(uhmm_policy_set(ctx, &o, NULL), -EINVAL);
	o = ops_of("mine");
	ASSERT_OK(uhmm_policy_set(ctx, &o, NULL));
	ASSERT_OK(uhmm_policy_get(ctx, &pi));
	assert_string_equal(pi.name, "mine");

	struct uhmm_policy_ops r = ops_of("refuses");
	r.init = refuse_init;
	assert_int_equal(uhmm_policy_set(ctx, &r, NULL), -ENOTSUP);
	ASSERT_OK(uhmm_policy_get(ctx, &pi));
	assert_string_equal(pi.name, "mine");

	atomic_store(&exits, 0);
	ASSERT_OK(uhmm_policy_set(ctx, NULL, NULL));
	assert_int_equal(atomic_load(&exits), 1);
	ASSERT_OK(uhmm_policy_get(ctx, &pi));
	assert_string_equal(pi.name, "default");
	assert_int_equal(pi.ejections, 0);
	assert_int_equal(uhmm_policy_set(NULL, &o, NULL), -EBADF);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* The plug-in's exit() runs at context destroy. */
static void destroy_exits_the_policy(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	struct uhmm_policy_ops o = ops_of("mine");
	atomic_store(&inits, 0);
	atomic_store(&exits, 0);
	ASSERT_OK(uhmm_policy_set(ctx, &o, NULL));
	assert_int_equal(atomic_load(&inits), 1);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	assert_int_equal(atomic_load(&exits), 1);
}

/* ---- CPU faults --------------------------------------------------------- */

/* 64 pages on the device; touch page 5; count what came home. */
static size_t touch_one(uhmm_ctx *ctx, uhmm_device *dev, char *p, uint64_t seed)
{
	uhmm_test_fill(p, 64 * PG, seed);
	ASSERT_OK(uhmm_migrate(ctx, p, 64 * PG, dev, 0));
	assert_int_equal(uhmm_test_pages_on(ctx, p, 64 * PG, dev), 64);
	(void)*(volatile char *)(p + 5 * PG);
	size_t home = uhmm_test_pages_on(ctx, p, 64 * PG, NULL);
	uhmm_test_assert_data(p, 0, 64 * PG, seed);
	return home;
}

/* The built-in policy brings the fault-around block (16 pages); a plug-in
 * that says "the page alone" brings one. */
static void cpu_fault_plugin_decides_the_window(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 64 * PG, (void **)&p));
	assert_int_equal(touch_one(ctx, dev, p, 1), 16);
	struct uhmm_policy_ops o = ops_of("one-page");
	o.cpu_fault = one_page;
	atomic_store(&calls, 0);
	ASSERT_OK(uhmm_policy_set(ctx, &o, NULL));
	assert_int_equal(touch_one(ctx, dev, p, 2), 1);
	assert_true(atomic_load(&calls) >= 1);
	assert_int_equal(ejections(ctx), 0);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* Ejected: an invalid decision, an error, a call over budget.  The fault
 * is served by the built-in decision (data right, 16 pages home), the
 * reason is kept, counted once, and the built-in policy stays. */
static void check_ejected(int (*cb)(void *, const struct uhmm_pol_cpu_fault *,
				    struct uhmm_pol_cpu_act *),
			  const char *why)
{
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 64 * PG, (void **)&p));
	struct uhmm_policy_ops o = ops_of("bad");
	o.cpu_fault = cb;
	atomic_store(&exits, 0);
	ASSERT_OK(uhmm_policy_set(ctx, &o, NULL));
	assert_int_equal(touch_one(ctx, dev, p, 3), 16);
	assert_int_equal(ejections(ctx), 1);
	struct uhmm_policy_info pi;
	ASSERT_OK(uhmm_policy_get(ctx, &pi));
	assert_string_equal(pi.name, "default");
	assert_int_equal(pi.ejections, 1);
	if (!strstr(pi.ejected, why) || !strstr(pi.ejected, "bad: cpu_fault"))
		fail_msg("ejection reason \"%s\", expected \"%s\"", pi.ejected, why);
	/* Still the built-in policy, still right. */
	assert_int_equal(touch_one(ctx, dev, p, 4), 16);
	assert_int_equal(ejections(ctx), 1);
	/* The ejected plug-in's exit() ran at the next install, once. */
	ASSERT_OK(uhmm_policy_set(ctx, NULL, NULL));
	assert_int_equal(atomic_load(&exits), 1);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static void invalid_decision_ejects(void **state)
{
	(void)state;
	check_ejected(bad_window, "invalid window");
}

static void error_ejects(void **state)
{
	(void)state;
	check_ejected(fails, "returned -5");
}

static void overrun_ejects(void **state)
{
	(void)state;
	setenv("UHMM_POLICY_BUDGET_US", "1000", 1);
	check_ejected(slow, "budget 1000 us");
	unsetenv("UHMM_POLICY_BUDGET_US");
}

/* ---- eviction ----------------------------------------------------------- */

/* Most recently used first. */
static int mru(void *st, uhmm_loc dev, uint64_t need, const struct uhmm_pol_block *c,
	       size_t n, uint32_t *order)
{
	(void)st;
	(void)dev;
	(void)need;
	for (size_t i = 0; i < n; i++)
		order[i] = (uint32_t)i;
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (c[order[j]].last_use > c[order[i]].last_use) {
				uint32_t t = order[i];
				order[i] = order[j];
				order[j] = t;
			}
	return 0;
}

static int not_a_permutation(void *st, uhmm_loc dev, uint64_t need,
			     const struct uhmm_pol_block *c, size_t n, uint32_t *order)
{
	(void)st;
	(void)dev;
	(void)need;
	(void)c;
	for (size_t i = 0; i < n; i++)
		order[i] = 0;
	return 0;
}

/* A device of two blocks holds A (older) and B; C arrives: the built-in
 * policy evicts A, an MRU plug-in B, an invalid plug-in is ejected and A
 * goes (data right in every case). */
static void evict_order(const struct uhmm_policy_ops *o, bool b_goes, uint64_t ej)
{
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(4ul << 20, &dev);
	if (o)
		ASSERT_OK(uhmm_policy_set(ctx, o, NULL));
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 3 * BLK, (void **)&p));
	uhmm_test_fill(p, 3 * BLK, 7);
	char *a = p, *b = p + BLK, *c = p + 2 * BLK;
	ASSERT_OK(uhmm_migrate(ctx, a, BLK, dev, 0));
	ASSERT_OK(uhmm_migrate(ctx, b, BLK, dev, 0));
	ASSERT_OK(uhmm_migrate(ctx, c, BLK, dev, 0));
	assert_int_equal(uhmm_test_pages_on(ctx, c, BLK, dev), BLK / PG);
	assert_int_equal(uhmm_test_pages_on(ctx, a, BLK, dev), b_goes ? BLK / PG : 0);
	assert_int_equal(uhmm_test_pages_on(ctx, b, BLK, dev), b_goes ? 0 : BLK / PG);
	assert_int_equal(ejections(ctx), ej);
	uhmm_test_assert_data(p, 0, 3 * BLK, 7);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static void evict_order_builtin_is_lru(void **state)
{
	(void)state;
	evict_order(NULL, false, 0);
}

static void evict_order_plugin_picks_victims(void **state)
{
	(void)state;
	struct uhmm_policy_ops o = ops_of("mru");
	o.evict_order = mru;
	evict_order(&o, true, 0);
}

static void evict_order_invalid_is_ejected(void **state)
{
	(void)state;
	struct uhmm_policy_ops o = ops_of("dup");
	o.evict_order = not_a_permutation;
	evict_order(&o, false, 1);
}

/* ---- device faults ------------------------------------------------------ */

static int remote_all(void *st, uhmm_loc dev, const struct uhmm_pol_dev_fault *f, size_t n,
		      struct uhmm_pol_dev_act *a)
{
	(void)st;
	(void)dev;
	(void)f;
	for (size_t i = 0; i < n; i++)
		a[i].action = UHMM_POL_MAP_REMOTE;
	return 0;
}

static int migrate_page(void *st, uhmm_loc dev, const struct uhmm_pol_dev_fault *f, size_t n,
			struct uhmm_pol_dev_act *a)
{
	(void)st;
	(void)dev;
	for (size_t i = 0; i < n; i++)
		a[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MIGRATE, .lo = f[i].addr,
						  .hi = f[i].addr + PG };
	return 0;
}

static int migrate_outside(void *st, uhmm_loc dev, const struct uhmm_pol_dev_fault *f, size_t n,
			   struct uhmm_pol_dev_act *a)
{
	(void)st;
	(void)dev;
	for (size_t i = 0; i < n; i++)
		a[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MIGRATE, .lo = f[i].hi,
						  .hi = f[i].hi + PG };
	return 0;
}

struct rd {
	uint64_t *buf;
	_Atomic uint64_t sum;
};

static void k_read(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct rd *r = arg;
	atomic_fetch_add_explicit(&r->sum, uhmm_simdev_ld64(wi, &r->buf[idx * (PG / 8)]),
				  memory_order_relaxed);
}

/* A kernel reads one word of each of 64 pages; returns the pages the
 * device holds after it and checks the sum. */
static size_t run_kernel(const struct uhmm_policy_ops *o, uint64_t ej)
{
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	if (o)
		ASSERT_OK(uhmm_policy_set(ctx, o, NULL));
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, 64 * PG, (void **)&p));
	uint64_t want = 0;
	for (size_t i = 0; i < 64; i++) {
		p[i * (PG / 8)] = i + 1;
		want += i + 1;
	}
	struct rd r = { .buf = p };
	ASSERT_OK(uhmm_simdev_launch(dev, k_read, 64, &r));
	assert_int_equal(atomic_load(&r.sum), want);
	size_t on = uhmm_test_pages_on(ctx, p, 64 * PG, dev);
	assert_int_equal(ejections(ctx), ej);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	return on;
}

static void dev_fault_plugin_decides(void **state)
{
	(void)state;
	/* Built-in: migrate on touch, the whole (64-page) range. */
	assert_int_equal(run_kernel(NULL, 0), 64);
	struct uhmm_policy_ops o = ops_of("remote");
	o.dev_faults = remote_all;
	assert_int_equal(run_kernel(&o, 0), 0);
	o = ops_of("page");
	o.dev_faults = migrate_page;
	size_t on = run_kernel(&o, 0);
	/* Each faulting page alone (the lanes fault on every page). */
	assert_true(on >= 1 && on <= 64);
	o = ops_of("outside");
	o.dev_faults = migrate_outside;
	assert_int_equal(run_kernel(&o, 1), 64);
}

/* Duplication is a verb of the policy: a plug-in answers read faults
 * UHMM_POL_DUPLICATE on memory nobody advised read-mostly. */
/* Each fault's span duplicated: the reads only, or (invalid) every fault. */
static int dup_span(const struct uhmm_pol_dev_fault *f, size_t n, struct uhmm_pol_dev_act *a,
		    bool writes_too)
{
	for (size_t i = 0; i < n; i++)
		a[i] = (struct uhmm_pol_dev_act){
			.action = writes_too || f[i].access == UHMM_POL_READ ? UHMM_POL_DUPLICATE
									     : UHMM_POL_MIGRATE,
			.lo = f[i].lo, .hi = f[i].hi };
	return 0;
}

static int dup_reads(void *st, uhmm_loc dev, const struct uhmm_pol_dev_fault *f, size_t n,
		     struct uhmm_pol_dev_act *a)
{
	(void)st;
	(void)dev;
	return dup_span(f, n, a, false);
}

static int dup_all(void *st, uhmm_loc dev, const struct uhmm_pol_dev_fault *f, size_t n,
		   struct uhmm_pol_dev_act *a)
{
	(void)st;
	(void)dev;
	return dup_span(f, n, a, true);
}

static void k_write_idx(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct rd *r = arg;
	uhmm_simdev_st64(wi, &r->buf[idx * (PG / 8)], 1000 + idx);
}

static void dev_fault_plugin_duplicates(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	struct uhmm_policy_ops o = ops_of("dup");
	o.dev_faults = dup_reads;
	ASSERT_OK(uhmm_policy_set(ctx, &o, NULL));
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, 64 * PG, (void **)&p));
	uint64_t want = 0;
	for (size_t i = 0; i < 64; i++) {
		p[i * (PG / 8)] = i + 1;
		want += i + 1;
	}
	struct rd r = { .buf = p };
	ASSERT_OK(uhmm_simdev_launch(dev, k_read, 64, &r));
	assert_int_equal(atomic_load(&r.sum), want);
	/* The CPU keeps every page; the device reads its duplicates. */
	struct uhmm_range_attrs at;
	ASSERT_OK(uhmm_range_attrs(ctx, p, 64 * PG, &at));
	assert_int_equal(at.read_mostly, UHMM_ATTR_NONE);
	assert_int_equal(at.bytes_cpu, 64 * PG);
	assert_int_equal(at.bytes_duplicated, 64 * PG);
	assert_int_equal(uhmm_test_pages_on(ctx, p, 64 * PG, dev), 0);
	/* A CPU write collapses its page, and the device reads it. */
	p[3 * (PG / 8)] = 500;
	want += 500 - 4;
	ASSERT_OK(uhmm_range_attrs(ctx, p, 64 * PG, &at));
	assert_int_equal(at.bytes_duplicated, 63 * PG);
	atomic_store(&r.sum, 0);
	ASSERT_OK(uhmm_simdev_launch(dev, k_read, 64, &r));
	assert_int_equal(atomic_load(&r.sum), want);
	/* A device write moves the pages (a migration, not a duplicate). */
	ASSERT_OK(uhmm_simdev_launch(dev, k_write_idx, 64, &r));
	ASSERT_OK(uhmm_range_attrs(ctx, p, 64 * PG, &at));
	assert_int_equal(at.bytes_duplicated, 0);
	assert_int_equal(uhmm_test_pages_on(ctx, p, 64 * PG, dev), 64);
	for (size_t i = 0; i < 64; i++)
		assert_int_equal(p[i * (PG / 8)], 1000 + i);
	assert_int_equal(ejections(ctx), 0);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* A duplicate for a write fault is an invalid decision: ejected, and the
 * write lands (the built-in policy serves it). */
static void dev_fault_duplicate_on_write_ejects(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	struct uhmm_policy_ops o = ops_of("dupw");
	o.dev_faults = dup_all;
	ASSERT_OK(uhmm_policy_set(ctx, &o, NULL));
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, 64 * PG, (void **)&p));
	memset(p, 0, 64 * PG);
	struct rd r = { .buf = p };
	ASSERT_OK(uhmm_simdev_launch(dev, k_write_idx, 64, &r));
	for (size_t i = 0; i < 64; i++)
		assert_int_equal(p[i * (PG / 8)], 1000 + i);
	assert_int_equal(ejections(ctx), 1);
	struct uhmm_policy_info pi;
	ASSERT_OK(uhmm_policy_get(ctx, &pi));
	assert_non_null(strstr(pi.ejected, "dev_faults"));
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* The backend's question checks its arguments. */
static void fault_policy_checks_arguments(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	struct uhmm_pol_dev_act a;
	assert_int_equal(uhmm_device_fault_policy(dev, NULL, 1, &a), -EINVAL);
	ASSERT_OK(uhmm_device_fault_policy(dev, NULL, 0, NULL));
	assert_true(uhmm_device_id(dev) >= 1);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* ---- swapping under load ------------------------------------------------ */

struct load {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *p;
	_Atomic bool stop;
	_Atomic unsigned rounds;
	_Atomic int err;
};

static void *faulter(void *arg)
{
	struct load *l = arg;
	while (!atomic_load(&l->stop)) {
		int err = uhmm_migrate(l->ctx, l->p, 64 * PG, l->dev, 0);
		if (err) {
			atomic_store(&l->err, err);
			break;
		}
		for (size_t i = 0; i < 64; i += 3)
			(void)*(volatile char *)(l->p + i * PG);
		atomic_fetch_add(&l->rounds, 1);
	}
	return NULL;
}

/* Policies swapped while faults are served: each installed policy's exit()
 * runs exactly once, after its last call. */
static void swap_under_load(void **state)
{
	(void)state;
	struct load l = { 0 };
	l.ctx = mkctx(16ul << 20, &l.dev);
	ASSERT_OK(uhmm_alloc(l.ctx, 64 * PG, (void **)&l.p));
	uhmm_test_fill(l.p, 64 * PG, 9);
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, faulter, &l), 0);
	atomic_store(&inits, 0);
	atomic_store(&exits, 0);
	struct uhmm_policy_ops o = ops_of("swap");
	o.cpu_fault = one_page;
	/* 50 swaps, spread over at least 20 rounds of faults. */
	for (int i = 0; i < 50; i++) {
		while (atomic_load(&l.rounds) < (unsigned)i * 20 / 50 && !atomic_load(&l.err))
			sched_yield();
		ASSERT_OK(uhmm_policy_set(l.ctx, i % 2 ? NULL : &o, NULL));
	}
	atomic_store(&l.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(atomic_load(&l.err), 0);
	assert_true(atomic_load(&l.rounds) >= 19);
	assert_int_equal(atomic_load(&inits), 25);
	assert_int_equal(atomic_load(&exits), 25);
	uhmm_test_assert_data(l.p, 0, 64 * PG, 9);
	ASSERT_OK(uhmm_free(l.ctx, l.p));
	ASSERT_OK(uhmm_ctx_destroy(l.ctx));
}

/* ---- thrashing and notifications ----------------------------------------- */

struct wr {
	uint64_t *buf;
	uint64_t val;
};

static void k_write(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct wr *w = arg;
	uint64_t *p = &w->buf[idx * (PG / 8)];
	uhmm_simdev_st64(wi, p, uhmm_simdev_ld64(wi, p) + w->val);
}

/* The device and the CPU take turns writing 16 pages, 40 rounds.  Returns
 * the device's migrations; checks the data every round. */
static uint64_t ping_pong(uint64_t *pins)
{
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, 16 * PG, (void **)&p));
	uint64_t want = 0;
	for (int round = 0; round < 40; round++) {
		struct wr w = { .buf = p, .val = 1 };
		ASSERT_OK(uhmm_simdev_launch(dev, k_write, 16, &w));
		want += 1;
		for (size_t i = 0; i < 16; i++) {
			assert_int_equal(p[i * (PG / 8)], want);
			p[i * (PG / 8)] += 2;
		}
		want += 2;
	}
	struct uhmm_simdev_stats ss;
	ASSERT_OK(uhmm_simdev_stats(dev, &ss));
	struct uhmm_stats st;
	ASSERT_OK(uhmm_stats_get(ctx, &st));
	*pins = st.thrash_pins;
	if (st.thrash_pins)
		assert_true(st.thrash_detections >= st.thrash_pins);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	return ss.migrations;
}

/* Thrashing control: the built-in policy notices the ping-pong, throttles,
 * then pins the pages to system memory and the device maps them
 * remotely: migrations stop.  Off: every round migrates.  (A window of 10 s
 * so that the detection does not depend on the machine's speed.) */
static void ping_pong_is_pinned(void **state)
{
	(void)state;
	setenv("UHMM_THRASH_WINDOW_US", "10000000", 1);
	setenv("UHMM_THRASH_PIN_AFTER", "2", 1);
	setenv("UHMM_THRASH_NAP_US", "10", 1);
	setenv("UHMM_THRASH_PIN_MS", "60000", 1);
	uint64_t pins;
	uint64_t on = ping_pong(&pins);
	assert_true(pins >= 1);
	setenv("UHMM_THRASH", "0", 1);
	uint64_t off = ping_pong(&pins);
	assert_int_equal(pins, 0);
	unsetenv("UHMM_THRASH");
	unsetenv("UHMM_THRASH_WINDOW_US");
	unsetenv("UHMM_THRASH_PIN_AFTER");
	unsetenv("UHMM_THRASH_NAP_US");
	unsetenv("UHMM_THRASH_PIN_MS");
	print_message("migrations: %llu with thrashing control, %llu without\n",
		      (unsigned long long)on, (unsigned long long)off);
	assert_true(off >= 40);
	assert_true(on <= 10);
}

static _Atomic uint64_t to_dev, to_cpu;

static void count_moves(void *st, uint64_t addr, uint64_t len, uhmm_loc from, uhmm_loc to,
			uint64_t t)
{
	(void)st;
	(void)addr;
	(void)from;
	(void)t;
	atomic_fetch_add(to ? &to_dev : &to_cpu, len);
}

/* A plug-in hears of every migration: explicit, and a CPU fault's. */
static void plugin_hears_migrations(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	struct uhmm_policy_ops o = ops_of("ears");
	o.migrated = count_moves;
	ASSERT_OK(uhmm_policy_set(ctx, &o, NULL));
	atomic_store(&to_dev, 0);
	atomic_store(&to_cpu, 0);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 64 * PG, (void **)&p));
	uhmm_test_fill(p, 64 * PG, 6);
	ASSERT_OK(uhmm_migrate(ctx, p, 64 * PG, dev, 0));
	assert_int_equal(atomic_load(&to_dev), 64 * PG);
	(void)*(volatile char *)(p + 5 * PG);
	/* (Told after the faulting thread resumes: wait, with a bound for
	 * liveness only.) */
	for (int i = 0; i < 10000 && atomic_load(&to_cpu) < 16 * PG; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&to_cpu), 16 * PG);
	ASSERT_OK(uhmm_migrate(ctx, p, 64 * PG, NULL, 0));
	assert_int_equal(atomic_load(&to_cpu), 64 * PG);
	uhmm_test_assert_data(p, 0, 64 * PG, 6);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* ---- the prefetcher ------------------------------------------------------- */

struct seq {
	uint64_t *buf;
	size_t pages;
	uint64_t sum;
};

/* One work item reads one word of each page in order: its faults come
 * one at a time. */
static void k_seq(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	(void)idx;
	struct seq *q = arg;
	for (size_t i = 0; i < q->pages; i++)
		q->sum += uhmm_simdev_ld64(wi, &q->buf[i * (PG / 8)]);
}

/* The device's faults on a sequential scan of 64 pages at a prefetch
 * threshold (UHMM_PREFETCH_THRESHOLD). */
static uint64_t seq_faults(const char *threshold)
{
	setenv("UHMM_PREFETCH_THRESHOLD", threshold, 1);
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	unsetenv("UHMM_PREFETCH_THRESHOLD");
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, 64 * PG, (void **)&p));
	for (size_t i = 0; i < 64; i++)
		p[i * (PG / 8)] = i;
	struct seq q = { .buf = p, .pages = 64 };
	ASSERT_OK(uhmm_simdev_launch(dev, k_seq, 1, &q));
	assert_int_equal(q.sum, 63 * 64 / 2);
	assert_int_equal(uhmm_test_pages_on(ctx, p, 64 * PG, dev), 64);
	struct uhmm_simdev_stats ss;
	ASSERT_OK(uhmm_simdev_stats(dev, &ss));
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	return ss.migrations;
}

/* Threshold 100: every page faults alone (64 migrations).  51 (UVM's):
 * each fault brings twice what is there (pages 0, 1, 2-3, 4-7, ..., 32-63:
 * 7).  0: the whole span at the first fault. */
static void prefetcher_grows_a_sequential_scan(void **state)
{
	(void)state;
	uint64_t all = seq_faults("100"), uvm = seq_faults("51"), whole = seq_faults("0");
	print_message("migrations: %llu (page), %llu (51 %%), %llu (span)\n",
		      (unsigned long long)all, (unsigned long long)uvm,
		      (unsigned long long)whole);
	assert_int_equal(all, 64);
	assert_int_equal(uvm, 7);
	assert_int_equal(whole, 1);
}

/* ---- UHMM_POLICY -------------------------------------------------------- */

#ifdef TEST_POLICY_SO
/* The shared object's policy brings the faulting page alone. */
static void env_loads_a_shared_object(void **state)
{
	(void)state;
	setenv("UHMM_POLICY", TEST_POLICY_SO, 1);
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	unsetenv("UHMM_POLICY");
	struct uhmm_policy_info pi;
	ASSERT_OK(uhmm_policy_get(ctx, &pi));
	assert_string_equal(pi.name, "test-one-page");
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 64 * PG, (void **)&p));
	assert_int_equal(touch_one(ctx, dev, p, 5), 1);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}
#endif

/* A name that does not load: the context is created with the built-in
 * policy (the message is on stderr). */
static void env_bad_object_falls_back(void **state)
{
	(void)state;
	setenv("UHMM_POLICY", "/nonexistent/policy.so", 1);
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	unsetenv("UHMM_POLICY");
	struct uhmm_policy_info pi;
	ASSERT_OK(uhmm_policy_get(ctx, &pi));
	assert_string_equal(pi.name, "default");
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(set_checks_what_it_installs),
	cmocka_unit_test(destroy_exits_the_policy),
	cmocka_unit_test(cpu_fault_plugin_decides_the_window),
	cmocka_unit_test(invalid_decision_ejects),
	cmocka_unit_test(error_ejects),
	cmocka_unit_test(overrun_ejects),
	cmocka_unit_test(evict_order_builtin_is_lru),
	cmocka_unit_test(evict_order_plugin_picks_victims),
	cmocka_unit_test(evict_order_invalid_is_ejected),
	cmocka_unit_test(dev_fault_plugin_decides),
	cmocka_unit_test(dev_fault_plugin_duplicates),
	cmocka_unit_test(dev_fault_duplicate_on_write_ejects),
	cmocka_unit_test(fault_policy_checks_arguments),
	cmocka_unit_test(swap_under_load),
	cmocka_unit_test(ping_pong_is_pinned),
	cmocka_unit_test(prefetcher_grows_a_sequential_scan),
	cmocka_unit_test(plugin_hears_migrations),
#ifdef TEST_POLICY_SO
	cmocka_unit_test(env_loads_a_shared_object),
#endif
	cmocka_unit_test(env_bad_object_falls_back),
};

UHMM_TEST_MAIN(tests)
