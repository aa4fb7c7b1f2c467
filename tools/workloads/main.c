/* SPDX-License-Identifier: MIT */
/*
 * uhmm-workloads - a suite of workloads run on a simdev, each verified
 * against a CPU reference, at sizes given in bytes or as multiples of the
 * device's memory (README.md, "uhmm-workloads").
 *
 *   uhmm-workloads [--quick] [--oversub F[,F...] | --size BYTES]
 *                  [--dev-mib N] [--link PRESET] [--mode touch|remote|prefetch]
 *                  [--atomics auto|exclusive|migrate]
 *                  [--only NAME[,NAME...]] [--seed N] [--json] [--list]
 *
 * Each (workload, size) runs in a context and simdev of its own.  Exit
 * status: 0 when every run verified, 1 when one did not (or failed), 2 on
 * bad options.
 */
#define _GNU_SOURCE
#include "wl.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

const struct workload wl_all[] = {
	{ "triad", "stream", "STREAM triad a = b + s*c (double)", wl_triad },
	{ "saxpy", "stream", "SAXPY y = a*x + y (float)", wl_saxpy },
	{ "jacobi", "regular", "2D Jacobi 5-point stencil sweeps (float)", wl_jacobi },
	{ "matmul", "regular", "tiled matrix multiply C = A*B, A MxK, B KxN (float)", wl_matmul },
	{ "bfs", "irregular", "BFS over an R-MAT graph in CSR (atomic CAS frontier)", wl_bfs },
	{ "spmv", "irregular", "sparse matrix-vector product, CSR (float)", wl_spmv },
	{ "gups", "irregular", "GUPS random updates with atomic adds (u64)", wl_gups },
	{ "kmeans", "irregular", "k-means, fixed-point sums with atomic adds", wl_kmeans },
	{ "list", "chase", "linked lists of malloc'd nodes (uhmm_register'd heap)", wl_list },
	{ "tree", "chase", "search tree of malloc'd nodes (uhmm_register'd heap)", wl_tree },
	{ "pingpong", "share", "CPU-device producer/consumer on the same pages", wl_pingpong },
	{ "histogram", "share", "histogram, device and CPU atomics on the same bins", wl_histogram },
	{ "hash", "share", "lock-free hash table, CPU threads + device CAS inserts", wl_hash },
	{ "hash1", "share", "the same hash table with a single bin", wl_hash1 },
};
const size_t wl_count = sizeof(wl_all) / sizeof(wl_all[0]);

static struct {
	bool quick, json;
	double factors[16];
	size_t nfactors;
	uint64_t size;       /* --size, else 0 */
	uint64_t dev_mib;
	const char *link;
	enum wl_mode mode;
	int atomics;         /* enum uhmm_simdev_atomic_policy */
	const char *only;
	uint64_t seed;
} cfg = { .mode = WL_TOUCH, .seed = 1 };

uint64_t wl_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void wl_fail(struct wl_out *o, const char *what, int err)
{
	if (err >= 0 || o->err)
		return;
	o->err = err;
	snprintf(o->note, sizeof(o->note), "%s: %s", what, uhmm_strerror(err));
}

void *wl_arena(struct wl *w, struct wl_out *o, size_t bytes)
{
	bytes = (bytes + 63) & ~(size_t)63;
	if (bytes > w->arena_len - w->arena_used) {
		wl_fail(o, "arena", -ENOMEM);
		return NULL;
	}
	void *p = w->arena + w->arena_used;
	w->arena_used += bytes;
	return p;
}

size_t wl_arena_left(const struct wl *w)
{
	return w->arena_len - w->arena_used;
}

int wl_register_span(struct wl *w, struct wl_out *o, uintptr_t lo, uintptr_t hi)
{
	lo &= ~(uintptr_t)(WL_PAGE - 1);
	hi = (hi + WL_PAGE - 1) & ~(uintptr_t)(WL_PAGE - 1);
	int e = uhmm_register(w->ctx, (void *)lo, hi - lo);
	if (e < 0) {
		wl_fail(o, "uhmm_register", e);
		return e;
	}
	w->reg = (void *)lo;
	w->reg_len = hi - lo;
	return 0;
}

static void advise_remote(struct wl *w, void *p, size_t len)
{
	if (!p || !len)
		return;
	len = (len + WL_PAGE - 1) & ~(size_t)(WL_PAGE - 1);
	(void)uhmm_simdev_advise(w->dev, p, len, UHMM_SIMDEV_MAP_REMOTE);
}

