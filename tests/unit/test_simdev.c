/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the software device, driven through uhmm__simdev_new() and
 * uhmm__simdev_ops without a context.  Timing is only ever bounded below.
 */
#define _GNU_SOURCE
#include "testlib.h"
#include "simdev/simdev_internal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG UHMM_PAGE_SIZE
#define CHUNK SIMDEV_CHUNK_PAGES
#define MiB (1ull << 20)

static const struct uhmm_device_ops *ops = &uhmm__simdev_ops;

static struct simdev *new_dev(uint64_t mem_bytes, unsigned threads)
{
	struct uhmm_simdev_opts o;
	struct simdev *sd = NULL;

	uhmm_simdev_opts_init(&o);
	o.mem_bytes = mem_bytes;
	o.copy_threads = threads;
	ASSERT_OK(uhmm__simdev_new(&o, &sd));
	assert_non_null(sd);
	return sd;
}

static struct uhmm_simdev_meminfo info(struct simdev *sd)
{
	struct uhmm_simdev_meminfo mi;
	uhmm__simdev_meminfo(sd, &mi);
	return mi;
}

/* Submits @n copies and waits for them; returns copy_wait's result. */
static int run_copies(struct simdev *sd, struct uhmm_copy *c, size_t n)
{
	uhmm_fence_t f;
	ASSERT_OK(ops->copy_submit(sd, c, n, &f));
	return ops->copy_wait(sd, f);
}

static int copy1(struct simdev *sd, enum uhmm_copy_dir dir, void *sys,
		 uint64_t dpfn, uint32_t npages)
{
	struct uhmm_copy c = { .sys = sys, .dpfn = dpfn, .npages = npages,
			       .dir = (uint16_t)dir, .status = 1 };
	int r = run_copies(sd, &c, 1);
	assert_int_equal(c.status, r);
	return r;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* ---- options ------------------------------------------------------------ */

static void opts_init_sets_defaults(void **state)
{
	(void)state;
	struct uhmm_simdev_opts o;
	memset(&o, 0xa5, sizeof(o));
	uhmm_simdev_opts_init(&o);
	assert_int_equal(o.size, sizeof(o));
	assert_int_equal(o.copy_threads, 1);
	assert_true(o.mem_bytes == 1ull << 30);
	assert_true(o.bandwidth_gbps == 0);
	assert_true(o.latency_ns == 0);
	assert_null(o.name);
}

static void new_rejects_bad_opts(void **state)
{
	(void)state;
	struct uhmm_simdev_opts o;
	struct simdev *sd = (struct simdev *)&o;

#define EXPECT_EINVAL(field, value)                                           \
	do {                                                                  \
		uhmm_simdev_opts_init(&o);                                    \
		o.mem_bytes = 4 * MiB;                                        \
		o.field = value;                                              \
		assert_int_equal(uhmm__simdev_new(&o, &sd), -EINVAL);         \
		assert_null(sd);                                              \
	} while (0)
	EXPECT_EINVAL(size, sizeof(o) - 1);
	EXPECT_EINVAL(size, 0);
	EXPECT_EINVAL(mem_bytes, 0);
	EXPECT_EINVAL(mem_bytes, 2 * MiB + 4096);
	EXPECT_EINVAL(mem_bytes, MiB);
	EXPECT_EINVAL(copy_threads, 0);
	EXPECT_EINVAL(copy_threads, 9);
	EXPECT_EINVAL(bandwidth_gbps, -1.0);
	EXPECT_EINVAL(bandwidth_gbps, NAN);
#undef EXPECT_EINVAL
	assert_int_equal(uhmm__simdev_new(&o, NULL), -EINVAL);

	/* The limits themselves are fine; NULL opts means the defaults. */
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 2 * MiB;
	o.copy_threads = 8;
	ASSERT_OK(uhmm__simdev_new(&o, &sd));
	ops->destroy(sd);
	ASSERT_OK(uhmm__simdev_new(NULL, &sd));
	assert_true(info(sd).total_pages == (1ull << 30) / PG);
	ops->destroy(sd);
}

static void public_api_rejects_null_device(void **state)
{
	(void)state;
	struct uhmm_simdev_meminfo mi;
	assert_int_equal(uhmm_simdev_meminfo(NULL, &mi), -EINVAL);
	assert_int_equal(uhmm_simdev_inject(NULL, UHMM_SIMDEV_FAIL_COPY, 0, 1), -EINVAL);

	struct simdev *sd = new_dev(2 * MiB, 1);
	assert_int_equal(uhmm__simdev_inject(sd, (enum uhmm_simdev_fault)7, 0, 1), -EINVAL);
	ops->destroy(sd);
}

/* ---- allocator ---------------------------------------------------------- */

static void alloc_free_4k_pages(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(4 * MiB, 1);
	uint64_t d[600];

	struct uhmm_simdev_meminfo mi = info(sd);
	assert_true(mi.total_pages == 2 * CHUNK && mi.free_pages == 2 * CHUNK);
	assert_true(mi.huge_free == 2);

	/* 600 pages: a whole chunk and part of a second, all distinct. */
	assert_int_equal(ops->alloc(sd, 0, 600, d), 600);
	qsort(d, 600, sizeof(d[0]), cmp_u64);
	for (size_t i = 0; i < 600; i++) {
		assert_true(d[i] < 2 * CHUNK);
		if (i)
			assert_true(d[i] != d[i - 1]);
	}
	mi = info(sd);
	assert_true(mi.free_pages == 2 * CHUNK - 600);
	assert_true(mi.huge_free == 0);

	ops->free(sd, 0, 600, d);
	mi = info(sd);
	assert_true(mi.free_pages == 2 * CHUNK && mi.huge_free == 2);
	assert_int_equal(ops->alloc(sd, 0, 0, d), 0);
	ops->destroy(sd);
}

static void alloc_free_2m_pages(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(8 * MiB, 1);
	uint64_t d[4];

	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 3, d), 3);
	for (int i = 0; i < 3; i++) {
		assert_true(d[i] % CHUNK == 0);
		assert_true(d[i] < 4 * CHUNK);
		for (int j = 0; j < i; j++)
			assert_true(d[i] != d[j]);
	}
	struct uhmm_simdev_meminfo mi = info(sd);
	assert_true(mi.free_pages == CHUNK && mi.huge_free == 1);
	ops->free(sd, UHMM_HUGE_ORDER, 3, d);
	mi = info(sd);
	assert_true(mi.free_pages == 4 * CHUNK && mi.huge_free == 4);
	ops->destroy(sd);
}

