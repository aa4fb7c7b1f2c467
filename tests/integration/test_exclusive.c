/* SPDX-License-Identifier: MIT */
/*
 * Device-exclusive access (DESIGN.md hard point 6) as simdev uses it: the
 * device's atomics on system pages take the pages exclusively
 * (uhmm_make_exclusive), a CPU touch revokes them, and neither side's
 * updates are lost; the atomic policy (uhmm_simdev_advise_atomics); the
 * exclusive state through fork, mprotect, munmap, migrations and a second
 * device; and the calls' errors.
 *
 * Outcomes of asynchronous work (the wake after a revocation, the UNMAP
 * event) are polled for (bounded, 2 s); nothing asserts a duration.
 */
#define _GNU_SOURCE
#include "testlib.h"

#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG ((size_t)UHMM_PAGE_SIZE)
#define MiB ((size_t)1 << 20)
#define POLL_NS 2000000000ull

struct env {
	uhmm_ctx *ctx;
	uhmm_device *dev;
};

static uhmm_device *new_simdev(uhmm_ctx *ctx)
{
	struct uhmm_simdev_opts o;
	uhmm_device *dev;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 64 * MiB;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &dev));
	return dev;
}

static void env_init(struct env *e)
{
	ASSERT_OK(uhmm_ctx_create(NULL, &e->ctx));
	e->dev = new_simdev(e->ctx);
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

static struct uhmm_simdev_stats dstats(uhmm_device *dev)
{
	struct uhmm_simdev_stats s;
	ASSERT_OK(uhmm_simdev_stats(dev, &s));
	return s;
}

static struct uhmm_page_info where(struct env *e, const void *p)
{
	struct uhmm_page_info pi;
	ASSERT_OK(uhmm_page_query(e->ctx, p, &pi));
	return pi;
}

/* Polls (up to 2 s) until check_exclusive of one page says @want. */
static int wait_held(uhmm_device *dev, void *p, size_t npages, int want)
{
	uint64_t t0 = uhmm_test_now_ns();
	int r;
	while ((r = uhmm_check_exclusive(dev, p, npages)) != want &&
	       uhmm_test_now_ns() - t0 < POLL_NS)
		uhmm_test_nap();
	return r;
}

/* ---- kernels ------------------------------------------------------------ */

/* Counter k is the first word of page k of base; item idx adds 1 to
 * counter idx % n. */
struct counters {
	char *base;
	uint64_t n;
	_Atomic int started;
};

static uint64_t *ctr(char *base, uint64_t k)
{
	return (uint64_t *)(base + k * PG);
}

static void k_count(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct counters *c = arg;
	if (!atomic_load_explicit(&c->started, memory_order_relaxed))
		atomic_store_explicit(&c->started, 1, memory_order_relaxed);
	uhmm_simdev_atomic_add64(wi, ctr(c->base, idx % c->n), 1);
}

static int count_launch(uhmm_device *dev, char *base, uint64_t n, uint64_t grid)
{
	struct counters c = { .base = base, .n = n };
	return uhmm_simdev_launch(dev, k_count, grid, &c);
}

/* How many of @grid items land on counter k of n. */
static uint64_t share(uint64_t grid, uint64_t n, uint64_t k)
{
	return grid / n + (k < grid % n);
}

/* ---- CPU and device together ---------------------------------------------- */

#define SHARED_CTRS 64
#define SHARED_GRID 100000
#define CPU_THREADS 2
#define CPU_ADDS 100000

struct cpu_adder {
	struct counters *c;
	pthread_t th;
};

static void *cpu_adder_main(void *arg)
{
	struct cpu_adder *a = arg;
	/* Start once the kernel runs, so that both sides overlap. */
	uint64_t t0 = uhmm_test_now_ns();
	while (!atomic_load(&a->c->started) && uhmm_test_now_ns() - t0 < POLL_NS)
		sched_yield();
	for (uint64_t k = 0; k < CPU_ADDS; k++)
		__atomic_fetch_add(ctr(a->c->base, k % SHARED_CTRS), 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void cpu_and_device_atomics_on_shared_counters_are_exact(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *base;
	ASSERT_OK(uhmm_alloc(e.ctx, SHARED_CTRS * PG, (void **)&base));
	for (uint64_t k = 0; k < SHARED_CTRS; k++)
		*ctr(base, k) = 0; /* the CPU touches them first: AUTO takes them */

	uint64_t t0 = uhmm_test_now_ns();
	struct counters c = { .base = base, .n = SHARED_CTRS };
	struct cpu_adder ad[CPU_THREADS];
	for (int i = 0; i < CPU_THREADS; i++) {
		ad[i].c = &c;
		assert_int_equal(pthread_create(&ad[i].th, NULL, cpu_adder_main, &ad[i]), 0);
	}
	ASSERT_OK(uhmm_simdev_launch(e.dev, k_count, SHARED_GRID, &c));
	for (int i = 0; i < CPU_THREADS; i++)
		pthread_join(ad[i].th, NULL);
	uint64_t t1 = uhmm_test_now_ns();
	struct uhmm_stats mid = stats(&e);

	for (uint64_t k = 0; k < SHARED_CTRS; k++) {
		uint64_t want = share(SHARED_GRID, SHARED_CTRS, k) +
				CPU_THREADS * share(CPU_ADDS, SHARED_CTRS, k);
		if (*ctr(base, k) != want)
			fail_msg("counter %llu = %llu, want %llu", (unsigned long long)k,
				 (unsigned long long)*ctr(base, k), (unsigned long long)want);
	}
	struct uhmm_stats st = stats(&e);
	struct uhmm_simdev_stats ds = dstats(e.dev);
	fprintf(stderr, "[ INFO     ] %.3f s; %llu grabs, %llu revocations while "
		"both ran, %llu after; %llu device faults, %llu migrations\n",
		(double)(t1 - t0) / 1e9, (unsigned long long)mid.exclusive_grabs,
		(unsigned long long)mid.exclusive_revocations,
		(unsigned long long)st.exclusive_revocations,
		(unsigned long long)ds.faults, (unsigned long long)ds.migrations);
	assert_true(st.exclusive_grabs > 0);
	assert_true(st.exclusive_revocations > 0);
	assert_true(ds.exclusive_pages > 0);
	assert_int_equal(ds.migrations, 0); /* AUTO: touched pages go exclusive */
	env_fini(&e);
}

/* ---- the exclusive state ------------------------------------------------- */

static void make_exclusive_then_cpu_touch_reports_not_exclusive(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, 4 * PG, (void **)&p));
	uhmm_test_fill(p, 4 * PG, 21);
	void *pages[4] = { 0 };
	ASSERT_OK(uhmm_make_exclusive(e.dev, p, 4, pages));
	assert_int_equal(uhmm_check_exclusive(e.dev, p, 4), 1);
	for (int i = 0; i < 4; i++) {
		assert_non_null(pages[i]);
		assert_true((void *)pages[i] != (void *)(p + i * PG));
		struct uhmm_page_info pi = where(&e, p + i * PG);
		assert_int_equal(pi.where, UHMM_WHERE_EXCLUSIVE);
		assert_ptr_equal(pi.device, e.dev);
		/* The device reaches the data at pages[i]. */
		assert_int_equal(uhmm_test_check(pages[i], PG, 21 + i * PG / 8),
				 (size_t)-1);
	}
	uint64_t rev0 = stats(&e).exclusive_revocations;

	/* A CPU read gets the data and takes that page back, only it. */
	assert_int_equal(uhmm_test_check(p + PG, PG, 21 + PG / 8), (size_t)-1);
	assert_int_equal(wait_held(e.dev, p + PG, 1, 0), 0);
	assert_int_equal(uhmm_check_exclusive(e.dev, p, 4), 0);
	assert_int_equal(uhmm_check_exclusive(e.dev, p, 1), 1);
	assert_int_equal(where(&e, p + PG).where, UHMM_WHERE_CPU);
	assert_int_equal(where(&e, p).where, UHMM_WHERE_EXCLUSIVE);

	/* A CPU write too, and it lands. */
	*(volatile uint64_t *)(p + 2 * PG) = 0x5eed;
	assert_int_equal(wait_held(e.dev, p + 2 * PG, 1, 0), 0);
	assert_int_equal(where(&e, p + 2 * PG).where, UHMM_WHERE_CPU);
	assert_int_equal(*(uint64_t *)(p + 2 * PG), 0x5eed);
	assert_int_equal(uhmm_check_exclusive(e.dev, p + 3 * PG, 1), 1);

	uint64_t t0 = uhmm_test_now_ns();
	while (stats(&e).exclusive_revocations < rev0 + 2 &&
	       uhmm_test_now_ns() - t0 < POLL_NS)
		uhmm_test_nap();
	assert_true(stats(&e).exclusive_revocations >= rev0 + 2);
	assert_int_equal(uhmm_test_check(p, PG, 21), (size_t)-1);
	assert_int_equal(uhmm_test_check(p + 3 * PG, PG, 21 + 3 * PG / 8), (size_t)-1);
	env_fini(&e);
}

/* Every word of the pages: an xchg writes it, an add bumps it. */
struct rewrite {
	uint64_t *w;
	uint64_t gen;
};

static uint64_t rewrite_value(uint64_t gen, uint64_t i)
{
	return gen * 0x1000000ull + i * 3;
}

static void k_rewrite(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct rewrite *r = arg;
	uint64_t old = uhmm_simdev_atomic_xchg64(wi, &r->w[idx],
						 rewrite_value(r->gen, idx) - 1);
	(void)old;
	uhmm_simdev_atomic_add64(wi, &r->w[idx], 1);
}

static void exclusive_page_data_is_the_latest(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const size_t npg = 16, words = npg * PG / 8;
	uint64_t *w;
	ASSERT_OK(uhmm_alloc(e.ctx, npg * PG, (void **)&w));
	ASSERT_OK(uhmm_simdev_advise_atomics(e.dev, w, npg * PG,
					     UHMM_SIMDEV_ATOMIC_EXCLUSIVE));
	for (uint64_t gen = 1; gen <= 3; gen++) {
		/* The CPU writes, the device rewrites with atomics, the CPU
		 * reads: each side sees the other's latest data. */
		for (size_t i = 0; i < words; i++)
			w[i] = ~rewrite_value(gen, i);
		struct rewrite r = { .w = w, .gen = gen };
		ASSERT_OK(uhmm_simdev_launch(e.dev, k_rewrite, words, &r));
		assert_int_equal(uhmm_check_exclusive(e.dev, w, npg), 1);
		for (size_t i = 0; i < words; i++)
			if (w[i] != rewrite_value(gen, i))
				fail_msg("gen %llu word %zu = %#llx, want %#llx",
					 (unsigned long long)gen, i,
					 (unsigned long long)w[i],
					 (unsigned long long)rewrite_value(gen, i));
		assert_int_equal(uhmm_check_exclusive(e.dev, w, npg), 0);
	}
	struct uhmm_simdev_stats ds = dstats(e.dev);
	assert_true(ds.exclusive_pages >= 3 * npg);
	assert_int_equal(ds.migrations, 0);
	env_fini(&e);
}

/* ---- fork ------------------------------------------------------------------ */

static void fork_while_exclusive_each_process_counts_alone(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t n = 16, k1 = 64, k2 = 32, child_adds = 1000;
	char *base;
	ASSERT_OK(uhmm_alloc(e.ctx, n * PG, (void **)&base));
	for (uint64_t k = 0; k < n; k++)
		*ctr(base, k) = 0;
	ASSERT_OK(count_launch(e.dev, base, n, n * k1));
	assert_int_equal(uhmm_check_exclusive(e.dev, base, n), 1);
	int go[2];
	assert_int_equal(pipe(go), 0);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* No uhmm here: ordinary memory with the data as of the fork. */
		close(go[1]);
		for (uint64_t k = 0; k < n; k++)
			if (*ctr(base, k) != k1)
				_exit(1);
		char ch;
		if (read(go[0], &ch, 1) != 1) /* the parent's kernel is running */
			_exit(3);
		for (uint64_t i = 0; i < child_adds * n; i++)
			__atomic_fetch_add(ctr(base, i % n), 1, __ATOMIC_SEQ_CST);
		for (uint64_t k = 0; k < n; k++)
			if (*ctr(base, k) != k1 + child_adds)
				_exit(2);
		_exit(0);
	}
	close(go[0]);
	assert_int_equal(write(go[1], "x", 1), 1);
	close(go[1]);
	ASSERT_OK(count_launch(e.dev, base, n, n * k2));
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status))
		fail_msg("child died (status %#x)", status);
	switch (WEXITSTATUS(status)) {
	case 0:
		break;
	case 1:
		fail_msg("child: counters at fork are not the device's");
	case 2:
		fail_msg("child: its own increments are wrong");
	default:
		fail_msg("child: exit %d", WEXITSTATUS(status));
	}
	for (uint64_t k = 0; k < n; k++)
		assert_int_equal(*ctr(base, k), k1 + k2);
	env_fini(&e);
}

