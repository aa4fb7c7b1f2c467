/* SPDX-License-Identifier: MIT */
/*
 * Device huge pages (issue 18, device side): a whole 2 MiB-aligned block
 * moves to a device as one 2 MiB device page, the device maps it with one
 * 2 MiB page-table entry and caches one TLB entry for it, and a partial
 * operation (a 4 KiB migration home, a CPU fault, exclusive access to one
 * page, munmap / madvise / uhmm_mprotect of part) splits it in place into
 * 512 4 KiB pages: no data lost, the rest stays on the device.
 * Counters, never timings, say what happened.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
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
#define BLK (2 * MiB)
#define NPG (BLK / PG)

struct fix {
	uhmm_ctx *ctx;
	uhmm_device *dev;
};

static void setup(struct fix *f)
{
	struct uhmm_ctx_opts co;
	uhmm_ctx_opts_init(&co);
	co.fault_around = 1; /* a CPU fault brings its own page only */
	ASSERT_OK(uhmm_ctx_create(&co, &f->ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 16 * MiB;
	ASSERT_OK(uhmm_simdev_create(f->ctx, &o, &f->dev));
}

static void teardown(struct fix *f)
{
	ASSERT_OK(uhmm_ctx_destroy(f->ctx));
}

static struct uhmm_simdev_meminfo mem(uhmm_device *dev)
{
	struct uhmm_simdev_meminfo m;
	ASSERT_OK(uhmm_simdev_meminfo(dev, &m));
	return m;
}

static struct uhmm_simdev_stats dstats(uhmm_device *dev)
{
	struct uhmm_simdev_stats s;
	ASSERT_OK(uhmm_simdev_stats(dev, &s));
	return s;
}

static struct uhmm_stats stats(uhmm_ctx *ctx)
{
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(ctx, &s));
	return s;
}

/* A block of @len filled with the pattern of @seed, on the device as
 * 2 MiB units. */
static char *on_device(struct fix *f, size_t len, uint64_t seed)
{
	char *p;
	ASSERT_OK(uhmm_alloc(f->ctx, len, (void **)&p));
	uhmm_test_fill(p, len, seed);
	ASSERT_OK(uhmm_migrate(f->ctx, p, len, f->dev, 0));
	assert_int_equal(uhmm_test_pages_on(f->ctx, p, len, f->dev), len / PG);
	assert_int_equal(mem(f->dev).huge_pages, len / BLK);
	return p;
}

/* ---- kernels ------------------------------------------------------------ */

/* Work item i reads word 0 of page i (sum), or writes i + 1 there. */
struct touch {
	char *buf;
	int write;
	_Atomic uint64_t sum;
};

static void k_touch(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct touch *t = arg;
	void *p = t->buf + idx * PG;
	if (t->write)
		uhmm_simdev_st64(wi, p, idx + 1);
	else
		atomic_fetch_add_explicit(&t->sum, uhmm_simdev_ld64(wi, p),
					  memory_order_relaxed);
}

static uint64_t dev_sum(uhmm_device *dev, char *p, size_t npages)
{
	struct touch t = { .buf = p };
	ASSERT_OK(uhmm_simdev_launch(dev, k_touch, npages, &t));
	return atomic_load(&t.sum);
}

static void dev_write(uhmm_device *dev, char *p, size_t npages)
{
	struct touch t = { .buf = p, .write = 1 };
	ASSERT_OK(uhmm_simdev_launch(dev, k_touch, npages, &t));
}

/* Sum of i + 1 over the pages the kernel wrote. */
static uint64_t tri(size_t n)
{
	return n * (n + 1) / 2;
}

/* The block at p is on the device as one unit, mapped by one 2 MiB entry:
 * the device wrote i + 1 in word 0 of page i through it. */
static char *mapped_huge(struct fix *f)
{
	char *p = on_device(f, BLK, 1);
	dev_write(f->dev, p, NPG);
	struct uhmm_simdev_stats s = dstats(f->dev);
	assert_int_equal(s.pt_huge_entries, 1);
	assert_int_equal(s.pt_huge_maps, 1);
	return p;
}

