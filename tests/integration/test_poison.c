/* SPDX-License-Identifier: MIT */
/*
 * Pages lost on a device (issue 19): a backend reports a device frame lost
 * (uhmm_device_page_lost; simdev: uhmm_simdev_poison).  The page's data is
 * gone and uhmm behaves as the kernel does for a hardware-poisoned page:
 * a CPU access gets SIGBUS with BUS_MCEERR_AR, a device access an error,
 * a migration over it fails for that page (-EHWPOISON) and moves the
 * rest, a discard clears it.  Private and coherent devices alike.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uhmm/device.h>
#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "testlib.h"

#define PG 4096ul
#define NP 16

struct fix {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *p;
	char ref[NP * PG];
};

static void setup_mode(struct fix *f, bool coherent, bool sigbus_mode)
{
	struct uhmm_ctx_opts co;
	uhmm_ctx_opts_init(&co);
	if (sigbus_mode)
		co.flags |= UHMM_CTX_SIGBUS;
	ASSERT_OK(uhmm_ctx_create(&co, &f->ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 4u << 20;
	o.coherent = coherent;
	ASSERT_OK(uhmm_simdev_create(f->ctx, &o, &f->dev));
	ASSERT_OK(uhmm_alloc(f->ctx, NP * PG, (void **)&f->p));
	uhmm_test_fill(f->ref, sizeof(f->ref), 5);
	memcpy(f->p, f->ref, sizeof(f->ref));
	ASSERT_OK(uhmm_migrate(f->ctx, f->p, NP * PG, f->dev, 0));
	/* Page 5 is lost. */
	ASSERT_OK(uhmm_simdev_poison(f->dev, f->p + 5 * PG + 100));
}

static void setup(struct fix *f, bool coherent)
{
	setup_mode(f, coherent, false);
}

static enum uhmm_where where(struct fix *f, size_t i)
{
	struct uhmm_page_info info;
	ASSERT_OK(uhmm_page_query(f->ctx, f->p + i * PG, &info));
	return info.where;
}

/* Every page but 5 holds its data. */
static void others_intact(struct fix *f)
{
	assert_memory_equal(f->p, f->ref, 5 * PG);
	assert_memory_equal(f->p + 6 * PG, f->ref + 6 * PG, (NP - 6) * PG);
}

static sigjmp_buf jb;
static volatile sig_atomic_t code, at_ok;
static char *volatile expect_addr;

static void on_bus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	code = si->si_code;
	at_ok = (char *)si->si_addr >= expect_addr && (char *)si->si_addr < expect_addr + PG;
	siglongjmp(jb, 1);
}

/* In a child: touch page 5, expect SIGBUS BUS_MCEERR_AR there; then the
 * rest of the process goes on (other pages intact). */
static void cpu_access_sigbus(bool coherent, bool sigbus_mode)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Installed first: uhmm's and simdev's handlers, installed
		 * after, pass on the signals that are not theirs. */
		struct sigaction sa = { .sa_sigaction = on_bus, .sa_flags = SA_SIGINFO };
		sigemptyset(&sa.sa_mask);
		sigaction(SIGBUS, &sa, NULL);
		struct fix f;
		setup_mode(&f, coherent, sigbus_mode);
		expect_addr = f.p + 5 * PG;
		if (sigsetjmp(jb, 1) == 0) {
			(void)*(volatile char *)(f.p + 5 * PG + 8);
			_exit(10); /* no signal */
		}
		if (code != BUS_MCEERR_AR) {
			fprintf(stderr, "si_code %d\n", (int)code);
			_exit(11);
		}
		if (!at_ok)
			_exit(12);
		if (memcmp(f.p, f.ref, 5 * PG) ||
		    memcmp(f.p + 6 * PG, f.ref + 6 * PG, (NP - 6) * PG))
			_exit(13);
		/* A write too. */
		if (sigsetjmp(jb, 1) == 0) {
			*(volatile char *)(f.p + 5 * PG) = 1;
			_exit(14);
		}
		_exit(code == BUS_MCEERR_AR ? 0 : 15);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (WIFSIGNALED(st))
		fail_msg("child killed by signal %d", WTERMSIG(st));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void cpu_access_gets_sigbus_private(void **state)
{
	(void)state;
	cpu_access_sigbus(false, false);
}