/* ---- protection, unmapping ------------------------------------------------ */

static void mprotect_readonly_then_device_write_is_eperm(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t n = 8;
	char *base;
	ASSERT_OK(uhmm_alloc(e.ctx, n * PG, (void **)&base));
	for (uint64_t k = 0; k < n; k++)
		*ctr(base, k) = 100;
	ASSERT_OK(count_launch(e.dev, base, n, n)); /* device has EXCL entries */
	assert_int_equal(uhmm_check_exclusive(e.dev, base, n), 1);
	struct uhmm_simdev_stats d0 = dstats(e.dev);

	ASSERT_OK(uhmm_mprotect(e.ctx, base, n * PG, PROT_READ));
	assert_true(dstats(e.dev).shootdown_pages >= d0.shootdown_pages + n);
	assert_int_equal(count_launch(e.dev, base, n, n), -EPERM);
	assert_int_equal(uhmm_make_exclusive(e.dev, base, n, NULL), -EPERM);
	/* The CPU reads the data the device left. */
	for (uint64_t k = 0; k < n; k++)
		assert_int_equal(*ctr(base, k), 101);
	ASSERT_OK(uhmm_mprotect(e.ctx, base, n * PG, PROT_READ | PROT_WRITE));
	ASSERT_OK(count_launch(e.dev, base, n, n));
	for (uint64_t k = 0; k < n; k++)
		assert_int_equal(*ctr(base, k), 102);
	env_fini(&e);
}