static void alloc_rejects_bad_order(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(2 * MiB, 1);
	uint64_t d[1];
	assert_int_equal(ops->alloc(sd, 1, 1, d), -EINVAL);
	assert_int_equal(ops->alloc(sd, 10, 1, d), -EINVAL);
	assert_int_equal(ops->alloc(sd, 0, 1, NULL), -EINVAL);
	assert_true(info(sd).free_pages == CHUNK);
	ops->destroy(sd);
}

static void exhaustion_returns_fewer_pages_then_recovers(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(4 * MiB, 1);
	uint64_t d[2 * CHUNK + 8];

	/* 4 KiB: ask for more than exists, get exactly what exists. */
	assert_int_equal(ops->alloc(sd, 0, 2 * CHUNK + 8, d), 2 * CHUNK);
	assert_int_equal(ops->alloc(sd, 0, 1, d + 2 * CHUNK), 0);
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 1, d + 2 * CHUNK), 0);
	assert_true(info(sd).free_pages == 0);

	/* Free a few: exactly those come back. */
	ops->free(sd, 0, 5, d + 100);
	uint64_t again[8];
	assert_int_equal(ops->alloc(sd, 0, 8, again), 5);
	ops->free(sd, 0, 5, again);
	ops->free(sd, 0, 100, d);
	ops->free(sd, 0, 2 * CHUNK - 105, d + 105);

	/* 2 MiB: same story. */
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 5, d), 2);
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 1, d + 2), 0);
	assert_int_equal(ops->alloc(sd, 0, 1, d + 2), 0);
	ops->free(sd, UHMM_HUGE_ORDER, 1, d + 1);
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 3, d + 1), 1);
	ops->free(sd, UHMM_HUGE_ORDER, 2, d);
	assert_true(info(sd).free_pages == 2 * CHUNK);
	ops->destroy(sd);
}

static void huge_alloc_never_returns_partial_page(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(8 * MiB, 1);
	uint64_t small, d[4];

	/* One 4 KiB page pins its chunk: only 3 whole chunks remain. */
	assert_int_equal(ops->alloc(sd, 0, 1, &small), 1);
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 4, d), 3);
	for (int i = 0; i < 3; i++)
		assert_true(small / CHUNK != d[i] / CHUNK);
	assert_true(info(sd).free_pages == CHUNK - 1);
	ops->free(sd, UHMM_HUGE_ORDER, 3, d);
	ops->free(sd, 0, 1, &small);
	assert_true(info(sd).huge_free == 4);
	ops->destroy(sd);
}

static void small_allocs_prefer_partial_chunks(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(8 * MiB, 1);
	uint64_t d[CHUNK];

	assert_int_equal(ops->alloc(sd, 0, 1, d), 1);
	assert_true(info(sd).huge_free == 3);
	/* The other 511 pages of that chunk are used before splitting another. */
	assert_int_equal(ops->alloc(sd, 0, CHUNK - 1, d + 1), CHUNK - 1);
	assert_true(info(sd).huge_free == 3);
	for (size_t i = 1; i < CHUNK; i++)
		assert_true(d[i] / CHUNK == d[0] / CHUNK);
	/* A hole in a full chunk is reused before a free chunk is split. */
	uint64_t hole = d[77];
	ops->free(sd, 0, 1, &d[77]);
	assert_int_equal(ops->alloc(sd, 0, 1, &d[77]), 1);
	assert_true(d[77] == hole);
	assert_true(info(sd).huge_free == 3);
	ops->free(sd, 0, CHUNK, d);
	ops->destroy(sd);
}

