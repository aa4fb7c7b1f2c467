/* SPDX-License-Identifier: MIT */
/*
 * 2 MiB on the CPU side (issue 18): a block that is one transparent huge
 * page moves to a device with one UFFDIO_MOVE of its PMD and comes home
 * as one, so the range stays THP-backed; partial operations split it
 * without losing data; range faults report the order of huge mappings;
 * a process without THPs works at 4 KiB.  docs/ARCHITECTURE.md "2 MiB on
 * the CPU side".
 *
 * Where the machine gives no THP (transparent_hugepage "never", or none
 * free), the tests that need one skip, saying so.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "core/internal.h"
#include "testlib.h"

#define MiB (1ul << 20)
#define TM (2ul << 20)
#define PG 4096ul

struct fixture {
	uhmm_ctx *ctx;
	uhmm_device *dev;
};

static void setup_flags(struct fixture *f, uint32_t fault_around, uint32_t flags)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = flags;
	if (fault_around)
		o.fault_around = fault_around;
	ASSERT_OK(uhmm_ctx_create(&o, &f->ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 64 * MiB;
	ASSERT_OK(uhmm_simdev_create(f->ctx, &so, &f->dev));
}

static void setup(struct fixture *f, uint32_t fault_around)
{
	setup_flags(f, fault_around, 0);
}

static struct uhmm_stats stats(uhmm_ctx *ctx)
{
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(ctx, &s));
	return s;
}

/* AnonHugePages of the mappings inside [p, p + len), in bytes. */
static size_t anon_huge(const void *p, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	bool in = false;
	size_t total = 0;
	uintptr_t lo0 = (uintptr_t)p, hi0 = lo0 + len;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, kb;
		char *dash = strchr(line, '-'), *sp = strchr(line, ' ');
		if (dash && sp && dash < sp && sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
			in = lo >= lo0 && hi <= hi0;
		else if (in && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
			total += kb << 10;
	}
	if (f)
		fclose(f);
	return total;
}

/*
 * Huge pages khugepaged has collapsed since boot (every process), or -1
 * when the kernel does not say.  khugepaged collapses any block of a
 * MADV_HUGEPAGE mapping with one page present (max_ptes_none is 511 by
 * default) at any time: a test that expects a block at 4 KiB compares
 * this before and after, and accepts a huge block only when it moved.
 */
static long collapsed(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/khugepaged/pages_collapsed", "r");
	long n = -1;
	if (f && fscanf(f, "%ld", &n) != 1)
		n = -1;
	if (f)
		fclose(f);
	return n;
}

/* Whether khugepaged may have collapsed a block since c0 = collapsed(). */
static bool khugepaged_ran(long c0)
{
	return c0 < 0 || collapsed() != c0;
}

/* An aligned mapping of len bytes backed by THPs (filled with the pattern
 * of seed), exactly len long; NULL (after a note) if the kernel gave no
 * huge pages. */
static char *thp_map(size_t len, uint64_t seed)
{
	char *raw = mmap(NULL, len + TM, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(raw != MAP_FAILED);
	char *p = (char *)(((uintptr_t)raw + TM - 1) & ~(TM - 1));
	if (p > raw)
		munmap(raw, (size_t)(p - raw));
	munmap(p + len, (size_t)(raw + len + TM - (p + len)));
	if (madvise(p, len, MADV_HUGEPAGE) != 0) {
		munmap(p, len);
		return NULL;
	}
	uhmm_test_fill(p, len, seed);
	if (anon_huge(p, len) != len) {
		fprintf(stderr, "note: the kernel gave %zu of %zu bytes as THPs\n",
			anon_huge(p, len), len);
		munmap(p, len);
		return NULL;
	}
	return p;
}

#define THP_OR_SKIP(p, len, seed)                                               \
	char *p = thp_map(len, seed);                                           \
	do {                                                                    \
		if (!p)                                                         \
			TEST_SKIP("no transparent huge pages on this machine"); \
	} while (0)

/*
 * A THP-backed range migrated to a device and back with uhmm_migrate:
 * each block leaves as one PMD (the range's PMDs are empty: no huge page
 * left behind, no 4 KiB page) and comes back as one, data intact.
 */
static void thp_round_trip_by_migrate_stays_huge(void **state)
{
	(void)state;
	SKIP_IF_NO_MOVE();
	struct fixture f;
	setup(&f, 0);
	size_t len = 4 * TM;
	THP_OR_SKIP(p, len, 11);
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	struct uhmm_stats s0 = stats(f.ctx);
	assert_int_equal(s0.thp_available, 1);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	struct uhmm_stats s1 = stats(f.ctx);
	assert_int_equal(s1.thp_moves_out - s0.thp_moves_out, len / TM);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	struct uhmm_stats s2 = stats(f.ctx);
	assert_int_equal(s2.thp_moves_in - s1.thp_moves_in, len / TM);
	assert_int_equal(anon_huge(p, len), len);
	assert_int_equal(uhmm_test_check(p, len, 11), (size_t)-1);
	/* And again: the warm huge pages of the first trip serve the second. */
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	assert_int_equal(anon_huge(p, len), len);
	assert_int_equal(uhmm_test_check(p, len, 11), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
	munmap(p, len);
}

/*
 * Registered memory keeps what the process had, block by block: of two
 * blocks of a THP-backed span, the one whose huge page was split (its
 * pages PTE-mapped) leaves at 4 KiB and comes home at 4 KiB, the other
 * leaves and comes home as one THP.  Block 0 is the split one, and comes
 * home first: a flag per range (one block left huge, so all come home
 * huge) gave it the one warm huge page, block 1 none.
 */
static void registered_memory_keeps_each_blocks_unit(void **state)
{
	(void)state;
	SKIP_IF_NO_MOVE();
	struct fixture f;
	setup(&f, 0);
	size_t len = 2 * TM;
	THP_OR_SKIP(p, len, 12);
	/* Split block 0's PMD (a one-page mprotect splits the mapping and
	 * the huge page's mapping, the second merges the mapping back), then
	 * make block 0 a mapping of its own (MADV_NOHUGEPAGE), so smaps
	 * tells the two blocks apart. */
	assert_int_equal(mprotect(p + PG, PG, PROT_READ), 0);
	assert_int_equal(mprotect(p + PG, PG, PROT_READ | PROT_WRITE), 0);
	assert_int_equal(madvise(p, TM, MADV_NOHUGEPAGE), 0);
	if (anon_huge(p, TM) != 0 || anon_huge(p + TM, TM) != TM) {
		ASSERT_OK(uhmm_ctx_destroy(f.ctx));
		munmap(p, len);
		TEST_SKIP("the kernel did not keep block 0 split and block 1 huge");
	}
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	struct uhmm_stats s0 = stats(f.ctx);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, len, f.dev), len / PG);
	struct uhmm_stats s1 = stats(f.ctx);
	assert_int_equal(s1.thp_moves_out - s0.thp_moves_out, 1);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	struct uhmm_stats s2 = stats(f.ctx);
	assert_int_equal(s2.thp_moves_in - s1.thp_moves_in, 1);
	assert_int_equal(anon_huge(p, TM), 0);
	assert_int_equal(anon_huge(p + TM, TM), TM);
	assert_int_equal(uhmm_test_check(p, len, 12), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
	munmap(p, len);
}

/*
 * Reserve blocks used at 4 KiB keep a page table after their pages left;
 * a THP moved into one would be split.  The block's PMD is emptied first:
 * with a page table left in every EMPTY block of the reserve, THPs still
 * go out whole.
 */
static void thp_moves_out_whole_after_4k_traffic(void **state)
{
	(void)state;
	SKIP_IF_NO_MOVE();
	struct fixture f;
	setup(&f, 0);
	size_t len = 4 * TM;
	THP_OR_SKIP(p, len, 20);
	/* A page in and out of each EMPTY block: its PTE table stays. */
	struct uhmm_pool *pool = &f.ctx->pool;
	/* (The lowest EMPTY blocks, which the migration's runs take.) */
	long blk[8];
	size_t nb = 0;
	for (; nb < 8; nb++) {
		blk[nb] = uhmm__pool_get(pool, BATCH_PAGES, false);
		assert_true(blk[nb] >= 0);
	}
	for (size_t k = 0; k < nb; k++) {
		char *slot = pool_slot(pool, (size_t)blk[k]);
		size_t done;
		ASSERT_OK(uhmm__uffd_copy(pool->ruffd, (uintptr_t)slot + 100 * PG, f.ctx->zeros,
					  PG, 0, true, &done));
		assert_int_equal(madvise(slot + 100 * PG, PG, MADV_DONTNEED), 0);
		uint8_t none[BATCH_PAGES] = { 0 };
		uhmm__pool_put_run(pool, (size_t)blk[k], BATCH_PAGES, none);
	}
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	struct uhmm_stats s0 = stats(f.ctx);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	assert_int_equal(stats(f.ctx).thp_moves_out - s0.thp_moves_out, len / TM);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	assert_int_equal(anon_huge(p, len), len);
	assert_int_equal(uhmm_test_check(p, len, 20), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
	munmap(p, len);
}

/*
 * Back by CPU faults, the policy bringing whole blocks (fault_around 512):
 * one touch per block, the range THP-backed again.  In each fault mode:
 * served by the service thread, and by the faulting threads themselves
 * (UHMM_CTX_SIGBUS).
 */
static void fault_round_trip(uint32_t flags, uint64_t seed)
{
	struct fixture f;
	setup_flags(&f, 512, flags);
	size_t len = 4 * TM;
	THP_OR_SKIP(p, len, seed);
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	for (size_t off = 0; off < len; off += TM)
		(void)*(volatile char *)(p + off + 5 * PG);
	/* (Not thp_moves_in: a block read ahead may be counted after the
	 * touch found it home.) */
	assert_int_equal(anon_huge(p, len), len);
	assert_int_equal(uhmm_test_check(p, len, seed), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
	munmap(p, len);
}

static void thp_round_trip_by_fault_stays_huge(void **state)
{
	(void)state;
	SKIP_IF_NO_MOVE();
	fault_round_trip(0, 12);
}

static void thp_round_trip_by_fault_stays_huge_sigbus(void **state)
{
	(void)state;
	SKIP_IF_NO_MOVE();
	fault_round_trip(UHMM_CTX_SIGBUS, 18);
}

/*
 * With no warm THP in the pool (the one the move out left is taken away
 * here), a block comes home at 4 KiB (a fresh THP would cost as much as
 * the copy), with its data.
 */
static void no_warm_thp_block_comes_home_at_4k(void **state)
{
	(void)state;
	SKIP_IF_NO_MOVE();
	struct fixture f;
	setup(&f, 512);
	size_t len = TM;
	THP_OR_SKIP(p, len, 13);
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	/* Take the warm huge page the move out left, so the way home has
	 * none. */
	struct uhmm_pool *pool = &f.ctx->pool;
	long s = uhmm__pool_get_huge(pool, NULL, false);
	assert_true(s >= 0);
	assert_true(uhmm__thp_mapped(f.ctx->pagemap_fd, (uintptr_t)pool_slot(pool, (size_t)s)));
	for (size_t b = 0; b < pool->nslots / BATCH_PAGES; b++)
		assert_false((pool->thp[b / 64] >> (b % 64)) & 1); /* no warm THP left */
	struct uhmm_stats s1 = stats(f.ctx);
	long c0 = collapsed();
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	if (!khugepaged_ran(c0))
		assert_int_equal(anon_huge(p, len), 0);
	assert_int_equal(uhmm_test_check(p, len, 13), (size_t)-1);
	assert_int_equal(stats(f.ctx).thp_moves_in - s1.thp_moves_in, 0);
	uhmm__pool_put_huge(pool, (size_t)s);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
	munmap(p, len);
}

/*
 * uhmm_alloc memory asks for THPs: a first touch of an untouched block
 * maps one zeroed THP (as the kernel's fault in a MADV_HUGEPAGE mapping
 * would), and the block then goes to the device and back whole.
 */
static void alloc_memory_is_thp_backed(void **state)
{
	(void)state;
	SKIP_IF_NO_MOVE();
	struct fixture f;
	setup(&f, 0);
	if (!stats(f.ctx).thp_available)
		TEST_SKIP("no transparent huge pages on this machine");
	size_t len = 4 * TM;
	char *t = thp_map(TM, 1); /* can a THP be had now? */
	if (!t)
		TEST_SKIP("the kernel gives no THP now");
	munmap(t, TM);
	char *p;
	long c0 = collapsed();
	ASSERT_OK(uhmm_alloc(f.ctx, len, (void **)&p));
	uhmm_test_assert_zero(p + TM + 3 * PG, PG); /* a read: the zero page */
	p[3 * TM + 77] = 1;                          /* a write: a THP */
	p[77] = 1;
	if (!khugepaged_ran(c0))
		assert_int_equal(anon_huge(p, len), 2 * TM);
	uhmm_test_assert_zero(p + TM, TM);
	uhmm_test_assert_zero(p + 3 * TM, 77);
	uhmm_test_assert_zero(p + 3 * TM + 78, TM - 78);
	/* Block 1 has the zero page at 4 KiB (as the kernel's huge zero
	 * page, written, is split): it stays at 4 KiB; the others are THPs. */
	uhmm_test_fill(p, len, 19);
	if (!khugepaged_ran(c0))
		assert_int_equal(anon_huge(p, len), len - TM);
	else /* khugepaged may have made block 1 huge too */
		assert_true(anon_huge(p, len) >= len - TM);
	struct uhmm_stats s0 = stats(f.ctx);
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	struct uhmm_stats s1 = stats(f.ctx);
	if (!khugepaged_ran(c0))
		assert_int_equal(s1.thp_moves_out - s0.thp_moves_out, len / TM - 1);
	else
		assert_true(s1.thp_moves_out - s0.thp_moves_out >= len / TM - 1);
	/* Home, block 1 (out at 4 KiB: its page table is still in the
	 * range) takes one of the 3 warm THPs too, which the move splits:
	 * nothing records that it went out at 4 KiB (the per-block unit of
	 * the device side will).  So one THP block may come back at 4 KiB. */
	assert_true(s1.thp_moves_in - s0.thp_moves_in >= len / TM - 2);
	assert_true(anon_huge(p, len) >= len - 2 * TM);
	assert_int_equal(uhmm_test_check(p, len, 19), (size_t)-1);
	ASSERT_OK(uhmm_free(f.ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
}

/*
 * Partial operations on a huge block: a 4 KiB migration splits it on the
 * CPU side (the rest stays home, right data); then, with the block on the
 * device, munmap, mprotect and MADV_DONTNEED of parts: data right, the
 * untouched part still on the device.
 */
static void partial_operations_split_a_huge_block(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f, 0);
	size_t len = 2 * TM;
	THP_OR_SKIP(p, len, 14);
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	/* One page of the first block to the device. */
	ASSERT_OK(uhmm_migrate(f.ctx, p + 7 * PG, PG, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, TM, f.dev), 1);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, TM, NULL), TM / PG - 1);
	assert_int_equal(uhmm_test_check(p, len, 14), (size_t)-1);
	/* The second block whole to the device, then operations on parts. */
	char *q = p + TM;
	ASSERT_OK(uhmm_migrate(f.ctx, q, TM, f.dev, 0));
	assert_int_equal(madvise(q, 4 * PG, MADV_DONTNEED), 0);          /* pages 0-3 */
	assert_int_equal(mprotect(q + 16 * PG, 16 * PG, PROT_READ), 0);  /* 16-31 */
	assert_int_equal(munmap(q + 64 * PG, 8 * PG), 0);                /* 64-71 */
	ASSERT_OK(uhmm_sync(f.ctx));
	/* The rest is where it was. */
	assert_int_equal(uhmm_test_pages_on(f.ctx, q + 128 * PG, TM - 128 * PG, f.dev),
			 (TM - 128 * PG) / PG);
	uhmm_test_assert_zero(q, 4 * PG);
	uhmm_test_assert_data(p, TM + 4 * PG, 60 * PG, 14);
	uhmm_test_assert_data(p, TM + 72 * PG, TM - 72 * PG, 14);
	uhmm_test_assert_data(p, 0, TM, 14);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
	munmap(p, TM + 64 * PG);
	munmap(q + 72 * PG, TM - 72 * PG);
}

/* Exclusive access to one page of a THP: the page is held, the rest of
 * the huge page stays home with its data. */
static void exclusive_access_to_one_page_of_a_thp(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f, 0);
	size_t len = TM;
	THP_OR_SKIP(p, len, 15);
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	void *pg[1];
	ASSERT_OK(uhmm_make_exclusive(f.dev, p + 9 * PG, 1, pg));
	assert_int_equal(uhmm_check_exclusive(f.dev, p + 9 * PG, 1), 1);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, 9 * PG, NULL), 9);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p + 10 * PG, len - 10 * PG, NULL),
			 len / PG - 10);
	/* The holder sees the page's data; the rest is untouched. */
	assert_int_equal(uhmm_test_check(pg[0], PG, 15 + 9 * PG / 8), (size_t)-1);
	uhmm_test_assert_data(p, 0, 9 * PG, 15);
	uhmm_test_assert_data(p, 10 * PG, len - 10 * PG, 15);
	assert_int_equal(uhmm_check_exclusive(f.dev, p + 9 * PG, 1), 1);
	/* A CPU touch takes it back, data intact. */
	uhmm_test_assert_data(p, 9 * PG, PG, 15);
	assert_int_equal(uhmm_check_exclusive(f.dev, p + 9 * PG, 1), 0);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
	munmap(p, len);
}

