/* SPDX-License-Identifier: MIT */
/*
 * test_advice.c - asynchronous prefetch (uhmm_prefetch), advice
 * (uhmm_advise: preferred location) and the attribute query
 * (uhmm_range_attrs).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "testlib.h"

#define PG 4096ul
#define BLK (2ul << 20)

static uhmm_ctx *mkctx(uint64_t dev_bytes, uint64_t latency_ns, uhmm_device **dev)
{
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = dev_bytes;
	so.latency_ns = latency_ns;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, dev));
	return ctx;
}

/* ---- prefetch ----------------------------------------------------------- */

/* The call returns at once; the fd becomes readable when the pages are
 * there; wait gives the result; the bytes are counted. */
static void prefetch_completes_through_its_fd(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, 20 * 1000 * 1000, &dev);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, BLK, (void **)&p));
	uhmm_test_fill(p, BLK, 11);
	uhmm_prefetch_req *pf;
	ASSERT_OK(uhmm_prefetch(ctx, p, BLK, dev, 0, &pf));
	/* Not done yet: each copy takes 20 ms on this device. */
	assert_int_equal(uhmm_prefetch_wait(pf, 0), -EAGAIN);
	struct pollfd pfd = { .fd = uhmm_prefetch_fd(pf), .events = POLLIN };
	assert_true(pfd.fd >= 0);
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	ASSERT_OK(uhmm_prefetch_wait(pf, -1));
	ASSERT_OK(uhmm_prefetch_wait(pf, 1000));
	ASSERT_OK(uhmm_prefetch_release(pf));
	assert_int_equal(uhmm_test_pages_on(ctx, p, BLK, dev), BLK / PG);
	struct uhmm_stats st;
	ASSERT_OK(uhmm_stats_get(ctx, &st));
	assert_int_equal(st.prefetched_bytes, BLK);
	uhmm_test_assert_data(p, 0, BLK, 11);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* A migration home issued after a prefetch of the same range waits for
 * it: the later call decides, every page ends at home. */
static void migrate_after_prefetch_is_ordered(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, 20 * 1000 * 1000, &dev);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 2 * BLK, (void **)&p));
	uhmm_test_fill(p, 2 * BLK, 12);
	uhmm_prefetch_req *a, *b;
	ASSERT_OK(uhmm_prefetch(ctx, p, BLK, dev, 0, &a));
	ASSERT_OK(uhmm_prefetch(ctx, p + BLK, BLK, dev, 0, &b));
	ASSERT_OK(uhmm_migrate(ctx, p, 2 * BLK, NULL, 0));
	/* Both were done before the migration started. */
	ASSERT_OK(uhmm_prefetch_wait(a, 0));
	ASSERT_OK(uhmm_prefetch_wait(b, 0));
	assert_int_equal(uhmm_test_pages_on(ctx, p, 2 * BLK, NULL), 2 * BLK / PG);
	struct uhmm_range_attrs at;
	ASSERT_OK(uhmm_range_attrs(ctx, p, 2 * BLK, &at));
	assert_int_equal(at.last_prefetch, (int32_t)uhmm_device_id(dev));
	assert_int_equal(at.bytes_cpu, 2 * BLK);
	ASSERT_OK(uhmm_prefetch_release(a));
	ASSERT_OK(uhmm_prefetch_release(b));
	uhmm_test_assert_data(p, 0, 2 * BLK, 12);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* A prefetch of memory freed before it runs ends -EFAULT; one queued at
 * destroy ends -ECANCELED (or done), and its handle outlives the context. */
