/* SPDX-License-Identifier: MIT */
/*
 * Fault injection (docs/FAULT_INJECTION.md): simdev's operations fail
 * (device allocation, a copy in the middle of a batch, a whole batch refused
 * at submission, a device page-table update) and every failure must leave
 * the data intact and the state consistent: a migration is rolled back or
 * completed, never half done; no device page leaks; the API returns the
 * documented error.
 *
 * After each failure a test checks, in this order:
 *   - every page is where uhmm says it is, and only in places that make
 *     sense for the operation (uhmm_page_query);
 *   - with injection disarmed, everything is migrated home and each byte is
 *     compared with a copy kept in unmanaged memory;
 *   - the device's free page count is back to its total (no leak).
 *
 * Tests that use only uhmm_simdev_inject(FAIL_ALLOC / FAIL_COPY, count
 * mode) run in every build.  The others need -DUHMM_FAULT_INJECT=ON and
 * skip without it (uhmm_simdev_inject_set answers -EOPNOTSUPP).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uhmm/device.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "testlib.h"

#define MiB (1ul << 20)
#define PG 4096ul

struct fixture {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *p;          /* managed buffer */
	char *shadow;     /* what it must hold (unmanaged) */
	size_t len;
};

static void setup(struct fixture *f, uint64_t mem, size_t len, uint64_t seed)
{
	ASSERT_OK(uhmm_ctx_create(NULL, &f->ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = mem;
	ASSERT_OK(uhmm_simdev_create(f->ctx, &o, &f->dev));
	f->len = len;
	ASSERT_OK(uhmm_alloc(f->ctx, len, (void **)&f->p));
	f->shadow = malloc(len);
	assert_non_null(f->shadow);
	uhmm_test_fill(f->p, len, seed);
	memcpy(f->shadow, f->p, len);
}

static void teardown(struct fixture *f)
{
	free(f->shadow);
	ASSERT_OK(uhmm_ctx_destroy(f->ctx));
}

static struct uhmm_simdev_stats dstats(uhmm_device *dev)
{
	struct uhmm_simdev_stats s;
	ASSERT_OK(uhmm_simdev_stats(dev, &s));
	return s;
}

static struct uhmm_simdev_meminfo meminfo(uhmm_device *dev)
{
	struct uhmm_simdev_meminfo mi;
	ASSERT_OK(uhmm_simdev_meminfo(dev, &mi));
	return mi;
}

static void disarm(uhmm_device *dev)
{
	ASSERT_OK(uhmm_simdev_inject(dev, UHMM_SIMDEV_FAIL_ALLOC, 0, 0));
	ASSERT_OK(uhmm_simdev_inject(dev, UHMM_SIMDEV_FAIL_COPY, 0, 0));
	for (int w = UHMM_SIMDEV_FAIL_PT; w <= UHMM_SIMDEV_FAIL_ALLOC_2M; w++) {
		int rc = uhmm_simdev_inject(dev, (enum uhmm_simdev_fault)w, 0, 0);
		assert_true(rc == 0 || rc == -EOPNOTSUPP);
	}
}

/* Arms @what with @spec, or skips the test in a build without the option. */
static void arm(uhmm_device *dev, enum uhmm_simdev_fault what,
		struct uhmm_simdev_fault_spec spec)
{
	int rc = uhmm_simdev_inject_set(dev, what, &spec);
	if (rc == -EOPNOTSUPP)
		TEST_SKIP("built without -DUHMM_FAULT_INJECT=ON");
	ASSERT_OK(rc);
}

/* Skips the test (before it allocates anything) in a build without the
 * option. */
static void need_fi(void)
{
	uhmm_ctx *ctx;
	uhmm_device *dev;
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 2 * MiB;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &dev));
	struct uhmm_simdev_fault_spec off = { 0 };
	int rc = uhmm_simdev_inject_set(dev, UHMM_SIMDEV_FAIL_PT, &off);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	if (rc == -EOPNOTSUPP)
		TEST_SKIP("built without -DUHMM_FAULT_INJECT=ON");
	ASSERT_OK(rc);
}

/* Counts the pages of [p, p + len) by place; fails on anything else. */
struct where {
	size_t cpu, dev, excl;
};

static struct where where_are(struct fixture *f, const char *p, size_t len)
{
	struct where w = { 0 };
	for (size_t off = 0; off < len; off += PG) {
		struct uhmm_page_info pi;
		ASSERT_OK(uhmm_page_query(f->ctx, p + off, &pi));
		switch (pi.where) {
		case UHMM_WHERE_CPU:
			w.cpu++;
			break;
		case UHMM_WHERE_DEVICE:
			assert_ptr_equal(pi.device, f->dev);
			w.dev++;
			break;
		case UHMM_WHERE_EXCLUSIVE:
			assert_ptr_equal(pi.device, f->dev);
			w.excl++;
			break;
		default:
			fail_msg("page %p: where = %u", (const void *)(p + off), pi.where);
		}
	}
	return w;
}

static bool on_cpu(struct fixture *f, const void *p)
{
	struct uhmm_page_info pi;
	ASSERT_OK(uhmm_page_query(f->ctx, p, &pi));
	return pi.where == UHMM_WHERE_CPU;
}

/* Compares the pages uhmm reports in system memory with the shadow without
 * faulting anything back from the device. */
static void check_cpu_pages(struct fixture *f)
{
	for (size_t off = 0; off < f->len; off += PG)
		if (on_cpu(f, f->p + off) && memcmp(f->p + off, f->shadow + off, PG))
			fail_msg("page at offset %#zx (in system memory) differs", off);
}

/* Disarms, brings everything home, compares every byte, checks no device
 * page is left allocated. */