static void split_chunk_returns_to_free_list(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(2 * MiB, 1);
	uint64_t d[CHUNK], big;

	assert_int_equal(ops->alloc(sd, 0, CHUNK, d), CHUNK);
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 1, &big), 0);
	/* Free in a scattered order; the chunk is whole only after the last. */
	for (size_t i = 0; i < CHUNK; i += 2)
		ops->free(sd, 0, 1, &d[i]);
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 1, &big), 0);
	for (size_t i = CHUNK - 1; i > 1; i -= 2)
		ops->free(sd, 0, 1, &d[i]);
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 1, &big), 0);
	ops->free(sd, 0, 1, &d[1]);
	assert_true(info(sd).huge_free == 1);
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 1, &big), 1);
	assert_true(big == 0);
	ops->free(sd, UHMM_HUGE_ORDER, 1, &big);
	ops->destroy(sd);
}

/*
 * A double free is a caller bug: debug builds abort (checked in a child,
 * on a bare devmem so no thread is forked over), release builds ignore it.
 */
static void double_free_is_caught(void **state)
{
	(void)state;
#ifdef UHMM_DEBUG
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct devmem dm;
		uint64_t d;
		if (uhmm__devmem_init(&dm, 2 * MiB) || uhmm__devmem_alloc(&dm, 0, 1, &d) != 1)
			_exit(2);
		uhmm__devmem_free(&dm, 0, 1, &d);
		uhmm__devmem_free(&dm, 0, 1, &d);
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
#else
	struct simdev *sd = new_dev(4 * MiB, 1);
	uint64_t d[2], big;
	assert_int_equal(ops->alloc(sd, 0, 2, d), 2);
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 1, &big), 1);
	ops->free(sd, 0, 1, &d[0]);
	ops->free(sd, 0, 1, &d[0]);           /* double */
	ops->free(sd, UHMM_HUGE_ORDER, 1, &big);
	ops->free(sd, UHMM_HUGE_ORDER, 1, &big); /* double */
	uint64_t bogus = 1ull << 40;
	ops->free(sd, 0, 1, &bogus);          /* never allocated */
	struct uhmm_simdev_meminfo mi = info(sd);
	assert_true(mi.free_pages == 2 * CHUNK - 1 && mi.huge_free == 1);
	ops->free(sd, 0, 1, &d[1]);
	assert_true(info(sd).huge_free == 2);
	ops->destroy(sd);
#endif
}

/* ---- copies ------------------------------------------------------------- */

static void copy_round_trip_preserves_pattern(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(8 * MiB, 1);
	size_t len = 2 * MiB + 3 * PG;
	unsigned char *src = malloc(len), *dst = malloc(len);
	assert_non_null(src);
	assert_non_null(dst);
	uhmm_test_fill(src, len, 42);
	memset(dst, 0xee, len);

	/* Straddles a chunk boundary on the device. */
	uint64_t dpfn = CHUNK - 1;
	uint32_t np = (uint32_t)(len / PG);
	ASSERT_OK(copy1(sd, UHMM_COPY_TO_DEVICE, src, dpfn, np));
	ASSERT_OK(copy1(sd, UHMM_COPY_FROM_DEVICE, dst, dpfn, np));
	assert_true(uhmm_test_check(dst, len, 42) == (size_t)-1);

	struct uhmm_simdev_meminfo mi = info(sd);
	assert_true(mi.copies == 2);
	assert_true(mi.bytes_copied == 2 * len);
	free(src);
	free(dst);
	ops->destroy(sd);
}

static void copy_zero_fills_device_pages(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(2 * MiB, 1);
	size_t len = 8 * PG;
	unsigned char *buf = malloc(len);
	assert_non_null(buf);

	uhmm_test_fill(buf, len, 7);
	ASSERT_OK(copy1(sd, UHMM_COPY_TO_DEVICE, buf, 10, 8));
	ASSERT_OK(copy1(sd, UHMM_COPY_ZERO, NULL, 12, 3)); /* frames 12..14 */
	memset(buf, 0xff, len);
	ASSERT_OK(copy1(sd, UHMM_COPY_FROM_DEVICE, buf, 10, 8));
	for (size_t i = 0; i < len; i++) {
		bool zero = i >= 2 * PG && i < 5 * PG;
		if (zero)
			assert_int_equal(buf[i], 0);
	}
	assert_true(uhmm_test_check(buf, 2 * PG, 7) == (size_t)-1);
	/* The tail still holds the pattern, at its own offsets. */
	unsigned char *ref = malloc(len);
	assert_non_null(ref);
	uhmm_test_fill(ref, len, 7);
	assert_memory_equal(buf + 5 * PG, ref + 5 * PG, 3 * PG);
	free(ref);
	free(buf);
	ops->destroy(sd);
}

