/* SPDX-License-Identifier: MIT */
/*
 * Scenario 5: device faults.
 *
 * A kernel reads one word per page of a 64 MiB range (one work item per
 * page) that the device does not map, so every page's first access is a
 * device fault.  Two simdevs on one context run the same workload: one
 * with the default fault_batch (256), one with fault_batch = 1 (faults
 * serviced one at a time).  Two placement policies: migrate on touch (the
 * default: a fault migrates its 2 MiB block) and MAP_REMOTE (a fault maps
 * the system pages, with map-around).  Between runs the range comes home
 * (uhmm_migrate to NULL) and the mirrors are invalidated (uhmm_mprotect
 * with unchanged rights), so every run starts from the same state.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void read_word_per_page(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	(void)uhmm_simdev_ld64(wi, (const char *)arg + idx * PAGE);
}

struct run {
	double wall_ns;
	struct uhmm_simdev_stats d;
};

static int one_run(uhmm_ctx *ctx, uhmm_device *dev, char *buf, size_t len, struct run *out)
{
	int e;
	if ((e = uhmm_migrate(ctx, buf, len, NULL, 0)) < 0)
		return e;
	if ((e = uhmm_mprotect(ctx, buf, len, PROT_READ | PROT_WRITE)) < 0)
		return e;
	struct uhmm_simdev_stats s0, s1;
	uhmm_simdev_stats(dev, &s0);
	uint64_t t = now_ns();
	if ((e = uhmm_simdev_launch(dev, read_word_per_page, len / PAGE, buf)) < 0)
		return e;
	out->wall_ns = (double)(now_ns() - t);
	uhmm_simdev_stats(dev, &s1);
#define D(f) out->d.f = s1.f - s0.f
	D(faults);
	D(fault_batches);
	D(fault_duplicates);
	D(fault_resolutions);
	D(fault_service_ns);
	D(migrations);
	D(remote_maps);
#undef D
	return 0;
}

struct agg {
	double wall_ms, faults_per_s, service_faults_per_s, mean_batch, dups, faults;
};

/* Median over runs of each figure. */
static struct agg aggregate(struct run *r, int n)
{
	double *v = calloc((size_t)n, sizeof(double));
	struct agg a = { NAN, NAN, NAN, NAN, NAN, NAN };
	if (!v)
		return a;
#define MED(expr, field)                                                       \
	do {                                                                   \
		for (int i = 0; i < n; i++)                                    \
			v[i] = (expr);                                         \
		a.field = dist_of(v, (size_t)n).median;                        \
	} while (0)
	MED(r[i].wall_ns / 1e6, wall_ms);
	MED((double)r[i].d.faults / (r[i].wall_ns * 1e-9), faults_per_s);
	MED(r[i].d.fault_service_ns ? (double)r[i].d.faults / ((double)r[i].d.fault_service_ns * 1e-9) : NAN,
	    service_faults_per_s);
	MED(r[i].d.fault_batches ? (double)r[i].d.faults / (double)r[i].d.fault_batches : NAN, mean_batch);
	MED((double)r[i].d.fault_duplicates, dups);
	MED((double)r[i].d.faults, faults);
#undef MED
	free(v);
	return a;
}