static void prefetch_of_freed_memory_and_destroy(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, 20 * 1000 * 1000, &dev);
	char *p, *q;
	ASSERT_OK(uhmm_alloc(ctx, BLK, (void **)&p));
	ASSERT_OK(uhmm_alloc(ctx, BLK, (void **)&q));
	uhmm_test_fill(p, BLK, 13);
	uhmm_test_fill(q, BLK, 14);
	uhmm_prefetch_req *slow, *gone, *late;
	ASSERT_OK(uhmm_prefetch(ctx, p, BLK, dev, 0, &slow));
	ASSERT_OK(uhmm_prefetch(ctx, q, BLK, dev, 0, &gone));
	/* (uhmm_free waits for nothing of the prefetch thread's.) */
	ASSERT_OK(uhmm_free(ctx, q));
	ASSERT_OK(uhmm_prefetch_wait(slow, -1));
	assert_int_equal(uhmm_prefetch_wait(gone, -1), -EFAULT);
	ASSERT_OK(uhmm_prefetch(ctx, p, BLK, NULL, 0, &late));
	ASSERT_OK(uhmm_prefetch(ctx, p, BLK, dev, 0, &gone));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	int r = uhmm_prefetch_wait(late, -1);
	assert_true(r == 0 || r == -ECANCELED);
	r = uhmm_prefetch_wait(gone, -1);
	assert_true(r == 0 || r == -ECANCELED);
	ASSERT_OK(uhmm_prefetch_release(slow));
	ASSERT_OK(uhmm_prefetch_release(late));
	ASSERT_OK(uhmm_prefetch_release(gone));
	assert_int_equal(uhmm_prefetch_release(NULL), -EINVAL);
}

static void prefetch_checks_arguments(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, 0, &dev);
	char *p;
	uhmm_prefetch_req *pf;
	ASSERT_OK(uhmm_alloc(ctx, BLK, (void **)&p));
	assert_int_equal(uhmm_prefetch(ctx, p, BLK, dev, 0, NULL), -EINVAL);
	assert_int_equal(uhmm_prefetch(ctx, p + 1, BLK, dev, 0, &pf), -EINVAL);
	assert_int_equal(uhmm_prefetch(ctx, p, 0, dev, 0, &pf), -EINVAL);
	assert_int_equal(uhmm_prefetch(ctx, p, BLK, dev, 1, &pf), -EINVAL);
	assert_int_equal(uhmm_prefetch(NULL, p, BLK, dev, 0, &pf), -EBADF);
	assert_int_equal(uhmm_prefetch_wait(NULL, 0), -EINVAL);
	assert_int_equal(uhmm_prefetch_fd(NULL), -EINVAL);
	/* An unmanaged range: the migration's own error. */
	ASSERT_OK(uhmm_prefetch(ctx, (void *)(uintptr_t)0x10000, PG, dev, 0, &pf));
	assert_int_equal(uhmm_prefetch_wait(pf, -1), -EFAULT);
	ASSERT_OK(uhmm_prefetch_release(pf));
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* ---- advice ------------------------------------------------------------- */

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

static void read_kernel(uhmm_device *dev, uint64_t *p, size_t pages)
{
	uint64_t want = 0;
	for (size_t i = 0; i < pages; i++) {
		p[i * (PG / 8)] = i + 7;
		want += i + 7;
	}
	struct rd r = { .buf = p };
	ASSERT_OK(uhmm_simdev_launch(dev, k_read, pages, &r));
	assert_int_equal(atomic_load(&r.sum), want);
}

/* Preferred location: the CPU.  A device kernel reads the data where it
 * is (no migration); half the range advised: only the other half moves. */
static void preferred_cpu_keeps_pages_in_system_memory(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, 0, &dev);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, BLK, (void **)&p));
	ASSERT_OK(uhmm_advise(ctx, p, BLK / 2, UHMM_ADVISE_PREFERRED_LOCATION, NULL));
	struct uhmm_range_attrs at;
	ASSERT_OK(uhmm_range_attrs(ctx, p, BLK / 2, &at));
	assert_int_equal(at.preferred, 0);
	ASSERT_OK(uhmm_range_attrs(ctx, p, BLK, &at));
	assert_int_equal(at.preferred, UHMM_ATTR_MIXED);
	assert_int_equal(at.last_prefetch, UHMM_ATTR_NONE);
	read_kernel(dev, p, BLK / PG);
	ASSERT_OK(uhmm_range_attrs(ctx, p, BLK, &at));
	assert_int_equal(at.bytes_cpu, BLK / 2);
	assert_int_equal(at.bytes_on[uhmm_device_id(dev)], BLK / 2);
	assert_int_equal(uhmm_test_pages_on(ctx, p, BLK / 2, NULL), BLK / 2 / PG);
	/* Unset: the next kernel migrates all of it. */
	ASSERT_OK(uhmm_advise(ctx, p, BLK, UHMM_ADVISE_UNSET_PREFERRED_LOCATION, NULL));
	ASSERT_OK(uhmm_range_attrs(ctx, p, BLK, &at));
	assert_int_equal(at.preferred, UHMM_ATTR_NONE);
	ASSERT_OK(uhmm_migrate(ctx, p, BLK, NULL, 0));
	read_kernel(dev, p, BLK / PG);
	assert_int_equal(uhmm_test_pages_on(ctx, p, BLK, dev), BLK / PG);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* Preferred location: the device.  A full device evicts blocks without
 * that advice first, even more recent ones. */
