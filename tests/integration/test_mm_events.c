/* SPDX-License-Identifier: MIT */
/*
 * The CPU page table changing under uhmm (DESIGN hard point 3): munmap,
 * madvise(MADV_DONTNEED), mremap and fork of memory whose pages live on a
 * device, and the calls that end management (destroy, unregister, free).
 *
 * uhmm learns of munmap/madvise/mremap through userfaultfd events.  The
 * kernel waits until the event is *read*, not until uhmm has acted on it,
 * so the tests poll (bounded, 2 s) for the outcome before asserting it.
 * Nothing else depends on timing.
 */
#define _GNU_SOURCE
#include "testlib.h"

#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG ((size_t)UHMM_PAGE_SIZE)
#define MiB ((size_t)1 << 20)
#define LEN (4 * MiB)
#define NPAGES (LEN / PG)
#define POLL_NS 2000000000ull

struct env {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	uint64_t free0; /* device free pages before anything moved */
};

static void env_init(struct env *e)
{
	struct uhmm_simdev_opts o;
	ASSERT_OK(uhmm_ctx_create(NULL, &e->ctx));
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 64 * MiB;
	ASSERT_OK(uhmm_simdev_create(e->ctx, &o, &e->dev));
	struct uhmm_simdev_meminfo mi;
	ASSERT_OK(uhmm_simdev_meminfo(e->dev, &mi));
	e->free0 = mi.free_pages;
	assert_true(e->free0 == 64 * MiB / PG);
}

static void env_fini(struct env *e)
{
	ASSERT_OK(uhmm_ctx_destroy(e->ctx));
	e->ctx = NULL;
}

static struct uhmm_stats stats(struct env *e)
{
	struct uhmm_stats st;
	ASSERT_OK(uhmm_stats_get(e->ctx, &st));
	return st;
}

/* Polls (up to 2 s) until uhmm_page_query(@addr) returns @want. */
static int wait_query(struct env *e, const void *addr, int want)
{
	struct uhmm_page_info pi;
	uint64_t t0 = uhmm_test_now_ns();
	int r;
	while ((r = uhmm_page_query(e->ctx, addr, &pi)) != want &&
	       uhmm_test_now_ns() - t0 < POLL_NS)
		uhmm_test_nap();
	return r;
}

static char *map_anon(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

static void assert_where(struct env *e, const char *p, size_t len, unsigned where)
{
	for (size_t off = 0; off < len; off += PG) {
		struct uhmm_page_info pi;
		ASSERT_OK(uhmm_page_query(e->ctx, p + off, &pi));
		if (pi.where != where)
			fail_msg("page at +%#zx: where %u, expected %u", off, pi.where, where);
		if (where == UHMM_WHERE_DEVICE)
			assert_ptr_equal(pi.device, e->dev);
	}
}

/*
 * After a CPU access has brought pages back, the access proceeds as soon as
 * the page is in place; uhmm records the new location and frees the device
 * page right after (see page_state_published_before_access_proceeds).  So
 * checks of location and device memory after CPU faults poll, bounded.
 */
static void wait_where(struct env *e, const char *p, size_t len, unsigned where)
{
	uint64_t t0 = uhmm_test_now_ns();
	for (size_t off = 0; off < len; off += PG) {
		struct uhmm_page_info pi;
		for (;;) {
			ASSERT_OK(uhmm_page_query(e->ctx, p + off, &pi));
			if (pi.where == where || uhmm_test_now_ns() - t0 > POLL_NS)
				break;
			uhmm_test_nap();
		}
	}
	assert_where(e, p, len, where);
}

/* Fills a registered 4 MiB mmap'd region and moves it to the device. */
static char *registered_on_device(struct env *e, uint64_t seed)
{
	char *p = map_anon(LEN);
	ASSERT_OK(uhmm_register(e->ctx, p, LEN));
	uhmm_test_fill(p, LEN, seed);
	ASSERT_OK(uhmm_migrate(e->ctx, p, LEN, e->dev, 0));
	assert_where(e, p, LEN, UHMM_WHERE_DEVICE);
	assert_true(uhmm_test_dev_free(e->dev) == e->free0 - NPAGES);
	return p;
}

/* ---- munmap ------------------------------------------------------------------ */

static void munmap_frees_device_pages(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p = registered_on_device(&e, 1);
	struct uhmm_stats st0 = stats(&e);

	assert_int_equal(munmap(p, LEN), 0);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);
	struct uhmm_stats st = stats(&e);
	assert_true(st.events_unmap > st0.events_unmap);
	assert_true(st.device_pages_freed_by_events - st0.device_pages_freed_by_events ==
		    NPAGES);
	assert_true(st.managed_pages == st0.managed_pages - NPAGES);
	struct uhmm_page_info pi;
	assert_int_equal(uhmm_page_query(e.ctx, p, &pi), -EFAULT);
	assert_int_equal(uhmm_page_query(e.ctx, p + LEN - PG, &pi), -EFAULT);
	/* Nothing was copied back for memory that is gone. */
	assert_true(st.migrated_to_system_pages == st0.migrated_to_system_pages);
	env_fini(&e);
}

