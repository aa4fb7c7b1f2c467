/* SPDX-License-Identifier: MIT */
/*
 * Issue 15: migration without UFFDIO_MOVE where it is not available or
 * refuses a page (the no-move path, src/core/migrate.c): read-only and
 * mixed-permission private anonymous memory migrating both ways, the zero
 * page and the huge zero page, mprotect both ways around migrations, the
 * forced no-move path (UHMM_CTX_NO_MOVE) and its write-protection, and
 * the grown tail of an mremap.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "testlib.h"

#define MiB (1ul << 20)
#define PG 4096ul

struct fixture {
	uhmm_ctx *ctx;
	uhmm_device *dev;
};

static void setup_flags(struct fixture *f, uint32_t flags, uint64_t latency_ns)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = flags;
	ASSERT_OK(uhmm_ctx_create(&o, &f->ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 64 * MiB;
	so.latency_ns = latency_ns;
	ASSERT_OK(uhmm_simdev_create(f->ctx, &so, &f->dev));
}

static void setup(struct fixture *f)
{
	setup_flags(f, 0, 0);
}

static void teardown(struct fixture *f)
{
	ASSERT_OK(uhmm_ctx_destroy(f->ctx));
}

/* Anonymous private memory of len bytes, 2 MiB-aligned. */
static char *map_aligned(size_t len)
{
	char *raw = mmap(NULL, len + 2 * MiB, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(raw != MAP_FAILED);
	char *p = (char *)(((uintptr_t)raw + 2 * MiB - 1) & ~(uintptr_t)(2 * MiB - 1));
	if (p > raw)
		munmap(raw, (size_t)(p - raw));
	munmap(p + len, (size_t)(raw + 2 * MiB - p));
	return p;
}

/* A buffer filled, then made read-only, is registered (it was refused:
 * -EOPNOTSUPP), migrates to the device (it was refused: UFFDIO_MOVE moves
 * only between writable mappings) and comes back by a CPU read and by
 * uhmm_migrate, with its data, still read-only. */
static void readonly_buffer_migrates_both_ways(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f);
	size_t len = 4 * MiB;
	char *p = map_aligned(len);
	uhmm_test_fill(p, len, 41);
	assert_int_equal(mprotect(p, len, PROT_READ), 0);
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	/* The CPU copies are gone: nothing read-only lingers beside the
	 * device's. */
	unsigned char vec[16];
	assert_int_equal(mincore(p, 16 * PG, vec), 0);
	for (int i = 0; i < 16; i++)
		assert_int_equal(vec[i] & 1, 0);
	/* Back by CPU reads (faults into a read-only mapping). */
	assert_int_equal(uhmm_test_check(p, len, 41), (size_t)-1);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, NULL), len / PG);
	/* Again, back by uhmm_migrate. */
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, NULL), len / PG);
	assert_int_equal(uhmm_test_check(p, len, 41), (size_t)-1);
	ASSERT_OK(uhmm_unregister(f.ctx, p, len));
	assert_int_equal(uhmm_test_check(p, len, 41), (size_t)-1);
	munmap(p, len);
	teardown(&f);
}

/* Pages partly read-only (every other 16 KiB), in uhmm_alloc'd memory:
 * all of them migrate, both ways, with their data; made writable again,
 * they take writes. */
static void mixed_permission_buffer_migrates_both_ways(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f);
	size_t len = 2 * MiB;
	char *p;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 42);
	for (size_t off = 0; off < len; off += 8 * PG)
		assert_int_equal(mprotect(p + off, 4 * PG, PROT_READ), 0);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	assert_int_equal(uhmm_test_check(p, len, 42), (size_t)-1);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	assert_int_equal(uhmm_test_check(p, len, 42), (size_t)-1); /* CPU reads */
	assert_int_equal(mprotect(p, len, PROT_READ | PROT_WRITE), 0);
	uhmm_test_fill(p, len, 43);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_check(p, len, 43), (size_t)-1);
	ASSERT_OK(uhmm_free(f.ctx, p));
	teardown(&f);
}

/* A read-only mapping that only ever read the zero page migrates (as the
 * kernel migrates it) and reads zeros after. */
static void zero_page_readonly_buffer_migrates(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f);
	size_t len = 1 * MiB;
	char *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	uhmm_test_assert_zero(p, len); /* maps the zero page */
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	uhmm_test_assert_zero(p, len);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	uhmm_test_assert_zero(p, len);
	ASSERT_OK(uhmm_unregister(f.ctx, p, len));
	munmap(p, len);
	teardown(&f);
}