/*
 * A THP once shared with a fork child: while the child lives, a page
 * moves once its copy-on-write is broken; after the child exits, the
 * parent maps the large folio alone, MADV_POPULATE_WRITE finds its pages
 * writable, and the kernel's split of the folio (which a 4 KiB move
 * needs) refuses for good: UFFDIO_MOVE says -EBUSY for ever (Linux 6.18).
 * uhmm takes such pages by copy: a migration the no-move way (migrate.c,
 * "refused": their bytes to the device, the CPU's copy discarded), an
 * exclusive grab into its reserve slots (exclusive.c, grab_by_copy).
 * Both succeed, data intact, and nothing is put back in place (the remake
 * they replace copied the bytes back, and lost them when the mapping moved
 * meanwhile: tests/model/remake.pml, docs/RELIABILITY.md).
 */

static void thp_once_shared_with_an_exited_child_still_moves(void **state)
{
	(void)state;
	SKIP_IF_NO_MOVE();
	struct fixture f;
	setup(&f, 1);
	size_t len = TM;
	THP_OR_SKIP(p, len, 21);
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t c = fork();
	assert_true(c >= 0);
	if (c == 0) {
		char x;
		close(pfd[1]);
		(void)!read(pfd[0], &x, 1);
		_exit(0);
	}
	close(pfd[0]);
	/* Shared: the copy-on-write is broken, the page moves. */
	ASSERT_OK(uhmm_migrate(f.ctx, p + PG, PG, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, p + 2 * PG, PG, f.dev, 0));
	close(pfd[1]);
	int st;
	assert_int_equal(waitpid(c, &st, 0), c);
	/* The child is gone: the folio's other pages refuse to move. */
	ASSERT_OK(uhmm_migrate(f.ctx, p + 3 * PG, PG, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p + 3 * PG, PG, f.dev), 1);
	ASSERT_OK(uhmm_migrate(f.ctx, p + 6 * PG, 64 * PG, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p + 6 * PG, 64 * PG, f.dev), 64);
	uhmm_test_assert_data(p, 0, len, 21);
	void *pg[1];
	ASSERT_OK(uhmm_make_exclusive(f.dev, p + 5 * PG, 1, pg));
	assert_int_equal(uhmm_check_exclusive(f.dev, p + 5 * PG, 1), 1);
	assert_int_equal(uhmm_test_check(pg[0], PG, 21 + 5 * PG / 8), (size_t)-1);
	ASSERT_OK(uhmm_migrate(f.ctx, p + 80 * PG, 64 * PG, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p + 80 * PG, 64 * PG, f.dev), 64);
	/* Every byte where it was. */
	uhmm_test_assert_data(p, 0, len, 21);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
	munmap(p, len);
}

