/* SPDX-License-Identifier: MIT */
/* Contexts: modes, options, kernel accesses, metadata, statistics. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "core/internal.h"
#include "testlib.h"

#define MiB (1ul << 20)

static uhmm_device *simdev(uhmm_ctx *ctx)
{
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 16 * MiB;
	uhmm_device *d;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &d));
	return d;
}

/* write(2) into a pipe from a buffer whose pages live on a device: the
 * kernel reads them.  Returns write's result (or -errno). */
static long kernel_reads_device_pages(uhmm_ctx *ctx, uhmm_device *dev)
{
	enum { LEN = 32 * 1024 };
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, LEN, (void **)&p));
	memset(p, 'k', LEN);
	ASSERT_OK(uhmm_migrate(ctx, p, LEN, dev, 0));
	int fd[2];
	assert_int_equal(pipe2(fd, O_CLOEXEC), 0);
	long r = write(fd[1], p, LEN);
	if (r < 0)
		r = -errno;
	if (r == LEN) {
		static char back[LEN];
		assert_int_equal(read(fd[0], back, LEN), LEN);
		for (size_t i = 0; i < LEN; i++)
			assert_int_equal(back[i], 'k');
	}
	close(fd[0]);
	close(fd[1]);
	return r;
}

static void full_mode_serves_kernel_accesses(void **state)
{
	uhmm_ctx *ctx;
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = UHMM_CTX_REQUIRE_KERNEL_FAULTS;
	int err = uhmm_ctx_create(&o, &ctx);
	if (err == -EPERM)
		TEST_SKIP("this process may not have a full-mode userfaultfd");
	ASSERT_OK(err);
	struct uhmm_ctx_info info;
	ASSERT_OK(uhmm_ctx_info(ctx, &info));
	assert_int_equal(info.user_mode_only, 0);
	assert_int_equal(kernel_reads_device_pages(ctx, simdev(ctx)), 32 * 1024);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static void user_mode_only_fails_kernel_accesses_with_efault(void **state)
{
	uhmm_ctx *ctx;
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = UHMM_CTX_USER_MODE_ONLY;
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	struct uhmm_ctx_info info;
	ASSERT_OK(uhmm_ctx_info(ctx, &info));
	assert_int_equal(info.user_mode_only, 1);
	uhmm_device *dev = simdev(ctx);
	/* The documented limitation ... */
	assert_int_equal(kernel_reads_device_pages(ctx, dev), -EFAULT);
	/* ... and user-space accesses still work. */
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, MiB, (void **)&p));
	uhmm_test_fill(p, MiB, 4);
	ASSERT_OK(uhmm_migrate(ctx, p, MiB, dev, 0));
	assert_int_equal(uhmm_test_check(p, MiB, 4), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static void environment_overrides_options(void **state)
{
	setenv("UHMM_FAULT_AROUND", "8", 1);
	setenv("UHMM_POOL_PAGES", "0", 1);
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_ctx_info info;
	ASSERT_OK(uhmm_ctx_info(ctx, &info));
	assert_int_equal(info.fault_around, 8);
	assert_int_equal(info.pool_pages, 0);
	/* No warm pool: faults go through UFFDIO_COPY and still work. */
	uhmm_device *dev = simdev(ctx);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 2 * MiB, (void **)&p));
	uhmm_test_fill(p, 2 * MiB, 8);
	ASSERT_OK(uhmm_migrate(ctx, p, 2 * MiB, dev, 0));
	assert_int_equal(uhmm_test_check(p, 2 * MiB, 8), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	setenv("UHMM_FAULT_AROUND", "0", 1); /* out of range */
	assert_int_equal(uhmm_ctx_create(NULL, &ctx), -EINVAL);
	unsetenv("UHMM_FAULT_AROUND");
	unsetenv("UHMM_POOL_PAGES");
	/* spin_us: 0..10000 microseconds. */
	setenv("UHMM_SPIN_US", "10000", 1);
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	assert_int_equal(ctx->opts.spin_us, 10000);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	setenv("UHMM_SPIN_US", "10001", 1);
	assert_int_equal(uhmm_ctx_create(NULL, &ctx), -EINVAL);
	unsetenv("UHMM_SPIN_US");
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	assert_int_equal(o.spin_us, 0); /* off by default */
	o.spin_us = 10001;
	assert_int_equal(uhmm_ctx_create(&o, &ctx), -EINVAL);
}