/* Exclusive pages of @p (the device has EXCL entries for them), then
 * munmap: the hold ends, the device's entries go. */
static void munmap_exclusive(struct env *e, char *p, size_t npg)
{
	for (size_t k = 0; k < npg; k++)
		*ctr(p, k) = 7;
	ASSERT_OK(count_launch(e->dev, p, npg, npg));
	assert_int_equal(uhmm_check_exclusive(e->dev, p, npg), 1);
	uint64_t unmaps = stats(e).events_unmap;
	uint64_t shot = dstats(e->dev).shootdown_pages;

	assert_int_equal(munmap(p, npg * PG), 0);
	uint64_t t0 = uhmm_test_now_ns();
	while (stats(e).events_unmap == unmaps && uhmm_test_now_ns() - t0 < POLL_NS)
		uhmm_test_nap();
	assert_true(stats(e).events_unmap > unmaps);
	assert_int_equal(wait_held(e->dev, p, npg, -EFAULT), -EFAULT);
	assert_true(dstats(e->dev).shootdown_pages >= shot + npg);
	/* No stale EXCL entry lets an atomic through: the memory is gone. */
	assert_int_equal(count_launch(e->dev, p, npg, npg), -EFAULT);
}

static void munmap_of_exclusive_range_releases_it(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const size_t npg = 16;

	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, npg * PG, (void **)&p));
	munmap_exclusive(&e, p, npg);

	char *r = mmap(NULL, npg * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(r != MAP_FAILED);
	ASSERT_OK(uhmm_register(e.ctx, r, npg * PG));
	munmap_exclusive(&e, r, npg);

	/* Life goes on: new memory, new holds, exact counts. */
	char *q;
	ASSERT_OK(uhmm_alloc(e.ctx, npg * PG, (void **)&q));
	ASSERT_OK(uhmm_make_exclusive(e.dev, q, npg, NULL));
	assert_int_equal(uhmm_check_exclusive(e.dev, q, npg), 1);
	ASSERT_OK(count_launch(e.dev, q, npg, 3 * npg));
	for (size_t k = 0; k < npg; k++)
		assert_int_equal(*ctr(q, k), 3);
	env_fini(&e);
}

