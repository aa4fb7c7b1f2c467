/* SPDX-License-Identifier: MIT */
/*
 * munmap and mremap events arriving out of order.
 *
 * The kernel posts a munmap's UNMAP (and an mremap's REMAP) after it has
 * released the mmap lock: another thread can mremap a range onto the freed
 * address, and have its REMAP queued, before the first thread's event is.
 * Applied in that order, the late event would cut or move the range just
 * moved in, and its device-resident data would be lost.  uhmm keeps the
 * stale pieces aside ("limbo", src/core/range.c) until their own event
 * comes.
 *
 * The race itself is a few instructions wide and cannot be won on demand,
 * so these tests make the address space change for real with the
 * registration lifted (no events), then hand uhmm the two events in the
 * late order through its own event handlers (src/core/internal.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "core/internal.h"
#include "testlib.h"

#define MiB (1ul << 20)
#define PG 4096ul
#define L (2 * MiB)

struct fixture {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *x, *y; /* two managed ranges, both on the device */
};

/* A context with one 16 MiB simdev. */
static void ctx_with_dev(uhmm_ctx **ctx, uhmm_device **dev)
{
	ASSERT_OK(uhmm_ctx_create(NULL, ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 16 * MiB;
	ASSERT_OK(uhmm_simdev_create(*ctx, &o, dev));
}

static void setup(struct fixture *f)
{
	ctx_with_dev(&f->ctx, &f->dev);
	ASSERT_OK(uhmm_alloc(f->ctx, L, (void **)&f->x));
	ASSERT_OK(uhmm_alloc(f->ctx, L, (void **)&f->y));
	uhmm_test_fill(f->x, L, 1);
	uhmm_test_fill(f->y, L, 2);
	ASSERT_OK(uhmm_migrate(f->ctx, f->x, L, f->dev, 0));
	ASSERT_OK(uhmm_migrate(f->ctx, f->y, L, f->dev, 0));
	assert_int_equal(uhmm_test_dev_free(f->dev), (16 * MiB - 2 * L) / PG);
	/* From here the kernel sends no event for x and y. */
	ASSERT_OK(uhmm__uffd_unregister(f->ctx->uffd, (uintptr_t)f->x, L));
	ASSERT_OK(uhmm__uffd_unregister(f->ctx->uffd, (uintptr_t)f->y, L));
}

static void displaced(struct fixture *f, uint64_t want)
{
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(f->ctx, &s));
	assert_int_equal(s.ranges_displaced, want);
}

/*
 * Thread A munmaps x; thread B mremaps y onto x.  B's REMAP is handled
 * first, A's UNMAP of x after it: x must keep y's data, and the device
 * pages of the old x must be freed by the late UNMAP.
 */
static void late_unmap_spares_range_moved_in(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f);
	char *x = f.x, *y = f.y;
	assert_ptr_equal(mremap(y, L, L, MREMAP_MAYMOVE | MREMAP_FIXED, x), x);
	ASSERT_OK(uhmm__uffd_register(f.ctx->uffd, (uintptr_t)x, L));
	uhmm__ranges_remap(f.ctx, (uintptr_t)y, (uintptr_t)x, L);
	displaced(&f, 1);
	uhmm__ranges_unmap(f.ctx, (uintptr_t)x, (uintptr_t)x + L);
	/* The old x's device pages are free; y's are still there. */
	assert_int_equal(uhmm_test_dev_free(f.dev), (16 * MiB - L) / PG);
	assert_int_equal(uhmm_test_pages_on(f.ctx, x, L, f.dev), L / PG);
	assert_int_equal(uhmm_test_check(x, L, 2), (size_t)-1);
	/* Every frame back (waited for, bounded: once, under ASan in the
	 * no-move variant, 27 were still held right after the reads). */
	assert_int_equal(uhmm_test_wait_dev_free(f.dev, 16 * MiB / PG), 16 * MiB / PG);
	ASSERT_OK(uhmm_free(f.ctx, x));
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
}