/* ---- the unit ----------------------------------------------------------- */

/* A whole aligned block takes one 2 MiB device page; a block the
 * migration covers only in part takes 4 KiB pages. */
static void whole_block_moves_as_one_device_huge_page(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	char *p;
	ASSERT_OK(uhmm_alloc(f.ctx, 2 * BLK, (void **)&p));
	uhmm_test_fill(p, 2 * BLK, 7);
	ASSERT_OK(uhmm_migrate(f.ctx, p, BLK, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, p + BLK, BLK - PG, f.dev, 0));
	struct uhmm_simdev_meminfo m = mem(f.dev);
	assert_int_equal(m.huge_pages, 1);
	assert_int_equal(m.huge_allocs, 1);
	assert_int_equal(m.free_pages, m.total_pages - 2 * NPG + 1);
	assert_int_equal(stats(f.ctx).dev_huge_units, 1);
	/* The range fault reports the unit. */
	uint64_t *e = calloc(NPG, sizeof(*e));
	assert_non_null(e);
	struct uhmm_range_req rq = { .start = (uintptr_t)p, .end = (uintptr_t)p + BLK,
				     .entries = e, .device = f.dev,
				     .flags = UHMM_RF_SNAPSHOT };
	ASSERT_OK(uhmm_range_fault(f.ctx, &rq));
	for (size_t i = 0; i < NPG; i++) {
		assert_true(e[i] & UHMM_RE_DEVICE);
		assert_true(e[i] & UHMM_RE_HUGE);
		assert_int_equal(e[i] & UHMM_RE_DPFN_MASK, (e[0] & UHMM_RE_DPFN_MASK) + i);
	}
	rq.start = (uintptr_t)p + BLK;
	rq.end = rq.start + BLK - PG;
	ASSERT_OK(uhmm_range_fault(f.ctx, &rq));
	for (size_t i = 0; i < NPG - 1; i++)
		assert_false(e[i] & UHMM_RE_HUGE);
	free(e);
	/* Home as a whole: every frame back, the data right. */
	ASSERT_OK(uhmm_migrate(f.ctx, p, 2 * BLK, NULL, 0));
	m = mem(f.dev);
	assert_int_equal(m.free_pages, m.total_pages);
	assert_int_equal(m.huge_free, m.total_pages / NPG);
	uhmm_test_assert_data(p, 0, 2 * BLK, 7);
	teardown(&f);
}

/* Eviction gives units back whole: on a full device of units, blocks
 * that evict others become units themselves (the evicted units' frames
 * went back as 2 MiB pages, not 512 loose frames), the data right. */
static void eviction_gives_units_back_whole(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	size_t nblk = 12; /* the device holds 8 */
	char *p;
	ASSERT_OK(uhmm_alloc(f.ctx, nblk * BLK, (void **)&p));
	uhmm_test_fill(p, nblk * BLK, 21);
	ASSERT_OK(uhmm_migrate(f.ctx, p, 8 * BLK, f.dev, 0));
	assert_int_equal(mem(f.dev).huge_pages, 8);
	struct uhmm_stats s0 = stats(f.ctx);
	for (size_t b = 8; b < nblk; b++) {
		ASSERT_OK(uhmm_migrate(f.ctx, p + b * BLK, BLK, f.dev, 0));
		assert_int_equal(uhmm_test_pages_on(f.ctx, p + b * BLK, BLK, f.dev), NPG);
	}
	struct uhmm_stats s1 = stats(f.ctx);
	assert_true(s1.evicted_pages - s0.evicted_pages >= 4 * NPG);
	assert_int_equal(s1.dev_huge_units - s0.dev_huge_units, 4);
	struct uhmm_simdev_meminfo m = mem(f.dev);
	assert_int_equal(m.huge_pages, 8);
	assert_int_equal(m.free_pages, 0);
	ASSERT_OK(uhmm_migrate(f.ctx, p, nblk * BLK, NULL, 0));
	uhmm_test_assert_data(p, 0, nblk * BLK, 21);
	m = mem(f.dev);
	assert_int_equal(m.huge_free, m.total_pages / NPG);
	teardown(&f);
}