/* ---- errors ------------------------------------------------------------------ */

static void make_exclusive_errors(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, 8 * PG, (void **)&p));
	p[0] = 1;

	assert_int_equal(uhmm_make_exclusive(e.dev, p + 1, 1, NULL), -EINVAL);
	assert_int_equal(uhmm_make_exclusive(e.dev, p, 0, NULL), -EINVAL);
	void *top = (void *)(UINTPTR_MAX & ~(uintptr_t)(PG - 1));
	assert_int_equal(uhmm_make_exclusive(e.dev, top, 2, NULL), -EINVAL);
	assert_int_equal(uhmm_make_exclusive(e.dev, p, SIZE_MAX / 2, NULL), -EINVAL);
	assert_int_equal(uhmm_check_exclusive(e.dev, p + 1, 1), -EINVAL);
	assert_int_equal(uhmm_check_exclusive(e.dev, p, 0), -EINVAL);

	/* Not managed. */
	char *u = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(u != MAP_FAILED);
	u[0] = 1;
	assert_int_equal(uhmm_make_exclusive(e.dev, u, 4, NULL), -EFAULT);
	assert_int_equal(uhmm_check_exclusive(e.dev, u, 4), -EFAULT);
	assert_int_equal(uhmm_make_exclusive(e.dev, p + 7 * PG, 2, NULL), -EFAULT);

	/* Not a live device. */
	assert_int_equal(uhmm_make_exclusive(NULL, p, 1, NULL), -EBADF);
	uhmm_device *d2 = new_simdev(e.ctx);
	ASSERT_OK(uhmm_device_detach(d2));
	assert_int_equal(uhmm_make_exclusive(d2, p, 1, NULL), -EBADF);
	assert_int_equal(uhmm_check_exclusive(d2, p, 1), -EBADF);

	/* Read-only. */
	ASSERT_OK(uhmm_mprotect(e.ctx, p, 8 * PG, PROT_READ));
	assert_int_equal(uhmm_make_exclusive(e.dev, p, 8, NULL), -EPERM);
	assert_int_equal(uhmm_check_exclusive(e.dev, p, 8), 0);
	ASSERT_OK(uhmm_mprotect(e.ctx, p, 8 * PG, PROT_READ | PROT_WRITE));
	ASSERT_OK(uhmm_make_exclusive(e.dev, p, 8, NULL));

	/* Shared memory cannot be managed, so it is refused as unmanaged
	 * (-EFAULT) or as not anonymous private (-EOPNOTSUPP): mirror.h
	 * lists both. */
	char *s = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(s != MAP_FAILED);
	assert_int_equal(uhmm_register(e.ctx, s, 4 * PG), -EOPNOTSUPP);
	int r = uhmm_make_exclusive(e.dev, s, 4, NULL);
	if (r != -EFAULT && r != -EOPNOTSUPP)
		fail_msg("make_exclusive on shared memory = %d", r);

	/* The atomic policy's arguments. */
	assert_int_equal(uhmm_simdev_advise_atomics(e.dev, p + 1, PG,
						    UHMM_SIMDEV_ATOMIC_EXCLUSIVE), -EINVAL);
	assert_int_equal(uhmm_simdev_advise_atomics(e.dev, p, 0,
						    UHMM_SIMDEV_ATOMIC_EXCLUSIVE), -EINVAL);
	assert_int_equal(uhmm_simdev_advise_atomics(e.dev, p, PG,
						    (enum uhmm_simdev_atomic_policy)3),
			 -EINVAL);
	assert_int_equal(uhmm_simdev_advise_atomics(NULL, p, PG,
						    UHMM_SIMDEV_ATOMIC_AUTO), -EINVAL);
	munmap(u, 4 * PG);
	munmap(s, 4 * PG);
	env_fini(&e);
}

