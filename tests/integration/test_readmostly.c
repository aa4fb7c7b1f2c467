/* SPDX-License-Identifier: MIT */
/*
 * test_readmostly.c - read-mostly advice (UHMM_ADVISE_READ_MOSTLY): a
 * device read duplicates pages while the CPU keeps its copy; a write from
 * either side collapses the duplicates with the right data; two devices;
 * unset; each fault mode (full, user-mode-only, SIGBUS); fork and munmap
 * of a duplicated range; the attribute query.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uhmm/device.h>
#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "core/internal.h"
#include "testlib.h"

#define PG 4096ul
#define NPG 64ul
#define LEN (NPG * PG)

static uhmm_ctx *mkctx(uint32_t flags, uhmm_device **dev, uhmm_device **dev2)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = flags;
	uhmm_ctx *ctx;
	int err = uhmm_ctx_create(&o, &ctx);
	if (err == -EOPNOTSUPP || err == -EPERM)
		TEST_SKIP("this fault mode is not available here");
	ASSERT_OK(err);
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 16ul << 20;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, dev));
	if (dev2)
		ASSERT_OK(uhmm_simdev_create(ctx, &so, dev2));
	return ctx;
}

struct karg {
	uint64_t *buf;
	uint64_t add; /* write kernel: buf[page] = page + add */
	_Atomic uint64_t sum;
};

static void k_read(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct karg *k = arg;
	atomic_fetch_add_explicit(&k->sum, uhmm_simdev_ld64(wi, &k->buf[idx * (PG / 8)]),
				  memory_order_relaxed);
}

static void k_write(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct karg *k = arg;
	uhmm_simdev_st64(wi, &k->buf[idx * (PG / 8)], idx + k->add);
}

/* The device reads the first word of every page; returns the sum. */
static uint64_t dev_read(uhmm_device *dev, uint64_t *p)
{
	struct karg k = { .buf = p };
	ASSERT_OK(uhmm_simdev_launch(dev, k_read, NPG, &k));
	return atomic_load(&k.sum);
}

static void dev_write(uhmm_device *dev, uint64_t *p, uint64_t add)
{
	struct karg k = { .buf = p, .add = add };
	ASSERT_OK(uhmm_simdev_launch(dev, k_write, NPG, &k));
}

static uint64_t fill(uint64_t *p, uint64_t base)
{
	uint64_t want = 0;
	for (size_t i = 0; i < NPG; i++) {
		p[i * (PG / 8)] = base + i;
		p[i * (PG / 8) + 1] = ~(base + i);
		want += base + i;
	}
	return want;
}

static uint64_t cpu_sum(const uint64_t *p)
{
	uint64_t s = 0;
	for (size_t i = 0; i < NPG; i++)
		s += *(volatile const uint64_t *)&p[i * (PG / 8)];
	return s;
}

static struct uhmm_range_attrs *attrs(uhmm_ctx *ctx, void *p, size_t len)
{
	static struct uhmm_range_attrs at;
	ASSERT_OK(uhmm_range_attrs(ctx, p, len, &at));
	return &at;
}

static uint64_t cpu_faults(uhmm_ctx *ctx)
{
	struct uhmm_stats st;
	ASSERT_OK(uhmm_stats_get(ctx, &st));
	return st.cpu_faults;
}

static uint64_t dev_bytes(uhmm_device *dev)
{
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(dev, &ds));
	return ds.bytes_in_use;
}

/* Device memory in use once it settles at @want (an event's frees may
 * land just after uhmm_sync; waits up to 2 s for them, returns what is
 * there then). */
static uint64_t dev_bytes_settled(uhmm_device *dev, uint64_t want)
{
	uint64_t b = dev_bytes(dev);
	for (int i = 0; i < 2000 && b != want; i++) {
		usleep(1000);
		b = dev_bytes(dev);
	}
	return b;
}

/*
 * Duplication on a device read, then collapse by a CPU write, then by a
 * device write, in fault mode @flags.
 */
