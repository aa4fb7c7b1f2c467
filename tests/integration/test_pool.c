/* SPDX-License-Identifier: MIT */
/*
 * The reserve (src/core/pool.c): warm pages to move into place, empty runs
 * of slots to move pages out into.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "core/internal.h"
#include "testlib.h"

#define PG 4096ul

static void *take_empty_run(void *arg)
{
	struct uhmm_pool *pool = arg;
	return (void *)uhmm__pool_get_empty_wait(pool, BATCH_PAGES);
}

/*
 * A migration to a device needs a whole block of EMPTY slots.  When the warm
 * pages (no more than the pool keeps anyway) sit one in each block, no
 * block is free and no one will free one: the migration waited for ever.
 * It now grows the reserve (it gave the warm pages up after a short wait
 * before the reserve could grow).
 */
static void scattered_warm_pages_do_not_starve_a_migration(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_pool *pool = &ctx->pool;
	size_t nblocks = pool->nslots / BATCH_PAGES;
	/* Take every block of the extent whole (the warm ones, then the
	 * empty ones). */
	long *run = calloc(nblocks, sizeof(*run));
	bool *was_full = calloc(nblocks, sizeof(*was_full));
	size_t nrun = 0;
	for (long s; (s = uhmm__pool_get(pool, BATCH_PAGES, true)) >= 0; nrun++)
		run[nrun] = s, was_full[nrun] = true;
	for (long s; nrun < nblocks && (s = uhmm__pool_get(pool, BATCH_PAGES, false)) >= 0; nrun++)
		run[nrun] = s;
	assert_int_equal(nrun, nblocks);
	assert_int_equal(pool->nslots, nblocks * BATCH_PAGES); /* not grown yet */
	/* Give each block back with one warm page at its start. */
	for (size_t b = 0; b < nrun; b++) {
		char *slot = pool_slot(pool, (size_t)run[b]);
		if (was_full[b]) {
			assert_int_equal(madvise(slot + PG, (BATCH_PAGES - 1) * PG,
						 MADV_DONTNEED), 0);
		} else {
			size_t done;
			ASSERT_OK(uhmm__uffd_copy(pool->ruffd, (uintptr_t)slot, ctx->zeros, PG,
						  0, true, &done));
		}
		uhmm__pool_put(pool, (size_t)run[b], true);
		for (size_t i = 1; i < BATCH_PAGES; i++)
			uhmm__pool_put(pool, (size_t)run[b] + i, false);
	}
	free(run);
	free(was_full);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, take_empty_run, pool), 0);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 20; /* a hang, not a slow machine */
	void *ret;
	if (pthread_timedjoin_np(t, &ret, &until))
		fail_msg("no EMPTY run after 20 s: the migration would wait for ever");
	long s = (long)ret;
	assert_true(s >= 0);
	for (size_t i = 0; i < BATCH_PAGES; i++)
		uhmm__pool_put(pool, (size_t)s + i, false);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* A context with a small reserve (warm pages, no more lingering) and a
 * simdev. */
static void small_reserve(uhmm_ctx **ctx, uhmm_device **dev, uint32_t warm)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.pool_pages = warm;
	o.pool_max_pages = warm;
	ASSERT_OK(uhmm_ctx_create(&o, ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 16ul << 20;
	ASSERT_OK(uhmm_simdev_create(*ctx, &so, dev));
}

static struct uhmm_stats stats_of(uhmm_ctx *ctx)
{
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(ctx, &s));
	return s;
}

/*
 * Exclusive pages keep their data in reserve slots.  The reserve was a
 * fixed region: a grab over more pages than it had failed with -ENOMEM (and
 * an atomic kernel's fallback then waited for ever).  It grows now: a grab
 * of four times the initial reserve succeeds, the device sees the data,
 * and the CPU's touch after takes every page back with its data.
 */
static void exclusive_grab_beyond_the_initial_reserve(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	small_reserve(&ctx, &dev, 512);
	struct uhmm_stats s0 = stats_of(ctx);
	assert_true(s0.reserve_slots > 0);
	size_t npg = 4 * s0.reserve_slots, len = npg * PG;
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 41);
	void **where = calloc(npg, sizeof(*where));
	ASSERT_OK(uhmm_make_exclusive(dev, p, npg, where));
	assert_int_equal(uhmm_check_exclusive(dev, p, npg), 1);
	struct uhmm_stats s1 = stats_of(ctx);
	assert_int_equal(s1.exclusive_grabs - s0.exclusive_grabs, npg);
	assert_true(s1.reserve_slots >= npg);
	assert_true(s1.reserve_slots_used >= npg);
	/* The device's view: the data, at the addresses given. */
	char *copy = malloc(len);
	for (size_t i = 0; i < npg; i++)
		memcpy(copy + i * PG, where[i], PG);
	assert_int_equal(uhmm_test_check(copy, len, 41), (size_t)-1);
	free(copy);
	free(where);
	/* The CPU takes every page back, with its data. */
	assert_int_equal(uhmm_test_check(p, len, 41), (size_t)-1);
	assert_int_equal(uhmm_check_exclusive(dev, p, 1), 0);
	assert_int_equal(uhmm_test_pages_on(ctx, p, len, NULL), npg);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

