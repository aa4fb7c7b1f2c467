/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of simdev's link model (copy.c, "transfer model"), through
 * uhmm__simdev_new() and the ops without a context: each direction of the
 * link is shared by the copy engines, the directions are independent, and
 * peer hops are recognised from the thread's previous FROM_DEVICE batch of
 * another simdev only.  Only computed figures are asserted (the link's
 * reservations and the charged durations), never elapsed time.
 */
#define _GNU_SOURCE
#include "testlib.h"
#include "simdev/simdev_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PG UHMM_PAGE_SIZE

static const struct uhmm_device_ops *ops = &uhmm__simdev_ops;

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct simdev *new_link_dev(unsigned engines, double gbps, uint64_t lat,
				   double peer_gbps)
{
	struct uhmm_simdev_opts o;
	struct simdev *sd = NULL;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 2u << 20;
	o.copy_threads = engines;
	o.bandwidth_gbps = gbps;
	o.latency_ns = lat;
	o.peer_bandwidth_gbps = peer_gbps;
	ASSERT_OK(uhmm__simdev_new(&o, &sd));
	return sd;
}

static int run(struct simdev *sd, struct uhmm_copy *c, size_t n)
{
	uhmm_fence_t f;
	ASSERT_OK(ops->copy_submit(sd, c, n, &f));
	return ops->copy_wait(sd, f);
}

/* Two engines, two 64 KiB copies to the device at 1 B/ns: the direction is
 * reserved for both transfers one after the other (131072 ns from the
 * submission at least), and the other direction is untouched. */
static void engines_share_a_direction(void **state)
{
	(void)state;
	struct simdev *sd = new_link_dev(2, 1.0, 100, 0);
	char *buf = calloc(32, PG);
	assert_non_null(buf);
	struct uhmm_copy c[2] = {
		{ buf, 0, 16, UHMM_COPY_TO_DEVICE, 1 },
		{ buf + 16 * PG, 16, 16, UHMM_COPY_TO_DEVICE, 1 },
	};
	uint64_t t0 = mono_ns();
	ASSERT_OK(run(sd, c, 2));
	assert_true(atomic_load(&sd->link_free[SD_LINK_TO_DEV]) >= t0 + 2 * 16 * PG);
	assert_true(atomic_load(&sd->link_free[SD_LINK_FROM_DEV]) == 0);
	assert_true(atomic_load(&sd->link_free[SD_LINK_PEER_IN]) == 0);
	struct uhmm_simdev_meminfo m;
	uhmm__simdev_meminfo(sd, &m);
	assert_true(m.link_model_ns == 2 * (16 * PG + 100));

	/* The other direction has its own reservation. */
	struct uhmm_copy back = { buf, 0, 16, UHMM_COPY_FROM_DEVICE, 1 };
	uint64_t t1 = mono_ns();
	ASSERT_OK(run(sd, &back, 1));
	assert_true(atomic_load(&sd->link_free[SD_LINK_FROM_DEV]) >= t1 + 16 * PG);
	/* A zero fill pays the latency only and reserves nothing. */
	uint64_t to = atomic_load(&sd->link_free[SD_LINK_TO_DEV]);
	struct uhmm_copy z = { NULL, 40, 8, UHMM_COPY_ZERO, 1 };
	ASSERT_OK(run(sd, &z, 1));
	assert_true(atomic_load(&sd->link_free[SD_LINK_TO_DEV]) == to);
	uhmm__simdev_meminfo(sd, &m);
	assert_true(m.link_model_ns == 3 * (16 * PG + 100) + 100);
	free(buf);
	ops->destroy(sd);
}

/*
 * Several modelled engines split one large transfer: a 2 MiB copy runs as
 * eight 256 KiB parts the engines share, each reserving its bytes and
 * paying the latency (they overlap in time); one engine takes it whole.
 * The data arrives whole either way.
 */