static void check_all_home(struct fixture *f)
{
	disarm(f->dev);
	ASSERT_OK(uhmm_migrate(f->ctx, f->p, f->len, NULL, 0));
	struct where w = where_are(f, f->p, f->len);
	assert_int_equal(w.cpu, f->len / PG);
	for (size_t off = 0; off < f->len; off += PG)
		if (memcmp(f->p + off, f->shadow + off, PG))
			fail_msg("page at offset %#zx differs", off);
	struct uhmm_simdev_meminfo mi = meminfo(f->dev);
	assert_int_equal(mi.free_pages, mi.total_pages);
}

/*
 * Makes the next migration of the buffer to the device many copies: the
 * buffer goes to the device, then every other page comes home, so that the
 * pages a migration moves are never adjacent (adjacent pages in adjacent
 * frames would be one copy).  A block is then 256 one-page copies in one
 * batch, and a failure lands in the middle of it.
 */
static void scatter(struct fixture *f)
{
	ASSERT_OK(uhmm_migrate(f->ctx, f->p, f->len, f->dev, 0));
	for (size_t off = 0; off < f->len; off += 2 * PG)
		ASSERT_OK(uhmm_migrate(f->ctx, f->p + off, PG, NULL, 0));
	struct where w = where_are(f, f->p, f->len);
	assert_int_equal(w.cpu, f->len / PG / 2);
}

/* ---- copy engine: a failure in the middle of a batch --------------------- */

static void copy_failure_mid_batch_restores_its_pages(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 1);
	scatter(&f);
	/* Copy 101 of the batch's 256 fails.  Which page that is depends on
	 * the order the engine's threads run the copies in (the submitter and
	 * a waiter may take parts of a batch): one of the moving pages. */
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_COPY, 100, 1));
	assert_int_equal(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0), -EIO);
	assert_int_equal(dstats(f.dev).injected_copy, 1);
	/* The page of the failed copy is back in system memory, every other
	 * page of the batch completed its move. */
	struct where w = where_are(&f, f.p, f.len);
	assert_int_equal(w.excl, 0);
	assert_int_equal(w.cpu, 1);
	assert_int_equal(w.dev, f.len / PG - 1);
	size_t back = f.len / PG;
	for (size_t i = 0; i < f.len / PG; i++)
		if (on_cpu(&f, f.p + i * PG))
			back = i;
	assert_true(back < f.len / PG && back % 2 == 0); /* a page that moved */
	check_cpu_pages(&f);
	/* The device holds only the pages that are on it. */
	struct uhmm_simdev_meminfo mi = meminfo(f.dev);
	assert_int_equal(mi.total_pages - mi.free_pages, w.dev);
	check_all_home(&f);
	teardown(&f);
}

static void copy_failure_of_every_copy_moves_nothing(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 4 * MiB, 2);
	scatter(&f);
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_COPY, 0, 1u << 20));
	assert_int_equal(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0), -EIO);
	/* The first batch failed (every copy): the call stopped there, the
	 * pages that were on the device stayed there. */
	struct where w = where_are(&f, f.p, f.len);
	assert_int_equal(w.cpu, f.len / PG / 2);
	for (size_t off = 0; off < f.len; off += 2 * PG)
		assert_true(on_cpu(&f, f.p + off));
	check_cpu_pages(&f);
	struct uhmm_simdev_meminfo mi = meminfo(f.dev);
	assert_int_equal(mi.total_pages - mi.free_pages, w.dev);
	check_all_home(&f);
	teardown(&f);
}

static void copy_failure_in_second_batch_keeps_first(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 4 * MiB, 3);
	/* Batch 1 is one copy (fresh device: contiguous frames); batch 2's
	 * only copy fails. */
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_COPY, 1, 1));
	assert_int_equal(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0), -EIO);
	assert_int_equal(where_are(&f, f.p, 2 * MiB).dev, 2 * MiB / PG);
	assert_int_equal(where_are(&f, f.p + 2 * MiB, 2 * MiB).cpu, 2 * MiB / PG);
	check_cpu_pages(&f);
	check_all_home(&f);
	teardown(&f);
}

static void copy_failure_migrating_home_is_retried(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 4);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	/* The fetch is one copy (contiguous frames): it fails twice, the
	 * third attempt succeeds. */
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_COPY, 0, 2));
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, NULL, 0));
	assert_int_equal(where_are(&f, f.p, f.len).cpu, f.len / PG);
	assert_int_equal(dstats(f.dev).injected_copy, 2);
	check_all_home(&f);
	teardown(&f);
}

static void copy_failure_migrating_home_keeps_device_copy(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 5);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	/* Every attempt fails: the pages stay on the device, with their data. */
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_COPY, 0, 1u << 20));
	assert_int_equal(uhmm_migrate(f.ctx, f.p, f.len, NULL, 0), -EIO);
	struct where w = where_are(&f, f.p, f.len);
	assert_int_equal(w.dev, f.len / PG);
	assert_int_equal(dstats(f.dev).injected_copy, 3); /* one copy, 3 tries */
	check_all_home(&f);
	teardown(&f);
}

static void copy_failure_on_cpu_fault_is_retried(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 6);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_COPY, 0, 2));
	/* A read and a write fault, served despite two failed fetches. */
	assert_memory_equal(f.p + 100 * PG, f.shadow + 100 * PG, PG);
	f.p[300 * PG + 5] = 'x';
	f.shadow[300 * PG + 5] = 'x';
	assert_true(on_cpu(&f, f.p + 100 * PG));
	assert_true(on_cpu(&f, f.p + 300 * PG));
	assert_int_equal(dstats(f.dev).injected_copy, 2);
	struct where w = where_are(&f, f.p, f.len);
	assert_int_equal(w.cpu + w.dev, f.len / PG);
	check_cpu_pages(&f);
	check_all_home(&f);
	teardown(&f);
}

