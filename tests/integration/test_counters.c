/* SPDX-License-Identifier: MIT */
/*
 * test_counters.c - issue 17's atomics policy, accessed-by advice and
 * access counters: the policy (uhmm/policy.h) chooses what a device atomic
 * does; a device advised to access a range keeps a mapping of it wherever
 * the pages move; simdev counts remote accesses and the policy migrates hot
 * regions.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <uhmm/device.h>
#include <uhmm/policy.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "testlib.h"

#define PG 4096ul
#define BLK (2ul << 20)

static uint32_t ctx_flags; /* UHMM_CTX_SIGBUS for the runs in that mode */

static uhmm_ctx *mkctx(uint64_t dev_bytes, uhmm_device **dev)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = ctx_flags;
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

static struct uhmm_simdev_stats sdstats(uhmm_device *dev)
{
	struct uhmm_simdev_stats s;
	ASSERT_OK(uhmm_simdev_stats(dev, &s));
	return s;
}

static struct uhmm_policy_ops ops_of(const char *name)
{
	struct uhmm_policy_ops o;
	memset(&o, 0, sizeof(o));
	o.version = UHMM_POLICY_VERSION;
	o.size = sizeof(o);
	o.name = name;
	return o;
}

/* ---- the atomics policy ------------------------------------------------- */

static _Atomic unsigned far_seen;

/* Atomics far from the device: migrate the page (the built-in policy takes
 * pages the CPU has exclusively). */
static int atomics_migrate(void *st, uhmm_loc dev, const struct uhmm_pol_dev_fault *f,
			   size_t n, struct uhmm_pol_dev_act *a)
{
	(void)st;
	(void)dev;
	for (size_t i = 0; i < n; i++) {
		if (!(f[i].flags & UHMM_POL_F_ATOMIC_FAR))
			continue;
		atomic_fetch_add(&far_seen, 1);
		if (f[i].access != UHMM_POL_ATOMIC || a[i].action != UHMM_POL_EXCLUSIVE ||
		    !(f[i].flags & UHMM_POL_F_CPU_PRESENT))
			return -1; /* (the built-in answer is exclusive: pages present) */
		a[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MIGRATE, .lo = f[i].addr,
						  .hi = f[i].addr + PG };
	}
	return 0;
}

/* Invalid: an atomic far from the device cannot be mapped remotely. */
static int atomics_remote(void *st, uhmm_loc dev, const struct uhmm_pol_dev_fault *f,
			  size_t n, struct uhmm_pol_dev_act *a)
{
	(void)st;
	(void)dev;
	(void)f;
	for (size_t i = 0; i < n; i++)
		a[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_MAP_REMOTE };
	return 0;
}

/* Invalid: exclusive for a fault that is no far atomic. */
static int all_exclusive(void *st, uhmm_loc dev, const struct uhmm_pol_dev_fault *f,
			 size_t n, struct uhmm_pol_dev_act *a)
{
	(void)st;
	(void)dev;
	(void)f;
	for (size_t i = 0; i < n; i++)
		a[i] = (struct uhmm_pol_dev_act){ .action = UHMM_POL_EXCLUSIVE };
	return 0;
}

static void k_atomic(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	uint64_t *p = arg;
	uhmm_simdev_atomic_add64(wi, &p[idx * (PG / 8)], 1);
}

static void k_load(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	uint64_t *p = arg;
	(void)uhmm_simdev_ld64(wi, &p[idx * (PG / 8)]);
}

/* 16 pages the CPU wrote get one device atomic each; returns the pages
 * taken exclusively and sets *@on to the pages on the device after. */
