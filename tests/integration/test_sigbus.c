/* SPDX-License-Identifier: MIT */
/*
 * UHMM_CTX_SIGBUS: the faulting thread serves its own CPU faults in uhmm's
 * SIGBUS handler.  Each test is the default mode's behaviour, checked again
 * in this mode (data back, zeros, one migration per page, munmap / madvise /
 * mremap / fork / exclusive), plus what is the mode's own: the fault is
 * served on the faulting thread, SIGBUS that are not uhmm's reach the
 * application's handler, kernel accesses get EFAULT, bad flags.
 *
 * One test a process, as ctest runs them: cmocka installs its own SIGBUS
 * handler for each test and restores the one it saved afterwards, which
 * removes uhmm's (installed once per process, at the first SIGBUS-mode
 * context): the next test's faults would reach cmocka, not uhmm.  The same
 * holds for any code that restores a SIGBUS handler saved before uhmm's
 * (uhmm.h, UHMM_CTX_SIGBUS).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "core/internal.h"
#include "testlib.h"

#define MiB (1ul << 20)
#define PG 4096ul
#define LEN (4 * MiB)
#define NPAGES (LEN / PG)
#define POLL_NS 2000000000ull

struct env {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	uint64_t free0;
};

static void env_init_opts(struct env *e, uint32_t flags, uint32_t fault_around,
			  int pool_pages)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = UHMM_CTX_SIGBUS | flags;
	if (fault_around)
		o.fault_around = fault_around;
	if (pool_pages >= 0)
		o.pool_pages = (uint32_t)pool_pages;
	int err = uhmm_ctx_create(&o, &e->ctx);
	if (err == -EOPNOTSUPP)
		TEST_SKIP("the kernel has no UFFD_FEATURE_SIGBUS");
	ASSERT_OK(err);
	struct uhmm_ctx_info info;
	ASSERT_OK(uhmm_ctx_info(e->ctx, &info));
	assert_int_equal(info.sigbus, 1);
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 64 * MiB;
	ASSERT_OK(uhmm_simdev_create(e->ctx, &so, &e->dev));
	struct uhmm_simdev_meminfo mi;
	ASSERT_OK(uhmm_simdev_meminfo(e->dev, &mi));
	e->free0 = mi.free_pages;
}

static void env_init(struct env *e)
{
	env_init_opts(e, 0, 0, -1);
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

static void assert_where(struct env *e, const char *p, size_t len, unsigned where)
{
	for (size_t off = 0; off < len; off += PG) {
		struct uhmm_page_info pi;
		ASSERT_OK(uhmm_page_query(e->ctx, p + off, &pi));
		if (pi.where != where)
			fail_msg("page at +%#zx: where %u, expected %u", off, pi.where, where);
	}
}

static char *alloc_on_device(struct env *e, size_t len, uint64_t seed)
{
	char *p;
	ASSERT_OK(uhmm_alloc(e->ctx, len, (void **)&p));
	uhmm_test_fill(p, len, seed);
	ASSERT_OK(uhmm_migrate(e->ctx, p, len, e->dev, 0));
	assert_where(e, p, len, UHMM_WHERE_DEVICE);
	return p;
}

static pid_t tid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* ---- data comes back, served by the faulting thread ---- */

/* Records the threads that run migrations home (the fault's service). */
struct inv_rec {
	atomic_int home, home_other_thread;
	pid_t me;
};

static void rec_inv(struct uhmm_notifier *n, const struct uhmm_inv_event *ev, void *priv)
{
	(void)n;
	struct inv_rec *r = priv;
	if (ev->reason == UHMM_INV_MIGRATE && ev->device == NULL) {
		atomic_fetch_add(&r->home, 1);
		if (tid() != r->me)
			atomic_fetch_add(&r->home_other_thread, 1);
	}
}

