/* SPDX-License-Identifier: MIT */
/*
 * Scenario 3: same-page contention.
 *
 * P device-resident pages; 8 threads, released together by a barrier, read
 * every page in the same order, so all eight fault on each page at once.
 * fault_around = 1, so each page is its own migration.  uhmm must migrate
 * each page once (uhmm_stats.migrated_to_system_pages / P == 1).  The
 * baseline is the same work done by one thread.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NTHREADS 8

struct toucher {
	pthread_barrier_t *bar;
	const char *buf;
	size_t npages;
	pthread_t tid;
	uint64_t sum;
};

static void *touch_all(void *arg)
{
	struct toucher *t = arg;
	pthread_barrier_wait(t->bar);
	for (size_t i = 0; i < t->npages; i++)
		t->sum += (unsigned char)((const volatile char *)t->buf)[i * PAGE];
	return NULL;
}

/* One round with nthr threads: returns the elapsed ns or a negative errno. */
static int64_t round_of(const char *buf, size_t npages, int nthr)
{
	static struct toucher t[NTHREADS];
	pthread_barrier_t *bar = malloc(sizeof(*bar));
	if (!bar)
		return -ENOMEM;
	pthread_barrier_init(bar, NULL, (unsigned)nthr + 1);
	for (int i = 0; i < nthr; i++) {
		t[i] = (struct toucher){ .bar = bar, .buf = buf, .npages = npages };
		int e = pthread_create(&t[i].tid, NULL, touch_all, &t[i]);
		if (e)
			return -e; /* threads started wait on the (leaked) barrier forever */
	}
	pthread_barrier_wait(bar);
	uint64_t t0 = now_ns();
	for (int i = 0; i < nthr; i++)
		pthread_join(t[i].tid, NULL);
	uint64_t el = now_ns() - t0;
	pthread_barrier_destroy(bar);
	free(bar);
	return (int64_t)el;
}

int sc_contention(struct bench_sc *sc)
{
	size_t npages = cfg.quick ? 64 : 512, len = npages * PAGE;
	int rounds = cfg.quick ? 3 : 15;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	int e = make_ctx(sc, 0, 1, 64u << 20, &ctx, &dev);
	if (e < 0)
		return e;
	char *buf = NULL;
	double *v1 = calloc((size_t)rounds, sizeof(double)), *v8 = calloc((size_t)rounds, sizeof(double));
	if (!v1 || !v8) {
		e = -ENOMEM;
		goto out;
	}
	if ((e = uhmm_alloc(ctx, len, (void **)&buf)) < 0) {
		bench_fail(sc, "uhmm_alloc", e);
		goto out;
	}
	memset(buf, 0x42, len);
	uint64_t mig8 = 0, waited8 = 0, faults8 = 0;
	for (int r = -1; r < rounds; r++) { /* r = -1: warm-up */
		for (int which = 0; which < 2; which++) {
			int nthr = which ? NTHREADS : 1;
			if ((e = uhmm_migrate(ctx, buf, len, dev, 0)) < 0) {
				bench_fail(sc, "uhmm_migrate to device", e);
				goto out;
			}
			struct uhmm_stats s0, s1;
			uhmm_stats_get(ctx, &s0);
			int64_t el = round_of(buf, npages, nthr);
			if (el < 0) {
				e = (int)el;
				bench_fail(sc, "pthread_create", e);
				goto out;
			}
			uhmm_stats_get(ctx, &s1);
			if (r < 0)
				continue;
			(which ? v8 : v1)[r] = (double)el;
			if (which) {
				mig8 += s1.migrated_to_system_pages - s0.migrated_to_system_pages;
				waited8 += s1.cpu_faults_waited - s0.cpu_faults_waited;
				faults8 += s1.cpu_faults - s0.cpu_faults;
			}
		}
	}
	struct dist d1 = dist_of(v1, (size_t)rounds), d8 = dist_of(v8, (size_t)rounds);
	double per_page = (double)mig8 / (double)(npages * (size_t)rounds);
	bench_fig(sc, "migrations_per_page", per_page, "", "8 threads: migrations per page (uhmm_stats)");
	bench_goal(sc, '=', 1.0);
	bench_fig(sc, "threads8_ms", d8.median / 1e6, "ms", "8 threads, all pages: total time (median)");
	bench_fig(sc, "threads8_us_per_page", d8.median / 1e3 / (double)npages, "us", "8 threads: time per page");
	bench_fig(sc, "faults_per_page", (double)faults8 / (double)(npages * (size_t)rounds), "",
		  "8 threads: CPU faults served per page");
	bench_fig(sc, "waited_per_page", (double)waited8 / (double)(npages * (size_t)rounds), "",
		  "8 threads: faults that waited on a busy page, per page");
	bench_base(sc, "threads1_ms", d1.median / 1e6, "ms", "1 thread, same pages: total time (median)");
	bench_base(sc, "threads1_us_per_page", d1.median / 1e3 / (double)npages, "us", "1 thread: time per page");
	bench_ratio(sc, "threads8_vs_threads1", d8.median / d1.median, "8 threads time / 1 thread time");
	bench_note(sc, "%zu pages, fault_around=1, %d rounds of each; 2 cores: 8 threads cannot run at once",
		   npages, rounds);
out:
	free(v1);
	free(v8);
	if (buf)
		uhmm_free(ctx, buf);
	uhmm_ctx_destroy(ctx);
	return e < 0 ? e : 0;
}
