/* SPDX-License-Identifier: MIT */
/*
 * Device memory as a cache (issue 14): eviction of least recently used
 * blocks when a device is full, the victim rule (trylock, never the
 * request's own pages, a bounded back-off), kernels whose working set
 * exceeds device memory, and page state created lazily.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "core/internal.h"
#include "testlib.h"

#define MiB (1ul << 20)

struct fix {
	uhmm_ctx *ctx;
	uhmm_device *dev;
};

static void setup(struct fix *f, uint64_t dev_bytes)
{
	ASSERT_OK(uhmm_ctx_create(NULL, &f->ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = dev_bytes;
	ASSERT_OK(uhmm_simdev_create(f->ctx, &o, &f->dev));
}

static void teardown(struct fix *f)
{
	ASSERT_OK(uhmm_ctx_destroy(f->ctx));
}

static struct uhmm_stats stats(struct fix *f)
{
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(f->ctx, &s));
	return s;
}

static char *filled(struct fix *f, size_t len, uint64_t seed)
{
	char *p;
	ASSERT_OK(uhmm_alloc(f->ctx, len, (void **)&p));
	uhmm_test_fill(p, len, seed);
	return p;
}

/* A second buffer migrated to a full device evicts the first (least
 * recently used), and every byte of both is right afterwards. */
static void migrate_to_full_device_evicts_lru(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 8 * MiB);
	char *a = filled(&f, 6 * MiB, 1), *b = filled(&f, 6 * MiB, 2);
	ASSERT_OK(uhmm_migrate(f.ctx, a, 6 * MiB, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, a, 6 * MiB, f.dev), 6 * MiB / 4096);
	ASSERT_OK(uhmm_migrate(f.ctx, b, 6 * MiB, f.dev, 0));
	/* b is all there; a lost at least what b needed beyond the room. */
	assert_int_equal(uhmm_test_pages_on(f.ctx, b, 6 * MiB, f.dev), 6 * MiB / 4096);
	size_t a_left = uhmm_test_pages_on(f.ctx, a, 6 * MiB, f.dev);
	assert_true(a_left <= 2 * MiB / 4096);
	struct uhmm_stats s = stats(&f);
	assert_true(s.evicted_pages >= 4 * MiB / 4096);
	assert_true(s.evicted_blocks >= 2);
	assert_int_equal(s.evicted_bytes, s.evicted_pages * 4096);
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(f.dev, &ds));
	assert_int_equal(ds.evicted_pages, s.evicted_pages);
	assert_true(ds.bytes_in_use <= 8 * MiB);
	assert_true(ds.bytes_in_use >= 6 * MiB);
	uhmm_test_assert_data(a, 0, 6 * MiB, 1);
	uhmm_test_assert_data(b, 0, 6 * MiB, 2);
	teardown(&f);
}

/* The least recently used block goes first: after a, b, c in that order,
 * d evicts a and leaves c. */
static void the_victim_is_the_least_recently_used(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 6 * MiB);
	char *buf[4];
	for (int i = 0; i < 4; i++)
		buf[i] = filled(&f, 2 * MiB, 10 + i);
	for (int i = 0; i < 3; i++)
		ASSERT_OK(uhmm_migrate(f.ctx, buf[i], 2 * MiB, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, buf[3], 2 * MiB, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, buf[0], 2 * MiB, f.dev), 0);
	assert_int_equal(uhmm_test_pages_on(f.ctx, buf[1], 2 * MiB, f.dev), 512);
	assert_int_equal(uhmm_test_pages_on(f.ctx, buf[2], 2 * MiB, f.dev), 512);
	assert_int_equal(uhmm_test_pages_on(f.ctx, buf[3], 2 * MiB, f.dev), 512);
	for (int i = 0; i < 4; i++)
		uhmm_test_assert_data(buf[i], 0, 2 * MiB, 10 + i);
	teardown(&f);
}

/* A request larger than the device never evicts its own pages: what fits
 * moves, the call says -ENOMEM, nothing is lost. */