static void invalid_copies_get_einval(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(2 * MiB, 1);
	unsigned char *buf = calloc(2, PG);
	assert_non_null(buf);

	struct uhmm_copy c[] = {
		{ buf, 0, 1, UHMM_COPY_TO_DEVICE, 1 },          /* fine */
		{ buf, CHUNK, 1, UHMM_COPY_TO_DEVICE, 1 },      /* past the end */
		{ buf, CHUNK - 1, 2, UHMM_COPY_FROM_DEVICE, 1 },/* straddles the end */
		{ buf, UINT64_MAX, 2, UHMM_COPY_FROM_DEVICE, 1 },/* wraps */
		{ buf, 0, 0, UHMM_COPY_TO_DEVICE, 1 },          /* empty */
		{ NULL, 0, 1, UHMM_COPY_TO_DEVICE, 1 },         /* no sys */
		{ NULL, 0, 1, UHMM_COPY_FROM_DEVICE, 1 },       /* no sys */
		{ buf, 0, 1, 0, 1 },                            /* bad dir */
		{ buf, 0, 1, 4, 1 },                            /* bad dir */
		{ NULL, CHUNK - 1, 1, UHMM_COPY_ZERO, 1 },      /* fine */
		{ buf, 1, 2, UHMM_COPY_FROM_DEVICE, 1 },        /* fine */
	};
	size_t n = sizeof(c) / sizeof(c[0]);
	assert_int_equal(run_copies(sd, c, n), -EINVAL);
	for (size_t i = 0; i < n; i++) {
		bool ok = i == 0 || i == n - 2 || i == n - 1;
		assert_int_equal(c[i].status, ok ? 0 : -EINVAL);
	}
	assert_true(info(sd).copies == 3);

	/* Bad arguments to submit itself queue nothing. */
	uhmm_fence_t f;
	assert_int_equal(ops->copy_submit(sd, NULL, 1, &f), -EINVAL);
	assert_int_equal(ops->copy_submit(sd, c, 1, NULL), -EINVAL);
	free(buf);
	ops->destroy(sd);
}

static void wait_rejects_unknown_fences(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(2 * MiB, 1);
	uhmm_fence_t f;

	assert_int_equal(ops->copy_wait(sd, 0), -EINVAL);
	assert_int_equal(ops->copy_wait(sd, 12345), -EINVAL);
	/* An empty batch is complete at once, and waited for once only. */
	ASSERT_OK(ops->copy_submit(sd, NULL, 0, &f));
	assert_true(f != 0);
	assert_int_equal(ops->copy_wait(sd, f), 0);
	assert_int_equal(ops->copy_wait(sd, f), -EINVAL);
	assert_int_equal(ops->copy_wait(sd, f + 1), -EINVAL);
	ops->destroy(sd);
}

/* Several batches in flight, waited for in scrambled order. */
static void batches_in_flight_waited_in_any_order(void **state)
{
	(void)state;
	enum { NB = 16, PER = 4, NP = 8 };
	struct simdev *sd = new_dev(4 * MiB, 1);
	unsigned char *src = malloc((size_t)NB * PER * NP * PG);
	unsigned char *dst = malloc((size_t)NB * PER * NP * PG);
	assert_non_null(src);
	assert_non_null(dst);
	uhmm_test_fill(src, (size_t)NB * PER * NP * PG, 99);
	memset(dst, 0, (size_t)NB * PER * NP * PG);

	static struct uhmm_copy to[NB][PER];
	uhmm_fence_t f[NB];
	for (int b = 0; b < NB; b++) {
		for (int i = 0; i < PER; i++) {
			size_t k = (size_t)b * PER + i;
			to[b][i] = (struct uhmm_copy){ src + k * NP * PG, k * NP, NP,
						       UHMM_COPY_TO_DEVICE, 1 };
		}
		ASSERT_OK(ops->copy_submit(sd, to[b], PER, &f[b]));
		for (int j = 0; j < b; j++)
			assert_true(f[b] != f[j]);
	}
	/* Odd ones backwards, then even ones forwards. */
	for (int b = NB - 1; b >= 0; b -= 2)
		assert_int_equal(ops->copy_wait(sd, f[b]), 0);
	for (int b = 0; b < NB; b += 2)
		assert_int_equal(ops->copy_wait(sd, f[b]), 0);
	for (int b = 0; b < NB; b++)
		for (int i = 0; i < PER; i++)
			assert_int_equal(to[b][i].status, 0);

	struct uhmm_copy back = { dst, 0, NB * PER * NP, UHMM_COPY_FROM_DEVICE, 1 };
	ASSERT_OK(run_copies(sd, &back, 1));
	assert_true(uhmm_test_check(dst, (size_t)NB * PER * NP * PG, 99) == (size_t)-1);
	free(src);
	free(dst);
	ops->destroy(sd);
}