static void cpu_access_gets_sigbus_coherent(void **state)
{
	(void)state;
	cpu_access_sigbus(true, false);
}

/* The same in SIGBUS mode (uhmm's handler sees the touch first). */
static void cpu_access_gets_sigbus_sigbus_mode(void **state)
{
	(void)state;
	cpu_access_sigbus(false, true);
	cpu_access_sigbus(true, true);
}

static void read_kernel(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	(void)uhmm_simdev_ld8(wi, (char *)arg + idx * PG);
}

/* A device access fails with a device error; the other pages are read. */
static void device_access(bool coherent)
{
	struct fix f;
	setup(&f, coherent);
	assert_int_equal(where(&f, 5), UHMM_WHERE_POISONED);
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(f.ctx, &s));
	assert_int_equal(s.poisoned_pages, 1);
	assert_int_equal(uhmm_simdev_launch(f.dev, read_kernel, 1, f.p + 5 * PG), -EHWPOISON);
	ASSERT_OK(uhmm_simdev_launch(f.dev, read_kernel, 5, f.p));
	/* A snapshot says what it is; a fault request fails. */
	uint64_t e[NP];
	struct uhmm_range_req req = { .start = (uintptr_t)f.p, .end = (uintptr_t)f.p + NP * PG,
				      .device = f.dev, .entries = e };
	ASSERT_OK(uhmm_range_fault(f.ctx, &req));
	assert_int_equal(e[5], UHMM_RE_POISON);
	assert_true(e[4] & UHMM_RE_VALID);
	req.flags = UHMM_RF_FAULT_READ;
	assert_int_equal(uhmm_range_fault(f.ctx, &req), -EHWPOISON);
	others_intact(&f);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
}

static void device_access_gets_error_private(void **state)
{
	(void)state;
	device_access(false);
}

static void device_access_gets_error_coherent(void **state)
{
	(void)state;
	device_access(true);
}

/* A migration over the poisoned page moves the rest, either way, and
 * says -EHWPOISON; so does make_exclusive. */
static void migration_over_poison(bool coherent)
{
	struct fix f;
	setup(&f, coherent);
	assert_int_equal(uhmm_migrate(f.ctx, f.p, NP * PG, NULL, 0), -EHWPOISON);
	for (size_t i = 0; i < NP; i++)
		assert_int_equal(where(&f, i), i == 5 ? UHMM_WHERE_POISONED : UHMM_WHERE_CPU);
	others_intact(&f);
	assert_int_equal(uhmm_migrate(f.ctx, f.p, NP * PG, f.dev, 0), -EHWPOISON);
	for (size_t i = 0; i < NP; i++)
		assert_int_equal(where(&f, i), i == 5 ? UHMM_WHERE_POISONED
					       : coherent ? UHMM_WHERE_COHERENT
							  : UHMM_WHERE_DEVICE);
	others_intact(&f);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, NP * PG, NULL, 0) == -EHWPOISON ? 0 : -1);
	void *pages[NP];
	assert_int_equal(uhmm_make_exclusive(f.dev, f.p, NP, pages), -EHWPOISON);
	assert_null(pages[5]);
	assert_non_null(pages[4]);
	others_intact(&f); /* (revokes) */
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
}

static void migration_moves_the_rest_private(void **state)
{
	(void)state;
	migration_over_poison(false);
}

static void migration_moves_the_rest_coherent(void **state)
{
	(void)state;
	migration_over_poison(true);
}

/* A discard clears it: zeros, no signal, migrations whole again; a free
 * of the range too. */
