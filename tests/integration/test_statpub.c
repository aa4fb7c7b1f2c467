/* SPDX-License-Identifier: MIT */
/*
 * test_statpub.c - the live view a context publishes (src/core/statpub.c,
 * docs/STAT.md): on by default, off by the flag or UHMM_STAT=0, its file
 * removed at destroy, and its figures (the counters, a device's memory in
 * use, where a range's bytes are) what the context says of itself.  Each
 * test publishes into a directory of its own (UHMM_STAT_DIR).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "statread.h"
#include "testlib.h"

#define MIB (1ul << 20)

static char dir[128];

static void dir_make(void)
{
	snprintf(dir, sizeof(dir), "/tmp/uhmm-statpub-XXXXXX");
	assert_non_null(mkdtemp(dir));
	setenv("UHMM_STAT_DIR", dir, 1);
	setenv("UHMM_STAT_MS", "10", 1);
}

/* The number of segments in the directory; the path of the last one. */
static int dir_count(char *path, size_t n)
{
	int count = 0;
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		count++;
		if (path)
			snprintf(path, n, "%s/%s", dir, e->d_name);
	}
	closedir(d);
	return count;
}

static void dir_remove(void)
{
	char path[512];
	while (dir_count(path, sizeof(path)) > 0)
		unlink(path);
	rmdir(dir);
	unsetenv("UHMM_STAT_DIR");
	unsetenv("UHMM_STAT_MS");
	unsetenv("UHMM_STAT");
}

static uhmm_ctx *mkctx(uint32_t flags)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = flags;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	return ctx;
}

/* A snapshot published after everything the caller did before the call:
 * two publications later than the one current at the call. */
static void snap_fresh(struct statseg *s)
{
	ASSERT_OK(statread_snapshot(s));
	uint64_t g0 = s->h->generation;
	for (int i = 0; i < 10000; i++) { /* bounded: ~10 s at 1 ms */
		ASSERT_OK(statread_snapshot(s));
		if (s->h->generation >= g0 + 2)
			return;
		usleep(1000);
	}
	fail_msg("the publisher made no progress (generation %llu)",
		 (unsigned long long)s->h->generation);
}

/* By default a context publishes, as PID.N, and the file goes at destroy. */
static void publishes_by_default_and_removes_at_destroy(void **state)
{
	(void)state;
	dir_make();
	uhmm_ctx *ctx = mkctx(0);
	char path[512], want[256];
	assert_int_equal(dir_count(path, sizeof(path)), 1);
	snprintf(want, sizeof(want), "%s/%d.", dir, (int)getpid());
	assert_memory_equal(path, want, strlen(want));
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	struct statseg s;
	ASSERT_OK(statread_open(&s, path));
	ASSERT_OK(statread_snapshot(&s));
	assert_int_equal(s.h->pid, getpid());
	assert_int_equal(s.h->version, UHMM_STAT_VERSION);
	assert_int_equal(s.h->interval_ms, 10);
	assert_true(s.h->generation >= 1);
	assert_int_equal(s.h->ndevs_total, 0);
	assert_int_equal(s.h->nranges_total, 0);
	assert_true(statread_alive(s.h->pid, s.h->starttime));
	statread_close(&s);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	assert_int_equal(dir_count(NULL, 0), 0);
	dir_remove();
}

/* UHMM_CTX_NO_STAT: nothing published; UHMM_STAT=0 likewise, and
 * UHMM_STAT=1 wins over the flag. */