/*
 * Thread C mremaps x to z; thread B mremaps y onto x.  B's REMAP is
 * handled first, C's REMAP of x after it: x must hold y's data and z the
 * old x's.
 */
static void late_remap_moves_the_displaced_range(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f);
	char *x = f.x, *y = f.y;
	char *z = mmap(NULL, L, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_ptr_not_equal(z, MAP_FAILED);
	assert_ptr_equal(mremap(x, L, L, MREMAP_MAYMOVE | MREMAP_FIXED, z), z);
	assert_ptr_equal(mremap(y, L, L, MREMAP_MAYMOVE | MREMAP_FIXED, x), x);
	ASSERT_OK(uhmm__uffd_register(f.ctx->uffd, (uintptr_t)x, L));
	ASSERT_OK(uhmm__uffd_register(f.ctx->uffd, (uintptr_t)z, L));
	uhmm__ranges_remap(f.ctx, (uintptr_t)y, (uintptr_t)x, L);
	uhmm__ranges_remap(f.ctx, (uintptr_t)x, (uintptr_t)z, L);
	displaced(&f, 1);
	assert_int_equal(uhmm_test_pages_on(f.ctx, x, L, f.dev), L / PG);
	assert_int_equal(uhmm_test_pages_on(f.ctx, z, L, f.dev), L / PG);
	assert_int_equal(uhmm_test_check(x, L, 2), (size_t)-1);
	assert_int_equal(uhmm_test_check(z, L, 1), (size_t)-1);
	ASSERT_OK(uhmm_free(f.ctx, x));
	ASSERT_OK(uhmm_free(f.ctx, z));
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
}

/*
 * Only part of the displaced range comes back by its late event (thread A
 * unmapped the first half of x, thread C moved the second half away): each
 * half goes its own way, and x keeps y's data.
 */