static void touch_brings_data_back_on_the_faulting_thread(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t seed = 11;
	char *p = alloc_on_device(&e, LEN, seed);
	struct inv_rec rec = { .me = tid() };
	struct uhmm_notifier *n;
	ASSERT_OK(uhmm_notifier_insert(e.ctx, (uintptr_t)p, LEN, rec_inv, &rec, &n));
	struct uhmm_stats s0 = stats(&e);

	/* Read: every byte as it was. */
	uhmm_test_assert_data(p, 0, LEN, seed);
	assert_where(&e, p, LEN, UHMM_WHERE_CPU);
	struct uhmm_stats s1 = stats(&e);
	assert_int_equal(s1.migrated_to_system_pages - s0.migrated_to_system_pages, NPAGES);
	assert_true(s1.cpu_faults_device > s0.cpu_faults_device);
	assert_int_equal(s1.cpu_faults - s0.cpu_faults,
			 s1.cpu_faults_device - s0.cpu_faults_device);
	/* Served here, not by the service thread: the invalidations of the
	 * migrations home ran on this thread. */
	assert_true(atomic_load(&rec.home) > 0);
	assert_int_equal(atomic_load(&rec.home_other_thread), 0);

	/* Write: back on the device, a write brings the page home and lands. */
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	for (size_t i = 0; i < NPAGES; i += 3)
		*(volatile uint64_t *)(p + i * PG + 8) = 0xabcd0000 + i;
	for (size_t i = 0; i < NPAGES; i++) {
		uint64_t v = *(volatile uint64_t *)(p + i * PG + 8);
		if (i % 3 == 0 && v != 0xabcd0000 + i)
			fail_msg("page %zu lost its write", i);
	}
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, NULL, 0));
	for (size_t i = 0; i < NPAGES; i += 3)
		assert_int_equal(*(uint64_t *)(p + i * PG + 8), 0xabcd0000 + i);
	assert_int_equal(atomic_load(&rec.home_other_thread), 0);
	ASSERT_OK(uhmm_notifier_remove(n));
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
}

static void never_touched_pages_read_zeros(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, LEN, (void **)&p));
	struct uhmm_stats s0 = stats(&e);
	uhmm_test_assert_zero(p, LEN / 2);
	/* Writes to never-touched pages land (and are not zeroed later). */
	for (size_t off = LEN / 2; off < LEN; off += PG)
		*(volatile uint32_t *)(p + off) = (uint32_t)off;
	for (size_t off = LEN / 2; off < LEN; off += PG)
		assert_int_equal(*(volatile uint32_t *)(p + off), (uint32_t)off);
	struct uhmm_stats s1 = stats(&e);
	assert_true(s1.cpu_faults > s0.cpu_faults);
	assert_int_equal(s1.cpu_faults_device, s0.cpu_faults_device);
	assert_int_equal(s1.migrated_to_system_pages, s0.migrated_to_system_pages);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
}

/* No warm pool page to copy into: the fault goes to the service thread. */
static void fault_without_warm_pages_is_handed_to_the_service_thread(void **state)
{
	(void)state;
	struct env e;
	env_init_opts(&e, 0, 1, 0);
	const uint64_t seed = 12;
	/* Enough data that the pages taken out (which linger in the pool)
	 * do not cover it: pool_pages 0 keeps none. */
	char *p = alloc_on_device(&e, LEN, seed);
	uhmm_test_assert_data(p, 0, LEN, seed);
	assert_where(&e, p, LEN, UHMM_WHERE_CPU);
	struct uhmm_stats s = stats(&e);
	assert_int_equal(s.migrated_to_system_pages, NPAGES);
	assert_int_equal(s.cpu_faults_device, NPAGES);
	assert_int_equal(s.pool_hits, 0);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
}

/* A device's range fault populates with MADV_POPULATE, whose faults the
 * kernel does not turn into SIGBUS: uhmm serves the missing pages first. */
static void range_fault_faults_in_missing_and_device_pages(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 16 * MiB;
	uhmm_device *other;
	ASSERT_OK(uhmm_simdev_create(e.ctx, &so, &other));
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, 64 * PG, (void **)&p));
	/* Pages 0-15 never touched; 16-31 on the other device; 32-47 held
	 * exclusively by it; 48-63 in place. */
	uhmm_test_fill(p + 16 * PG, 48 * PG, 23);
	ASSERT_OK(uhmm_migrate(e.ctx, p + 16 * PG, 16 * PG, other, 0));
	ASSERT_OK(uhmm_make_exclusive(other, p + 32 * PG, 16, NULL));
	for (int write = 0; write < 2; write++) {
		uint64_t ent[64];
		struct uhmm_range_req req = {
			.start = (uintptr_t)p, .end = (uintptr_t)p + 64 * PG,
			.flags = write ? UHMM_RF_FAULT_WRITE : UHMM_RF_FAULT_READ,
			.device = e.dev, .entries = ent,
		};
		ASSERT_OK(uhmm_range_fault(e.ctx, &req));
		for (int i = 0; i < 64; i++) {
			if (!(ent[i] & UHMM_RE_VALID))
				fail_msg("page %d not valid (write %d): %#llx", i, write,
					 (unsigned long long)ent[i]);
			if (write && !(ent[i] & UHMM_RE_WRITE))
				fail_msg("page %d not writable", i);
		}
	}
	uhmm_test_assert_zero(p, 16 * PG);
	assert_int_equal(uhmm_test_check(p + 16 * PG, 48 * PG, 23), (size_t)-1);
	assert_int_equal(uhmm_check_exclusive(other, p + 32 * PG, 16), 0);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
}