static uint64_t atomics_run(const struct uhmm_policy_ops *o, uint64_t ej, size_t *on)
{
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	if (o)
		ASSERT_OK(uhmm_policy_set(ctx, o, NULL));
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, 16 * PG, (void **)&p));
	for (size_t i = 0; i < 16; i++)
		p[i * (PG / 8)] = i;
	ASSERT_OK(uhmm_simdev_launch(dev, k_atomic, 16, p));
	uint64_t excl = sdstats(dev).exclusive_pages;
	*on = uhmm_test_pages_on(ctx, p, 16 * PG, dev);
	for (size_t i = 0; i < 16; i++)
		assert_int_equal(p[i * (PG / 8)], i + 1);
	assert_int_equal(ejections(ctx), ej);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	return excl;
}

/* What a device atomic on system memory does is the policy's decision:
 * the built-in one takes pages the CPU has exclusively; a plug-in may
 * migrate them instead; an impossible answer ejects it and the built-in
 * one stands, with the right data either way. */
static void atomics_policy_is_the_policys(void **state)
{
	(void)state;
	size_t on;
	assert_int_equal(atomics_run(NULL, 0, &on), 16);
	assert_int_equal(on, 0);

	struct uhmm_policy_ops o = ops_of("atomics-migrate");
	o.dev_faults = atomics_migrate;
	atomic_store(&far_seen, 0);
	assert_int_equal(atomics_run(&o, 0, &on), 0);
	assert_int_equal(on, 16);
	assert_true(atomic_load(&far_seen) >= 1);

	o = ops_of("atomics-remote");
	o.dev_faults = atomics_remote;
	assert_true(atomics_run(&o, 1, &on) >= 1); /* ejected: exclusive after all */

	/* Exclusive is for far atomics only: a read fault answered so ejects. */
	o = ops_of("all-exclusive");
	o.dev_faults = all_exclusive;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
	ASSERT_OK(uhmm_policy_set(ctx, &o, NULL));
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, 16 * PG, (void **)&p));
	memset(p, 1, 16 * PG);
	ASSERT_OK(uhmm_simdev_launch(dev, k_load, 16, p));
	assert_int_equal(ejections(ctx), 1);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* ---- accessed-by advice ------------------------------------------------ */

struct sum {
	uint64_t *p;
	_Atomic uint64_t s;
};

static void k_sum(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct sum *r = arg;
	atomic_fetch_add(&r->s, uhmm_simdev_ld64(wi, &r->p[idx * (PG / 8)]));
}

/* Device faults of a kernel summing one word of each of @n pages; checks
 * the sum. */
static uint64_t faults_of_sum(uhmm_device *dev, uint64_t *p, size_t n, uint64_t want)
{
	uint64_t f0 = sdstats(dev).faults;
	struct sum r = { .p = p };
	ASSERT_OK(uhmm_simdev_launch(dev, k_sum, n, &r));
	assert_int_equal(atomic_load(&r.s), want);
	return sdstats(dev).faults - f0;
}

/* The CPU rewrites each page (bringing it home): word k becomes k + @add. */
static uint64_t cpu_rewrite(uint64_t *p, size_t n, uint64_t add)
{
	uint64_t want = 0;
	for (size_t k = 0; k < n; k++) {
		p[k * (PG / 8)] = k + add;
		want += k + add;
	}
	return want;
}

/* A device advised to access a range maps it at once and again wherever
 * its pages go, so it does not fault: after the advice, after a migration
 * to it, after the CPU took the pages back; without the advice (or after
 * its unset) the same sequence faults. */