static void a_request_larger_than_the_device_keeps_its_own(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 8 * MiB);
	char *other = filled(&f, 2 * MiB, 3);
	ASSERT_OK(uhmm_migrate(f.ctx, other, 2 * MiB, f.dev, 0));
	char *p = filled(&f, 32 * MiB, 4);
	uint64_t b0 = stats(&f).evict_backoffs;
	assert_int_equal(uhmm_migrate(f.ctx, p, 32 * MiB, f.dev, 0), -ENOMEM);
	/* At once: every frame uhmm holds is a page of the request's own
	 * blocks (no back-off, which would end -ENOMEM too, 2 s later). */
	assert_int_equal(stats(&f).evict_backoffs, b0);
	/* The other tenant's block was evicted; the request's first 8 MiB
	 * moved and stayed. */
	assert_int_equal(uhmm_test_pages_on(f.ctx, other, 2 * MiB, f.dev), 0);
	assert_int_equal(uhmm_test_pages_on(f.ctx, p, 8 * MiB, f.dev), 8 * MiB / 4096);
	uhmm_test_assert_data(p, 0, 32 * MiB, 4);
	uhmm_test_assert_data(other, 0, 2 * MiB, 3);
	teardown(&f);
}

/* Migrating 4x the device's memory in 2 MiB calls: each call evicts
 * earlier ones; the data is right. */
static void migrations_over_four_times_the_device(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 8 * MiB);
	char *p = filled(&f, 32 * MiB, 5);
	for (size_t off = 0; off < 32 * MiB; off += 2 * MiB)
		ASSERT_OK(uhmm_migrate(f.ctx, p + off, 2 * MiB, f.dev, 0));
	assert_int_equal(uhmm_test_pages_on(f.ctx, p + 24 * MiB, 8 * MiB, f.dev), 8 * MiB / 4096);
	uhmm_test_assert_data(p, 0, 32 * MiB, 5);
	teardown(&f);
}

/* ---- kernels over more than the device ---- */

/* Work item i adds 1 to every 64th word of page i (a word a cache line:
 * every page is touched, and the sanitizer builds stay quick). */
struct inc {
	uint32_t *v;
	size_t per;
	int atomic;
};
#define STRIDE 64

static void k_inc(uhmm_simdev_item *wi, uint64_t item, void *arg)
{
	struct inc *k = arg;
	for (size_t i = item * k->per; i < (item + 1) * k->per; i += STRIDE) {
		if (k->atomic)
			uhmm_simdev_atomic_add32(wi, &k->v[i], 1);
		else
			uhmm_simdev_st32(wi, &k->v[i], uhmm_simdev_ld32(wi, &k->v[i]) + 1);
	}
}

static void run_kernel_over(size_t bytes, int atomic, int policy)
{
	struct fix f;
	setup(&f, 8 * MiB);
	uint32_t *v;
	ASSERT_OK(uhmm_alloc(f.ctx, bytes, (void **)&v));
	size_t n = bytes / 4;
	for (size_t i = 0; i < n; i++)
		v[i] = (uint32_t)i;
	if (atomic)
		ASSERT_OK(uhmm_simdev_advise_atomics(f.dev, v, bytes, policy));
	/* One work item a page: items of a lane walk the pages in order. */
	struct inc k = { .v = v, .per = 1024, .atomic = atomic };
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_inc, n / k.per, &k));
	for (size_t i = 0; i < n; i++)
		if (v[i] != (uint32_t)i + (i % STRIDE == 0))
			fail_msg("v[%zu] = %u, want %zu", i, v[i], i + (i % STRIDE == 0));
	struct uhmm_stats s = stats(&f);
	if (!atomic || policy == UHMM_SIMDEV_ATOMIC_MIGRATE)
		assert_true(s.evicted_pages > 0);
	teardown(&f);
}

/* Migrate on touch over 4x device memory: completes, right data. */
static void kernel_over_four_times_the_device(void **state)
{
	(void)state;
	run_kernel_over(32 * MiB, 0, 0);
}

/* Atomics that migrate, over 4x device memory. */
static void atomic_kernel_over_four_times_the_device(void **state)
{
	(void)state;
	run_kernel_over(32 * MiB, 1, UHMM_SIMDEV_ATOMIC_MIGRATE);
}

/* Atomics by the default policy over 4x device memory (pages the CPU just
 * wrote are taken exclusively, in system memory). */