/* No 2 MiB page free, and enough loose frames: 4 KiB pages, the same
 * data, nothing evicted.  (Two chunks for uhmm: x fills chunk A at 4 KiB,
 * y splits chunk B, one page of x goes home: 512 loose frames.) */
static void no_free_huge_page_falls_back_to_4k(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	char *p, *x, *y;
	ASSERT_OK(uhmm_alloc(f.ctx, BLK, (void **)&p));
	ASSERT_OK(uhmm_alloc(f.ctx, BLK, (void **)&x));
	ASSERT_OK(uhmm_alloc(f.ctx, BLK, (void **)&y));
	uhmm_test_fill(p, BLK, 3);
	uhmm_test_fill(x, BLK, 4);
	uhmm_test_fill(y, PG, 5);
	ASSERT_OK(uhmm_simdev_set_tenant(f.dev, 16 * MiB - 2 * BLK));
	ASSERT_OK(uhmm_migrate(f.ctx, x, PG, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, x + PG, BLK - PG, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, y, PG, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, x, PG, NULL, 0));
	assert_int_equal(mem(f.dev).huge_free, 0);
	assert_int_equal(mem(f.dev).free_pages, NPG);
	struct uhmm_stats s0 = stats(f.ctx);
	ASSERT_OK(uhmm_migrate(f.ctx, p, BLK, f.dev, 0));
	assert_int_equal(stats(f.ctx).evicted_pages, s0.evicted_pages);
	uhmm_test_assert_data(x, 0, BLK, 4);
	uhmm_test_assert_data(y, 0, PG, 5);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, BLK, f.dev), NPG);
	assert_int_equal(mem(f.dev).huge_pages, 0);
	assert_int_equal(stats(f.ctx).dev_huge_units, 0);
	dev_write(f.dev, p, NPG);
	assert_int_equal(dstats(f.dev).pt_huge_entries, 0);
	assert_int_equal(dev_sum(f.dev, p, NPG), tri(NPG));
	teardown(&f);
}

/* A full device whose only victim is a loose page that split the last
 * free chunk: evicting it makes the chunk whole, and the block becomes a
 * unit (it used to take 4 KiB pages after the eviction). */
static void eviction_for_a_block_makes_room_for_a_unit(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	char *p, *q;
	ASSERT_OK(uhmm_alloc(f.ctx, BLK, (void **)&p));
	ASSERT_OK(uhmm_alloc(f.ctx, BLK, (void **)&q));
	uhmm_test_fill(p, BLK, 3);
	uhmm_test_fill(q, PG, 4);
	ASSERT_OK(uhmm_simdev_set_tenant(f.dev, 16 * MiB - BLK));
	ASSERT_OK(uhmm_migrate(f.ctx, q, PG, f.dev, 0));
	assert_int_equal(mem(f.dev).huge_free, 0);
	ASSERT_OK(uhmm_migrate(f.ctx, p, BLK, f.dev, 0));
	uhmm_test_assert_data(q, 0, PG, 4);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, BLK, f.dev), NPG);
	assert_int_equal(mem(f.dev).huge_pages, 1);
	assert_int_equal(stats(f.ctx).dev_huge_units, 1);
	uhmm_test_assert_data(p, 0, BLK, 3);
	teardown(&f);
}

/* One 2 MiB entry maps the block: the device page table holds one entry
 * for it, and the TLBs fill a handful of 2 MiB entries (one per unit and
 * lane at most) for 512 pages, not one per page. */
