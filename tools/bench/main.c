/* SPDX-License-Identifier: MIT */
/*
 * uhmm-bench - uhmm measured side by side with its baselines.
 *
 *   uhmm-bench [--quick] [--json] [--plot DIR] [--scenario NAME[,NAME...]]
 *              [--reps N] [--list]
 *
 * Every scenario measures uhmm and the baselines it is compared with in the
 * same run (these machines are noisy VMs: only ratios within one run mean
 * something), warms memory before timing, repeats, and reports medians and
 * 99th percentiles.  The default output is a table; --json prints one JSON
 * object (each scenario: "figures", "baselines", and the ratios as fields
 * whose names end in "_ratio"); --quick is the CI smoke run (seconds, small
 * sizes; it never fails on slowness); --plot DIR writes gnuplot charts.
 * Exit status: 0, or 1 if a scenario failed with an error, 2 for bad usage.
 * docs/PERFORMANCE.md has a full run and what each figure means.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

struct bench_cfg cfg = { .reps = 0 };

enum { K_FIG, K_BASE, K_RATIO };

struct item {
	int kind;
	char key[64];
	double v;
	char unit[12];
	char what[112];
	int goal_op;
	double goal;
};

#define MAX_ITEMS 96
#define MAX_NOTES 12

struct bench_sc {
	const char *name;
	const char *title;
	int (*fn)(struct bench_sc *sc);
	struct item items[MAX_ITEMS];
	int nitems;
	char notes[MAX_NOTES][240];
	int nnotes;
	int err;
	char errwhat[160];
	double elapsed;
	bool ran;
};

static struct bench_sc scenarios[] = {
	{ .name = "migrate", .title = "1. Migration to device (uhmm_migrate per batch) vs memcpy", .fn = sc_migrate },
	{ .name = "cpufault", .title = "2. Return on CPU fault: per-fault latency and sequential read", .fn = sc_cpufault },
	{ .name = "contention", .title = "3. Same-page contention: 8 threads vs 1", .fn = sc_contention },
	{ .name = "mirror", .title = "4. Mirror vs pin: resubmission over an unchanged mirrored range", .fn = sc_mirror },
	{ .name = "devfault", .title = "5. Device faults: batched vs one at a time", .fn = sc_devfault },
	{ .name = "exclusive", .title = "6. Exclusive access: grab and revoke", .fn = sc_exclusive },
	{ .name = "metadata", .title = "7. Metadata per touched page; a 1 TiB allocation", .fn = sc_metadata },
	{ .name = "oversub", .title = "8. Oversubscription: kernels over 0.5x-4x device memory (eviction)", .fn = sc_oversub },
	{ .name = "trace", .title = "Trace recording: the CPU fault benchmark with tracing on / off", .fn = sc_trace },
	{ .name = "policy", .title = "Policy: thrashing control, prefetcher, eviction vs the optimum, plug-in cost", .fn = sc_policy },
	{ .name = "simdev", .title = "9. simdev accessors: TLB-hit load, SAXPY, stencil, random access vs CPU loops", .fn = sc_simdev },
	{ .name = "coherent", .title = "10. Coherent device memory: CPU reads in place vs memcpy", .fn = sc_coherent },
	{ .name = "usdt", .title = "USDT probes unattached vs a build without them", .fn = sc_usdt },
	{ .name = "stat", .title = "Live view (uhmm-stat): publication on / off under faults and migrations", .fn = sc_stat },
};
#define NSC (sizeof(scenarios) / sizeof(scenarios[0]))

/* ---------------------------------------------------------------- report */

static struct item *add_item(struct bench_sc *sc, int kind, const char *key, double v,
			     const char *unit, const char *what)
{
	if (sc->nitems >= MAX_ITEMS) {
		fprintf(stderr, "uhmm-bench: too many items in %s\n", sc->name);
		return NULL;
	}
	struct item *it = &sc->items[sc->nitems++];
	memset(it, 0, sizeof(*it));
	it->kind = kind;
	snprintf(it->key, sizeof(it->key), "%s", key);
	it->v = v;
	snprintf(it->unit, sizeof(it->unit), "%s", unit ? unit : "");
	snprintf(it->what, sizeof(it->what), "%s", what ? what : key);
	return it;
}