static void munmap_of_alloc_memory_frees_device_pages(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, LEN, (void **)&p));
	uhmm_test_fill(p, LEN, 2);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	assert_true(uhmm_test_dev_free(e.dev) == e.free0 - NPAGES);

	assert_int_equal(munmap(p, LEN), 0);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);
	assert_int_equal(wait_query(&e, p, -EFAULT), -EFAULT);
	/* uhmm forgot the range: freeing it is an error now, not a double unmap. */
	assert_int_equal(uhmm_free(e.ctx, p), -EINVAL);
	env_fini(&e);
}

static void munmap_middle_frees_its_device_pages_and_keeps_the_rest(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t seed = 3;
	char *p = registered_on_device(&e, seed);
	const size_t hole = 3 * MiB / 2, hlen = MiB, tail = hole + hlen;
	struct uhmm_stats st0 = stats(&e);

	assert_int_equal(munmap(p + hole, hlen), 0);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0 - (NPAGES - hlen / PG)) ==
		    e.free0 - (NPAGES - hlen / PG));
	struct uhmm_stats st = stats(&e);
	assert_true(st.events_unmap > st0.events_unmap);
	assert_true(st.device_pages_freed_by_events - st0.device_pages_freed_by_events ==
		    hlen / PG);
	assert_true(st.managed_pages == st0.managed_pages - hlen / PG);

	/* The hole is not managed; the parts around it still are, on the device. */
	struct uhmm_page_info pi;
	assert_int_equal(uhmm_page_query(e.ctx, p + hole, &pi), -EFAULT);
	assert_int_equal(uhmm_page_query(e.ctx, p + tail - PG, &pi), -EFAULT);
	assert_where(&e, p, hole, UHMM_WHERE_DEVICE);
	assert_where(&e, p + tail, LEN - tail, UHMM_WHERE_DEVICE);

	/* Touching them brings the data back. */
	uhmm_test_assert_data(p, 0, hole, seed);
	uhmm_test_assert_data(p, tail, LEN - tail, seed);
	wait_where(&e, p, hole, UHMM_WHERE_CPU);
	wait_where(&e, p + tail, LEN - tail, UHMM_WHERE_CPU);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);

	/* And both parts still migrate. */
	ASSERT_OK(uhmm_migrate(e.ctx, p, hole, e.dev, 0));
	ASSERT_OK(uhmm_migrate(e.ctx, p + tail, LEN - tail, e.dev, 0));
	ASSERT_OK(uhmm_migrate(e.ctx, p, hole, NULL, 0));
	ASSERT_OK(uhmm_migrate(e.ctx, p + tail, LEN - tail, NULL, 0));
	uhmm_test_assert_data(p, 0, hole, seed);
	uhmm_test_assert_data(p, tail, LEN - tail, seed);
	assert_true(uhmm_test_dev_free(e.dev) == e.free0);

	munmap(p, hole);
	munmap(p + tail, LEN - tail);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);
	env_fini(&e);
}

/* ---- madvise ------------------------------------------------------------------ */