int sc_devfault(struct bench_sc *sc)
{
	size_t len = cfg.quick ? (size_t)8 << 20 : (size_t)64 << 20;
	int reps = cfg.reps;
	uhmm_ctx *ctx;
	uhmm_device *batched, *single = NULL;
	int e = make_ctx(sc, 0, 0, len + (16u << 20), &ctx, &batched);
	if (e < 0)
		return e;
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = len + (16u << 20);
	so.fault_batch = 1;
	so.name = "simdev-batch1";
	char *buf = NULL;
	struct run *rb = calloc((size_t)reps, sizeof(*rb)), *rs = calloc((size_t)reps, sizeof(*rs));
	if (!rb || !rs) {
		e = -ENOMEM;
		goto out;
	}
	if ((e = uhmm_simdev_create(ctx, &so, &single)) < 0) {
		bench_fail(sc, "uhmm_simdev_create fault_batch=1", e);
		goto out;
	}
	if ((e = uhmm_alloc(ctx, len, (void **)&buf)) < 0) {
		bench_fail(sc, "uhmm_alloc", e);
		goto out;
	}
	memset(buf, 0x33, len);

	static const struct {
		enum uhmm_simdev_advice adv;
		const char *key, *what;
	} pol[] = {
		{ UHMM_SIMDEV_MIGRATE_ON_TOUCH, "migrate", "migrate on touch" },
		{ UHMM_SIMDEV_MAP_REMOTE, "remote", "map remote" },
	};
	for (size_t p = 0; p < 2; p++) {
		bench_progress("  devfault: %s, %zu MiB, fault_batch 256 vs 1", pol[p].what, len >> 20);
		if ((e = uhmm_simdev_advise(batched, buf, len, pol[p].adv)) < 0 ||
		    (e = uhmm_simdev_advise(single, buf, len, pol[p].adv)) < 0) {
			bench_fail(sc, "uhmm_simdev_advise", e);
			goto out;
		}
		for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
			struct run tmp;
			if ((e = one_run(ctx, batched, buf, len, r < 0 ? &tmp : &rb[r])) < 0 ||
			    (e = one_run(ctx, single, buf, len, r < 0 ? &tmp : &rs[r])) < 0) {
				bench_fail(sc, "device-fault run", e);
				goto out;
			}
		}
		struct agg b = aggregate(rb, reps), s = aggregate(rs, reps);
		char k[64], w[112];
#define FIG(fn, agg, name, unit, desc)                                                 \
	do {                                                                           \
		snprintf(k, sizeof(k), "%s_%s", pol[p].key, name);                     \
		snprintf(w, sizeof(w), "%s: %s", pol[p].what, desc);                   \
		fn(sc, k, agg, unit, w);                                               \
	} while (0)
		FIG(bench_fig, b.faults_per_s, "faults_per_s", "/s", "faults per second of kernel time");
		FIG(bench_fig, b.service_faults_per_s, "service_faults_per_s", "/s",
		    "faults per second of service-pass time");
		FIG(bench_fig, b.mean_batch, "mean_batch", "", "mean faults per service pass");
		FIG(bench_fig, b.dups, "duplicates", "", "duplicates removed per run");
		FIG(bench_fig, b.faults, "faults", "", "device faults per run");
		FIG(bench_fig, b.wall_ms, "kernel_ms", "ms", "kernel time (median)");
		FIG(bench_base, s.faults_per_s, "batch1_faults_per_s", "/s", "fault_batch=1: faults per second");
		FIG(bench_base, s.service_faults_per_s, "batch1_service_faults_per_s", "/s",
		    "fault_batch=1: faults per second of service time");
		FIG(bench_base, s.dups, "batch1_duplicates", "", "fault_batch=1: duplicates per run");
		FIG(bench_base, s.faults, "batch1_faults", "", "fault_batch=1: device faults per run");
		FIG(bench_base, s.wall_ms, "batch1_kernel_ms", "ms", "fault_batch=1: kernel time (median)");
#undef FIG
		snprintf(k, sizeof(k), "%s_batched_vs_single_time", pol[p].key);
		snprintf(w, sizeof(w), "%s: kernel time, fault_batch=1 / batched", pol[p].what);
		bench_ratio(sc, k, s.wall_ms / b.wall_ms, w);
		snprintf(k, sizeof(k), "%s_batched_vs_single_faults_per_s", pol[p].key);
		snprintf(w, sizeof(w), "%s: faults/s, batched / fault_batch=1", pol[p].what);
		bench_ratio(sc, k, b.faults_per_s / s.faults_per_s, w);
	}
	bench_note(sc, "%zu MiB, one work item per page (%zu), each reading one word; simdev default 2 units x 8 lanes",
		   len >> 20, len / PAGE);
out:
	free(rb);
	free(rs);
	if (buf)
		uhmm_free(ctx, buf);
	uhmm_ctx_destroy(ctx);
	return e < 0 ? e : 0;
}