/* ---- other devices, migrations ----------------------------------------- */

static void exclusive_moves_from_one_device_to_another(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	uhmm_device *d2 = new_simdev(e.ctx);
	const uint64_t n = 8;
	char *base;
	ASSERT_OK(uhmm_alloc(e.ctx, n * PG, (void **)&base));
	for (uint64_t k = 0; k < n; k++)
		*ctr(base, k) = 0;
	ASSERT_OK(uhmm_simdev_advise_atomics(e.dev, base, n * PG,
					     UHMM_SIMDEV_ATOMIC_EXCLUSIVE));
	ASSERT_OK(uhmm_simdev_advise_atomics(d2, base, n * PG,
					     UHMM_SIMDEV_ATOMIC_EXCLUSIVE));

	ASSERT_OK(uhmm_make_exclusive(e.dev, base, n, NULL));
	assert_int_equal(uhmm_check_exclusive(e.dev, base, n), 1);
	ASSERT_OK(uhmm_make_exclusive(d2, base, n, NULL));
	assert_int_equal(uhmm_check_exclusive(d2, base, n), 1);
	assert_int_equal(uhmm_check_exclusive(e.dev, base, n), 0);
	assert_ptr_equal(where(&e, base).device, d2);

	/* Kernels on both, taking the pages back and forth; a CPU read in
	 * between moves the data home.  No stale EXCL entry survives a
	 * change of holder, or a count would go astray. */
	uint64_t want = 0;
	for (int round = 0; round < 3; round++) {
		ASSERT_OK(count_launch(e.dev, base, n, 4 * n));
		ASSERT_OK(count_launch(d2, base, n, 2 * n));
		want += 6;
		assert_int_equal(uhmm_check_exclusive(d2, base, n), 1);
		assert_int_equal(uhmm_check_exclusive(e.dev, base, n), 0);
		if (round == 1)
			for (uint64_t k = 0; k < n; k++)
				assert_int_equal(*ctr(base, k), want);
	}
	for (uint64_t k = 0; k < n; k++)
		assert_int_equal(*ctr(base, k), want);
	assert_true(dstats(e.dev).exclusive_pages >= 3 * n);
	assert_true(dstats(d2).exclusive_pages >= 3 * n);
	env_fini(&e);
}

