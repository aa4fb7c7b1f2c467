/* SPDX-License-Identifier: MIT */
/*
 * Scenario 8: oversubscription (device memory as a cache).
 *
 * A simdev with the transfer model on (16 GB/s link, 2 us per transfer)
 * and DEV bytes of memory runs two migrate-on-touch kernels over working
 * sets of 0.5x, 1x, 1.5x, 2x and 4x its memory, so that past 1x every
 * migration toward the device evicts least recently used 2 MiB blocks.
 *
 *   stream  work item i handles pages [i * CHUNK, (i + 1) * CHUNK) in
 *           order: for each page it reads one word and writes it back + 1.
 *           Every page of the range is touched once.
 *   random  work item i touches RAND_K pages picked by a pseudo-random
 *           permutation of the range (fixed seed), with the same read and
 *           write; 1 page in RAND_EVERY is touched, each at most once (a
 *           random walk over a range larger than the device thrashes: every
 *           miss moves a 2 MiB block each way, so the number of touches is
 *           kept low enough for the run to last seconds).
 *
 * Before each run the range is in system memory, written by the CPU (word
 * w of page p holds pattern(p, w)); after it the range is brought home
 * (untimed) and every word is checked: the touched word of a touched page
 * must be pattern + 1, every other word unchanged.  A wrong word fails the
 * scenario.  The words are then restored for the next run.
 *
 * For each run: throughput = bytes of the pages the kernel touched / kernel
 * time; pages evicted and bytes moved both ways (uhmm_stats deltas); the
 * ratio to the in-capacity (0.5x) run; and the link bound.
 *
 * The link bound.  A range of N bytes starting in system memory, on a
 * device of D bytes, all of it touched: every page has to cross the link
 * to the device once (N bytes), and, since at the end of the kernel at
 * most D bytes can be on the device, at least N - D bytes (written, so
 * they must be copied) have to come back by eviction during the kernel.
 * The bound counts both directions' bytes on one link (as the first runs'
 * single copy engine carried them; with OVERSUB_ENGINES engines the two
 * directions may overlap, so this is conservative), so the least link
 * time is
 *
 *     t_link = (N + max(0, N - D)) / bandwidth      (+ latency per transfer,
 *                                                   negligible for 2 MiB)
 *
 * e.g. 2x: 3D bytes.  The random kernel touches only some pages, but
 * migrate-on-touch moves whole blocks: its bound counts the distinct
 * 2 MiB blocks it touches (B bytes) as B + max(0, B - D).
 * oversub_stream_2x_vs_link_bound_ratio = t_link / measured kernel time
 * for the streaming kernel at 2x (1.0 = running at link speed).
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "util/dmacopy.h" /* the engines' own copy (simdev copy.c) */

#define LINK_GBPS 16.0
#define LINK_LAT_NS 2000u
/* Copy engines of the simdev (copy_threads): a real GPU has several, and
 * with more than one a 2 MiB transfer is split over them (simdev copy.c),
 * each part reserving its bytes on the link.  UHMM_BENCH_ENGINES=n
 * overrides (1 = the one engine of the first runs). */
#define OVERSUB_ENGINES 2u

static unsigned oversub_engines(void)
{
	const char *e = getenv("UHMM_BENCH_ENGINES");
	long n = e ? strtol(e, NULL, 10) : 0;
	return n >= 1 && n <= 8 ? (unsigned)n : OVERSUB_ENGINES;
}
#define CHUNK_PAGES 16u   /* stream: pages per work item (64 KiB) */
#define RAND_K 4u         /* random: pages per work item */
#define RAND_EVERY 256u    /* random: one page in this many is touched */
#define WORDS (PAGE / 8u)

/* The machine's copy ceiling: @n threads each copying its own buffer of
 * @bytes in 2 MiB chunks, at once (the copy engines are such threads, each
 * on its part of a transfer); aggregate GB/s, best of @reps, or NAN. */
struct par_copy {
	char *src, *dst;
	size_t bytes;
	pthread_barrier_t *go;
};

static void *par_copy_run(void *arg)
{
	struct par_copy *c = arg;
	pthread_barrier_wait(c->go);
	for (size_t o = 0; o < c->bytes; o += UHMM_HUGE_SIZE)
		uhmm__dma_copy(c->dst + o, c->src + o, UHMM_HUGE_SIZE);
	return NULL;
}

