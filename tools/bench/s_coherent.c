/* SPDX-License-Identifier: MIT */
/*
 * Scenario 9: coherent device memory (issue 19).
 *
 * A simdev in coherent mode (its memory mapped into place at the pages'
 * addresses: uhmm_simdev_opts.coherent) holds LEN bytes (256 MiB; 64 MiB
 * with --quick), written by the CPU and migrated there.  The CPU then reads
 * them where they are (read_sum: every word), REPS times after one untimed
 * pass: no fault, no migration back (the scenario fails if a fault or a
 * migration home is counted).
 *
 * Baselines, in the same run: memcpy of LEN bytes between warm buffers
 * (memcpy_gbps), and the same read of LEN bytes of ordinary memory.
 * coherent_cpu_read_vs_memcpy_ratio = read GB/s / memcpy GB/s (target
 * >= 0.9: reading the device's memory costs what touching system memory
 * costs; a read moves half the bytes of a copy, so it is usually well
 * above 1); coherent_cpu_read_vs_system_read_ratio the same against the
 * plain read (about 1: the memory is ordinary memory here; on a CXL
 * expander it would show the link).  Also reported: the migration to the
 * coherent device (copy into frames + move into place), in GB/s.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static double median_read_gbps(const void *p, size_t len, int reps, uint64_t *sink)
{
	double *v = calloc((size_t)reps, sizeof(double));
	if (!v)
		return 0;
	*sink += read_sum(p, len); /* warm: untimed */
	for (int r = 0; r < reps; r++) {
		uint64_t t0 = now_ns();
		*sink += read_sum(p, len);
		v[r] = gbps(len, now_ns() - t0);
	}
	double m = dist_of(v, (size_t)reps).median;
	free(v);
	return m;
}

int sc_coherent(struct bench_sc *sc)
{
	size_t len = (cfg.quick ? 64ul : 256ul) << 20;
	int reps = cfg.quick ? 3 : (cfg.reps > 0 ? cfg.reps : 5);
	uhmm_ctx *ctx;
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.spin_us = cfg.spin_us;
	BCHECK(sc, uhmm_ctx_create(&o, &ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = len + UHMM_HUGE_SIZE;
	so.coherent = 1;
	uhmm_device *dev;
	int e = uhmm_simdev_create(ctx, &so, &dev);
	if (e < 0) {
		uhmm_ctx_destroy(ctx);
		return bench_fail(sc, "uhmm_simdev_create(coherent)", e);
	}
	char *p = NULL;
	e = uhmm_alloc(ctx, len, (void **)&p);
	if (e < 0) {
		uhmm_ctx_destroy(ctx);
		return bench_fail(sc, "uhmm_alloc", e);
	}
	for (size_t i = 0; i < len; i += 8)
		*(uint64_t *)(p + i) = i;
	bench_progress("coherent: migrating %zu MiB to the coherent device", len >> 20);
	uint64_t t0 = now_ns();
	e = uhmm_migrate(ctx, p, len, dev, 0);
	uint64_t tm = now_ns() - t0;
	if (e < 0) {
		uhmm_ctx_destroy(ctx);
		return bench_fail(sc, "uhmm_migrate(coherent)", e);
	}
	struct uhmm_stats s0, s1;
	uhmm_stats_get(ctx, &s0);
	uint64_t sink = 0;
	double coh = median_read_gbps(p, len, reps, &sink);
	uhmm_stats_get(ctx, &s1);
	uint64_t faults = s1.cpu_faults - s0.cpu_faults;
	uint64_t back = s1.migrated_to_system_pages - s0.migrated_to_system_pages;
	struct uhmm_device_stats ds;
	uhmm_device_stats(dev, &ds);
	uint64_t want = 8 * ((uint64_t)(len / 8) * (len / 8 - 1) / 2); /* sum of the offsets */
	bool right = read_sum(p, len) == want;
	uhmm_ctx_destroy(ctx);

	bench_progress("coherent: baselines");
	char *q = map_anon(len);
	if (!q)
		return bench_fail(sc, "map_anon", -ENOMEM);
	touch_write(q, len);
	double sys = median_read_gbps(q, len, reps, &sink);
	munmap(q, len);
	double mc = memcpy_gbps(len, len, reps);

	bench_fig(sc, "coherent_migrate_gbps", gbps(len, tm), "GB/s",
		  "migration to coherent memory (copy + move into place)");
	bench_fig(sc, "coherent_cpu_read_gbps", coh, "GB/s",
		  "CPU read of data resident in coherent memory");
	bench_fig(sc, "coherent_cpu_read_faults", (double)faults, "",
		  "CPU faults during the reads");
	bench_goal(sc, '=', 0);
	bench_fig(sc, "coherent_pages_resident", (double)ds.coherent_pages, "",
		  "pages in place on the device after the reads");
	bench_base(sc, "memcpy_gbps", mc, "GB/s", "memcpy, warm buffers");
	bench_base(sc, "system_read_gbps", sys, "GB/s", "the same read of system memory");
	bench_ratio(sc, "coherent_cpu_read_vs_memcpy", mc > 0 ? coh / mc : 0,
		    "coherent read / memcpy");
	bench_goal(sc, '>', 0.9);
	bench_ratio(sc, "coherent_cpu_read_vs_system_read", sys > 0 ? coh / sys : 0,
		    "coherent read / system read");
	bench_note(sc, "%zu MiB, median of %d reads; pages migrated home during the reads: %llu",
		   len >> 20, reps, (unsigned long long)back);
	if (!right || back || ds.coherent_pages != len / PAGE)
		return bench_fail(sc, right ? "pages left the coherent device" : "wrong data read",
				  -EIO);
	(void)sink;
	return 0;
}