static void late_events_split_the_displaced_range(void **state)
{
	(void)state;
	struct fixture f;
	setup(&f);
	char *x = f.x, *y = f.y, *h = x + L / 2;
	char *z = mmap(NULL, L / 2, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_ptr_not_equal(z, MAP_FAILED);
	assert_ptr_equal(mremap(h, L / 2, L / 2, MREMAP_MAYMOVE | MREMAP_FIXED, z), z);
	assert_int_equal(munmap(x, L / 2), 0);
	assert_ptr_equal(mremap(y, L, L, MREMAP_MAYMOVE | MREMAP_FIXED, x), x);
	ASSERT_OK(uhmm__uffd_register(f.ctx->uffd, (uintptr_t)x, L));
	ASSERT_OK(uhmm__uffd_register(f.ctx->uffd, (uintptr_t)z, L / 2));
	uhmm__ranges_remap(f.ctx, (uintptr_t)y, (uintptr_t)x, L);
	uhmm__ranges_unmap(f.ctx, (uintptr_t)x, (uintptr_t)h);
	uhmm__ranges_remap(f.ctx, (uintptr_t)h, (uintptr_t)z, L / 2);
	/* The old first half's device pages are free, the rest still used. */
	assert_int_equal(uhmm_test_dev_free(f.dev), (16 * MiB - L - L / 2) / PG);
	assert_int_equal(uhmm_test_pages_on(f.ctx, x, L, f.dev), L / PG);
	assert_int_equal(uhmm_test_check(x, L, 2), (size_t)-1);
	/* z holds the second half of the old x: compare with a copy. */
	char *ref = malloc(L);
	assert_non_null(ref);
	uhmm_test_fill(ref, L, 1);
	assert_int_equal(memcmp(z, ref + L / 2, L / 2), 0);
	free(ref);
	assert_int_equal(uhmm_test_dev_free(f.dev), 16 * MiB / PG);
	ASSERT_OK(uhmm_free(f.ctx, x));
	assert_int_equal(munmap(z, L / 2), 0);
	ASSERT_OK(uhmm_ctx_destroy(f.ctx));
}

/* ---- a device kernel launched right after madvise() returns ---- */

static sem_t cb_entered, cb_release;

/* Holds the service thread inside the handling of a discard. */
static void holding_callback(struct uhmm_notifier *n, const struct uhmm_inv_event *ev,
			     void *priv)
{
	(void)n;
	(void)priv;
	if (ev->reason != UHMM_INV_ZAP)
		return;
	sem_post(&cb_entered);
	sem_wait(&cb_release);
}

static void *release_later(void *arg)
{
	(void)arg;
	sem_wait(&cb_entered);
	usleep(200 * 1000);
	sem_post(&cb_release);
	return NULL;
}

static void store_ab(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	uhmm_simdev_st8(wi, (char *)arg + idx * PG, 0xab);
}

static void load_one(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	(void)uhmm_simdev_ld8(wi, (char *)arg + idx * PG);
}

/*
 * madvise(MADV_DONTNEED) returns once its event is read; the service thread
 * applies it (mirrors invalidated, device copies freed) just after.  A
 * kernel launched in between used the device's stale entries and wrote into
 * device pages that the discard then freed: its stores were lost (found by
 * uhmm-torture, twice in a 10-minute run).  The launch now waits for the
 * discard to be applied.  The service thread is held 200 ms inside it.
 */
static void launch_after_madvise_keeps_its_stores(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	ctx_with_dev(&ctx, &dev);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 16 * PG, (void **)&p));
	memset(p, 0x11, 16 * PG);
	ASSERT_OK(uhmm_migrate(ctx, p, 16 * PG, dev, 0));
	ASSERT_OK(uhmm_simdev_launch(dev, load_one, 16, p)); /* mirror entries */
	sem_init(&cb_entered, 0, 0);
	sem_init(&cb_release, 0, 0);
	struct uhmm_notifier *n;
	ASSERT_OK(uhmm_notifier_insert(ctx, (uintptr_t)p, 16 * PG, holding_callback, NULL, &n));
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, release_later, NULL), 0);
	assert_int_equal(madvise(p, 16 * PG, MADV_DONTNEED), 0);
	ASSERT_OK(uhmm_simdev_launch(dev, store_ab, 16, p));
	pthread_join(t, NULL);
	ASSERT_OK(uhmm_sync(ctx));
	for (size_t i = 0; i < 16; i++) {
		if ((unsigned char)p[i * PG] != 0xab)
			fail_msg("page %zu: %#x, the kernel's store is lost", i,
				 (unsigned char)p[i * PG]);
		assert_int_equal(p[i * PG + 1], 0); /* the rest was discarded */
	}
	ASSERT_OK(uhmm_notifier_remove(n));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	sem_destroy(&cb_entered);
	sem_destroy(&cb_release);
}

/* ---- a discard that lands while a page is being published ---- */

static pthread_t hook_thread; /* the test's own thread: the one that strikes */

static void zap_now(struct uhmm_ctx *ctx, struct uhmm_page *p)
{
	if (!pthread_equal(pthread_self(), hook_thread))
		return; /* the service thread publishing something else */
	atomic_store(&uhmm__publish_hook, NULL);
	uhmm__page_zap(ctx, p); /* the page is locked: this marks it ZAPPED */
}

static void arm_zap(void)
{
	hook_thread = pthread_self();
	atomic_store(&uhmm__publish_hook, zap_now);
}

/*
 * The service thread marks a locked page ZAPPED when an madvise's REMOVE
 * comes; the holder then publishes an empty system page.  The mark could
 * land after the holder looked at the word and before it stored the new
 * one: an exclusive grab then published the page held, with its discarded
 * data in the reserve slot, and the next CPU touch brought that data back
 * (reproducer: tests/torture/repro/repro_madvise_after_device_write.c, a
 * few rounds in a thousand).  The hook strikes exactly there.
 */