static void auto_atomic_kernel_over_four_times_the_device(void **state)
{
	(void)state;
	run_kernel_over(32 * MiB, 1, UHMM_SIMDEV_ATOMIC_AUTO);
}

/* ---- the victim rule ---- */

struct mig {
	struct fix *f;
	char *p;
	size_t len;
	int rc;
};

static void *migrate_thread(void *arg)
{
	struct mig *m = arg;
	m->rc = uhmm_migrate(m->f->ctx, m->p, m->len, m->f->dev, 0);
	return NULL;
}

static void lock_all(struct fix *f, char *p, size_t len, bool lock)
{
	struct uhmm_range *r = uhmm__range_get(f->ctx, (uintptr_t)p);
	assert_non_null(r);
	size_t idx = ((uintptr_t)p - r->start) >> PAGE_SHIFT;
	for (size_t i = 0; i < len / 4096; i++) {
		if (lock)
			uhmm__page_lock(range_page(r, idx + i));
		else
			uhmm__page_unlock(f->ctx, range_page(r, idx + i));
	}
	uhmm__range_put(r);
}

/* Every victim busy: the request backs off (holding nothing), and moves
 * as soon as a victim is let go. */
static void busy_victims_make_the_request_wait_not_fail(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 4 * MiB);
	char *a = filled(&f, 4 * MiB, 6), *b = filled(&f, 2 * MiB, 7);
	ASSERT_OK(uhmm_migrate(f.ctx, a, 4 * MiB, f.dev, 0));
	lock_all(&f, a, 4 * MiB, true);
	struct mig m = { .f = &f, .p = b, .len = 2 * MiB, .rc = 1 };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, migrate_thread, &m), 0);
	for (int i = 0; i < 10000 && stats(&f).evict_backoffs < 3; i++)
		uhmm_test_nap();
	assert_true(stats(&f).evict_backoffs >= 3);
	/* b's pages are not held while it waits: a CPU touch of them is
	 * served (a fault on a page the request held would hang here). */
	assert_int_equal(b[4096 * 7], ((char *)b)[4096 * 7]);
	uhmm_test_assert_data(b, 0, 2 * MiB, 7);
	lock_all(&f, a, 4 * MiB, false);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(m.rc, 0);
	assert_int_equal(uhmm_test_pages_on(f.ctx, b, 2 * MiB, f.dev), 512);
	assert_true(stats(&f).evict_busy > 0);
	uhmm_test_assert_data(a, 0, 4 * MiB, 6);
	uhmm_test_assert_data(b, 0, 2 * MiB, 7);
	teardown(&f);
}

/* A request backing off outlives its range: the range is unmapped and a
 * new mapping registered and written at its address meanwhile.  The
 * request must not carry the new mapping's pages off (they were lost:
 * published in the dead range's state). */
static void a_request_backing_off_leaves_a_new_mapping_alone(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 4 * MiB);
	char *a = filled(&f, 4 * MiB, 60);
	ASSERT_OK(uhmm_migrate(f.ctx, a, 4 * MiB, f.dev, 0));
	char *raw = mmap(NULL, 4 * MiB, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(raw != MAP_FAILED);
	char *b = (char *)(((uintptr_t)raw + 2 * MiB - 1) & ~(2 * MiB - 1));
	ASSERT_OK(uhmm_register(f.ctx, b, 2 * MiB));
	uhmm_test_fill(b, 2 * MiB, 61);
	lock_all(&f, a, 4 * MiB, true);
	struct mig m = { .f = &f, .p = b, .len = 2 * MiB, .rc = 1 };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, migrate_thread, &m), 0);
	for (int i = 0; i < 10000 && stats(&f).evict_backoffs < 2; i++)
		uhmm_test_nap();
	assert_true(stats(&f).evict_backoffs >= 2);
	/* The range goes; a new one comes at its address, written. */
	assert_int_equal(munmap(b, 2 * MiB), 0);
	assert_true(mmap(b, 2 * MiB, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == b);
	ASSERT_OK(uhmm_register(f.ctx, b, 2 * MiB));
	uhmm_test_fill(b, 2 * MiB, 62);
	lock_all(&f, a, 4 * MiB, false);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(m.rc, -EFAULT);
	uhmm_test_assert_data(b, 0, 2 * MiB, 62);
	assert_int_equal(uhmm_test_pages_on(f.ctx, b, 2 * MiB, NULL), 512);
	uhmm_test_assert_data(a, 0, 4 * MiB, 60);
	ASSERT_OK(uhmm_unregister(f.ctx, b, 2 * MiB));
	munmap(raw, 4 * MiB);
	teardown(&f);
}