static void migration_of_exclusive_page_revokes_it(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t n = 8;
	char *base;
	ASSERT_OK(uhmm_alloc(e.ctx, n * PG, (void **)&base));
	for (uint64_t k = 0; k < n; k++)
		*ctr(base, k) = 1000;

	/* Held (device has EXCL entries), then migrated to the device. */
	ASSERT_OK(count_launch(e.dev, base, n, n));
	assert_int_equal(uhmm_check_exclusive(e.dev, base, n), 1);
	ASSERT_OK(uhmm_migrate(e.ctx, base, n * PG, e.dev, 0));
	assert_int_equal(uhmm_check_exclusive(e.dev, base, n), 0);
	assert_int_equal(where(&e, base).where, UHMM_WHERE_DEVICE);
	/* The device now works on its own memory, not on the old slots. */
	ASSERT_OK(count_launch(e.dev, base, n, n));
	for (uint64_t k = 0; k < n; k++)
		assert_int_equal(*ctr(base, k), 1002);

	/* Held again, then migrated to system memory. */
	ASSERT_OK(uhmm_make_exclusive(e.dev, base, n, NULL));
	assert_int_equal(uhmm_check_exclusive(e.dev, base, n), 1);
	ASSERT_OK(count_launch(e.dev, base, n, n));
	ASSERT_OK(uhmm_migrate(e.ctx, base, n * PG, NULL, 0));
	assert_int_equal(uhmm_check_exclusive(e.dev, base, n), 0);
	assert_int_equal(where(&e, base).where, UHMM_WHERE_CPU);
	for (uint64_t k = 0; k < n; k++)
		assert_int_equal(*ctr(base, k), 1003);
	env_fini(&e);
}