static void metadata_is_sixteen_bytes_a_page(void **state)
{
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	void *p;
	ASSERT_OK(uhmm_alloc(ctx, 64 * MiB, &p));
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(ctx, &s));
	assert_int_equal(s.managed_pages, 64 * MiB / 4096);
	/* Page state is created when first needed: none yet, only the
	 * directory (16 bytes a 2 MiB block). */
	assert_int_equal(s.metadata_bytes, 0);
	assert_int_equal(s.metadata_dir_bytes, 16 * (64 / 2));
	memset(p, 1, 64 * MiB);
	ASSERT_OK(uhmm_stats_get(ctx, &s));
	assert_int_equal(s.metadata_bytes, 16 * s.managed_pages);
	ASSERT_OK(uhmm_free(ctx, p));
	/* The page state goes with the range's last reference, which the
	 * service thread may hold a moment longer (the fault it just served):
	 * wait for it, up to 2 s. */
	for (int i = 0; i < 2000; i++) {
		ASSERT_OK(uhmm_stats_get(ctx, &s));
		if (!s.metadata_bytes)
			break;
		uhmm_test_nap();
	}
	assert_int_equal(s.managed_pages, 0);
	assert_int_equal(s.metadata_bytes, 0);
	assert_int_equal(s.metadata_dir_bytes, 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static void stats_printed_at_destroy_with_uhmm_stats(void **state)
{
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pfd[1], 2);
		setenv("UHMM_STATS", "1", 1);
		uhmm_ctx *ctx;
		if (uhmm_ctx_create(NULL, &ctx))
			_exit(1);
		_exit(uhmm_ctx_destroy(ctx) ? 1 : 0);
	}
	close(pfd[1]);
	char buf[4096] = { 0 };
	size_t got = 0;
	ssize_t r;
	while (got < sizeof(buf) - 1 &&
	       (r = read(pfd[0], buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)r;
	close(pfd[0]);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_non_null(strstr(buf, "uhmm statistics"));
	assert_non_null(strstr(buf, "cpu_faults"));
}

static void several_contexts_coexist(void **state)
{
	uhmm_ctx *a, *b;
	ASSERT_OK(uhmm_ctx_create(NULL, &a));
	ASSERT_OK(uhmm_ctx_create(NULL, &b));
	uhmm_device *da = simdev(a), *db = simdev(b);
	char *pa, *pb;
	ASSERT_OK(uhmm_alloc(a, MiB, (void **)&pa));
	ASSERT_OK(uhmm_alloc(b, MiB, (void **)&pb));
	uhmm_test_fill(pa, MiB, 1);
	uhmm_test_fill(pb, MiB, 2);
	ASSERT_OK(uhmm_migrate(a, pa, MiB, da, 0));
	ASSERT_OK(uhmm_migrate(b, pb, MiB, db, 0));
	/* A device of one context is not a destination in the other. */
	assert_int_equal(uhmm_migrate(a, pa, MiB, db, 0), -EBADF);
	ASSERT_OK(uhmm_ctx_destroy(a));
	assert_int_equal(uhmm_test_check(pb, MiB, 2), (size_t)-1);
	assert_int_equal(uhmm_test_check(pa, MiB, 1), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(b));
}

/* A program built against the first header passes the smaller struct: it
 * is accepted and the newer fields take their defaults; sizes the struct
 * never had are refused. */
static void opts_of_an_older_header_are_accepted(void **state)
{
	(void)state;
	struct uhmm_ctx_opts o, def;
	uhmm_ctx_opts_init(&def);
	uhmm_ctx_opts_init(&o);
	o.pool_max_pages = 12345; /* beyond the old size: must be ignored */
	o.readahead_pages = 7;
	o.size = UHMM_CTX_OPTS_SIZE_V1;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	assert_int_equal(ctx->opts.pool_max_pages, def.pool_max_pages);
	assert_int_equal(ctx->opts.readahead_pages, def.readahead_pages);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	/* The second: pool_max_pages is read, readahead_pages is not. */
	uhmm_ctx_opts_init(&o);
	o.pool_max_pages = 12345;
	o.readahead_pages = 7;
	o.size = UHMM_CTX_OPTS_SIZE_V2;
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	assert_int_equal(ctx->opts.pool_max_pages, 12345);
	assert_int_equal(ctx->opts.readahead_pages, def.readahead_pages);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	/* The third: readahead_pages is read, spin_us is not. */
	uhmm_ctx_opts_init(&o);
	o.readahead_pages = 7;
	o.spin_us = 100;
	o.size = UHMM_CTX_OPTS_SIZE_V3;
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	assert_int_equal(ctx->opts.readahead_pages, 7);
	assert_int_equal(ctx->opts.spin_us, def.spin_us);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	o.size = UHMM_CTX_OPTS_SIZE_V2 + 2;
	assert_int_equal(uhmm_ctx_create(&o, &ctx), -EINVAL);
	o.size = UHMM_CTX_OPTS_SIZE_V1 - 4;
	assert_int_equal(uhmm_ctx_create(&o, &ctx), -EINVAL);
	o.size = UHMM_CTX_OPTS_SIZE_V1 + 2;
	assert_int_equal(uhmm_ctx_create(&o, &ctx), -EINVAL);
	o.size = sizeof(o) + 4;
	assert_int_equal(uhmm_ctx_create(&o, &ctx), -EINVAL);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(full_mode_serves_kernel_accesses),
	cmocka_unit_test(user_mode_only_fails_kernel_accesses_with_efault),
	cmocka_unit_test(environment_overrides_options),
	cmocka_unit_test(metadata_is_sixteen_bytes_a_page),
	cmocka_unit_test(stats_printed_at_destroy_with_uhmm_stats),
	cmocka_unit_test(several_contexts_coexist),
	cmocka_unit_test(opts_of_an_older_header_are_accepted),
};

UHMM_TEST_MAIN(tests)
