/* SPDX-License-Identifier: MIT */
/*
 * Scenario 9: simdev's accessors (issue 16, "accessors at the speed of a
 * cache hit").  All data is device-resident (uhmm_migrate to the simdev
 * before the timed launches), so what is measured is the accessors and
 * their TLBs, not migrations.  The CPU baselines run over plain anonymous
 * memory holding the same values, in the same run.
 *
 *   load hit    one work item (a grid of one runs in the caller's thread)
 *               loads LOADS 4-byte words of one device page with
 *               uhmm_simdev_ld32: every load but the first hits the lane's
 *               TLB.  simdev_load_hit_ns = the thread's CPU time for the
 *               launch / LOADS (loop and add included; the launch of one
 *               item runs in the caller's thread, so its CPU time is the
 *               kernel's, unaffected by other jobs on a shared VM; the
 *               wall-clock figure is reported beside it).  Target <= 3 ns.
 *   SAXPY       y = a * x + y over N floats, x and y 2 MiB-aligned (as
 *               uhmm_alloc returns them):
 *                 blocks  uhmm_simdev_launch_blocks, BLOCK floats a block,
 *                         moved with the vector helpers (ldf32v/stf32v:
 *                         one translation per page), the idiom simdev.h
 *                         recommends;
 *                 items   uhmm_simdev_launch, one work item per element,
 *                         scalar ldf32 / stf32 (3 accessors an item).
 *               CPU: the plain loop over the same number of floats.
 *               saxpy_vs_cpu_loop_ratio = CPU loop time / blocks time
 *               (throughput ratio).  Target >= 0.2.
 *   stencil     one Jacobi sweep of a W x W float grid (5-point, one row a
 *               page), a work item per interior point, scalar ldf32 for
 *               each neighbour: the reuse pattern of issue 16's 12-17 s
 *               sweep.  CPU: the same sweep.
 *   random      RAND_LOADS uhmm_simdev_ld32 per work item at random
 *               indices of an array of RAND_BYTES (far more pages than a
 *               TLB holds: most accesses miss the lane TLB by design).
 *               CPU: the same loads.
 * For each device kernel: ns per element (or access), and the TLB hit
 * rates from uhmm_simdev_stats deltas: hits / (hits + misses), and the
 * share of accesses served by the lanes' TLBs (the inline path).
 * Every result is checked against the CPU's (SAXPY and stencil bit for
 * bit: same operations, same order per element).
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define LOADS (cfg.quick ? 1000000ull : 50000000ull)
#define BLOCK 1024u                                 /* floats: one page */
#define RAND_LOADS 16u

struct sx {
	const float *x;
	float *y;
	float a;
	/* stencil */
	const float *in;
	float *out;
	size_t w;
	/* random */
	const uint32_t *arr;
	uint64_t mask;  /* elements - 1 */
	uint64_t seed;
	uint64_t *sums; /* one per work item */
	/* load hit */
	const uint32_t *word;
	uint64_t loads, sum;
};

/* CPU time of the calling thread, in ns. */
static double thread_cpu_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void k_load_hit(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct sx *a = arg;
	uint64_t s = 0;
	(void)idx;
	for (uint64_t i = 0; i < a->loads; i++)
		s += uhmm_simdev_ld32(wi, &a->word[i & 1023]);
	a->sum = s;
}

static void k_saxpy_blocks(uhmm_simdev_item *wi, uint64_t first, uint64_t n, void *arg)
{
	const struct sx *a = arg;
	float xs[BLOCK], ys[BLOCK];
	uhmm_simdev_ldf32v(wi, xs, a->x + first, n);
	uhmm_simdev_ldf32v(wi, ys, a->y + first, n);
	for (uint64_t i = 0; i < n; i++)
		ys[i] = a->a * xs[i] + ys[i];
	uhmm_simdev_stf32v(wi, a->y + first, ys, n);
}

static void k_saxpy_items(uhmm_simdev_item *wi, uint64_t i, void *arg)
{
	const struct sx *a = arg;
	float x = uhmm_simdev_ldf32(wi, &a->x[i]);
	float y = uhmm_simdev_ldf32(wi, &a->y[i]);
	uhmm_simdev_stf32(wi, &a->y[i], a->a * x + y);
}