/* Victims held for ever: the back-off is bounded, -ENOMEM, nothing lost. */
static void busy_victims_for_ever_end_in_enomem(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 2 * MiB);
	char *a = filled(&f, 2 * MiB, 8), *b = filled(&f, 2 * MiB, 9);
	ASSERT_OK(uhmm_migrate(f.ctx, a, 2 * MiB, f.dev, 0));
	lock_all(&f, a, 2 * MiB, true);
	uint64_t t0 = uhmm_test_now_ns();
	assert_int_equal(uhmm_migrate(f.ctx, b, 2 * MiB, f.dev, 0), -ENOMEM);
	assert_true(uhmm_test_now_ns() - t0 >= UHMM_SETTLE_NS);
	lock_all(&f, a, 2 * MiB, false);
	assert_int_equal(uhmm_test_pages_on(f.ctx, b, 2 * MiB, NULL), 512);
	uhmm_test_assert_data(a, 0, 2 * MiB, 8);
	uhmm_test_assert_data(b, 0, 2 * MiB, 9);
	teardown(&f);
}

/* Two threads migrating to a device too small for both at once keep
 * evicting each other's blocks and both finish (no livelock, no hang). */
static void two_requests_evicting_each_other_finish(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 4 * MiB);
	char *a = filled(&f, 4 * MiB, 20), *b = filled(&f, 4 * MiB, 21);
	for (int round = 0; round < 8; round++) {
		struct mig ma = { .f = &f, .p = a, .len = 4 * MiB, .rc = 1 };
		struct mig mb = { .f = &f, .p = b, .len = 4 * MiB, .rc = 1 };
		pthread_t ta, tb;
		assert_int_equal(pthread_create(&ta, NULL, migrate_thread, &ma), 0);
		assert_int_equal(pthread_create(&tb, NULL, migrate_thread, &mb), 0);
		pthread_join(ta, NULL);
		pthread_join(tb, NULL);
		/* Each fits alone: when the other's pages are its only
		 * victims and they are in flight, a request waits for them
		 * to land and evicts them (frames_in_flight_...), it does
		 * not fail; never hangs, never loses data. */
		assert_int_equal(ma.rc, 0);
		assert_int_equal(mb.rc, 0);
	}
	uhmm_test_assert_data(a, 0, 4 * MiB, 20);
	uhmm_test_assert_data(b, 0, 4 * MiB, 21);
	teardown(&f);
}

/* A migration in flight toward the device holds its pages and the frames
 * it took for them, before the pages are on the device: another request
 * that finds the device full of such frames waits for them to land (they
 * are victims then), it does not fail -ENOMEM at once, and its walk does
 * not drop the in-flight block from the LRU.  (Found by uhmm-torture on
 * a small device: requests that fit failed at once.)  The flight is
 * imitated: a block that was on the device, its pages held, and every
 * frame of the device taken. */