static void device_maps_the_unit_with_one_2m_entry(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	char *p = mapped_huge(&f);
	struct uhmm_simdev_stats a = dstats(f.dev);
	assert_int_equal(dev_sum(f.dev, p, NPG), tri(NPG));
	struct uhmm_simdev_stats b = dstats(f.dev);
	assert_int_equal(b.faults, a.faults); /* mapped: no fault */
	assert_true(b.tlb_huge_fills - a.tlb_huge_fills <= 64);
	assert_true(b.tlb_misses - a.tlb_misses <= 64);
	assert_true(b.tlb_hits - a.tlb_hits >= NPG - 64);
	assert_int_equal(b.pt_huge_entries, 1);
	/* The CPU sees what the device wrote. */
	for (size_t i = 0; i < NPG; i++)
		assert_int_equal(*(uint64_t *)(p + i * PG), i + 1);
	/* Home: the entry goes (512 pages shot down), the unit is freed. */
	ASSERT_OK(uhmm_migrate(f.ctx, p, BLK, NULL, 0));
	struct uhmm_simdev_stats c = dstats(f.dev);
	assert_int_equal(c.pt_huge_entries, 0);
	assert_int_equal(c.shootdown_pages - b.shootdown_pages, NPG);
	teardown(&f);
}

/* ---- split only when needed --------------------------------------------- */

/* After a partial operation on page k of a mapped unit: the unit and its
 * entry are split, page k is not on the device, the other 511 are, and the
 * device reads every page right (through the split entries: its TLBs were
 * shot down). */
static void assert_split(struct fix *f, char *p, size_t k, uint64_t want_k)
{
	struct uhmm_simdev_meminfo m = mem(f->dev);
	assert_int_equal(m.huge_pages, 0);
	assert_int_equal(m.huge_splits, 1);
	assert_int_equal(stats(f->ctx).dev_huge_splits, 1);
	struct uhmm_simdev_stats s = dstats(f->dev);
	assert_int_equal(s.pt_huge_entries, 0);
	assert_int_equal(s.pt_huge_splits, 1);
	assert_int_equal(uhmm_test_pages_on(f->ctx, p, BLK, f->dev), NPG - 1);
	assert_int_equal(uhmm_test_pages_on(f->ctx, p + k * PG, PG, f->dev), 0);
	assert_int_equal(dev_sum(f->dev, p, NPG), tri(NPG) - (k + 1) + want_k);
	for (size_t i = 0; i < NPG; i++)
		assert_int_equal(*(uint64_t *)(p + i * PG), i == k ? want_k : i + 1);
	/* Every frame comes back when the rest goes home. */
	ASSERT_OK(uhmm_migrate(f->ctx, p, BLK, NULL, 0));
	m = mem(f->dev);
	assert_int_equal(m.free_pages, m.total_pages);
}

static void migrating_one_page_home_splits_the_unit(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	char *p = mapped_huge(&f);
	size_t k = 300;
	ASSERT_OK(uhmm_migrate(f.ctx, p + k * PG, PG, NULL, 0));
	assert_int_equal(*(uint64_t *)(p + k * PG), k + 1);
	*(uint64_t *)(p + k * PG) = 5000;
	assert_split(&f, p, k, 5000);
	teardown(&f);
}

static void cpu_fault_on_one_page_splits_the_unit(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	char *p = mapped_huge(&f);
	size_t k = 17;
	assert_int_equal(*(volatile uint64_t *)(p + k * PG), k + 1);
	assert_split(&f, p, k, k + 1);
	teardown(&f);
}

static void exclusive_access_to_one_page_splits_the_unit(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	char *p = mapped_huge(&f);
	size_t k = 511;
	ASSERT_OK(uhmm_make_exclusive(f.dev, p + k * PG, 1, NULL));
	struct uhmm_page_info pi;
	ASSERT_OK(uhmm_page_query(f.ctx, p + k * PG, &pi));
	assert_int_equal(pi.where, UHMM_WHERE_EXCLUSIVE);
	assert_split(&f, p, k, k + 1);
	teardown(&f);
}

static void madvise_of_one_page_splits_the_unit(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	char *p = mapped_huge(&f);
	size_t k = 0;
	ASSERT_OK(madvise(p + k * PG, PG, MADV_DONTNEED));
	ASSERT_OK(uhmm_sync(f.ctx));
	assert_split(&f, p, k, 0);
	teardown(&f);
}