static void dup_and_collapse(uint32_t flags)
{
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(flags, &dev, NULL);
	uint32_t id = uhmm_device_id(dev);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, LEN, (void **)&p));
	uint64_t want = fill(p, 100);
	ASSERT_OK(uhmm_advise(ctx, p, LEN, UHMM_ADVISE_READ_MOSTLY, NULL));
	assert_int_equal(attrs(ctx, p, LEN)->read_mostly, 1);
	assert_int_equal(attrs(ctx, p, LEN)->bytes_duplicated, 0);

	/* A device read: duplicates, the CPU keeps its pages. */
	assert_int_equal(dev_read(dev, p), want);
	struct uhmm_range_attrs *at = attrs(ctx, p, LEN);
	assert_int_equal(at->bytes_cpu, LEN);
	assert_int_equal(at->bytes_on[id], 0);
	assert_int_equal(at->bytes_duplicated, LEN);
	assert_int_equal(at->bytes_dup_on[id], LEN);
	assert_int_equal(dev_bytes(dev), LEN);
	/* The CPU reads without a fault; the device again, from its copy. */
	uint64_t f0 = cpu_faults(ctx);
	assert_int_equal(cpu_sum(p), want);
	assert_int_equal(cpu_faults(ctx), f0);
	assert_int_equal(dev_read(dev, p), want);
	struct uhmm_stats st;
	ASSERT_OK(uhmm_stats_get(ctx, &st));
	assert_int_equal(st.dup_made, NPG);

	/* A CPU write collapses the page it writes; the device sees it. */
	p[5 * (PG / 8)] = 7777;
	want += 7777 - (100 + 5);
	at = attrs(ctx, p, LEN);
	assert_int_equal(at->bytes_duplicated, LEN - PG);
	assert_int_equal(dev_bytes(dev), LEN - PG);
	assert_int_equal(p[5 * (PG / 8)], 7777);
	assert_int_equal(dev_read(dev, p), want); /* duplicated again */
	assert_int_equal(attrs(ctx, p, LEN)->bytes_duplicated, LEN);

	/* A device write: the duplicates collapse, the pages move to it. */
	dev_write(dev, p, 5000);
	at = attrs(ctx, p, LEN);
	assert_int_equal(at->bytes_duplicated, 0);
	assert_int_equal(at->bytes_on[id], LEN);
	assert_int_equal(dev_bytes(dev), LEN);
	for (size_t i = 0; i < NPG; i++) {
		assert_int_equal(p[i * (PG / 8)], i + 5000);
		assert_int_equal(p[i * (PG / 8) + 1], ~(100 + i));
	}
	ASSERT_OK(uhmm_free(ctx, p));
	assert_int_equal(dev_bytes(dev), 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static void duplicate_and_collapse_full(void **state)
{
	(void)state;
	dup_and_collapse(0);
}

static void duplicate_and_collapse_user_mode_only(void **state)
{
	(void)state;
	dup_and_collapse(UHMM_CTX_USER_MODE_ONLY);
}

static void duplicate_and_collapse_sigbus(void **state)
{
	(void)state;
	dup_and_collapse(UHMM_CTX_SIGBUS);
}

/* UHMM_MIGRATE_DUPLICATE duplicates memory nobody advised read-mostly;
 * a CPU write and a device write collapse it as they do advised pages;
 * the flag's misuse is -EINVAL. */
static void migrate_duplicate_flag(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(0, &dev, NULL);
	uint32_t id = uhmm_device_id(dev);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, LEN, (void **)&p));
	uint64_t want = fill(p, 40);
	assert_int_equal(uhmm_migrate(ctx, p, LEN, dev,
				      UHMM_MIGRATE_DUPLICATE | UHMM_MIGRATE_MOVE), -EINVAL);
	assert_int_equal(uhmm_migrate(ctx, p, LEN, NULL, UHMM_MIGRATE_DUPLICATE), -EINVAL);
	assert_int_equal(attrs(ctx, p, LEN)->bytes_duplicated, 0);
	ASSERT_OK(uhmm_migrate(ctx, p, LEN, dev, UHMM_MIGRATE_DUPLICATE));
	struct uhmm_range_attrs *at = attrs(ctx, p, LEN);
	assert_int_equal(at->read_mostly, UHMM_ATTR_NONE);
	assert_int_equal(at->bytes_cpu, LEN);
	assert_int_equal(at->bytes_on[id], 0);
	assert_int_equal(at->bytes_dup_on[id], LEN);
	assert_int_equal(dev_bytes(dev), LEN);
	uint64_t f0 = cpu_faults(ctx);
	assert_int_equal(cpu_sum(p), want);
	assert_int_equal(cpu_faults(ctx), f0);
	assert_int_equal(dev_read(dev, p), want);
	/* A CPU write collapses its page. */
	p[9 * (PG / 8)] = 99;
	want += 99 - (40 + 9);
	assert_int_equal(attrs(ctx, p, LEN)->bytes_duplicated, LEN - PG);
	assert_int_equal(dev_read(dev, p), want);
	/* A migration that moves them collapses them first. */
	ASSERT_OK(uhmm_migrate(ctx, p, LEN, dev, UHMM_MIGRATE_MOVE));
	at = attrs(ctx, p, LEN);
	assert_int_equal(at->bytes_duplicated, 0);
	assert_int_equal(at->bytes_on[id], LEN);
	assert_int_equal(dev_bytes(dev), LEN);
	assert_int_equal(cpu_sum(p), want);
	ASSERT_OK(uhmm_free(ctx, p));
	assert_int_equal(dev_bytes(dev), 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* Several CPU writes to one duplicated page, while the device reads it
 * again between them: no write lost. */
static void cpu_writes_are_never_lost(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(0, &dev, NULL);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, LEN, (void **)&p));
	uint64_t want = fill(p, 1);
	ASSERT_OK(uhmm_advise(ctx, p, LEN, UHMM_ADVISE_READ_MOSTLY, NULL));
	for (int round = 0; round < 8; round++) {
		assert_int_equal(dev_read(dev, p), want);
		for (size_t i = round; i < NPG; i += 8) {
			p[i * (PG / 8)] += 3;
			want += 3;
		}
	}
	assert_int_equal(cpu_sum(p), want);
	assert_int_equal(dev_read(dev, p), want);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* Two devices hold duplicates at once; a CPU write drops both; a write by
 * one device moves the page to it and drops the other's. */