/* The same with the huge zero page (a 2 MiB-aligned THP-eligible read-only
 * mapping read once; where THP is off, the 4 KiB zero page: the same
 * contract). */
static void huge_zero_page_readonly_buffer_migrates(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f);
	size_t len = 4 * MiB;
	char *p = map_aligned(len);
	assert_int_equal(mprotect(p, len, PROT_READ), 0);
	(void)madvise(p, len, MADV_HUGEPAGE);
	uhmm_test_assert_zero(p, len);
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	ASSERT_OK(uhmm_migrate(f.ctx, p + 2 * MiB, 2 * MiB, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p + 2 * MiB, 2 * MiB, f.dev), 512);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	uhmm_test_assert_zero(p, len);
	ASSERT_OK(uhmm_unregister(f.ctx, p, len));
	munmap(p, len);
	teardown(&f);
}

/* uhmm_mprotect and a plain mprotect, both ways, around migrations: the
 * data is kept at every step. */
static void mprotect_both_ways_around_migrations(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f);
	size_t len = 1 * MiB;
	char *p;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 44);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	ASSERT_OK(uhmm_mprotect(f.ctx, p, len, PROT_READ));
	assert_int_equal(uhmm_test_check(p, len, 44), (size_t)-1); /* home, read-only */
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	assert_int_equal(mprotect(p, len, PROT_READ | PROT_WRITE), 0);
	p[5] = 'x'; /* a write fault of a device page of a writable mapping */
	uhmm_test_assert_data(p, PG, len - PG, 44);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(mprotect(p, len, PROT_READ), 0);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	assert_int_equal(mprotect(p, len, PROT_READ | PROT_WRITE), 0);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	ASSERT_OK(uhmm_mprotect(f.ctx, p, len, PROT_READ));
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	ASSERT_OK(uhmm_mprotect(f.ctx, p, len, PROT_READ | PROT_WRITE));
	assert_int_equal(p[5], 'x');
	uhmm_test_assert_data(p, 8, len - 8, 44);
	ASSERT_OK(uhmm_free(f.ctx, p));
	teardown(&f);
}

/* A plain mprotect(PROT_READ) (uhmm is not told) of pages on a device, held
 * exclusively by one, or at home: migrations both ways then succeed and
 * keep the data. */
static void plain_mprotect_of_migrated_and_held_pages(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f);
	size_t len = 64 * PG;
	char *p;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 47);
	ASSERT_OK(uhmm_migrate(f.ctx, p, 16 * PG, f.dev, 0));
	int e = uhmm_make_exclusive(f.dev, p + 32 * PG, 8, NULL);
	assert_true(e == 0 || e == -EOPNOTSUPP);
	assert_int_equal(mprotect(p, len, PROT_READ), 0);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	uhmm_test_assert_data(p, 0, len, 47);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	e = uhmm_make_exclusive(f.dev, p + 32 * PG, 8, NULL);
	assert_int_equal(e, -EPERM);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	uhmm_test_assert_data(p, 0, len, 47);
	assert_int_equal(mprotect(p, len, PROT_READ | PROT_WRITE), 0);
	ASSERT_OK(uhmm_free(f.ctx, p));
	teardown(&f);
}

/* ---- the forced no-move path ---- */

/* A migration without UFFDIO_MOVE: the pages land on the device, their CPU
 * copies are gone, and uhmm's own discard of them (MADV_DONTNEED, whose
 * REMOVE event the service thread reads) did not discard the device
 * copies; the data comes back by faults and by uhmm_migrate; the
 * application's own madvise still discards. */
