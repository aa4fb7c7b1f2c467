/* SPDX-License-Identifier: MIT */
/*
 * Kernel behaviour uhmm must survive, imitated where the kernel will not
 * show it on demand.
 *
 * Fills and moves that report less than they did: Linux 6.18 can end
 * UFFDIO_MOVE, UFFDIO_COPY and UFFDIO_ZEROPAGE having done more pages than
 * the ioctl's count says (a short count, then -EEXIST when the rest is
 * retried).  Seen in uhmm-torture: with fork and migrations, the move's
 * report made uhmm_migrate() fail -EFAULT and lose the uncounted pages;
 * with madvise(MADV_DONTNEED), a zero-fill's report left pages marked as
 * discarded that were in fact mapped (to the zero page), and the writes
 * the application then made to them were dropped by the next migration.
 *
 * This program links with -Wl,--wrap=ioctl: the wrapper below makes the
 * next multi-page call of the armed kind do the real work on its first
 * pages and then report fewer of them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "core/internal.h"
#include "testlib.h"
#include "util/uffd_compat.h"

#define MiB (1ul << 20)
#define PG 4096ul

/* ---- the ioctl wrapper ---- */

int __real_ioctl(int fd, unsigned long req, ...);
int __wrap_ioctl(int fd, unsigned long req, ...);

enum quirk {
	Q_NONE,
	Q_EEXIST_UNCOUNTED, /* UFFDIO_MOVE: moves 2 pages, says none, EEXIST */
	Q_EAGAIN_SHORT,     /* UFFDIO_MOVE: moves 3 pages, says 1, EAGAIN */
	Q_COPY_SHORT,       /* UFFDIO_COPY: copies 3 pages, says 1, EAGAIN */
	Q_ZERO_SHORT,       /* UFFDIO_ZEROPAGE: fills 3 pages, says 1, EAGAIN */
	Q_MOVE_EAGAIN,      /* UFFDIO_MOVE, twice: does nothing, EAGAIN (a race) */
	Q_FILL_EAGAIN,      /* UFFDIO_COPY or ZEROPAGE, once, any length: does
			     * nothing, EAGAIN (an event pending: mmap_changing) */
};

/* The probe page of the context under test (uhmm__events_pending) and
 * whether to answer it as the kernel does while mmap_changing is raised. */
static _Atomic uint64_t probe_at;
static atomic_bool changing;

/* Armed by a test; the next call of its kind over at least 3 pages takes it. */
static _Atomic int armed = Q_NONE;
static atomic_uint fired;

static bool take(int want, uint64_t len)
{
	int q = want;
	return len >= 3 * PG && atomic_compare_exchange_strong(&armed, &q, Q_NONE);
}

/* COPY and ZEROPAGE: do 3 pages for real, report 1 with EAGAIN. */
static int short_fill(int fd, unsigned long req, void *arg)
{
	/* Counted first: the real call wakes the faulting thread. */
	atomic_fetch_add(&fired, 1);
	if (req == UFFDIO_COPY) {
		struct uffdio_copy *c = arg, part = *c;
		part.len = 3 * PG;
		int ret = __real_ioctl(fd, req, &part);
		c->copy = part.copy;
		if (ret)
			return ret;
		c->copy = PG;
	} else {
		struct uffdio_zeropage *z = arg, part = *z;
		part.range.len = 3 * PG;
		int ret = __real_ioctl(fd, req, &part);
		z->zeropage = part.zeropage;
		if (ret)
			return ret;
		z->zeropage = PG;
	}
	errno = EAGAIN;
	return -1;
}