void bench_fig(struct bench_sc *sc, const char *key, double v, const char *unit,
	       const char *what)
{
	add_item(sc, K_FIG, key, v, unit, what);
}

void bench_base(struct bench_sc *sc, const char *key, double v, const char *unit,
		const char *what)
{
	add_item(sc, K_BASE, key, v, unit, what);
}

void bench_ratio(struct bench_sc *sc, const char *key, double v, const char *what)
{
	/* The JSON field is KEY_ratio; a key that names its field whole (it
	 * ends in _ratio or _speedup, or is a fraction such as
	 * thp_kept_after_roundtrip) is used as it is, so that the fields are
	 * the ones the issues name (they read "..._ratio_ratio" before). */
	char k[64];
	size_t n = strlen(key);
	bool whole = (n > 6 && !strcmp(key + n - 6, "_ratio")) ||
		     (n > 8 && !strcmp(key + n - 8, "_speedup")) || strstr(key, "_kept_");
	snprintf(k, sizeof(k), whole ? "%s" : "%s_ratio", key);
	add_item(sc, K_RATIO, k, v, "x", what);
}

void bench_goal(struct bench_sc *sc, int op, double goal)
{
	if (!sc->nitems)
		return;
	sc->items[sc->nitems - 1].goal_op = op;
	sc->items[sc->nitems - 1].goal = goal;
}

void bench_note(struct bench_sc *sc, const char *fmt, ...)
{
	if (sc->nnotes >= MAX_NOTES)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sc->notes[sc->nnotes++], sizeof(sc->notes[0]), fmt, ap);
	va_end(ap);
}

