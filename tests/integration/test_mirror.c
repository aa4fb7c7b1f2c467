/* SPDX-License-Identifier: MIT */
/* Interval notifiers, range fault and uhmm_mprotect (mirror.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
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

#define MAXEV 64
struct recorder {
	pthread_mutex_t lock;
	struct uhmm_inv_event ev[MAXEV];
	int n;
	/* Checked inside the callback: was the watched page still mapped by
	 * the CPU when we were told? */
	volatile char *watch;
	int watch_present;
	useconds_t sleep_us;
	atomic_int entered; /* callbacks started */
};

static void record(struct uhmm_notifier *n, const struct uhmm_inv_event *ev, void *priv)
{
	struct recorder *r = priv;
	atomic_fetch_add(&r->entered, 1);
	if (r->sleep_us)
		usleep(r->sleep_us); /* a slow device fence: the change waits */
	pthread_mutex_lock(&r->lock);
	if (r->watch && ev->reason == UHMM_INV_MIGRATE) {
		unsigned char v = 0;
		mincore((void *)((uintptr_t)r->watch & ~(PG - 1)), PG, &v);
		r->watch_present = v & 1;
	}
	if (r->n < MAXEV)
		r->ev[r->n++] = *ev;
	pthread_mutex_unlock(&r->lock);
}

static int count(struct recorder *r, enum uhmm_inv_reason why)
{
	pthread_mutex_lock(&r->lock);
	int c = 0;
	for (int i = 0; i < r->n; i++)
		c += r->ev[i].reason == why;
	pthread_mutex_unlock(&r->lock);
	return c;
}

static const struct uhmm_inv_event *last(struct recorder *r, enum uhmm_inv_reason why)
{
	const struct uhmm_inv_event *e = NULL;
	pthread_mutex_lock(&r->lock);
	for (int i = 0; i < r->n; i++)
		if (r->ev[i].reason == why)
			e = &r->ev[i];
	pthread_mutex_unlock(&r->lock);
	return e;
}

struct fx {
	uhmm_ctx *ctx;
	uhmm_device *dev, *dev2;
	struct recorder rec;
	struct uhmm_notifier *n;
	char *p;
	size_t len;
};

static void fx_up(struct fx *f, size_t len)
{
	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->rec.lock, NULL);
	ASSERT_OK(uhmm_ctx_create(NULL, &f->ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 64 * MiB;
	ASSERT_OK(uhmm_simdev_create(f->ctx, &o, &f->dev));
	ASSERT_OK(uhmm_simdev_create(f->ctx, &o, &f->dev2));
	f->len = len;
	ASSERT_OK(uhmm_alloc(f->ctx, len, (void **)&f->p));
	ASSERT_OK(uhmm_notifier_insert(f->ctx, (uintptr_t)f->p, len, record, &f->rec, &f->n));
}

static void fx_down(struct fx *f)
{
	ASSERT_OK(uhmm_ctx_destroy(f->ctx));
	pthread_mutex_destroy(&f->rec.lock);
}

/* Wait (bounded) for an event the service thread delivers asynchronously. */
static void wait_for(struct recorder *r, enum uhmm_inv_reason why, int n)
{
	for (int i = 0; i < 2000 && count(r, why) < n; i++)
		usleep(1000);
	assert_true(count(r, why) >= n);
}

static void migration_invalidates_first_with_reason_and_device(void **state)
{
	struct fx f;
	fx_up(&f, 2 * MiB);
	memset(f.p, 1, f.len);
	f.rec.watch = f.p + 5 * PG;
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	const struct uhmm_inv_event *e = last(&f.rec, UHMM_INV_MIGRATE);
	assert_non_null(e);
	assert_ptr_equal(e->device, f.dev);
	assert_int_equal(e->start, (uintptr_t)f.p);
	assert_int_equal(e->end, (uintptr_t)f.p + f.len);
	/* Told while the CPU still mapped the page: before the change. */
	assert_int_equal(f.rec.watch_present, 1);
	/* Back by a CPU fault: the device learns it too (device NULL). */
	int before = count(&f.rec, UHMM_INV_MIGRATE);
	assert_int_equal(f.p[5 * PG], 1);
	wait_for(&f.rec, UHMM_INV_MIGRATE, before + 1);
	assert_null(last(&f.rec, UHMM_INV_MIGRATE)->device);
	fx_down(&f);
}

static void slow_callback_holds_the_change_back(void **state)
{
	struct fx f;
	fx_up(&f, 64 * 1024);
	memset(f.p, 2, f.len);
	f.rec.sleep_us = 100 * 1000;
	f.rec.watch = f.p;
	uint64_t t0 = uhmm_test_now_ns();
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));
	/* The migration could not finish before the callback did ... */
	assert_true(uhmm_test_now_ns() - t0 >= 100ull * 1000 * 1000);
	/* ... and the page was still in place when the callback ended. */
	assert_int_equal(f.rec.watch_present, 1);
	fx_down(&f);
}