int __wrap_ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if (req == UFFDIO_ZEROPAGE && probe_at &&
	    ((struct uffdio_zeropage *)arg)->range.start == atomic_load(&probe_at) &&
	    atomic_load(&changing)) {
		/* mmap_changing raised: what the probe of a context meets. */
		atomic_fetch_add(&fired, 1);
		((struct uffdio_zeropage *)arg)->zeropage = -EAGAIN;
		errno = EAGAIN;
		return -1;
	}
	if (req == UFFDIO_COPY || req == UFFDIO_ZEROPAGE) {
		int q = Q_FILL_EAGAIN;
		if (atomic_compare_exchange_strong(&armed, &q, Q_NONE)) {
			atomic_fetch_add(&fired, 1);
			if (req == UFFDIO_COPY)
				((struct uffdio_copy *)arg)->copy = -EAGAIN;
			else
				((struct uffdio_zeropage *)arg)->zeropage = -EAGAIN;
			errno = EAGAIN;
			return -1;
		}
	}
	if (req == UFFDIO_COPY && take(Q_COPY_SHORT, ((struct uffdio_copy *)arg)->len))
		return short_fill(fd, req, arg);
	if (req == UFFDIO_ZEROPAGE &&
	    take(Q_ZERO_SHORT, ((struct uffdio_zeropage *)arg)->range.len))
		return short_fill(fd, req, arg);
	if (req != UFFDIO_MOVE)
		return __real_ioctl(fd, req, arg);
	struct uffdio_move *m = arg;
	int q = atomic_load(&armed);
	if (q == Q_MOVE_EAGAIN) {
		/* Twice: the run, then its one-page retry. */
		if (atomic_fetch_add(&fired, 1) == 1)
			atomic_store(&armed, Q_NONE);
		m->move = -EAGAIN;
		errno = EAGAIN;
		return -1;
	}
	if ((q != Q_EEXIST_UNCOUNTED && q != Q_EAGAIN_SHORT) || !take(q, m->len))
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

static void setup_opts(struct fixture *f, const struct uhmm_ctx_opts *co)
{
	ASSERT_OK(uhmm_ctx_create(co, &f->ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 16 * MiB;
	ASSERT_OK(uhmm_simdev_create(f->ctx, &o, &f->dev));
	f->len = 2 * MiB;
	ASSERT_OK(uhmm_alloc(f->ctx, f->len, &f->p));
	uhmm_test_fill(f->p, f->len, 7);
	atomic_store(&fired, 0);
}

static void setup(struct fixture *f)
{
	setup_opts(f, NULL);
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
	SKIP_IF_NO_MOVE();
	(void)state;
	to_device(Q_EEXIST_UNCOUNTED);
}

static void move_out_eagain_short(void **state)
{
	SKIP_IF_NO_MOVE();
	(void)state;
	to_device(Q_EAGAIN_SHORT);
}

static void move_home_eexist_uncounted(void **state)
{
	SKIP_IF_NO_MOVE();
	(void)state;
	to_system(Q_EEXIST_UNCOUNTED);
}

static void move_home_eagain_short(void **state)
{
	SKIP_IF_NO_MOVE();
	(void)state;
	to_system(Q_EAGAIN_SHORT);
}

/*
 * A copy home (no warm pool: UFFDIO_COPY from a bounce buffer) that says
 * it copied fewer pages than it did: every page must be recorded home, its
 * data intact, and the call must succeed (not -EIO for "a page present
 * while on a device").
 */
static void copy_home_short(void **state)
{
	(void)state;
	struct uhmm_ctx_opts co;
	uhmm_ctx_opts_init(&co);
	co.pool_pages = 0;
	struct fixture f;
	setup_opts(&f, &co);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	atomic_store(&armed, Q_COPY_SHORT);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, NULL, 0));
	assert_int_equal(atomic_load(&fired), 1);
	assert_int_equal(uhmm_test_pages_on(f.ctx, f.p, f.len, NULL), f.len / PG);
	assert_int_equal(uhmm_test_check(f.p, f.len, 7), (size_t)-1);
	/* And the device's copies were released: all of them go again. */
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, f.p, f.len, f.dev), f.len / PG);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, NULL, 0));
	assert_int_equal(uhmm_test_check(f.p, f.len, 7), (size_t)-1);
	teardown(&f);
}

/*
 * After madvise(MADV_DONTNEED), a read fault's zero-fill window that says
 * it filled fewer pages than it did: the uncounted pages are mapped (to the
 * zero page), so the application's next writes to them take no fault.
 * Those writes must survive a migration (they were lost: the pages stayed
 * marked as discarded, and a migration takes a discarded page for a hole).
 */