void bench_progress(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "uhmm-bench: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

int bench_fail(struct bench_sc *sc, const char *what, int err)
{
	if (!sc->err) {
		sc->err = err;
		snprintf(sc->errwhat, sizeof(sc->errwhat), "%s", what);
	}
	fprintf(stderr, "uhmm-bench: %s: %s: %s\n", sc->name, what, uhmm_strerror(err));
	return err;
}

struct series {
	char name[64];
	double *v;
	size_t n;
};
#define MAX_SERIES 32
static struct series series[MAX_SERIES];
static size_t nseries;

void bench_series(const char *name, const double *v, size_t n)
{
	if (!cfg.plot || nseries >= MAX_SERIES || !n)
		return;
	struct series *s = &series[nseries];
	s->v = malloc(n * sizeof(double));
	if (!s->v)
		return;
	memcpy(s->v, v, n * sizeof(double));
	s->n = n;
	snprintf(s->name, sizeof(s->name), "%s", name);
	nseries++;
}

static struct series *find_series(const char *name)
{
	for (size_t i = 0; i < nseries; i++)
		if (!strcmp(series[i].name, name))
			return &series[i];
	return NULL;
}

/* ----------------------------------------------------------------- helpers */

uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v. */
static double pct(const double *v, size_t n, double p)
{
	if (!n)
		return NAN;
	size_t r = (size_t)ceil(p / 100.0 * (double)n);
	if (r < 1)
		r = 1;
	if (r > n)
		r = n;
	return v[r - 1];
}

struct dist dist_of(double *v, size_t n)
{
	struct dist d = { .median = NAN, .p99 = NAN, .mean = NAN, .min = NAN, .max = NAN, .n = n };
	if (!n)
		return d;
	qsort(v, n, sizeof(double), cmp_double);
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += v[i];
	d.mean = s / (double)n;
	d.min = v[0];
	d.max = v[n - 1];
	d.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	d.p99 = pct(v, n, 99);
	return d;
}

struct dist report_lat(struct bench_sc *sc, bool baseline, const char *key,
		       const char *what, double *ns, size_t n)
{
	struct dist d = dist_of(ns, n);
	char k[64], w[112];
	snprintf(k, sizeof(k), "%s_median_us", key);
	snprintf(w, sizeof(w), "%s: median (n=%zu)", what, n);
	(baseline ? bench_base : bench_fig)(sc, k, d.median / 1e3, "us", w);
	snprintf(k, sizeof(k), "%s_p99_us", key);
	snprintf(w, sizeof(w), "%s: p99", what);
	(baseline ? bench_base : bench_fig)(sc, k, d.p99 / 1e3, "us", w);
	bench_series(key, ns, n);
	return d;
}

void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void touch_write(void *p, size_t len)
{
	for (size_t off = 0; off < len; off += PAGE)
		((volatile char *)p)[off] = (char)(off >> 12 | 1);
}

uint64_t read_sum(const void *p, size_t len)
{
	const uint64_t *w = p;
	uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	for (size_t i = 0; i + 4 <= len / 8; i += 4) {
		s0 += w[i];
		s1 += w[i + 1];
		s2 += w[i + 2];
		s3 += w[i + 3];
	}
	return s0 + s1 + s2 + s3;
}

/* Copies total bytes chunk by chunk between two warm buffers, reading each
 * chunk back (read_sum) after its copy if read_back; median GB/s of reps
 * runs (after one untimed run). */
static double copy_gbps(size_t total, size_t chunk, int reps, bool read_back)
{
	char *a = map_anon(total), *b = map_anon(total);
	double r = NAN;
	uint64_t sink = 0;
	if (!a || !b)
		goto out;
	memset(a, 0x5a, total);
	memset(b, 0xa5, total);
	double *v = calloc((size_t)reps, sizeof(double));
	if (!v)
		goto out;
	for (int k = -1; k < reps; k++) {
		uint64_t t = now_ns();
		for (size_t off = 0; off < total; off += chunk) {
			memcpy(b + off, a + off, chunk);
			if (read_back)
				sink += read_sum(b + off, chunk);
		}
		t = now_ns() - t;
		__asm__ volatile("" ::"r"(b) : "memory");
		if (k >= 0)
			v[k] = gbps(total, t);
	}
	__asm__ volatile("" ::"r"(sink));
	r = dist_of(v, (size_t)reps).median;
	free(v);
out:
	if (a)
		munmap(a, total);
	if (b)
		munmap(b, total);
	return r;
}

/* The memcpy baseline: total bytes copied chunk by chunk. */
double memcpy_gbps(size_t total, size_t chunk, int reps)
{
	return copy_gbps(total, chunk, reps, false);
}

/* The limit of serving a sequential read block by block on one CPU: copy a
 * chunk, read it, next chunk.  A chunk of a few hundred KiB is copied with
 * ordinary stores (the copy of a whole large buffer is not: glibc streams
 * it), so this is slower than memcpy_gbps of the whole. */
double copy_read_gbps(size_t total, size_t chunk, int reps)
{
	return copy_gbps(total, chunk, reps, true);
}

int make_ctx(struct bench_sc *sc, uint32_t flags, uint32_t fault_around,
	     uint64_t dev_bytes, uhmm_ctx **ctx, uhmm_device **dev)
{
	return make_ctx_ra(sc, flags, fault_around, -1, dev_bytes, ctx, dev);
}

int make_ctx_ra(struct bench_sc *sc, uint32_t flags, uint32_t fault_around, long readahead,
		uint64_t dev_bytes, uhmm_ctx **ctx, uhmm_device **dev)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = flags;
	if (fault_around)
		o.fault_around = fault_around;
	if (readahead >= 0)
		o.readahead_pages = (uint32_t)readahead;
	o.spin_us = cfg.spin_us;
	int e = uhmm_ctx_create(&o, ctx);
	if (e < 0)
		return bench_fail(sc, "uhmm_ctx_create", e);
	struct uhmm_ctx_info info;
	if (uhmm_ctx_info(*ctx, &info) == 0 && fault_around && info.fault_around != fault_around)
		bench_note(sc, "fault_around %u asked, %u in force (UHMM_FAULT_AROUND in the environment?)",
			   fault_around, info.fault_around);
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = (dev_bytes + UHMM_HUGE_SIZE - 1) & ~(uint64_t)(UHMM_HUGE_SIZE - 1);
	e = uhmm_simdev_create(*ctx, &so, dev);
	if (e < 0) {
		uhmm_ctx_destroy(*ctx);
		return bench_fail(sc, "uhmm_simdev_create", e);
	}
	return 0;
}

static cpu_set_t pin_saved;
static bool pinned;

void bench_pin_begin(void)
{
	int cpu = sched_getcpu();
	if (pinned || cpu < 0 || sched_getaffinity(0, sizeof(pin_saved), &pin_saved))
		return;
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	pinned = sched_setaffinity(0, sizeof(one), &one) == 0;
}

void bench_pin_end(void)
{
	if (pinned)
		(void)sched_setaffinity(0, sizeof(pin_saved), &pin_saved);
	pinned = false;
}