static void cpu_saxpy(float a, const float *x, float *y, size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] = a * x[i] + y[i];
}

static inline float jacobi(float c, float n, float s, float w, float e)
{
	return 0.2f * (c + n + s + w + e);
}

static void k_stencil(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct sx *a = arg;
	size_t w = a->w, r = 1 + idx / (w - 2), c = 1 + idx % (w - 2), i = r * w + c;
	float v = jacobi(uhmm_simdev_ldf32(wi, &a->in[i]), uhmm_simdev_ldf32(wi, &a->in[i - w]),
			 uhmm_simdev_ldf32(wi, &a->in[i + w]), uhmm_simdev_ldf32(wi, &a->in[i - 1]),
			 uhmm_simdev_ldf32(wi, &a->in[i + 1]));
	uhmm_simdev_stf32(wi, &a->out[i], v);
}

static void cpu_stencil(const float *in, float *out, size_t w)
{
	for (size_t r = 1; r < w - 1; r++)
		for (size_t c = 1; c < w - 1; c++) {
			size_t i = r * w + c;
			out[i] = jacobi(in[i], in[i - w], in[i + w], in[i - 1], in[i + 1]);
		}
}

static inline uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

static void k_random(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct sx *a = arg;
	uint64_t s = 0;
	for (unsigned j = 0; j < RAND_LOADS; j++)
		s += uhmm_simdev_ld32(wi, &a->arr[mix(a->seed + idx * RAND_LOADS + j) & a->mask]);
	a->sums[idx] = s;
}

static uint64_t cpu_random(const uint32_t *arr, uint64_t mask, uint64_t seed, uint64_t items)
{
	uint64_t t = 0;
	for (uint64_t idx = 0; idx < items; idx++)
		for (unsigned j = 0; j < RAND_LOADS; j++)
			t += arr[mix(seed + idx * RAND_LOADS + j) & mask];
	return t;
}

/* TLB figures of a kernel from two stats snapshots. */
static void tlb_report(struct bench_sc *sc, const char *name, const struct uhmm_simdev_stats *b,
		       const struct uhmm_simdev_stats *e)
{
	double hits = (double)(e->tlb_hits - b->tlb_hits);
	double miss = (double)(e->tlb_misses - b->tlb_misses);
	double lane = (double)(e->tlb_lane_hits - b->tlb_lane_hits);
	char key[64], w[128];
	snprintf(key, sizeof(key), "simdev_%s_tlb_hit_rate", name);
	snprintf(w, sizeof(w), "%s: TLB hits / accesses (lane + unit TLBs)", name);
	bench_fig(sc, key, hits + miss > 0 ? hits / (hits + miss) : 0, "", w);
	snprintf(key, sizeof(key), "simdev_%s_lane_hit_rate", name);
	snprintf(w, sizeof(w), "%s: accesses served by the inline path (lane TLB hits)", name);
	bench_fig(sc, key, hits + miss > 0 ? lane / (hits + miss) : 0, "", w);
}

static int dstats(struct bench_sc *sc, uhmm_device *dev, struct uhmm_simdev_stats *st)
{
	BCHECK(sc, uhmm_simdev_stats(dev, st));
	return 0;
}