static sigjmp_buf bus_env;
static volatile sig_atomic_t bus_seen;

static void on_sigbus(int sig)
{
	(void)sig;
	bus_seen = 1;
	siglongjmp(bus_env, 1);
}

/*
 * Three failed fetches on a CPU fault: the page is poisoned (the thread gets
 * SIGBUS, as with a real device's uncorrectable error) and its device copy
 * is kept.  Its data can no longer reach the CPU (the poison marker stays in
 * the CPU page table), so a later migration home must say so.
 * (The install over the poison marker fails with EEXIST; install_pages
 * reports it and uhmm_migrate turns it into -EIO.  Before that was fixed
 * the call returned 0 with the page left on the device.)
 */
static void copy_failure_on_cpu_fault_exhausted_poisons_and_keeps_copy(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 22);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_NODEFER;
	assert_int_equal(sigaction(SIGBUS, &sa, &old), 0);
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_COPY, 0, 3));
	volatile char *q = f.p + 33 * PG;
	bus_seen = 0;
	if (!sigsetjmp(bus_env, 1))
		(void)*q;
	assert_int_equal(sigaction(SIGBUS, &old, NULL), 0);
	if (!bus_seen) {
		teardown(&f);
		TEST_SKIP("no UFFDIO_POISON on this kernel: the read was retried");
	}
	assert_int_equal(dstats(f.dev).injected_copy, 3);
	struct uhmm_page_info pi;
	ASSERT_OK(uhmm_page_query(f.ctx, f.p + 33 * PG, &pi));
	assert_int_equal(pi.where, UHMM_WHERE_DEVICE);
	/* The fault-around neighbours were in the same failed copy: they
	 * stayed on the device too (not poisoned: nobody asked for them). */
	struct where w = where_are(&f, f.p, f.len);
	assert_int_equal(w.dev, f.len / PG);
	/* The device works again, but the poisoned page cannot come home:
	 * the call must fail, the page stays on the device with its copy. */
	disarm(f.dev);
	int rc = uhmm_migrate(f.ctx, f.p, f.len, NULL, 0);
	w = where_are(&f, f.p, f.len);
	if (uhmm_test_no_move()) {
		/* UFFDIO_COPY (the no-move path home) may fill over the
		 * poison marker (the kernel lets a fill replace a marker):
		 * the page comes home with its data. */
		assert_int_equal(rc, 0);
		assert_int_equal(w.cpu, f.len / PG);
		check_cpu_pages(&f);
		free(f.shadow);
		ASSERT_OK(uhmm_ctx_destroy(f.ctx));
		return;
	}
	assert_int_equal(w.dev, 1);
	assert_int_equal(w.cpu, f.len / PG - 1);
	check_cpu_pages(&f);
	/* uhmm_ctx_destroy says -EIO for a page it could not bring home. */
	free(f.shadow);
	int drc = uhmm_ctx_destroy(f.ctx);
	assert_int_equal(rc, -EIO);
	assert_int_equal(drc, -EIO);
}

/* ---- device allocation --------------------------------------------------- */

static void alloc_failure_stops_migration_before_anything_moves(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 8 * MiB, 7);
	/* Batches 1 and 2 allocate, batch 3's allocation fails. */
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_ALLOC, 2, 1));
	assert_int_equal(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0), -ENOMEM);
	assert_int_equal(where_are(&f, f.p, 4 * MiB).dev, 4 * MiB / PG);
	assert_int_equal(where_are(&f, f.p + 4 * MiB, 4 * MiB).cpu, 4 * MiB / PG);
	struct uhmm_simdev_meminfo mi = meminfo(f.dev);
	assert_int_equal(mi.total_pages - mi.free_pages, 4 * MiB / PG);
	assert_int_equal(dstats(f.dev).injected_alloc, 1);
	check_cpu_pages(&f);
	/* The rest migrates once the device allocates again. */
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	assert_int_equal(where_are(&f, f.p, f.len).dev, f.len / PG);
	check_all_home(&f);
	teardown(&f);
}

/* Device to device: the source's or the destination's copy fails. */
static void device_to_device_copy_failure_keeps_old_device(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 8);
	uhmm_device *dev2;
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 64 * MiB;
	ASSERT_OK(uhmm_simdev_create(f.ctx, &o, &dev2));
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));

	for (int side = 0; side < 2; side++) {
		/* side 0: the old device's 4th one-page copy to the bounce
		 * buffer fails (that page stays, the others move); side 1: the
		 * new device's copy from the bounce buffer (one copy: the
		 * frames are contiguous) fails, every page stays. */
		uhmm_device *bad = side ? dev2 : f.dev;
		ASSERT_OK(uhmm_simdev_inject(bad, UHMM_SIMDEV_FAIL_COPY, side ? 0 : 3, 1));
		assert_int_equal(uhmm_migrate(f.ctx, f.p, f.len, dev2, 0), -EIO);
		size_t on1 = 0, on2 = 0;
		for (size_t off = 0; off < f.len; off += PG) {
			struct uhmm_page_info pi;
			ASSERT_OK(uhmm_page_query(f.ctx, f.p + off, &pi));
			assert_int_equal(pi.where, UHMM_WHERE_DEVICE);
			on1 += pi.device == f.dev;
			on2 += pi.device == dev2;
		}
		assert_int_equal(on1 + on2, f.len / PG);
		if (side == 0)
			assert_int_equal(on1, 1);
		else
			assert_int_equal(on2, 0);
		struct uhmm_simdev_meminfo m1 = meminfo(f.dev), m2 = meminfo(dev2);
		assert_int_equal(m1.total_pages - m1.free_pages, on1);
		assert_int_equal(m2.total_pages - m2.free_pages, on2);
		/* Back to the first device for the next round. */
		ASSERT_OK(uhmm_simdev_inject(bad, UHMM_SIMDEV_FAIL_COPY, 0, 0));
		ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	}
	check_all_home(&f);
	struct uhmm_simdev_meminfo m2 = meminfo(dev2);
	assert_int_equal(m2.free_pages, m2.total_pages);
	teardown(&f);
}

