/* SPDX-License-Identifier: MIT */
/*
 * Scenario 4: mirror vs pin.
 *
 * 1 GiB of ordinary anonymous memory, populated, registered with uhmm and
 * advised MAP_REMOTE on a simdev (so it stays in system memory).  A first
 * launch of a kernel reading one word per page builds the device's mirror.
 * Then, with the range unchanged:
 *
 *   uhmm resubmission overhead: uhmm_simdev_launch() with grid 1.  What a
 *     resubmission over an already mirrored range costs beyond the kernel's
 *     own work: no page is walked (the mirror is valid until a notifier
 *     says otherwise), so this is the launch machinery plus one work item.
 *   the "userptr" submission overhead: what a driver without mirroring
 *     does at every submission before the kernel may run: pin every page
 *     (mlock) and walk the page table for the addresses (/proc/self/pagemap,
 *     8 bytes a page), then unpin (munlock) when the job is done.
 *
 * The ratio of the two is the target (>= 1000x).  The full resubmission
 * (grid = one work item per page, each reading one word) is reported too,
 * with the device-fault and range-fault counters, which must not move, and
 * the end-to-end ratio (pin + kernel) / kernel.  See docs/PERFORMANCE.md.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static void read_word_per_page(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	(void)uhmm_simdev_ld64(wi, (const char *)arg + idx * PAGE);
}

/* One "userptr" submission: pin, walk, unpin.  Returns 0 or -errno; the
 * three parts' ns go to part[0..2]. */
static int pin_walk(char *buf, size_t len, int pagemap, uint64_t *present, uint64_t part[3],
		    bool do_lock)
{
	static uint64_t ent[4096];
	uint64_t t = now_ns();
	if (do_lock && mlock(buf, len) < 0)
		return -errno;
	part[0] = now_ns() - t;
	t = now_ns();
	size_t npages = len / PAGE;
	uint64_t n = 0;
	for (size_t i = 0; i < npages;) {
		size_t k = npages - i < 4096 ? npages - i : 4096;
		off_t off = (off_t)(((uintptr_t)buf / PAGE + i) * 8);
		ssize_t r = pread(pagemap, ent, k * 8, off);
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		k = (size_t)r / 8;
		for (size_t j = 0; j < k; j++)
			n += ent[j] >> 63; /* present */
		i += k;
	}
	*present = n;
	part[1] = now_ns() - t;
	t = now_ns();
	if (do_lock && munlock(buf, len) < 0)
		return -errno;
	part[2] = now_ns() - t;
	return 0;
}