static void nomove_round_trip(void **state)
{
	(void)state;
	struct fixture f;
	setup_flags(&f, UHMM_CTX_NO_MOVE, 0);
	size_t len = 4 * MiB;
	char *p;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	uhmm_test_fill(p, len - 2 * MiB, 45); /* the second half: never touched */
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(f.ctx, &s));
	assert_int_equal(s.migrated_to_device_pages, len / PG);
	assert_int_equal(s.zero_filled_pages, 2 * MiB / PG);
	assert_int_equal(s.events_remove, 0); /* uhmm's own are not counted */
	unsigned char vec[512];
	assert_int_equal(mincore(p, 2 * MiB, vec), 0);
	for (int i = 0; i < 512; i++)
		if (vec[i] & 1)
			fail_msg("page %d still present", i);
	assert_int_equal(uhmm_test_check(p, 1 * MiB, 45), (size_t)-1); /* faults */
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	uhmm_test_assert_data(p, 0, len - 2 * MiB, 45);
	uhmm_test_assert_zero(p + len - 2 * MiB, 2 * MiB);
	/* The application's discard of device pages still frees them. */
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(madvise(p, 2 * MiB, MADV_DONTNEED), 0);
	ASSERT_OK(uhmm_sync(f.ctx));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, 2 * MiB, NULL), 512);
	uhmm_test_assert_zero(p, 2 * MiB);
	ASSERT_OK(uhmm_free(f.ctx, p));
	teardown(&f);
}

struct writer {
	volatile char *p;
	size_t npages;
};

static void *write_thread(void *arg)
{
	struct writer *w = arg;
	usleep(50000); /* into the migration's copy (200 ms) */
	for (size_t i = 0; i < w->npages; i++)
		w->p[i * PG + 7] = (char)(0x50 + i);
	return NULL;
}

/* A CPU write that comes while a no-move migration copies its page waits
 * (a write-protect fault) and is not lost: afterwards every page holds
 * what was written, wherever the page is.  (Without the protection the
 * write landed in the CPU copy after the device's copy was taken, and the
 * discard of the CPU copy lost it.)  The check holds whatever the order
 * of the two threads. */
static void nomove_write_during_copy_is_kept(void **state)
{
	(void)state;
	struct fixture f;
	setup_flags(&f, UHMM_CTX_NO_MOVE, 200ull * 1000 * 1000);
	size_t n = 8, len = n * PG;
	char *p;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	memset(p, 1, len);
	struct writer w = { .p = p, .npages = n };
	pthread_t t;
	pthread_create(&t, NULL, write_thread, &w);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	pthread_join(t, NULL);
	for (size_t i = 0; i < n; i++)
		for (size_t b = 0; b < PG; b++)
			if (p[i * PG + b] != (b == 7 ? (char)(0x50 + i) : 1))
				fail_msg("page %zu byte %zu: %#x", i, b,
					 (unsigned char)p[i * PG + b]);
	ASSERT_OK(uhmm_free(f.ctx, p));
	teardown(&f);
}

struct unprotector {
	char *p;
	size_t npages;
};

static void *unprotect_and_write_thread(void *arg)
{
	struct unprotector *w = arg;
	usleep(50000); /* into the migration's copy (200 ms) */
	assert_int_equal(mprotect(w->p, w->npages * PG, PROT_READ | PROT_WRITE), 0);
	for (size_t i = 0; i < w->npages; i++)
		((volatile char *)w->p)[i * PG + 7] = (char)(0x60 + i);
	return NULL;
}

/* The same in the default mode, for memory that is read-only when its
 * migration starts (the no-move path: UFFDIO_MOVE refuses it) and that
 * another thread makes writable (a plain mprotect, which uhmm is not told
 * of) and writes while the pages are being copied.  The migration may be
 * one the application does not even wait for (an asynchronous prefetch,
 * a device's fault): the writes must not be lost.  (They were: without
 * the write-protection, which the default mode did not register, the
 * discard of the CPU copies after the copy dropped them, and the device
 * kept the older data; uhmm-torture --dev-mib 4 saw it as a cpu-write
 * lost after an mprotect operation.) */
static void readonly_write_after_mprotect_during_copy_is_kept(void **state)
{
	(void)state;
	struct fixture f;
	setup_flags(&f, 0, 200ull * 1000 * 1000);
	size_t n = 8, len = n * PG;
	char *p;
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	memset(p, 1, len);
	assert_int_equal(mprotect(p, len, PROT_READ), 0);
	struct unprotector w = { .p = p, .npages = n };
	pthread_t t;
	pthread_create(&t, NULL, unprotect_and_write_thread, &w);
	int r = uhmm_migrate(f.ctx, p, len, f.dev, 0);
	pthread_join(t, NULL);
	/* 0, or -EBUSY/-EFAULT for pages the writer took first: either way
	 * nothing written may be lost. */
	assert_true(r == 0 || r == -EBUSY || r == -EFAULT);
	for (size_t i = 0; i < n; i++)
		for (size_t b = 0; b < PG; b++)
			if (p[i * PG + b] != (b == 7 ? (char)(0x60 + i) : 1))
				fail_msg("page %zu byte %zu: %#x", i, b,
					 (unsigned char)p[i * PG + b]);
	ASSERT_OK(uhmm_free(f.ctx, p));
	teardown(&f);
}

