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
 *
 * Then peer access (issue 19): two simdevs on the nvlink preset (peers at
 * 360 GB/s, 1 us), PEER_LEN bytes (32 MiB; 8 MiB with --quick) on device
 * 0, and a kernel on device 1 summing every word once (a work item a
 * page).  Either device 1 maps device 0's pages in place over the peer
 * link (uhmm_simdev_peer_access, MAP_REMOTE advice: nothing migrates), or
 * the data is migrated to device 1 first (charged at the peer link) and
 * the kernel runs on local memory.  Reported: both times (migration
 * included in the second), coherent_peer_access_vs_migrate_ratio = the
 * migrate-first time / the peer-access time (> 1: peer access is the
 * faster for data used once), and the peer link time the model charged.
 * The run fails if a sum is wrong or peer access moved a page.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct peer_sum {
	const uint64_t *p;
	_Atomic uint64_t sum;
};

static void k_page_sum(uhmm_simdev_item *wi, uint64_t i, void *arg)
{
	struct peer_sum *k = arg;
	uint64_t buf[PAGE / 8], s = 0;
	uhmm_simdev_ld64v(wi, buf, k->p + i * (PAGE / 8), PAGE / 8);
	for (size_t j = 0; j < PAGE / 8; j++)
		s += buf[j];
	atomic_fetch_add_explicit(&k->sum, s, memory_order_relaxed);
}

/* One run of the peer part: data written on the CPU, moved to device 0,
 * then summed by device 1 (@peer: in place; else migrated to it first).
 * Returns the kernel's time (with the migration), 0 on failure. */
static uint64_t peer_run(struct bench_sc *sc, size_t len, bool peer, uint64_t *model_ns)
{
	uhmm_ctx *ctx;
	if (uhmm_ctx_create(NULL, &ctx) < 0)
		return 0;
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = len + UHMM_HUGE_SIZE;
	so.link = "nvlink";
	uhmm_device *d0, *d1;
	uint64_t *p = NULL, t = 0;
	if (uhmm_simdev_create(ctx, &so, &d0) < 0 || uhmm_simdev_create(ctx, &so, &d1) < 0 ||
	    uhmm_alloc(ctx, len, (void **)&p) < 0)
		goto out;
	for (size_t i = 0; i < len / 8; i++)
		p[i] = i;
	if (uhmm_migrate(ctx, p, len, d0, 0) < 0)
		goto out;
	if (peer && (uhmm_simdev_peer_access(d1, 1) < 0 ||
		     uhmm_simdev_advise(d1, p, len, UHMM_SIMDEV_MAP_REMOTE) < 0))
		goto out;
	struct peer_sum k = { .p = p };
	uint64_t t0 = now_ns();
	if (!peer && uhmm_migrate(ctx, p, len, d1, 0) < 0)
		goto out;
	if (uhmm_simdev_launch(d1, k_page_sum, len / PAGE, &k) < 0)
		goto out;
	uint64_t dt = now_ns() - t0;
	uint64_t want = (uint64_t)(len / 8) * (len / 8 - 1) / 2;
	struct uhmm_device_stats ds;
	uhmm_device_stats(d0, &ds);
	struct uhmm_simdev_stats st;
	struct uhmm_simdev_meminfo mi;
	uhmm_simdev_stats(d1, &st);
	uhmm_simdev_meminfo(d1, &mi);
	*model_ns = peer ? st.peer_access_ns : mi.peer_model_ns;
	if (atomic_load(&k.sum) != want)
		bench_note(sc, "peer part: wrong sum (%s)", peer ? "peer access" : "migrate first");
	else if (peer && ds.bytes_in_use < len)
		bench_note(sc, "peer part: peer access moved pages off device 0");
	else
		t = dt ? dt : 1;
out:
	uhmm_ctx_destroy(ctx);
	return t;
}

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

	/* Peer access vs migration first (best of reps each, alternated). */
	size_t plen = (cfg.quick ? 8ul : 32ul) << 20;
	bench_progress("coherent: a kernel over %zu MiB on the peer device", plen >> 20);
	uint64_t best_p = UINT64_MAX, best_m = UINT64_MAX, mod_p = 0, mod_m = 0;
	for (int r = 0; r < reps; r++) {
		uint64_t tp = peer_run(sc, plen, true, &mod_p);
		uint64_t tmg = peer_run(sc, plen, false, &mod_m);
		if (!tp || !tmg)
			return bench_fail(sc, "peer access run", -EIO);
		best_p = tp < best_p ? tp : best_p;
		best_m = tmg < best_m ? tmg : best_m;
	}
	bench_fig(sc, "coherent_peer_access_ms", (double)best_p / 1e6, "ms",
		  "kernel on device 1 over device 0's data, peer access (best)");
	bench_base(sc, "coherent_peer_migrate_ms", (double)best_m / 1e6, "ms",
		   "migrate to device 1 first, then the kernel (best)");
	bench_ratio(sc, "coherent_peer_access_vs_migrate", (double)best_m / (double)best_p,
		    "migrate-first time / peer-access time");
	bench_note(sc, "peer part: %zu MiB, nvlink preset; peer link time modelled: %.2f ms "
		       "(peer access), %.2f ms (migration)",
		   plen >> 20, (double)mod_p / 1e6, (double)mod_m / 1e6);
	return 0;
}