/*
 * A fault inside the handler's own service of a fault (an invalidate
 * callback touching managed memory, which uhmm/mirror.h forbids, but which
 * must not make the handler recurse into itself under the outer fault's
 * locks): handed to the service thread.
 */
struct nested {
	char *b;
	atomic_int touched;
	char seen;
	struct inv_rec rec_b;
};

static void touch_b_on_home(struct uhmm_notifier *n, const struct uhmm_inv_event *ev,
			    void *priv)
{
	(void)n;
	struct nested *x = priv;
	if (ev->reason == UHMM_INV_MIGRATE && ev->device == NULL &&
	    atomic_fetch_add(&x->touched, 1) == 0)
		x->seen = *(volatile char *)x->b;
}

static void record_b(struct uhmm_notifier *n, const struct uhmm_inv_event *ev, void *priv)
{
	rec_inv(n, ev, &((struct nested *)priv)->rec_b);
}

static void nested_fault_is_handed_to_the_service_thread(void **state)
{
	(void)state;
#ifdef __SANITIZE_THREAD__
	/* TSan runs signal handlers through its own, with every signal
	 * blocked: a SIGBUS raised inside the handler is blocked, and the
	 * kernel kills the process.  Covered by the plain and ASan builds. */
	TEST_SKIP("TSan blocks a SIGBUS raised inside a signal handler");
#endif
	struct env e;
	env_init_opts(&e, 0, 1, -1);
	char *a, *b;
	ASSERT_OK(uhmm_alloc(e.ctx, 2 * MiB, (void **)&a));
	ASSERT_OK(uhmm_alloc(e.ctx, 2 * MiB, (void **)&b));
	memset(a, 0x5a, PG);
	memset(b, 0xa5, PG);
	ASSERT_OK(uhmm_migrate(e.ctx, a, PG, e.dev, 0));
	ASSERT_OK(uhmm_migrate(e.ctx, b, PG, e.dev, 0));
	struct nested x = { .b = b, .rec_b = { .me = tid() } };
	struct uhmm_notifier *na, *nb;
	ASSERT_OK(uhmm_notifier_insert(e.ctx, (uintptr_t)a, PG, touch_b_on_home, &x, &na));
	ASSERT_OK(uhmm_notifier_insert(e.ctx, (uintptr_t)b, PG, record_b, &x, &nb));
	assert_int_equal(*(volatile unsigned char *)a, 0x5a);
	assert_int_equal(atomic_load(&x.touched), 1);
	assert_int_equal((unsigned char)x.seen, 0xa5);
	/* b came home, by the service thread. */
	assert_int_equal(atomic_load(&x.rec_b.home), 1);
	assert_int_equal(atomic_load(&x.rec_b.home_other_thread), 1);
	ASSERT_OK(uhmm_notifier_remove(na));
	ASSERT_OK(uhmm_notifier_remove(nb));
	assert_where(&e, a, PG, UHMM_WHERE_CPU);
	assert_where(&e, b, PG, UHMM_WHERE_CPU);
	ASSERT_OK(uhmm_free(e.ctx, a));
	ASSERT_OK(uhmm_free(e.ctx, b));
	env_fini(&e);
}

/* ---- hard point 1: 8 threads, 512 pages, one migration a page ---- */

#define NTHREADS 8
#define HPAGES 512
#define ROUNDS 100