static void frames_in_flight_make_the_request_wait_not_fail(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 2 * MiB);
	char *x = filled(&f, 2 * MiB, 30), *b = filled(&f, 64 * 1024, 31);
	ASSERT_OK(uhmm_migrate(f.ctx, x, 2 * MiB, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, x, 2 * MiB, NULL, 0)); /* its block stays listed */
	lock_all(&f, x, 2 * MiB, true);
	uint64_t got[512];
	assert_int_equal(uhmm__dev_get_frames(f.dev, 512, got), 512);
	uint64_t b0 = stats(&f).evict_backoffs;
	struct mig m = { .f = &f, .p = b, .len = 64 * 1024, .rc = 1 };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, migrate_thread, &m), 0);
	for (int i = 0; i < 10000 && stats(&f).evict_backoffs < b0 + 2 && m.rc == 1; i++)
		uhmm_test_nap();
	assert_int_equal(m.rc, 1); /* still waiting, not failed */
	assert_true(stats(&f).evict_backoffs >= b0 + 2);
	/* The flight lands: the frames hold x's pages... (here: go back,
	 * which is the same for the waiting request, frames released). */
	uhmm__dev_put_frames(f.ctx, f.dev, got, 512);
	lock_all(&f, x, 2 * MiB, false);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(m.rc, 0);
	assert_int_equal(uhmm_test_pages_on(f.ctx, b, 64 * 1024, f.dev), 16);
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(f.dev, &ds));
	assert_true(ds.lru_blocks >= 2); /* x's block was kept, b's added */
	uhmm_test_assert_data(x, 0, 2 * MiB, 30);
	uhmm_test_assert_data(b, 0, 64 * 1024, 31);
	teardown(&f);
}

/* Frames uhmm holds that no listed block shows (duplicates being made,
 * another batch's frames while it evicts for the rest, frames an event is
 * about to release, its block dropped from the LRU before): a request that
 * fits the device waits for them, bounded, it does not fail -ENOMEM at
 * once.  (torture.short: a fitting prefetch refused after 2 ms, uhmm
 * holding nothing on the device a moment later.)  Imitated: every frame of
 * the device taken, no block listed, no page held. */
static void unlisted_frames_make_the_request_wait_not_fail(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 2 * MiB);
	char *b = filled(&f, 64 * 1024, 33);
	uint64_t got[512];
	assert_int_equal(uhmm__dev_get_frames(f.dev, 512, got), 512);
	uint64_t b0 = stats(&f).evict_backoffs;
	struct mig m = { .f = &f, .p = b, .len = 64 * 1024, .rc = 1 };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, migrate_thread, &m), 0);
	for (int i = 0; i < 10000 && stats(&f).evict_backoffs < b0 + 2 && m.rc == 1; i++)
		uhmm_test_nap();
	assert_int_equal(m.rc, 1); /* still waiting, not failed */
	assert_true(stats(&f).evict_backoffs >= b0 + 2);
	uhmm__dev_put_frames(f.ctx, f.dev, got, 512);
	assert_int_equal(pthread_join(t, NULL), 0);
	/* (This wait alone is bounded at ELSEWHERE_NS: a test thread
	 * preempted that long before the release sees -ENOMEM; the frames
	 * are free now.) */
	if (m.rc == -ENOMEM)
		m.rc = uhmm_migrate(f.ctx, b, 64 * 1024, f.dev, 0);
	assert_int_equal(m.rc, 0);
	assert_int_equal(uhmm_test_pages_on(f.ctx, b, 64 * 1024, f.dev), 16);
	uhmm_test_assert_data(b, 0, 64 * 1024, 33);
	teardown(&f);
}

/* ---- what a backend asks for ---- */

static void backend_evicts_bytes_lru_first(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 16 * MiB);
	char *buf[3];
	for (int i = 0; i < 3; i++) {
		buf[i] = filled(&f, 2 * MiB, 30 + i);
		ASSERT_OK(uhmm_migrate(f.ctx, buf[i], 2 * MiB, f.dev, 0));
	}
	long got = uhmm_device_evict(f.dev, 3 * MiB);
	/* Whole blocks: the two least recently used. */
	assert_int_equal(got, 4 * MiB);
	assert_int_equal(uhmm_test_pages_on(f.ctx, buf[0], 2 * MiB, NULL), 512);
	assert_int_equal(uhmm_test_pages_on(f.ctx, buf[1], 2 * MiB, NULL), 512);
	assert_int_equal(uhmm_test_pages_on(f.ctx, buf[2], 2 * MiB, f.dev), 512);
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(f.dev, &ds));
	assert_int_equal(ds.bytes_in_use, 2 * MiB);
	assert_int_equal(ds.evicted_bytes, 4 * MiB);
	assert_int_equal(uhmm_device_evict(NULL, 1), -EBADF);
	for (int i = 0; i < 3; i++)
		uhmm_test_assert_data(buf[i], 0, 2 * MiB, 30 + i);
	teardown(&f);
}