static void accessed_by_run(void)
{
	const size_t n = 16;
	for (int advised = 0; advised < 2; advised++) {
		uhmm_device *dev;
		uhmm_ctx *ctx = mkctx(16ul << 20, &dev);
		uint64_t *p;
		ASSERT_OK(uhmm_alloc(ctx, n * PG, (void **)&p));
		uint64_t want = cpu_rewrite(p, n, 1);
		if (advised)
			ASSERT_OK(uhmm_advise(ctx, p, n * PG, UHMM_ADVISE_ACCESSED_BY, dev));
		uint64_t f = faults_of_sum(dev, p, n, want);
		assert_int_equal(uhmm_test_pages_on(ctx, p, n * PG, dev), advised ? 0 : n);
		if (advised) {
			assert_int_equal(f, 0); /* mapped remotely */
			ASSERT_OK(uhmm_migrate(ctx, p, n * PG, dev, 0));
			assert_int_equal(faults_of_sum(dev, p, n, want), 0);
		}
		/* The CPU takes them back (CPU faults, their fault-around). */
		want = cpu_rewrite(p, n, 100);
		f = faults_of_sum(dev, p, n, want);
		if (advised)
			assert_int_equal(f, 0);
		else
			assert_true(f > 0);
		struct uhmm_range_attrs at;
		ASSERT_OK(uhmm_range_attrs(ctx, p, n * PG, &at));
		unsigned id = uhmm_device_id(dev);
		assert_int_equal(!!(at.accessed_by[id / 64] & (1ull << (id % 64))), advised);
		if (advised) {
			/* Unset: the next move is not followed. */
			ASSERT_OK(uhmm_advise(ctx, p, n * PG, UHMM_ADVISE_UNSET_ACCESSED_BY, dev));
			ASSERT_OK(uhmm_range_attrs(ctx, p, n * PG, &at));
			assert_int_equal(at.accessed_by[id / 64], 0);
			ASSERT_OK(uhmm_migrate(ctx, p, n * PG, dev, 0));
			want = cpu_rewrite(p, n, 7);
			assert_true(faults_of_sum(dev, p, n, want) > 0);
			struct uhmm_simdev_stats ds = sdstats(dev);
			assert_true(ds.map_requests >= 3);
		}
		/* Arguments. */
		assert_int_equal(uhmm_advise(ctx, p, n * PG, UHMM_ADVISE_ACCESSED_BY, NULL),
				 -EINVAL);
		assert_int_equal(uhmm_advise(ctx, p, n * PG, UHMM_ADVISE_UNSET_ACCESSED_BY, NULL),
				 -EINVAL);
		ASSERT_OK(uhmm_free(ctx, p));
		ASSERT_OK(uhmm_ctx_destroy(ctx));
	}
}

static void accessed_by_device_does_not_fault(void **state)
{
	(void)state;
	accessed_by_run();
}

/* The same where faulting threads serve their own faults. */
static void accessed_by_in_sigbus_mode(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = UHMM_CTX_SIGBUS;
	int err = uhmm_ctx_create(&o, &ctx);
	if (err == -EOPNOTSUPP)
		TEST_SKIP("the kernel has no UFFD_FEATURE_SIGBUS");
	ASSERT_OK(err);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	ctx_flags = UHMM_CTX_SIGBUS;
	accessed_by_run();
	ctx_flags = 0;
}

/* ---- access counters ---------------------------------------------------- */

static void k_one(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	(void)idx;
	(void)uhmm_simdev_ld64(wi, (uint64_t *)arg);
}

static _Atomic uint64_t ctr_count, ctr_len;

static int ctr_ignore(void *st, uhmm_loc dev, const struct uhmm_pol_counter *n,
		      struct uhmm_pol_counter_act *a)
{
	(void)st;
	(void)dev;
	atomic_store(&ctr_count, n->count);
	atomic_store(&ctr_len, n->len);
	if (a->action != UHMM_POL_CTR_MIGRATE || a->lo != n->addr || a->hi != n->addr + n->len)
		return -1; /* (the built-in answer: migrate the region) */
	a->action = UHMM_POL_CTR_IGNORE;
	return 0;
}

static int ctr_outside(void *st, uhmm_loc dev, const struct uhmm_pol_counter *n,
		       struct uhmm_pol_counter_act *a)
{
	(void)st;
	(void)dev;
	a->lo = n->addr + n->len;
	a->hi = a->lo + PG;
	return 0;
}

