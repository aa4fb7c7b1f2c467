/* SPDX-License-Identifier: MIT */
/*
 * The system calls a small migration makes (issue 18: every batch size at
 * copy speed).  A 4 KiB uhmm_migrate() costs its UFFDIO_MOVE and little
 * else; each system call more is ~0.3 us here, next to ~1 us of copy.
 * Counted with -Wl,--wrap=syscall,--wrap=mincore (tests/CMakeLists.txt):
 *
 *   - the end of an invalidation wakes the notifier's sleepers with a
 *     futex call only when a reader sleeps (notifier.c), not per batch;
 *   - which reserve slots received a page is known from the moves
 *     themselves (uffd.c, uhmm__uffd_move_out_map), not asked of mincore;
 *   - a batch without holes is moved without a pagemap read first (the
 *     holes are looked for only where the move stops at one).
 *
 * And what the saving must not break: a reader asleep in read_begin while
 * an invalidation runs is woken at its end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "testlib.h"

#define PG 4096ul

static atomic_bool counting;
static atomic_long futex_wakes, mincores, preads;

long __real_syscall(long nr, ...);
long __wrap_syscall(long nr, ...);
int __real_mincore(void *addr, size_t len, unsigned char *vec);
ssize_t __real_pread(int fd, void *buf, size_t n, off_t off);
ssize_t __wrap_pread(int fd, void *buf, size_t n, off_t off);

ssize_t __wrap_pread(int fd, void *buf, size_t n, off_t off)
{
	if (atomic_load(&counting))
		atomic_fetch_add(&preads, 1);
	return __real_pread(fd, buf, n, off);
}
int __wrap_mincore(void *addr, size_t len, unsigned char *vec);

long __wrap_syscall(long nr, ...)
{
	va_list ap;
	va_start(ap, nr);
	long a[6];
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (nr == SYS_futex && atomic_load(&counting) &&
	    (a[1] & FUTEX_CMD_MASK) == FUTEX_WAKE)
		atomic_fetch_add(&futex_wakes, 1);
	return __real_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int __wrap_mincore(void *addr, size_t len, unsigned char *vec)
{
	if (atomic_load(&counting))
		atomic_fetch_add(&mincores, 1);
	return __real_mincore(addr, len, vec);
}

struct fx {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *p;
	size_t len;
	struct uhmm_notifier *n;
};

static void nop_inv(struct uhmm_notifier *n, const struct uhmm_inv_event *ev, void *priv)
{
	(void)n;
	(void)ev;
	(void)priv;
}

static void fx_up(struct fx *f, size_t len)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	ASSERT_OK(uhmm_ctx_create(&o, &f->ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 16u << 20;
	ASSERT_OK(uhmm_simdev_create(f->ctx, &so, &f->dev));
	f->len = len;
	ASSERT_OK(uhmm_alloc(f->ctx, len, (void **)&f->p));
	uhmm_test_fill(f->p, len, 7);
	/* Someone listens: each migration runs an invalidation. */
	ASSERT_OK(uhmm_notifier_insert(f->ctx, (uintptr_t)f->p, len, nop_inv, NULL, &f->n));
	/* Warm: device frames, reserve, pages (one round trip, uncounted). */
	ASSERT_OK(uhmm_migrate(f->ctx, f->p, len, f->dev, 0));
	ASSERT_OK(uhmm_migrate(f->ctx, f->p, len, NULL, 0));
	uhmm_test_fill(f->p, len, 8);
}

static void fx_down(struct fx *f)
{
	ASSERT_OK(uhmm_notifier_remove(f->n));
	ASSERT_OK(uhmm_free(f->ctx, f->p));
	uhmm_ctx_destroy(f->ctx);
}

/* Migrate [p, p + len) to the device in batches of @batch, counting. */
static void migrate_counted(struct fx *f, size_t batch)
{
	atomic_store(&futex_wakes, 0);
	atomic_store(&mincores, 0);
	atomic_store(&preads, 0);
	atomic_store(&counting, true);
	for (size_t off = 0; off < f->len; off += batch)
		ASSERT_OK(uhmm_migrate(f->ctx, f->p + off, batch, f->dev, 0));
	atomic_store(&counting, false);
}

