/* SPDX-License-Identifier: MIT */
/*
 * uhmm-demo - the round trip of a buffer through a software device.
 *
 * 256 MiB of managed memory: filled by the CPU through a plain pointer,
 * migrated to a simdev, checked there (read back through the device's copy
 * engine), then touched by several CPU threads so that it comes back by
 * page faults, and checked byte for byte.  Prints each phase's throughput
 * and the context's counters.  Then the device computes: a SAXPY and a
 * histogram with atomics run as simdev kernels over managed memory that the
 * CPU initialised with plain pointers, and the CPU reads the results back
 * with plain pointers; the device fault counters are printed.
 *
 *   uhmm-demo [--size MiB] [--threads N]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t pattern(size_t i)
{
	uint64_t x = i * 0x9e3779b97f4a7c15ull;
	return x ^ (x >> 29);
}

#define CHECK(call)                                                            \
	do {                                                                   \
		int e_ = (call);                                               \
		if (e_ < 0) {                                                  \
			fprintf(stderr, "uhmm-demo: %s: %s\n", #call,          \
				uhmm_strerror(e_));                            \
			exit(1);                                               \
		}                                                              \
	} while (0)

struct worker {
	uint64_t *base;
	size_t first, count; /* in words */
	size_t bad;
	pthread_t tid;
};

static void *touch_and_check(void *arg)
{
	struct worker *w = arg;
	for (size_t i = w->first; i < w->first + w->count; i++)
		if (w->base[i] != pattern(i))
			w->bad++;
	return NULL;
}

/* ---- device kernels: they reach memory only through the accessors ---- */

struct saxpy_args {
	float a;
	const float *x;
	float *y;
};

static void saxpy(uhmm_simdev_item *wi, uint64_t i, void *arg)
{
	struct saxpy_args *s = arg;
	uint32_t xb = uhmm_simdev_ld32(wi, &s->x[i]), yb = uhmm_simdev_ld32(wi, &s->y[i]);
	float x, y;
	memcpy(&x, &xb, 4);
	memcpy(&y, &yb, 4);
	y = s->a * x + y;
	memcpy(&yb, &y, 4);
	uhmm_simdev_st32(wi, &s->y[i], yb);
}

#define NBINS 64
struct hist_args {
	const uint32_t *in;
	uint32_t *bins;
};

static void histogram(uhmm_simdev_item *wi, uint64_t i, void *arg)
{
	struct hist_args *h = arg;
	uint32_t v = uhmm_simdev_ld32(wi, &h->in[i]);
	uhmm_simdev_atomic_add32(wi, &h->bins[v % NBINS], 1);
}

#define NCTR 64
#define PAGE_WORDS 512
struct ctr_args {
	uint64_t *ctr; /* counter k at ctr[k * PAGE_WORDS]: one per page */
};

static void count_up(uhmm_simdev_item *wi, uint64_t i, void *arg)
{
	struct ctr_args *c = arg;
	uhmm_simdev_atomic_add64(wi, &c->ctr[(i % NCTR) * PAGE_WORDS], 1);
}

struct cpu_counter {
	uint64_t *ctr;
	uint64_t n;
	pthread_t tid;
};