static void discard_while_publishing_is_not_lost(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	ctx_with_dev(&ctx, &dev);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, PG, (void **)&p));
	memset(p, 0x9e, PG);
	arm_zap();
	int held = uhmm_make_exclusive(dev, p, 1, NULL);
	atomic_store(&uhmm__publish_hook, NULL);
	ASSERT_OK(held);
	assert_int_equal(uhmm_check_exclusive(dev, p, 1), 0); /* not held */
	assert_int_equal(uhmm_test_pages_on(ctx, p, PG, NULL), 1);
	/* The grab had moved the page out: the kernel's zap has nothing
	 * left to do, and a read must see the discard. */
	for (size_t i = 0; i < PG; i++)
		if (p[i])
			fail_msg("byte %zu: %#x, the discarded data came back", i,
				 (unsigned char)p[i]);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/*
 * The same mark on a page that stays in system memory (here: a migration
 * that cannot take a PROT_NONE page).  The kernel zaps the page only after
 * the REMOVE is read, so it may still be present, stale, when the holder
 * unlocks it: it must be marked discarded, as an unlocked page is.  (It was
 * not: a migration that locked it next moved the stale page to a device
 * before the zap, and the discarded data came back; the reproducer's
 * remaining stale reads.)  Here the kernel's zap never comes, which is the
 * "still on its way" case held for ever.
 */
static void discard_of_a_held_system_page_is_not_lost(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	ctx_with_dev(&ctx, &dev);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, PG, (void **)&p));
	memset(p, 0x9e, PG);
	ASSERT_OK(uhmm_mprotect(ctx, p, PG, PROT_NONE));
	arm_zap();
	int e = uhmm_migrate(ctx, p, PG, dev, 0);
	atomic_store(&uhmm__publish_hook, NULL);
	assert_int_equal(e, -EFAULT);
	ASSERT_OK(uhmm_mprotect(ctx, p, PG, PROT_READ | PROT_WRITE));
	/* Moved now, the stale page must arrive as a hole: zeros. */
	ASSERT_OK(uhmm_migrate(ctx, p, PG, dev, 0));
	ASSERT_OK(uhmm_migrate(ctx, p, PG, NULL, 0));
	for (size_t i = 0; i < PG; i++)
		if (p[i])
			fail_msg("byte %zu: %#x, the discarded data came back", i,
				 (unsigned char)p[i]);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}


/* ---- a range fault racing an event's state change ---- */

/*
 * A device's range fault that begins after an event's invalidation
 * callbacks but reads the page states before uhmm applies the event must
 * not come back as final: the event is about to free the device pages it
 * reports.  (It did: the notifier's sequence went odd and even again
 * around the callbacks alone, so the filler's read_retry() said "fresh" and
 * the device kept mapping freed device pages; after an madvise(DONTNEED)
 * racing a kernel, the device read the old data.)  The event hook runs
 * exactly in that window, on the service thread; there a second thread
 * starts a range fault, which the hook gives 300 ms to finish.
 */
struct racer {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	struct uhmm_notifier *n;
	char *p;
	uint64_t entries[4];
	struct uhmm_range_req req;
	int rc;
	sem_t go, done;
};

static struct racer *racer_now;

static void *racer_main(void *arg)
{
	struct racer *r = arg;
	sem_wait(&r->go);
	r->req = (struct uhmm_range_req){
		.notifier = r->n,
		.start = (uintptr_t)r->p,
		.end = (uintptr_t)r->p + 4 * PG,
		.flags = UHMM_RF_SNAPSHOT,
		.timeout_ms = 5000,
		.device = r->dev,
		.entries = r->entries,
	};
	r->rc = uhmm_range_fault(r->ctx, &r->req);
	sem_post(&r->done);
	return NULL;
}

static void race_in_window(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end)
{
	(void)ctx;
	struct racer *r = racer_now;
	if (!r || (uintptr_t)r->p < start || (uintptr_t)r->p >= end)
		return;
	racer_now = NULL;
	sem_post(&r->go);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 300 * 1000000l;
	if (ts.tv_nsec >= 1000000000l) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000l;
	}
	if (sem_timedwait(&r->done, &ts) == 0)
		sem_post(&r->done); /* finished inside the window: keep the mark */
}

