/* SPDX-License-Identifier: MIT */
/*
 * Scenario 1: migration to a device.
 *
 * 256 MiB of managed memory, filled by the CPU, is migrated to a simdev
 * with one uhmm_migrate() call per batch-sized chunk (4 KiB, 64 KiB,
 * 2 MiB), against memcpy of the same total in chunks of the same size
 * between two warm buffers.  Before timing, the buffer and the device's
 * memory have been through one round trip (device memory is process
 * memory: its first touch would be timed otherwise).  Between timed runs
 * the buffer is brought home (untimed) with uhmm_migrate(..., NULL).
 * Then migrate_home_1g_vs_touch_ratio: bringing 1 GiB home by
 * uhmm_migrate(NULL) against by a sequential read (home_vs_touch), and
 * nomove_migrate_2m_vs_memcpy_ratio: the 2 MiB batches again without
 * UFFDIO_MOVE (nomove_gbps).
 *
 * Issue 18, 2 MiB on the CPU side (thp_round_trips): a registered buffer
 * backed by transparent huge pages (MADV_HUGEPAGE, filled before it is
 * registered) against the same buffer at 4 KiB (MADV_NOHUGEPAGE), both
 * taken to the device and back by uhmm_migrate in one call each way:
 * thp_vs_4k_roundtrip_speedup (round trip 4 KiB / THP),
 * thp_kept_after_roundtrip (AnonHugePages after / before, smaps), and
 * fault_2m_vs_memcpy_ratio: a CPU touch bringing a whole 2 MiB block home
 * (fault_around 512) / memcpy of 2 MiB (the fault's wall time, divided
 * over the blocks).
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static const size_t batch[] = { 4096, 64 << 10, 2 << 20 };
static const char *batch_name[] = { "4k", "64k", "2m" };
/* The --plot sweep: 4 KiB, 8 KiB, ... 2 MiB. */
#define SWEEP_N 10

/* Fill buf and warm the device memory, the reserve and the process's
 * pages with one untimed round trip. */
static int warm_round_trip(struct bench_sc *sc, uhmm_ctx *ctx, uhmm_device *dev,
			   char *buf, size_t len)
{
	memset(buf, 0x5a, len);
	int e;
	if ((e = uhmm_migrate(ctx, buf, len, dev, 0)) < 0 ||
	    (e = uhmm_migrate(ctx, buf, len, NULL, 0)) < 0)
		bench_fail(sc, "warm-up round trip", e);
	return e;
}

/*
 * uhmm_migrate(..., NULL) of a buffer beyond the warm pool's ceiling
 * (1 GiB; 64 MiB with --quick) against a sequential read bringing the same
 * data back by CPU faults.  Each timed run starts with the whole buffer on
 * the device (migrated there untimed); the two are timed alternately in
 * one context.  Medians; returns the ratio home / touch (NAN on error).
 */
static double home_vs_touch(struct bench_sc *sc, size_t len, int reps,
			    double *home_s, double *touch_s)
{
	uhmm_ctx *ctx;
	uhmm_device *dev;
	double ratio = NAN;
	if (make_ctx(sc, 0, 0, len + (32u << 20), &ctx, &dev) < 0)
		return NAN;
	char *buf = NULL;
	double *vh = calloc((size_t)reps, sizeof(double));
	double *vt = calloc((size_t)reps, sizeof(double));
	int e = uhmm_alloc(ctx, len, (void **)&buf);
	if (e < 0) {
		bench_fail(sc, "uhmm_alloc", e);
		goto out;
	}
	if ((e = warm_round_trip(sc, ctx, dev, buf, len)) < 0)
		goto out;
	for (int r = 0; r < reps; r++) {
		if ((e = uhmm_migrate(ctx, buf, len, dev, 0)) < 0) {
			bench_fail(sc, "uhmm_migrate to device", e);
			goto out;
		}
		uint64_t t = now_ns();
		if ((e = uhmm_migrate(ctx, buf, len, NULL, 0)) < 0) {
			bench_fail(sc, "uhmm_migrate home", e);
			goto out;
		}
		vh[r] = (double)(now_ns() - t) / 1e9;
		if ((e = uhmm_migrate(ctx, buf, len, dev, 0)) < 0) {
			bench_fail(sc, "uhmm_migrate to device", e);
			goto out;
		}
		t = now_ns();
		volatile uint64_t sum = read_sum(buf, len);
		(void)sum;
		vt[r] = (double)(now_ns() - t) / 1e9;
	}
	*home_s = dist_of(vh, (size_t)reps).median;
	*touch_s = dist_of(vt, (size_t)reps).median;
	ratio = *home_s / *touch_s;
out:
	free(vh);
	free(vt);
	if (buf)
		uhmm_free(ctx, buf);
	uhmm_ctx_destroy(ctx);
	return ratio;
}

