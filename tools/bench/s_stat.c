/* SPDX-License-Identifier: MIT */
/*
 * Scenario "stat": what the live view (uhmm-stat; every context publishing
 * its counters and range residency into a shared segment, docs/STAT.md)
 * costs the fault and migration paths.
 *
 * Two contexts live side by side, one publishing (the default) and one
 * with UHMM_CTX_NO_STAT, and take turns round by round (which goes first
 * alternates), so that the machine's load weighs on both alike; all their
 * threads, the publisher included, share the measuring thread's CPU
 * (bench_pin_begin), so the publisher's work is paid where it would hurt.
 * A round: a buffer migrated to a simdev (uhmm_migrate), then read page by
 * page by the CPU (fault_around 1, no read-ahead: one fault bringing one
 * page home each), timed as a whole.  stat_overhead_ratio = the median
 * over rounds of (time publishing / not publishing), each pair run back to
 * back (target <= 1.02).  The publisher runs every UHMM_STAT_MS (250 ms by
 * default; the figure is measured at the period the environment sets).
 * With UHMM_STAT set in the environment (which wins over the flag) both
 * contexts would be alike: the scenario says so and reports no ratio.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct side {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *buf;
};

static int side_open(struct bench_sc *sc, struct side *s, bool publish, size_t len)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.fault_around = 1;
	o.readahead_pages = 0;
	o.spin_us = cfg.spin_us;
	if (!publish)
		o.flags |= UHMM_CTX_NO_STAT;
	BCHECK(sc, uhmm_ctx_create(&o, &s->ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 64u << 20;
	BCHECK(sc, uhmm_simdev_create(s->ctx, &so, &s->dev));
	BCHECK(sc, uhmm_alloc(s->ctx, len, (void **)&s->buf));
	memset(s->buf, 0x5a, len);
	return 0;
}

/* One round: to the device and back by faults; ns a page. */
static int side_round(struct bench_sc *sc, struct side *s, size_t pages, double *ns)
{
	uint64_t t = now_ns();
	BCHECK(sc, uhmm_migrate(s->ctx, s->buf, pages * PAGE, s->dev, 0));
	for (size_t i = 0; i < pages; i++)
		(void)*(const volatile char *)(s->buf + i * PAGE);
	*ns = (double)(now_ns() - t) / (double)pages;
	return 0;
}

int sc_stat(struct bench_sc *sc)
{
	const char *env = getenv("UHMM_STAT");
	if (env && *env) {
		bench_note(sc, "UHMM_STAT=%s is set: it wins over UHMM_CTX_NO_STAT, both contexts "
			   "would be alike; unset it to measure", env);
		return 0;
	}
	const char *ms = getenv("UHMM_STAT_MS");
	size_t pages = cfg.quick ? 256 : 1024;
	int rounds = cfg.quick ? 8 : 8 * (cfg.reps < 3 ? 3 : cfg.reps);
	struct side off = { 0 }, on = { 0 };
	double *t_off = calloc((size_t)rounds, sizeof(double));
	double *t_on = calloc((size_t)rounds, sizeof(double));
	double *pr = calloc((size_t)rounds, sizeof(double));
	int e = -ENOMEM;
	if (!t_off || !t_on || !pr)
		goto out;
	bench_pin_begin();
	if ((e = side_open(sc, &on, true, pages * PAGE)) < 0 ||
	    (e = side_open(sc, &off, false, pages * PAGE)) < 0)
		goto out;
	double warm;
	if ((e = side_round(sc, &off, pages, &warm)) < 0 ||
	    (e = side_round(sc, &on, pages, &warm)) < 0)
		goto out;
	for (int r = 0; r < rounds; r++) {
		struct side *a = r & 1 ? &on : &off, *b = r & 1 ? &off : &on;
		double *ta = r & 1 ? t_on : t_off, *tb = r & 1 ? t_off : t_on;
		if ((e = side_round(sc, a, pages, &ta[r])) < 0 ||
		    (e = side_round(sc, b, pages, &tb[r])) < 0)
			goto out;
		pr[r] = t_on[r] / t_off[r];
	}
	struct dist d_pr = dist_of(pr, (size_t)rounds);
	struct dist d_off = dist_of(t_off, (size_t)rounds), d_on = dist_of(t_on, (size_t)rounds);
	bench_base(sc, "fault_migrate_no_stat_ns", d_off.median, "ns",
		   "a page migrated to the device and faulted back, no live view: median round");
	bench_fig(sc, "fault_migrate_stat_ns", d_on.median, "ns",
		  "the same while the context publishes its live view");
	bench_ratio(sc, "stat_overhead", d_pr.median,
		    "fault and migration time, live view published / off (median of round pairs)");
	bench_goal(sc, '<', 1.02);
	bench_note(sc, "%zu pages a round, %d rounds each, the two contexts taking turns on one CPU; "
		   "publication every %s ms; ratio of the medians %.3f", pages, rounds,
		   ms && *ms ? ms : "250", d_on.median / d_off.median);
	e = 0;
out:
	if (off.ctx)
		uhmm_ctx_destroy(off.ctx);
	if (on.ctx)
		uhmm_ctx_destroy(on.ctx);
	bench_pin_end();
	free(t_off);
	free(t_on);
	free(pr);
	return e;
}