static void eight_threads_cost_one_migration_per_page(void **state)
{
	(void)state;
	struct env e;
	env_init_opts(&e, 0, 1, -1);
	struct uhmm_test_herd h = { .npages = HPAGES, .rounds = ROUNDS };
	ASSERT_OK(uhmm_alloc(e.ctx, HPAGES * PG, (void **)&h.p));
	pthread_barrier_init(&h.start, NULL, NTHREADS + 1);
	pthread_barrier_init(&h.done, NULL, NTHREADS + 1);
	pthread_t t[NTHREADS];
	for (int i = 0; i < NTHREADS; i++)
		pthread_create(&t[i], NULL, uhmm_test_herd_thread, &h);
	for (int r = 0; r < ROUNDS; r++) {
		for (size_t i = 0; i < HPAGES; i++)
			*(uint64_t *)(h.p + i * PG) = (uint64_t)(r * HPAGES + i);
		ASSERT_OK(uhmm_migrate(e.ctx, h.p, HPAGES * PG, e.dev, 0));
		struct uhmm_stats before = stats(&e);
		pthread_barrier_wait(&h.start);
		pthread_barrier_wait(&h.done);
		struct uhmm_stats after = stats(&e);
		/* Every page came back exactly once, however many threads
		 * touched it, and no thread finished its round before. */
		assert_int_equal(after.migrated_to_system_pages -
					 before.migrated_to_system_pages, HPAGES);
		assert_int_equal(after.cpu_faults_device - before.cpu_faults_device, HPAGES);
		assert_int_equal(uhmm_test_pages_on(e.ctx, h.p, HPAGES * PG, NULL), HPAGES);
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(atomic_load(&h.bad), 0);
	struct uhmm_stats s = stats(&e);
	assert_int_equal(s.migrated_to_system_pages, (uint64_t)ROUNDS * HPAGES);
	assert_int_equal(s.migrated_to_device_pages, (uint64_t)ROUNDS * HPAGES);
	assert_int_equal(s.cpu_faults_device, (uint64_t)ROUNDS * HPAGES);
	pthread_barrier_destroy(&h.start);
	pthread_barrier_destroy(&h.done);
	ASSERT_OK(uhmm_free(e.ctx, h.p));
	env_fini(&e);
}

/* ---- the address space changes (events still come to the service thread) ---- */

static void munmap_frees_device_pages(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p = alloc_on_device(&e, LEN, 13);
	assert_true(uhmm_test_dev_free(e.dev) == e.free0 - NPAGES);
	/* Half of it back by touches first. */
	uhmm_test_assert_data(p, 0, LEN / 2, 13);
	assert_int_equal(munmap(p + LEN / 4, LEN / 2), 0);
	ASSERT_OK(uhmm_sync(e.ctx));
	struct uhmm_page_info pi;
	assert_int_equal(uhmm_page_query(e.ctx, p + LEN / 4, &pi), -EFAULT);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0 - NPAGES / 4) == e.free0 - NPAGES / 4);
	/* The rest still comes back. */
	uhmm_test_assert_data(p, 0, LEN / 4, 13);
	uhmm_test_assert_data(p, 3 * LEN / 4, LEN / 4, 13);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);
	munmap(p, LEN / 4);
	munmap(p + 3 * LEN / 4, LEN / 4);
	env_fini(&e);
}

static void madvise_dontneed_discards_device_pages(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p = alloc_on_device(&e, LEN, 14);
	assert_int_equal(madvise(p + MiB, MiB, MADV_DONTNEED), 0);
	ASSERT_OK(uhmm_sync(e.ctx));
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0 - (NPAGES - MiB / PG)) ==
		    e.free0 - (NPAGES - MiB / PG));
	assert_where(&e, p + MiB, MiB, UHMM_WHERE_CPU);
	uhmm_test_assert_zero(p + MiB, MiB);
	uhmm_test_assert_data(p, 0, MiB, 14);
	uhmm_test_assert_data(p, 2 * MiB, 2 * MiB, 14);
	/* And pages brought back by touches are discarded as well. */
	assert_int_equal(madvise(p, MiB, MADV_DONTNEED), 0);
	uhmm_test_assert_zero(p, MiB);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
}