static void advise_atomics(struct wl *w, void *p, size_t len)
{
	if (!p || !len || !cfg.atomics)
		return;
	len = (len + WL_PAGE - 1) & ~(size_t)(WL_PAGE - 1);
	(void)uhmm_simdev_advise_atomics(w->dev, p, len,
					 (enum uhmm_simdev_atomic_policy)cfg.atomics);
}

void wl_phase_begin(struct wl *w)
{
	if (w->mode == WL_REMOTE) {
		advise_remote(w, w->arena, w->arena_used);
		advise_remote(w, w->reg, w->reg_len);
	}
	advise_atomics(w, w->arena, w->arena_used);
	advise_atomics(w, w->reg, w->reg_len);
	uhmm_stats_get(w->ctx, &w->s0);
	uhmm_simdev_stats(w->dev, &w->d0);
	uhmm_simdev_meminfo(w->dev, &w->m0);
	w->t0 = wl_now_ns();
	if (w->mode == WL_PREFETCH) {
		/* What fits in half the device, from the start of the inputs:
		 * the rest migrates on touch. */
		size_t half = (size_t)(w->dev_bytes / 2);
		size_t n = w->arena_used < half ? w->arena_used : half;
		n = (n + WL_PAGE - 1) & ~(size_t)(WL_PAGE - 1);
		if (n)
			(void)uhmm_migrate(w->ctx, w->arena, n, w->dev, 0);
		size_t r = w->reg_len < half - n ? w->reg_len : half - n;
		if (r)
			(void)uhmm_migrate(w->ctx, w->reg, r, w->dev, 0);
	}
}

void wl_phase_end(struct wl *w, struct wl_out *o)
{
	struct uhmm_stats s1;
	struct uhmm_simdev_stats d1;
	struct uhmm_simdev_meminfo m1;
	o->dev_ns = wl_now_ns() - w->t0;
	uhmm_stats_get(w->ctx, &s1);
	uhmm_simdev_stats(w->dev, &d1);
	uhmm_simdev_meminfo(w->dev, &m1);
	o->dev_faults = d1.faults - w->d0.faults;
	o->fault_batches = d1.fault_batches - w->d0.fault_batches;
	o->dev_migrations = d1.migrations - w->d0.migrations;
	o->remote_maps = d1.remote_maps - w->d0.remote_maps;
	o->exclusive = d1.exclusive_pages - w->d0.exclusive_pages;
	o->to_dev_pages = s1.migrated_to_device_pages - w->s0.migrated_to_device_pages;
	o->to_sys_pages = s1.migrated_to_system_pages - w->s0.migrated_to_system_pages;
	o->to_dev_bytes = s1.migrated_to_device_bytes - w->s0.migrated_to_device_bytes;
	o->to_sys_bytes = s1.migrated_to_system_bytes - w->s0.migrated_to_system_bytes;
	o->evicted_pages = s1.evicted_pages - w->s0.evicted_pages;
	o->cpu_faults = s1.cpu_faults - w->s0.cpu_faults;
	o->link_model_ns = m1.link_model_ns - w->m0.link_model_ns;
}

int wl_launch(struct wl *w, struct wl_out *o, uhmm_simdev_kernel fn, uint64_t grid,
	      void *arg)
{
	int e = uhmm_simdev_launch(w->dev, fn, grid, arg);
	if (e < 0)
		wl_fail(o, "uhmm_simdev_launch", e);
	return e;
}

