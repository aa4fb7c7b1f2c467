/* SPDX-License-Identifier: MIT */
/*
 * fork() without walls (issue 14): no fixed table loses a context, and
 * fork + a CPU write + a migration works in every userfaultfd mode.
 *
 * - More contexts than fork.c's old table of 64: the child read zeros in
 *   the contexts past the 64th (their device pages were never brought
 *   home before the fork).
 * - After fork(), the pages are shared copy-on-write with the child; a
 *   migration must break that sharing for the pages the kernel refuses to
 *   move.  It used to populate the whole batch for write, which faults on
 *   the pages the batch had just moved to the device: a user-mode-only or
 *   SIGBUS-mode userfaultfd refuses such a kernel fault (EFAULT), the rest
 *   stayed shared and uhmm_migrate failed -EBUSY for ever.  Likewise
 *   uhmm_make_exclusive.
 * - More SIGBUS-mode contexts than sigbus.c's old table of 16, each
 *   serving its faults.
 *
 * The contexts of the first and last groups use a minimal RAM backend (no
 * threads of its own) so that many of them stay cheap.
 */
#define _GNU_SOURCE
#include "testlib.h"

#include <uhmm/device.h>
#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG ((size_t)UHMM_PAGE_SIZE)
#define MiB ((size_t)1 << 20)

/* ---- a minimal backend: device memory is an anonymous mapping ---- */

#define RAM_PAGES 64u

struct ram {
	char *mem;
	uint8_t used[RAM_PAGES];
	pthread_mutex_t lock;
};

static long ram_alloc(void *priv, unsigned order, size_t n, uint64_t *dpfn)
{
	struct ram *r = priv;
	if (order)
		return 0;
	size_t got = 0;
	pthread_mutex_lock(&r->lock);
	for (uint64_t f = 0; f < RAM_PAGES && got < n; f++)
		if (!r->used[f]) {
			r->used[f] = 1;
			dpfn[got++] = f;
		}
	pthread_mutex_unlock(&r->lock);
	return (long)got;
}

static void ram_free(void *priv, unsigned order, size_t n, const uint64_t *dpfn)
{
	struct ram *r = priv;
	(void)order;
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < n; i++)
		r->used[dpfn[i]] = 0;
	pthread_mutex_unlock(&r->lock);
}

static int ram_submit(void *priv, struct uhmm_copy *c, size_t n, uhmm_fence_t *f)
{
	struct ram *r = priv;
	for (size_t i = 0; i < n; i++) {
		char *d = r->mem + c[i].dpfn * PG;
		size_t len = (size_t)c[i].npages * PG;
		if (c[i].dir == UHMM_COPY_TO_DEVICE)
			memcpy(d, c[i].sys, len);
		else if (c[i].dir == UHMM_COPY_FROM_DEVICE)
			memcpy(c[i].sys, d, len);
		else
			memset(d, 0, len);
		c[i].status = 0;
	}
	*f = 1;
	return 0;
}

static int ram_wait(void *priv, uhmm_fence_t f)
{
	(void)priv, (void)f;
	return 0;
}

static void ram_destroy(void *priv)
{
	struct ram *r = priv;
	munmap(r->mem, RAM_PAGES * PG);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static const struct uhmm_device_ops ram_ops = {
	.alloc = ram_alloc,
	.free = ram_free,
	.copy_submit = ram_submit,
	.copy_wait = ram_wait,
	.destroy = ram_destroy,
};

static uhmm_device *ram_attach(uhmm_ctx *ctx)
{
	struct ram *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	r->mem = mmap(NULL, RAM_PAGES * PG, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(r->mem != MAP_FAILED);
	pthread_mutex_init(&r->lock, NULL);
	uhmm_device *dev;
	ASSERT_OK(uhmm_device_attach(ctx, &ram_ops, r, "ram", &dev));
	return dev;
}

/* A context with a small warm pool (many of them live at once). */
static int small_ctx(uint32_t flags, uhmm_ctx **out)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = flags;
	o.pool_pages = 16;
	o.pool_max_pages = 64;
	return uhmm_ctx_create(&o, out);
}

static size_t count_where(uhmm_ctx *ctx, const char *p, size_t len, unsigned where)
{
	size_t n = 0;
	for (size_t off = 0; off < len; off += PG) {
		struct uhmm_page_info pi;
		ASSERT_OK(uhmm_page_query(ctx, p + off, &pi));
		n += pi.where == where;
	}
	return n;
}

/* count_where, once it says @want or after 2 s (a liveness bound, not a
 * timing): a read-ahead step installs a block's pages before it publishes
 * them, so a reader may read them, needing no fault, while their state
 * still says where they were. */
static size_t count_where_settled(uhmm_ctx *ctx, const char *p, size_t len, unsigned where,
				  size_t want)
{
	size_t n = count_where(ctx, p, len, where);
	for (int i = 0; i < 2000 && n != want; i++) {
		usleep(1000);
		n = count_where(ctx, p, len, where);
	}
	return n;
}

static int wait_child(pid_t pid)
{
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status))
		fail_msg("child died (status %#x)", status);
	return WEXITSTATUS(status);
}