/* ---- private file mappings ---- */

/* A temporary file of n pages, page i filled with 0x10 + i. */
static int temp_file(size_t n)
{
	char path[] = "/tmp/uhmm-ro-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	char pg[PG];
	for (size_t i = 0; i < n; i++) {
		memset(pg, 0x10 + (int)i, PG);
		assert_int_equal(pwrite(fd, pg, PG, (off_t)(i * PG)), (ssize_t)PG);
	}
	return fd;
}

static void assert_pages(const char *p, size_t from, size_t to, int (*val)(size_t))
{
	for (size_t i = from; i < to; i++)
		for (size_t b = 0; b < PG; b += 511)
			if (p[i * PG + b] != (char)val(i))
				fail_msg("page %zu byte %zu: %#x, not %#x", i, b,
					 (unsigned char)p[i * PG + b], (unsigned char)val(i));
}

static int file_val(size_t i)
{
	return 0x10 + (int)i;
}

static int written_val(size_t i)
{
	return i < 8 ? 0x70 + (int)i : 0x10 + (int)i;
}

static int zero_val(size_t i)
{
	(void)i;
	return 0;
}

/*
 * A MAP_PRIVATE file mapping whose first half the process wrote: plain
 * uhmm_register refuses it, the adoption (UHMM_REGISTER_ADOPT_FILE) takes
 * it with its contents (written pages and the file's), and its pages
 * migrate to the device and come back.  The adopted memory no longer sees
 * the file change (documented), and a page past the file's end reads 0.
 */
static void private_file_mapping_adopted_migrates(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f);
	size_t n = 16;
	int fd = temp_file(n - 1); /* the last page is past the file's end */
	char *p = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	assert_true(p != MAP_FAILED);
	for (size_t i = 0; i < 8; i++)
		memset(p + i * PG, 0x70 + (int)i, PG);
	assert_int_equal(uhmm_register(f.ctx, p, n * PG), -EOPNOTSUPP);
	assert_int_equal(uhmm_register_flags(f.ctx, p, n * PG, 1u << 7), -EINVAL);
	ASSERT_OK(uhmm_register_flags(f.ctx, p, n * PG, UHMM_REGISTER_ADOPT_FILE));
	assert_pages(p, 0, n - 1, written_val);
	assert_pages(p, n - 1, n, zero_val);
	ASSERT_OK(uhmm_migrate(f.ctx, p, n * PG, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, n * PG, f.dev), n);
	/* The file changes; the adopted memory does not. */
	char pg[PG];
	memset(pg, 0x5f, PG);
	assert_int_equal(pwrite(fd, pg, PG, 12 * PG), (ssize_t)PG);
	assert_pages(p, 0, n - 1, written_val); /* CPU faults bring it back */
	ASSERT_OK(uhmm_migrate(f.ctx, p, n * PG, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, p, n * PG, NULL, 0));
	assert_pages(p, 0, n - 1, written_val);
	p[3] = 1; /* still writable */
	assert_int_equal(uhmm_register_flags(f.ctx, p, n * PG, UHMM_REGISTER_ADOPT_FILE),
			 -EEXIST);
	ASSERT_OK(uhmm_unregister(f.ctx, p, n * PG));
	munmap(p, n * PG);

	/* Read-only: adopted read-only, migrates both ways. */
	char *r = mmap(NULL, 8 * PG, PROT_READ, MAP_PRIVATE, fd, 0);
	assert_true(r != MAP_FAILED);
	ASSERT_OK(uhmm_register_flags(f.ctx, r, 8 * PG, UHMM_REGISTER_ADOPT_FILE));
	ASSERT_OK(uhmm_migrate(f.ctx, r, 8 * PG, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, r, 8 * PG, f.dev), 8);
	assert_pages(r, 0, 8, file_val);
	ASSERT_OK(uhmm_unregister(f.ctx, r, 8 * PG));
	munmap(r, 8 * PG);
	close(fd);
	teardown(&f);
}

/* ---- mremap growth ---- */

