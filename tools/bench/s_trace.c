/* SPDX-License-Identifier: MIT */
/*
 * Scenario "trace": the cost of recording a trace (uhmm_ctx_opts.trace_path,
 * docs/TRACING.md) on the CPU fault path.
 *
 * The fault benchmark: a CPU read of each page of a device-resident buffer,
 * fault_around 1 and no read-ahead, so every touch is one fault bringing one
 * page home (where a record costs the most relative to the work), timed
 * over the whole loop.  Two contexts live side by side, one recording and
 * one not, and take turns round by round (which goes first alternates), so
 * the load of the machine weighs on both alike; all their threads and the
 * faulting thread share one CPU (bench_pin_begin: the service thread's
 * placement alone made one context's faults 4x slower than the other's).  trace_overhead_ratio =
 * the median over rounds of (time with tracing on / off), each pair run
 * back to back (target <= 1.10).  Tracing,
 * each fault writes two records (the fault, the migration it makes) and
 * each batch toward the device one.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct side {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *buf;
};

static int side_open(struct bench_sc *sc, struct side *s, const char *trace, size_t len)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.fault_around = 1;
	o.readahead_pages = 0;
	o.spin_us = cfg.spin_us;
	o.trace_path = trace;
	BCHECK(sc, uhmm_ctx_create(&o, &s->ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 64u << 20;
	BCHECK(sc, uhmm_simdev_create(s->ctx, &so, &s->dev));
	BCHECK(sc, uhmm_alloc(s->ctx, len, (void **)&s->buf));
	memset(s->buf, 0x5a, len);
	return 0;
}

/* One round: to the device, then a touch of every page; ns a fault. */
static int side_round(struct bench_sc *sc, struct side *s, size_t pages, double *ns)
{
	BCHECK(sc, uhmm_migrate(s->ctx, s->buf, pages * PAGE, s->dev, 0));
	uint64_t t = now_ns();
	for (size_t i = 0; i < pages; i++)
		(void)*(const volatile char *)(s->buf + i * PAGE);
	*ns = (double)(now_ns() - t) / (double)pages;
	return 0;
}

int sc_trace(struct bench_sc *sc)
{
	size_t pages = cfg.quick ? 256 : 1024;
	int rounds = cfg.quick ? 6 : 4 * (cfg.reps < 3 ? 3 : cfg.reps);
	char path[64];
	snprintf(path, sizeof(path), "/tmp/uhmm-bench-trace-%d", (int)getpid());
	struct side off = { 0 }, on = { 0 };
	double *t_off = calloc((size_t)rounds, sizeof(double));
	double *t_on = calloc((size_t)rounds, sizeof(double));
	int e = -ENOMEM;
	if (!t_off || !t_on)
		goto out;
	/* Both contexts' threads on the faulting thread's CPU (bench.h). */
	bench_pin_begin();
	if ((e = side_open(sc, &on, path, pages * PAGE)) < 0 ||
	    (e = side_open(sc, &off, NULL, pages * PAGE)) < 0)
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
	}
	/* Each round's pair ran back to back: the median of their ratios
	 * cancels the load that changes from one pair to the next. */
	double *pr = calloc((size_t)rounds, sizeof(double));
	if (!pr) {
		e = -ENOMEM;
		goto out;
	}
	for (int r = 0; r < rounds; r++)
		pr[r] = t_on[r] / t_off[r];
	struct dist d_pr = dist_of(pr, (size_t)rounds);
	free(pr);
	struct dist d_off = dist_of(t_off, (size_t)rounds), d_on = dist_of(t_on, (size_t)rounds);
	bench_base(sc, "fault_untraced_us", d_off.median / 1000, "us",
		   "CPU fault (fault_around 1), no trace: median round");
	bench_fig(sc, "fault_traced_us", d_on.median / 1000, "us",
		  "CPU fault (fault_around 1), tracing: median round");
	bench_ratio(sc, "trace_overhead", d_pr.median,
		    "fault benchmark time, tracing on / off (median of round pairs)");
	bench_goal(sc, '<', 1.10);
	bench_note(sc, "%zu faults a round, %d rounds each, the two contexts taking turns; "
		   "ratio of the medians %.3f", pages, rounds, d_on.median / d_off.median);
	e = 0;
out:
	if (off.ctx)
		uhmm_ctx_destroy(off.ctx);
	if (on.ctx)
		uhmm_ctx_destroy(on.ctx);
	bench_pin_end();
	unlink(path);
	free(t_off);
	free(t_on);
	return e;
}