/* ---- device faults (kernels) --------------------------------------------- */

/* Kernels' arguments: work item i writes val + i (idempotent). */
struct store {
	uint64_t *buf;
	uint64_t val;
	uint64_t *shadow; /* k_verify: expected words */
	_Atomic uint64_t bad;
};

static void k_xchg(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct store *s = arg;
	(void)uhmm_simdev_atomic_xchg64(wi, &s->buf[idx], s->val + idx);
}

/* Counts the words the device sees differ from the shadow. */
static void k_verify(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct store *s = arg;
	if (uhmm_simdev_ld64(wi, &s->buf[idx]) != s->shadow[idx])
		atomic_fetch_add_explicit(&s->bad, 1, memory_order_relaxed);
}

/* One word a page over [off, off + len) of the buffer. */
static struct store page_words(struct fixture *f, size_t off, uint64_t val)
{
	return (struct store){ .buf = (uint64_t *)(f->p + off), .val = val };
}

static void k_store_pages(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct store *s = arg;
	uhmm_simdev_st64(wi, &s->buf[idx * (PG / 8)], s->val + idx);
}

static void shadow_store_pages(struct fixture *f, size_t off, size_t npages,
			       uint64_t val)
{
	for (size_t i = 0; i < npages; i++) {
		uint64_t v = val + i;
		memcpy(f->shadow + off + i * PG, &v, 8);
	}
}

static void kernel_copy_failure_falls_back_to_remote_mapping(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 4 * MiB, 9);
	/* Every copy fails: the fault's migration is rolled back (-EIO) and
	 * the device maps the system pages instead. */
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_COPY, 0, 1u << 20));
	struct store s = page_words(&f, 0, 1000);
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_store_pages, f.len / PG, &s));
	shadow_store_pages(&f, 0, f.len / PG, 1000);
	assert_true(dstats(f.dev).injected_copy >= 1);
	assert_true(dstats(f.dev).remote_maps >= 1);
	assert_int_equal(where_are(&f, f.p, f.len).cpu, f.len / PG);
	check_cpu_pages(&f);
	check_all_home(&f);
	teardown(&f);
}

static void kernel_copy_failure_mid_batch_then_completes(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 10);
	scatter(&f);
	/* One copy of the fault's migration fails: the migration is rolled
	 * back for that page (and the fault maps the block remotely), and
	 * the kernel still completes. */
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_COPY, 17, 1));
	struct store s = page_words(&f, 0, 77);
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_store_pages, f.len / PG, &s));
	shadow_store_pages(&f, 0, f.len / PG, 77);
	assert_int_equal(dstats(f.dev).injected_copy, 1);
	struct where w = where_are(&f, f.p, f.len);
	assert_int_equal(w.cpu + w.dev, f.len / PG);
	check_cpu_pages(&f);
	check_all_home(&f);
	teardown(&f);
}

static void kernel_alloc_failure_falls_back_to_remote_mapping(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 4 * MiB, 11);
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_ALLOC, 0, 1u << 20));
	struct store s = page_words(&f, 0, 5);
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_store_pages, f.len / PG, &s));
	shadow_store_pages(&f, 0, f.len / PG, 5);
	assert_true(dstats(f.dev).injected_alloc >= 1);
	assert_int_equal(where_are(&f, f.p, f.len).cpu, f.len / PG);
	check_cpu_pages(&f);
	struct uhmm_simdev_meminfo mi = meminfo(f.dev);
	assert_int_equal(mi.free_pages, mi.total_pages);
	check_all_home(&f);
	teardown(&f);
}

/* Atomic faults with ATOMIC_MIGRATE: the migration fails (allocation or
 * copy), the fault falls back to taking the pages exclusively. */
static void atomic_fault_migration_failure_falls_back_to_exclusive(void **state)
{
	for (int what = UHMM_SIMDEV_FAIL_ALLOC; what <= UHMM_SIMDEV_FAIL_COPY; what++) {
		struct fixture f;
		setup(&f, 64 * MiB, 2 * MiB, 12);
		ASSERT_OK(uhmm_simdev_advise_atomics(f.dev, f.p, f.len,
						     UHMM_SIMDEV_ATOMIC_MIGRATE));
		ASSERT_OK(uhmm_simdev_inject(f.dev, (enum uhmm_simdev_fault)what, 0,
					     1u << 20));
		struct store s = page_words(&f, 0, 3);
		size_t n = 64;
		ASSERT_OK(uhmm_simdev_launch(f.dev, k_xchg, n, &s));
		for (size_t i = 0; i < n; i++) {
			uint64_t v = 3 + i;
			memcpy(f.shadow + i * 8, &v, 8);
		}
		struct uhmm_simdev_stats st = dstats(f.dev);
		assert_true(st.injected_alloc + st.injected_copy >= 1);
		assert_true(st.exclusive_pages >= 1);
		struct where w = where_are(&f, f.p, f.len);
		assert_int_equal(w.dev, 0);
		assert_int_equal(w.excl, 1);
		/* The CPU takes the page back by reading it. */
		assert_memory_equal(f.p, f.shadow, PG);
		assert_int_equal(where_are(&f, f.p, f.len).excl, 0);
		check_all_home(&f);
		teardown(&f);
	}
}

