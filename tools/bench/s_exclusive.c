/* SPDX-License-Identifier: MIT */
/*
 * Scenario 6: device-exclusive access, and scenario 7: metadata.
 *
 * 6. N present pages.  Grab: uhmm_make_exclusive(dev, page, 1) per page,
 *    timed around the call; revoke: a CPU read of each exclusive page,
 *    timed around the load (the fault, the REVOKE invalidation with the
 *    device's fence, the page moved back).  Baselines, measured here: for
 *    the grab, taking one page from the CPU with mprotect(PROT_NONE) (and
 *    giving it back); for the revoke, the bare userfaultfd service-thread
 *    round trip and the mprotect+SIGSEGV migrator of scenario 2.
 * 7. Page state per touched page (uhmm_stats.metadata_bytes over the pages
 *    touched: page state is created a 2 MiB block at a time, on first
 *    use), the directories per managed page, and a 1 TiB allocation's
 *    cost before and after one touch.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int sc_exclusive(struct bench_sc *sc)
{
	size_t npages = cfg.quick ? 128 : 1024, len = npages * PAGE;
	int rounds = cfg.quick ? 2 : 8;
	size_t n = npages * (size_t)rounds;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	int e = make_ctx(sc, 0, 0, 64u << 20, &ctx, &dev);
	if (e < 0)
		return e;
	char *buf = NULL, *plain = NULL;
	double *grab = calloc(n, sizeof(double)), *rev = calloc(n, sizeof(double)),
	       *mp = calloc(n, sizeof(double)), *fl = calloc(n, sizeof(double)),
	       *batch = calloc((size_t)rounds, sizeof(double));
	if (!grab || !rev || !mp || !fl || !batch || !(plain = map_anon(len))) {
		e = -ENOMEM;
		goto out;
	}
	if ((e = uhmm_alloc(ctx, len, (void **)&buf)) < 0) {
		bench_fail(sc, "uhmm_alloc", e);
		goto out;
	}
	memset(buf, 0x21, len);
	memset(plain, 0x21, len);
	struct uhmm_stats s0 = { 0 }, s1;
	size_t k = 0;
	for (int r = -1; r < rounds; r++) { /* r = -1: warm-up */
		if (r == 0)
			uhmm_stats_get(ctx, &s0);
		for (size_t i = 0; i < npages; i++) {
			uint64_t t = now_ns();
			if ((e = uhmm_make_exclusive(dev, buf + i * PAGE, 1, NULL)) < 0) {
				bench_fail(sc, "uhmm_make_exclusive", e);
				goto out;
			}
			if (r >= 0)
				grab[k + i] = (double)(now_ns() - t);
		}
		if (uhmm_check_exclusive(dev, buf, npages) != 1) {
			e = bench_fail(sc, "uhmm_check_exclusive", -EIO);
			goto out;
		}
		for (size_t i = 0; i < npages; i++) {
			uint64_t t = now_ns();
			(void)((const volatile char *)buf)[i * PAGE];
			if (r >= 0)
				rev[k + i] = (double)(now_ns() - t);
		}
		/* Baseline for the grab: mprotect a page away and back. */
		for (size_t i = 0; i < npages; i++) {
			uint64_t t = now_ns();
			if (mprotect(plain + i * PAGE, PAGE, PROT_NONE) < 0) {
				e = bench_fail(sc, "mprotect", -errno);
				goto out;
			}
			if (r >= 0)
				mp[k + i] = (double)(now_ns() - t);
		}
		mprotect(plain, len, PROT_READ | PROT_WRITE);
		/* Batched grab, for the record: all pages in one call. */
		uint64_t t = now_ns();
		if ((e = uhmm_make_exclusive(dev, buf, npages, NULL)) < 0) {
			bench_fail(sc, "uhmm_make_exclusive (batch)", e);
			goto out;
		}
		if (r >= 0)
			batch[r] = (double)(now_ns() - t) / (double)npages;
		if ((e = uhmm_migrate(ctx, buf, len, NULL, 0)) < 0) { /* revoke all, untimed */
			bench_fail(sc, "uhmm_migrate home", e);
			goto out;
		}
		touch_write(buf, len);
		if (r >= 0)
			k += npages;
	}
	uhmm_stats_get(ctx, &s1);
	struct dist g = report_lat(sc, false, "grab", "grab: uhmm_make_exclusive, 1 page", grab, n);
	struct dist v = report_lat(sc, false, "revoke", "revoke: CPU read of an exclusive page", rev, n);
	uint64_t nrev = s1.exclusive_revocations - s0.exclusive_revocations;
	bench_fig(sc, "revoke_ns_mean_us",
		  nrev ? (double)(s1.exclusive_revoke_ns - s0.exclusive_revoke_ns) / 1e3 / (double)nrev : NAN,
		  "us", "revoke inside uhmm: exclusive_revoke_ns / revocations (mean)");
	bench_fig(sc, "grab_batched_us_per_page", dist_of(batch, (size_t)rounds).median / 1e3, "us",
		  "grab of all pages in one call, per page");
	struct dist m = report_lat(sc, true, "mprotect_none", "mprotect(PROT_NONE) of 1 page", mp, n);
	if ((e = floor_uffd_thread(fl, n, false)) < 0) {
		bench_fail(sc, "floor_uffd_thread", e);
		goto out;
	}
	struct dist f = report_lat(sc, true, "floor_uffd_thread", "bare uffd service thread + UFFDIO_COPY", fl, n);
	if ((e = floor_mprotect_sigsegv(fl, n)) < 0) {
		bench_fail(sc, "floor_mprotect_sigsegv", e);
		goto out;
	}
	struct dist ms = report_lat(sc, true, "mprotect_sigsegv", "mprotect+SIGSEGV migrator fault", fl, n);
	bench_ratio(sc, "grab_vs_mprotect", g.median / m.median, "grab median / mprotect(PROT_NONE) median");
	bench_ratio(sc, "revoke_vs_uffd_thread", v.median / f.median, "revoke median / bare service thread median");
	bench_ratio(sc, "revoke_vs_mprotect_sigsegv", v.median / ms.median,
		    "revoke median / mprotect+SIGSEGV fault median");
	bench_note(sc, "%zu pages x %d rounds; each page read by the CPU before its grab", npages, rounds);