/* Slows the service thread's handling of a REMAP down. */
static void slow_remap(struct uhmm_notifier *n, const struct uhmm_inv_event *ev, void *priv)
{
	(void)n;
	(void)priv;
	if (ev->reason == UHMM_INV_REMAP) {
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

static void mremap_moves_device_resident_data(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *old = alloc_on_device(&e, LEN, 15);
	char *to = mmap(NULL, LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(to != MAP_FAILED);
	struct uhmm_notifier *nt;
	ASSERT_OK(uhmm_notifier_insert(e.ctx, (uintptr_t)old, LEN, slow_remap, NULL, &nt));
	char *n = mremap(old, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	assert_ptr_equal(n, to);
	/* No uhmm_sync: the touch right after mremap returns, while the
	 * service thread still handles the REMAP (slow_remap), must find the
	 * range at its new address: the handler waits for the event. */
	uhmm_test_assert_data(n, 0, LEN, 15);
	ASSERT_OK(uhmm_notifier_remove(nt));
	struct uhmm_page_info pi;
	assert_int_equal(uhmm_page_query(e.ctx, old, &pi), -EFAULT);
	assert_where(&e, n, LEN, UHMM_WHERE_CPU);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);
	munmap(n, LEN);
	env_fini(&e);
}

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

/*
 * mremap(MREMAP_DONTUNMAP) moves the pages and leaves the source mapped and
 * empty.  The data is at the destination; the source is ordinary memory
 * that reads zeros, no longer registered (uhmm gives it back to the
 * kernel).  The destination is touched at once after mremap returns, while
 * the slow notifier holds the service thread in the REMAP: the handler
 * must wait for the event to find the range there.  (A moving mremap
 * without DONTUNMAP returns only after its REMAP is handled: the source's
 * UNMAP comes after it and is read only then; so this is the test of that
 * wait.)  Then the source: without its release, a SIGBUS no range claims
 * kills the process.
 */
static void mremap_dontunmap_source_reads_zeros(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *old = alloc_on_device(&e, LEN, 25);
	struct uhmm_notifier *nt;
	ASSERT_OK(uhmm_notifier_insert(e.ctx, (uintptr_t)old, LEN, slow_remap, NULL, &nt));
	char *n = mremap(old, LEN, LEN, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL);
	if (n == MAP_FAILED && errno == EINVAL)
		TEST_SKIP("the kernel has no MREMAP_DONTUNMAP for this mapping");
	assert_true(n != MAP_FAILED);
	uhmm_test_assert_data(n, 0, PG, 25);
	uhmm_test_assert_zero(old, LEN);
	uhmm_test_assert_data(n, 0, LEN, 25);
	old[0] = 1;
	assert_int_equal(old[0], 1);
	ASSERT_OK(uhmm_notifier_remove(nt));
	assert_int_equal(uhmm_test_uffd_registered(old), 0);
	assert_int_equal(uhmm_test_uffd_registered(n), 1);
	struct uhmm_page_info pi;
	assert_int_equal(uhmm_page_query(e.ctx, old, &pi), -EFAULT);
	assert_where(&e, n, LEN, UHMM_WHERE_CPU);
	assert_true(uhmm_test_wait_dev_free(e.dev, e.free0) == e.free0);
	munmap(n, LEN);
	munmap(old, LEN);
	env_fini(&e);
}

/* ---- exclusive access, fork ---- */

static void exclusive_grab_is_revoked_by_cpu_touch(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, 4 * PG, (void **)&p));
	uhmm_test_fill(p, 4 * PG, 16);
	void *pages[4] = { 0 };
	ASSERT_OK(uhmm_make_exclusive(e.dev, p, 4, pages));
	assert_int_equal(uhmm_check_exclusive(e.dev, p, 4), 1);
	uint64_t rev0 = stats(&e).exclusive_revocations;
	uhmm_test_assert_data(p, PG, PG, 16);
	*(volatile uint64_t *)(p + 2 * PG) = 0x5eed;
	assert_int_equal(stats(&e).exclusive_revocations, rev0 + 2);
	struct uhmm_page_info pi;
	ASSERT_OK(uhmm_page_query(e.ctx, p + PG, &pi));
	assert_int_equal(pi.where, UHMM_WHERE_CPU);
	ASSERT_OK(uhmm_page_query(e.ctx, p + 2 * PG, &pi));
	assert_int_equal(pi.where, UHMM_WHERE_CPU);
	ASSERT_OK(uhmm_page_query(e.ctx, p, &pi));
	assert_int_equal(pi.where, UHMM_WHERE_EXCLUSIVE);
	assert_int_equal(*(uint64_t *)(p + 2 * PG), 0x5eed);
	uhmm_test_assert_data(p, 0, PG, 16);
	uhmm_test_assert_data(p, 3 * PG, PG, 16);
	assert_int_equal(uhmm_check_exclusive(e.dev, p, 4), 0);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
}

static void fork_child_sees_the_parents_data(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p = alloc_on_device(&e, LEN, 17);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (uhmm_test_check(p, LEN, 17) != (size_t)-1)
			_exit(1);
		uhmm_test_fill(p, LEN, 71);
		_exit(uhmm_test_check(p, LEN, 71) != (size_t)-1 ? 2 : 0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	uhmm_test_assert_data(p, 0, LEN, 17);
	/* And the mode still serves the parent afterwards. */
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	uhmm_test_assert_data(p, 0, LEN, 17);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
}

/* ---- SIGBUS that are not uhmm's ---- */

static sigjmp_buf app_env;
static volatile sig_atomic_t app_caught;
static void *volatile app_addr;

static void app_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	app_caught++;
	app_addr = si->si_addr;
	siglongjmp(app_env, 1);
}

/* A file mapping touched beyond the end of the file. */
static void touch_beyond_eof(void)
{
	int fd = memfd_create("uhmm-test", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)PG), 0);
	char *m = mmap(NULL, 2 * PG, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(m != MAP_FAILED);
	close(fd);
	app_caught = 0;
	if (sigsetjmp(app_env, 1) == 0)
		(void)*(volatile char *)(m + PG);
	assert_int_equal(app_caught, 1);
	assert_ptr_equal(app_addr, m + PG);
	munmap(m, 2 * PG);
}