/* ---- more contexts than the old table of 64 ---- */

#ifdef __SANITIZE_THREAD__
/* fork's prepare handlers hold every context's fork_lock and umem's locks
 * (one per size class, and three more) at once, and TSan's deadlock
 * detector aborts past 64 locks held by one thread: fewer here (the plain
 * and ASan builds cover more than 64). */
#define NCTX 32
#else
#define NCTX 72
#endif
#define CTX_PAGES 16

static void fork_with_72_contexts_child_sees_every_context(void **state)
{
	(void)state;
	uhmm_ctx *ctx[NCTX];
	uhmm_device *dev[NCTX];
	char *buf[NCTX];
	for (int i = 0; i < NCTX; i++) {
		ASSERT_OK(small_ctx(0, &ctx[i]));
		dev[i] = ram_attach(ctx[i]);
		ASSERT_OK(uhmm_alloc(ctx[i], CTX_PAGES * PG, (void **)&buf[i]));
		uhmm_test_fill(buf[i], CTX_PAGES * PG, 1000 + (uint64_t)i);
		/* The second half on the device. */
		ASSERT_OK(uhmm_migrate(ctx[i], buf[i] + CTX_PAGES / 2 * PG,
				       CTX_PAGES / 2 * PG, dev[i], 0));
		assert_int_equal(count_where(ctx[i], buf[i], CTX_PAGES * PG,
					     UHMM_WHERE_DEVICE), CTX_PAGES / 2);
	}

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Exit code: 1 + the first context whose data is wrong. */
		for (int i = 0; i < NCTX; i++)
			if (uhmm_test_check(buf[i], CTX_PAGES * PG, 1000 + (uint64_t)i) !=
			    (size_t)-1)
				_exit(1 + i);
		_exit(0);
	}
	int st = wait_child(pid);
	if (st)
		fail_msg("child: context %d reads wrong data (of %d)", st - 1, NCTX);
	for (int i = 0; i < NCTX; i++) {
		uhmm_test_assert_data(buf[i], 0, CTX_PAGES * PG, 1000 + (uint64_t)i);
		/* And the parent's contexts keep working. */
		ASSERT_OK(uhmm_migrate(ctx[i], buf[i], CTX_PAGES * PG, dev[i], 0));
		assert_int_equal(count_where(ctx[i], buf[i], CTX_PAGES * PG,
					     UHMM_WHERE_DEVICE), CTX_PAGES);
		uhmm_test_assert_data(buf[i], 0, CTX_PAGES * PG, 1000 + (uint64_t)i);
	}
	for (int i = 0; i < NCTX; i++) {
		ASSERT_OK(uhmm_free(ctx[i], buf[i]));
		ASSERT_OK(uhmm_ctx_destroy(ctx[i]));
	}
}

/* ---- fork, one write, migrate: in every mode ---- */

#define LEN (4 * MiB)
#define NPAGES (LEN / PG)

enum mode { M_FULL, M_UMO, M_SIGBUS };

static const char *mode_name(enum mode m)
{
	return m == M_FULL ? "full" : m == M_UMO ? "user-mode-only" : "SIGBUS";
}

struct fenv {
	uhmm_ctx *ctx;
	uhmm_device *dev;
};

/* A context in mode m with a simdev; the test is skipped, with the
 * reason, if the mode is unavailable. */