/*
 * A device mapping a page remotely (accessed-by advice) reads it @before
 * times, then @after more; returns the notifications raised by the second
 * part (the first must raise none) and sets *@on to the pages on the
 * device after it.  @counters, @threshold: simdev's options; @o a policy.
 */
static uint64_t remote_reads(uint32_t counters, uint32_t threshold, uint64_t before,
			     uint64_t after, const struct uhmm_policy_ops *o, uint64_t ej,
			     size_t *on, uint64_t *migrations)
{
	struct uhmm_ctx_opts co;
	uhmm_ctx_opts_init(&co);
	co.flags = ctx_flags;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(&co, &ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	assert_int_equal(so.counters, 1);
	assert_int_equal(so.counter_threshold, 256);
	assert_int_equal(so.counter_region, 64 << 10);
	so.mem_bytes = 16ul << 20;
	so.counters = counters;
	so.counter_threshold = threshold;
	uhmm_device *dev;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, &dev));
	if (o)
		ASSERT_OK(uhmm_policy_set(ctx, o, NULL));
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, 16 * PG, (void **)&p));
	memset(p, 7, 16 * PG);
	ASSERT_OK(uhmm_advise(ctx, p, 16 * PG, UHMM_ADVISE_ACCESSED_BY, dev));
	ASSERT_OK(uhmm_simdev_launch(dev, k_one, before, p));
	struct uhmm_simdev_stats s = sdstats(dev);
	assert_int_equal(s.faults, 0); /* all remote */
	assert_int_equal(s.counter_notifications, 0);
	assert_int_equal(uhmm_test_pages_on(ctx, p, 16 * PG, dev), 0);
	ASSERT_OK(uhmm_simdev_launch(dev, k_one, after, p));
	s = sdstats(dev);
	*on = uhmm_test_pages_on(ctx, p, 16 * PG, dev);
	*migrations = s.counter_migrations;
	assert_int_equal(ejections(ctx), ej);
	assert_int_equal(p[0], 0x0707070707070707ull);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	return s.counter_notifications;
}

/* 256 remote accesses to a region notify, and the built-in policy migrates
 * the region to the device; 255 do not; counters off, none; a plug-in may
 * decline, and an invalid answer ejects it. */
static void access_counters_migrate_hot_regions(void **state)
{
	(void)state;
	size_t on;
	uint64_t mig;
	assert_int_equal(remote_reads(1, 256, 255, 1, NULL, 0, &on, &mig), 1);
	assert_true(on >= 1);
	assert_int_equal(mig, 1);
	/* 255 alone: nothing. */
	assert_int_equal(remote_reads(1, 256, 100, 155, NULL, 0, &on, &mig), 0);
	assert_int_equal(on, 0);
	assert_int_equal(mig, 0);
	/* Off. */
	assert_int_equal(remote_reads(0, 256, 255, 600, NULL, 0, &on, &mig), 0);
	assert_int_equal(on, 0);
	/* Another threshold. */
	assert_int_equal(remote_reads(1, 8, 7, 1, NULL, 0, &on, &mig), 1);
	assert_true(on >= 1);
	/* A plug-in declines. */
	struct uhmm_policy_ops o = ops_of("ctr-ignore");
	o.access_counter = ctr_ignore;
	assert_int_equal(remote_reads(1, 256, 255, 1, &o, 0, &on, &mig), 1);
	assert_int_equal(on, 0);
	assert_int_equal(mig, 0);
	assert_int_equal(atomic_load(&ctr_count), 256);
	assert_true(atomic_load(&ctr_len) >= PG && atomic_load(&ctr_len) <= (64 << 10));
	/* Invalid: ejected, the built-in decision stands. */
	o = ops_of("ctr-outside");
	o.access_counter = ctr_outside;
	assert_int_equal(remote_reads(1, 256, 255, 1, &o, 1, &on, &mig), 1);
	assert_true(on >= 1);
	/* A policy built against the older struct is not read past its size. */
	o = ops_of("ctr-short");
	o.access_counter = ctr_outside;
	o.size = offsetof(struct uhmm_policy_ops, access_counter);
	assert_int_equal(remote_reads(1, 256, 255, 1, &o, 0, &on, &mig), 1);
	assert_true(on >= 1);
}