static void backend_evicts_a_frame_range(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 16 * MiB);
	char *p = filled(&f, 4 * MiB, 40);
	ASSERT_OK(uhmm_migrate(f.ctx, p, 4 * MiB, f.dev, 0));
	const uint64_t lo = 256, hi = 768;
	assert_int_equal(uhmm_device_evict_frames(f.dev, lo, 0), -EINVAL);
	ASSERT_OK(uhmm_device_evict_frames(f.dev, lo, hi - lo));
	size_t home = 0;
	for (size_t off = 0; off < 4 * MiB; off += 4096) {
		struct uhmm_page_info in;
		ASSERT_OK(uhmm_page_query(f.ctx, p + off, &in));
		if (in.where == UHMM_WHERE_DEVICE)
			assert_true(in.dpfn < lo || in.dpfn >= hi);
		else
			home++;
	}
	assert_int_equal(home, hi - lo);
	uhmm_test_assert_data(p, 0, 4 * MiB, 40);
	teardown(&f);
}

/* Another tenant takes half the device while our pages fill it: they are
 * evicted, nothing is lost; given back, the room is ours again. */
static void simdev_tenant_takes_memory_from_resident_pages(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 8 * MiB);
	char *p = filled(&f, 8 * MiB, 50);
	ASSERT_OK(uhmm_migrate(f.ctx, p, 8 * MiB, f.dev, 0));
	assert_int_equal(uhmm_simdev_set_tenant(f.dev, 3 * MiB), -EINVAL);
	assert_int_equal(uhmm_simdev_set_tenant(f.dev, 10 * MiB), -EINVAL);
	ASSERT_OK(uhmm_simdev_set_tenant(f.dev, 4 * MiB));
	assert_true(uhmm_test_pages_on(f.ctx, p, 8 * MiB, f.dev) <= 4 * MiB / 4096);
	struct uhmm_simdev_meminfo mi;
	ASSERT_OK(uhmm_simdev_meminfo(f.dev, &mi));
	assert_true(mi.free_pages <= 4 * MiB / 4096);
	uhmm_test_assert_data(p, 0, 8 * MiB, 50);
	/* Now only 4 MiB: migrating 8 MiB moves what fits. */
	assert_int_equal(uhmm_migrate(f.ctx, p, 8 * MiB, f.dev, 0), -ENOMEM);
	ASSERT_OK(uhmm_simdev_set_tenant(f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, p, 8 * MiB, f.dev, 0));
	uhmm_test_assert_data(p, 0, 8 * MiB, 50);
	teardown(&f);
}

struct tenant_loop {
	uhmm_device *dev;
	atomic_bool stop;
	atomic_int rounds;
	int err;
};

static void *tenant_thread(void *arg)
{
	struct tenant_loop *t = arg;
	do {
		int e = uhmm_simdev_set_tenant(t->dev, (t->rounds & 1) ? 0 : 12 * MiB);
		if (e && e != -EBUSY)
			t->err = e;
		atomic_fetch_add(&t->rounds, 1);
	} while (!atomic_load(&t->stop));
	uhmm_simdev_set_tenant(t->dev, 0);
	return NULL;
}

/* The device shrinks and grows while kernels run over it: every kernel
 * completes with right data. */
static void simdev_tenant_while_kernels_run(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 16 * MiB);
	uint32_t *v;
	size_t bytes = 8 * MiB, n = bytes / 4;
	ASSERT_OK(uhmm_alloc(f.ctx, bytes, (void **)&v));
	for (size_t i = 0; i < n; i++)
		v[i] = (uint32_t)i;
	struct tenant_loop t = { .dev = f.dev };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, tenant_thread, &t), 0);
	struct inc k = { .v = v, .per = 1024 };
	/* Kernels until the tenant has come and gone twice meanwhile. */
	unsigned launches = 0;
	while (launches < 6 || (atomic_load(&t.rounds) < 4 && launches < 400)) {
		ASSERT_OK(uhmm_simdev_launch(f.dev, k_inc, n / k.per, &k));
		launches++;
	}
	atomic_store(&t.stop, true);
	pthread_join(th, NULL);
	assert_int_equal(t.err, 0);
	assert_true(atomic_load(&t.rounds) >= 4);
	for (size_t i = 0; i < n; i++)
		if (v[i] != (uint32_t)i + (i % STRIDE == 0) * launches)
			fail_msg("v[%zu] = %u, want %zu", i, v[i], i + (i % STRIDE == 0) * launches);
	teardown(&f);
}