static void preferred_device_is_evicted_last(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(4ul << 20, 0, &dev);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 3 * BLK, (void **)&p));
	uhmm_test_fill(p, 3 * BLK, 15);
	ASSERT_OK(uhmm_advise(ctx, p, BLK, UHMM_ADVISE_PREFERRED_LOCATION, dev));
	struct uhmm_range_attrs at;
	ASSERT_OK(uhmm_range_attrs(ctx, p, BLK, &at));
	assert_int_equal(at.preferred, (int32_t)uhmm_device_id(dev));
	ASSERT_OK(uhmm_migrate(ctx, p, BLK, dev, 0));           /* A, oldest */
	ASSERT_OK(uhmm_migrate(ctx, p + BLK, BLK, dev, 0));     /* B */
	ASSERT_OK(uhmm_migrate(ctx, p + 2 * BLK, BLK, dev, 0)); /* C evicts B */
	assert_int_equal(uhmm_test_pages_on(ctx, p, BLK, dev), BLK / PG);
	assert_int_equal(uhmm_test_pages_on(ctx, p + BLK, BLK, dev), 0);
	uhmm_test_assert_data(p, 0, 3 * BLK, 15);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static void advise_checks_arguments(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(16ul << 20, 0, &dev);
	char *p;
	struct uhmm_range_attrs at;
	ASSERT_OK(uhmm_alloc(ctx, BLK, (void **)&p));
	assert_int_equal(uhmm_advise(ctx, p, BLK, 99, NULL), -EINVAL);
	assert_int_equal(uhmm_advise(ctx, p + 1, BLK, UHMM_ADVISE_PREFERRED_LOCATION, NULL),
			 -EINVAL);
	assert_int_equal(uhmm_advise(ctx, p, 2 * BLK, UHMM_ADVISE_PREFERRED_LOCATION, NULL),
			 -EFAULT);
	assert_int_equal(uhmm_advise(NULL, p, BLK, UHMM_ADVISE_PREFERRED_LOCATION, NULL),
			 -EBADF);
	assert_int_equal(uhmm_range_attrs(ctx, p, BLK, NULL), -EINVAL);
	assert_int_equal(uhmm_range_attrs(ctx, p, 2 * BLK, &at), -EFAULT);
	/* Advice over pieces, then one value over all of it again. */
	ASSERT_OK(uhmm_advise(ctx, p + PG, PG, UHMM_ADVISE_PREFERRED_LOCATION, dev));
	ASSERT_OK(uhmm_advise(ctx, p + 3 * PG, PG, UHMM_ADVISE_PREFERRED_LOCATION, NULL));
	ASSERT_OK(uhmm_range_attrs(ctx, p, BLK, &at));
	assert_int_equal(at.preferred, UHMM_ATTR_MIXED);
	ASSERT_OK(uhmm_range_attrs(ctx, p + PG, PG, &at));
	assert_int_equal(at.preferred, (int32_t)uhmm_device_id(dev));
	ASSERT_OK(uhmm_advise(ctx, p, BLK, UHMM_ADVISE_PREFERRED_LOCATION, NULL));
	ASSERT_OK(uhmm_range_attrs(ctx, p, BLK, &at));
	assert_int_equal(at.preferred, 0);
	assert_int_equal(at.bytes_cpu, BLK);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(prefetch_completes_through_its_fd),
	cmocka_unit_test(migrate_after_prefetch_is_ordered),
	cmocka_unit_test(prefetch_of_freed_memory_and_destroy),
	cmocka_unit_test(prefetch_checks_arguments),
	cmocka_unit_test(preferred_cpu_keeps_pages_in_system_memory),
	cmocka_unit_test(preferred_device_is_evicted_last),
	cmocka_unit_test(advise_checks_arguments),
};

UHMM_TEST_MAIN(tests)