out:
	free(grab);
	free(rev);
	free(mp);
	free(fl);
	free(batch);
	if (plain)
		munmap(plain, len);
	if (buf)
		uhmm_free(ctx, buf);
	uhmm_ctx_destroy(ctx);
	return e < 0 ? e : 0;
}

int sc_metadata(struct bench_sc *sc)
{
	uhmm_ctx *ctx;
	uhmm_device *dev;
	int e = make_ctx(sc, 0, 0, 64u << 20, &ctx, &dev);
	if (e < 0)
		return e;
	size_t alen = (size_t)256 << 20, rlen = (size_t)64 << 20;
	char *a = NULL, *r = map_anon(rlen);
	bool reg = false;
	if (!r) {
		e = -ENOMEM;
		goto out;
	}
	if ((e = uhmm_alloc(ctx, alen, (void **)&a)) < 0) {
		bench_fail(sc, "uhmm_alloc", e);
		goto out;
	}
	if ((e = uhmm_register(ctx, r, rlen)) < 0) {
		bench_fail(sc, "uhmm_register", e);
		goto out;
	}
	reg = true;
	/* Some pages on the device, so the state is not all-default. */
	memset(a, 1, 8u << 20);
	if ((e = uhmm_migrate(ctx, a, 8u << 20, dev, 0)) < 0) {
		bench_fail(sc, "uhmm_migrate", e);
		goto out;
	}
	/* Touched: the 8 MiB written (4 blocks of page state). */
	struct uhmm_stats s;
	uhmm_stats_get(ctx, &s);
	double touched = (double)((8u << 20) / 4096);
	double per = (double)s.metadata_bytes / touched;
	bench_fig(sc, "metadata_bytes_per_page", per, "B", "uhmm page-state bytes per touched 4 KiB page");
	bench_goal(sc, '<', 16);
	bench_fig(sc, "managed_pages", (double)s.managed_pages, "", "managed pages (256 MiB alloc + 64 MiB registered, 8 MiB touched)");
	bench_fig(sc, "metadata_bytes", (double)s.metadata_bytes, "B", "page-state bytes in all");
	bench_fig(sc, "metadata_dir_bytes_per_managed_page",
		  (double)s.metadata_dir_bytes / (double)s.managed_pages, "B",
		  "directory bytes per managed page, touched or not (16 per 2 MiB)");
	bench_base(sc, "struct_page_bytes", 64, "B", "reference: the kernel's struct page (x86-64, not measured)");
	bench_ratio(sc, "metadata_vs_struct_page", per / 64, "uhmm bytes per page / struct page");
	/* 1 TiB: the directory only, until touched. */
	char *t = NULL;
	if (uhmm_alloc(ctx, (size_t)1 << 40, (void **)&t) == 0) {
		struct uhmm_stats s1;
		t[0] = 1;
		uhmm_stats_get(ctx, &s1);
		bench_fig(sc, "metadata_1tib_bytes",
			  (double)(s1.metadata_bytes - s.metadata_bytes +
				   s1.metadata_dir_bytes - s.metadata_dir_bytes),
			  "B", "page state and directory of a 1 TiB uhmm_alloc with one page touched");
		uhmm_free(ctx, t);
	}
out:
	if (reg)
		uhmm_unregister(ctx, r, rlen);
	if (a)
		uhmm_free(ctx, a);
	uhmm_ctx_destroy(ctx);
	if (r)
		munmap(r, rlen);
	return e < 0 ? e : 0;
}