static void fence_waits_for_every_copy(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(4 * MiB, 2);
	enum { N = 32 };
	static struct uhmm_copy c[N];
	uhmm_fence_t f[4];

	for (int i = 0; i < N; i++)
		c[i] = (struct uhmm_copy){ NULL, (uint64_t)i * 16, 16, UHMM_COPY_ZERO, 1 };
	for (int b = 0; b < 4; b++)
		ASSERT_OK(ops->copy_submit(sd, c + b * (N / 4), N / 4, &f[b]));
	ASSERT_OK(ops->fence(sd));
	assert_true(info(sd).copies == N);
	for (int b = 0; b < 4; b++)
		assert_int_equal(ops->copy_wait(sd, f[b]), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(c[i].status, 0);
	ASSERT_OK(ops->fence(sd)); /* idle: returns at once */
	ops->destroy(sd);
}

/* ---- copy engine with several threads ----------------------------------- */

struct submitter {
	struct simdev *sd;
	unsigned seed;
	uint64_t dpfn;     /* own device range */
	int result;
};

/* Round trips through its own device range, many small batches. */
static void *submitter_main(void *arg)
{
	struct submitter *s = arg;
	enum { NP = 64, ROUNDS = 8 };
	unsigned char *src = malloc((size_t)NP * PG), *dst = malloc((size_t)NP * PG);
	struct uhmm_copy c[NP];
	s->result = -1;
	if (!src || !dst)
		goto out;
	for (int r = 0; r < ROUNDS; r++) {
		uint64_t seed = s->seed * 1000u + (unsigned)r;
		uhmm_test_fill(src, (size_t)NP * PG, seed);
		memset(dst, 0, (size_t)NP * PG);
		for (int i = 0; i < NP; i++)
			c[i] = (struct uhmm_copy){ src + (size_t)i * PG, s->dpfn + (uint64_t)i,
						   1, UHMM_COPY_TO_DEVICE, 1 };
		if (run_copies(s->sd, c, NP) != 0)
			goto out;
		/* Back in two copies, of uneven size. */
		struct uhmm_copy b[2] = {
			{ dst, s->dpfn, 5, UHMM_COPY_FROM_DEVICE, 1 },
			{ dst + 5 * PG, s->dpfn + 5, NP - 5, UHMM_COPY_FROM_DEVICE, 1 },
		};
		if (run_copies(s->sd, b, 2) != 0)
			goto out;
		if (uhmm_test_check(dst, (size_t)NP * PG, seed) != (size_t)-1)
			goto out;
	}
	s->result = 0;
out:
	free(src);
	free(dst);
	return NULL;
}

static void four_copy_threads_run_concurrent_batches(void **state)
{
	(void)state;
	enum { NT = 4 };
	struct simdev *sd = new_dev(8 * MiB, 4);
	pthread_t t[NT];
	struct submitter s[NT];

	for (int i = 0; i < NT; i++) {
		s[i] = (struct submitter){ sd, (unsigned)i + 1, (uint64_t)i * 256, -1 };
		assert_int_equal(pthread_create(&t[i], NULL, submitter_main, &s[i]), 0);
	}
	for (int i = 0; i < NT; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(s[i].result, 0);
	}

	/* One big batch of 2 MiB copies, split across the threads. */
	size_t len = 4 * 2 * MiB;
	unsigned char *src = malloc(len), *dst = malloc(len);
	assert_non_null(src);
	assert_non_null(dst);
	uhmm_test_fill(src, len, 5);
	struct uhmm_copy c[8];
	for (int i = 0; i < 4; i++) {
		c[i] = (struct uhmm_copy){ src + (size_t)i * 2 * MiB, (uint64_t)i * CHUNK,
					   CHUNK, UHMM_COPY_TO_DEVICE, 1 };
		c[4 + i] = c[i];
		c[4 + i].dir = UHMM_COPY_FROM_DEVICE;
		c[4 + i].sys = dst + (size_t)i * 2 * MiB;
	}
	ASSERT_OK(run_copies(sd, c, 4));
	ASSERT_OK(run_copies(sd, c + 4, 4));
	assert_true(uhmm_test_check(dst, len, 5) == (size_t)-1);
	assert_true(info(sd).copies == NT * 8 * (64 + 2) + 8);
	free(src);
	free(dst);
	ops->destroy(sd);
}

/* ---- fault injection ---------------------------------------------------- */

static void injected_alloc_failures_exact_count(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(8 * MiB, 1);
	uint64_t d[8];
	long got[8];

	ASSERT_OK(uhmm__simdev_inject(sd, UHMM_SIMDEV_FAIL_ALLOC, 2, 3));
	for (int i = 0; i < 7; i++)
		got[i] = ops->alloc(sd, 0, 1, &d[i]);
	assert_int_equal(got[0], 1);
	assert_int_equal(got[1], 1);
	assert_int_equal(got[2], 0);
	assert_int_equal(got[3], 0);
	assert_int_equal(got[4], 0);
	assert_int_equal(got[5], 1);
	assert_int_equal(got[6], 1);
	assert_true(info(sd).free_pages == 4 * CHUNK - 4);

	/* Huge allocations count too; count 0 disarms. */
	ASSERT_OK(uhmm__simdev_inject(sd, UHMM_SIMDEV_FAIL_ALLOC, 0, 1));
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 1, &d[7]), 0);
	ASSERT_OK(uhmm__simdev_inject(sd, UHMM_SIMDEV_FAIL_ALLOC, 0, 5));
	ASSERT_OK(uhmm__simdev_inject(sd, UHMM_SIMDEV_FAIL_ALLOC, 0, 0));
	assert_int_equal(ops->alloc(sd, UHMM_HUGE_ORDER, 1, &d[7]), 1);

	ops->free(sd, 0, 1, &d[0]);
	ops->free(sd, 0, 1, &d[1]);
	ops->free(sd, 0, 1, &d[5]);
	ops->free(sd, 0, 1, &d[6]);
	ops->free(sd, UHMM_HUGE_ORDER, 1, &d[7]);
	assert_true(info(sd).huge_free == 4);
	ops->destroy(sd);
}

