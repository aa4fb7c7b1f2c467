/* SPDX-License-Identifier: MIT */
/*
 * Scenario 2: return on CPU fault.
 *
 * Per-fault latency of a CPU read of a device-resident 4 KiB page, timed
 * around the single load, in each fault-service mode uhmm offers:
 *   - the service thread installing warm pool pages with UFFDIO_MOVE
 *     (the default), with fault_around = 1 so one fault moves one page;
 *   - the same with UHMM_CTX_NO_MOVE (UFFDIO_COPY), fault_around = 1;
 *   - the default context (fault-around 64): one touch per 64-page block,
 *     so every timed touch is a fault bringing 64 pages;
 *   - UHMM_CTX_SIGBUS, fault_around = 1: the faulting thread serves its own
 *     fault in uhmm's SIGBUS handler: the device copies into a warm pool
 *     page, installed with UFFDIO_COPY (a single page: as the service thread,
 *     see service.c's bring_home; runs are moved), and the same with NO_MOVE.
 * against the floors of floors.c, measured in the same run.  Then the
 * sequential CPU read of a 256 MiB device-resident buffer (fault-around in
 * force) in GB/s, against memcpy and against reading it resident.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Voluntary + involuntary context switches of the whole process so far. */
static double ctx_switches(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_nvcsw + (double)ru.ru_nivcsw;
}

/* The spinning mode's budget: long enough to outlast the faulting thread's
 * own wake-up in a slow-wake phase (50-90 us), so its next fault finds the
 * service thread still looking. */
#define SPIN_US 200u

#define REGION_PAGES 2048u /* within the default warm pool (4096 pages) */

struct mode_result {
	struct dist d;
	uint64_t pool_hits, pool_misses, faults, around;
	double cs_per_fault;
	uint32_t fa;
	bool kernel_faults; /* full mode: kernel accesses are served too */
};

static int uhmm_latency(struct bench_sc *sc, uint32_t flags, uint32_t fa, const char *key,
			const char *what, size_t n, struct mode_result *res)
{
	uhmm_ctx *ctx;
	uhmm_device *dev;
	size_t len = (size_t)REGION_PAGES * PAGE;
	/* One fault's latency: no read-ahead (the default-mode round touches
	 * one page per block in ascending order, a sequential scan). */
	int e = make_ctx_ra(sc, flags, fa, 0, 64u << 20, &ctx, &dev);
	if (e < 0)
		return e;
	struct uhmm_ctx_info info;
	uhmm_ctx_info(ctx, &info);
	res->fa = info.fault_around;
	res->kernel_faults = !info.user_mode_only;
	size_t stride = info.fault_around, per_round = REGION_PAGES / stride;
	double *ns = calloc(n, sizeof(double));
	char *buf = NULL;
	if (!ns) {
		e = -ENOMEM;
		goto out;
	}
	if ((e = uhmm_alloc(ctx, len, (void **)&buf)) < 0) {
		bench_fail(sc, "uhmm_alloc", e);
		goto out;
	}
	memset(buf, 0x77, len);
	struct uhmm_stats s0 = { 0 }, s1;
	size_t done = 0;
	double cs = 0, touched = 0;
	for (int round = 0; done < n; round++) {
		if ((e = uhmm_migrate(ctx, buf, len, dev, 0)) < 0) {
			bench_fail(sc, "uhmm_migrate to device", e);
			goto out;
		}
		if (round == 1)
			uhmm_stats_get(ctx, &s0);
		double cs0 = ctx_switches();
		for (size_t i = 0; i < per_round; i++) {
			const volatile char *p = buf + i * stride * PAGE;
			uint64_t t = now_ns();
			(void)*p;
			t = now_ns() - t;
			if (round > 0 && done < n)
				ns[done++] = (double)t;
		}
		if (round > 0) {
			cs += ctx_switches() - cs0;
			touched += per_round;
		}
		/* Whatever fault-around left behind comes home untimed. */
		if ((e = uhmm_migrate(ctx, buf, len, NULL, 0)) < 0) {
			bench_fail(sc, "uhmm_migrate home", e);
			goto out;
		}
	}
	uhmm_stats_get(ctx, &s1);
	res->pool_hits = s1.pool_hits - s0.pool_hits;
	res->pool_misses = s1.pool_misses - s0.pool_misses;
	res->faults = s1.cpu_faults_device - s0.cpu_faults_device;
	res->around = s1.fault_around_pages - s0.fault_around_pages;
	res->cs_per_fault = touched ? cs / touched : NAN;
	res->d = report_lat(sc, false, key, what, ns, n);
out:
	free(ns);
	if (buf)
		uhmm_free(ctx, buf);
	uhmm_ctx_destroy(ctx);
	return e < 0 ? e : 0;
}