static double parallel_copy_gbps(unsigned n, size_t bytes, int reps)
{
	struct par_copy c[8];
	pthread_t tid[8];
	pthread_barrier_t go;
	double best = NAN;
	if (n > 8)
		n = 8;
	for (unsigned i = 0; i < n; i++) {
		c[i].src = mmap(NULL, 2 * bytes, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (c[i].src == MAP_FAILED) {
			while (i--)
				munmap(c[i].src, 2 * bytes);
			return NAN;
		}
		c[i].dst = c[i].src + bytes;
		c[i].bytes = bytes;
		c[i].go = &go;
		memset(c[i].src, 1, 2 * bytes); /* warm */
	}
	for (int r = 0; r < reps; r++) {
		pthread_barrier_init(&go, NULL, n + 1);
		unsigned made = 0;
		for (; made < n; made++)
			if (pthread_create(&tid[made], NULL, par_copy_run, &c[made]))
				break;
		if (made < n) {
			/* (The barrier would never open: copy on this thread
			 * in their place is not the same figure; give up.) */
			pthread_barrier_destroy(&go);
			for (unsigned i = 0; i < made; i++)
				pthread_cancel(tid[i]), pthread_join(tid[i], NULL);
			break;
		}
		uint64_t t0 = now_ns();
		pthread_barrier_wait(&go);
		for (unsigned i = 0; i < n; i++)
			pthread_join(tid[i], NULL);
		double g = (double)(n * bytes) / (double)(now_ns() - t0);
		pthread_barrier_destroy(&go);
		if (isnan(best) || g > best)
			best = g;
	}
	for (unsigned i = 0; i < n; i++)
		munmap(c[i].src, 2 * bytes);
	return best;
}

static const struct {
	double f;
	const char *key;
} sizes[] = { { 0.5, "0p5x" }, { 1, "1x" }, { 1.5, "1p5x" }, { 2, "2x" }, { 4, "4x" } };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static inline uint64_t pattern(size_t p, size_t w)
{
	return ((uint64_t)p << 20 | w) * 0x9e3779b97f4a7c15ull;
}

/* The word of page p that kernels read and write (a different cache line
 * from page to page). */
static inline size_t hot_word(size_t p)
{
	return (p * 8) % WORDS;
}

struct karg {
	char *buf;
	const uint32_t *perm; /* random: pages to touch, RAND_K per item */
};

static inline void bump(uhmm_simdev_item *wi, char *buf, size_t p)
{
	uint64_t *w = (uint64_t *)(buf + p * PAGE) + hot_word(p);
	uhmm_simdev_st64(wi, w, uhmm_simdev_ld64(wi, w) + 1);
}

static void k_stream(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct karg *a = arg;
	for (size_t p = idx * CHUNK_PAGES; p < (idx + 1) * CHUNK_PAGES; p++)
		bump(wi, a->buf, p);
}

static void k_random(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct karg *a = arg;
	for (size_t j = 0; j < RAND_K; j++)
		bump(wi, a->buf, a->perm[idx * RAND_K + j]);
}

static void fill(char *buf, size_t npages)
{
	for (size_t p = 0; p < npages; p++) {
		uint64_t *w = (uint64_t *)(buf + p * PAGE);
		for (size_t i = 0; i < WORDS; i++)
			w[i] = pattern(p, i);
	}
}

/* Check every word of [0, npages) (touched[p]: page p was bumped once),
 * and restore the bumped words.  Returns the number of wrong words. */
static size_t check_restore(char *buf, size_t npages, const uint8_t *touched)
{
	size_t bad = 0;
	for (size_t p = 0; p < npages; p++) {
		uint64_t *w = (uint64_t *)(buf + p * PAGE);
		size_t h = hot_word(p);
		for (size_t i = 0; i < WORDS; i++) {
			uint64_t want = pattern(p, i) + (i == h && (!touched || touched[p]));
			if (w[i] != want) {
				if (!bad)
					bench_progress("  oversub: page %zu word %zu: %#llx, expected %#llx", p, i,
						       (unsigned long long)w[i], (unsigned long long)want);
				bad++;
			}
		}
		w[h] = pattern(p, h);
	}
	return bad;
}

struct run {
	uint64_t ns;
	uint64_t evicted_pages, to_dev, to_sys, evict_ns, evict_busy, backoffs;
	uint64_t faults, batches, migrations, copy_ns, copies, copy_batches;
};

/* xorshift64*, fixed seed: the random kernel's order. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static int one_run(uhmm_ctx *ctx, uhmm_device *dev, char *buf, size_t npages, bool random,
		   const uint32_t *perm, uint64_t grid, const uint8_t *touched, struct run *out,
		   size_t *bad)
{
	struct karg a = { .buf = buf, .perm = perm };
	struct uhmm_stats s0, s1;
	struct uhmm_simdev_stats d0, d1;
	int e;
	struct uhmm_simdev_meminfo m0, m1;
	uhmm_stats_get(ctx, &s0);
	uhmm_simdev_stats(dev, &d0);
	uhmm_simdev_meminfo(dev, &m0);
	uint64_t t = now_ns();
	e = uhmm_simdev_launch(dev, random ? k_random : k_stream, grid, &a);
	t = now_ns() - t;
	if (e < 0)
		return e;
	uhmm_stats_get(ctx, &s1);
	uhmm_simdev_stats(dev, &d1);
	uhmm_simdev_meminfo(dev, &m1);
	*out = (struct run){
		.ns = t,
		.evicted_pages = s1.evicted_pages - s0.evicted_pages,
		.to_dev = s1.migrated_to_device_bytes - s0.migrated_to_device_bytes,
		.to_sys = s1.migrated_to_system_bytes - s0.migrated_to_system_bytes,
		.evict_ns = s1.evict_ns - s0.evict_ns,
		.evict_busy = s1.evict_busy - s0.evict_busy,
		.backoffs = s1.evict_backoffs - s0.evict_backoffs,
		.copy_ns = s1.copy_ns - s0.copy_ns,
		.faults = d1.faults - d0.faults,
		.batches = d1.fault_batches - d0.fault_batches,
		.migrations = d1.migrations - d0.migrations,
		.copies = m1.copies - m0.copies,
		.copy_batches = s1.copy_batches - s0.copy_batches,
	};
	/* Home (untimed), then every word checked and the bumps undone. */
	if ((e = uhmm_migrate(ctx, buf, npages * PAGE, NULL, 0)) < 0)
		return e;
	*bad = check_restore(buf, npages, touched);
	return 0;
}