static void injected_copy_failures_exact_count(void **state)
{
	(void)state;
	enum { N = 8 };
	struct simdev *sd = new_dev(2 * MiB, 1);
	unsigned char *buf = malloc((size_t)N * PG);
	assert_non_null(buf);
	uhmm_test_fill(buf, (size_t)N * PG, 3);

	/* Copies, not batches, are counted: 3 pass, 2 fail, the rest pass. */
	struct uhmm_copy c[N];
	for (int i = 0; i < N; i++)
		c[i] = (struct uhmm_copy){ buf + (size_t)i * PG, (uint64_t)i, 1,
					   UHMM_COPY_TO_DEVICE, 1 };
	ASSERT_OK(uhmm__simdev_inject(sd, UHMM_SIMDEV_FAIL_COPY, 3, 2));
	uhmm_fence_t f1, f2;
	ASSERT_OK(ops->copy_submit(sd, c, 2, &f1));
	ASSERT_OK(ops->copy_submit(sd, c + 2, N - 2, &f2));
	assert_int_equal(ops->copy_wait(sd, f1), 0);
	assert_int_equal(ops->copy_wait(sd, f2), -EIO);
	for (int i = 0; i < N; i++)
		assert_int_equal(c[i].status, i == 3 || i == 4 ? -EIO : 0);
	assert_true(info(sd).copies == N - 2);

	/* Invalid copies do not consume the budget. */
	ASSERT_OK(uhmm__simdev_inject(sd, UHMM_SIMDEV_FAIL_COPY, 0, 1));
	struct uhmm_copy bad[2] = {
		{ buf, 1ull << 40, 1, UHMM_COPY_TO_DEVICE, 1 },
		{ NULL, 0, 1, UHMM_COPY_ZERO, 1 },
	};
	assert_int_equal(run_copies(sd, bad, 2), -EINVAL); /* first failure */
	assert_int_equal(bad[0].status, -EINVAL);
	assert_int_equal(bad[1].status, -EIO);
	ASSERT_OK(run_copies(sd, bad + 1, 1));

	/* A failed FROM_DEVICE copy leaves its destination partly written. */
	ASSERT_OK(copy1(sd, UHMM_COPY_TO_DEVICE, buf, 100, N));
	ASSERT_OK(uhmm__simdev_inject(sd, UHMM_SIMDEV_FAIL_COPY, 0, 1));
	unsigned char *out = calloc(N, PG);
	assert_non_null(out);
	assert_int_equal(copy1(sd, UHMM_COPY_FROM_DEVICE, out, 100, N), -EIO);
	ASSERT_OK(copy1(sd, UHMM_COPY_FROM_DEVICE, out, 100, N));
	assert_true(uhmm_test_check(out, (size_t)N * PG, 3) == (size_t)-1);
	free(out);
	free(buf);
	ops->destroy(sd);
}

/* ---- transfer model ----------------------------------------------------- */

static void bandwidth_model_slows_copies(void **state)
{
	(void)state;
	struct uhmm_simdev_opts o;
	struct simdev *sd;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 2 * MiB;
	o.bandwidth_gbps = 1.0;
	ASSERT_OK(uhmm__simdev_new(&o, &sd));

	unsigned char *buf = calloc(1, MiB);
	assert_non_null(buf);
	/* 1 MiB at 10^9 B/s is 1.049 ms; only a lower bound is asserted. */
	uint64_t t0 = uhmm_test_now_ns();
	ASSERT_OK(copy1(sd, UHMM_COPY_TO_DEVICE, buf, 0, MiB / PG));
	uint64_t dt = uhmm_test_now_ns() - t0;
	assert_true(dt >= 1000000);
	free(buf);
	ops->destroy(sd);
}

static void latency_model_delays_each_copy(void **state)
{
	(void)state;
	struct uhmm_simdev_opts o;
	struct simdev *sd;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 2 * MiB;
	o.latency_ns = 2000000; /* 2 ms */
	ASSERT_OK(uhmm__simdev_new(&o, &sd));

	/* Three ZERO fills in one batch on one thread: >= 3 latencies. */
	struct uhmm_copy c[3];
	for (int i = 0; i < 3; i++)
		c[i] = (struct uhmm_copy){ NULL, (uint64_t)i, 1, UHMM_COPY_ZERO, 1 };
	uint64_t t0 = uhmm_test_now_ns();
	ASSERT_OK(run_copies(sd, c, 3));
	assert_true(uhmm_test_now_ns() - t0 >= 6000000);
	ops->destroy(sd);
}

/* ---- who runs the copies (no transfer model) ----------------------------- */

static uint64_t eng_read(struct simdev *sd, const uint64_t *field)
{
	pthread_mutex_lock(&sd->eng.lock);
	uint64_t v = *field;
	pthread_mutex_unlock(&sd->eng.lock);
	return v;
}

/* A small batch submitted to an idle engine is run by the submitter,
 * inside copy_submit: no hand-off to a worker thread and back. */