/* ---- the atomic policy ------------------------------------------------- */

/* AUTO: pages the CPU touched are taken exclusively, never-touched ones
 * migrate; EXCLUSIVE and MIGRATE say it for every page. */
static void atomic_policy_chooses_exclusive_or_migration(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, 4 * UHMM_HUGE_SIZE, (void **)&p));
	char *touched = p, *fresh = p + UHMM_HUGE_SIZE;
	char *excl = p + 2 * UHMM_HUGE_SIZE, *mig = p + 3 * UHMM_HUGE_SIZE;
	const uint64_t n = 4;
	for (uint64_t k = 0; k < n; k++) {
		*ctr(touched, k) = 5;
		*ctr(mig, k) = 5;
	}
	ASSERT_OK(uhmm_simdev_advise_atomics(e.dev, excl, UHMM_HUGE_SIZE,
					     UHMM_SIMDEV_ATOMIC_EXCLUSIVE));
	ASSERT_OK(uhmm_simdev_advise_atomics(e.dev, mig, UHMM_HUGE_SIZE,
					     UHMM_SIMDEV_ATOMIC_MIGRATE));
	ASSERT_OK(count_launch(e.dev, touched, n, n));
	ASSERT_OK(count_launch(e.dev, fresh, n, n));
	ASSERT_OK(count_launch(e.dev, excl, n, n));
	ASSERT_OK(count_launch(e.dev, mig, n, n));
	assert_int_equal(uhmm_check_exclusive(e.dev, touched, n), 1);
	assert_int_equal(where(&e, fresh).where, UHMM_WHERE_DEVICE);
	assert_int_equal(uhmm_check_exclusive(e.dev, excl, n), 1);
	assert_int_equal(where(&e, mig).where, UHMM_WHERE_DEVICE);
	for (uint64_t k = 0; k < n; k++) {
		assert_int_equal(*ctr(touched, k), 6);
		assert_int_equal(*ctr(fresh, k), 1);
		assert_int_equal(*ctr(excl, k), 1);
		assert_int_equal(*ctr(mig, k), 6);
	}
	/* Later advice replaces earlier: back to AUTO, fresh pages migrate. */
	ASSERT_OK(uhmm_simdev_advise_atomics(e.dev, excl, UHMM_HUGE_SIZE,
					     UHMM_SIMDEV_ATOMIC_AUTO));
	ASSERT_OK(count_launch(e.dev, excl + n * PG, n, n));
	assert_int_equal(where(&e, excl + n * PG).where, UHMM_WHERE_DEVICE);
	env_fini(&e);
}