static void fenv_init(struct fenv *e, enum mode m)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = m == M_FULL ? UHMM_CTX_REQUIRE_KERNEL_FAULTS
		  : m == M_UMO ? UHMM_CTX_USER_MODE_ONLY : UHMM_CTX_SIGBUS;
	int err = uhmm_ctx_create(&o, &e->ctx);
	if (m == M_FULL && err == -EPERM)
		TEST_SKIP("this process may not open a full-mode userfaultfd");
	if (m == M_SIGBUS && err == -EOPNOTSUPP)
		TEST_SKIP("the kernel has no UFFD_FEATURE_SIGBUS");
	ASSERT_OK(err);
	struct uhmm_ctx_info info;
	ASSERT_OK(uhmm_ctx_info(e->ctx, &info));
	assert_int_equal(info.user_mode_only, m == M_UMO);
	assert_int_equal(info.sigbus, m == M_SIGBUS);
	if (!info.has_move) {
		ASSERT_OK(uhmm_ctx_destroy(e->ctx));
		TEST_SKIP("no UFFDIO_MOVE: no migration to a device");
	}
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 16 * MiB;
	ASSERT_OK(uhmm_simdev_create(e->ctx, &so, &e->dev));
}

/*
 * Half the buffer on the device, fork (the child keeps it mapped), the
 * parent writes page @w, then the whole buffer goes to the device (or is
 * taken exclusively: @excl).  Both succeed, the data is right in both
 * processes.
 */
static void fork_write_then_take(enum mode m, size_t w, bool excl)
{
	struct fenv e;
	fenv_init(&e, m);
	const uint64_t s1 = 41, s2 = 42;
	char *p;
	ASSERT_OK(uhmm_alloc(e.ctx, LEN, (void **)&p));
	uhmm_test_fill(p, LEN, s1);
	ASSERT_OK(uhmm_migrate(e.ctx, p, LEN / 2, e.dev, 0));
	int go[2];
	assert_int_equal(pipe(go), 0);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* The data as of the fork, before and after the parent's
		 * write and migration (no uhmm here: ordinary memory). */
		char c;
		close(go[1]);
		if (uhmm_test_check(p, LEN, s1) != (size_t)-1)
			_exit(1);
		if (read(go[0], &c, 1) != 1)
			_exit(3);
		_exit(uhmm_test_check(p, LEN, s1) == (size_t)-1 ? 0 : 2);
	}
	close(go[0]);
	uhmm_test_fill(p + w * PG, PG, s2);

	int r = excl ? uhmm_make_exclusive(e.dev, p, NPAGES, NULL)
		     : uhmm_migrate(e.ctx, p, LEN, e.dev, 0);
	struct uhmm_stats st;
	ASSERT_OK(uhmm_stats_get(e.ctx, &st));
	size_t there = count_where(e.ctx, p, LEN,
				   excl ? UHMM_WHERE_EXCLUSIVE : UHMM_WHERE_DEVICE);
	/* Let the child look before anything can fail here. */
	assert_int_equal(write(go[1], "x", 1), 1);
	close(go[1]);
	int cst = wait_child(pid);
	if (r)
		fail_msg("%s mode: %s after fork + write = %d (%s), %zu of %zu pages "
			 "moved, migrate_busy %llu", mode_name(m),
			 excl ? "uhmm_make_exclusive" : "uhmm_migrate", r,
			 uhmm_test_strerror(r), there, NPAGES,
			 (unsigned long long)st.migrate_busy);
	assert_int_equal(there, NPAGES);
	if (cst)
		fail_msg("child: %s", cst == 1 ? "pre-fork data wrong at fork"
				      : cst == 2 ? "saw the parent's later changes"
						 : "pipe failed");
	/* The parent's data, read through the device (faults bring it back). */
	uhmm_test_assert_data(p, 0, w * PG, s1);
	uhmm_test_assert_data(p + w * PG, 0, PG, s2);
	uhmm_test_assert_data(p, (w + 1) * PG, LEN - (w + 1) * PG, s1);
	assert_int_equal(count_where_settled(e.ctx, p, LEN, UHMM_WHERE_CPU, NPAGES), NPAGES);
	ASSERT_OK(uhmm_free(e.ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(e.ctx));
}

/* The written page first in its 2 MiB batch: the old populate faulted on
 * it at once and unshared nothing. */
static void fork_write_migrate_full(void **state)
{
	(void)state;
	fork_write_then_take(M_FULL, 0, false);
}

static void fork_write_migrate_user_mode_only(void **state)
{
	(void)state;
	fork_write_then_take(M_UMO, 0, false);
}

static void fork_write_migrate_sigbus(void **state)
{
	(void)state;
	fork_write_then_take(M_SIGBUS, 0, false);
}

/* A page in the middle of the second batch (the one that was not on the
 * device before the fork). */
static void fork_write_mid_batch_migrate_user_mode_only(void **state)
{
	(void)state;
	fork_write_then_take(M_UMO, NPAGES / 2 + 100, false);
}

static void fork_write_make_exclusive_full(void **state)
{
	(void)state;
	fork_write_then_take(M_FULL, 0, true);
}

