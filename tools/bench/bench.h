/* SPDX-License-Identifier: MIT */
/*
 * uhmm-bench - shared declarations of the benchmark program.
 *
 * A scenario measures uhmm and its baselines in the same run and reports
 * through the functions below: figures (uhmm's numbers), baselines (what
 * uhmm is compared with) and ratios (optionally with a target).  main.c
 * prints them as a table or as JSON and draws the charts.
 */
#ifndef UHMM_BENCH_H
#define UHMM_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#define PAGE 4096u

/* Run-wide settings. */
struct bench_cfg {
	bool quick;  /* CI smoke run: small sizes, few repetitions */
	bool plot;   /* keep latency samples for the charts */
	bool json;   /* progress goes to stderr either way */
	int reps;    /* repetitions of throughput measurements */
	uint32_t spin_us; /* spin_us of the contexts make_ctx* create next */
};
extern struct bench_cfg cfg;

/* One scenario being measured. */
struct bench_sc;

/* Reporting.  @key is a JSON-safe identifier, @unit a short unit ("GB/s",
 * "us", "x", ""), @what a human description for the table. */
void bench_fig(struct bench_sc *sc, const char *key, double v, const char *unit,
	       const char *what);
void bench_base(struct bench_sc *sc, const char *key, double v, const char *unit,
		const char *what);
/* A ratio; the JSON key is @key followed by "_ratio". */
void bench_ratio(struct bench_sc *sc, const char *key, double v, const char *what);
/* Give the item reported last a target: @op '>' (at least), '<' (at
 * most) or '=' (exactly) @goal.  Targets are summarised after the table. */
void bench_goal(struct bench_sc *sc, int op, double goal);
/* A note printed under the scenario's table (and in JSON "notes"). */
void bench_note(struct bench_sc *sc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Keep a series of samples or points for the charts (copied). */
void bench_series(const char *name, const double *v, size_t n);
/* Progress on stderr. */
void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Fail the scenario: prints and returns err (negative). */
int bench_fail(struct bench_sc *sc, const char *what, int err);
#define BCHECK(sc, call)                                                       \
	do {                                                                   \
		int e_ = (call);                                               \
		if (e_ < 0)                                                    \
			return bench_fail((sc), #call, e_);                    \
	} while (0)

/* Time. */
uint64_t now_ns(void);
static inline double secs(uint64_t ns) { return (double)ns * 1e-9; }

/* Statistics over samples (sorted in place). */
struct dist {
	double median, p99, mean, min, max;
	size_t n;
};
struct dist dist_of(double *v, size_t n);
/* Report a latency distribution (in ns samples) as key_median_us,
 * key_p99_us (figure or baseline). */
struct dist report_lat(struct bench_sc *sc, bool baseline, const char *key,
		       const char *what, double *ns, size_t n);

/* Memory helpers. */
void *map_anon(size_t len);          /* NULL on failure */
void touch_write(void *p, size_t len); /* write every page */
uint64_t read_sum(const void *p, size_t len); /* read every word */
double memcpy_gbps(size_t total, size_t chunk, int reps); /* warm, median */
double copy_read_gbps(size_t total, size_t chunk, int reps); /* copy a chunk, read it */
/* GB/s of total bytes in ns. */
static inline double gbps(size_t bytes, uint64_t ns) { return ns ? (double)bytes / (double)ns : 0; }

/* A context with a simdev (mem_bytes device memory), for scenarios. */
int make_ctx(struct bench_sc *sc, uint32_t flags, uint32_t fault_around,
	     uint64_t dev_bytes, uhmm_ctx **ctx, uhmm_device **dev);
/* The same with readahead_pages (< 0: the default). */
int make_ctx_ra(struct bench_sc *sc, uint32_t flags, uint32_t fault_around, long readahead,
		uint64_t dev_bytes, uhmm_ctx **ctx, uhmm_device **dev);

/* Baseline floors of scenario 2, reused by others (latencies in ns). */
int floor_uffd_thread(double *ns, size_t n, bool spin);
int floor_sigbus_move(double *ns, size_t n);
int floor_mprotect_sigsegv(double *ns, size_t n);
int floor_kernel_fault(double *ns, size_t n);
/*
 * Paired comparisons of two contexts (trace, policy plug-in): a CPU fault's
 * time depends 4x and more on whether the context's service thread runs on
 * the faulting thread's CPU or on the other one (a cross-CPU wake-up on this
 * VM), and the scheduler places each context's thread as it likes, so two
 * identical contexts measured bimodal.  bench_pin_begin() pins the calling
 * thread to the CPU it is on; contexts created until bench_pin_end() inherit
 * that mask for all their threads, so both sides of a pair run alike.
 */
void bench_pin_begin(void);
void bench_pin_end(void);
/* Scenario 1's floor: one raw UFFDIO_MOVE + memcpy per batch (GB/s). */
int floor_move_copy_gbps(size_t len, size_t batch, int reps, double *out);

/* Scenarios: each returns 0 or a negative errno. */
int sc_migrate(struct bench_sc *sc);
int sc_cpufault(struct bench_sc *sc);
int sc_contention(struct bench_sc *sc);
int sc_mirror(struct bench_sc *sc);
int sc_devfault(struct bench_sc *sc);
int sc_exclusive(struct bench_sc *sc);
int sc_metadata(struct bench_sc *sc);
int sc_oversub(struct bench_sc *sc);
int sc_trace(struct bench_sc *sc);
int sc_policy(struct bench_sc *sc);
int sc_simdev(struct bench_sc *sc);
int sc_coherent(struct bench_sc *sc);
int sc_usdt(struct bench_sc *sc);
/* s_stat.c: the live view's publication on / off (stat_overhead_ratio). */
int sc_stat(struct bench_sc *sc);
/* s_usdt.c: the child process of the usdt scenario (uhmm-bench --usdt-child). */
int usdt_child(int argc, char **argv);

#endif /* UHMM_BENCH_H */