/* ---- options -------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uhmm-workloads [options]\n"
		"  --quick              small device (16 MiB) and sizes: the CI run\n"
		"  --oversub F[,F...]   footprint as multiples of device memory\n"
		"                       (default 0.5,1,2)\n"
		"  --size BYTES         footprint in bytes (K, M, G suffixes)\n"
		"  --dev-mib N          device memory, MiB, multiple of 2 (default 64;\n"
		"                       16 with --quick)\n"
		"  --link PRESET        transfer model preset (uhmm_simdev_link_name:\n"
		"                       pcie3, pcie4, pcie5, nvlink, c2c, off)\n"
		"  --mode MODE          touch (migrate on touch, default), remote (map\n"
		"                       system pages remotely), prefetch (migrate the\n"
		"                       inputs first, then on touch)\n"
		"  --atomics POLICY     device atomics on system pages: auto (default),\n"
		"                       exclusive, migrate (uhmm_simdev_advise_atomics)\n"
		"  --only LIST          workloads or groups, comma-separated\n"
		"  --seed N             input seed (default 1)\n"
		"  --json               JSON on stdout\n"
		"  --list               list the workloads and presets\n");
}

static bool parse_bytes(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v <= 0)
		return false;
	switch (*end) {
	case 'k': case 'K': v *= 1024; end++; break;
	case 'm': case 'M': v *= 1024 * 1024; end++; break;
	case 'g': case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
	default: break;
	}
	if (*end || v > 1e15)
		return false;
	*out = (uint64_t)v;
	return true;
}

static bool parse_factors(const char *s)
{
	char *dup = strdup(s), *save = NULL;
	cfg.nfactors = 0;
	for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *end;
		double f = strtod(t, &end);
		if (*end || !(f > 0) || f > 64 || cfg.nfactors == 16) {
			free(dup);
			return false;
		}
		cfg.factors[cfg.nfactors++] = f;
	}
	free(dup);
	return cfg.nfactors > 0;
}

static bool selected(const struct workload *wk)
{
	if (!cfg.only)
		return true;
	size_t n = strlen(wk->name), g = strlen(wk->group);
	for (const char *p = cfg.only; *p;) {
		size_t k = strcspn(p, ",");
		if ((k == n && !strncmp(p, wk->name, n)) || (k == g && !strncmp(p, wk->group, g)))
			return true;
		p += k + (p[k] == ',');
	}
	return false;
}

static bool only_valid(void)
{
	for (const char *p = cfg.only; *p;) {
		size_t k = strcspn(p, ","), i;
		for (i = 0; i < wl_count; i++)
			if ((strlen(wl_all[i].name) == k && !strncmp(p, wl_all[i].name, k)) ||
			    (strlen(wl_all[i].group) == k && !strncmp(p, wl_all[i].group, k)))
				break;
		if (i == wl_count) {
			fprintf(stderr, "uhmm-workloads: no workload or group '%.*s'\n", (int)k, p);
			return false;
		}
		p += k + (p[k] == ',');
	}
	return true;
}

/* ---- one run -------------------------------------------------------------- */

static void run_one(const struct workload *wk, size_t bytes, struct wl_out *o)
{
	struct wl w = { .bytes = bytes, .seed = cfg.seed, .quick = cfg.quick,
			.mode = cfg.mode, .dev_bytes = cfg.dev_mib << 20 };
	memset(o, 0, sizeof(*o));
	int e = uhmm_ctx_create(NULL, &w.ctx);
	if (e < 0) {
		wl_fail(o, "uhmm_ctx_create", e);
		return;
	}
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = w.dev_bytes;
	so.link = cfg.link;
	e = uhmm_simdev_create(w.ctx, &so, &w.dev);
	if (e < 0) {
		wl_fail(o, "uhmm_simdev_create", e);
		goto out;
	}
	/* The arena: the footprint and some room for small arrays. */
	w.arena_len = (bytes + (1u << 20) + WL_HUGE - 1) & ~(size_t)(WL_HUGE - 1);
	e = uhmm_alloc(w.ctx, w.arena_len, (void **)&w.arena);
	if (e < 0) {
		w.arena = NULL;
		wl_fail(o, "uhmm_alloc", e);
		goto out;
	}
	wk->run(&w, o);
	o->footprint = w.arena_used + w.reg_len;
out:
	if (w.reg) {
		e = uhmm_unregister(w.ctx, w.reg, w.reg_len);
		wl_fail(o, "uhmm_unregister", e);
	}
	/* The workload frees its heap nodes after this (w.reg is gone). */
	if (w.arena)
		(void)uhmm_free(w.ctx, w.arena);
	if (w.ctx)
		(void)uhmm_ctx_destroy(w.ctx);
	wl_chase_cleanup();
}

/* ---- output --------------------------------------------------------------- */

static double mib(uint64_t b)
{
	return (double)b / (1 << 20);
}

static void print_head(void)
{
	printf("%-10s %5s %8s %9s %9s %7s %8s %7s %9s %9s %8s %s\n", "workload", "x",
	       "MiB", "dev ms", "cpu ms", "dev/cpu", "faults", "batches", "->dev MiB",
	       "->sys MiB", "evicted", "verify");
}