static void foreign_sigbus_reaches_the_application_handler(void **state)
{
	(void)state;
	/* Installed before the context: uhmm chains to it. */
	struct sigaction sa, old, mine;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = app_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGBUS, &sa, &old), 0);
	struct env e;
	env_init(&e);
	char *p = alloc_on_device(&e, LEN, 18);
	touch_beyond_eof();
	/* uhmm's faults still are uhmm's, not the application's. */
	uhmm_test_assert_data(p, 0, LEN, 18);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN, e.dev, 0));
	/* Installed after the context, chaining to what it replaced (uhmm's
	 * handler): both work. */
	struct sigaction uh;
	assert_int_equal(sigaction(SIGBUS, NULL, &uh), 0);
	assert_true(uh.sa_sigaction != app_handler);
	assert_int_equal(sigaction(SIGBUS, &sa, &mine), 0);
	touch_beyond_eof();
	assert_int_equal(sigaction(SIGBUS, &mine, NULL), 0);
	uhmm_test_assert_data(p, 0, LEN, 18);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
	assert_int_equal(sigaction(SIGBUS, &old, NULL), 0);
}

/* Without any handler of the application: the default action, the process
 * dies of SIGBUS (it is not served, nor looping). */
static void foreign_sigbus_without_handler_kills(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sigaction dfl;
		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		sigaction(SIGBUS, &dfl, NULL);
		struct uhmm_ctx_opts o;
		uhmm_ctx_opts_init(&o);
		o.flags = UHMM_CTX_SIGBUS;
		uhmm_ctx *ctx;
		if (uhmm_ctx_create(&o, &ctx))
			_exit(3);
		int fd = memfd_create("uhmm-test", MFD_CLOEXEC);
		if (fd < 0 || ftruncate(fd, (off_t)PG))
			_exit(4);
		char *m = mmap(NULL, 2 * PG, PROT_READ, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED)
			_exit(5);
		(void)*(volatile char *)(m + PG);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
		TEST_SKIP("no SIGBUS mode here");
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGBUS);
}

/* ---- the documented limitation, and bad flags ---- */

static void kernel_access_to_device_page_is_efault(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p = alloc_on_device(&e, 4 * PG, 19);
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	/* write(2) reads the device-resident page in the kernel: EFAULT. */
	errno = 0;
	assert_int_equal(write(fds[1], p, PG), -1);
	assert_int_equal(errno, EFAULT);
	/* read(2) into one too. */
	char b[64] = { 1 };
	assert_int_equal(write(fds[1], b, sizeof(b)), (ssize_t)sizeof(b));
	errno = 0;
	assert_int_equal(read(fds[0], p + PG, sizeof(b)), -1);
	assert_int_equal(errno, EFAULT);
	/* Brought home first, both work; the data is intact. */
	ASSERT_OK(uhmm_migrate(e.ctx, p, 4 * PG, NULL, 0));
	assert_int_equal(write(fds[1], p, PG), (ssize_t)PG);
	close(fds[0]);
	close(fds[1]);
	uhmm_test_assert_data(p, 0, 4 * PG, 19);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
}

/*
 * read(2) into a buffer whose first half is in system memory and second
 * half on the device: the kernel copies up to the first page it cannot
 * reach and returns that short count (as for any partial copy); EFAULT
 * only when it could copy nothing (uhmm.h, UHMM_CTX_SIGBUS).
 */
static void read_into_half_device_resident_buffer_is_short(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p = alloc_on_device(&e, 8 * PG, 23);
	ASSERT_OK(uhmm_migrate(e.ctx, p, 4 * PG, NULL, 0)); /* first half home */
	int fd = memfd_create("half", MFD_CLOEXEC);
	assert_true(fd >= 0);
	char *src = malloc(8 * PG);
	memset(src, 0x77, 8 * PG);
	assert_int_equal(write(fd, src, 8 * PG), (ssize_t)(8 * PG));
	assert_int_equal(pread(fd, p, 8 * PG, 0), (ssize_t)(4 * PG));
	for (size_t i = 0; i < 4 * PG; i++)
		assert_int_equal((unsigned char)p[i], 0x77);
	/* Nothing copied at all: EFAULT. */
	errno = 0;
	assert_int_equal(pread(fd, p + 4 * PG, 4 * PG, 0), -1);
	assert_int_equal(errno, EFAULT);
	/* The device half is untouched. */
	uhmm_test_assert_data(p, 4 * PG, 4 * PG, 23);
	close(fd);
	free(src);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
}