static void zero_fill_short_after_discard(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f);
	char *p = f.p;
	size_t n = 16;
	char *rest = malloc(f.len - n * PG);
	assert_non_null(rest);
	memcpy(rest, p + n * PG, f.len - n * PG);
	assert_int_equal(madvise(p, n * PG, MADV_DONTNEED), 0);
	atomic_store(&armed, Q_ZERO_SHORT);
	assert_int_equal(((volatile char *)p)[0], 0); /* fault: the window */
	assert_int_equal(atomic_load(&fired), 1);
	for (size_t i = 1; i < n; i++)
		memset(p + i * PG, (int)(0x40 + i), PG);
	ASSERT_OK(uhmm_migrate(f.ctx, p, n * PG, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, p, n * PG, NULL, 0));
	assert_int_equal(p[0], 0);
	for (size_t i = 1; i < n; i++)
		for (size_t b = 0; b < PG; b += 512)
			if (p[i * PG + b] != (char)(0x40 + i))
				fail_msg("page %zu byte %zu: %#x, want %#x", i, b,
					 (unsigned char)p[i * PG + b], 0x40 + (unsigned)i);
	/* The rest of the range kept its data. */
	assert_int_equal(memcmp(rest, p + n * PG, f.len - n * PG), 0);
	free(rest);
	teardown(&f);
}

/*
 * UFFDIO_MOVE answers EAGAIN with nothing moved when it meets a transient
 * state (a page under migration or compaction, a THP being split).  Taking
 * pages out to a device, uhmm took that for "the mapping is gone" and
 * uhmm_migrate() failed -EFAULT, the pages left behind; it now tries again.
 */
static void move_out_eagain_is_retried(void **state)
{
	SKIP_IF_NO_MOVE();
	(void)state;
	struct fixture f;
	setup(&f);
	atomic_store(&armed, Q_MOVE_EAGAIN);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	assert_int_equal(atomic_load(&fired), 2);
	assert_int_equal(uhmm_test_pages_on(f.ctx, f.p, f.len, f.dev), f.len / PG);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, NULL, 0));
	assert_int_equal(uhmm_test_check(f.p, f.len, 7), (size_t)-1);
	teardown(&f);
}

/*
 * SIGBUS mode: the faulting thread's own install meets EAGAIN (an event
 * is pending, which only the service thread reads).  A page brought back
 * from the device: the install is handed to the service thread, which
 * completes it.  A zero-fill: the thread waits for the service thread to
 * have read the events and faults again.  Either way the data is right
 * and the page is installed once.
 */
static void sigbus_mode_install_eagain(void **state)
{
	(void)state;
	struct uhmm_ctx_opts co;
	uhmm_ctx_opts_init(&co);
	co.flags = UHMM_CTX_SIGBUS;
	co.fault_around = 1;
	co.zero_around = 1;
	struct fixture f;
	int err = uhmm_ctx_create(&co, &f.ctx);
	if (err == -EOPNOTSUPP)
		TEST_SKIP("no UFFD_FEATURE_SIGBUS");
	ASSERT_OK(err);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
	setup_opts(&f, &co);
	char *p = f.p;
	ASSERT_OK(uhmm_migrate(f.ctx, p, f.len, f.dev, 0));
	struct uhmm_stats s0, s1;
	ASSERT_OK(uhmm_stats_get(f.ctx, &s0));
	/* A single page comes back by UFFDIO_COPY from a warm pool page. */
	atomic_store(&armed, Q_FILL_EAGAIN);
	assert_int_equal(uhmm_test_check(p + 5 * PG, PG, 7 + 5 * PG / 8), (size_t)-1);
	assert_int_equal(atomic_load(&fired), 1);
	ASSERT_OK(uhmm_stats_get(f.ctx, &s1));
	assert_int_equal(s1.migrated_to_system_pages - s0.migrated_to_system_pages, 1);
	assert_int_equal(s1.cpu_faults_device - s0.cpu_faults_device, 1);
	/* Never-populated (discarded) memory: the zero-fill. */
	ASSERT_OK(uhmm_migrate(f.ctx, p, f.len, NULL, 0));
	assert_int_equal(madvise(p, 4 * PG, MADV_DONTNEED), 0);
	ASSERT_OK(uhmm_sync(f.ctx));
	atomic_store(&fired, 0);
	atomic_store(&armed, Q_FILL_EAGAIN);
	assert_int_equal(((volatile char *)p)[PG], 0);
	assert_int_equal(atomic_load(&fired), 1);
	assert_int_equal(((volatile char *)p)[0], 0);
	assert_int_equal(uhmm_test_check(p + 4 * PG, f.len - 4 * PG, 7 + 4 * PG / 8),
			 (size_t)-1);
	teardown(&f);
}