/* uhmm_range_fault reports the order of a huge mapping; a 4 KiB mapping
 * says 0. */
static void range_fault_reports_the_order_of_a_thp(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f, 0);
	size_t len = TM;
	THP_OR_SKIP(p, len, 16);
	ASSERT_OK(uhmm_register(f.ctx, p, len));
	uint64_t *e = calloc(len / PG, sizeof(*e));
	struct uhmm_range_req req = { .start = (uintptr_t)p, .end = (uintptr_t)p + len,
				      .flags = UHMM_RF_SNAPSHOT, .device = f.dev, .entries = e };
	ASSERT_OK(uhmm_range_fault(f.ctx, &req));
	for (size_t i = 0; i < len / PG; i++) {
		assert_true(e[i] & UHMM_RE_VALID);
		assert_true(e[i] & UHMM_RE_HUGE);
		assert_int_equal(UHMM_RE_ORDER(e[i]), 9);
	}
	/* Split (one page to the device and back): order 0. */
	ASSERT_OK(uhmm_migrate(f.ctx, p, PG, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, p, PG, NULL, 0));
	req.flags = UHMM_RF_FAULT_READ;
	ASSERT_OK(uhmm_range_fault(f.ctx, &req));
	assert_int_equal(UHMM_RE_ORDER(e[1]), 0);
	assert_false(e[1] & UHMM_RE_HUGE);
	free(e);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
	munmap(p, len);
}