static void madvise_dontneed_frees_device_pages_and_reads_zero(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t seed = 4;
	char *p = registered_on_device(&e, seed);
	const size_t z = MiB, zlen = MiB; /* zap [1 MiB, 2 MiB) */
	struct uhmm_stats st0 = stats(&e);

	assert_int_equal(madvise(p + z, zlen, MADV_DONTNEED), 0);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0 - (NPAGES - zlen / PG)) ==
		    e.free0 - (NPAGES - zlen / PG));
	struct uhmm_stats st = stats(&e);
	assert_true(st.events_remove > st0.events_remove);
	assert_true(st.device_pages_freed_by_events - st0.device_pages_freed_by_events ==
		    zlen / PG);
	assert_true(st.managed_pages == st0.managed_pages); /* still managed */
	assert_true(st.migrated_to_system_pages == st0.migrated_to_system_pages);

	/* Still managed, in system memory, reading zeros; the rest untouched. */
	assert_where(&e, p + z, zlen, UHMM_WHERE_CPU);
	assert_where(&e, p, z, UHMM_WHERE_DEVICE);
	assert_where(&e, p + z + zlen, LEN - z - zlen, UHMM_WHERE_DEVICE);
	uhmm_test_assert_zero(p + z, zlen);
	uhmm_test_assert_data(p, 0, z, seed);
	uhmm_test_assert_data(p, z + zlen, LEN - z - zlen, seed);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);

	/* The zapped part is ordinary managed memory again. */
	memset(p + z, 0x7e, zlen);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	assert_where(&e, p, LEN, UHMM_WHERE_DEVICE);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, NULL, 0));
	uhmm_test_assert_data(p, 0, z, seed);
	uhmm_test_assert_data(p, z + zlen, LEN - z - zlen, seed);
	for (size_t i = 0; i < zlen; i++)
		if ((unsigned char)p[z + i] != 0x7e)
			fail_msg("byte %#zx lost its write", z + i);

	ASSERT_OK(uhmm_unregister(e.ctx, p, LEN));
	munmap(p, LEN);
	env_fini(&e);
}

/* ---- mremap ------------------------------------------------------------------- */

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

/* mremap(MREMAP_DONTUNMAP): the data goes with the pages, the source stays
 * mapped, empty, and is given back to the kernel (no longer registered):
 * it reads zeros without a round trip through uhmm. */
static void mremap_dontunmap_gives_the_source_back(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t seed = 6;
	char *old = registered_on_device(&e, seed);
	assert_int_equal(uhmm_test_uffd_registered(old), 1);
	char *n = mremap(old, LEN, LEN, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL);
	if (n == MAP_FAILED && errno == EINVAL)
		TEST_SKIP("the kernel has no MREMAP_DONTUNMAP for this mapping");
	assert_true(n != MAP_FAILED);
	ASSERT_OK(uhmm_sync(e.ctx));
	assert_int_equal(uhmm_test_uffd_registered(old), 0);
	assert_int_equal(uhmm_test_uffd_registered(n), 1);
	struct uhmm_page_info pi;
	assert_int_equal(uhmm_page_query(e.ctx, old, &pi), -EFAULT);
	assert_where(&e, n, LEN, UHMM_WHERE_DEVICE);
	uhmm_test_assert_zero(old, LEN);
	uhmm_test_assert_data(n, 0, LEN, seed);
	munmap(old, LEN);
	munmap(n, LEN);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);
	env_fini(&e);
}

static void mremap_moves_device_resident_data(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t seed = 5;
	char *old = registered_on_device(&e, seed);
	char *to = mmap(NULL, LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(to != MAP_FAILED);
	struct uhmm_stats st0 = stats(&e);

	char *n = mremap(old, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	assert_ptr_equal(n, to);
	assert_int_equal(wait_query(&e, n, 0), 0);
	assert_int_equal(wait_query(&e, old, -EFAULT), -EFAULT);
	struct uhmm_stats st = stats(&e);
	assert_true(st.events_remap > st0.events_remap);
	assert_true(st.managed_pages == st0.managed_pages);
	struct uhmm_page_info pi;
	assert_int_equal(uhmm_page_query(e.ctx, old + LEN - PG, &pi), -EFAULT);

	/* The pages followed to the new address, still on the device. */
	assert_where(&e, n, LEN, UHMM_WHERE_DEVICE);
	assert_true(uhmm_test_dev_free(e.dev) == e.free0 - NPAGES);
	/* Reading at the new address faults the original data back. */
	uhmm_test_assert_data(n, 0, LEN, seed);
	wait_where(&e, n, LEN, UHMM_WHERE_CPU);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);
	assert_true(stats(&e).cpu_faults_device > st0.cpu_faults_device);

	munmap(n, LEN);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);
	env_fini(&e);
}

/* ---- fork ---------------------------------------------------------------------- */

static int wait_child(pid_t pid)
{
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status))
		fail_msg("child died (status %#x)", status);
	return WEXITSTATUS(status);
}