int sc_mirror(struct bench_sc *sc)
{
	size_t len = cfg.quick ? (size_t)64 << 20 : (size_t)1 << 30, npages = len / PAGE;
	int nlaunch = cfg.quick ? 20 : 200, reps = cfg.reps;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	int e = make_ctx(sc, 0, 0, 64u << 20, &ctx, &dev), pagemap = -1;
	if (e < 0)
		return e;
	bool registered = false;
	double *l1 = calloc((size_t)nlaunch, sizeof(double)), *l0 = calloc((size_t)nlaunch, sizeof(double));
	double *full = calloc((size_t)reps, sizeof(double)), *pin = calloc((size_t)reps, sizeof(double));
	double *pl = calloc((size_t)reps, sizeof(double)), *pw = calloc((size_t)reps, sizeof(double)),
	       *pu = calloc((size_t)reps, sizeof(double));
	char *buf = map_anon(len);
	if (!l1 || !l0 || !full || !pin || !pl || !pw || !pu || !buf) {
		e = bench_fail(sc, "allocation", -ENOMEM);
		goto out;
	}
	bench_progress("  mirror: populating %zu MiB", len >> 20);
	if (madvise(buf, len, MADV_POPULATE_WRITE) < 0)
		touch_write(buf, len);
	if ((e = uhmm_register(ctx, buf, len)) < 0) {
		bench_fail(sc, "uhmm_register", e);
		goto out;
	}
	registered = true;
	if ((e = uhmm_simdev_advise(dev, buf, len, UHMM_SIMDEV_MAP_REMOTE)) < 0) {
		bench_fail(sc, "uhmm_simdev_advise", e);
		goto out;
	}
	pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pagemap < 0) {
		e = bench_fail(sc, "open /proc/self/pagemap", -errno);
		goto out;
	}

	bench_progress("  mirror: first launch (builds the mirror)");
	uint64_t t = now_ns();
	if ((e = uhmm_simdev_launch(dev, read_word_per_page, npages, buf)) < 0) {
		bench_fail(sc, "first launch", e);
		goto out;
	}
	double first = (double)(now_ns() - t);
	struct uhmm_simdev_stats d0, d1;
	struct uhmm_stats u0, u1;
	uhmm_simdev_stats(dev, &d0);
	uhmm_stats_get(ctx, &u0);

	bench_progress("  mirror: %d pin-and-walk submissions", reps);
	bool do_lock = true;
	uint64_t present = 0;
	for (int r = -1; r < reps; r++) {
		uint64_t part[3] = { 0, 0, 0 };
		t = now_ns();
		e = pin_walk(buf, len, pagemap, &present, part, do_lock);
		if (e == -EPERM || e == -ENOMEM) {
			bench_note(sc, "mlock refused (%s): the baseline is the walk alone", uhmm_strerror(e));
			do_lock = false;
			r--;
			continue;
		}
		if (e < 0) {
			bench_fail(sc, "pin and walk", e);
			goto out;
		}
		if (r >= 0) {
			pin[r] = (double)(now_ns() - t);
			pl[r] = (double)part[0];
			pw[r] = (double)part[1];
			pu[r] = (double)part[2];
		}
	}

	bench_progress("  mirror: resubmissions");
	for (int i = -1; i < nlaunch; i++) {
		t = now_ns();
		if ((e = uhmm_simdev_launch(dev, read_word_per_page, 1, buf)) < 0) {
			bench_fail(sc, "launch grid 1", e);
			goto out;
		}
		double a = (double)(now_ns() - t);
		t = now_ns();
		if ((e = uhmm_simdev_launch(dev, read_word_per_page, 0, buf)) < 0) {
			bench_fail(sc, "launch grid 0", e);
			goto out;
		}
		if (i >= 0) {
			l0[i] = (double)(now_ns() - t);
			l1[i] = a;
		}
	}
	for (int r = 0; r < reps; r++) {
		t = now_ns();
		if ((e = uhmm_simdev_launch(dev, read_word_per_page, npages, buf)) < 0) {
			bench_fail(sc, "full resubmission", e);
			goto out;
		}
		full[r] = (double)(now_ns() - t);
	}
	uhmm_simdev_stats(dev, &d1);
	uhmm_stats_get(ctx, &u1);

	struct dist dl1 = dist_of(l1, (size_t)nlaunch), dl0 = dist_of(l0, (size_t)nlaunch);
	struct dist dfull = dist_of(full, (size_t)reps), dpin = dist_of(pin, (size_t)reps);
	char w[112];
	bench_fig(sc, "resubmit_overhead_us", dl1.median / 1e3, "us",
		  "uhmm resubmission overhead: launch, grid 1 (median)");
	bench_fig(sc, "resubmit_overhead_p99_us", dl1.p99 / 1e3, "us", "  the same, p99");
	bench_fig(sc, "launch_grid0_us", dl0.median / 1e3, "us", "launch, grid 0 (argument checks only)");
	snprintf(w, sizeof(w), "full resubmission, %zu work items, 1 word/page (median)", npages);
	bench_fig(sc, "resubmit_full_ms", dfull.median / 1e6, "ms", w);
	bench_fig(sc, "first_launch_ms", first / 1e6, "ms", "first launch (device faults build the mirror)");
	bench_fig(sc, "resubmit_device_faults", (double)(d1.faults - d0.faults), "",
		  "device faults during all resubmissions (must be 0)");
	bench_goal(sc, '=', 0);
	bench_fig(sc, "resubmit_range_fault_pages",
		  (double)(d1.range_fault_pages - d0.range_fault_pages + u1.range_fault_pages - u0.range_fault_pages),
		  "", "pages walked by range faults during resubmissions (must be 0)");
	bench_goal(sc, '=', 0);
	snprintf(w, sizeof(w), "userptr submission: %s + pagemap walk%s, %zu MiB (median)",
		 do_lock ? "mlock" : "(no mlock)", do_lock ? " + munlock" : "", len >> 20);
	bench_base(sc, "pin_walk_ms", dpin.median / 1e6, "ms", w);
	bench_base(sc, "pin_mlock_ms", dist_of(pl, (size_t)reps).median / 1e6, "ms", "  of which mlock");
	bench_base(sc, "pin_walk_pagemap_ms", dist_of(pw, (size_t)reps).median / 1e6, "ms", "  of which pagemap walk");
	bench_base(sc, "pin_munlock_ms", dist_of(pu, (size_t)reps).median / 1e6, "ms", "  of which munlock");
	bench_ratio(sc, "pin_vs_mirror_overhead", dpin.median / dl1.median,
		    "userptr pin+walk / uhmm resubmission overhead (grid 1)");
	bench_goal(sc, '>', 1000);
	bench_ratio(sc, "pin_vs_mirror_end_to_end", (dpin.median + dfull.median) / dfull.median,
		    "(pin+walk + full kernel) / full kernel resubmission");
	if (present != npages)
		bench_note(sc, "pagemap saw %llu of %zu pages present", (unsigned long long)present, npages);
	bench_note(sc, "%d launches of grid 1 and of grid 0, %d of the full grid and of pin+walk", nlaunch, reps);
out:
	if (pagemap >= 0)
		close(pagemap);
	if (registered)
		uhmm_unregister(ctx, buf, len);
	uhmm_ctx_destroy(ctx);
	if (buf)
		munmap(buf, len);
	free(l1);
	free(l0);
	free(full);
	free(pin);
	free(pl);
	free(pw);
	free(pu);
	return e < 0 ? e : 0;
}