static void two_devices_duplicate(void **state)
{
	(void)state;
	uhmm_device *a, *b;
	uhmm_ctx *ctx = mkctx(0, &a, &b);
	uint32_t ia = uhmm_device_id(a), ib = uhmm_device_id(b);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, LEN, (void **)&p));
	uint64_t want = fill(p, 40);
	ASSERT_OK(uhmm_advise(ctx, p, LEN, UHMM_ADVISE_READ_MOSTLY, NULL));
	assert_int_equal(dev_read(a, p), want);
	assert_int_equal(dev_read(b, p), want);
	struct uhmm_range_attrs *at = attrs(ctx, p, LEN);
	assert_int_equal(at->bytes_duplicated, LEN);
	assert_int_equal(at->bytes_dup_on[ia], LEN);
	assert_int_equal(at->bytes_dup_on[ib], LEN);
	assert_int_equal(at->bytes_cpu, LEN);
	/* CPU write of every page. */
	for (size_t i = 0; i < NPG; i++)
		p[i * (PG / 8)] += 1;
	want += NPG;
	assert_int_equal(attrs(ctx, p, LEN)->bytes_duplicated, 0);
	assert_int_equal(dev_bytes(a), 0);
	assert_int_equal(dev_bytes(b), 0);
	assert_int_equal(dev_read(a, p), want);
	assert_int_equal(dev_read(b, p), want);
	/* Device a writes: on a, b's duplicates gone; b reads a's data. */
	dev_write(a, p, 900);
	at = attrs(ctx, p, LEN);
	assert_int_equal(at->bytes_on[ia], LEN);
	assert_int_equal(at->bytes_duplicated, 0);
	assert_int_equal(dev_bytes(b), 0);
	want = 0;
	for (size_t i = 0; i < NPG; i++)
		want += i + 900;
	assert_int_equal(dev_read(b, p), want);
	assert_int_equal(cpu_sum(p), want);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* Unset: the duplicates collapse, later reads migrate as without advice.
 * uhmm_migrate toward the device duplicates too; with UHMM_MIGRATE_MOVE
 * it moves. */
static void unset_and_migrate(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(0, &dev, NULL);
	uint32_t id = uhmm_device_id(dev);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, 2 * LEN, (void **)&p));
	uint64_t want = fill(p, 3);
	ASSERT_OK(uhmm_advise(ctx, p, LEN, UHMM_ADVISE_READ_MOSTLY, NULL));
	assert_int_equal(attrs(ctx, p, 2 * LEN)->read_mostly, UHMM_ATTR_MIXED);
	assert_int_equal(attrs(ctx, (char *)p + LEN, LEN)->read_mostly, UHMM_ATTR_NONE);
	/* Half advised: that half duplicates, the other half moves. */
	ASSERT_OK(uhmm_migrate(ctx, p, 2 * LEN, dev, 0));
	struct uhmm_range_attrs *at = attrs(ctx, p, 2 * LEN);
	assert_int_equal(at->bytes_duplicated, LEN);
	assert_int_equal(at->bytes_on[id], LEN);
	assert_int_equal(at->bytes_cpu, LEN);
	ASSERT_OK(uhmm_advise(ctx, p, LEN, UHMM_ADVISE_UNSET_READ_MOSTLY, NULL));
	at = attrs(ctx, p, 2 * LEN);
	assert_int_equal(at->read_mostly, UHMM_ATTR_NONE);
	assert_int_equal(at->bytes_duplicated, 0);
	assert_int_equal(dev_bytes(dev), LEN);
	assert_int_equal(cpu_sum(p), want);
	assert_int_equal(dev_read(dev, p), want);
	assert_int_equal(attrs(ctx, p, LEN)->bytes_on[id], LEN); /* migrated */
	/* Advised again, at home: MOVE moves rather than duplicates. */
	ASSERT_OK(uhmm_migrate(ctx, p, LEN, NULL, 0));
	ASSERT_OK(uhmm_advise(ctx, p, LEN, UHMM_ADVISE_READ_MOSTLY, NULL));
	ASSERT_OK(uhmm_migrate(ctx, p, LEN, dev, 0));
	assert_int_equal(attrs(ctx, p, LEN)->bytes_duplicated, LEN);
	ASSERT_OK(uhmm_migrate(ctx, p, LEN, dev, UHMM_MIGRATE_MOVE));
	at = attrs(ctx, p, LEN);
	assert_int_equal(at->bytes_duplicated, 0);
	assert_int_equal(at->bytes_on[id], LEN);
	assert_int_equal(cpu_sum(p), want);
	assert_int_equal(uhmm_migrate(ctx, p, LEN, dev, 1), -EINVAL);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* fork with a duplicated range: the child has the data and writes its own
 * copy; the parent's duplicates and data are untouched until it writes. */