/* ---- injected failures are reported and counted -------------------------- */

static void inject_rejects_bad_points_and_counts_failures(void **state)
{
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 13);
	assert_int_equal(uhmm_simdev_inject(f.dev, (enum uhmm_simdev_fault)0, 0, 1), -EINVAL);
	assert_int_equal(uhmm_simdev_inject(f.dev, (enum uhmm_simdev_fault)99, 0, 1), -EINVAL);
	struct uhmm_simdev_fault_spec bad = { .rate = 1.5 };
	int rc = uhmm_simdev_inject_set(f.dev, UHMM_SIMDEV_FAIL_COPY, &bad);
	assert_true(rc == -EINVAL || rc == -EOPNOTSUPP);
	assert_int_equal(uhmm_simdev_inject_set(NULL, UHMM_SIMDEV_FAIL_COPY, &bad), -EINVAL);
	/* The points behind the build option answer -EOPNOTSUPP without it. */
	rc = uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_PT, 0, 1);
	assert_true(rc == 0 || rc == -EOPNOTSUPP);
	disarm(f.dev);
	struct uhmm_simdev_stats st = dstats(f.dev);
	assert_int_equal(st.injected_alloc + st.injected_copy + st.injected_pt +
				 st.injected_submit, 0);
	/* Exactly count failures, counted. */
	ASSERT_OK(uhmm_simdev_inject(f.dev, UHMM_SIMDEV_FAIL_ALLOC, 0, 2));
	assert_int_equal(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0), -ENOMEM);
	assert_int_equal(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0), -ENOMEM);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	assert_int_equal(dstats(f.dev).injected_alloc, 2);
	check_all_home(&f);
	teardown(&f);
}

/* ---- build option: copy_submit refuses a batch ---------------------------- */

static void submit_failure_restores_whole_batch(void **state)
{
	need_fi();
	struct fixture f;
	setup(&f, 64 * MiB, 4 * MiB, 14);
	/* The second batch is refused at submission: all its copies fail. */
	arm(f.dev, UHMM_SIMDEV_FAIL_SUBMIT,
	    (struct uhmm_simdev_fault_spec){ .after = 1, .count = 1 });
	assert_int_equal(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0), -EIO);
	assert_int_equal(dstats(f.dev).injected_submit, 1);
	assert_int_equal(where_are(&f, f.p, 2 * MiB).dev, 2 * MiB / PG);
	assert_int_equal(where_are(&f, f.p + 2 * MiB, 2 * MiB).cpu, 2 * MiB / PG);
	struct uhmm_simdev_meminfo mi = meminfo(f.dev);
	assert_int_equal(mi.total_pages - mi.free_pages, 2 * MiB / PG);
	check_cpu_pages(&f);
	check_all_home(&f);
	teardown(&f);
}

static void submit_failure_on_cpu_fault_and_home_is_retried(void **state)
{
	need_fi();
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 15);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	arm(f.dev, UHMM_SIMDEV_FAIL_SUBMIT, (struct uhmm_simdev_fault_spec){ .count = 2 });
	assert_memory_equal(f.p + 9 * PG, f.shadow + 9 * PG, PG); /* CPU fault */
	assert_true(on_cpu(&f, f.p + 9 * PG));
	arm(f.dev, UHMM_SIMDEV_FAIL_SUBMIT, (struct uhmm_simdev_fault_spec){ .count = 2 });
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, NULL, 0));
	assert_int_equal(dstats(f.dev).injected_submit, 4);
	check_all_home(&f);
	teardown(&f);
}

/* ---- build option: device page-table updates ------------------------------ */

static void pt_failure_ends_kernel_cleanly(void **state)
{
	need_fi();
	struct fixture f;
	setup(&f, 64 * MiB, 4 * MiB, 16);
	size_t np = f.len / PG;
	/* The second entry installed fails (a block migrated whole is one
	 * 2 MiB device page, mapped by one entry). */
	arm(f.dev, UHMM_SIMDEV_FAIL_PT,
	    (struct uhmm_simdev_fault_spec){ .after = 1, .count = 1 });
	struct store s = page_words(&f, 0, 40);
	assert_int_equal(uhmm_simdev_launch(f.dev, k_store_pages, np, &s), -ENOMEM);
	assert_int_equal(dstats(f.dev).injected_pt, 1);
	assert_true(dstats(f.dev).kernel_errors >= 1);
	/* uhmm's state does not depend on the device's page table: the
	 * fault's migration completed, whatever the kernel managed to store
	 * is there.  Relaunching (idempotent stores) completes the job. */
	struct where w = where_are(&f, f.p, f.len);
	assert_int_equal(w.cpu + w.dev, np);
	assert_true(w.dev >= 1);
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_store_pages, np, &s));
	shadow_store_pages(&f, 0, np, 40);
	struct store v = { .buf = (uint64_t *)f.p, .shadow = (uint64_t *)f.shadow };
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_verify, f.len / 8, &v));
	assert_int_equal(atomic_load(&v.bad), 0);
	check_all_home(&f);
	teardown(&f);
}

static void pt_failure_on_remote_mapping_ends_kernel_cleanly(void **state)
{
	need_fi();
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 17);
	ASSERT_OK(uhmm_simdev_advise(f.dev, f.p, f.len, UHMM_SIMDEV_MAP_REMOTE));
	arm(f.dev, UHMM_SIMDEV_FAIL_PT, (struct uhmm_simdev_fault_spec){ .count = 1u << 20 });
	struct store s = page_words(&f, 0, 41);
	assert_int_equal(uhmm_simdev_launch(f.dev, k_store_pages, f.len / PG, &s), -ENOMEM);
	/* Nothing could be mapped: nothing was stored, nothing moved. */
	assert_int_equal(where_are(&f, f.p, f.len).cpu, f.len / PG);
	check_cpu_pages(&f);
	assert_memory_equal(f.p, f.shadow, f.len);
	disarm(f.dev);
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_store_pages, f.len / PG, &s));
	shadow_store_pages(&f, 0, f.len / PG, 41);
	check_all_home(&f);
	teardown(&f);
}