/*
 * The no-move path (UHMM_CTX_NO_MOVE: the path of kernels before 6.8 and of
 * read-only pages): the same 2 MiB batches in a context that may not use
 * UFFDIO_MOVE.  Each page is write-protected, read through /proc/self/mem,
 * copied, and its CPU copy discarded.  Median GB/s (NAN on error).
 */
static double nomove_gbps(struct bench_sc *sc, size_t len, int reps)
{
	uhmm_ctx *ctx;
	uhmm_device *dev;
	double g = NAN;
	if (make_ctx(sc, UHMM_CTX_NO_MOVE, 0, len + (32u << 20), &ctx, &dev) < 0)
		return NAN;
	char *buf = NULL;
	double *v = calloc((size_t)reps, sizeof(double));
	int e = uhmm_alloc(ctx, len, (void **)&buf);
	if (e < 0) {
		bench_fail(sc, "uhmm_alloc (no-move)", e);
		goto out;
	}
	if ((e = warm_round_trip(sc, ctx, dev, buf, len)) < 0)
		goto out;
	touch_write(buf, len);
	for (int r = 0; r < reps; r++) {
		uint64_t t = now_ns();
		for (size_t off = 0; off < len; off += 2u << 20)
			if ((e = uhmm_migrate(ctx, buf + off, 2u << 20, dev, 0)) < 0)
				break;
		t = now_ns() - t;
		if (e < 0) {
			bench_fail(sc, "uhmm_migrate to device (no-move)", e);
			goto out;
		}
		v[r] = gbps(len, t);
		if ((e = uhmm_migrate(ctx, buf, len, NULL, 0)) < 0) {
			bench_fail(sc, "uhmm_migrate home (no-move)", e);
			goto out;
		}
		touch_write(buf, len);
	}
	g = dist_of(v, (size_t)reps).median;
out:
	free(v);
	if (buf)
		uhmm_free(ctx, buf);
	uhmm_ctx_destroy(ctx);
	return g;
}