/* ------------------------------------------------------------------ output */

static char load_start[64], load_end[64];

static const char *kind_name[] = { "figure", "baseline", "ratio" };

static void fmt_num(char *buf, size_t n, double v)
{
	if (isnan(v))
		snprintf(buf, n, "n/a");
	else if (fabs(v) >= 1e6)
		snprintf(buf, n, "%.3g", v);
	else if (fabs(v) >= 100)
		snprintf(buf, n, "%.0f", v);
	else if (fabs(v) >= 10)
		snprintf(buf, n, "%.1f", v);
	else
		snprintf(buf, n, "%.3g", v);
}

static bool goal_met(const struct item *it)
{
	switch (it->goal_op) {
	case '>': return it->v >= it->goal;
	case '<': return it->v <= it->goal;
	case '=': return fabs(it->v - it->goal) < 1e-9;
	}
	return true;
}

static const char *goal_str(const struct item *it, char *buf, size_t n)
{
	const char *op = it->goal_op == '>' ? ">=" : it->goal_op == '<' ? "<=" : "==";
	char g[32];
	fmt_num(g, sizeof(g), it->goal);
	snprintf(buf, n, "target %s %s: %s", op, g,
		 cfg.quick ? "not judged (--quick sizes)" :
		 isnan(it->v) ? "NOT MEASURED" : goal_met(it) ? "met" : "MISSED");
	return buf;
}