/* ---- a new registration where an old range's event is still on its way ---- */

struct late_unmap {
	uhmm_ctx *ctx;
	uintptr_t a;
	size_t len;
};

static void *late_unmap_main(void *arg)
{
	struct late_unmap *l = arg;
	usleep(100 * 1000);
	/* The UNMAP read at last: what the service thread does with it. */
	uhmm__ranges_unmap(l->ctx, l->a, l->a + l->len);
	atomic_store(&changing, false);
	return NULL;
}

/*
 * munmap releases the mmap lock before it posts its UNMAP: another thread
 * can map the address again and register it while uhmm still holds the
 * old range.  uhmm_register failed -EEXIST then; the kernel has raised
 * mmap_changing already, and the context's probe sees it: registration
 * waits for the event.  Here the old range is unregistered from the kernel
 * first (no real event), the probe is answered "changing" by the ioctl
 * wrapper, and the late UNMAP is handed to uhmm's handler 100 ms later.
 */
static void register_waits_for_an_unmap_on_its_way(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	assert_non_null(ctx->probe);
	size_t len = 16 * PG;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	ASSERT_OK(uhmm_register(ctx, p, len));
	ASSERT_OK(uhmm__uffd_unregister(ctx->uffd, (uintptr_t)p, len));
	assert_int_equal(munmap(p, len), 0);
	char *q = mmap(p, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	assert_true(q == p);
	atomic_store(&probe_at, (uintptr_t)ctx->probe);
	atomic_store(&changing, true);
	struct late_unmap l = { ctx, (uintptr_t)p, len };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, late_unmap_main, &l), 0);
	int rc = uhmm_register(ctx, q, len);
	pthread_join(th, NULL);
	atomic_store(&probe_at, 0);
	ASSERT_OK(rc);
	/* The new range is managed: a migration takes it. */
	memset(q, 0x5a, len);
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 4 * MiB;
	uhmm_device *dev;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &dev));
	ASSERT_OK(uhmm_migrate(ctx, q, len, dev, 0));
	assert_int_equal(uhmm_test_pages_on(ctx, q, len, dev), len / PG);
	assert_int_equal((unsigned char)q[len - 1], 0x5a);
	ASSERT_OK(uhmm_unregister(ctx, q, len));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	munmap(q, len);
}

/* A true overlap, with no event on its way, still fails at once. */
static void register_over_a_live_range_is_eexist(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	size_t len = 16 * PG;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	ASSERT_OK(uhmm_register(ctx, p, len));
	assert_int_equal(uhmm_register(ctx, p + 4 * PG, 4 * PG), -EEXIST);
	ASSERT_OK(uhmm_unregister(ctx, p, len));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	munmap(p, len);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(register_waits_for_an_unmap_on_its_way),
	cmocka_unit_test(register_over_a_live_range_is_eexist),
	cmocka_unit_test(move_out_eexist_uncounted),
	cmocka_unit_test(move_out_eagain_short),
	cmocka_unit_test(move_home_eexist_uncounted),
	cmocka_unit_test(move_home_eagain_short),
	cmocka_unit_test(copy_home_short),
	cmocka_unit_test(zero_fill_short_after_discard),
	cmocka_unit_test(move_out_eagain_is_retried),
	cmocka_unit_test(sigbus_mode_install_eagain),
};

UHMM_TEST_MAIN(tests)
