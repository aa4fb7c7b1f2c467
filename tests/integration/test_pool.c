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
 * It now gives the warm pages up after a short wait.
 */
static void scattered_warm_pages_do_not_starve_a_migration(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_pool *pool = &ctx->pool;
	size_t nblocks = pool->nslots / BATCH_PAGES;
	assert_true(pool->target_full >= nblocks);
	/* Take every block whole (the warm ones, then the empty ones). */
	long *run = calloc(nblocks, sizeof(*run));
	bool *was_full = calloc(nblocks, sizeof(*was_full));
	size_t nrun = 0;
	for (long s; (s = uhmm__pool_get(pool, BATCH_PAGES, true)) >= 0; nrun++)
		run[nrun] = s, was_full[nrun] = true;
	for (long s; (s = uhmm__pool_get(pool, BATCH_PAGES, false)) >= 0; nrun++)
		run[nrun] = s;
	assert_int_equal(nrun, nblocks);
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

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(scattered_warm_pages_do_not_starve_a_migration),
};

UHMM_TEST_MAIN(tests)