static void small_batch_runs_in_submitter(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(2 * MiB, 1);
	unsigned char *buf = malloc(4 * PG), *out = calloc(4, PG);
	assert_non_null(buf);
	assert_non_null(out);
	uhmm_test_fill(buf, 4 * PG, 9);
	ASSERT_OK(copy1(sd, UHMM_COPY_TO_DEVICE, buf, 7, 4));
	struct uhmm_copy c = { out, 7, 4, UHMM_COPY_FROM_DEVICE, 1 };
	uhmm_fence_t f;
	ASSERT_OK(ops->copy_submit(sd, &c, 1, &f));
	/* Done when submit returns, before any wait. */
	assert_int_equal(c.status, 0);
	assert_true(uhmm_test_check(out, 4 * PG, 9) == (size_t)-1);
	assert_int_equal(ops->copy_wait(sd, f), 0);
	assert_true(eng_read(sd, &sd->eng.chunks_by_caller) == 2);
	assert_true(eng_read(sd, &sd->eng.chunks) == 2);
	assert_true(info(sd).copies == 2);
	free(buf);
	free(out);
	ops->destroy(sd);
}

/* A copy larger than a claim is split into parts, which the worker and the
 * waiter share; the data and the counters are those of one copy. */
static void large_copy_is_split_into_parts(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(4 * MiB, 1);
	size_t len = 2 * MiB;
	unsigned char *src = malloc(len), *dst = calloc(1, len);
	assert_non_null(src);
	assert_non_null(dst);
	uhmm_test_fill(src, len, 21);
	ASSERT_OK(copy1(sd, UHMM_COPY_TO_DEVICE, src, 3, (uint32_t)(len / PG)));
	ASSERT_OK(copy1(sd, UHMM_COPY_FROM_DEVICE, dst, 3, (uint32_t)(len / PG)));
	assert_true(uhmm_test_check(dst, len, 21) == (size_t)-1);
	/* 2 MiB in parts of 256 KiB: 8 parts a copy. */
	assert_true(eng_read(sd, &sd->eng.chunks) == 16);
	assert_true(info(sd).copies == 2);
	assert_true(info(sd).bytes_copied == 2 * len);

	/* A split copy drawn to fail fails whole, once; the next passes. */
	ASSERT_OK(uhmm__simdev_inject(sd, UHMM_SIMDEV_FAIL_COPY, 0, 1));
	assert_int_equal(copy1(sd, UHMM_COPY_FROM_DEVICE, dst, 3, (uint32_t)(len / PG)), -EIO);
	memset(dst, 0, len);
	ASSERT_OK(copy1(sd, UHMM_COPY_FROM_DEVICE, dst, 3, (uint32_t)(len / PG)));
	assert_true(uhmm_test_check(dst, len, 21) == (size_t)-1);
	assert_true(info(sd).copies == 3);
	free(src);
	free(dst);
	ops->destroy(sd);
}

/*
 * The engines do not sleep out a transfer's modelled time (copy.c,
 * "Modelled time is kept by the waiter"): the waiter and a fence do.  Two
 * engines, 1 GB/s each way: a 1 MiB transfer split into parts over both,
 * and one the other way, both waited for by a fence; then each waited for
 * alone: never done before the link could have carried it.
 */
static void split_transfer_and_fence_keep_the_model(void **state)
{
	(void)state;
	struct uhmm_simdev_opts o;
	struct simdev *sd;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 4 * MiB;
	o.bandwidth_gbps = 0.1;
	o.copy_threads = 2;
	ASSERT_OK(uhmm__simdev_new(&o, &sd));
	unsigned char *buf = malloc(MiB), *out = calloc(1, MiB);
	assert_non_null(buf);
	assert_non_null(out);
	uhmm_test_fill(buf, MiB, 5);
	ASSERT_OK(copy1(sd, UHMM_COPY_TO_DEVICE, buf, 0, MiB / PG));

	struct uhmm_copy a = { buf, MiB / PG, MiB / PG, UHMM_COPY_TO_DEVICE, 1 };
	struct uhmm_copy b = { out, 0, MiB / PG, UHMM_COPY_FROM_DEVICE, 1 };
	uhmm_fence_t fa, fb;
	uint64_t t0 = uhmm_test_now_ns();
	ASSERT_OK(ops->copy_submit(sd, &a, 1, &fa));
	ASSERT_OK(ops->copy_submit(sd, &b, 1, &fb));
	ASSERT_OK(ops->fence(sd));
	assert_true(uhmm_test_now_ns() - t0 >= 10000000); /* 1 MiB at 10^8 B/s */
	ASSERT_OK(ops->copy_wait(sd, fa));
	ASSERT_OK(ops->copy_wait(sd, fb));
	assert_true(uhmm_test_check(out, MiB, 5) == (size_t)-1);

	/* Alone, split over both engines: the waiter sleeps what is left. */
	t0 = uhmm_test_now_ns();
	ASSERT_OK(copy1(sd, UHMM_COPY_FROM_DEVICE, out, MiB / PG, MiB / PG));
	assert_true(uhmm_test_now_ns() - t0 >= 10000000);
	assert_true(eng_read(sd, &sd->eng.chunks) > 4); /* it was split */
	assert_true(uhmm_test_check(out, MiB, 5) == (size_t)-1);
	free(buf);
	free(out);
	ops->destroy(sd);
}