/* ---- lazy page state ---- */

static long rss_kib(void)
{
	FILE *fp = fopen("/proc/self/statm", "r");
	long size = 0, res = 0;
	assert_non_null(fp);
	assert_int_equal(fscanf(fp, "%ld %ld", &size, &res), 2);
	fclose(fp);
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* A 1 TiB allocation costs its directory; touching a page creates one
 * block; a migration home over all of it reads only the directory. */
static void a_terabyte_alloc_costs_its_directory_only(void **state)
{
	(void)state;
	struct fix f;
	setup(&f, 8 * MiB);
	size_t len = 1ul << 40;
	char *p;
	int e = uhmm_alloc(f.ctx, len, (void **)&p);
	if (e == -ENOMEM)
		TEST_SKIP("no 1 TiB of address space here");
	ASSERT_OK(e);
	struct uhmm_stats s = stats(&f);
	assert_int_equal(s.metadata_bytes, 0);
	assert_int_equal(s.metadata_dir_bytes, (len / (2 * MiB)) * sizeof(struct uhmm_pdir));
	/* Touch 1 MiB at the start and 1 MiB far away. */
	memset(p, 1, MiB);
	memset(p + len / 2, 2, MiB);
	s = stats(&f);
	assert_int_equal(s.metadata_bytes, 2 * sizeof(struct uhmm_pblk));
	ASSERT_OK(uhmm_migrate(f.ctx, p + len / 2, MiB, f.dev, 0));
	long before = rss_kib();
	ASSERT_OK(uhmm_migrate(f.ctx, p, len, NULL, 0));
	struct uhmm_page_info info;
	ASSERT_OK(uhmm_page_query(f.ctx, p + len - 4096, &info));
	assert_int_equal(info.where, UHMM_WHERE_CPU);
	/* The walk created nothing and touched little more than the
	 * directory (8 MiB; sanitizers' shadow of it too) and the data
	 * coming home, where a walk of every page's state touched 4 GiB. */
	assert_int_equal(stats(&f).metadata_bytes, 2 * sizeof(struct uhmm_pblk));
	assert_true(rss_kib() - before < 256 * 1024);
	assert_int_equal(p[len / 2], 2);
	assert_int_equal(p[0], 1);
	ASSERT_OK(uhmm_free(f.ctx, p));
	s = stats(&f);
	assert_int_equal(s.metadata_bytes, 0);
	assert_int_equal(s.metadata_dir_bytes, 0);
	teardown(&f);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(migrate_to_full_device_evicts_lru),
	cmocka_unit_test(the_victim_is_the_least_recently_used),
	cmocka_unit_test(a_request_larger_than_the_device_keeps_its_own),
	cmocka_unit_test(migrations_over_four_times_the_device),
	cmocka_unit_test(kernel_over_four_times_the_device),
	cmocka_unit_test(atomic_kernel_over_four_times_the_device),
	cmocka_unit_test(auto_atomic_kernel_over_four_times_the_device),
	cmocka_unit_test(busy_victims_make_the_request_wait_not_fail),
	cmocka_unit_test(busy_victims_for_ever_end_in_enomem),
	cmocka_unit_test(a_request_backing_off_leaves_a_new_mapping_alone),
	cmocka_unit_test(two_requests_evicting_each_other_finish),
	cmocka_unit_test(frames_in_flight_make_the_request_wait_not_fail),
	cmocka_unit_test(unlisted_frames_make_the_request_wait_not_fail),
	cmocka_unit_test(backend_evicts_bytes_lru_first),
	cmocka_unit_test(backend_evicts_a_frame_range),
	cmocka_unit_test(simdev_tenant_takes_memory_from_resident_pages),
	cmocka_unit_test(simdev_tenant_while_kernels_run),
	cmocka_unit_test(a_terabyte_alloc_costs_its_directory_only),
};

UHMM_TEST_MAIN(tests)