static void print_table(FILE *f)
{
	for (size_t s = 0; s < NSC; s++) {
		struct bench_sc *sc = &scenarios[s];
		if (!sc->ran)
			continue;
		fprintf(f, "\n%s  [%s, %.1f s]\n", sc->title, sc->name, sc->elapsed);
		for (int i = 0; i < sc->nitems; i++) {
			struct item *it = &sc->items[i];
			char num[32], g[96];
			fmt_num(num, sizeof(num), it->v);
			fprintf(f, "  %-8s %-66s %10s %-5s%s%s\n", kind_name[it->kind], it->what, num,
				it->unit, it->goal_op ? "  " : "",
				it->goal_op ? goal_str(it, g, sizeof(g)) : "");
		}
		for (int i = 0; i < sc->nnotes; i++)
			fprintf(f, "  note: %s\n", sc->notes[i]);
		if (sc->err)
			fprintf(f, "  ERROR: %s: %s\n", sc->errwhat, uhmm_strerror(sc->err));
	}
	fprintf(f, "\nTargets\n");
	for (size_t s = 0; s < NSC; s++) {
		struct bench_sc *sc = &scenarios[s];
		for (int i = 0; sc->ran && i < sc->nitems; i++) {
			struct item *it = &sc->items[i];
			if (!it->goal_op)
				continue;
			char num[32], g[96];
			fmt_num(num, sizeof(num), it->v);
			fprintf(f, "  %-11s %-62s %10s  %s\n", sc->name, it->what, num,
				goal_str(it, g, sizeof(g)));
		}
	}
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_num(FILE *f, double v)
{
	if (isnan(v) || isinf(v))
		fputs("null", f);
	else
		fprintf(f, "%.6g", v);
}

static void print_json(FILE *f, double total)
{
	struct utsname u;
	uname(&u);
	fprintf(f, "{\n  \"program\": \"uhmm-bench\",\n  \"uhmm_version\": \"%d.%d\",\n",
		UHMM_VERSION_MAJOR, UHMM_VERSION_MINOR);
	fprintf(f, "  \"kernel\": ");
	json_str(f, u.release);
	fprintf(f, ",\n  \"cpus\": %ld,\n  \"quick\": %s,\n  \"reps\": %d,\n  \"elapsed_s\": %.2f,\n",
		sysconf(_SC_NPROCESSORS_ONLN), cfg.quick ? "true" : "false", cfg.reps, total);
	fprintf(f, "  \"loadavg_start\": ");
	json_str(f, load_start);
	fprintf(f, ",\n  \"loadavg_end\": ");
	json_str(f, load_end);
	fprintf(f, ",\n  \"scenarios\": [");
	bool first = true;
	for (size_t s = 0; s < NSC; s++) {
		struct bench_sc *sc = &scenarios[s];
		if (!sc->ran)
			continue;
		fprintf(f, "%s\n    {\n      \"name\": ", first ? "" : ",");
		first = false;
		json_str(f, sc->name);
		fprintf(f, ",\n      \"title\": ");
		json_str(f, sc->title);
		fprintf(f, ",\n      \"elapsed_s\": %.2f,\n      \"error\": ", sc->elapsed);
		if (sc->err) {
			char e[256];
			snprintf(e, sizeof(e), "%s: %s", sc->errwhat, uhmm_strerror(sc->err));
			json_str(f, e);
		} else {
			fputs("null", f);
		}
		static const char *group[] = { "figures", "baselines" };
		for (int k = K_FIG; k <= K_BASE; k++) {
			fprintf(f, ",\n      \"%s\": {", group[k]);
			bool f1 = true;
			for (int i = 0; i < sc->nitems; i++) {
				struct item *it = &sc->items[i];
				if (it->kind != k)
					continue;
				fprintf(f, "%s\n        ", f1 ? "" : ",");
				f1 = false;
				json_str(f, it->key);
				fputs(": ", f);
				json_num(f, it->v);
			}
			fprintf(f, "%s}", f1 ? "" : "\n      ");
		}
		for (int i = 0; i < sc->nitems; i++) {
			struct item *it = &sc->items[i];
			if (it->kind != K_RATIO)
				continue;
			fprintf(f, ",\n      ");
			json_str(f, it->key);
			fputs(": ", f);
			json_num(f, it->v);
		}
		fprintf(f, ",\n      \"targets\": [");
		bool f2 = true;
		for (int i = 0; i < sc->nitems; i++) {
			struct item *it = &sc->items[i];
			if (!it->goal_op)
				continue;
			fprintf(f, "%s\n        {\"field\": ", f2 ? "" : ",");
			f2 = false;
			json_str(f, it->key);
			fprintf(f, ", \"value\": ");
			json_num(f, it->v);
			fprintf(f, ", \"op\": \"%s\", \"goal\": ",
				it->goal_op == '>' ? ">=" : it->goal_op == '<' ? "<=" : "==");
			json_num(f, it->goal);
			fprintf(f, ", \"met\": %s}", cfg.quick ? "null" :
				!isnan(it->v) && goal_met(it) ? "true" : "false");
		}
		fprintf(f, "%s],\n      \"units\": {", f2 ? "" : "\n      ");
		for (int i = 0; i < sc->nitems; i++) {
			fprintf(f, "%s", i ? ", " : "");
			json_str(f, sc->items[i].key);
			fputs(": ", f);
			json_str(f, sc->items[i].unit);
		}
		fprintf(f, "},\n      \"notes\": [");
		for (int i = 0; i < sc->nnotes; i++) {
			fprintf(f, "%s", i ? ", " : "");
			json_str(f, sc->notes[i]);
		}
		fprintf(f, "]\n    }");
	}
	fprintf(f, "\n  ]\n}\n");
}

/* ------------------------------------------------------------------- plots */

static bool have_gnuplot(void)
{
	const char *path = getenv("PATH");
	if (!path)
		return false;
	char *dup = strdup(path), *save = NULL;
	bool found = false;
	for (char *d = strtok_r(dup, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
		char p[4096];
		snprintf(p, sizeof(p), "%s/gnuplot", *d ? d : ".");
		found = access(p, X_OK) == 0;
	}
	free(dup);
	return found;
}

static const char *lat_series[][2] = {
	{ "uhmm_move_fa1", "uhmm service thread, UFFDIO_MOVE pool" },
	{ "uhmm_copy_fa1", "uhmm service thread, UFFDIO_COPY (NO_MOVE)" },
	{ "floor_uffd_thread", "floor: bare service thread, UFFDIO_COPY" },
	{ "floor_uffd_spin", "floor: bare spinning thread, UFFDIO_COPY" },
	{ "floor_sigbus_move", "floor: SIGBUS handler, UFFDIO_MOVE" },
	{ "mprotect_sigsegv", "mprotect+SIGSEGV migrator" },
	{ "kernel_fault", "kernel anonymous fault" },
};

static int write_plots(const char *dir)
{
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "uhmm-bench: --plot: mkdir %s: %s\n", dir, strerror(errno));
		return -1;
	}
	char path[4096];
	int charts = 0;
	snprintf(path, sizeof(path), "%s/uhmm-bench.gp", dir);
	FILE *gp = fopen(path, "w");
	if (!gp) {
		fprintf(stderr, "uhmm-bench: --plot: %s: %s\n", path, strerror(errno));
		return -1;
	}
	fprintf(gp, "set terminal pngcairo size 900,560 noenhanced\nset grid\nset key top left\n");

	struct series *tu = find_series("migrate_uhmm_gbps"), *tm = find_series("migrate_memcpy_gbps");
	struct series *tk = find_series("migrate_batch_kib"), *tf = find_series("migrate_floor_gbps");
	if (tu && tm && tk && tu->n == tm->n && tk->n == tu->n) {
		snprintf(path, sizeof(path), "%s/throughput.dat", dir);
		FILE *d = fopen(path, "w");
		if (d) {
			fprintf(d, "# batch_KiB uhmm_GBps memcpy_GBps floor_GBps (raw UFFDIO_MOVE + memcpy)\n");
			for (size_t i = 0; i < tu->n; i++)
				fprintf(d, "%g %g %g %g\n", tk->v[i], tu->v[i], tm->v[i],
					tf && tf->n == tu->n ? tf->v[i] : NAN);
			fclose(d);
			fprintf(gp, "set output 'throughput.png'\nset title 'Migration to device: throughput vs batch size'\n"
				    "set logscale x 2\nset xlabel 'batch size (KiB)'\nset ylabel 'GB/s'\n"
				    "plot 'throughput.dat' using 1:2 with linespoints lw 2 title 'uhmm_migrate', "
				    "'' using 1:3 with linespoints lw 2 title 'memcpy', "
				    "'' using 1:4 with linespoints lw 2 title 'floor: UFFDIO_MOVE + memcpy'\nunset logscale x\n");
			charts++;
		}
	} else {
		fprintf(stderr, "uhmm-bench: --plot: no throughput chart (scenario migrate did not run)\n");
	}

	bool any = false;
	snprintf(path, sizeof(path), "%s/latency.dat", dir);
	FILE *d = fopen(path, "w");
	if (d) {
		/* One block per series (gnuplot "index"): latency_us, cumulative fraction. */
		for (size_t k = 0; k < sizeof(lat_series) / sizeof(lat_series[0]); k++) {
			struct series *s = find_series(lat_series[k][0]);
			fprintf(d, "# %s\n", lat_series[k][0]);
			if (s)
				for (size_t i = 0; i < s->n; i++)
					fprintf(d, "%g %g\n", s->v[i] / 1e3, (double)(i + 1) / (double)s->n);
			else
				fprintf(d, "NaN NaN\n");
			fprintf(d, "\n\n");
			any |= s != NULL;
		}
		fclose(d);
	}
	if (any) {
		fprintf(gp, "set output 'latency.png'\nset title 'CPU fault latency on a device-resident 4 KiB page (CDF)'\n"
			    "set logscale x 10\nset xlabel 'latency (us)'\nset ylabel 'fraction of faults'\n"
			    "set key bottom right\nset yrange [0:1]\nplot ");
		size_t ns = sizeof(lat_series) / sizeof(lat_series[0]);
		for (size_t k = 0; k < ns; k++)
			fprintf(gp, "'latency.dat' index %zu using 1:2 with lines lw 2 title '%s'%s", k,
				lat_series[k][1], k + 1 < ns ? ", " : "\n");
		charts++;
	} else {
		fprintf(stderr, "uhmm-bench: --plot: no latency chart (scenario cpufault did not run)\n");
	}
	fclose(gp);
	if (!charts)
		return 0;
	if (!have_gnuplot()) {
		fprintf(stderr, "uhmm-bench: --plot: gnuplot not found: data and script left in %s, no PNGs"
				" (run 'cd %s && gnuplot uhmm-bench.gp' where gnuplot exists)\n", dir, dir);
		return 0;
	}
	char cmd[8192];
	snprintf(cmd, sizeof(cmd), "cd '%s' && gnuplot uhmm-bench.gp", dir);
	int rc = system(cmd);
	if (rc != 0) {
		fprintf(stderr, "uhmm-bench: --plot: gnuplot failed (status %d)\n", rc);
		return -1;
	}
	fprintf(stderr, "uhmm-bench: charts written to %s (throughput.png, latency.png)\n", dir);
	return 0;
}