static void print_row(const struct workload *wk, double x, const struct wl_out *o)
{
	printf("%-10s %5.2g %8.1f %9.2f %9.2f %7.1f %8llu %7llu %9.1f %9.1f %8llu %s%s%s\n",
	       wk->name, x, mib(o->footprint), o->dev_ns / 1e6, o->cpu_ns / 1e6,
	       o->cpu_ns ? (double)o->dev_ns / (double)o->cpu_ns : 0.0,
	       (unsigned long long)o->dev_faults, (unsigned long long)o->fault_batches,
	       mib(o->to_dev_bytes), mib(o->to_sys_bytes),
	       (unsigned long long)o->evicted_pages,
	       o->err ? "ERROR" : o->bad ? "FAIL" : "ok", o->note[0] ? "  " : "", o->note);
	fflush(stdout);
}

static void json_row(const struct workload *wk, double x, const struct wl_out *o,
		     bool first)
{
	printf("%s\n    {\"workload\": \"%s\", \"group\": \"%s\", \"oversub\": %.4g, "
	       "\"footprint_bytes\": %llu, \"dev_ns\": %llu, \"cpu_ns\": %llu, "
	       "\"dev_vs_cpu_ratio\": %.4g, \"device_faults\": %llu, \"fault_batches\": %llu, "
	       "\"fault_migrations\": %llu, \"remote_maps\": %llu, \"exclusive_pages\": %llu, "
	       "\"to_device_pages\": %llu, \"to_system_pages\": %llu, "
	       "\"to_device_bytes\": %llu, \"to_system_bytes\": %llu, \"evicted_pages\": %llu, "
	       "\"cpu_faults\": %llu, \"link_model_ns\": %llu, \"mismatches\": %llu, "
	       "\"error\": %d, \"verified\": %s, \"note\": \"%s\"}",
	       first ? "" : ",", wk->name, wk->group, x, (unsigned long long)o->footprint,
	       (unsigned long long)o->dev_ns, (unsigned long long)o->cpu_ns,
	       o->cpu_ns ? (double)o->dev_ns / (double)o->cpu_ns : 0.0,
	       (unsigned long long)o->dev_faults, (unsigned long long)o->fault_batches,
	       (unsigned long long)o->dev_migrations, (unsigned long long)o->remote_maps,
	       (unsigned long long)o->exclusive, (unsigned long long)o->to_dev_pages,
	       (unsigned long long)o->to_sys_pages, (unsigned long long)o->to_dev_bytes,
	       (unsigned long long)o->to_sys_bytes, (unsigned long long)o->evicted_pages,
	       (unsigned long long)o->cpu_faults, (unsigned long long)o->link_model_ns,
	       (unsigned long long)o->bad, o->err, !o->err && !o->bad ? "true" : "false",
	       o->note);
	fflush(stdout);
}

static const char *mode_name(enum wl_mode m)
{
	return m == WL_REMOTE ? "remote" : m == WL_PREFETCH ? "prefetch" : "touch";
}

static const char *atomics_name(void)
{
	return cfg.atomics == UHMM_SIMDEV_ATOMIC_EXCLUSIVE ? "exclusive"
	       : cfg.atomics == UHMM_SIMDEV_ATOMIC_MIGRATE ? "migrate"
							   : "auto";
}