struct mig_arg {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	void *p;
	size_t len;
};

static void *migrate_thread(void *arg)
{
	struct mig_arg *a = arg;
	return (void *)(long)uhmm_migrate(a->ctx, a->p, a->len, a->dev, 0);
}

/*
 * Every EMPTY slot held by exclusive pages, then a migration to the device,
 * which needs a block of EMPTY slots: only a CPU touch of the exclusive
 * pages could free one, and the CPU thread is the one migrating.  It waited
 * for ever; the reserve grows instead.
 */
static void migration_with_every_slot_held_exclusively_completes(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	small_reserve(&ctx, &dev, 0); /* no warm page to give up either */
	struct uhmm_stats s0 = stats_of(ctx);
	/* The EMPTY slots of the initial reserve (whole blocks). */
	size_t held = s0.reserve_slots - s0.reserve_slots_used, len = held * PG;
	assert_int_equal(held % BATCH_PAGES, 0);
	char *p, *q;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	ASSERT_OK(uhmm_alloc(ctx, 4ul << 20, (void **)&q));
	uhmm_test_fill(p, len, 42);
	uhmm_test_fill(q, 4ul << 20, 43);
	/* A block at a time: each grab takes EMPTY slots until none is
	 * left in the reserve's first extent. */
	for (size_t off = 0; off < held; off += BATCH_PAGES)
		ASSERT_OK(uhmm_make_exclusive(dev, p + off * PG, BATCH_PAGES, NULL));
	struct uhmm_stats s1 = stats_of(ctx);
	assert_int_equal(s1.reserve_slots_used, s0.reserve_slots);
	struct mig_arg a = { ctx, dev, q, 4ul << 20 };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, migrate_thread, &a), 0);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 20; /* a hang, not a slow machine */
	void *ret;
	if (pthread_timedjoin_np(t, &ret, &until))
		fail_msg("uhmm_migrate still waiting for a slot after 20 s");
	ASSERT_OK((int)(long)ret);
	assert_int_equal(uhmm_test_pages_on(ctx, q, 4ul << 20, dev), (4ul << 20) / PG);
	assert_int_equal(uhmm_check_exclusive(dev, p, held), 1);
	assert_int_equal(uhmm_test_check(q, 4ul << 20, 43), (size_t)-1);
	assert_int_equal(uhmm_test_check(p, len, 42), (size_t)-1);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_free(ctx, q));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/*
 * The reserve grown by exclusive pages goes back to its initial size once
 * they are given back and the context is idle (the service thread's idle
 * release, 1 s after the last use).  Polled, bounded: a reserve that never
 * shrinks fails after 20 s.
 */
static void reserve_shrinks_back_when_idle(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	small_reserve(&ctx, &dev, 512);
	uint64_t initial = stats_of(ctx).reserve_slots;
	size_t npg = 4 * initial, len = npg * PG;
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 44);
	ASSERT_OK(uhmm_make_exclusive(dev, p, npg, NULL));
	assert_true(stats_of(ctx).reserve_slots >= npg);
	assert_int_equal(uhmm_test_check(p, len, 44), (size_t)-1); /* revokes all */
	uint64_t t0 = uhmm_test_now_ns();
	while (stats_of(ctx).reserve_slots != initial) {
		if (uhmm_test_now_ns() - t0 > 20000000000ull)
			fail_msg("reserve still %llu slots (initial %llu) after 20 s idle",
				 (unsigned long long)stats_of(ctx).reserve_slots,
				 (unsigned long long)initial);
		uhmm_test_nap();
	}
	assert_true(stats_of(ctx).reserve_slots_used <= 512);
	/* And grows again when needed. */
	ASSERT_OK(uhmm_make_exclusive(dev, p, npg, NULL));
	assert_int_equal(uhmm_test_check(p, len, 44), (size_t)-1);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(scattered_warm_pages_do_not_starve_a_migration),
	cmocka_unit_test(exclusive_grab_beyond_the_initial_reserve),
	cmocka_unit_test(migration_with_every_slot_held_exclusively_completes),
	cmocka_unit_test(reserve_shrinks_back_when_idle),
};

UHMM_TEST_MAIN(tests)