static void *cpu_count_up(void *arg)
{
	struct cpu_counter *c = arg;
	for (uint64_t i = 0; i < c->n; i++)
		__atomic_fetch_add(&c->ctr[(i % NCTR) * PAGE_WORDS], 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void phase(const char *what, double secs, size_t bytes)
{
	printf("  %-40s %8.1f ms %9.0f MB/s\n", what, secs * 1e3,
	       (double)bytes / secs / 1e6);
}

int main(int argc, char **argv)
{
	size_t mib = 256, nthreads = 4;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--size") && i + 1 < argc)
			mib = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			nthreads = strtoul(argv[++i], NULL, 0);
		else {
			fprintf(stderr, "usage: %s [--size MiB] [--threads N]\n", argv[0]);
			return 2;
		}
	}
	if (!mib || !nthreads || nthreads > 64) {
		fprintf(stderr, "uhmm-demo: bad size or thread count\n");
		return 2;
	}
	size_t len = mib << 20, words = len / 8;

	uhmm_ctx *ctx;
	CHECK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_ctx_info info;
	CHECK(uhmm_ctx_info(ctx, &info));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = (uint64_t)(mib + 64) << 20;
	uhmm_device *dev;
	CHECK(uhmm_simdev_create(ctx, &so, &dev));

	printf("uhmm-demo: %zu MiB through %s (%s mode, %s, fault-around %u)\n",
	       mib, uhmm_device_name(dev),
	       info.user_mode_only ? "user-only" : "full",
	       info.has_move ? "UFFDIO_MOVE" : "UFFDIO_COPY", info.fault_around);

	uint64_t *buf;
	CHECK(uhmm_alloc(ctx, len, (void **)&buf));

	double t = now();
	for (size_t i = 0; i < words; i++)
		buf[i] = pattern(i);
	phase("CPU fill (first touch, zero-fill faults)", now() - t, len);

	t = now();
	CHECK(uhmm_migrate(ctx, buf, len, dev, 0));
	phase("migrate to device (copy engine)", now() - t, len);

	/* Verify the device copy: read every page back through the device's
	 * own copy engine (512 pages a batch), without bringing pages home. */
	const struct uhmm_device_ops *ops = uhmm_device_ops_of(dev);
	enum { VB = 512 };
	uint64_t *probe = malloc((size_t)VB * 4096);
	struct uhmm_copy *cp = calloc(VB, sizeof(*cp));
	size_t *pgs = calloc(VB, sizeof(*pgs));
	size_t dev_bad = 0, on_device = 0, npages = len / 4096;
	t = now();
	for (size_t pg = 0; pg < npages;) {
		size_t nc = 0;
		for (; pg < npages && nc < VB; pg++) {
			struct uhmm_page_info pi;
			CHECK(uhmm_page_query(ctx, (char *)buf + pg * 4096, &pi));
			if (pi.where != UHMM_WHERE_DEVICE || pi.device != dev)
				continue;
			cp[nc] = (struct uhmm_copy){ .sys = (char *)probe + nc * 4096,
						     .dpfn = pi.dpfn, .npages = 1,
						     .dir = UHMM_COPY_FROM_DEVICE };
			pgs[nc++] = pg;
		}
		if (!nc)
			continue;
		uhmm_fence_t f;
		CHECK(ops->copy_submit(uhmm_device_priv(dev), cp, nc, &f));
		CHECK(ops->copy_wait(uhmm_device_priv(dev), f));
		on_device += nc;
		for (size_t k = 0; k < nc; k++)
			for (size_t x = 0; x < 512; x++)
				dev_bad += probe[k * 512 + x] != pattern(pgs[k] * 512 + x);
	}
	phase("verify device copy (device reads)", now() - t, len);
	free(probe);
	free(cp);
	free(pgs);

	struct worker *w = calloc(nthreads, sizeof(*w));
	size_t per = words / nthreads;
	t = now();
	for (size_t i = 0; i < nthreads; i++) {
		w[i].base = buf;
		w[i].first = i * per;
		w[i].count = i + 1 == nthreads ? words - i * per : per;
		pthread_create(&w[i].tid, NULL, touch_and_check, &w[i]);
	}
	size_t cpu_bad = 0;
	for (size_t i = 0; i < nthreads; i++) {
		pthread_join(w[i].tid, NULL);
		cpu_bad += w[i].bad;
	}
	double back = now() - t;
	char what[64];
	snprintf(what, sizeof(what), "CPU touch by %zu threads (fault back)", nthreads);
	phase(what, back, len);
	free(w);

	struct uhmm_stats st;
	CHECK(uhmm_stats_get(ctx, &st));
	printf("\n  pages on device after migrate: %zu of %zu\n", on_device, len / 4096);
	printf("  migrated to device: %llu pages, back: %llu pages\n",
	       (unsigned long long)st.migrated_to_device_pages,
	       (unsigned long long)st.migrated_to_system_pages);
	printf("  CPU faults: %llu (%llu brought data back, %llu waited on a busy page,"
	       " %llu pages by fault-around)\n",
	       (unsigned long long)st.cpu_faults, (unsigned long long)st.cpu_faults_device,
	       (unsigned long long)st.cpu_faults_waited,
	       (unsigned long long)st.fault_around_pages);
	printf("  copy engine: %llu batches, %.1f ms\n",
	       (unsigned long long)st.copy_batches, (double)st.copy_ns / 1e6);
	printf("  page-state metadata: %llu bytes (%.1f per 4 KiB page)\n",
	       (unsigned long long)st.metadata_bytes,
	       (double)st.metadata_bytes / (double)(st.managed_pages ? st.managed_pages : 1));

	/* ---- compute on the device over memory the CPU initialised ---- */
	size_t n = (size_t)16 << 20 >> 2; /* 4 Mi elements, 16 MiB a vector */
	if (n > words / 2)
		n = words / 2;
	float *x, *y;
	CHECK(uhmm_alloc(ctx, n * 4, (void **)&x));
	CHECK(uhmm_alloc(ctx, n * 4, (void **)&y));
	for (size_t i = 0; i < n; i++) {
		x[i] = (float)(i % 1000);
		y[i] = 1.0f;
	}
	struct uhmm_simdev_stats d0, d1;
	CHECK(uhmm_simdev_stats(dev, &d0));
	struct saxpy_args sa = { .a = 2.0f, .x = x, .y = y };
	t = now();
	CHECK(uhmm_simdev_launch(dev, saxpy, n, &sa));
	phase("SAXPY on the device (faults migrate)", now() - t, n * 12);
	size_t saxpy_bad = 0;
	t = now();
	for (size_t i = 0; i < n; i++) /* plain pointers: pages come back */
		saxpy_bad += y[i] != 2.0f * (float)(i % 1000) + 1.0f;
	phase("CPU reads the result (fault back)", now() - t, n * 4);

	uint32_t *in, *bins;
	CHECK(uhmm_alloc(ctx, n * 4, (void **)&in));
	CHECK(uhmm_alloc(ctx, NBINS * 4, (void **)&bins));
	uint64_t expect[NBINS] = { 0 };
	for (size_t i = 0; i < n; i++) {
		in[i] = (uint32_t)pattern(i);
		expect[in[i] % NBINS]++;
	}
	struct hist_args ha = { .in = in, .bins = bins };
	t = now();
	CHECK(uhmm_simdev_launch(dev, histogram, n, &ha));
	phase("histogram with device atomics", now() - t, n * 4);
	size_t hist_bad = 0;
	for (size_t b = 0; b < NBINS; b++)
		hist_bad += bins[b] != expect[b];
	CHECK(uhmm_simdev_stats(dev, &d1));
	printf("\n  device faults: %llu in %llu batches (mean %.1f a batch), %llu duplicates"
	       " removed, %llu pages resolved, %.1f ms servicing\n",
	       (unsigned long long)(d1.faults - d0.faults),
	       (unsigned long long)(d1.fault_batches - d0.fault_batches),
	       (double)(d1.faults - d0.faults) /
		       (double)(d1.fault_batches - d0.fault_batches ? d1.fault_batches - d0.fault_batches : 1),
	       (unsigned long long)(d1.fault_duplicates - d0.fault_duplicates),
	       (unsigned long long)(d1.fault_resolutions - d0.fault_resolutions),
	       (double)(d1.fault_service_ns - d0.fault_service_ns) / 1e6);
	printf("  SAXPY: %s; histogram: %s\n", saxpy_bad ? "MISMATCH" : "every element right",
	       hist_bad ? "MISMATCH" : "every bin exact");
	CHECK(uhmm_free(ctx, x));
	CHECK(uhmm_free(ctx, y));
	CHECK(uhmm_free(ctx, in));
	CHECK(uhmm_free(ctx, bins));

	/* ---- one set of counters, incremented by the device and the CPU at
	 * once: device atomics take the pages exclusively, CPU touches revoke */
	uint64_t *ctr;
	CHECK(uhmm_alloc(ctx, NCTR * 4096, (void **)&ctr));
	for (size_t k = 0; k < NCTR; k++)
		ctr[k * PAGE_WORDS] = 0; /* the CPU touches them first */
	enum { PER_SIDE = 100000 };
	struct uhmm_stats e0, e1;
	CHECK(uhmm_stats_get(ctx, &e0));
	struct cpu_counter cc[2] = { { .ctr = ctr, .n = PER_SIDE }, { .ctr = ctr, .n = PER_SIDE } };
	struct ctr_args ca = { .ctr = ctr };
	t = now();
	for (int k = 0; k < 2; k++)
		pthread_create(&cc[k].tid, NULL, cpu_count_up, &cc[k]);
	CHECK(uhmm_simdev_launch(dev, count_up, PER_SIDE, &ca));
	for (int k = 0; k < 2; k++)
		pthread_join(cc[k].tid, NULL);
	double ct = now() - t;
	uint64_t total = 0;
	for (size_t k = 0; k < NCTR; k++)
		total += ctr[k * PAGE_WORDS];
	CHECK(uhmm_stats_get(ctx, &e1));
	uint64_t revokes = e1.exclusive_revocations - e0.exclusive_revocations;
	printf("\n  shared counters: device + 2 CPU threads, %d increments each side:"
	       " total %llu of %llu (%s) in %.1f ms\n", PER_SIDE,
	       (unsigned long long)total, 3ull * PER_SIDE,
	       total == 3ull * PER_SIDE ? "exact" : "LOST INCREMENTS", ct * 1e3);
	printf("  exclusive grabs %llu, revocations %llu (mean %.1f us each)\n",
	       (unsigned long long)(e1.exclusive_grabs - e0.exclusive_grabs),
	       (unsigned long long)revokes,
	       revokes ? (double)(e1.exclusive_revoke_ns - e0.exclusive_revoke_ns) / 1e3 /
				 (double)revokes
		       : 0.0);
	CHECK(uhmm_free(ctx, ctr));

	bool ok = dev_bad == 0 && cpu_bad == 0 && on_device == len / 4096 &&
		  saxpy_bad == 0 && hist_bad == 0 && total == 3ull * PER_SIDE;
	printf("\n  device copy: %s; CPU view: %s\n",
	       dev_bad ? "MISMATCH" : "every byte right",
	       cpu_bad ? "MISMATCH" : "every byte right");
	CHECK(uhmm_free(ctx, buf));
	CHECK(uhmm_ctx_destroy(ctx));
	printf("uhmm-demo: %s\n", ok ? "OK" : "FAILED");
	return ok ? 0 : 1;
}