/*
 * A process with THPs disabled (prctl(PR_SET_THP_DISABLE), in a child):
 * uhmm says so (thp_available 0) and works at 4 KiB both ways.
 */
static void thp_disabled_process_works_at_4k(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int rc = 0;
		if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0)
			_exit(77);
		struct fixture f;
		struct uhmm_ctx_opts o;
		uhmm_ctx_opts_init(&o);
		o.fault_around = 512;
		if (uhmm_ctx_create(&o, &f.ctx))
			_exit(2);
		struct uhmm_simdev_opts so;
		uhmm_simdev_opts_init(&so);
		so.mem_bytes = 16 * MiB;
		if (uhmm_simdev_create(f.ctx, &so, &f.dev))
			_exit(3);
		struct uhmm_stats s;
		uhmm_stats_get(f.ctx, &s);
		if (s.thp_available != 0)
			rc = 4;
		void *v;
		size_t len = 2 * TM;
		if (!rc && uhmm_alloc(f.ctx, len, &v))
			rc = 5;
		char *p = v;
		if (!rc) {
			uhmm_test_fill(p, len, 17);
			if (uhmm_migrate(f.ctx, p, len, f.dev, 0))
				rc = 6;
			else if (uhmm_migrate(f.ctx, p, len, NULL, 0))
				rc = 7;
			else if (uhmm_test_check(p, len, 17) != (size_t)-1)
				rc = 8;
			else if (uhmm_migrate(f.ctx, p, len, f.dev, 0))
				rc = 9;
			else if (uhmm_test_check(p, len, 17) != (size_t)-1) /* by faults */
				rc = 10;
			else if (anon_huge(p, len) != 0)
				rc = 11;
		}
		uhmm_stats_get(f.ctx, &s);
		if (!rc && (s.thp_moves_in || s.thp_moves_out))
			rc = 12;
		if (uhmm_ctx_destroy(f.ctx))
			rc = rc ? rc : 13;
		_exit(rc);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		TEST_SKIP("prctl(PR_SET_THP_DISABLE) refused");
	assert_int_equal(WEXITSTATUS(st), 0);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(thp_round_trip_by_migrate_stays_huge),
	cmocka_unit_test(thp_moves_out_whole_after_4k_traffic),
	cmocka_unit_test(registered_memory_keeps_each_blocks_unit),
	cmocka_unit_test(thp_round_trip_by_fault_stays_huge),
	cmocka_unit_test(thp_round_trip_by_fault_stays_huge_sigbus),
	cmocka_unit_test(no_warm_thp_block_comes_home_at_4k),
	cmocka_unit_test(alloc_memory_is_thp_backed),
	cmocka_unit_test(partial_operations_split_a_huge_block),
	cmocka_unit_test(exclusive_access_to_one_page_of_a_thp),
	cmocka_unit_test(thp_once_shared_with_an_exited_child_still_moves),
	cmocka_unit_test(range_fault_reports_the_order_of_a_thp),
	cmocka_unit_test(thp_disabled_process_works_at_4k),
};

UHMM_TEST_MAIN(tests)