/* The same where faulting threads serve their own faults. */
static void access_counters_in_sigbus_mode(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = UHMM_CTX_SIGBUS;
	int err = uhmm_ctx_create(&o, &ctx);
	if (err == -EOPNOTSUPP)
		TEST_SKIP("the kernel has no UFFD_FEATURE_SIGBUS");
	ASSERT_OK(err);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	ctx_flags = UHMM_CTX_SIGBUS;
	size_t on;
	uint64_t mig;
	assert_int_equal(remote_reads(1, 256, 255, 1, NULL, 0, &on, &mig), 1);
	assert_true(on >= 1);
	assert_int_equal(mig, 1);
	assert_int_equal(remote_reads(1, 256, 255, 0, NULL, 0, &on, &mig), 0);
	assert_int_equal(on, 0);
	ctx_flags = 0;
}

/* Bad options and variables are refused. */
static void access_counter_options_are_checked(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_simdev_opts so;
	uhmm_device *dev;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 2ul << 20;
	so.counters = 2;
	assert_int_equal(uhmm_simdev_create(ctx, &so, &dev), -EINVAL);
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 2ul << 20;
	so.counter_threshold = 0;
	assert_int_equal(uhmm_simdev_create(ctx, &so, &dev), -EINVAL);
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 2ul << 20;
	so.counter_region = 3 << 12;
	assert_int_equal(uhmm_simdev_create(ctx, &so, &dev), -EINVAL);
	so.counter_region = 4 << 20;
	assert_int_equal(uhmm_simdev_create(ctx, &so, &dev), -EINVAL);
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 2ul << 20;
	setenv("UHMM_SIMDEV_COUNTER_REGION", "12345", 1);
	assert_int_equal(uhmm_simdev_create(ctx, &so, &dev), -EINVAL);
	setenv("UHMM_SIMDEV_COUNTER_REGION", "x", 1);
	assert_int_equal(uhmm_simdev_create(ctx, &so, &dev), -EINVAL);
	unsetenv("UHMM_SIMDEV_COUNTER_REGION");
	struct uhmm_pol_counter n = { .addr = 4096, .len = 3 * PG };
	struct uhmm_pol_counter_act a;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, &dev));
	assert_int_equal(uhmm_device_access_counter(dev, &n, &a), -EINVAL);
	assert_int_equal(uhmm_device_access_counter(dev, NULL, &a), -EINVAL);
	n.len = 64 << 10;
	assert_int_equal(uhmm_device_access_counter(dev, &n, &a), -EFAULT);
	assert_int_equal(a.action, UHMM_POL_CTR_IGNORE);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* UHMM_SIMDEV_COUNTERS=0 turns them off whatever the options say. */
static void access_counters_off_by_environment(void **state)
{
	(void)state;
	size_t on;
	uint64_t mig;
	setenv("UHMM_SIMDEV_COUNTERS", "0", 1);
	uint64_t n = remote_reads(1, 256, 255, 300, NULL, 0, &on, &mig);
	unsetenv("UHMM_SIMDEV_COUNTERS");
	assert_int_equal(n, 0);
	assert_int_equal(on, 0);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(atomics_policy_is_the_policys),
	cmocka_unit_test(accessed_by_device_does_not_fault),
	cmocka_unit_test(accessed_by_in_sigbus_mode),
	cmocka_unit_test(access_counters_migrate_hot_regions),
	cmocka_unit_test(access_counters_in_sigbus_mode),
	cmocka_unit_test(access_counter_options_are_checked),
	cmocka_unit_test(access_counters_off_by_environment),
};

UHMM_TEST_MAIN(tests)