static void small_migrations_make_no_futex_wake(void **state)
{
	(void)state;
	SKIP_IF_NO_MOVE(); /* the no-move path waits for its own event */
	struct fx f;
	fx_up(&f, 64 * PG);
	migrate_counted(&f, PG);
	/* 64 invalidations ended with nobody asleep on the notifier.  (A
	 * wake-up of the service thread or of a pool waiter may happen;
	 * one per batch may not.) */
	assert_true(atomic_load(&futex_wakes) < 8);
	assert_int_equal(uhmm_test_pages_on(f.ctx, f.p, f.len, f.dev), 64);
	uhmm_test_assert_data(f.p, 0, f.len, 8);
	fx_down(&f);
}

static void present_batches_move_without_mincore_or_pagemap(void **state)
{
	(void)state;
	SKIP_IF_NO_MOVE(); /* no moves there */
	struct fx f;
	fx_up(&f, 64 * PG);
	migrate_counted(&f, 16 * PG);
	assert_int_equal(atomic_load(&mincores), 0);
	assert_int_equal(atomic_load(&preads), 0); /* no pagemap scan */
	assert_int_equal(uhmm_test_pages_on(f.ctx, f.p, f.len, f.dev), 64);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, NULL, 0));
	uhmm_test_assert_data(f.p, 0, f.len, 8);
	/* Holes among the pages (their mapping is checked with mincore, as
	 * before): discarded ones are zero after, the rest moved. */
	assert_int_equal(madvise(f.p + 3 * PG, 2 * PG, MADV_DONTNEED), 0);
	ASSERT_OK(uhmm_sync(f.ctx));
	migrate_counted(&f, 16 * PG);
	assert_int_equal(uhmm_test_pages_on(f.ctx, f.p, f.len, f.dev), 64);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, NULL, 0));
	uhmm_test_assert_data(f.p, 0, 3 * PG, 8);
	uhmm_test_assert_zero(f.p + 3 * PG, 2 * PG);
	uhmm_test_assert_data(f.p, 5 * PG, f.len - 5 * PG, 8);
	fx_down(&f);
}

/* A reader asleep in read_begin during an invalidation wakes at its end. */
struct slow {
	atomic_int in_cb;
	atomic_bool release;
};

static void slow_inv(struct uhmm_notifier *n, const struct uhmm_inv_event *ev, void *priv)
{
	(void)n;
	(void)ev;
	struct slow *s = priv;
	atomic_store(&s->in_cb, 1);
	while (!atomic_load(&s->release))
		uhmm_test_nap();
}

struct reader {
	struct uhmm_notifier *n;
	atomic_int done;
	uint32_t seq;
};

static void *read_thread(void *arg)
{
	struct reader *r = arg;
	r->seq = uhmm_notifier_read_begin(r->n);
	atomic_store(&r->done, 1);
	return NULL;
}

static void *migrate_thread(void *arg)
{
	struct fx *f = arg;
	ASSERT_OK(uhmm_migrate(f->ctx, f->p, PG, f->dev, 0));
	return NULL;
}

static void sleeping_reader_wakes_at_the_end(void **state)
{
	(void)state;
	struct fx f;
	fx_up(&f, 4 * PG);
	struct slow s = { 0 };
	struct uhmm_notifier *n;
	ASSERT_OK(uhmm_notifier_insert(f.ctx, (uintptr_t)f.p, f.len, slow_inv, &s, &n));
	pthread_t mt, rt;
	assert_int_equal(pthread_create(&mt, NULL, migrate_thread, &f), 0);
	while (!atomic_load(&s.in_cb))
		uhmm_test_nap();
	/* The sequence is odd now: the reader sleeps until the end. */
	struct reader r = { .n = n };
	assert_int_equal(pthread_create(&rt, NULL, read_thread, &r), 0);
	for (int i = 0; i < 20; i++)
		uhmm_test_nap();
	assert_int_equal(atomic_load(&r.done), 0);
	atomic_store(&s.release, true);
	pthread_join(mt, NULL);
	pthread_join(rt, NULL); /* hangs (test timeout) if never woken */
	assert_int_equal(r.seq & 1, 0);
	ASSERT_OK(uhmm_notifier_remove(n));
	fx_down(&f);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(small_migrations_make_no_futex_wake),
	cmocka_unit_test(present_batches_move_without_mincore_or_pagemap),
	cmocka_unit_test(sleeping_reader_wakes_at_the_end),
};

UHMM_TEST_MAIN(tests)