/* An atomic fault takes a page exclusively, then its EXCL entry cannot be
 * installed: the hold stays uhmm's business (a CPU touch revokes it). */
static void pt_failure_after_exclusive_grab_keeps_page_safe(void **state)
{
	need_fi();
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 18);
	ASSERT_OK(uhmm_simdev_advise_atomics(f.dev, f.p, f.len,
					     UHMM_SIMDEV_ATOMIC_EXCLUSIVE));
	arm(f.dev, UHMM_SIMDEV_FAIL_PT, (struct uhmm_simdev_fault_spec){ .count = 1u << 20 });
	struct store s = page_words(&f, 0, 9);
	assert_int_equal(uhmm_simdev_launch(f.dev, k_xchg, 16, &s), -ENOMEM);
	assert_true(dstats(f.dev).exclusive_pages >= 1);
	struct where w = where_are(&f, f.p, f.len);
	assert_int_equal(w.dev, 0);
	assert_true(w.excl <= 1);
	/* Nothing was exchanged: the CPU reads the old data (and revokes). */
	assert_memory_equal(f.p, f.shadow, PG);
	assert_int_equal(where_are(&f, f.p, f.len).excl, 0);
	disarm(f.dev);
	ASSERT_OK(uhmm_simdev_launch(f.dev, k_xchg, 16, &s));
	for (size_t i = 0; i < 16; i++) {
		uint64_t v = 9 + i;
		memcpy(f.shadow + i * 8, &v, 8);
	}
	check_all_home(&f);
	teardown(&f);
}

/* ---- build option: allocation by order ------------------------------------ */

static void alloc_points_by_order(void **state)
{
	need_fi();
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 19);
	const struct uhmm_device_ops *ops = uhmm_device_ops_of(f.dev);
	void *priv = uhmm_device_priv(f.dev);
	uint64_t d[4], h[2];

	arm(f.dev, UHMM_SIMDEV_FAIL_ALLOC_2M, (struct uhmm_simdev_fault_spec){ .count = 1 });
	assert_int_equal(ops->alloc(priv, 0, 4, d), 4);   /* 4K: not this point */
	assert_int_equal(ops->alloc(priv, UHMM_HUGE_ORDER, 2, h), 0);
	assert_int_equal(ops->alloc(priv, UHMM_HUGE_ORDER, 2, h), 2);
	ops->free(priv, UHMM_HUGE_ORDER, 2, h);
	ops->free(priv, 0, 4, d);

	arm(f.dev, UHMM_SIMDEV_FAIL_ALLOC_4K, (struct uhmm_simdev_fault_spec){ .count = 1 });
	assert_int_equal(ops->alloc(priv, UHMM_HUGE_ORDER, 1, h), 1);
	ops->free(priv, UHMM_HUGE_ORDER, 1, h);
	/* uhmm's migration of a whole block asks for a 2 MiB page first,
	 * then, given none, for 4 KiB pages: it meets both points. */
	arm(f.dev, UHMM_SIMDEV_FAIL_ALLOC_2M, (struct uhmm_simdev_fault_spec){ .count = 1 });
	assert_int_equal(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0), -ENOMEM);
	assert_int_equal(where_are(&f, f.p, f.len).cpu, f.len / PG);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	assert_int_equal(dstats(f.dev).injected_alloc, 3);
	check_all_home(&f);
	teardown(&f);
}

/* ---- build option: rate mode, seeds, the environment ---------------------- */

/* The failure pattern of 256 allocations at @rate with @seed. */
static void alloc_pattern(struct fixture *f, double rate, uint64_t seed,
			  uint8_t *pat, size_t n)
{
	const struct uhmm_device_ops *ops = uhmm_device_ops_of(f->dev);
	void *priv = uhmm_device_priv(f->dev);
	arm(f->dev, UHMM_SIMDEV_FAIL_ALLOC,
	    (struct uhmm_simdev_fault_spec){ .rate = rate, .seed = seed });
	for (size_t i = 0; i < n; i++) {
		uint64_t d;
		long got = ops->alloc(priv, 0, 1, &d);
		assert_true(got == 0 || got == 1);
		pat[i] = got == 0;
		if (got)
			ops->free(priv, 0, 1, &d);
	}
	disarm(f->dev);
}

static void rate_mode_is_reproducible_by_seed(void **state)
{
	need_fi();
	struct fixture f;
	setup(&f, 64 * MiB, 2 * MiB, 20);
	enum { N = 2000 };
	static uint8_t a[N], b[N], c[N];
	alloc_pattern(&f, 0.1, 42, a, N);
	alloc_pattern(&f, 0.1, 42, b, N);
	alloc_pattern(&f, 0.1, 43, c, N);
	assert_memory_equal(a, b, N);
	assert_memory_not_equal(a, c, N);
	size_t fails = 0;
	for (size_t i = 0; i < N; i++)
		fails += a[i];
	assert_true(fails > N / 20 && fails < N / 5); /* about 10 % */
	/* rate 1 fails everything; a budget caps rate mode. */
	alloc_pattern(&f, 1.0, 1, a, 16);
	for (size_t i = 0; i < 16; i++)
		assert_int_equal(a[i], 1);
	arm(f.dev, UHMM_SIMDEV_FAIL_COPY,
	    (struct uhmm_simdev_fault_spec){ .rate = 1.0, .count = 3, .after = 1 });
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, 4 * PG, f.dev, 0));           /* after */
	assert_int_equal(uhmm_migrate(f.ctx, f.p + 4 * PG, 4 * PG, f.dev, 0), -EIO);
	assert_int_equal(uhmm_migrate(f.ctx, f.p + 4 * PG, 4 * PG, f.dev, 0), -EIO);
	assert_int_equal(uhmm_migrate(f.ctx, f.p + 4 * PG, 4 * PG, f.dev, 0), -EIO);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p + 4 * PG, 4 * PG, f.dev, 0));  /* spent */
	assert_int_equal(dstats(f.dev).injected_copy, 3);
	check_all_home(&f);
	teardown(&f);
}