/* With a transfer model only the workers (the modelled engines) copy. */
static void modelled_engine_runs_on_workers_only(void **state)
{
	(void)state;
	struct uhmm_simdev_opts o;
	struct simdev *sd;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 2 * MiB;
	o.latency_ns = 1000;
	ASSERT_OK(uhmm__simdev_new(&o, &sd));
	unsigned char *buf = malloc(PG);
	assert_non_null(buf);
	uhmm_test_fill(buf, PG, 2);
	for (int i = 0; i < 8; i++)
		ASSERT_OK(copy1(sd, UHMM_COPY_TO_DEVICE, buf, (uint64_t)i, 1));
	assert_true(eng_read(sd, &sd->eng.chunks) == 8);
	assert_true(eng_read(sd, &sd->eng.chunks_by_caller) == 0);
	free(buf);
	ops->destroy(sd);
}

/* ---- teardown ----------------------------------------------------------- */

static void destroy_with_batches_completed(void **state)
{
	(void)state;
	struct simdev *sd = new_dev(4 * MiB, 3);
	unsigned char *buf = malloc(64 * PG);
	assert_non_null(buf);
	uhmm_test_fill(buf, 64 * PG, 1);

	/* 40 batches: more than the batch cache holds; half never waited. */
	static struct uhmm_copy c[40][2];
	uhmm_fence_t f[40];
	for (int b = 0; b < 40; b++) {
		/* Disjoint device ranges: batches run concurrently (TSan). */
		c[b][0] = (struct uhmm_copy){ buf, (uint64_t)b * 16, 16, UHMM_COPY_TO_DEVICE, 1 };
		c[b][1] = (struct uhmm_copy){ NULL, 640 + (uint64_t)b * 8, 8, UHMM_COPY_ZERO, 1 };
		ASSERT_OK(ops->copy_submit(sd, c[b], 2, &f[b]));
	}
	for (int b = 0; b < 40; b += 2)
		assert_int_equal(ops->copy_wait(sd, f[b]), 0);
	ASSERT_OK(ops->fence(sd));
	ops->destroy(sd); /* releases the 20 unwaited batches (ASan checks) */
	for (int b = 0; b < 40; b++) {
		assert_int_equal(c[b][0].status, 0);
		assert_int_equal(c[b][1].status, 0);
	}
	free(buf);
}

static void many_devices_at_once(void **state)
{
	(void)state;
	struct simdev *sd[4];
	unsigned char *buf = malloc(PG), *out = malloc(PG);
	assert_non_null(buf);
	assert_non_null(out);
	for (int i = 0; i < 4; i++)
		sd[i] = new_dev(2 * MiB, (unsigned)i + 1);
	for (int i = 0; i < 4; i++) {
		uhmm_test_fill(buf, PG, (uint64_t)i);
		ASSERT_OK(copy1(sd[i], UHMM_COPY_TO_DEVICE, buf, 3, 1));
	}
	for (int i = 0; i < 4; i++) {
		ASSERT_OK(copy1(sd[i], UHMM_COPY_FROM_DEVICE, out, 3, 1));
		assert_true(uhmm_test_check(out, PG, (uint64_t)i) == (size_t)-1);
	}
	for (int i = 0; i < 4; i++)
		ops->destroy(sd[i]);
	free(buf);
	free(out);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(opts_init_sets_defaults),
	cmocka_unit_test(new_rejects_bad_opts),
	cmocka_unit_test(public_api_rejects_null_device),
	cmocka_unit_test(alloc_free_4k_pages),
	cmocka_unit_test(alloc_free_2m_pages),
	cmocka_unit_test(alloc_rejects_bad_order),
	cmocka_unit_test(exhaustion_returns_fewer_pages_then_recovers),
	cmocka_unit_test(huge_alloc_never_returns_partial_page),
	cmocka_unit_test(small_allocs_prefer_partial_chunks),
	cmocka_unit_test(split_chunk_returns_to_free_list),
	cmocka_unit_test(double_free_is_caught),
	cmocka_unit_test(copy_round_trip_preserves_pattern),
	cmocka_unit_test(copy_zero_fills_device_pages),
	cmocka_unit_test(invalid_copies_get_einval),
	cmocka_unit_test(wait_rejects_unknown_fences),
	cmocka_unit_test(batches_in_flight_waited_in_any_order),
	cmocka_unit_test(fence_waits_for_every_copy),
	cmocka_unit_test(four_copy_threads_run_concurrent_batches),
	cmocka_unit_test(injected_alloc_failures_exact_count),
	cmocka_unit_test(injected_copy_failures_exact_count),
	cmocka_unit_test(bandwidth_model_slows_copies),
	cmocka_unit_test(latency_model_delays_each_copy),
	cmocka_unit_test(split_transfer_and_fence_keep_the_model),
	cmocka_unit_test(small_batch_runs_in_submitter),
	cmocka_unit_test(large_copy_is_split_into_parts),
	cmocka_unit_test(modelled_engine_runs_on_workers_only),
	cmocka_unit_test(destroy_with_batches_completed),
	cmocka_unit_test(many_devices_at_once),
};

UHMM_TEST_MAIN(tests)