static void fork_child_sees_device_resident_data(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t s1 = 6, s2 = 66, s3 = 666;
	char *p = registered_on_device(&e, s1);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (uhmm_test_check(p, LEN, s1) != (size_t)-1)
			_exit(1);
		uhmm_test_fill(p, LEN, s2);
		if (uhmm_test_check(p, LEN, s2) != (size_t)-1)
			_exit(2);
		_exit(0);
	}
	int st = wait_child(pid);
	if (st)
		fail_msg("child: %s", st == 1 ? "device-resident data missing"
					       : "could not write its copy");
	/* The child's writes did not reach the parent. */
	uhmm_test_assert_data(p, 0, LEN, s1);

	/* Migration after fork still works both ways. */
	uhmm_test_fill(p, LEN, s3);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	assert_where(&e, p, LEN, UHMM_WHERE_DEVICE);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, NULL, 0));
	assert_where(&e, p, LEN, UHMM_WHERE_CPU);
	uhmm_test_assert_data(p, 0, LEN, s3);
	assert_true(uhmm_test_dev_free(e.dev) == e.free0);

	ASSERT_OK(uhmm_unregister(e.ctx, p, LEN));
	munmap(p, LEN);
	env_fini(&e);
}

static void fork_parent_writes_do_not_reach_child(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t s1 = 7, s2 = 77;
	char *p = registered_on_device(&e, s1);
	int go[2];
	assert_int_equal(pipe(go), 0);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char c;
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(3);
		_exit(uhmm_test_check(p, LEN, s1) == (size_t)-1 ? 0 : 1);
	}
	close(go[0]);
	/* Write everything, and move it through the device and back while the
	 * child still maps the old pages. */
	uhmm_test_fill(p, LEN, s2);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	assert_where(&e, p, LEN, UHMM_WHERE_DEVICE);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, NULL, 0));
	assert_int_equal(write(go[1], "x", 1), 1);
	close(go[1]);
	int st = wait_child(pid);
	if (st)
		fail_msg("child: %s", st == 1 ? "saw the parent's writes"
					       : "pipe failed");
	uhmm_test_assert_data(p, 0, LEN, s2);

	ASSERT_OK(uhmm_unregister(e.ctx, p, LEN));
	munmap(p, LEN);
	env_fini(&e);
}

/* After fork the pages are shared copy-on-write with the child: migrating
 * them without writing first must still move every page (uhmm has to break
 * the sharing), and the child must keep the old data. */
static void migrate_after_fork_while_child_lives_moves_every_page(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t s1 = 8;
	char *p = registered_on_device(&e, s1);
	int go[2];
	assert_int_equal(pipe(go), 0);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char c;
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(3);
		_exit(uhmm_test_check(p, LEN, s1) == (size_t)-1 ? 0 : 1);
	}
	close(go[0]);
	int r = uhmm_migrate(e.ctx, p, LEN, e.dev, 0);
	/* Let the child finish whatever happened. */
	assert_int_equal(write(go[1], "x", 1), 1);
	close(go[1]);
	int st = wait_child(pid);
	ASSERT_OK(r);
	assert_where(&e, p, LEN, UHMM_WHERE_DEVICE);
	assert_true(stats(&e).migrate_busy == 0);
	if (st)
		fail_msg("child: %s", st == 1 ? "lost its data" : "pipe failed");
	/* The parent's data comes back intact. */
	uhmm_test_assert_data(p, 0, LEN, s1);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);

	ASSERT_OK(uhmm_unregister(e.ctx, p, LEN));
	munmap(p, LEN);
	env_fini(&e);
}

/* ---- the order of a fault's effects --------------------------------------- */

/*
 * A CPU access to a device-resident page "sleeps while uhmm brings the data
 * back, then proceeds" (uhmm.h).  Once it has proceeded, uhmm's own record
 * should agree: uhmm_page_query() from the same thread says the page is in
 * system memory, and its device page is free.  To make a stale record easy
 * to see, the faulting page is the last of a 512-page fault-around block
 * (the whole block comes back in one go); the test repeats the fault and
 * fails if it ever sees the stale record.
 */