static void environment_variable_arms_points(void **state)
{
	need_fi();
	uhmm_ctx *ctx;
	uhmm_device *dev;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	setenv("UHMM_FAULT_INJECT", "alloc:after=1:count=2,copy:rate=0.5,pt:rate=0.05,seed=7", 1);
	int rc = uhmm_simdev_create(ctx, NULL, &dev);
	unsetenv("UHMM_FAULT_INJECT");
	ASSERT_OK(rc);
	const struct uhmm_device_ops *ops = uhmm_device_ops_of(dev);
	void *priv = uhmm_device_priv(dev);
	uint64_t d[4];
	assert_int_equal(ops->alloc(priv, 0, 1, &d[0]), 1);
	assert_int_equal(ops->alloc(priv, 0, 1, &d[1]), 0);
	assert_int_equal(ops->alloc(priv, 0, 1, &d[1]), 0);
	assert_int_equal(ops->alloc(priv, 0, 1, &d[1]), 1);
	ops->free(priv, 0, 2, d);
	assert_int_equal(dstats(dev).injected_alloc, 2);
	/* copy at 50 %: some of 64 one-page copies fail. */
	static unsigned char buf[64 * 4096];
	struct uhmm_copy c[64];
	for (int i = 0; i < 64; i++)
		c[i] = (struct uhmm_copy){ buf + i * PG, (uint64_t)i, 1, UHMM_COPY_TO_DEVICE, 1 };
	uhmm_fence_t fence;
	ASSERT_OK(ops->copy_submit(priv, c, 64, &fence));
	assert_int_equal(ops->copy_wait(priv, fence), -EIO);
	uint64_t nf = dstats(dev).injected_copy;
	assert_true(nf > 8 && nf < 56);
	ASSERT_OK(uhmm_ctx_destroy(ctx));

	/* Bad syntax: the device is not created. */
	const char *bad[] = { "copy", "copy:rate=2", "nosuch:count=1", "alloc:count=x",
			      "seed=abc", "pt:rate=0.1:bogus=1", "copy:after=3" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
		setenv("UHMM_FAULT_INJECT", bad[i], 1);
		rc = uhmm_simdev_create(ctx, NULL, &dev);
		unsetenv("UHMM_FAULT_INJECT");
		if (rc != -EINVAL)
			fail_msg("UHMM_FAULT_INJECT=%s: create = %d", bad[i], rc);
		ASSERT_OK(uhmm_ctx_destroy(ctx));
	}
}

/*
 * Every point at 5 %: random migrations both ways, CPU touches, kernels
 * storing, exchanging atomically and verifying; after each step the state
 * is checked (every page in system memory holds what it must, the device
 * holds exactly the pages uhmm places on it), at the end every byte.
 *
 * CPU faults run with the copy points paused: a page whose three fetches
 * in a row fail is poisoned by design (SIGBUS, see
 * copy_failure_on_cpu_fault_is_retried for the retries); the other points
 * stay armed.
 */
static uint64_t rnd_state;
static uint64_t rnd(void)
{
	rnd_state = rnd_state * 6364136223846793005ull + 1442695040888963407ull;
	return rnd_state >> 33;
}

static void arm_all(struct fixture *f, double rate, uint64_t seed, bool copies)
{
	for (int w = UHMM_SIMDEV_FAIL_ALLOC; w <= UHMM_SIMDEV_FAIL_ALLOC_4K; w++) {
		bool cp = w == UHMM_SIMDEV_FAIL_COPY || w == UHMM_SIMDEV_FAIL_SUBMIT;
		arm(f->dev, (enum uhmm_simdev_fault)w,
		    (struct uhmm_simdev_fault_spec){ .rate = cp && !copies ? 0 : rate,
						     .seed = seed });
	}
}

static void check_state(struct fixture *f)
{
	/* CPU touches in ascending blocks start a read-ahead, which the
	 * service thread carries on after the touches (readahead_pages):
	 * pages come home meanwhile.  Take the two snapshots again until
	 * nothing moved between them (a read-ahead window is bounded). */
	struct where w, w2;
	struct uhmm_simdev_meminfo mi;
	for (int tries = 0;; tries++) {
		w = where_are(f, f->p, f->len);
		mi = meminfo(f->dev);
		w2 = where_are(f, f->p, f->len);
		if ((w.dev == w2.dev && w.cpu == w2.cpu) || tries == 1000)
			break;
		usleep(1000);
	}
	assert_int_equal(w.cpu + w.dev + w.excl, f->len / PG);
	assert_int_equal(mi.total_pages - mi.free_pages, w.dev);
	check_cpu_pages(f);
}

static int relaunch(struct fixture *f, uhmm_simdev_kernel fn, uint64_t grid,
		    struct store *s)
{
	int rc = 0;
	for (int tries = 0; tries < 400; tries++) {
		rc = uhmm_simdev_launch(f->dev, fn, grid, s);
		if (rc != -ENOMEM)
			return rc;
	}
	return rc;
}