static void discard_clears(bool coherent)
{
	struct fix f;
	setup(&f, coherent);
	assert_int_equal(madvise(f.p + 5 * PG, PG, MADV_DONTNEED), 0);
	ASSERT_OK(uhmm_sync(f.ctx));
	assert_int_equal(where(&f, 5), UHMM_WHERE_CPU);
	for (size_t i = 5 * PG; i < 6 * PG; i++)
		assert_int_equal(f.p[i], 0);
	f.p[5 * PG] = 9;
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, NP * PG, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, NP * PG, NULL, 0));
	assert_int_equal(f.p[5 * PG], 9);
	others_intact(&f);
	/* Poisoned again, then the range freed: nothing left of it. */
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, NP * PG, f.dev, 0));
	ASSERT_OK(uhmm_simdev_poison(f.dev, f.p + 7 * PG));
	ASSERT_OK(uhmm_free(f.ctx, f.p));
	ASSERT_OK(uhmm_sync(f.ctx));
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(f.ctx, &s));
	assert_int_equal(s.poisoned_pages, 2);
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(f.dev, &ds));
	assert_int_equal(ds.bytes_in_use, 0);
	/* Not on the device (any more): nothing to lose. */
	char *q;
	ASSERT_OK(uhmm_alloc(f.ctx, PG, (void **)&q));
	q[0] = 1;
	assert_int_equal(uhmm_simdev_poison(f.dev, q), -EINVAL);
	assert_int_equal(uhmm_device_page_lost(f.dev, 3), -ENOENT);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
}

static void discard_clears_private(void **state)
{
	(void)state;
	discard_clears(false);
}

static void discard_clears_coherent(void **state)
{
	(void)state;
	discard_clears(true);
}

/* Wait for a child that exits 0. */
static void child_ok(pid_t pid)
{
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (WIFSIGNALED(st))
		fail_msg("child killed by signal %d", WTERMSIG(st));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* Touch @a in the child; 0 if it got SIGBUS BUS_MCEERR_AR at its page. */
static int touch_poisoned(char *a)
{
	expect_addr = (char *)((uintptr_t)a & ~(PG - 1));
	code = 0;
	at_ok = 0;
	if (sigsetjmp(jb, 1) == 0) {
		(void)*(volatile char *)a;
		return 1; /* no signal */
	}
	if (code != BUS_MCEERR_AR) {
		fprintf(stderr, "si_code %d at %p\n", (int)code, (void *)a);
		return 2;
	}
	return at_ok ? 0 : 3;
}

/* More poisoned pages at once than the SIGBUS handler's first table
 * holds (1024): each one's CPU access still gets BUS_MCEERR_AR (the
 * table grows); the pages not lost keep their data; freeing clears. */
#define MANY 1100u
#define MANY_LOST 1050u
static void many_poisoned_pages(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sigaction sa = { .sa_sigaction = on_bus, .sa_flags = SA_SIGINFO };
		sigemptyset(&sa.sa_mask);
		sigaction(SIGBUS, &sa, NULL);
		uhmm_ctx *ctx;
		uhmm_device *dev;
		char *p;
		struct uhmm_simdev_opts o;
		uhmm_simdev_opts_init(&o);
		o.mem_bytes = 8u << 20;
		if (uhmm_ctx_create(NULL, &ctx) || uhmm_simdev_create(ctx, &o, &dev) ||
		    uhmm_alloc(ctx, MANY * PG, (void **)&p))
			_exit(20);
		uhmm_test_fill(p, MANY * PG, 17);
		if (uhmm_migrate(ctx, p, MANY * PG, dev, 0))
			_exit(21);
		for (unsigned i = 0; i < MANY_LOST; i++)
			if (uhmm_simdev_poison(dev, p + (size_t)i * PG))
				_exit(22);
		/* The last lost, the first, one past the first table. */
		unsigned probe[] = { MANY_LOST - 1, 0, 1030, 1024 };
		for (unsigned k = 0; k < 4; k++) {
			int e = touch_poisoned(p + (size_t)probe[k] * PG + 8);
			if (e)
				_exit(30 + e);
		}
		/* The pages not lost: their data. */
		char *ref = malloc(MANY * PG);
		if (!ref)
			_exit(23);
		uhmm_test_fill(ref, MANY * PG, 17);
		if (memcmp(p + MANY_LOST * PG, ref + MANY_LOST * PG, (MANY - MANY_LOST) * PG))
			_exit(24);
		struct uhmm_stats s;
		if (uhmm_stats_get(ctx, &s) || s.poisoned_pages != MANY_LOST)
			_exit(25);
		/* Freed: nothing poisoned any more; the address reads zeros
		 * once mapped again. */
		if (uhmm_free(ctx, p) || uhmm_sync(ctx))
			_exit(26);
		if (uhmm_ctx_destroy(ctx))
			_exit(27);
		_exit(0);
	}
	child_ok(pid);
}