static void fork_with_duplicates(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(0, &dev, NULL);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, LEN, (void **)&p));
	uint64_t want = fill(p, 60);
	ASSERT_OK(uhmm_advise(ctx, p, LEN, UHMM_ADVISE_READ_MOSTLY, NULL));
	assert_int_equal(dev_read(dev, p), want);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int bad = cpu_sum(p) != want;
		for (size_t i = 0; i < NPG; i++)
			p[i * (PG / 8)] = 0;
		bad |= cpu_sum(p) != 0;
		_exit(bad);
	}
	int ws;
	assert_int_equal(waitpid(pid, &ws, 0), pid);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
	assert_int_equal(attrs(ctx, p, LEN)->bytes_duplicated, LEN);
	assert_int_equal(cpu_sum(p), want);
	assert_int_equal(dev_read(dev, p), want);
	p[0] += 1;
	assert_int_equal(dev_read(dev, p), want + 1);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* munmap of a duplicated range (part, then the rest) frees the
 * duplicates' device memory. */
static void munmap_frees_duplicates(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(0, &dev, NULL);
	uint64_t *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	uint64_t want = fill(p, 80);
	ASSERT_OK(uhmm_register(ctx, p, LEN));
	ASSERT_OK(uhmm_advise(ctx, p, LEN, UHMM_ADVISE_READ_MOSTLY, NULL));
	assert_int_equal(dev_read(dev, p), want);
	assert_int_equal(dev_bytes(dev), LEN);
	assert_int_equal(munmap(p, LEN / 2), 0);
	ASSERT_OK(uhmm_sync(ctx));
	assert_int_equal(dev_bytes_settled(dev, LEN / 2), LEN / 2);
	/* A discard drops them too (the data is zeros after it). */
	assert_int_equal(madvise((char *)p + LEN / 2, PG, MADV_DONTNEED), 0);
	ASSERT_OK(uhmm_sync(ctx));
	assert_int_equal(dev_bytes_settled(dev, LEN / 2 - PG), LEN / 2 - PG);
	assert_int_equal(p[LEN / 2 / 8], 0);
	assert_int_equal(munmap((char *)p + LEN / 2, LEN / 2), 0);
	ASSERT_OK(uhmm_sync(ctx));
	assert_int_equal(dev_bytes_settled(dev, 0), 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* uhmm_free and uhmm_unregister of duplicated ranges free the
 * duplicates' device memory (their page state goes). */
static void free_drops_duplicates(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(0, &dev, NULL);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, LEN, (void **)&p));
	uint64_t want = fill(p, 70);
	ASSERT_OK(uhmm_advise(ctx, p, LEN, UHMM_ADVISE_READ_MOSTLY, NULL));
	assert_int_equal(dev_read(dev, p), want);
	assert_int_equal(dev_bytes(dev), LEN);
	ASSERT_OK(uhmm_free(ctx, p));
	assert_int_equal(dev_bytes_settled(dev, 0), 0);
	uint64_t *q = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(q != MAP_FAILED);
	want = fill(q, 75);
	ASSERT_OK(uhmm_register(ctx, q, LEN));
	ASSERT_OK(uhmm_advise(ctx, q, LEN, UHMM_ADVISE_READ_MOSTLY, NULL));
	assert_int_equal(dev_read(dev, q), want);
	ASSERT_OK(uhmm_unregister(ctx, q, LEN));
	assert_int_equal(dev_bytes_settled(dev, 0), 0);
	assert_int_equal(cpu_sum(q), want);
	q[0] = 1; /* plain memory again, writable */
	munmap(q, LEN);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* A device detached with duplicates: they go, the CPU keeps the data. */
static void detach_drops_duplicates(void **state)
{
	(void)state;
	uhmm_device *dev, *dev2;
	uhmm_ctx *ctx = mkctx(0, &dev, &dev2);
	uint64_t *p;
	ASSERT_OK(uhmm_alloc(ctx, LEN, (void **)&p));
	uint64_t want = fill(p, 90);
	ASSERT_OK(uhmm_advise(ctx, p, LEN, UHMM_ADVISE_READ_MOSTLY, NULL));
	assert_int_equal(dev_read(dev, p), want);
	assert_int_equal(dev_read(dev2, p), want);
	ASSERT_OK(uhmm_device_detach(dev));
	struct uhmm_range_attrs *at = attrs(ctx, p, LEN);
	assert_int_equal(at->bytes_duplicated, LEN);
	assert_int_equal(at->bytes_dup_on[uhmm_device_id(dev2)], LEN);
	p[3 * (PG / 8)] += 10;
	assert_int_equal(cpu_sum(p), want + 10);
	assert_int_equal(dev_read(dev2, p), want + 10);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* ---- a device whose copy engine waits at a gate ---- */

#define GATE_PAGES 64u

struct gated {
	char *mem;
	uint8_t used[GATE_PAGES];
	_Atomic unsigned nused;
	atomic_bool open;
	pthread_mutex_t lock;
};

static long gated_alloc(void *priv, unsigned order, size_t n, uint64_t *dpfn)
{
	struct gated *g = priv;
	if (order)
		return 0;
	size_t got = 0;
	pthread_mutex_lock(&g->lock);
	for (uint64_t f = 0; f < GATE_PAGES && got < n; f++)
		if (!g->used[f]) {
			g->used[f] = 1;
			dpfn[got++] = f;
		}
	atomic_fetch_add(&g->nused, (unsigned)got);
	pthread_mutex_unlock(&g->lock);
	return (long)got;
}

static void gated_free(void *priv, unsigned order, size_t n, const uint64_t *dpfn)
{
	struct gated *g = priv;
	(void)order;
	pthread_mutex_lock(&g->lock);
	for (size_t i = 0; i < n; i++)
		g->used[dpfn[i]] = 0;
	atomic_fetch_sub(&g->nused, (unsigned)n);
	pthread_mutex_unlock(&g->lock);
}

static int gated_submit(void *priv, struct uhmm_copy *c, size_t n, uhmm_fence_t *f)
{
	struct gated *g = priv;
	for (size_t i = 0; i < n; i++) {
		char *d = g->mem + c[i].dpfn * PG;
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

/* The copies are done only once the test opens the gate. */
static int gated_wait(void *priv, uhmm_fence_t f)
{
	struct gated *g = priv;
	(void)f;
	while (!atomic_load(&g->open))
		uhmm_test_nap();
	return 0;
}

static const struct uhmm_device_ops gated_ops = {
	.alloc = gated_alloc,
	.free = gated_free,
	.copy_submit = gated_submit,
	.copy_wait = gated_wait,
};

struct mig {
	uhmm_ctx *ctx;
	void *p;
	size_t len;
	uhmm_device *dev;
	_Atomic int rc;
};

static void *mig_thread(void *arg)
{
	struct mig *m = arg;
	atomic_store(&m->rc, uhmm_migrate(m->ctx, m->p, m->len, m->dev, 0));
	return NULL;
}

static uint64_t backoffs(uhmm_ctx *ctx)
{
	struct uhmm_stats st;
	ASSERT_OK(uhmm_stats_get(ctx, &st));
	return st.evict_backoffs;
}

/*
 * Duplicates being made hold their frames before the table records them
 * (taken, copied, recorded): a migration that fits the device and finds it
 * full of them meanwhile waits, then reclaims them, and moves; it does not
 * fail -ENOMEM at once (uhmm-torture --readmostly: "-ENOMEM though the
 * request fits", 512 frames held by uhmm and no page on the device).  The
 * making is held at the copy, by a device whose copy engine waits at a
 * gate.
 */
static void a_dup_being_made_makes_the_request_wait_not_fail(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct gated g = { 0 };
	pthread_mutex_init(&g.lock, NULL);
	g.mem = mmap(NULL, GATE_PAGES * PG, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(g.mem != MAP_FAILED);
	uhmm_device *dev;
	ASSERT_OK(uhmm_device_attach(ctx, &gated_ops, &g, "gated", &dev));
	uint64_t *p, *q;
	ASSERT_OK(uhmm_alloc(ctx, LEN, (void **)&p)); /* NPG == GATE_PAGES */
	ASSERT_OK(uhmm_alloc(ctx, 16 * PG, (void **)&q));
	uint64_t want = fill(p, 300);
	memset(q, 0x5a, 16 * PG);
	int e = uhmm_advise(ctx, p, LEN, UHMM_ADVISE_READ_MOSTLY, NULL);
	if (e == -EOPNOTSUPP) {
		atomic_store(&g.open, true);
		ASSERT_OK(uhmm_ctx_destroy(ctx));
		TEST_SKIP("read-mostly needs write-protection");
	}
	ASSERT_OK(e);
	/* Duplicates of p on the device: every frame, held at the copy. */
	struct mig d = { .ctx = ctx, .p = p, .len = LEN, .dev = dev, .rc = 1 };
	pthread_t td, tm;
	assert_int_equal(pthread_create(&td, NULL, mig_thread, &d), 0);
	for (int i = 0; i < 20000 && atomic_load(&g.nused) < GATE_PAGES; i++)
		uhmm_test_nap();
	assert_int_equal(atomic_load(&g.nused), GATE_PAGES);
	/* q needs 16 of them. */
	uint64_t b0 = backoffs(ctx);
	struct mig m = { .ctx = ctx, .p = q, .len = 16 * PG, .dev = dev, .rc = 1 };
	assert_int_equal(pthread_create(&tm, NULL, mig_thread, &m), 0);
	for (int i = 0; i < 10000 && backoffs(ctx) < b0 + 2 && atomic_load(&m.rc) == 1; i++)
		uhmm_test_nap();
	assert_int_equal(atomic_load(&m.rc), 1); /* waiting, not failed */
	assert_int_equal(atomic_load(&d.rc), 1);
	atomic_store(&g.open, true);
	assert_int_equal(pthread_join(td, NULL), 0);
	assert_int_equal(pthread_join(tm, NULL), 0);
	ASSERT_OK(atomic_load(&d.rc));
	/* (The wait is bounded at ELSEWHERE_NS: preempted that long before
	 * the gate opened, the request says -ENOMEM; the duplicates are
	 * reclaimable now.) */
	if (atomic_load(&m.rc) == -ENOMEM)
		atomic_store(&m.rc, uhmm_migrate(ctx, q, 16 * PG, dev, 0));
	ASSERT_OK(atomic_load(&m.rc));
	/* q moved, in frames of duplicates reclaimed; p's data is the CPU's. */
	struct uhmm_range_attrs *at = attrs(ctx, q, 16 * PG);
	assert_int_equal(at->bytes_cpu, 0);
	for (size_t i = 0; i < 16 * PG; i++)
		assert_int_equal(((unsigned char *)q)[i], 0x5a);
	assert_int_equal(cpu_sum(p), want);
	ASSERT_OK(uhmm_free(ctx, q));
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	munmap(g.mem, GATE_PAGES * PG);
	pthread_mutex_destroy(&g.lock);
}

/* Invalidations seen over one page (the held one, below). */
struct inv_count {
	uintptr_t va;
	_Atomic unsigned n;
};

/* Four pages filled with @fill, advised read-mostly and migrated to @dev:
 * duplicated there, the CPU copies kept (skips, @ctx destroyed, where
 * read-mostly cannot be had). */
static char *duplicated_4(uhmm_ctx *ctx, uhmm_device *dev, int fill)
{
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 4 * PG, (void **)&p));
	memset(p, fill, 4 * PG);
	int e = uhmm_advise(ctx, p, 4 * PG, UHMM_ADVISE_READ_MOSTLY, NULL);
	if (e == -EOPNOTSUPP) {
		ASSERT_OK(uhmm_ctx_destroy(ctx));
		TEST_SKIP("read-mostly needs write-protection");
	}
	ASSERT_OK(e);
	ASSERT_OK(uhmm_migrate(ctx, p, 4 * PG, dev, 0));
	assert_int_equal(attrs(ctx, p, 4 * PG)->bytes_duplicated, 4 * PG);
	return p;
}

static void count_invalidate(struct uhmm_notifier *n, const struct uhmm_inv_event *ev,
			     void *priv)
{
	struct inv_count *c = priv;
	(void)n;
	if (ev->start <= c->va && ev->end > c->va)
		atomic_fetch_add(&c->n, 1);
}

/* The set-up of the two tests below: four duplicated pages, page 1 held
 * (as a migration's batch, a collapse or a fill of zeros holds it) when an
 * madvise discards all four, its REMOVE handled (ZAPPED, still PG_DUP),
 * then a snapshot range fault of the four that did not need a retry. */
struct held_dup {
	char *p;
	struct inv_count cnt;
	struct uhmm_notifier *n;
	struct uhmm_range *r;
	struct uhmm_page *pg;
	uint64_t ent[4];
	struct uhmm_range_req req;
	unsigned before; /* invalidations of page 1 counted after the fault */
};

static void held_dup_discarded(uhmm_ctx *ctx, uhmm_device *dev, int fill, struct held_dup *h)
{
	h->p = duplicated_4(ctx, dev, fill);
	uintptr_t p = (uintptr_t)h->p;
	h->cnt = (struct inv_count){ .va = p + PG };
	ASSERT_OK(uhmm_notifier_insert(ctx, p, 4 * PG, count_invalidate, &h->cnt, &h->n));
	h->r = uhmm__range_get(ctx, p + PG);
	assert_non_null(h->r);
	h->pg = range_page(h->r, (p + PG - h->r->start) >> PAGE_SHIFT);
	uhmm__page_lock(h->pg); /* a holder */
	assert_int_equal(madvise(h->p, 4 * PG, MADV_DONTNEED), 0);
	/* Its REMOVE handled (uhmm_sync would wait for our hold). */
	uhmm__events_wait(ctx);
	assert_true(atomic_load(&h->pg->word) & PG_ZAPPED);
	assert_true(atomic_load(&h->pg->word) & PG_DUP);
	h->req = (struct uhmm_range_req){
		.notifier = h->n, .start = p, .end = p + 4 * PG,
		.flags = UHMM_RF_SNAPSHOT, .device = dev, .entries = h->ent,
	};
	ASSERT_OK(uhmm_range_fault(ctx, &h->req));
	assert_false(uhmm_notifier_read_retry(h->n, h->req.notifier_seq));
	h->before = atomic_load(&h->cnt.n);
}

/*
 * A duplicated page someone holds when an madvise discards it: the REMOVE
 * can only mark it ZAPPED, its invalidation is over when it returns, and
 * the duplicates go at the holder's unlock.  A range fault in between may
 * give the device the duplicate's frame (the page still says PG_DUP); the
 * unlock must then tell the mirrors before the frame is freed, else the
 * device keeps mapping a frame that is reused (uhmm-torture --readmostly
 * --sigbus: a device read after an madvise and a CPU write read 186 words
 * of a frame reused since).  The test holds the page, as dup_batch or a
 * collapse does.
 */
static void held_duplicate_discarded_is_invalidated_before_freed(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(0, &dev, NULL);
	struct held_dup h;
	held_dup_discarded(ctx, dev, 0x33, &h);
	char *p = h.p;
	uint64_t *ent = h.ent;
	uhmm__page_unlock(ctx, h.pg); /* frees the duplicate */
	uhmm__range_put(h.r);
	/* Entries of the three pages not held: no duplicate (the REMOVE
	 * dropped them inside its invalidation). */
	for (int i = 0; i < 4; i++)
		if (i != 1 && (ent[i] & UHMM_RE_DEVICE))
			fail_msg("page %d: entry %#llx, a duplicate the discard freed", i,
				 (unsigned long long)ent[i]);
	/* The held page's entry may be its duplicate (a device would map it
	 * now): then its frame is freed only after an invalidation, which
	 * the device's read_retry sees and its callback hears. */
	if (ent[1] & UHMM_RE_DEVICE) {
		assert_true(atomic_load(&h.cnt.n) > h.before);
		assert_true(uhmm_notifier_read_retry(h.n, h.req.notifier_seq));
	}
	assert_int_equal(dev_bytes_settled(dev, 0), 0);
	for (size_t i = 0; i < 4 * PG; i++)
		assert_int_equal(p[i], 0);
	ASSERT_OK(uhmm_notifier_remove(h.n));
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* Invalidations over one page that spare no device's entries (simdev
 * keeps its DEV entries through its own migrations' invalidations). */
struct inv_spare {
	uintptr_t va;
	const struct uhmm_device *dev;
	_Atomic unsigned all; /* sparing nothing */
};

static void spare_invalidate(struct uhmm_notifier *n, const struct uhmm_inv_event *ev,
			     void *priv)
{
	struct inv_spare *c = priv;
	(void)n;
	if (ev->start <= c->va && ev->end > c->va &&
	    !(ev->reason == UHMM_INV_MIGRATE && ev->device == c->dev))
		atomic_fetch_add(&c->all, 1);
}

/*
 * A migration toward a device that finds a page still duplicated (a
 * duplicate made on that device between the migration's collapse and its
 * lock: here the collapse is skipped).  The migration's own invalidation
 * spares the device's DEV entries, the one to its duplicate among them;
 * the duplicate's frame is freed at the unlock: the device must be told
 * by an invalidation that spares nothing, else it keeps reading a freed
 * frame.
 */
static void a_duplicate_a_migration_meets_is_invalidated_for_its_device(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(0, &dev, NULL);
	char *p = duplicated_4(ctx, dev, 0x44);
	struct inv_spare cnt = { .va = (uintptr_t)p + PG, .dev = dev };
	struct uhmm_notifier *n;
	ASSERT_OK(uhmm_notifier_insert(ctx, (uintptr_t)p, 4 * PG, spare_invalidate, &cnt, &n));
	/* The device maps its duplicates. */
	uint64_t ent[4];
	struct uhmm_range_req req = {
		.notifier = n, .start = (uintptr_t)p, .end = (uintptr_t)p + 4 * PG,
		.flags = UHMM_RF_SNAPSHOT, .device = dev, .entries = ent,
	};
	ASSERT_OK(uhmm_range_fault(ctx, &req));
	assert_true(ent[1] & UHMM_RE_DEVICE);
	unsigned before = atomic_load(&cnt.all);
	/* The collapse misses them, as one that ran before they were made. */
	atomic_store(&ctx->rm_any, false);
	ASSERT_OK(uhmm_migrate(ctx, p, 4 * PG, dev, UHMM_MIGRATE_MOVE));
	atomic_store(&ctx->rm_any, true);
	assert_true(atomic_load(&cnt.all) > before);
	assert_true(uhmm_notifier_read_retry(n, req.notifier_seq));
	assert_int_equal(attrs(ctx, p, 4 * PG)->bytes_duplicated, 0);
	ASSERT_OK(uhmm_notifier_remove(n));
	for (size_t i = 0; i < 4 * PG; i++)
		assert_int_equal(p[i], 0x44);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/*
 * A duplicated page discarded while its holder is a fill of zeros (a
 * neighbour in a CPU fault's zero-around window, service.c: the kernel's
 * zap made it missing, the fill locked it, the REMOVE found it held and
 * marked it ZAPPED).  The fill's uhmm__page_unzap clears the mark (zeros
 * are what the discard leaves); the unlock then saw no discard and kept
 * PG_DUP and the duplicates of the discarded data: devices read the old
 * bytes, later another frame's (uhmm-torture --readmostly --sigbus: "a
 * device read after an madvise read the old data", about one run in 100;
 * the event ring showed ZAPPED set on the held page, cleared by the fill,
 * the unlock keeping PG_DUP, then a range fault handing out the frame).
 * The test holds the page and clears the mark as that fill does.
 */
static void duplicates_go_when_a_discarded_page_is_filled(void **state)
{
	(void)state;
	uhmm_device *dev;
	uhmm_ctx *ctx = mkctx(0, &dev, NULL);
	struct held_dup h; /* page 1 held by the fill */
	held_dup_discarded(ctx, dev, 0x57, &h);
	char *p = h.p;
	uint64_t *ent = h.ent;
	uhmm__page_unzap(ctx, h.pg); /* zeros filled in place */
	uhmm__page_unlock(ctx, h.pg);
	uhmm__range_put(h.r);
	assert_false(atomic_load(&h.pg->word) & PG_DUP);
	assert_int_equal(attrs(ctx, p, 4 * PG)->bytes_duplicated, 0);
	/* A duplicate handed out before is invalidated before it is freed. */
	if (ent[1] & UHMM_RE_DEVICE) {
		assert_true(atomic_load(&h.cnt.n) > h.before);
		assert_true(uhmm_notifier_read_retry(h.n, h.req.notifier_seq));
	}
	ASSERT_OK(uhmm_range_fault(ctx, &h.req));
	for (int i = 0; i < 4; i++)
		if (ent[i] & UHMM_RE_DEVICE)
			fail_msg("page %d: entry %#llx, a duplicate of discarded data", i,
				 (unsigned long long)ent[i]);
	assert_int_equal(dev_bytes_settled(dev, 0), 0);
	/* The device reads what the discard left. */
	struct karg k = { .buf = (uint64_t *)(void *)p };
	ASSERT_OK(uhmm_simdev_launch(dev, k_read, 4, &k));
	assert_int_equal(atomic_load(&k.sum), 0);
	ASSERT_OK(uhmm_notifier_remove(h.n));
	for (size_t i = 0; i < 4 * PG; i++)
		assert_int_equal(p[i], 0);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* The populate hook (rangefault.c): device dev reads, duplicating
 * [p, p + len), just before a write range fault's first populate. */
static struct {
	uhmm_device *dev;
	void *p;
	size_t len;
	_Atomic int calls;
	int err;
} redup;

static void dup_before_populate(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
				bool write)
{
	(void)start;
	(void)end;
	if (!write || atomic_fetch_add(&redup.calls, 1))
		return;
	redup.err = uhmm_migrate(ctx, redup.p, redup.len, redup.dev, UHMM_MIGRATE_DUPLICATE);
}

/*
 * SIGBUS mode: a write range fault collapses the range's duplicates, then
 * populates; another device's read in between duplicates the pages again
 * and write-protects them, and MADV_POPULATE_WRITE cannot wait for a
 * write-protect fault in this mode (it fails EFAULT).  The populate's
 * retries must collapse them again, else the range fault fails -EFAULT
 * after 2 s of retries (uhmm-torture --readmostly --sigbus:
 * "uhmm_simdev_launch(write) = -14", about one run in 60-100).
 */
static void a_duplicate_made_before_a_write_populate_is_collapsed(void **state)
{
	(void)state;
	uhmm_device *a, *b;
	uhmm_ctx *ctx = mkctx(UHMM_CTX_SIGBUS, &a, &b);
	char *p = duplicated_4(ctx, a, 0x5a);
	redup.dev = b;
	redup.p = p;
	redup.len = 4 * PG;
	atomic_store(&redup.calls, 0);
	redup.err = 0;
	atomic_store(&uhmm__rf_populate_hook, dup_before_populate);
	uint64_t ent[4];
	struct uhmm_range_req req = {
		.start = (uintptr_t)p, .end = (uintptr_t)p + 4 * PG,
		.flags = UHMM_RF_FAULT_WRITE, .device = a, .entries = ent,
	};
	int err = uhmm_range_fault(ctx, &req);
	atomic_store(&uhmm__rf_populate_hook, NULL);
	ASSERT_OK(redup.err);
	assert_true(atomic_load(&redup.calls) >= 1);
	ASSERT_OK(err);
	for (int i = 0; i < 4; i++)
		if ((ent[i] & (UHMM_RE_VALID | UHMM_RE_WRITE | UHMM_RE_DEVICE)) !=
		    (UHMM_RE_VALID | UHMM_RE_WRITE))
			fail_msg("page %d: entry %#llx, not a writable system page", i,
				 (unsigned long long)ent[i]);
	assert_int_equal(attrs(ctx, p, 4 * PG)->bytes_duplicated, 0);
	assert_int_equal(dev_bytes_settled(b, 0), 0);
	for (size_t i = 0; i < 4 * PG; i++)
		assert_int_equal(p[i], 0x5a);
	p[PG] = 0x11;
	assert_int_equal(p[PG], 0x11);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(duplicate_and_collapse_full),
	cmocka_unit_test(duplicate_and_collapse_user_mode_only),
	cmocka_unit_test(duplicate_and_collapse_sigbus),
	cmocka_unit_test(cpu_writes_are_never_lost),
	cmocka_unit_test(migrate_duplicate_flag),
	cmocka_unit_test(two_devices_duplicate),
	cmocka_unit_test(unset_and_migrate),
	cmocka_unit_test(fork_with_duplicates),
	cmocka_unit_test(munmap_frees_duplicates),
	cmocka_unit_test(detach_drops_duplicates),
	cmocka_unit_test(free_drops_duplicates),
	cmocka_unit_test(a_dup_being_made_makes_the_request_wait_not_fail),
	cmocka_unit_test(held_duplicate_discarded_is_invalidated_before_freed),
	cmocka_unit_test(a_duplicate_a_migration_meets_is_invalidated_for_its_device),
	cmocka_unit_test(a_duplicate_made_before_a_write_populate_is_collapsed),
	cmocka_unit_test(duplicates_go_when_a_discarded_page_is_filled),
};

UHMM_TEST_MAIN(tests)