static void noop_invalidate(struct uhmm_notifier *n, const struct uhmm_inv_event *ev,
			    void *priv)
{
	(void)n;
	(void)ev;
	(void)priv;
}

static void range_fault_racing_madvise_sees_the_discard(void **state)
{
	(void)state;
	struct racer r = { 0 };
	ctx_with_dev(&r.ctx, &r.dev);
	ASSERT_OK(uhmm_alloc(r.ctx, 4 * PG, (void **)&r.p));
	uhmm_test_fill(r.p, 4 * PG, 7);
	ASSERT_OK(uhmm_migrate(r.ctx, r.p, 4 * PG, r.dev, 0));
	ASSERT_OK(uhmm_notifier_insert(r.ctx, (uintptr_t)r.p, 4 * PG, noop_invalidate,
				       NULL, &r.n));
	sem_init(&r.go, 0, 0);
	sem_init(&r.done, 0, 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, racer_main, &r), 0);
	racer_now = &r;
	atomic_store(&uhmm__event_hook, race_in_window);
	assert_int_equal(madvise(r.p, 4 * PG, MADV_DONTNEED), 0);
	ASSERT_OK(uhmm_sync(r.ctx));
	atomic_store(&uhmm__event_hook, NULL);
	assert_null(racer_now); /* the hook struck */
	pthread_join(th, NULL);
	ASSERT_OK(r.rc);
	/* Entries that read_retry() calls fresh must be true now: the
	 * pages left the device with the event. */
	if (!uhmm_notifier_read_retry(r.n, r.req.notifier_seq))
		for (int i = 0; i < 4; i++)
			if (r.entries[i] & (UHMM_RE_DEVICE | UHMM_RE_VALID))
				fail_msg("page %d: entry %#llx called fresh, but the "
					 "event freed its device page", i,
					 (unsigned long long)r.entries[i]);
	ASSERT_OK(uhmm_notifier_remove(r.n));
	for (size_t i = 0; i < 4 * PG; i++)
		assert_int_equal(r.p[i], 0);
	ASSERT_OK(uhmm_ctx_destroy(r.ctx));
	sem_destroy(&r.go);
	sem_destroy(&r.done);
}



/*
 * The same window, for a page someone holds when the REMOVE is handled:
 * the handler can only mark it ZAPPED, the copy is freed at the holder's
 * unlock, with no invalidation of its own, and the REMOVE's invalidation
 * is over by then.  A range fault in between must not return the doomed
 * copy as final (it did: the device read the discarded data after
 * uhmm_sync(), and its writes were dropped at the unlock).  Found by the
 * spin model (tests/model/page.pml, DISCARD); here the test holds the
 * page itself, as a migration home does between locking it and starting
 * its invalidation.
 */