int main(int argc, char **argv)
{
	bool list = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool ok = true;
		if (!strcmp(a, "--quick")) {
			cfg.quick = true;
		} else if (!strcmp(a, "--json")) {
			cfg.json = true;
		} else if (!strcmp(a, "--list")) {
			list = true;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!v) {
			ok = false;
		} else if (!strcmp(a, "--oversub")) {
			ok = parse_factors(v), i++;
		} else if (!strcmp(a, "--size")) {
			ok = parse_bytes(v, &cfg.size), i++;
		} else if (!strcmp(a, "--dev-mib")) {
			char *end;
			cfg.dev_mib = strtoull(v, &end, 0), i++;
			ok = !*end && cfg.dev_mib >= 2 && cfg.dev_mib % 2 == 0 &&
			     cfg.dev_mib <= 65536;
		} else if (!strcmp(a, "--link")) {
			struct uhmm_simdev_link l;
			cfg.link = v, i++;
			ok = uhmm_simdev_link_preset(v, &l) == 0;
			if (!ok)
				fprintf(stderr, "uhmm-workloads: no link preset '%s'\n", v);
		} else if (!strcmp(a, "--mode")) {
			i++;
			if (!strcmp(v, "touch"))
				cfg.mode = WL_TOUCH;
			else if (!strcmp(v, "remote"))
				cfg.mode = WL_REMOTE;
			else if (!strcmp(v, "prefetch"))
				cfg.mode = WL_PREFETCH;
			else
				ok = false;
		} else if (!strcmp(a, "--atomics")) {
			i++;
			if (!strcmp(v, "auto"))
				cfg.atomics = UHMM_SIMDEV_ATOMIC_AUTO;
			else if (!strcmp(v, "exclusive"))
				cfg.atomics = UHMM_SIMDEV_ATOMIC_EXCLUSIVE;
			else if (!strcmp(v, "migrate"))
				cfg.atomics = UHMM_SIMDEV_ATOMIC_MIGRATE;
			else
				ok = false;
		} else if (!strcmp(a, "--only")) {
			cfg.only = v, i++;
			ok = only_valid();
		} else if (!strcmp(a, "--seed")) {
			char *end;
			cfg.seed = strtoull(v, &end, 0), i++;
			ok = !*end;
		} else {
			ok = false;
		}
		if (!ok) {
			fprintf(stderr, "uhmm-workloads: bad option or value: %s%s%s\n", a,
				v ? " " : "", v ? v : "");
			usage(stderr);
			return 2;
		}
	}
	if (list) {
		for (size_t i = 0; i < wl_count; i++)
			printf("%-10s %-9s %s\n", wl_all[i].name, wl_all[i].group, wl_all[i].what);
		printf("link presets:");
		for (unsigned i = 0; uhmm_simdev_link_name(i); i++)
			printf(" %s", uhmm_simdev_link_name(i));
		printf("\n");
		return 0;
	}
	if (!cfg.dev_mib)
		cfg.dev_mib = cfg.quick ? 16 : 64;
	/* Large buffers (references, inputs) by mmap, always: glibc's
	 * threshold otherwise grows after a free and puts them in the brk
	 * heap among the chase workloads' nodes, whose registered span would
	 * then cover them too. */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	if (!cfg.nfactors && !cfg.size) {
		cfg.factors[0] = 0.5, cfg.factors[1] = 1, cfg.factors[2] = 2;
		cfg.nfactors = 3;
	}
	size_t nsizes = cfg.size ? 1 : cfg.nfactors;
	const char *link = cfg.link ? cfg.link : getenv("UHMM_SIMDEV_LINK");
	if (cfg.json)
		printf("{\"config\": {\"quick\": %s, \"dev_bytes\": %llu, \"link\": \"%s\", "
		       "\"mode\": \"%s\", \"atomics\": \"%s\", \"seed\": %llu},\n \"runs\": [",
		       cfg.quick ? "true" : "false", (unsigned long long)(cfg.dev_mib << 20),
		       link && *link ? link : "off", mode_name(cfg.mode), atomics_name(),
		       (unsigned long long)cfg.seed);
	else
		printf("uhmm-workloads: device %llu MiB, link %s, mode %s, atomics %s, seed %llu%s\n",
		       (unsigned long long)cfg.dev_mib, link && *link ? link : "off",
		       mode_name(cfg.mode), atomics_name(), (unsigned long long)cfg.seed,
		       cfg.quick ? ", quick" : "");
	bool first = true;
	int failed = 0, runs = 0;
	for (size_t s = 0; s < nsizes; s++) {
		double x = cfg.size ? (double)cfg.size / (double)(cfg.dev_mib << 20)
				    : cfg.factors[s];
		size_t bytes = cfg.size ? cfg.size : (size_t)(x * (double)(cfg.dev_mib << 20));
		if (!cfg.json && s == 0)
			print_head();
		for (size_t i = 0; i < wl_count; i++) {
			if (!selected(&wl_all[i]))
				continue;
			struct wl_out o;
			run_one(&wl_all[i], bytes, &o);
			runs++;
			failed += o.err || o.bad;
			if (cfg.json)
				json_row(&wl_all[i], x, &o, first);
			else
				print_row(&wl_all[i], x, &o);
			first = false;
		}
	}
	if (cfg.json)
		printf("\n ],\n \"runs_total\": %d, \"runs_failed\": %d}\n", runs, failed);
	else
		printf("%d runs, %d failed\n", runs, failed);
	return failed ? 1 : 0;
}