/* An mremap of a range with a poisoned page: the poison moves with it (a
 * CPU access at the new address gets BUS_MCEERR_AR there; uhmm's page
 * state says poisoned); the other pages moved with their data. */
static void mremap_moves_poison(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sigaction sa = { .sa_sigaction = on_bus, .sa_flags = SA_SIGINFO };
		sigemptyset(&sa.sa_mask);
		sigaction(SIGBUS, &sa, NULL);
		struct fix f;
		setup(&f, false);
		/* A place for it, then the move. */
		char *q = mmap(NULL, NP * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (q == MAP_FAILED)
			_exit(20);
		if (mremap(f.p, NP * PG, NP * PG, MREMAP_MAYMOVE | MREMAP_FIXED, q) != q)
			_exit(21);
		if (uhmm_sync(f.ctx))
			_exit(22);
		struct uhmm_page_info info;
		if (uhmm_page_query(f.ctx, q + 5 * PG, &info) ||
		    info.where != UHMM_WHERE_POISONED)
			_exit(23);
		int e = touch_poisoned(q + 5 * PG + 8);
		if (e)
			_exit(30 + e);
		if (memcmp(q, f.ref, 5 * PG) ||
		    memcmp(q + 6 * PG, f.ref + 6 * PG, (NP - 6) * PG))
			_exit(24);
		/* Discarded there: clear. */
		if (madvise(q + 5 * PG, PG, MADV_DONTNEED) || uhmm_sync(f.ctx))
			_exit(25);
		if (*(volatile char *)(q + 5 * PG) != 0)
			_exit(26);
		_exit(0);
	}
	child_ok(pid);
}

/* uhmm_device_page_lost_at: only the page at the address, and only if it
 * uses the frame (a frame reused by another page meanwhile: nothing). */
static void page_lost_at_checks_the_page(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	ASSERT_OK(uhmm_simdev_create(ctx, NULL, &dev));
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 4 * PG, (void **)&p));
	uhmm_test_fill(p, 4 * PG, 71);
	ASSERT_OK(uhmm_migrate(ctx, p, 4 * PG, dev, 0));
	struct uhmm_page_info a, b;
	ASSERT_OK(uhmm_page_query(ctx, p, &a));
	ASSERT_OK(uhmm_page_query(ctx, p + PG, &b));
	/* Frame of page 0, address of page 1: not that page's frame. */
	assert_int_equal(uhmm_device_page_lost_at(dev, a.dpfn, p + PG), -ENOENT);
	assert_int_equal(uhmm_device_page_lost_at(dev, a.dpfn, NULL), -EINVAL);
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(ctx, &s));
	assert_int_equal(s.poisoned_pages, 0);
	ASSERT_OK(uhmm_device_page_lost_at(dev, b.dpfn, p + PG + 7));
	ASSERT_OK(uhmm_page_query(ctx, p + PG, &b));
	assert_int_equal(b.where, UHMM_WHERE_POISONED);
	ASSERT_OK(uhmm_page_query(ctx, p, &a));
	assert_int_equal(a.where, UHMM_WHERE_DEVICE);
	ASSERT_OK(uhmm_migrate(ctx, p, PG, NULL, 0));
	assert_int_equal(uhmm_test_check(p, PG, 71), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(cpu_access_gets_sigbus_private),
	cmocka_unit_test(cpu_access_gets_sigbus_coherent),
	cmocka_unit_test(cpu_access_gets_sigbus_sigbus_mode),
	cmocka_unit_test(device_access_gets_error_private),
	cmocka_unit_test(device_access_gets_error_coherent),
	cmocka_unit_test(migration_moves_the_rest_private),
	cmocka_unit_test(migration_moves_the_rest_coherent),
	cmocka_unit_test(discard_clears_private),
	cmocka_unit_test(discard_clears_coherent),
	cmocka_unit_test(many_poisoned_pages),
	cmocka_unit_test(mremap_moves_poison),
	cmocka_unit_test(page_lost_at_checks_the_page),
};

UHMM_TEST_MAIN(tests)