/* An aligned anonymous mapping of exactly len bytes, huge or not, written. */
static char *map_aligned(size_t len, bool huge)
{
	char *raw = mmap(NULL, len + UHMM_HUGE_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	char *p = (char *)(((uintptr_t)raw + UHMM_HUGE_SIZE - 1) & ~(uintptr_t)(UHMM_HUGE_SIZE - 1));
	if (p > raw)
		munmap(raw, (size_t)(p - raw));
	munmap(p + len, (size_t)(raw + len + UHMM_HUGE_SIZE - (p + len)));
	madvise(p, len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	memset(p, 0x3c, len);
	return p;
}

/* AnonHugePages (bytes) of the mappings inside [p, p + len). */
static size_t anon_huge_bytes(const void *p, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	bool in = false;
	size_t total = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, kb;
		char *dash = strchr(line, '-'), *sp = strchr(line, ' ');
		if (dash && sp && dash < sp && sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
			in = lo >= (uintptr_t)p && hi <= (uintptr_t)p + len;
		else if (in && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
			total += (size_t)kb << 10;
	}
	if (f)
		fclose(f);
	return total;
}

/* Median round trip (to the device and back, one uhmm_migrate each way)
 * of a registered buffer, THP-backed or not; *kept: AnonHugePages after
 * the last trip / len. */
static double round_trip_s(struct bench_sc *sc, size_t len, bool huge, int reps, double *kept)
{
	uhmm_ctx *ctx;
	uhmm_device *dev;
	double med = NAN;
	if (make_ctx(sc, 0, 0, len + (32u << 20), &ctx, &dev) < 0)
		return NAN;
	char *buf = map_aligned(len, huge);
	double *v = calloc((size_t)reps + 1, sizeof(double));
	int e = 0;
	if (!buf || !v) {
		bench_fail(sc, "mmap", -ENOMEM);
		goto out;
	}
	if (huge && anon_huge_bytes(buf, len) < len / 2)
		bench_note(sc, "the kernel gave %zu of %zu MiB as THPs", anon_huge_bytes(buf, len) >> 20,
			   len >> 20);
	if ((e = uhmm_register(ctx, buf, len)) < 0) {
		bench_fail(sc, "uhmm_register", e);
		goto out;
	}
	for (int r = 0; r <= reps; r++) { /* the first one warms the device */
		uint64_t t = now_ns();
		if ((e = uhmm_migrate(ctx, buf, len, dev, 0)) < 0 ||
		    (e = uhmm_migrate(ctx, buf, len, NULL, 0)) < 0) {
			bench_fail(sc, "uhmm_migrate round trip", e);
			goto out;
		}
		t = now_ns() - t;
		if (r)
			v[r - 1] = secs(t);
	}
	med = dist_of(v, (size_t)reps).median;
	if (kept)
		*kept = (double)anon_huge_bytes(buf, len) / (double)len;
out:
	free(v);
	uhmm_ctx_destroy(ctx);
	if (buf)
		munmap(buf, len);
	return med;
}

/* Wall time of a CPU touch that brings a whole 2 MiB block home
 * (fault_around 512), per block, median over reps runs of len. */
static double fault_2m_s(struct bench_sc *sc, size_t len, int reps)
{
	uhmm_ctx *ctx;
	uhmm_device *dev;
	double med = NAN;
	if (make_ctx_ra(sc, 0, 512, 0, len + (32u << 20), &ctx, &dev) < 0)
		return NAN;
	char *buf = map_aligned(len, true);
	double *v = calloc((size_t)reps + 1, sizeof(double));
	int e = 0;
	if (!buf || !v || (e = uhmm_register(ctx, buf, len)) < 0) {
		bench_fail(sc, "mmap/uhmm_register", e ? e : -ENOMEM);
		goto out;
	}
	for (int r = 0; r <= reps; r++) {
		if ((e = uhmm_migrate(ctx, buf, len, dev, 0)) < 0) {
			bench_fail(sc, "uhmm_migrate", e);
			goto out;
		}
		uint64_t t = now_ns();
		for (size_t off = 0; off < len; off += UHMM_HUGE_SIZE)
			(void)*(volatile char *)(buf + off);
		t = now_ns() - t;
		if (r)
			v[r - 1] = secs(t) / (double)(len / UHMM_HUGE_SIZE);
	}
	med = dist_of(v, (size_t)reps).median;
out:
	free(v);
	uhmm_ctx_destroy(ctx);
	if (buf)
		munmap(buf, len);
	return med;
}

static void thp_round_trips(struct bench_sc *sc, size_t len, int reps)
{
	double kept = NAN;
	bench_progress("  migrate: THP-backed round trips over %zu MiB", len >> 20);
	double thp = round_trip_s(sc, len, true, reps, &kept);
	bench_progress("  migrate: 4 KiB round trips over %zu MiB", len >> 20);
	double k4 = round_trip_s(sc, len, false, reps, NULL);
	bench_fig(sc, "thp_roundtrip_s", thp, "s", "round trip of a THP-backed buffer (median)");
	bench_fig(sc, "4k_roundtrip_s", k4, "s", "round trip of the same at 4 KiB (MADV_NOHUGEPAGE)");
	bench_ratio(sc, "thp_vs_4k_roundtrip_speedup", k4 / thp, "round trip 4 KiB / THP-backed");
	bench_goal(sc, '>', 3.0);
	bench_ratio(sc, "thp_kept_after_roundtrip", kept,
		    "AnonHugePages after the round trips / buffer (smaps)");
	bench_goal(sc, '>', 0.99);
	bench_progress("  migrate: CPU touches bringing 2 MiB blocks home");
	double f = fault_2m_s(sc, len, reps);
	double mc = (double)UHMM_HUGE_SIZE / (memcpy_gbps(len, UHMM_HUGE_SIZE, reps) * 1e9);
	bench_fig(sc, "fault_2m_us", f * 1e6, "us", "a touch bringing a THP block home (fault_around 512)");
	bench_base(sc, "memcpy_2m_us", mc * 1e6, "us", "memcpy of 2 MiB, warm buffers");
	bench_ratio(sc, "fault_2m_vs_memcpy_ratio", f / mc, "2 MiB fault home / memcpy 2 MiB");
	bench_goal(sc, '<', 1.2);
}

int sc_migrate(struct bench_sc *sc)
{
	size_t len = cfg.quick ? (size_t)16 << 20 : (size_t)256 << 20;
	int reps = cfg.reps;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	int e = make_ctx(sc, 0, 0, len + (32u << 20), &ctx, &dev);
	if (e < 0)
		return e;
	char *buf = NULL;
	e = uhmm_alloc(ctx, len, (void **)&buf);
	if (e < 0) {
		bench_fail(sc, "uhmm_alloc", e);
		goto out;
	}
	if ((e = warm_round_trip(sc, ctx, dev, buf, len)) < 0)
		goto out;
	touch_write(buf, len);

	/* The three named batch sizes; with --plot, the sweep 4 KiB..2 MiB
	 * (issue 18's chart), whose named points are the same runs. */
	size_t sizes[SWEEP_N], nsz = 0, named[3];
	if (cfg.plot) {
		for (size_t bs = 4096; bs <= (2u << 20); bs <<= 1)
			sizes[nsz++] = bs;
	} else {
		for (size_t b = 0; b < 3; b++)
			sizes[nsz++] = batch[b];
	}
	for (size_t b = 0; b < 3; b++)
		for (size_t k = 0; k < nsz; k++)
			if (sizes[k] == batch[b])
				named[b] = k;
	double *v = calloc((size_t)reps, sizeof(double));
	double gb_uhmm[SWEEP_N], gb_memcpy[SWEEP_N], gb_floor[SWEEP_N], copy_share[SWEEP_N];
	for (size_t b = 0; b < nsz && e == 0; b++) {
		bench_progress("  migrate: %zu KiB batches over %zu MiB", sizes[b] >> 10, len >> 20);
		uint64_t timed = 0, copy_ns = 0;
		for (int r = 0; r < reps; r++) {
			struct uhmm_stats s0, s1;
			uhmm_stats_get(ctx, &s0);
			uint64_t t = now_ns();
			for (size_t off = 0; off < len; off += sizes[b])
				if ((e = uhmm_migrate(ctx, buf + off, sizes[b], dev, 0)) < 0)
					break;
			t = now_ns() - t;
			uhmm_stats_get(ctx, &s1);
			timed += t;
			copy_ns += s1.copy_ns - s0.copy_ns;
			if (e < 0) {
				bench_fail(sc, "uhmm_migrate to device", e);
				break;
			}
			v[r] = gbps(len, t);
			if ((e = uhmm_migrate(ctx, buf, len, NULL, 0)) < 0) {
				bench_fail(sc, "uhmm_migrate home", e);
				break;
			}
			touch_write(buf, len); /* every page present and warm again */
		}
		if (e)
			break;
		struct dist d = dist_of(v, (size_t)reps);
		gb_uhmm[b] = d.median;
		copy_share[b] = timed ? (double)copy_ns / (double)timed : NAN;
		gb_memcpy[b] = memcpy_gbps(len, sizes[b], reps);
		gb_floor[b] = NAN;
		if (floor_move_copy_gbps(len, sizes[b], reps, &gb_floor[b]) < 0)
			gb_floor[b] = NAN;
	}
	free(v);
	if (e)
		goto out;

	for (size_t b = 0; b < 3; b++) {
		char k[64], w[112];
		snprintf(k, sizeof(k), "migrate_%s_gbps", batch_name[b]);
		snprintf(w, sizeof(w), "uhmm_migrate, %zu KiB batches (median of %d)", batch[b] >> 10, reps);
		bench_fig(sc, k, gb_uhmm[named[b]], "GB/s", w);
	}
	for (size_t b = 0; b < 3; b++) {
		char k[64], w[112];
		snprintf(k, sizeof(k), "memcpy_%s_gbps", batch_name[b]);
		snprintf(w, sizeof(w), "memcpy, %zu KiB chunks, warm buffers", batch[b] >> 10);
		bench_base(sc, k, gb_memcpy[named[b]], "GB/s", w);
	}
	for (size_t b = 0; b < 3; b++) {
		char k[64], w[112];
		snprintf(k, sizeof(k), "floor_move_copy_%s_gbps", batch_name[b]);
		snprintf(w, sizeof(w), "floor: raw UFFDIO_MOVE + memcpy per %zu KiB batch", batch[b] >> 10);
		bench_base(sc, k, gb_floor[named[b]], "GB/s", w);
	}
	static const double goal[3] = { 0.3, 0.8, 0.95 }; /* issue 18 */
	for (size_t b = 0; b < 3; b++) {
		char k[64], w[112];
		snprintf(k, sizeof(k), "migrate_%s_vs_memcpy", batch_name[b]);
		snprintf(w, sizeof(w), "%zu KiB batches / memcpy", batch[b] >> 10);
		bench_ratio(sc, k, gb_uhmm[named[b]] / gb_memcpy[named[b]], w);
		bench_goal(sc, '>', goal[b]);
	}
	for (size_t b = 0; b < 3; b++) {
		char k[64], w[112];
		snprintf(k, sizeof(k), "migrate_%s_vs_floor", batch_name[b]);
		snprintf(w, sizeof(w), "%zu KiB batches / the raw floor (what uhmm adds)", batch[b] >> 10);
		bench_ratio(sc, k, gb_uhmm[named[b]] / gb_floor[named[b]], w);
	}
	for (size_t b = 0; b < 3; b++) {
		char k[64], w[112];
		snprintf(k, sizeof(k), "copy_share_%s", batch_name[b]);
		snprintf(w, sizeof(w), "%zu KiB: share of the time in the copy engine", batch[b] >> 10);
		bench_fig(sc, k, copy_share[named[b]], "", w);
	}
	{
		bench_progress("  migrate: the no-move path, 2 MiB batches over %zu MiB", len >> 20);
		double g = nomove_gbps(sc, len, reps);
		bench_fig(sc, "nomove_migrate_2m_gbps", g, "GB/s",
			  "uhmm_migrate without UFFDIO_MOVE (UHMM_CTX_NO_MOVE), 2 MiB batches");
		bench_ratio(sc, "nomove_migrate_2m_vs_memcpy_ratio", g / gb_memcpy[2],
			    "no-move 2 MiB batches / memcpy (kernels before 6.8, read-only pages)");
	}
	{
		size_t hlen = cfg.quick ? (size_t)64 << 20 : (size_t)1 << 30;
		int hreps = cfg.quick ? 1 : reps < 3 ? 3 : reps > 5 ? 5 : reps;
		double hs = NAN, ts = NAN;
		bench_progress("  migrate: home vs touch, %zu MiB", hlen >> 20);
		double ratio = home_vs_touch(sc, hlen, hreps, &hs, &ts);
		bench_fig(sc, "migrate_home_s", hs, "s", cfg.quick
			  ? "uhmm_migrate(NULL) of 64 MiB on the device (median)"
			  : "uhmm_migrate(NULL) of 1 GiB on the device (median)");
		bench_base(sc, "touch_home_s", ts, "s",
			   "a sequential read bringing the same data back (median)");
		bench_ratio(sc, "migrate_home_1g_vs_touch_ratio", ratio,
			    "uhmm_migrate(NULL) / sequential read of the same data");
		bench_goal(sc, '<', 1.0);
	}
	thp_round_trips(sc, len, reps);
	bench_note(sc, "%zu MiB each run; device memory and pages warmed by an untimed round trip;"
		   " the buffer is brought home and rewritten between runs (untimed)", len >> 20);
	{
		double kib[SWEEP_N];
		for (size_t b = 0; b < nsz; b++)
			kib[b] = (double)(sizes[b] >> 10);
		bench_series("migrate_batch_kib", kib, nsz);
	}
	bench_series("migrate_uhmm_gbps", gb_uhmm, nsz);
	bench_series("migrate_memcpy_gbps", gb_memcpy, nsz);
	bench_series("migrate_floor_gbps", gb_floor, nsz);
out:
	if (buf)
		uhmm_free(ctx, buf);
	uhmm_ctx_destroy(ctx);
	return e < 0 ? e : 0;
}