static void flag_and_environment_turn_it_off(void **state)
{
	(void)state;
	dir_make();
	uhmm_ctx *ctx = mkctx(UHMM_CTX_NO_STAT);
	assert_int_equal(dir_count(NULL, 0), 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	setenv("UHMM_STAT", "0", 1);
	ctx = mkctx(0);
	assert_int_equal(dir_count(NULL, 0), 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	setenv("UHMM_STAT", "1", 1);
	ctx = mkctx(UHMM_CTX_NO_STAT);
	assert_int_equal(dir_count(NULL, 0), 1);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	assert_int_equal(dir_count(NULL, 0), 0);
	dir_remove();
}

/* A directory that is not the user's alone: no file there, and the
 * context works all the same. */
static void foreign_directory_is_refused(void **state)
{
	(void)state;
	dir_make();
	assert_int_equal(chmod(dir, 0777), 0);
	uhmm_ctx *ctx = mkctx(0);
	assert_int_equal(dir_count(NULL, 0), 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	dir_remove();
}

/* The figures: a quarter of a range migrated to a simdev shows as that
 * many bytes on the device in the range's entry and in the device's
 * memory in use, the rest on the CPU; counters as uhmm_stats_get says. */
static void residency_and_counters(void **state)
{
	(void)state;
	dir_make();
	uhmm_ctx *ctx = mkctx(0);
	uhmm_device *dev;
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 16 * MIB;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, &dev));
	char *buf;
	ASSERT_OK(uhmm_alloc(ctx, 4 * MIB, (void **)&buf));
	memset(buf, 1, 4 * MIB);
	ASSERT_OK(uhmm_migrate(ctx, buf + MIB, MIB, dev, 0));
	char path[512];
	assert_int_equal(dir_count(path, sizeof(path)), 1);
	struct statseg s;
	ASSERT_OK(statread_open(&s, path));
	snap_fresh(&s);
	const struct uhmm_stat_hdr *h = s.h;
	assert_int_equal(h->ndevs, 1);
	assert_int_equal(h->ndevs_total, 1);
	const struct uhmm_stat_dev *d = statread_dev(h, 0);
	assert_int_equal(d->id, uhmm_device_id(dev));
	assert_string_equal(d->name, uhmm_device_name(dev));
	assert_int_equal(d->bytes_in_use, MIB);
	assert_int_equal(d->mem_bytes, 16 * MIB);
	assert_int_equal(h->nranges, 1);
	const struct uhmm_stat_range *r = statread_range(h, 0);
	assert_int_equal(r->start, (uintptr_t)buf);
	assert_int_equal(r->bytes, 4 * MIB);
	assert_int_equal(r->dev_bytes[0], MIB);
	assert_int_equal(r->cpu_bytes, 3 * MIB);
	struct uhmm_stats st;
	ASSERT_OK(uhmm_stats_get(ctx, &st));
	assert_int_equal(statread_stat(h, "migrated_to_device_bytes"), st.migrated_to_device_bytes);
	assert_int_equal(statread_stat(h, "migrated_to_device_pages"), 256);
	assert_int_equal(statread_stat(h, "managed_pages"), st.managed_pages);
	/* Home again: the next publications say so. */
	ASSERT_OK(uhmm_migrate(ctx, buf, 4 * MIB, NULL, 0));
	snap_fresh(&s);
	h = s.h;
	assert_int_equal(statread_range(h, 0)->cpu_bytes, 4 * MIB);
	assert_int_equal(statread_dev(h, 0)->bytes_in_use, 0);
	statread_close(&s);
	ASSERT_OK(uhmm_free(ctx, buf));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	dir_remove();
}

/* More ranges than the table holds: the rest are summed, and said to be. */
static void ranges_past_the_table_are_summed(void **state)
{
	(void)state;
	dir_make();
	uhmm_ctx *ctx = mkctx(0);
	size_t n = UHMM_STAT_MAX_RANGES + 3;
	char **bufs = calloc(n, sizeof(*bufs));
	assert_non_null(bufs);
	for (size_t i = 0; i < n; i++)
		ASSERT_OK(uhmm_alloc(ctx, 8192, (void **)&bufs[i]));
	char path[512];
	assert_int_equal(dir_count(path, sizeof(path)), 1);
	struct statseg s;
	ASSERT_OK(statread_open(&s, path));
	snap_fresh(&s);
	assert_int_equal(s.h->nranges, UHMM_STAT_MAX_RANGES);
	assert_int_equal(s.h->nranges_total, n);
	assert_true(s.h->flags & UHMM_STAT_F_RANGES_CUT);
	assert_int_equal(statread_rest(s.h)->bytes, 3 * 8192);
	assert_int_equal(statread_rest(s.h)->cpu_bytes, 3 * 8192);
	statread_close(&s);
	for (size_t i = 0; i < n; i++)
		ASSERT_OK(uhmm_free(ctx, bufs[i]));
	free(bufs);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	dir_remove();
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(publishes_by_default_and_removes_at_destroy),
	cmocka_unit_test(flag_and_environment_turn_it_off),
	cmocka_unit_test(foreign_directory_is_refused),
	cmocka_unit_test(residency_and_counters),
	cmocka_unit_test(ranges_past_the_table_are_summed),
};

UHMM_TEST_MAIN(tests)