static void page_state_published_before_access_proceeds(void **state)
{
	(void)state;
	struct env e;
	struct uhmm_ctx_opts o;
	struct uhmm_simdev_opts so;
	uhmm_ctx_opts_init(&o);
	o.fault_around = 512;
	ASSERT_OK(uhmm_ctx_create(&o, &e.ctx));
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 64 * MiB;
	ASSERT_OK(uhmm_simdev_create(e.ctx, &so, &e.dev));
	e.free0 = uhmm_test_dev_free(e.dev);

	const size_t blk = 2 * MiB;
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, blk, (void **)&p)); /* 2 MiB aligned */
	uhmm_test_fill(p, blk, 13);
	char *last = p + blk - PG;
	size_t stale_where = 0, stale_free = 0, rounds = 24;
	for (size_t i = 0; i < rounds; i++) {
		ASSERT_OK(uhmm_migrate(e.ctx, p, blk, e.dev, 0));
		volatile char *v = last;
		(void)v[0]; /* faults the block back */
		struct uhmm_page_info pi;
		ASSERT_OK(uhmm_page_query(e.ctx, last, &pi));
		uint64_t f = uhmm_test_dev_free(e.dev);
		stale_where += pi.where != UHMM_WHERE_CPU;
		stale_free += f < e.free0 - (blk / PG - 1); /* its own page still held */
		/* Let the record settle before the next round (each page's
		 * device copy is freed after its new location is published). */
		assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);
	}
	wait_where(&e, p, blk, UHMM_WHERE_CPU);
	uhmm_test_assert_data(p, 0, blk, 13);
	if (stale_where || stale_free)
		fail_msg("after the faulting access returned: the page was still "
			 "recorded on the device %zu/%zu times; the device still held "
			 "every page of the block %zu/%zu times",
			 stale_where, rounds, stale_free, rounds);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
}

/* ---- ending management ------------------------------------------------------- */

static void destroy_brings_device_pages_home(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t seed = 9;
	char *p = aligned_alloc(PG, LEN);
	assert_non_null(p);
	ASSERT_OK(uhmm_register(e.ctx, p, LEN));
	uhmm_test_fill(p, LEN, seed);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	assert_where(&e, p, LEN, UHMM_WHERE_DEVICE);

	env_fini(&e);
	/* Ordinary memory, the caller's, holding the data. */
	uhmm_test_assert_data(p, 0, LEN, seed);
	uhmm_test_fill(p, LEN, seed + 1);
	uhmm_test_assert_data(p, 0, LEN, seed + 1);
	free(p);
}

static void destroy_leaves_alloc_memory_mapped_with_data(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t seed = 10;
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, LEN, (void **)&p));
	uhmm_test_fill(p, LEN, seed);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	assert_where(&e, p, LEN, UHMM_WHERE_DEVICE);

	env_fini(&e);
	uhmm_test_assert_data(p, 0, LEN, seed);
	/* Still mapped (the caller's to munmap), and writable. */
	uhmm_test_fill(p, LEN, seed + 1);
	uhmm_test_assert_data(p, 0, LEN, seed + 1);
	assert_int_equal(munmap(p, LEN), 0);
}

static void unregister_brings_pages_home(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t seed = 11;
	char *p = aligned_alloc(PG, LEN);
	assert_non_null(p);
	ASSERT_OK(uhmm_register(e.ctx, p, LEN));
	uhmm_test_fill(p, LEN, seed);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	struct uhmm_stats st0 = stats(&e);

	ASSERT_OK(uhmm_unregister(e.ctx, p, LEN));
	/* Synchronously: every device page came back and was freed. */
	assert_true(uhmm_test_dev_free(e.dev) == e.free0);
	struct uhmm_stats st = stats(&e);
	assert_true(st.migrated_to_system_pages - st0.migrated_to_system_pages == NPAGES);
	assert_true(st.managed_pages == st0.managed_pages - NPAGES);
	struct uhmm_page_info pi;
	assert_int_equal(uhmm_page_query(e.ctx, p, &pi), -EFAULT);
	assert_int_equal(uhmm_page_query(e.ctx, p + LEN - PG, &pi), -EFAULT);
	/* The data is there without any fault being served for it. */
	uhmm_test_assert_data(p, 0, LEN, seed);
	assert_true(stats(&e).cpu_faults == st.cpu_faults);
	/* Ordinary memory: free to be registered again, contents kept. */
	ASSERT_OK(uhmm_register(e.ctx, p, LEN));
	uhmm_test_assert_data(p, 0, LEN, seed);
	ASSERT_OK(uhmm_unregister(e.ctx, p, LEN));

	env_fini(&e);
	free(p);
}