/* ---- thread stacks may not be registered in this mode ---- */

#define STK (4 * MiB) /* sanitizers keep ~1 MiB of a thread stack for themselves */

struct stk_thread {
	uhmm_ctx *ctx;
	char *stack;
	int reg_own; /* the thread's own uhmm_register of its stack */
	atomic_int tid;
	int pipe[2];
};

static void *stk_main(void *arg)
{
	struct stk_thread *t = arg;
	/* The caller's own stack. */
	t->reg_own = uhmm_register(t->ctx, t->stack, STK);
	atomic_store(&t->tid, (int)syscall(SYS_gettid));
	char c;
	/* Blocked here while the main thread looks (its stack pointer is in
	 * /proc/self/task/TID/syscall then). */
	while (read(t->pipe[0], &c, 1) < 0 && errno == EINTR)
		;
	return NULL;
}

/* Bounded wait until thread @tid is blocked in a system call. */
static void wait_blocked(int tid)
{
	char path[64], buf[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
	for (int i = 0; i < 2000; i++) {
		int fd = open(path, O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n > 0 && strncmp(buf, "running", 7) != 0)
			return;
		uhmm_test_nap();
	}
	fail_msg("thread %d never blocked", tid);
}

/*
 * A registered, migrated thread stack cannot take the SIGBUS that would
 * bring it back: the kernel kills the process when it cannot push the
 * signal frame.  So in this mode uhmm_register refuses memory holding a
 * stack it can tell: the caller's, another thread's (blocked), the main
 * thread's; and the same memory registers in the default mode.
 */
static void register_refuses_thread_stacks(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	struct stk_thread t = { .ctx = e.ctx };
	t.stack = mmap(NULL, STK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(t.stack != MAP_FAILED);
	assert_int_equal(pipe(t.pipe), 0);
	pthread_attr_t a;
	pthread_attr_init(&a);
	assert_int_equal(pthread_attr_setstack(&a, t.stack, STK), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, &a, stk_main, &t), 0);
	for (int i = 0; i < 2000 && !atomic_load(&t.tid); i++)
		uhmm_test_nap();
	assert_true(atomic_load(&t.tid) != 0);
	assert_int_equal(t.reg_own, -EOPNOTSUPP);
	wait_blocked(atomic_load(&t.tid));
	assert_int_equal(uhmm_register(e.ctx, t.stack, STK), -EOPNOTSUPP);
	assert_int_equal(uhmm_register(e.ctx, t.stack + STK / 2, PG), -EOPNOTSUPP);
	/* The main thread's stack. */
	volatile char here = 0;
	assert_int_equal(uhmm_register(e.ctx, (void *)((uintptr_t)&here & ~(PG - 1)), PG),
			 -EOPNOTSUPP);
	/* Not a stack: fine in this mode.  (Between guard pages: adjacent
	 * anonymous mappings merge into one, and the rule is by mapping.) */
	char *res = mmap(NULL, STK + 2 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(res != MAP_FAILED);
	char *plain = res + PG;
	assert_int_equal(mprotect(plain, STK, PROT_READ | PROT_WRITE), 0);
	ASSERT_OK(uhmm_register(e.ctx, plain, STK));
	ASSERT_OK(uhmm_unregister(e.ctx, plain, STK));
	/* The default mode serves a stack's faults on the service thread: the
	 * rule is this mode's. */
	uhmm_ctx *dflt;
	ASSERT_OK(uhmm_ctx_create(NULL, &dflt));
	ASSERT_OK(uhmm_register(dflt, t.stack, STK));
	ASSERT_OK(uhmm_unregister(dflt, t.stack, STK));
	ASSERT_OK(uhmm_ctx_destroy(dflt));
	assert_int_equal(write(t.pipe[1], "x", 1), 1);
	pthread_join(th, NULL);
	pthread_attr_destroy(&a);
	close(t.pipe[0]);
	close(t.pipe[1]);
	munmap(t.stack, STK);
	munmap(res, STK + 2 * PG);
	env_fini(&e);
}

static void bad_flag_combinations_are_einval(void **state)
{
	(void)state;
	struct uhmm_ctx_opts o;
	uhmm_ctx *ctx = NULL;
	uhmm_ctx_opts_init(&o);
	o.flags = UHMM_CTX_SIGBUS | UHMM_CTX_REQUIRE_KERNEL_FAULTS;
	assert_int_equal(uhmm_ctx_create(&o, &ctx), -EINVAL);
	assert_null(ctx);
	o.flags = UHMM_CTX_SIGBUS | (1u << 30);
	assert_int_equal(uhmm_ctx_create(&o, &ctx), -EINVAL);
	/* The default context says it is not in SIGBUS mode. */
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_ctx_info info;
	ASSERT_OK(uhmm_ctx_info(ctx, &info));
	assert_int_equal(info.sigbus, 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	/* With NO_MOVE (UFFDIO_COPY) the mode works too. */
	struct env e;
	env_init_opts(&e, UHMM_CTX_NO_MOVE, 1, -1);
	char *p = alloc_on_device(&e, LEN, 20);
	uhmm_test_assert_data(p, 0, LEN, 20);
	assert_int_equal(stats(&e).migrated_to_system_pages, NPAGES);
	ASSERT_OK(uhmm_free(e.ctx, p));
	env_fini(&e);
}


/* ---- a fault on a page someone holds sleeps ---- */

struct toucher {
	volatile char *p;
	clockid_t cpu;
	_Atomic int ready, done;
};

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;
	assert_int_equal(pthread_getcpuclockid(pthread_self(), &t->cpu), 0);
	atomic_store(&t->ready, 1);
	(void)t->p[0]; /* SIGBUS: the handler meets the page locked */
	atomic_store(&t->done, 1);
	return NULL;
}

static uint64_t cpu_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * The handler of a thread whose page another thread holds sleeps on the
 * page lock (futex) until it is released; it does not spin.  The test
 * holds the page itself for 300 ms: the waiting thread must not have
 * burned CPU meanwhile (a spinner takes ~300 ms of it; a sleeper ~0).  A
 * loaded machine can only make a spinner look better, never a sleeper
 * worse.
 */
static void fault_on_a_held_page_sleeps(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, PG, (void **)&p));
	memset(p, 0x3c, PG);
	ASSERT_OK(uhmm_migrate(e.ctx, p, PG, e.dev, 0));
	struct uhmm_range *r = uhmm__range_get(e.ctx, (uintptr_t)p);
	assert_non_null(r);
	struct uhmm_page *pg = range_page(r, ((uintptr_t)p - r->start) >> PAGE_SHIFT);
	uhmm__page_lock(pg);
	struct toucher t = { .p = p };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, toucher_main, &t), 0);
	while (!atomic_load(&t.ready))
		uhmm_test_nap();
	uint64_t c0 = cpu_ns(t.cpu);
	struct timespec ts = { 0, 300 * 1000000 };
	nanosleep(&ts, NULL);
	uint64_t spent = cpu_ns(t.cpu) - c0;
	assert_false(atomic_load(&t.done)); /* still waiting for the page */
	uhmm__page_unlock(e.ctx, pg);
	pthread_join(th, NULL);
	uhmm__range_put(r);
	if (spent > 50 * 1000000ull)
		fail_msg("the waiting thread burned %llu ms of CPU in 300 ms",
			 (unsigned long long)(spent / 1000000));
	assert_int_equal((unsigned char)p[PG - 1], 0x3c);
	env_fini(&e);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(touch_brings_data_back_on_the_faulting_thread),
	cmocka_unit_test(never_touched_pages_read_zeros),
	cmocka_unit_test(fault_without_warm_pages_is_handed_to_the_service_thread),
	cmocka_unit_test(range_fault_faults_in_missing_and_device_pages),
	cmocka_unit_test(nested_fault_is_handed_to_the_service_thread),
	cmocka_unit_test(eight_threads_cost_one_migration_per_page),
	cmocka_unit_test(fault_on_a_held_page_sleeps),
	cmocka_unit_test(munmap_frees_device_pages),
	cmocka_unit_test(madvise_dontneed_discards_device_pages),
	cmocka_unit_test(mremap_moves_device_resident_data),
	cmocka_unit_test(mremap_dontunmap_source_reads_zeros),
	cmocka_unit_test(exclusive_grab_is_revoked_by_cpu_touch),
	cmocka_unit_test(fork_child_sees_the_parents_data),
	cmocka_unit_test(foreign_sigbus_reaches_the_application_handler),
	cmocka_unit_test(foreign_sigbus_without_handler_kills),
	cmocka_unit_test(kernel_access_to_device_page_is_efault),
	cmocka_unit_test(bad_flag_combinations_are_einval),
	cmocka_unit_test(read_into_half_device_resident_buffer_is_short),
	cmocka_unit_test(register_refuses_thread_stacks),
};

UHMM_TEST_MAIN(tests)