static void read_retry_tells_an_invalidation_happened(void **state)
{
	struct fx f;
	fx_up(&f, 2 * MiB);
	uint32_t seq = uhmm_notifier_read_begin(f.n);
	assert_false(uhmm_notifier_read_retry(f.n, seq));
	assert_int_equal(seq % 2, 0);
	/* A change outside the interval leaves it alone. */
	char *other;
	ASSERT_OK(uhmm_alloc(f.ctx, MiB, (void **)&other));
	other[0] = 1;
	ASSERT_OK(uhmm_migrate(f.ctx, other, MiB, f.dev, 0));
	assert_false(uhmm_notifier_read_retry(f.n, seq));
	/* One inside does not. */
	f.p[0] = 1;
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, PG, f.dev, 0));
	assert_true(uhmm_notifier_read_retry(f.n, seq));
	uint32_t seq2 = uhmm_notifier_read_begin(f.n);
	assert_int_equal(seq2 % 2, 0);
	assert_false(uhmm_notifier_read_retry(f.n, seq2));
	fx_down(&f);
}

static void events_reach_notifiers_with_their_reasons(void **state)
{
	struct fx f;
	fx_up(&f, 4 * MiB);
	memset(f.p, 3, f.len);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, f.len, f.dev, 0));

	assert_int_equal(madvise(f.p, 64 * 1024, MADV_DONTNEED), 0);
	wait_for(&f.rec, UHMM_INV_ZAP, 1);
	assert_int_equal(last(&f.rec, UHMM_INV_ZAP)->start, (uintptr_t)f.p);

	ASSERT_OK(uhmm_mprotect(f.ctx, f.p + MiB, MiB, PROT_READ));
	assert_int_equal(count(&f.rec, UHMM_INV_PROTECTION), 1); /* synchronous */
	ASSERT_OK(uhmm_mprotect(f.ctx, f.p + MiB, MiB, PROT_READ | PROT_WRITE));

	/* mremap the last MiB elsewhere. */
	void *dst = mmap(NULL, MiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(dst != MAP_FAILED);
	void *moved = mremap(f.p + 3 * MiB, MiB, MiB, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	assert_ptr_equal(moved, dst);
	wait_for(&f.rec, UHMM_INV_REMAP, 1);
	assert_int_equal(last(&f.rec, UHMM_INV_REMAP)->new_start, (uintptr_t)dst);
	assert_int_equal(last(&f.rec, UHMM_INV_REMAP)->start, (uintptr_t)f.p + 3 * MiB);

	assert_int_equal(munmap(f.p + 2 * MiB, MiB), 0);
	wait_for(&f.rec, UHMM_INV_UNMAP, 1);
	munmap(dst, MiB);

	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
	assert_true(count(&f.rec, UHMM_INV_RELEASE) >= 1);
	pthread_mutex_destroy(&f.rec.lock);
}

static void removed_notifier_hears_nothing(void **state)
{
	struct fx f;
	fx_up(&f, MiB);
	ASSERT_OK(uhmm_notifier_remove(f.n));
	assert_int_equal(uhmm_notifier_remove(f.n), -EBADF);
	f.p[0] = 1;
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, MiB, f.dev, 0));
	assert_int_equal(count(&f.rec, UHMM_INV_MIGRATE), 0);
	fx_down(&f);
}

/* ---- range fault ---- */

