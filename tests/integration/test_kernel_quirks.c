/* SPDX-License-Identifier: MIT */
/*
 * Kernel behaviour uhmm must survive, imitated where the kernel will not
 * show it on demand.
 *
 * UFFDIO_MOVE that reports less than it moved: Linux 6.18 can fail a move
 * with -EEXIST (or -EAGAIN) after moving a batch of pages that
 * uffdio_move.move leaves out.  Seen in uhmm-torture with fork and
 * migrations (a fork child sharing pages makes the kernel retry inside the
 * ioctl); taken at its word, the report made uhmm_migrate() fail -EFAULT
 * and lose the uncounted pages.  This program links with
 * -Wl,--wrap=ioctl: the wrapper below makes the next multi-page
 * UFFDIO_MOVE do the real move of its first pages and then report fewer of
 * them, in each direction a move is used (a page leaving for a device, a
 * page coming home).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "testlib.h"
#include "util/uffd_compat.h"

#define MiB (1ul << 20)
#define PG 4096ul

/* ---- the ioctl wrapper ---- */

int __real_ioctl(int fd, unsigned long req, ...);
int __wrap_ioctl(int fd, unsigned long req, ...);

enum quirk { Q_NONE, Q_EEXIST_UNCOUNTED, Q_EAGAIN_SHORT };

/* Armed by a test; the next UFFDIO_MOVE of at least 3 pages takes it. */
static _Atomic int armed = Q_NONE;
static atomic_uint fired;

int __wrap_ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if (req != UFFDIO_MOVE)
		return __real_ioctl(fd, req, arg);
	struct uffdio_move *m = arg;
	int q = atomic_load(&armed);
	if (q == Q_NONE || m->len < 3 * PG ||
	    !atomic_compare_exchange_strong(&armed, &q, Q_NONE))
		return __real_ioctl(fd, req, arg);
	/* Move the first pages for real, then misreport. */
	struct uffdio_move part = *m;
	part.len = (q == Q_EEXIST_UNCOUNTED ? 2 : 3) * PG;
	int ret = __real_ioctl(fd, req, &part);
	if (ret) {
		m->move = part.move;
		return ret; /* a real failure: pass it on as it is */
	}
	atomic_fetch_add(&fired, 1);
	if (q == Q_EEXIST_UNCOUNTED) {
		/* What 6.18 does: the last batch moved is not counted and
		 * the retry behind it finds its own page at the destination. */
		m->move = 0;
		errno = EEXIST;
	} else {
		/* Progress reported short of the truth. */
		m->move = PG;
		errno = EAGAIN;
	}
	return -1;
}

/* ---- tests ---- */

struct fixture {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	void *p;
	size_t len;
};

static void setup(struct fixture *f)
{
	ASSERT_OK(uhmm_ctx_create(NULL, &f->ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 16 * MiB;
	ASSERT_OK(uhmm_simdev_create(f->ctx, &o, &f->dev));
	f->len = 2 * MiB;
	ASSERT_OK(uhmm_alloc(f->ctx, f->len, &f->p));
	uhmm_test_fill(f->p, f->len, 7);
	atomic_store(&fired, 0);
}

static void teardown(struct fixture *f)
{
	atomic_store(&armed, Q_NONE);
	ASSERT_OK(uhmm_free(f->ctx, f->p));
	ASSERT_OK(uhmm_ctx_destroy(f->ctx));
}

static void to_device(enum quirk q)
{
	struct fixture f;
	setup(&f);
	atomic_store(&armed, q);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	assert_int_equal(atomic_load(&fired), 1);
	/* Every page left, none was lost on the way. */
	assert_int_equal(uhmm_test_pages_on(f.ctx, f.p, f.len, f.dev), f.len / PG);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, NULL, 0));
	assert_int_equal(uhmm_test_check(f.p, f.len, 7), (size_t)-1);
	teardown(&f);
}

static void to_system(enum quirk q)
{
	struct fixture f;
	setup(&f);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, f.p, f.len, f.dev), f.len / PG);
	atomic_store(&armed, q);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, NULL, 0));
	assert_int_equal(atomic_load(&fired), 1);
	assert_int_equal(uhmm_test_pages_on(f.ctx, f.p, f.len, NULL), f.len / PG);
	assert_int_equal(uhmm_test_check(f.p, f.len, 7), (size_t)-1);
	teardown(&f);
}

static void move_out_eexist_uncounted(void **state)
{
	(void)state;
	to_device(Q_EEXIST_UNCOUNTED);
}

static void move_out_eagain_short(void **state)
{
	(void)state;
	to_device(Q_EAGAIN_SHORT);
}

static void move_home_eexist_uncounted(void **state)
{
	(void)state;
	to_system(Q_EEXIST_UNCOUNTED);
}

static void move_home_eagain_short(void **state)
{
	(void)state;
	to_system(Q_EAGAIN_SHORT);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(move_out_eexist_uncounted),
	cmocka_unit_test(move_out_eagain_short),
	cmocka_unit_test(move_home_eexist_uncounted),
	cmocka_unit_test(move_home_eagain_short),
};

UHMM_TEST_MAIN(tests)