static void fork_write_make_exclusive_user_mode_only(void **state)
{
	(void)state;
	fork_write_then_take(M_UMO, 0, true);
}

static void fork_write_make_exclusive_sigbus(void **state)
{
	(void)state;
	fork_write_then_take(M_SIGBUS, 0, true);
}

/* ---- more SIGBUS-mode contexts than the old table of 16 ---- */

#define NSB 40
#define SB_PAGES 8

static void many_sigbus_contexts_each_serve_faults(void **state)
{
	(void)state;
	uhmm_ctx *ctx[NSB];
	uhmm_device *dev[NSB];
	char *buf[NSB];
	int err = small_ctx(UHMM_CTX_SIGBUS, &ctx[0]);
	if (err == -EOPNOTSUPP)
		TEST_SKIP("the kernel has no UFFD_FEATURE_SIGBUS");
	ASSERT_OK(err);
	for (int i = 1; i < NSB; i++) {
		err = small_ctx(UHMM_CTX_SIGBUS, &ctx[i]);
		if (err)
			fail_msg("SIGBUS-mode context %d of %d: %d (%s)", i + 1, NSB, err,
				 uhmm_test_strerror(err));
	}
	for (int i = 0; i < NSB; i++) {
		dev[i] = ram_attach(ctx[i]);
		ASSERT_OK(uhmm_alloc(ctx[i], SB_PAGES * PG, (void **)&buf[i]));
		uhmm_test_fill(buf[i], SB_PAGES / 2 * PG, 2000 + (uint64_t)i);
		ASSERT_OK(uhmm_migrate(ctx[i], buf[i], SB_PAGES * PG, dev[i], 0));
	}
	/* Touch in reverse order of creation: the contexts past the first
	 * 16 are asked after a walk over the others. */
	for (int i = NSB - 1; i >= 0; i--) {
		struct uhmm_stats before, after;
		ASSERT_OK(uhmm_stats_get(ctx[i], &before));
		uhmm_test_assert_data(buf[i], 0, SB_PAGES / 2 * PG, 2000 + (uint64_t)i);
		uhmm_test_assert_zero(buf[i] + SB_PAGES / 2 * PG, SB_PAGES / 2 * PG);
		ASSERT_OK(uhmm_stats_get(ctx[i], &after));
		assert_true(after.cpu_faults > before.cpu_faults);
	}
	/* Slots freed in the middle are reused, and the others keep serving. */
	for (int i = 0; i < NSB; i += 2) {
		ASSERT_OK(uhmm_free(ctx[i], buf[i]));
		ASSERT_OK(uhmm_ctx_destroy(ctx[i]));
		ASSERT_OK(small_ctx(UHMM_CTX_SIGBUS, &ctx[i]));
		dev[i] = ram_attach(ctx[i]);
		ASSERT_OK(uhmm_alloc(ctx[i], SB_PAGES * PG, (void **)&buf[i]));
		uhmm_test_fill(buf[i], SB_PAGES / 2 * PG, 3000 + (uint64_t)i);
		ASSERT_OK(uhmm_migrate(ctx[i], buf[i], SB_PAGES * PG, dev[i], 0));
	}
	for (int i = 0; i < NSB; i++) {
		if (i % 2)
			ASSERT_OK(uhmm_migrate(ctx[i], buf[i], SB_PAGES * PG, dev[i], 0));
		uhmm_test_assert_data(buf[i], 0, SB_PAGES / 2 * PG,
				      (i % 2 ? 2000 : 3000) + (uint64_t)i);
		uhmm_test_assert_zero(buf[i] + SB_PAGES / 2 * PG, SB_PAGES / 2 * PG);
	}
	for (int i = 0; i < NSB; i++) {
		ASSERT_OK(uhmm_free(ctx[i], buf[i]));
		ASSERT_OK(uhmm_ctx_destroy(ctx[i]));
	}
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(fork_with_72_contexts_child_sees_every_context),
	cmocka_unit_test(fork_write_migrate_full),
	cmocka_unit_test(fork_write_migrate_user_mode_only),
	cmocka_unit_test(fork_write_migrate_sigbus),
	cmocka_unit_test(fork_write_mid_batch_migrate_user_mode_only),
	cmocka_unit_test(fork_write_make_exclusive_full),
	cmocka_unit_test(fork_write_make_exclusive_user_mode_only),
	cmocka_unit_test(fork_write_make_exclusive_sigbus),
	cmocka_unit_test(many_sigbus_contexts_each_serve_faults),
};

UHMM_TEST_MAIN(tests)