static int rf(struct fx *f, void *start, size_t len, uint32_t flags, uhmm_device *dev,
	      uint64_t *ent)
{
	struct uhmm_range_req req = { .notifier = f->n, .start = (uintptr_t)start,
				      .end = (uintptr_t)start + len, .flags = flags,
				      .device = dev, .entries = ent };
	int err = uhmm_range_fault(f->ctx, &req);
	if (!err)
		assert_false(uhmm_notifier_read_retry(f->n, req.notifier_seq));
	return err;
}

static void range_fault_reports_where_pages_are(void **state)
{
	struct fx f;
	fx_up(&f, 2 * MiB);
	uint64_t e[512];
	/* Never touched: nothing to map in a snapshot. */
	ASSERT_OK(rf(&f, f.p, 4 * PG, UHMM_RF_SNAPSHOT, f.dev, e));
	assert_int_equal(e[0] & (UHMM_RE_VALID | UHMM_RE_ERROR), 0);
	/* A read fault maps the zero page, read-only. */
	ASSERT_OK(rf(&f, f.p, 4 * PG, UHMM_RF_FAULT_READ, f.dev, e));
	for (int i = 0; i < 4; i++) {
		assert_true(e[i] & UHMM_RE_VALID);
		assert_true(e[i] & UHMM_RE_ZERO);
		assert_false(e[i] & UHMM_RE_WRITE);
	}
	/* A write fault makes them private and writable. */
	ASSERT_OK(rf(&f, f.p, 4 * PG, UHMM_RF_FAULT_WRITE, f.dev, e));
	for (int i = 0; i < 4; i++) {
		assert_true(e[i] & UHMM_RE_WRITE);
		assert_false(e[i] & UHMM_RE_ZERO);
	}
	/* On this device: DEVICE with its frame; on the other: REMOTE. */
	memset(f.p, 7, 2 * MiB);
	ASSERT_OK(uhmm_migrate(f.ctx, f.p, MiB, f.dev, 0));
	ASSERT_OK(uhmm_migrate(f.ctx, f.p + MiB, MiB, f.dev2, 0));
	ASSERT_OK(rf(&f, f.p, 2 * MiB, UHMM_RF_SNAPSHOT, f.dev, e));
	struct uhmm_page_info pi;
	ASSERT_OK(uhmm_page_query(f.ctx, f.p + 3 * PG, &pi));
	assert_true(e[3] & UHMM_RE_DEVICE);
	assert_int_equal(e[3] & UHMM_RE_DPFN_MASK, pi.dpfn);
	assert_true(e[300] & UHMM_RE_REMOTE);
	assert_false(e[300] & UHMM_RE_VALID);
	/* A fault brings the other device's pages home, leaves ours. */
	ASSERT_OK(rf(&f, f.p, 2 * MiB, UHMM_RF_FAULT_READ, f.dev, e));
	assert_true(e[3] & UHMM_RE_DEVICE);
	assert_true((e[300] & UHMM_RE_VALID) && !(e[300] & (UHMM_RE_REMOTE | UHMM_RE_DEVICE)));
	ASSERT_OK(uhmm_page_query(f.ctx, f.p + 300 * PG, &pi));
	assert_int_equal(pi.where, UHMM_WHERE_CPU);
	assert_int_equal(f.p[300 * PG], 7);
	fx_down(&f);
}

static void range_fault_errors_are_the_kernels(void **state)
{
	struct fx f;
	fx_up(&f, 2 * MiB);
	uint64_t e[16];
	/* A hole. */
	char *hole = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_int_equal(munmap(hole + PG, PG), 0);
	assert_int_equal(rf(&f, hole, 4 * PG, UHMM_RF_FAULT_READ, NULL, e), -EFAULT);
	/* A snapshot reports it instead of failing. */
	ASSERT_OK(rf(&f, hole, 4 * PG, UHMM_RF_SNAPSHOT, NULL, e));
	assert_true(e[1] & UHMM_RE_ERROR);
	assert_false(e[0] & UHMM_RE_ERROR);
	/* PROT_NONE. */
	ASSERT_OK(uhmm_mprotect(f.ctx, f.p, 4 * PG, PROT_NONE));
	assert_int_equal(rf(&f, f.p, 4 * PG, UHMM_RF_FAULT_READ, NULL, e), -EFAULT);
	/* Read-only: reads are fine, writes -EPERM. */
	ASSERT_OK(uhmm_mprotect(f.ctx, f.p, 4 * PG, PROT_READ));
	ASSERT_OK(rf(&f, f.p, 4 * PG, UHMM_RF_FAULT_READ, NULL, e));
	assert_false(e[0] & UHMM_RE_WRITE);
	assert_int_equal(rf(&f, f.p, 4 * PG, UHMM_RF_FAULT_WRITE, NULL, e), -EPERM);
	/* Bad requests. */
	struct uhmm_range_req bad = { .start = 1, .end = PG, .entries = e };
	assert_int_equal(uhmm_range_fault(f.ctx, &bad), -EINVAL);
	assert_int_equal(uhmm_range_fault(f.ctx, NULL), -EINVAL);
	munmap(hole, 4 * PG);
	fx_down(&f);
}