/* Sequential read of len bytes of device-resident memory; median GB/s. */
static int seq_read(struct bench_sc *sc, uint32_t flags, uint32_t fa, long ra, size_t len, double *gb,
		    double *resident, uint32_t *fa_used)
{
	struct uhmm_stats s0 = { 0 }, s1 = { 0 };
	uhmm_ctx *ctx;
	uhmm_device *dev;
	int e = make_ctx_ra(sc, flags, fa, ra, len + (32u << 20), &ctx, &dev);
	if (e < 0)
		return e;
	char *buf = NULL;
	double *v = calloc((size_t)cfg.reps, sizeof(double));
	double *w = calloc((size_t)cfg.reps, sizeof(double));
	uint64_t sink = 0;
	if (!v || !w) {
		e = -ENOMEM;
		goto out;
	}
	if ((e = uhmm_alloc(ctx, len, (void **)&buf)) < 0) {
		bench_fail(sc, "uhmm_alloc", e);
		goto out;
	}
	memset(buf, 0x11, len);
	for (int r = -1; r < cfg.reps; r++) { /* r = -1: warm-up */
		uint64_t t = now_ns();
		sink += read_sum(buf, len);
		t = now_ns() - t;
		if (r >= 0)
			w[r] = gbps(len, t);
		if ((e = uhmm_migrate(ctx, buf, len, dev, 0)) < 0) {
			bench_fail(sc, "uhmm_migrate to device", e);
			goto out;
		}
		if (r == 0)
			uhmm_stats_get(ctx, &s0);
		t = now_ns();
		sink += read_sum(buf, len);
		t = now_ns() - t;
		if (r >= 0)
			v[r] = gbps(len, t);
	}
	uhmm_stats_get(ctx, &s1);
	{
		struct uhmm_ctx_info info;
		uhmm_ctx_info(ctx, &info);
		if (fa_used)
			*fa_used = info.fault_around;
		bench_note(sc, "sequential read%s, fault_around=%u, readahead %s, pool_pages=%u: %llu faults brought data back,"
			   " pool hits %llu, misses (UFFDIO_COPY) %llu, pages read ahead %llu",
			   flags & UHMM_CTX_SIGBUS ? " (SIGBUS mode)" : "", info.fault_around,
			   flags & UHMM_CTX_SIGBUS ? "not done" : ra == 0 ? "off" : "default", info.pool_pages,
			   (unsigned long long)(s1.cpu_faults_device - s0.cpu_faults_device),
			   (unsigned long long)(s1.pool_hits - s0.pool_hits),
			   (unsigned long long)(s1.pool_misses - s0.pool_misses),
			   (unsigned long long)(s1.readahead_pages - s0.readahead_pages));
	}
	__asm__ volatile("" ::"r"(sink));
	*gb = dist_of(v, (size_t)cfg.reps).median;
	if (resident)
		*resident = dist_of(w, (size_t)cfg.reps).median;
out:
	free(v);
	free(w);
	if (buf)
		uhmm_free(ctx, buf);
	uhmm_ctx_destroy(ctx);
	return e < 0 ? e : 0;
}