static void range_fault_skips_a_held_page_discarded(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	ctx_with_dev(&ctx, &dev);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 4 * PG, (void **)&p));
	uhmm_test_fill(p, 4 * PG, 3);
	ASSERT_OK(uhmm_migrate(ctx, p, 4 * PG, dev, 0));
	struct uhmm_notifier *n;
	ASSERT_OK(uhmm_notifier_insert(ctx, (uintptr_t)p, 4 * PG, noop_invalidate, NULL, &n));
	struct uhmm_range *r = uhmm__range_get(ctx, (uintptr_t)p + PG);
	assert_non_null(r);
	struct uhmm_page *pg = range_page(r, ((uintptr_t)p + PG - r->start) >> PAGE_SHIFT);
	uhmm__page_lock(pg); /* a holder */
	assert_int_equal(madvise(p, 4 * PG, MADV_DONTNEED), 0);
	/* The event handled.  (Not uhmm_sync, which also waits for the
	 * holder's unlock, ours: sync_waits_for_a_discard_its_holder_finishes.) */
	uhmm__events_wait(ctx);
	assert_true(atomic_load(&pg->word) & PG_ZAPPED);
	uint64_t ent[4];
	struct uhmm_range_req req = {
		.notifier = n, .start = (uintptr_t)p, .end = (uintptr_t)p + 4 * PG,
		.flags = UHMM_RF_SNAPSHOT, .device = dev, .entries = ent,
	};
	ASSERT_OK(uhmm_range_fault(ctx, &req));
	assert_false(uhmm_notifier_read_retry(n, req.notifier_seq));
	for (int i = 0; i < 4; i++)
		if (ent[i] & (UHMM_RE_DEVICE | UHMM_RE_VALID))
			fail_msg("page %d: entry %#llx, a copy the discard frees", i,
				 (unsigned long long)ent[i]);
	uhmm__page_unlock(ctx, pg); /* frees the copy: no entry may lead there */
	uhmm__range_put(r);
	for (size_t i = 0; i < 4 * PG; i++)
		assert_int_equal(p[i], 0);
	ASSERT_OK(uhmm_notifier_remove(n));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}


/* ---- the probe of pending events (uhmm__events_pending) ---- */

static void *madvise_main(void *arg)
{
	assert_int_equal(madvise(arg, PG, MADV_DONTNEED), 0);
	return NULL;
}

/*
 * The kernel's answer the registration path relies on: a fill of the
 * probe page says EAGAIN while an event is posted and not read, and not
 * otherwise.  The service thread is held inside a first REMOVE; a second
 * madvise's REMOVE then waits unread.
 */
static void probe_sees_an_event_not_yet_read(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	ctx_with_dev(&ctx, &dev);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 2 * PG, (void **)&p));
	memset(p, 1, 2 * PG);
	assert_false(uhmm__events_pending(ctx));
	sem_init(&cb_entered, 0, 0);
	sem_init(&cb_release, 0, 0);
	/* Held by the first page's notifier only: the second REMOVE passes. */
	struct uhmm_notifier *n;
	ASSERT_OK(uhmm_notifier_insert(ctx, (uintptr_t)p, PG, holding_callback, NULL, &n));
	pthread_t a, b;
	assert_int_equal(pthread_create(&a, NULL, madvise_main, p), 0);
	sem_wait(&cb_entered); /* the service thread is in the first REMOVE */
	assert_int_equal(pthread_create(&b, NULL, madvise_main, p + PG), 0);
	bool seen = false;
	for (int i = 0; i < 2000 && !seen; i++) {
		seen = uhmm__events_pending(ctx);
		if (!seen)
			usleep(1000);
	}
	sem_post(&cb_release);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	assert_true(seen);
	ASSERT_OK(uhmm_sync(ctx));
	assert_false(uhmm__events_pending(ctx));
	ASSERT_OK(uhmm_notifier_remove(n));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	sem_destroy(&cb_entered);
	sem_destroy(&cb_release);
}

/* ---- uhmm_sync and a discard its page's holder finishes ---- */

static __thread int is_holder; /* the migrating thread of the test */
static sem_t in_publish, publish_go, sync_news;
static atomic_int sync_returned, sync_waited;

/* The holder's publication, held until the test says go. */
static void stall_publish(struct uhmm_ctx *ctx, struct uhmm_page *p)
{
	(void)ctx;
	(void)p;
	if (!is_holder)
		return;
	atomic_store(&uhmm__publish_hook, NULL);
	sem_post(&in_publish);
	sem_wait(&publish_go);
}

static void note_sync_wait(struct uhmm_ctx *ctx)
{
	(void)ctx;
	if (!atomic_exchange(&sync_waited, 1))
		sem_post(&sync_news);
}

struct holder_arg {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *p;
	int err;
};