/*
 * A registered range whose mapping mremap grows (in place, then moved and
 * grown): the grown tail is managed, as the kernel's VMA grows (it was
 * not: migrating the grown range said -EFAULT, and in SIGBUS mode a touch
 * of the tail killed the process).  The CPU writes the tail, the whole
 * range migrates both ways with its data, and uhmm_unregister of the
 * range as registered lets the tail go too.
 */
static void mremap_growth_in_mode(uint32_t flags)
{
	struct fixture f;
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = flags;
	int e = uhmm_ctx_create(&o, &f.ctx);
	if (e == -EOPNOTSUPP && (flags & UHMM_CTX_SIGBUS))
		TEST_SKIP("no UFFD_FEATURE_SIGBUS");
	ASSERT_OK(e);
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 64 * MiB;
	ASSERT_OK(uhmm_simdev_create(f.ctx, &so, &f.dev));

	size_t half = 2 * MiB, len = 2 * half;
	char *p = map_aligned(len);
	munmap(p + half, half); /* room to grow in place */
	uhmm_test_fill(p, half, 46);
	ASSERT_OK(uhmm_register(f.ctx, p, half));
	ASSERT_OK(uhmm_migrate(f.ctx, p, half, f.dev, 0));
	assert_true(mremap(p, half, len, 0) == p);
	uhmm_test_assert_zero(p + half, PG); /* the tail reads zeros */
	memset(p + half, 0x33, half);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	uhmm_test_assert_data(p, 0, half, 46);
	for (size_t i = half; i < len; i += 512)
		assert_int_equal(p[i], 0x33);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));

	/* Moved and grown: a mapping in the way forces the move. */
	char *q = map_aligned(3 * len);
	munmap(q, 3 * len);
	char *block = mmap(p + len, PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	char *n = mremap(p, len, 2 * len, MREMAP_MAYMOVE);
	assert_true(n != MAP_FAILED && n != p);
	ASSERT_OK(uhmm_sync(f.ctx));
	memset(n + len, 0x44, len);
	ASSERT_OK(uhmm_migrate(f.ctx, n, 2 * len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, n, 2 * len, f.dev), 2 * len / PG);
	ASSERT_OK(uhmm_migrate(f.ctx, n, 2 * len, NULL, 0));
	uhmm_test_assert_data(n, 0, half, 46);
	for (size_t i = half; i < len; i += 512)
		assert_int_equal(n[i], 0x33);
	for (size_t i = len; i < 2 * len; i += 512)
		assert_int_equal(n[i], 0x44);
	/* Unregistered as it was registered: the tails go with it. */
	ASSERT_OK(uhmm_unregister(f.ctx, n, half));
	struct uhmm_page_info pi;
	assert_int_equal(uhmm_page_query(f.ctx, n + len, &pi), -EFAULT);
	assert_int_equal(uhmm_test_uffd_registered(n + len), 0);
	for (size_t i = len; i < 2 * len; i += 512)
		assert_int_equal(n[i], 0x44);
	munmap(n, 2 * len);
	if (block != MAP_FAILED)
		munmap(block, PG);
	teardown(&f);
}

static void mremap_growth_is_managed(void **state)
{
	(void)state;
	mremap_growth_in_mode(0);
}

static void mremap_growth_is_managed_user_mode_only(void **state)
{
	(void)state;
	mremap_growth_in_mode(UHMM_CTX_USER_MODE_ONLY);
}

static void mremap_growth_is_managed_sigbus(void **state)
{
	(void)state;
	mremap_growth_in_mode(UHMM_CTX_SIGBUS);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(readonly_buffer_migrates_both_ways),
	cmocka_unit_test(mixed_permission_buffer_migrates_both_ways),
	cmocka_unit_test(zero_page_readonly_buffer_migrates),
	cmocka_unit_test(huge_zero_page_readonly_buffer_migrates),
	cmocka_unit_test(mprotect_both_ways_around_migrations),
	cmocka_unit_test(plain_mprotect_of_migrated_and_held_pages),
	cmocka_unit_test(nomove_round_trip),
	cmocka_unit_test(nomove_write_during_copy_is_kept),
	cmocka_unit_test(readonly_write_after_mprotect_during_copy_is_kept),
	cmocka_unit_test(private_file_mapping_adopted_migrates),
	cmocka_unit_test(mremap_growth_is_managed),
	cmocka_unit_test(mremap_growth_is_managed_user_mode_only),
	cmocka_unit_test(mremap_growth_is_managed_sigbus),
};

UHMM_TEST_MAIN(tests)