int sc_cpufault(struct bench_sc *sc)
{
	size_t n = cfg.quick ? 256 : 8192;
	int e;
	struct mode_result mv = { 0 }, cp = { 0 }, df = { 0 }, sb = { 0 }, sbc = { 0 }, spn = { 0 };

	bench_progress("  cpufault: uhmm, UFFDIO_MOVE pool, fault_around 1");
	if ((e = uhmm_latency(sc, 0, 1, "uhmm_move_fa1", "uhmm service thread + UFFDIO_MOVE pool, fault_around=1",
			      n, &mv)) < 0)
		return e;
	bench_progress("  cpufault: uhmm, UFFDIO_COPY (NO_MOVE), fault_around 1");
	if ((e = uhmm_latency(sc, UHMM_CTX_NO_MOVE, 1, "uhmm_copy_fa1",
			      "uhmm service thread + UFFDIO_COPY (NO_MOVE), fault_around=1", n, &cp)) < 0)
		return e;
	bench_progress("  cpufault: uhmm, SIGBUS self-service, fault_around 1");
	if ((e = uhmm_latency(sc, UHMM_CTX_SIGBUS, 1, "uhmm_sigbus_fa1",
			      "uhmm SIGBUS self-service (pool page, COPY of 1 page), fault_around=1", n,
			      &sb)) < 0)
		return e;
	bench_progress("  cpufault: uhmm, SIGBUS self-service, NO_MOVE, fault_around 1");
	if ((e = uhmm_latency(sc, UHMM_CTX_SIGBUS | UHMM_CTX_NO_MOVE, 1, "uhmm_sigbus_copy_fa1",
			      "uhmm SIGBUS self-service + NO_MOVE, fault_around=1",
			      n, &sbc)) < 0)
		return e;
	bench_progress("  cpufault: uhmm, UFFDIO_MOVE pool, spin_us %u, fault_around 1", SPIN_US);
	char spin_what[96];
	snprintf(spin_what, sizeof(spin_what),
		 "uhmm service thread spinning (spin_us=%u) + MOVE, fault_around=1", SPIN_US);
	cfg.spin_us = SPIN_US;
	e = uhmm_latency(sc, 0, 1, "uhmm_spin_fa1", spin_what, n, &spn);
	cfg.spin_us = 0;
	if (e < 0)
		return e;
	bench_progress("  cpufault: uhmm, default fault-around");
	if ((e = uhmm_latency(sc, 0, 0, "uhmm_move_fadefault",
			      "uhmm default (fault_around=64): one fault per 64-page block",
			      cfg.quick ? 64 : 1024, &df)) < 0)
		return e;

	double *ns = calloc(n, sizeof(double));
	if (!ns)
		return -ENOMEM;
	struct dist thr, spin, sbm, mpr, kf;
	bench_progress("  cpufault: floors");
	double cs0 = ctx_switches();
	if ((e = floor_uffd_thread(ns, n, false)) < 0)
		goto fail;
	double floor_cs = (ctx_switches() - cs0) / (double)(n + 1024); /* + warm-up round */
	thr = report_lat(sc, true, "floor_uffd_thread", "bare uffd service thread (poll) + UFFDIO_COPY", ns, n);
	if ((e = floor_uffd_thread(ns, n, true)) < 0)
		goto fail;
	spin = report_lat(sc, true, "floor_uffd_spin", "bare uffd spinning thread + UFFDIO_COPY", ns, n);
	if ((e = floor_sigbus_move(ns, n)) < 0)
		goto fail;
	sbm = report_lat(sc, true, "floor_sigbus_move", "bare SIGBUS-mode handler + UFFDIO_MOVE of warm pages", ns, n);
	if ((e = floor_mprotect_sigsegv(ns, n)) < 0)
		goto fail;
	mpr = report_lat(sc, true, "mprotect_sigsegv", "hand-written mprotect+SIGSEGV migrator", ns, n);
	if ((e = floor_kernel_fault(ns, n)) < 0)
		goto fail;
	kf = report_lat(sc, true, "kernel_fault", "kernel anonymous write fault (warm)", ns, n);
	free(ns);
	(void)kf;

	/* The fastest mode uhmm offers (of all measured, SIGBUS ones
	 * included), and the fastest that also serves kernel-mode accesses
	 * (every service-thread mode does, in full mode; SIGBUS modes never). */
	struct mode_result *all[] = { &mv, &cp, &sb, &sbc, &spn };
	const char *names[] = { "service thread", "service thread + NO_MOVE", "SIGBUS",
				"SIGBUS + NO_MOVE", "spinning service thread" };
	size_t fi = 0;
	for (size_t i = 1; i < sizeof(all) / sizeof(all[0]); i++)
		if (all[i]->d.median < all[fi]->d.median)
			fi = i;
	struct mode_result *fastest = all[fi];
	bench_ratio(sc, "fastest_mode_vs_sigbus_move", fastest->d.median / sbm.median,
		    "fastest uhmm mode (fa=1) median / SIGBUS+MOVE floor median");
	bench_goal(sc, '<', 1.5);
	bench_note(sc, "fastest mode: %s", names[fi]);
	bench_ratio(sc, "sigbus_mode_vs_service_thread", sb.d.median / mv.d.median,
		    "uhmm SIGBUS mode (fa=1) median / service-thread mode (fa=1) median");
	/* (Sleeping modes against the sleeping floor; the spinning mode is
	 * held to the spinning floor below.) */
	struct mode_result *fast = cp.d.median < mv.d.median ? &cp : &mv;
	if (fast->kernel_faults) {
		bench_ratio(sc, "kernel_serving_mode_vs_uffd_thread", fast->d.median / thr.median,
			    "fastest kernel-serving uhmm mode median / bare service thread");
		bench_goal(sc, '<', 1.5);
	} else {
		bench_note(sc, "context in UFFD_USER_MODE_ONLY: no mode serves kernel accesses here");
	}
	bench_ratio(sc, "move_vs_mprotect_sigsegv", mv.d.median / mpr.median,
		    "uhmm MOVE (fa=1) median / mprotect+SIGSEGV migrator");
	bench_ratio(sc, "move_p99_vs_uffd_thread_p99", mv.d.p99 / thr.p99,
		    "uhmm MOVE (fa=1) p99 / bare service thread p99");
	bench_fig(sc, "move_fa1_ctx_switches_per_fault", mv.cs_per_fault, "",
		  "context switches per fault, MOVE fa=1 (getrusage, all threads)");
	bench_fig(sc, "copy_fa1_ctx_switches_per_fault", cp.cs_per_fault, "",
		  "context switches per fault, NO_MOVE fa=1");
	bench_fig(sc, "sigbus_fa1_ctx_switches_per_fault", sb.cs_per_fault, "",
		  "context switches per fault, SIGBUS mode fa=1");
	bench_base(sc, "floor_uffd_thread_ctx_switches_per_fault", floor_cs, "",
		   "context switches per fault, bare service thread");
	bench_fig(sc, "fadefault_us_per_page", df.d.median / 1e3 / (double)(df.fa ? df.fa : 1), "us",
		  "default fault-around: median fault latency per page brought");
	bench_note(sc, "pool hits/misses during timed rounds: MOVE %llu/%llu, NO_MOVE %llu/%llu,"
		   " SIGBUS %llu/%llu, SIGBUS NO_MOVE %llu/%llu, default fa %llu/%llu",
		   (unsigned long long)mv.pool_hits, (unsigned long long)mv.pool_misses,
		   (unsigned long long)cp.pool_hits, (unsigned long long)cp.pool_misses,
		   (unsigned long long)sb.pool_hits, (unsigned long long)sb.pool_misses,
		   (unsigned long long)sbc.pool_hits, (unsigned long long)sbc.pool_misses,
		   (unsigned long long)df.pool_hits, (unsigned long long)df.pool_misses);
	bench_note(sc, "default context: fault_around=%u, %llu faults brought %llu extra pages",
		   df.fa, (unsigned long long)df.faults, (unsigned long long)df.around);
	bench_ratio(sc, "spin_mode_vs_uffd_spin", spn.d.median / spin.median,
		    "uhmm spinning service thread median / bare spinning thread");
	bench_ratio(sc, "spin_mode_vs_service_thread", spn.d.median / mv.d.median,
		    "uhmm spinning service thread median / sleeping service thread (MOVE)");
	bench_fig(sc, "spin_fa1_ctx_switches_per_fault", spn.cs_per_fault, "",
		  "context switches per fault, spinning service thread fa=1");

	/* Sequential read with fault-around. */
	size_t len = cfg.quick ? (size_t)16 << 20 : (size_t)256 << 20;
	double seq = NAN, res = NAN, seq512 = NAN, seqnora = NAN, seqsb = NAN;
	uint32_t fa_def = 0;
	bench_progress("  cpufault: sequential read of %zu MiB device-resident", len >> 20);
	if ((e = seq_read(sc, 0, 0, -1, len, &seq, &res, &fa_def)) < 0)
		return e;
	bench_progress("  cpufault: sequential read, SIGBUS mode");
	if ((e = seq_read(sc, UHMM_CTX_SIGBUS, 0, -1, len, &seqsb, NULL, NULL)) < 0)
		return e;
	if (!cfg.quick) {
		bench_progress("  cpufault: sequential read, no read-ahead");
		if ((e = seq_read(sc, 0, 0, 0, len, &seqnora, NULL, NULL)) < 0)
			return e;
		bench_progress("  cpufault: sequential read, fault_around 512");
		if ((e = seq_read(sc, 0, 512, -1, len, &seq512, NULL, NULL)) < 0)
			return e;
	}
	double mc = memcpy_gbps(len, len, cfg.reps);
	size_t chunk = (size_t)(fa_def ? fa_def : 1) * 4096;
	double cr = copy_read_gbps(len, chunk, cfg.reps);
	/* The target's figure: the faster of the two modes, as for faults. */
	double best = seqsb > seq ? seqsb : seq;
	char w[112];
	snprintf(w, sizeof(w), "sequential read of %zu MiB device-resident, default fault-around", len >> 20);
	bench_fig(sc, "seq_read_gbps", seq, "GB/s", w);
	bench_fig(sc, "seq_read_sigbus_gbps", seqsb, "GB/s", "the same in SIGBUS mode (no read-ahead)");
	if (!cfg.quick) {
		bench_fig(sc, "seq_read_noreadahead_gbps", seqnora, "GB/s", "the same, service thread with readahead_pages=0");
		bench_fig(sc, "seq_read_fa512_gbps", seq512, "GB/s", "the same, service thread with fault_around=512");
	}
	bench_base(sc, "memcpy_gbps", mc, "GB/s", "memcpy of the same size, warm");
	snprintf(w, sizeof(w), "copy %zu KiB then read it, chunk after chunk (one CPU)", chunk >> 10);
	bench_base(sc, "copy_read_gbps", cr, "GB/s", w);
	bench_base(sc, "resident_read_gbps", res, "GB/s", "the same read with the buffer resident");
	bench_ratio(sc, "seq_read_vs_memcpy", best / mc, "sequential read from device (faster mode) / memcpy");
	bench_goal(sc, '>', 0.9); /* issue 18 (issue 6 asked for 0.5) */
	bench_ratio(sc, "seq_read_vs_copy_read", best / cr,
		    "the same / copy-then-read chunk after chunk");
	bench_ratio(sc, "seq_read_service_vs_memcpy", seq / mc, "service thread with read-ahead / memcpy");
	bench_ratio(sc, "seq_read_sigbus_vs_memcpy", seqsb / mc, "SIGBUS mode / memcpy");
	if (!cfg.quick) {
		bench_ratio(sc, "seq_read_noreadahead_vs_memcpy", seqnora / mc,
			    "service thread, readahead_pages=0 / memcpy");
		bench_ratio(sc, "seq_read_fa512_vs_memcpy", seq512 / mc, "service thread, fault_around=512 / memcpy");
	}
	bench_note(sc, "sequential read: the faster mode is the %s", seqsb > seq ? "SIGBUS mode" : "service thread");
	return 0;
fail:
	free(ns);
	return bench_fail(sc, "floor", e);
}