/* A page mapped remotely for reads: an atomic on it does not go through the
 * process's address (SYS entries carry no atomic right) but takes it. */
struct read_then_add {
	uint64_t *w;
	_Atomic uint64_t sum;
};

static void k_read(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct read_then_add *r = arg;
	atomic_fetch_add(&r->sum, uhmm_simdev_ld64(wi, &r->w[idx * PG / 8]));
}

static void k_add(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct read_then_add *r = arg;
	uhmm_simdev_atomic_add64(wi, &r->w[idx * PG / 8], 10);
	atomic_fetch_add(&r->sum, uhmm_simdev_ld64(wi, &r->w[idx * PG / 8]));
}

static void atomic_on_remote_mapping_takes_page_exclusively(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	const uint64_t n = 8;
	uint64_t *w;
	ASSERT_OK(uhmm_alloc(e.ctx, n * PG, (void **)&w));
	for (uint64_t k = 0; k < n; k++)
		w[k * PG / 8] = k;
	ASSERT_OK(uhmm_simdev_advise(e.dev, w, n * PG, UHMM_SIMDEV_MAP_REMOTE));
	struct read_then_add r = { .w = w };
	ASSERT_OK(uhmm_simdev_launch(e.dev, k_read, n, &r));
	assert_int_equal(atomic_load(&r.sum), n * (n - 1) / 2);
	assert_int_equal(uhmm_check_exclusive(e.dev, w, n), 0);
	assert_true(dstats(e.dev).remote_maps >= n);

	atomic_store(&r.sum, 0);
	ASSERT_OK(uhmm_simdev_launch(e.dev, k_add, n, &r));
	assert_int_equal(uhmm_check_exclusive(e.dev, w, n), 1);
	/* The reads after the atomics went through the EXCL entries. */
	assert_int_equal(atomic_load(&r.sum), n * (n - 1) / 2 + 10 * n);
	for (uint64_t k = 0; k < n; k++)
		assert_int_equal(w[k * PG / 8], k + 10);
	env_fini(&e);
}

/* Atomics on memory uhmm does not manage cannot be made atomic: the kernel
 * ends with -EFAULT; plain loads still map remotely. */
static void atomic_on_unmanaged_memory_is_efault(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	char *u = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(u != MAP_FAILED);
	for (uint64_t k = 0; k < 4; k++)
		*ctr(u, k) = k;
	for (int pol = 0; pol < 3; pol++) {
		ASSERT_OK(uhmm_simdev_advise_atomics(e.dev, u, 4 * PG,
						     (enum uhmm_simdev_atomic_policy)pol));
		assert_int_equal(count_launch(e.dev, u, 4, 4), -EFAULT);
	}
	struct read_then_add r = { .w = (uint64_t *)u };
	ASSERT_OK(uhmm_simdev_launch(e.dev, k_read, 4, &r));
	assert_int_equal(atomic_load(&r.sum), 6);
	munmap(u, 4 * PG);
	env_fini(&e);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(cpu_and_device_atomics_on_shared_counters_are_exact),
	cmocka_unit_test(make_exclusive_then_cpu_touch_reports_not_exclusive),
	cmocka_unit_test(exclusive_page_data_is_the_latest),
	cmocka_unit_test(fork_while_exclusive_each_process_counts_alone),
	cmocka_unit_test(mprotect_readonly_then_device_write_is_eperm),
	cmocka_unit_test(munmap_of_exclusive_range_releases_it),
	cmocka_unit_test(make_exclusive_errors),
	cmocka_unit_test(exclusive_moves_from_one_device_to_another),
	cmocka_unit_test(migration_of_exclusive_page_revokes_it),
	cmocka_unit_test(atomic_policy_chooses_exclusive_or_migration),
	cmocka_unit_test(atomic_on_remote_mapping_takes_page_exclusively),
	cmocka_unit_test(atomic_on_unmanaged_memory_is_efault),
};

UHMM_TEST_MAIN(tests)