static void range_fault_without_procmap_query_parses_maps(void **state)
{
	setenv("UHMM_NO_PROCMAP_QUERY", "1", 1);
	struct fx f;
	fx_up(&f, 2 * MiB);
	unsetenv("UHMM_NO_PROCMAP_QUERY");
	uint64_t e[4];
	ASSERT_OK(uhmm_mprotect(f.ctx, f.p, 4 * PG, PROT_READ));
	assert_int_equal(rf(&f, f.p, 4 * PG, UHMM_RF_FAULT_WRITE, NULL, e), -EPERM);
	ASSERT_OK(rf(&f, f.p, 4 * PG, UHMM_RF_FAULT_READ, NULL, e));
	assert_true(e[0] & UHMM_RE_VALID);
	char *hole = mmap(NULL, 2 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_int_equal(rf(&f, hole, 2 * PG, UHMM_RF_FAULT_READ, NULL, e), -EFAULT);
	munmap(hole, 2 * PG);
	fx_down(&f);
}

struct churn {
	uhmm_ctx *ctx;
	char *p;
	atomic_bool stop;
};

static void *one_mprotect(void *arg)
{
	struct churn *c = arg;
	ASSERT_OK(uhmm_mprotect(c->ctx, c->p, PG, PROT_READ | PROT_WRITE));
	return NULL;
}

static void range_fault_gives_up_with_ebusy(void **state)
{
	struct fx f;
	fx_up(&f, 2 * MiB);
	memset(f.p, 1, 2 * MiB);
	/* An invalidation whose device takes 300 ms to fence: for all that
	 * time the interval is changing, and a range fault that may wait
	 * 50 ms gives up. */
	f.rec.sleep_us = 300 * 1000;
	struct churn c = { .ctx = f.ctx, .p = f.p };
	pthread_t t;
	pthread_create(&t, NULL, one_mprotect, &c);
	while (atomic_load(&f.rec.entered) == 0) /* the callback is running */
		usleep(1000);
	uint64_t e[512];
	struct uhmm_range_req req = { .notifier = f.n, .start = (uintptr_t)f.p,
				      .end = (uintptr_t)f.p + 2 * MiB,
				      .flags = UHMM_RF_SNAPSHOT, .timeout_ms = 50,
				      .entries = e };
	uint64_t t0 = uhmm_test_now_ns();
	assert_int_equal(uhmm_range_fault(f.ctx, &req), -EBUSY);
	assert_true(uhmm_test_now_ns() - t0 >= 50ull * 1000 * 1000);
	pthread_join(t, NULL);
	/* Quiet again: the same request succeeds. */
	f.rec.sleep_us = 0;
	ASSERT_OK(uhmm_range_fault(f.ctx, &req));
	assert_true(e[0] & UHMM_RE_VALID);
	fx_down(&f);
}

/* uhmm_change_mapping's change: munmap of the range, while recording
 * what the notifier had been told when it ran. */
struct unmap_change {
	struct recorder *rec;
	void *p;
	size_t len;
	int told; /* UNMAP events recorded when the change ran */
};

static int unmap_change(void *arg)
{
	struct unmap_change *c = arg;
	c->told = count(c->rec, UHMM_INV_UNMAP);
	return munmap(c->p, c->len) ? -errno : 0;
}

static int failing_change(void *arg)
{
	return -ENOMEM;
}

/*
 * Memory uhmm does not manage: a notifier over it hears nothing of a plain
 * munmap or madvise (mirror.h's contract says so), and hears a change
 * made through uhmm_change_mapping before it happens, with its reason.
 */
static void change_mapping_tells_notifiers_of_unmanaged_memory(void **state)
{
	struct fx f;
	fx_up(&f, 64 * 1024);
	struct recorder rec;
	memset(&rec, 0, sizeof(rec));
	pthread_mutex_init(&rec.lock, NULL);
	size_t len = 8 * PG;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	struct uhmm_notifier *n;
	ASSERT_OK(uhmm_notifier_insert(f.ctx, (uintptr_t)p, len, record, &rec, &n));
	memset(p, 1, len);
	/* Made directly: not seen. */
	assert_int_equal(madvise(p, PG, MADV_DONTNEED), 0);
	ASSERT_OK(uhmm_sync(f.ctx));
	assert_int_equal(rec.n, 0);
	/* Through uhmm: seen first, with the reason; the change's result. */
	struct unmap_change c = { &rec, p + 4 * PG, 4 * PG, -1 };
	assert_int_equal(uhmm_change_mapping(f.ctx, (uintptr_t)p + 4 * PG, 4 * PG, UHMM_INV_UNMAP,
					     0, unmap_change, &c),
			 0);
	assert_int_equal(c.told, 1);
	const struct uhmm_inv_event *e = last(&rec, UHMM_INV_UNMAP);
	assert_int_equal(e->start, (uintptr_t)p + 4 * PG);
	assert_int_equal(e->end, (uintptr_t)p + len);
	assert_int_equal(uhmm_change_mapping(f.ctx, (uintptr_t)p, PG, UHMM_INV_ZAP, 0,
					     failing_change, NULL),
			 -ENOMEM);
	assert_int_equal(count(&rec, UHMM_INV_ZAP), 1);
	/* While the change runs, the notifier's sequence is odd: a reader
	 * that began before it must retry. */
	uint32_t seq = uhmm_notifier_read_begin(n);
	assert_int_equal(uhmm_change_mapping(f.ctx, (uintptr_t)p, PG, UHMM_INV_PROTECTION, 0,
					     failing_change, NULL),
			 -ENOMEM);
	assert_true(uhmm_notifier_read_retry(n, seq));
	/* Bad arguments: the change is not made. */
	assert_int_equal(uhmm_change_mapping(f.ctx, (uintptr_t)p + 1, PG, UHMM_INV_UNMAP, 0,
					     failing_change, NULL),
			 -EINVAL);
	assert_int_equal(uhmm_change_mapping(f.ctx, (uintptr_t)p, 0, UHMM_INV_UNMAP, 0,
					     failing_change, NULL),
			 -EINVAL);
	assert_int_equal(uhmm_change_mapping(f.ctx, (uintptr_t)p, PG, UHMM_INV_MIGRATE, 0,
					     failing_change, NULL),
			 -EINVAL);
	assert_int_equal(uhmm_change_mapping(f.ctx, (uintptr_t)p, PG, UHMM_INV_UNMAP, 0, NULL,
					     NULL),
			 -EINVAL);
	assert_int_equal(uhmm_change_mapping(NULL, (uintptr_t)p, PG, UHMM_INV_UNMAP, 0,
					     failing_change, NULL),
			 -EBADF);
	ASSERT_OK(uhmm_notifier_remove(n));
	munmap(p, 4 * PG);
	pthread_mutex_destroy(&rec.lock);
	fx_down(&f);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(migration_invalidates_first_with_reason_and_device),
	cmocka_unit_test(slow_callback_holds_the_change_back),
	cmocka_unit_test(read_retry_tells_an_invalidation_happened),
	cmocka_unit_test(events_reach_notifiers_with_their_reasons),
	cmocka_unit_test(removed_notifier_hears_nothing),
	cmocka_unit_test(range_fault_reports_where_pages_are),
	cmocka_unit_test(range_fault_errors_are_the_kernels),
	cmocka_unit_test(range_fault_without_procmap_query_parses_maps),
	cmocka_unit_test(range_fault_gives_up_with_ebusy),
	cmocka_unit_test(change_mapping_tells_notifiers_of_unmanaged_memory),
};

UHMM_TEST_MAIN(tests)