static int cmp_run(const void *x, const void *y)
{
	const struct run *a = x, *b = y;
	return (a->ns > b->ns) - (a->ns < b->ns);
}

int sc_oversub(struct bench_sc *sc)
{
	const uint64_t dev_bytes = cfg.quick ? (uint64_t)16 << 20 : (uint64_t)64 << 20;
	const size_t max_len = (size_t)(dev_bytes * 4);
	const size_t max_pages = max_len / PAGE;
	int reps = cfg.reps, e;
	uhmm_ctx *ctx = NULL;
	uhmm_device *dev = NULL;
	char *buf = NULL;
	uint32_t *perm = NULL;
	uint8_t *touched = NULL;
	struct run *runs = calloc((size_t)reps, sizeof(*runs));

	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.spin_us = cfg.spin_us;
	if ((e = uhmm_ctx_create(&o, &ctx)) < 0) {
		ctx = NULL;
		bench_fail(sc, "uhmm_ctx_create", e);
		goto out;
	}
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = dev_bytes;
	so.bandwidth_gbps = LINK_GBPS;
	so.latency_ns = LINK_LAT_NS;
	so.copy_threads = oversub_engines();
	if ((e = uhmm_simdev_create(ctx, &so, &dev)) < 0) {
		bench_fail(sc, "uhmm_simdev_create", e);
		goto out;
	}
	perm = malloc(max_pages * sizeof(*perm));
	touched = malloc(max_pages);
	if (!runs || !perm || !touched) {
		e = bench_fail(sc, "malloc", -ENOMEM);
		goto out;
	}
	if ((e = uhmm_alloc(ctx, max_len, (void **)&buf)) < 0) {
		buf = NULL;
		bench_fail(sc, "uhmm_alloc", e);
		goto out;
	}
	fill(buf, max_pages);

	/* Warm-up (untimed): device memory is process memory, and the
	 * reserve grows on demand; one streaming run over 2x touches both. */
	{
		struct run w;
		size_t bad = 0;
		size_t np = (size_t)(2 * dev_bytes) / PAGE;
		bench_progress("  oversub: warm-up, stream over %zu MiB", np * PAGE >> 20);
		if ((e = one_run(ctx, dev, buf, np, false, NULL, np / CHUNK_PAGES, NULL, &w, &bad)) < 0) {
			bench_fail(sc, "warm-up launch", e);
			goto out;
		}
		if (bad) {
			e = bench_fail(sc, "warm-up: wrong data after the kernel", -EIO);
			goto out;
		}
	}

	/* The copy engine is a CPU thread: its memcpy is the link's real
	 * ceiling when the machine copies slower than the model's 16 GB/s
	 * (the model only sleeps out what is left of a transfer's time). */
	double memcpy_2m = memcpy_gbps((size_t)dev_bytes, UHMM_HUGE_SIZE, reps);
	double engine_gbps = memcpy_2m < LINK_GBPS ? memcpy_2m : LINK_GBPS;
	bench_base(sc, "oversub_memcpy_2m_gbps", memcpy_2m, "GB/s",
		   "memcpy, 2 MiB chunks, warm buffers (the copy engine's own speed)");
	/* The most any implementation could reach against the link bound on
	 * this machine: every byte that must move is copied by a CPU, at best
	 * by all the engines at once and nothing else running (the kernel's
	 * own work not counted). */
	double par_gbps = parallel_copy_gbps(oversub_engines(), (size_t)dev_bytes / 2, reps);
	bench_base(sc, "oversub_parallel_copy_gbps", par_gbps, "GB/s",
		   "as many threads as copy engines copying at once the engines' way (non-temporal stores), 2 MiB chunks (aggregate)");
	bench_fig(sc, "oversub_link_bound_ceiling", isnan(par_gbps) ? NAN : fmin(1.0, par_gbps / LINK_GBPS),
		  "", "the best vs_link_bound ratio this machine allows: parallel copy / 16 GB/s");

	double incap_gbps[2] = { NAN, NAN };
	for (int k = 0; k < 2; k++) {
		bool random = k == 1;
		const char *kn = random ? "random" : "stream";
		for (size_t s = 0; s < NSIZES; s++) {
			size_t len = (size_t)(sizes[s].f * (double)dev_bytes);
			size_t npages = len / PAGE;
			uint64_t grid, touched_pages;
			uint64_t blocks_bytes; /* what migrate-on-touch must bring */
			if (random) {
				/* A permutation (fixed seed), its head used. */
				uint64_t seed = 0x5eed0000u + s;
				for (size_t i = 0; i < npages; i++)
					perm[i] = (uint32_t)i;
				for (size_t i = npages - 1; i > 0; i--) {
					size_t j = (size_t)(rnd(&seed) % (i + 1));
					uint32_t t = perm[i];
					perm[i] = perm[j];
					perm[j] = t;
				}
				touched_pages = npages / RAND_EVERY;
				grid = touched_pages / RAND_K;
				touched_pages = grid * RAND_K;
				memset(touched, 0, npages);
				size_t nblk = 0;
				uint8_t *blk = calloc(len / UHMM_HUGE_SIZE + 1, 1);
				if (!blk) {
					e = bench_fail(sc, "malloc", -ENOMEM);
					goto out;
				}
				for (size_t i = 0; i < touched_pages; i++) {
					touched[perm[i]] = 1;
					size_t b = (size_t)perm[i] * PAGE / UHMM_HUGE_SIZE;
					nblk += !blk[b];
					blk[b] = 1;
				}
				free(blk);
				blocks_bytes = (uint64_t)nblk * UHMM_HUGE_SIZE;
			} else {
				grid = npages / CHUNK_PAGES;
				touched_pages = grid * CHUNK_PAGES;
				blocks_bytes = (uint64_t)touched_pages * PAGE;
			}
			uint64_t must = blocks_bytes + (blocks_bytes > dev_bytes ? blocks_bytes - dev_bytes : 0);
			double link_ns = (double)must / LINK_GBPS;
			bench_progress("  oversub: %s over %zu MiB (%.1fx of %llu MiB), %d runs", kn, len >> 20,
				       sizes[s].f, (unsigned long long)(dev_bytes >> 20), reps);
			for (int r = 0; r < reps; r++) {
				size_t bad = 0;
				if ((e = one_run(ctx, dev, buf, npages, random, perm, grid,
						 random ? touched : NULL, &runs[r], &bad)) < 0) {
					bench_fail(sc, random ? "random kernel" : "streaming kernel", e);
					goto out;
				}
				if (bad) {
					char w[96];
					snprintf(w, sizeof(w), "%s %s: %zu wrong words after the kernel", kn,
						 sizes[s].key, bad);
					e = bench_fail(sc, w, -EIO);
					goto out;
				}
			}
			qsort(runs, (size_t)reps, sizeof(*runs), cmp_run);
			const struct run *m = &runs[reps / 2]; /* median by time */
			double gb = gbps((size_t)touched_pages * PAGE, m->ns);
			double link_gb = gbps((size_t)touched_pages * PAGE, (uint64_t)link_ns);
			char key[64], w[112];
			snprintf(key, sizeof(key), "oversub_%s_%s_gbps", kn, sizes[s].key);
			snprintf(w, sizeof(w), "%s %.1fx: GB/s of pages touched (median of %d)", kn, sizes[s].f, reps);
			bench_fig(sc, key, gb, "GB/s", w);
			snprintf(key, sizeof(key), "oversub_%s_%s_evicted_pages", kn, sizes[s].key);
			snprintf(w, sizeof(w), "%s %.1fx: pages evicted", kn, sizes[s].f);
			bench_fig(sc, key, (double)m->evicted_pages, "", w);
			snprintf(key, sizeof(key), "oversub_%s_%s_moved_mib", kn, sizes[s].key);
			snprintf(w, sizeof(w), "%s %.1fx: MiB moved, to device + to system (bound %.0f)", kn,
				 sizes[s].f, (double)must / (1 << 20));
			bench_fig(sc, key, (double)(m->to_dev + m->to_sys) / (1 << 20), "MiB", w);
			snprintf(key, sizeof(key), "oversub_%s_%s_link_bound_gbps", kn, sizes[s].key);
			snprintf(w, sizeof(w), "%s %.1fx: link bound (%.0f MiB at %.0f GB/s)", kn, sizes[s].f,
				 (double)must / (1 << 20), LINK_GBPS);
			bench_base(sc, key, link_gb, "GB/s", w);
			snprintf(key, sizeof(key), "oversub_%s_%s_vs_link_bound", kn, sizes[s].key);
			snprintf(w, sizeof(w), "%s %.1fx: link-bound time / kernel time", kn, sizes[s].f);
			bench_ratio(sc, key, link_ns / (double)m->ns, w);
			if (!random && sizes[s].f == 2)
				bench_goal(sc, '>', 0.8);
			if (!random && sizes[s].f == 2) {
				/* Where the time went (see docs/PERFORMANCE.md, "oversub"). */
				bench_ratio(sc, "oversub_stream_2x_vs_engine_bound",
					    (double)must / engine_gbps / (double)m->ns,
					    "stream 2.0x: (bytes to move / min(link, memcpy)) / kernel time");
				bench_fig(sc, "oversub_stream_2x_copy_share", (double)m->copy_ns / (double)m->ns, "",
					  "stream 2.0x: copy-engine time (submit to completion) / kernel time");
				bench_fig(sc, "oversub_stream_2x_evict_share", (double)m->evict_ns / (double)m->ns, "",
					  "stream 2.0x: eviction time / kernel time");
				bench_fig(sc, "oversub_stream_2x_copy_gbps",
					  gbps((size_t)(m->to_dev + m->to_sys), m->copy_ns), "GB/s",
					  "stream 2.0x: bytes moved / copy-engine time");
			}
			if (s == 0) {
				incap_gbps[k] = gb;
			} else {
				snprintf(key, sizeof(key), "oversub_%s_%s_vs_incap", kn, sizes[s].key);
				snprintf(w, sizeof(w), "%s %.1fx: throughput / in-capacity (0.5x) throughput", kn,
					 sizes[s].f);
				bench_ratio(sc, key, gb / incap_gbps[k], w);
			}
			bench_progress("  oversub: %s %s: %.3f ms (link %.3f ms), %llu faults in %llu passes,"
				       " %llu block migrations, %llu evicted, evict %.3f ms, copy %.3f ms"
				       " (%llu copies, %llu batches), busy %llu, backoffs %llu",
				       kn, sizes[s].key, (double)m->ns / 1e6, link_ns / 1e6,
				       (unsigned long long)m->faults, (unsigned long long)m->batches,
				       (unsigned long long)m->migrations, (unsigned long long)m->evicted_pages,
				       (double)m->evict_ns / 1e6, (double)m->copy_ns / 1e6,
				       (unsigned long long)m->copies, (unsigned long long)m->copy_batches,
				       (unsigned long long)m->evict_busy, (unsigned long long)m->backoffs);
		}
	}
	bench_note(sc, "simdev %llu MiB, transfer model %.0f GB/s + %u ns per transfer, %u copy engine(s);"
		   " migrate on touch (2 MiB blocks); each run starts with the range in system memory",
		   (unsigned long long)(dev_bytes >> 20), LINK_GBPS, LINK_LAT_NS, oversub_engines());
	bench_note(sc, "stream: %u pages per work item in order; random: %u pages per item, 1 page in %u"
		   " touched, each once; one word read and written per touched page; all words checked",
		   CHUNK_PAGES, RAND_K, RAND_EVERY);
	bench_note(sc, "link bound = (B + max(0, B - device)) / 16 GB/s, B = bytes of the 2 MiB blocks"
		   " touched (stream: the range)");
	e = 0;
out:
	free(runs);
	free(perm);
	free(touched);
	if (buf)
		uhmm_free(ctx, buf);
	if (ctx)
		uhmm_ctx_destroy(ctx);
	return e < 0 ? e : 0;
}