static void munmap_of_one_page_splits_the_unit(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	char *p = mapped_huge(&f);
	size_t k = 256;
	ASSERT_OK(munmap(p + k * PG, PG));
	ASSERT_OK(uhmm_sync(f.ctx));
	struct uhmm_simdev_meminfo m = mem(f.dev);
	assert_int_equal(m.huge_pages, 0);
	assert_int_equal(m.huge_splits, 1);
	assert_int_equal(m.free_pages, m.total_pages - (NPG - 1));
	struct uhmm_simdev_stats s = dstats(f.dev);
	assert_int_equal(s.pt_huge_entries, 0);
	assert_int_equal(s.pt_huge_splits, 1);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, k * PG, f.dev), k);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p + (k + 1) * PG, BLK - (k + 1) * PG, f.dev),
			 NPG - k - 1);
	/* The two halves, read by the device and by the CPU. */
	assert_int_equal(dev_sum(f.dev, p, k), tri(k));
	assert_int_equal(dev_sum(f.dev, p + (k + 1) * PG, NPG - k - 1),
			 tri(NPG) - tri(k + 1));
	for (size_t i = 0; i < NPG; i++)
		if (i != k)
			assert_int_equal(*(uint64_t *)(p + i * PG), i + 1);
	teardown(&f);
}

/* uhmm_mprotect of one page: the device's entry splits (the page loses
 * its write right there), the unit stays whole on the device. */
static void mprotect_of_one_page_splits_the_entry_only(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	char *p = mapped_huge(&f);
	size_t k = 100;
	ASSERT_OK(uhmm_mprotect(f.ctx, p + k * PG, PG, PROT_READ));
	struct uhmm_simdev_stats s = dstats(f.dev);
	assert_int_equal(s.pt_huge_entries, 0);
	assert_int_equal(s.pt_huge_splits, 1);
	assert_int_equal(mem(f.dev).huge_pages, 1);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, BLK, f.dev), NPG);
	assert_int_equal(dev_sum(f.dev, p, NPG), tri(NPG));
	ASSERT_OK(uhmm_mprotect(f.ctx, p + k * PG, PG, PROT_READ | PROT_WRITE));
	for (size_t i = 0; i < NPG; i++)
		assert_int_equal(*(uint64_t *)(p + i * PG), i + 1);
	teardown(&f);
}

/* A unit moving to another device: the old unit is freed whole, the new
 * device gets a unit of its own. */
static void unit_moves_between_devices(void **state)
{
	(void)state;
	struct fix f;
	setup(&f);
	uhmm_device *d2;
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 16 * MiB;
	ASSERT_OK(uhmm_simdev_create(f.ctx, &o, &d2));
	char *p = on_device(&f, BLK, 9);
	ASSERT_OK(uhmm_migrate(f.ctx, p, BLK, d2, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, BLK, d2), NPG);
	struct uhmm_simdev_meminfo m = mem(f.dev);
	assert_int_equal(m.free_pages, m.total_pages);
	assert_int_equal(mem(d2).huge_pages, 1);
	ASSERT_OK(uhmm_migrate(f.ctx, p, BLK, NULL, 0));
	uhmm_test_assert_data(p, 0, BLK, 9);
	m = mem(d2);
	assert_int_equal(m.free_pages, m.total_pages);
	teardown(&f);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(whole_block_moves_as_one_device_huge_page),
	cmocka_unit_test(no_free_huge_page_falls_back_to_4k),
	cmocka_unit_test(device_maps_the_unit_with_one_2m_entry),
	cmocka_unit_test(migrating_one_page_home_splits_the_unit),
	cmocka_unit_test(cpu_fault_on_one_page_splits_the_unit),
	cmocka_unit_test(exclusive_access_to_one_page_splits_the_unit),
	cmocka_unit_test(madvise_of_one_page_splits_the_unit),
	cmocka_unit_test(munmap_of_one_page_splits_the_unit),
	cmocka_unit_test(mprotect_of_one_page_splits_the_entry_only),
	cmocka_unit_test(unit_moves_between_devices),
	cmocka_unit_test(eviction_gives_units_back_whole),
	cmocka_unit_test(eviction_for_a_block_makes_room_for_a_unit),
};

UHMM_TEST_MAIN(tests)