static void free_with_device_pages_releases_them(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, LEN, (void **)&p));
	uhmm_test_fill(p, LEN, 12);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	assert_true(uhmm_test_dev_free(e.dev) == e.free0 - NPAGES);
	struct uhmm_stats st0 = stats(&e);

	ASSERT_OK(uhmm_free(e.ctx, p));
	/* Synchronously, and without copying the data back. */
	assert_true(uhmm_test_dev_free(e.dev) == e.free0);
	struct uhmm_stats st = stats(&e);
	assert_true(st.migrated_to_system_pages == st0.migrated_to_system_pages);
	assert_true(st.managed_pages == st0.managed_pages - NPAGES);
	struct uhmm_page_info pi;
	assert_int_equal(uhmm_page_query(e.ctx, p, &pi), -EFAULT);
	/* The range is unmapped: a fixed mapping there does not collide. */
	char *q = mmap(p, LEN, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	assert_ptr_equal(q, p);
	munmap(q, LEN);
	env_fini(&e);
}

/*
 * uhmm_sync(): once it returns, a munmap that returned before it has been
 * followed.  Without the wait, uhmm_page_query() found the unmapped part
 * still managed about one time in three (the service thread had read the
 * event but not yet applied it); 200 rounds fail reliably without it.
 */
static void sync_makes_a_returned_munmap_visible(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	for (int i = 0; i < 200; i++) {
		char *p;
		ASSERT_OK(uhmm_alloc(e.ctx, 16 * PG, (void **)&p));
		memset(p, 0x5a, 16 * PG);
		ASSERT_OK(uhmm_migrate(e.ctx, p, 16 * PG, e.dev, 0));
		assert_int_equal(munmap(p + 8 * PG, 2 * PG), 0);
		ASSERT_OK(uhmm_sync(e.ctx));
		struct uhmm_page_info pi;
		if (uhmm_page_query(e.ctx, p + 8 * PG, &pi) != -EFAULT)
			fail_msg("round %d: the unmapped page is still managed", i);
		assert_int_equal(munmap(p, 16 * PG), 0);
	}
	env_fini(&e);
}

static int sync_in_callback_ret = 1;

static void sync_from_callback(struct uhmm_notifier *n, const struct uhmm_inv_event *ev,
			       void *priv)
{
	(void)n;
	if (ev->reason == UHMM_INV_UNMAP)
		sync_in_callback_ret = uhmm_sync(priv);
}

/* An invalidate callback runs while the change is applied: uhmm_sync() from
 * it returns at once instead of waiting for itself. */
static void sync_from_an_invalidate_callback_returns(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, 16 * PG, (void **)&p));
	struct uhmm_notifier *n;
	ASSERT_OK(uhmm_notifier_insert(e.ctx, (uintptr_t)p, 16 * PG, sync_from_callback,
				       e.ctx, &n));
	assert_int_equal(munmap(p, 16 * PG), 0);
	ASSERT_OK(uhmm_sync(e.ctx));
	assert_int_equal(sync_in_callback_ret, 0);
	ASSERT_OK(uhmm_notifier_remove(n));
	env_fini(&e);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(munmap_frees_device_pages),
	cmocka_unit_test(munmap_of_alloc_memory_frees_device_pages),
	cmocka_unit_test(munmap_middle_frees_its_device_pages_and_keeps_the_rest),
	cmocka_unit_test(madvise_dontneed_frees_device_pages_and_reads_zero),
	cmocka_unit_test(mremap_moves_device_resident_data),
	cmocka_unit_test(mremap_dontunmap_gives_the_source_back),
	cmocka_unit_test(fork_child_sees_device_resident_data),
	cmocka_unit_test(fork_parent_writes_do_not_reach_child),
	cmocka_unit_test(migrate_after_fork_while_child_lives_moves_every_page),
	cmocka_unit_test(page_state_published_before_access_proceeds),
	cmocka_unit_test(destroy_brings_device_pages_home),
	cmocka_unit_test(destroy_leaves_alloc_memory_mapped_with_data),
	cmocka_unit_test(unregister_brings_pages_home),
	cmocka_unit_test(sync_makes_a_returned_munmap_visible),
	cmocka_unit_test(sync_from_an_invalidate_callback_returns),
	cmocka_unit_test(free_with_device_pages_releases_them),
};

UHMM_TEST_MAIN(tests)