/* -------------------------------------------------------------------- main */

static void usage(FILE *f, const char *argv0)
{
	fprintf(f,
		"usage: %s [--quick] [--json] [--plot DIR] [--scenario NAME[,NAME...]] [--reps N] [--list]\n"
		"  --quick     CI smoke run: small sizes, a few seconds, no thresholds\n"
		"  --json      machine-readable output on stdout (progress stays on stderr)\n"
		"  --plot DIR  write gnuplot charts (throughput vs batch size, fault latency CDF)\n"
		"  --scenario  run only these scenarios (see --list)\n"
		"  --reps N    repetitions of throughput measurements (default 5, quick 2)\n",
		argv0);
}

static void read_loadavg(char *buf, size_t n)
{
	FILE *f = fopen("/proc/loadavg", "r");
	buf[0] = 0;
	if (f) {
		if (fgets(buf, (int)n, f))
			buf[strcspn(buf, "\n")] = 0;
		fclose(f);
	}
}

int main(int argc, char **argv)
{
	const char *plot_dir = NULL, *only = NULL;
	if (argc > 1 && !strcmp(argv[1], "--usdt-child"))
		return usdt_child(argc, argv);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			cfg.quick = true;
		} else if (!strcmp(argv[i], "--json")) {
			cfg.json = true;
		} else if (!strcmp(argv[i], "--plot") && i + 1 < argc) {
			plot_dir = argv[++i];
			cfg.plot = true;
		} else if (!strcmp(argv[i], "--scenario") && i + 1 < argc) {
			only = argv[++i];
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			cfg.reps = atoi(argv[++i]);
			if (cfg.reps < 1 || cfg.reps > 100) {
				fprintf(stderr, "uhmm-bench: --reps: 1..100\n");
				return 2;
			}
		} else if (!strcmp(argv[i], "--list")) {
			for (size_t s = 0; s < NSC; s++)
				printf("%-11s %s\n", scenarios[s].name, scenarios[s].title);
			return 0;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout, argv[0]);
			return 0;
		} else {
			usage(stderr, argv[0]);
			return 2;
		}
	}
	if (!cfg.reps)
		cfg.reps = cfg.quick ? 2 : 5;
	bool sel[NSC];
	for (size_t s = 0; s < NSC; s++)
		sel[s] = only == NULL;
	if (only) {
		char *dup = strdup(only), *save = NULL;
		for (char *n = strtok_r(dup, ",", &save); n; n = strtok_r(NULL, ",", &save)) {
			size_t s = 0;
			while (s < NSC && strcmp(scenarios[s].name, n))
				s++;
			if (s == NSC) {
				fprintf(stderr, "uhmm-bench: no scenario '%s' (--list)\n", n);
				free(dup);
				return 2;
			}
			sel[s] = true;
		}
		free(dup);
	}

	read_loadavg(load_start, sizeof(load_start));
	uint64_t t0 = now_ns();
	int failed = 0;
	for (size_t s = 0; s < NSC; s++) {
		if (!sel[s])
			continue;
		struct bench_sc *sc = &scenarios[s];
		bench_progress("%s: %s", sc->name, sc->title);
		uint64_t t = now_ns();
		int e = sc->fn(sc);
		sc->elapsed = secs(now_ns() - t);
		sc->ran = true;
		if (e < 0 && !sc->err)
			bench_fail(sc, "scenario", e);
		failed += sc->err != 0;
	}
	double total = secs(now_ns() - t0);
	read_loadavg(load_end, sizeof(load_end));
	if (cfg.json) {
		print_json(stdout, total);
	} else {
		printf("uhmm-bench%s: %d repetition%s of each throughput figure; latencies are per fault"
		       " (median, 99th percentile)\n", cfg.quick ? " --quick" : "", cfg.reps,
		       cfg.reps > 1 ? "s" : "");
		printf("load average (/proc/loadavg) at start: %s; at end: %s\n", load_start, load_end);
		print_table(stdout);
		printf("\ntotal %.1f s%s\n", total, failed ? ", SOME SCENARIOS FAILED" : "");
	}
	fflush(stdout);
	if (plot_dir && write_plots(plot_dir) < 0)
		failed++;
	for (size_t i = 0; i < nseries; i++)
		free(series[i].v);
	return failed ? 1 : 0;
}