/* Median of reps runs of a launch, in ns; *st0, *st1 bracket the first. */
#define TIMED(sc, reps, med, call, prep)                                       \
	do {                                                                   \
		double *v_ = calloc((size_t)(reps), sizeof(double));           \
		if (!v_)                                                       \
			return bench_fail((sc), "calloc", -ENOMEM);            \
		for (int r_ = 0; r_ < (reps); r_++) {                          \
			prep;                                                  \
			uint64_t t_ = now_ns();                                \
			int e_ = (call);                                       \
			v_[r_] = (double)(now_ns() - t_);                      \
			if (e_ < 0) {                                          \
				free(v_);                                      \
				return bench_fail((sc), #call, e_);            \
			}                                                      \
		}                                                              \
		(med) = dist_of(v_, (size_t)(reps)).median;                    \
		free(v_);                                                      \
	} while (0)

static int run(struct bench_sc *sc, uhmm_ctx *ctx, uhmm_device *dev)
{
	int reps = cfg.reps;
	size_t n = cfg.quick ? (size_t)1 << 20 : (size_t)64 << 20; /* floats */
	size_t w = cfg.quick ? 512 : 4096;                          /* stencil */
	size_t rbytes = cfg.quick ? (size_t)16 << 20 : (size_t)256 << 20;
	uint64_t ritems = cfg.quick ? 1u << 14 : 1u << 18;
	size_t nlen = n * sizeof(float), slen = w * w * sizeof(float);
	float *x, *y, *in, *out;
	uint32_t *arr;
	struct uhmm_simdev_stats s0, s1;
	double med;

	/* ---- load hit ---------------------------------------------------- */
	uint32_t *page;
	BCHECK(sc, uhmm_alloc(ctx, PAGE, (void **)&page));
	for (unsigned i = 0; i < 1024; i++)
		page[i] = i;
	BCHECK(sc, uhmm_migrate(ctx, page, PAGE, dev, 0));
	struct sx a = { .word = page, .loads = LOADS };
	BCHECK(sc, uhmm_simdev_launch(dev, k_load_hit, 1, &a)); /* warm */
	if (dstats(sc, dev, &s0))
		return -EIO;
	/* The launch of one item runs in this thread: its CPU time is the
	 * kernel's, whatever else the machine runs (wall time is reported
	 * too: on a loaded VM it includes the time we were not running). */
	double *cpu_v = calloc((size_t)reps, sizeof(double));
	double *wall_v = calloc((size_t)reps, sizeof(double));
	if (!cpu_v || !wall_v)
		return bench_fail(sc, "calloc", -ENOMEM);
	for (int r = 0; r < reps; r++) {
		double c0 = thread_cpu_ns();
		uint64_t t0 = now_ns();
		int e = uhmm_simdev_launch(dev, k_load_hit, 1, &a);
		wall_v[r] = (double)(now_ns() - t0);
		cpu_v[r] = thread_cpu_ns() - c0;
		if (e < 0)
			return bench_fail(sc, "load hit launch", e);
	}
	double cpu_med = dist_of(cpu_v, (size_t)reps).median;
	med = dist_of(wall_v, (size_t)reps).median;
	free(cpu_v);
	free(wall_v);
	if (dstats(sc, dev, &s1))
		return -EIO;
	if (a.sum != (a.loads / 1024) * (1023 * 1024 / 2) +
			     ((a.loads % 1024) * ((a.loads % 1024) - 1) / 2))
		return bench_fail(sc, "load hit: wrong sum", -EIO);
	bench_fig(sc, "simdev_load_hit_ns", cpu_med / (double)a.loads, "ns",
		  "a 4-byte load hitting the lane TLB (uhmm_simdev_ld32, loop included; CPU time)");
	bench_goal(sc, '<', 3.0);
	bench_fig(sc, "simdev_load_hit_wall_ns", med / (double)a.loads, "ns",
		  "the same, wall-clock time");
	tlb_report(sc, "load_hit", &s0, &s1);
	uhmm_free(ctx, page);

	/* ---- SAXPY --------------------------------------------------------- */
	BCHECK(sc, uhmm_alloc(ctx, nlen, (void **)&x));
	BCHECK(sc, uhmm_alloc(ctx, nlen, (void **)&y));
	float *cx = map_anon(nlen), *cy = map_anon(nlen), *ry = map_anon(nlen);
	if (!cx || !cy || !ry)
		return bench_fail(sc, "mmap", -ENOMEM);
	for (size_t i = 0; i < n; i++) {
		cx[i] = x[i] = (float)(i % 1000) * 0.5f;
		cy[i] = y[i] = (float)(i % 777);
	}
	BCHECK(sc, uhmm_migrate(ctx, x, nlen, dev, 0));
	BCHECK(sc, uhmm_migrate(ctx, y, nlen, dev, 0));
	a = (struct sx){ .x = x, .y = y, .a = 1.0f };
	/* a = 1 on repeated runs keeps values exact: y grows by x per run. */
	bench_progress("  simdev: SAXPY over 2 x %zu MiB, %d runs", nlen >> 20, reps);
	double cpu_ns;
	TIMED(sc, reps, cpu_ns, (cpu_saxpy(1.0f, cx, cy, n), 0), (void)0);
	BCHECK(sc, uhmm_simdev_launch_blocks(dev, k_saxpy_blocks, n, BLOCK, &a)); /* warm */
	if (dstats(sc, dev, &s0))
		return -EIO;
	double blk_ns;
	TIMED(sc, reps, blk_ns, uhmm_simdev_launch_blocks(dev, k_saxpy_blocks, n, BLOCK, &a), (void)0);
	if (dstats(sc, dev, &s1))
		return -EIO;
	bench_fig(sc, "simdev_saxpy_blocks_ns_per_elem", blk_ns / (double)n, "ns",
		  "SAXPY, block launch + vector helpers: ns per element");
	tlb_report(sc, "saxpy_blocks", &s0, &s1);
	if (dstats(sc, dev, &s0))
		return -EIO;
	double item_ns;
	TIMED(sc, reps, item_ns, uhmm_simdev_launch(dev, k_saxpy_items, n, &a), (void)0);
	if (dstats(sc, dev, &s1))
		return -EIO;
	bench_fig(sc, "simdev_saxpy_items_ns_per_elem", item_ns / (double)n, "ns",
		  "SAXPY, a work item per element, scalar ldf32/stf32: ns per element");
	tlb_report(sc, "saxpy_items", &s0, &s1);
	bench_base(sc, "simdev_saxpy_cpu_ns_per_elem", cpu_ns / (double)n, "ns",
		   "SAXPY, plain CPU loop over the same number of floats (one thread)");
	bench_ratio(sc, "saxpy_vs_cpu_loop", cpu_ns / blk_ns,
		    "SAXPY device-resident (blocks + vectors) throughput / CPU loop throughput");
	bench_goal(sc, '>', 0.2);
	bench_ratio(sc, "saxpy_items_vs_cpu_loop", cpu_ns / item_ns,
		    "SAXPY device-resident (an item per element) throughput / CPU loop throughput");
	/* Check: the device ran the kernel 1 + 2 * reps times, the CPU reps. */
	BCHECK(sc, uhmm_migrate(ctx, y, nlen, NULL, 0));
	for (size_t i = 0; i < n; i++) {
		float want = cy[i] + (float)(1 + reps) * cx[i];
		if (y[i] != want) {
			bench_progress("  simdev: y[%zu] = %g, expected %g", i, (double)y[i], (double)want);
			return bench_fail(sc, "SAXPY: wrong result", -EIO);
		}
	}
	(void)ry;
	munmap(cx, nlen);
	munmap(cy, nlen);
	munmap(ry, nlen);
	uhmm_free(ctx, x);
	uhmm_free(ctx, y);

	/* ---- stencil ------------------------------------------------------- */
	BCHECK(sc, uhmm_alloc(ctx, slen, (void **)&in));
	BCHECK(sc, uhmm_alloc(ctx, slen, (void **)&out));
	float *cin = map_anon(slen), *cout = map_anon(slen);
	if (!cin || !cout)
		return bench_fail(sc, "mmap", -ENOMEM);
	for (size_t i = 0; i < w * w; i++) {
		cin[i] = in[i] = (float)((i * 2654435761u) % 1024);
		cout[i] = out[i] = 0;
	}
	BCHECK(sc, uhmm_migrate(ctx, in, slen, dev, 0));
	BCHECK(sc, uhmm_migrate(ctx, out, slen, dev, 0));
	a = (struct sx){ .in = in, .out = out, .w = w };
	uint64_t pts = (uint64_t)(w - 2) * (w - 2);
	bench_progress("  simdev: Jacobi sweep over %zu x %zu floats, %d runs", w, w, reps);
	TIMED(sc, reps, cpu_ns, (cpu_stencil(cin, cout, w), 0), (void)0);
	if (dstats(sc, dev, &s0))
		return -EIO;
	double st_ns;
	TIMED(sc, reps, st_ns, uhmm_simdev_launch(dev, k_stencil, pts, &a), (void)0);
	if (dstats(sc, dev, &s1))
		return -EIO;
	bench_fig(sc, "simdev_stencil_ns_per_point", st_ns / (double)pts, "ns",
		  "Jacobi 5-point sweep, an item per point, 6 scalar accessors: ns per point");
	tlb_report(sc, "stencil", &s0, &s1);
	bench_base(sc, "simdev_stencil_cpu_ns_per_point", cpu_ns / (double)pts, "ns",
		   "the same sweep, plain CPU loop");
	bench_ratio(sc, "stencil_vs_cpu_loop", cpu_ns / st_ns, "stencil device / CPU loop throughput");
	BCHECK(sc, uhmm_migrate(ctx, out, slen, NULL, 0));
	if (memcmp(out, cout, slen))
		return bench_fail(sc, "stencil: result differs from the CPU's", -EIO);
	munmap(cin, slen);
	munmap(cout, slen);
	uhmm_free(ctx, in);
	uhmm_free(ctx, out);

	/* ---- random -------------------------------------------------------- */
	BCHECK(sc, uhmm_alloc(ctx, rbytes, (void **)&arr));
	uint32_t *carr = map_anon(rbytes);
	uint64_t *sums = calloc(ritems, sizeof(*sums));
	if (!carr || !sums)
		return bench_fail(sc, "mmap", -ENOMEM);
	for (size_t i = 0; i < rbytes / 4; i++)
		carr[i] = arr[i] = (uint32_t)mix(i);
	BCHECK(sc, uhmm_migrate(ctx, arr, rbytes, dev, 0));
	a = (struct sx){ .arr = arr, .mask = rbytes / 4 - 1, .seed = 12345, .sums = sums };
	bench_progress("  simdev: %llu random loads over %zu MiB, %d runs",
		       (unsigned long long)ritems * RAND_LOADS, rbytes >> 20, reps);
	uint64_t want = 0;
	TIMED(sc, reps, cpu_ns, (want = cpu_random(carr, a.mask, a.seed, ritems), 0), (void)0);
	if (dstats(sc, dev, &s0))
		return -EIO;
	double rn_ns;
	TIMED(sc, reps, rn_ns, uhmm_simdev_launch(dev, k_random, ritems, &a), (void)0);
	if (dstats(sc, dev, &s1))
		return -EIO;
	uint64_t got = 0;
	for (uint64_t i = 0; i < ritems; i++)
		got += sums[i];
	free(sums);
	munmap(carr, rbytes);
	uhmm_free(ctx, arr);
	if (got != want)
		return bench_fail(sc, "random: wrong sum", -EIO);
	double nacc = (double)ritems * RAND_LOADS;
	bench_fig(sc, "simdev_random_ns_per_load", rn_ns / nacc, "ns",
		  "random 4-byte loads over device memory (mostly TLB misses): ns per load");
	tlb_report(sc, "random", &s0, &s1);
	bench_base(sc, "simdev_random_cpu_ns_per_load", cpu_ns / nacc, "ns",
		   "the same loads, plain CPU loop");
	bench_ratio(sc, "random_vs_cpu_loop", cpu_ns / rn_ns, "random device / CPU loop throughput");

	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	bench_note(sc, "device-resident data (migrated before timing); %u compute units x %u lanes,"
		   " TLBs of %u entries (4-way, hashed sets) per unit and per lane; median of %d runs;"
		   " CPU loops single-threaded over plain memory", so.compute_units, so.lanes_per_cu,
		   so.tlb_entries, reps);
	bench_note(sc, "sizes: SAXPY 2 x %zu MiB (blocks of %u floats), stencil %zu x %zu floats,"
		   " random %llu items x %u loads over %zu MiB", nlen >> 20, BLOCK, w, w,
		   (unsigned long long)ritems, RAND_LOADS, rbytes >> 20);
	return 0;
}

int sc_simdev(struct bench_sc *sc)
{
	uhmm_ctx *ctx = NULL;
	uhmm_device *dev = NULL;
	/* Room for the largest phase (SAXPY: 2 arrays) with margin. */
	uint64_t dev_bytes = cfg.quick ? (uint64_t)64 << 20 : (uint64_t)1 << 30;
	int e = make_ctx(sc, 0, 0, dev_bytes, &ctx, &dev);
	if (e < 0)
		return e;
	e = run(sc, ctx, dev);
	uhmm_ctx_destroy(ctx);
	return e < 0 ? e : 0;
}