static void random_failures_on_all_points_keep_data(void **state)
{
	need_fi();
	struct fixture f;
	setup(&f, 64 * MiB, 8 * MiB, 21);
	const char *e = getenv("UHMM_FI_SEED");
	uint64_t seed = e ? strtoull(e, NULL, 0) : 7;
	fprintf(stderr, "  seed %llu (UHMM_FI_SEED to change)\n", (unsigned long long)seed);
	rnd_state = seed;
	size_t np = f.len / PG;
	const double rate = 0.05;
	int rounds = 120;
	unsigned long nerr[4] = { 0 };

	for (int round = 0; round < rounds; round++) {
		arm_all(&f, rate, seed * 1000 + (uint64_t)round, true);
		size_t first = rnd() % np, n = 1 + rnd() % 600;
		if (first + n > np)
			n = np - first;
		char *a = f.p + first * PG;
		int op = (int)(rnd() % 6), rc;
		switch (op) {
		case 0: /* to the device */
		case 1:
			rc = uhmm_migrate(f.ctx, a, n * PG, f.dev, 0);
			assert_true(rc == 0 || rc == -EIO || rc == -ENOMEM);
			nerr[0] += rc != 0;
			break;
		case 2: /* home on request */
			rc = uhmm_migrate(f.ctx, a, n * PG, NULL, 0);
			assert_true(rc == 0 || rc == -EIO);
			nerr[1] += rc != 0;
			break;
		case 3: { /* CPU touches: read one word a page, write another */
			arm_all(&f, rate, seed * 1000 + (uint64_t)round, false);
			for (size_t i = 0; i < n; i += 1 + rnd() % 8) {
				size_t off = (first + i) * PG + (rnd() % (PG / 8)) * 8;
				assert_memory_equal(f.p + off, f.shadow + off, 8);
				uint64_t v = rnd();
				memcpy(f.p + off, &v, 8);
				memcpy(f.shadow + off, &v, 8);
			}
			break;
		}
		case 4: { /* a kernel stores one word a page (relaunched) */
			uint64_t val = rnd() << 20;
			struct store s = page_words(&f, first * PG, val);
			rc = relaunch(&f, k_store_pages, n, &s);
			ASSERT_OK(rc);
			shadow_store_pages(&f, first * PG, n, val);
			break;
		}
		default: { /* atomics on a page's first words, then a verify */
			uint64_t val = rnd() << 20;
			size_t words = 1 + rnd() % 64;
			struct store s = page_words(&f, first * PG, val);
			ASSERT_OK(relaunch(&f, k_xchg, words, &s));
			for (size_t i = 0; i < words; i++) {
				uint64_t v = val + i;
				memcpy(f.shadow + first * PG + i * 8, &v, 8);
			}
			struct store v = { .buf = (uint64_t *)(f.p + first * PG),
					   .shadow = (uint64_t *)(f.shadow + first * PG) };
			ASSERT_OK(relaunch(&f, k_verify, n * (PG / 8), &v));
			assert_int_equal(atomic_load(&v.bad), 0);
			break;
		}
		}
		/* Read the state with nothing armed (the check touches only
		 * pages in system memory). */
		disarm(f.dev);
		check_state(&f);
	}
	struct uhmm_simdev_stats st = dstats(f.dev);
	fprintf(stderr, "  injected: alloc %llu copy %llu submit %llu pt %llu; "
		"failed calls: to-device %lu home %lu\n",
		(unsigned long long)st.injected_alloc, (unsigned long long)st.injected_copy,
		(unsigned long long)st.injected_submit, (unsigned long long)st.injected_pt,
		nerr[0], nerr[1]);
	assert_true(st.injected_alloc > 0 && st.injected_copy > 0 && st.injected_pt > 0);
	check_all_home(&f);
	teardown(&f);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(copy_failure_mid_batch_restores_its_pages),
	cmocka_unit_test(copy_failure_of_every_copy_moves_nothing),
	cmocka_unit_test(copy_failure_in_second_batch_keeps_first),
	cmocka_unit_test(copy_failure_migrating_home_is_retried),
	cmocka_unit_test(copy_failure_migrating_home_keeps_device_copy),
	cmocka_unit_test(copy_failure_on_cpu_fault_is_retried),
	cmocka_unit_test(copy_failure_on_cpu_fault_exhausted_poisons_and_keeps_copy),
	cmocka_unit_test(alloc_failure_stops_migration_before_anything_moves),
	cmocka_unit_test(device_to_device_copy_failure_keeps_old_device),
	cmocka_unit_test(kernel_copy_failure_falls_back_to_remote_mapping),
	cmocka_unit_test(kernel_copy_failure_mid_batch_then_completes),
	cmocka_unit_test(kernel_alloc_failure_falls_back_to_remote_mapping),
	cmocka_unit_test(atomic_fault_migration_failure_falls_back_to_exclusive),
	cmocka_unit_test(inject_rejects_bad_points_and_counts_failures),
	cmocka_unit_test(submit_failure_restores_whole_batch),
	cmocka_unit_test(submit_failure_on_cpu_fault_and_home_is_retried),
	cmocka_unit_test(pt_failure_ends_kernel_cleanly),
	cmocka_unit_test(pt_failure_on_remote_mapping_ends_kernel_cleanly),
	cmocka_unit_test(pt_failure_after_exclusive_grab_keeps_page_safe),
	cmocka_unit_test(alloc_points_by_order),
	cmocka_unit_test(rate_mode_is_reproducible_by_seed),
	cmocka_unit_test(environment_variable_arms_points),
	cmocka_unit_test(random_failures_on_all_points_keep_data),
};

UHMM_TEST_MAIN(tests)