static void engines_split_a_large_copy(void **state)
{
	(void)state;
	const size_t np = 512;
	char *buf = malloc(np * PG), *back = malloc(np * PG);
	assert_non_null(buf);
	assert_non_null(back);
	for (size_t i = 0; i < np * PG; i++)
		buf[i] = (char)(i * 7 + 3);
	for (unsigned engines = 1; engines <= 2; engines++) {
		struct simdev *sd = new_link_dev(engines, 1000.0, 100, 0);
		uint64_t chunks0 = sd->eng.chunks;
		struct uhmm_copy c = { buf, 0, (uint32_t)np, UHMM_COPY_TO_DEVICE, 1 };
		ASSERT_OK(run(sd, &c, 1));
		assert_int_equal(c.status, 0);
		struct uhmm_simdev_meminfo m;
		uhmm__simdev_meminfo(sd, &m);
		uint64_t parts = engines == 1 ? 1 : 8;
		assert_int_equal(sd->eng.chunks - chunks0, parts);
		/* bytes / 1000 B/ns per part, + its latency */
		assert_int_equal(m.link_model_ns,
				 parts * ((uint64_t)(np / parts * PG) / 1000 + 100));
		memset(back, 0, np * PG);
		struct uhmm_copy r = { back, 0, (uint32_t)np, UHMM_COPY_FROM_DEVICE, 1 };
		ASSERT_OK(run(sd, &r, 1));
		assert_memory_equal(buf, back, np * PG);
		ops->destroy(sd);
	}
	free(buf);
	free(back);
}

/*
 * Peer hops: a TO_DEVICE batch reading what another simdev's FROM_DEVICE
 * batch just wrote, from the same thread, is a peer hop; what the same
 * simdev wrote is not, nor anything after an unrelated submission or
 * after the spans are forgotten (an invalidation).
 */
static void peer_hop_recognition(void **state)
{
	(void)state;
	struct simdev *a = new_link_dev(1, 0, 0, 0);
	struct simdev *b = new_link_dev(1, 0, 0, 4.0);
	char *bounce = calloc(8, PG), *other = calloc(8, PG);
	assert_non_null(bounce);
	assert_non_null(other);
	struct uhmm_simdev_meminfo m;

	struct uhmm_copy out = { bounce, 0, 8, UHMM_COPY_FROM_DEVICE, 1 };
	struct uhmm_copy in[2] = {
		{ bounce, 0, 4, UHMM_COPY_TO_DEVICE, 1 },
		{ other, 8, 4, UHMM_COPY_TO_DEVICE, 1 },
	};
	/* a -> bounce -> b: the copy from the bounce is a peer hop, the
	 * other one is not. */
	ASSERT_OK(run(a, &out, 1));
	ASSERT_OK(run(b, in, 2));
	uhmm__simdev_meminfo(b, &m);
	assert_true(m.peer_copies == 1 && m.peer_bytes == 4 * PG);
	assert_true(m.peer_model_ns == 4 * PG / 4);
	assert_true(atomic_load(&b->link_free[SD_LINK_PEER_IN]) > 0);

	/* Consumed: the same batch again is no peer hop. */
	ASSERT_OK(run(b, in, 2));
	uhmm__simdev_meminfo(b, &m);
	assert_true(m.peer_copies == 1);

	/* b -> bounce -> b: a device reading back its own data. */
	ASSERT_OK(run(b, &out, 1));
	ASSERT_OK(run(b, in, 1));
	uhmm__simdev_meminfo(b, &m);
	assert_true(m.peer_copies == 1);

	/* An unrelated submission in between ends the run of spans. */
	struct uhmm_copy z = { NULL, 30, 1, UHMM_COPY_ZERO, 1 };
	ASSERT_OK(run(a, &out, 1));
	ASSERT_OK(run(a, &z, 1));
	ASSERT_OK(run(b, in, 1));
	uhmm__simdev_meminfo(b, &m);
	assert_true(m.peer_copies == 1);

	/* So does an invalidation (the hop notifier's callback). */
	ASSERT_OK(run(a, &out, 1));
	uhmm__copy_hops_forget();
	ASSERT_OK(run(b, in, 1));
	uhmm__simdev_meminfo(b, &m);
	assert_true(m.peer_copies == 1);

	/* Two FROM_DEVICE batches in a row (two source devices) both count. */
	struct simdev *c = new_link_dev(1, 0, 0, 0);
	struct uhmm_copy out2 = { other, 0, 4, UHMM_COPY_FROM_DEVICE, 1 };
	ASSERT_OK(run(a, &out, 1));
	ASSERT_OK(run(c, &out2, 1));
	ASSERT_OK(run(b, in, 2));
	uhmm__simdev_meminfo(b, &m);
	assert_true(m.peer_copies == 3 && m.peer_bytes == 12 * PG);
	/* a had no peer model: it was never charged for peer hops. */
	uhmm__simdev_meminfo(a, &m);
	assert_true(m.peer_copies == 0 && m.peer_model_ns == 0);

	free(bounce);
	free(other);
	ops->destroy(a);
	ops->destroy(b);
	ops->destroy(c);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(engines_share_a_direction),
	cmocka_unit_test(engines_split_a_large_copy),
	cmocka_unit_test(peer_hop_recognition),
};

UHMM_TEST_MAIN(tests)