static void *hold_by_migrating(void *arg)
{
	struct holder_arg *a = arg;
	is_holder = 1;
	a->err = uhmm_migrate(a->ctx, a->p, PG, a->dev, 0);
	return NULL;
}

static void *sync_now(void *arg)
{
	struct holder_arg *a = arg;
	a->err = uhmm_sync(a->ctx);
	atomic_store(&sync_returned, 1);
	sem_post(&sync_news);
	return NULL;
}

/*
 * A discard (REMOVE) that meets a page someone holds only marks it ZAPPED;
 * the holder drops the copy it was publishing and frees its device frame
 * when it unlocks.  uhmm_sync promises the discards that returned are
 * applied: it must wait for that unlock too.  (It did not: the torture saw
 * a page "still poisoned after a discard" and device frames freed just
 * after uhmm_sync.)  Here a migration holds the page, stopped inside its
 * publication by a hook; the discard lands; uhmm_sync must still be
 * waiting (a hook tells it is) when the holder is let go, not returned.
 */
static void sync_waits_for_a_discard_its_holder_finishes(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	ctx_with_dev(&ctx, &dev);
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, PG, (void **)&p));
	memset(p, 0x5a, PG);
	sem_init(&in_publish, 0, 0);
	sem_init(&publish_go, 0, 0);
	sem_init(&sync_news, 0, 0);
	atomic_store(&sync_returned, 0);
	atomic_store(&sync_waited, 0);
	struct holder_arg h = { .ctx = ctx, .dev = dev, .p = p };
	struct holder_arg s = { .ctx = ctx };
	pthread_t ht, st;
	atomic_store(&uhmm__publish_hook, stall_publish);
	assert_int_equal(pthread_create(&ht, NULL, hold_by_migrating, &h), 0);
	sem_wait(&in_publish);
	/* The page is held (moved out of the CPU page table, its device copy
	 * made): the REMOVE can only mark it. */
	assert_int_equal(madvise(p, PG, MADV_DONTNEED), 0);
	atomic_store(&uhmm__zapped_wait_hook, note_sync_wait);
	assert_int_equal(pthread_create(&st, NULL, sync_now, &s), 0);
	sem_wait(&sync_news); /* it returned, or it waits for the holder */
	int early = atomic_load(&sync_returned);
	sem_post(&publish_go);
	pthread_join(ht, NULL);
	pthread_join(st, NULL);
	atomic_store(&uhmm__zapped_wait_hook, NULL);
	atomic_store(&uhmm__publish_hook, NULL);
	if (early)
		fail_msg("uhmm_sync returned while the discard was still its holder's");
	ASSERT_OK(s.err);
	ASSERT_OK(h.err);
	/* Applied: home and empty, the device's frame back. */
	struct uhmm_page_info info;
	ASSERT_OK(uhmm_page_query(ctx, p, &info));
	assert_int_equal(info.where, UHMM_WHERE_CPU);
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(dev, &ds));
	assert_int_equal(ds.bytes_in_use, 0);
	for (size_t i = 0; i < PG; i++)
		if (p[i])
			fail_msg("byte %zu: %#x after the discard", i, (unsigned char)p[i]);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	sem_destroy(&in_publish);
	sem_destroy(&publish_go);
	sem_destroy(&sync_news);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(probe_sees_an_event_not_yet_read),
	cmocka_unit_test(range_fault_racing_madvise_sees_the_discard),
	cmocka_unit_test(range_fault_skips_a_held_page_discarded),
	cmocka_unit_test(late_unmap_spares_range_moved_in),
	cmocka_unit_test(late_remap_moves_the_displaced_range),
	cmocka_unit_test(late_events_split_the_displaced_range),
	cmocka_unit_test(launch_after_madvise_keeps_its_stores),
	cmocka_unit_test(discard_while_publishing_is_not_lost),
	cmocka_unit_test(discard_of_a_held_system_page_is_not_lost),
	cmocka_unit_test(sync_waits_for_a_discard_its_holder_finishes),
};

UHMM_TEST_MAIN(tests)
