/* SPDX-License-Identifier: MIT */
/*
 * Sharing workloads: CPU and device on the same pages.
 *   pingpong   producer/consumer rounds: the CPU writes every word, the
 *              device transforms one word per cache line, the CPU checks
 *              every word; the pages cross both ways each round (the
 *              thrashing case).
 *   histogram  device work items and CPU threads add into the same bins
 *              with atomics at the same time.
 *   hash       a lock-free chained hash table (insert = compare-exchange on
 *              the bucket head) filled by CPU threads and device work items
 *              at the same time; every node must be found exactly once,
 *              in its bucket, intact.  hash1: one bucket for all (the worst
 *              contention: every insert races on one word).
 */
#define _GNU_SOURCE
#include "wl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define CPU_THREADS 2u

/* ---- pingpong ------------------------------------------------------------- */

#define PP_LINE_WORDS 8u          /* 64-byte lines */
#define PP_ITEM_WORDS 512u        /* a page per work item */

static inline uint64_t pp_val(uint64_t seed, unsigned round, size_t i)
{
	return (i * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)round << 56) ^ seed;
}

static inline uint64_t pp_f(uint64_t v)
{
	return v * 3 + 1;
}

struct pp_arg {
	uint64_t *buf;
	size_t n;
};

static void k_pingpong(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct pp_arg *a = arg;
	size_t i0 = idx * PP_ITEM_WORDS, i1 = i0 + PP_ITEM_WORDS < a->n ? i0 + PP_ITEM_WORDS : a->n;
	for (size_t i = i0; i < i1; i += PP_LINE_WORDS)
		uhmm_simdev_st64(wi, &a->buf[i], pp_f(uhmm_simdev_ld64(wi, &a->buf[i])));
}

/* One round on the CPU: produce, consume; returns the mismatches. */
static uint64_t pp_round_cpu(uint64_t *b, size_t n, uint64_t seed, unsigned r, bool transform)
{
	for (size_t i = 0; i < n; i++)
		b[i] = pp_val(seed, r, i);
	if (transform)
		for (size_t i = 0; i < n; i += PP_LINE_WORDS)
			b[i] = pp_f(b[i]);
	uint64_t bad = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t v = pp_val(seed, r, i);
		bad += b[i] != (i % PP_LINE_WORDS ? v : pp_f(v));
	}
	return bad;
}

void wl_pingpong(struct wl *w, struct wl_out *o)
{
	size_t n = w->bytes / 8;
	unsigned rounds = w->quick ? 3 : 6;
	struct pp_arg a = { .n = n };
	a.buf = wl_arena(w, o, n * 8);
	uint64_t *ref = malloc(n * 8);
	if (!a.buf || !ref) {
		wl_fail(o, "alloc", -12);
		free(ref);
		return;
	}
	uint64_t t0 = wl_now_ns(), rbad = 0;
	for (unsigned r = 0; r < rounds; r++)
		rbad += pp_round_cpu(ref, n, w->seed, r, true);
	o->cpu_ns = wl_now_ns() - t0;
	free(ref);

	wl_phase_begin(w);
	for (unsigned r = 0; r < rounds && !o->err; r++) {
		for (size_t i = 0; i < n; i++)
			a.buf[i] = pp_val(w->seed, r, i);
		wl_launch(w, o, k_pingpong, (n + PP_ITEM_WORDS - 1) / PP_ITEM_WORDS, &a);
		for (size_t i = 0; i < n; i++) {
			uint64_t v = pp_val(w->seed, r, i);
			o->bad += a.buf[i] != (i % PP_LINE_WORDS ? v : pp_f(v));
		}
	}
	wl_phase_end(w, o);
	o->bad += rbad;
	snprintf(o->note, sizeof(o->note), "%u rounds", rounds);
}

/* ---- histogram ------------------------------------------------------------ */

#define HIST_BINS 64u

static inline uint32_t hist_bin(uint32_t v)
{
	/* Skewed: low bins are hot. */
	uint32_t a = v & 63, b = (v >> 6) & 63;
	return a < b ? a : b;
}

struct hist_arg {
	const uint32_t *in;
	uint32_t *bins;
	size_t lo, hi, tile;       /* device: [lo, hi) */
	_Atomic bool go;           /* CPU threads start with the launch */
	unsigned id;
};

static void hist_tile_count(const uint32_t *in, size_t i0, size_t i1, uint32_t *local)
{
	for (size_t i = i0; i < i1; i++)
		local[hist_bin(in[i])]++;
}

static void k_hist(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct hist_arg *a = arg;
	uint32_t local[HIST_BINS] = { 0 };
	size_t i0 = a->lo + idx * a->tile, i1 = i0 + a->tile < a->hi ? i0 + a->tile : a->hi;
	for (size_t i = i0; i < i1; i++)
		local[hist_bin(uhmm_simdev_ld32(wi, &a->in[i]))]++;
	for (unsigned b = 0; b < HIST_BINS; b++)
		if (local[b])
			uhmm_simdev_atomic_add32(wi, &a->bins[b], local[b]);
}

struct hist_cpu {
	struct hist_arg *a;
	size_t lo, hi;    /* this thread's share */
};

static void *hist_thread(void *p)
{
	struct hist_cpu *c = p;
	while (!atomic_load(&c->a->go))
		;
	for (size_t i0 = c->lo; i0 < c->hi; i0 += c->a->tile) {
		uint32_t local[HIST_BINS] = { 0 };
		size_t i1 = i0 + c->a->tile < c->hi ? i0 + c->a->tile : c->hi;
		hist_tile_count(c->a->in, i0, i1, local);
		for (unsigned b = 0; b < HIST_BINS; b++)
			if (local[b])
				__atomic_fetch_add(&c->a->bins[b], local[b], __ATOMIC_SEQ_CST);
	}
	return NULL;
}

void wl_histogram(struct wl *w, struct wl_out *o)
{
	size_t n = w->bytes / 4;
	struct hist_arg a = { .lo = 0, .hi = n / 2 };
	uint32_t *in = wl_arena(w, o, n * 4);
	/* The bins on a page of their own. */
	(void)wl_arena(w, o, WL_PAGE);
	a.bins = wl_arena(w, o, WL_PAGE);
	if (!in || !a.bins)
		return;
	a.in = in;
	/* At most 64 tiles a side: the atomics stay in the thousands. */
	a.tile = (n / 2 + 63) / 64;
	a.tile = a.tile < 16384 ? 16384 : a.tile;
	for (size_t i = 0; i < n; i++)
		in[i] = (uint32_t)wl_rand(w->seed, 30, i);
	uint32_t ref[HIST_BINS] = { 0 };
	uint64_t t0 = wl_now_ns();
	hist_tile_count(in, 0, n, ref);
	o->cpu_ns = wl_now_ns() - t0;

	pthread_t th[CPU_THREADS];
	struct hist_cpu hc[CPU_THREADS];
	size_t share = (n - n / 2 + CPU_THREADS - 1) / CPU_THREADS;
	unsigned started = 0;
	wl_phase_begin(w);
	for (unsigned t = 0; t < CPU_THREADS; t++) {
		size_t lo = n / 2 + t * share, hi = lo + share < n ? lo + share : n;
		hc[t] = (struct hist_cpu){ &a, lo < n ? lo : n, hi };
		if (pthread_create(&th[t], NULL, hist_thread, &hc[t]) == 0)
			started++;
	}
	atomic_store(&a.go, true);
	wl_launch(w, o, k_hist, (a.hi - a.lo + a.tile - 1) / a.tile, &a);
	for (unsigned t = 0; t < started; t++)
		pthread_join(th[t], NULL);
	wl_phase_end(w, o);
	if (started < CPU_THREADS)
		wl_fail(o, "pthread_create", -11);
	for (unsigned b = 0; b < HIST_BINS; b++)
		o->bad += a.bins[b] != ref[b];
	snprintf(o->note, sizeof(o->note), "%u bins, %u CPU threads, tiles of %zu", HIST_BINS,
		 CPU_THREADS, a.tile);
}

/* ---- lock-free hash table -------------------------------------------------- */

struct hnode {
	uint64_t key;
	uint64_t next;     /* node index + 1; 0 ends the chain */
	uint64_t pay[];    /* word 0 of each further 64-byte line: key ^ line */
};

struct hash_arg {
	char *pool;        /* nnodes nodes of size bytes */
	uint64_t *buckets;
	size_t nnodes, size;
	uint64_t nb;       /* buckets, a power of two */
	uint64_t seed;
	_Atomic bool go;
};

static inline uint64_t hkey(uint64_t seed, size_t i)
{
	return wl_rand(seed, 40, i) | 1;
}

static inline uint64_t hbucket(uint64_t key, uint64_t nb)
{
	return (key >> 17) & (nb - 1);
}

static inline struct hnode *hnode_at(const struct hash_arg *a, size_t i)
{
	return (struct hnode *)(a->pool + i * a->size);
}

/* Device work item idx inserts node nnodes/2 + idx. */
static void k_hash(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct hash_arg *a = arg;
	size_t i = a->nnodes / 2 + idx;
	struct hnode *nd = hnode_at(a, i);
	uint64_t key = hkey(a->seed, i);
	for (size_t l = 1; l < a->size / 64; l++)
		uhmm_simdev_st64(wi, (char *)nd + l * 64, key ^ l);
	uhmm_simdev_st64(wi, &nd->key, key);
	uint64_t *head = &a->buckets[hbucket(key, a->nb)];
	for (;;) {
		uint64_t old = uhmm_simdev_ld64(wi, head);
		uhmm_simdev_st64(wi, &nd->next, old);
		if (uhmm_simdev_atomic_cas64(wi, head, old, i + 1) == old)
			break;
	}
}

static void hash_insert_cpu(const struct hash_arg *a, size_t i)
{
	struct hnode *nd = hnode_at(a, i);
	uint64_t key = hkey(a->seed, i);
	for (size_t l = 1; l < a->size / 64; l++)
		*(uint64_t *)((char *)nd + l * 64) = key ^ l;
	nd->key = key;
	uint64_t *head = &a->buckets[hbucket(key, a->nb)];
	uint64_t old = __atomic_load_n(head, __ATOMIC_SEQ_CST);
	do {
		nd->next = old;
	} while (!__atomic_compare_exchange_n(head, &old, i + 1, false, __ATOMIC_SEQ_CST,
					      __ATOMIC_SEQ_CST));
}

struct hash_cpu {
	struct hash_arg *a;
	unsigned t;
};

static void *hash_thread(void *p)
{
	struct hash_cpu *c = p;
	while (!atomic_load(&c->a->go))
		;
	for (size_t i = c->t; i < c->a->nnodes / 2; i += CPU_THREADS)
		hash_insert_cpu(c->a, i);
	return NULL;
}

/* Every node exactly once, in its bucket, intact: returns the mismatches. */
static uint64_t hash_verify(const struct hash_arg *a)
{
	uint8_t *seen = calloc(a->nnodes, 1);
	uint64_t bad = 0;
	if (!seen)
		return 1;
	for (uint64_t b = 0; b < a->nb; b++) {
		uint64_t x = a->buckets[b];
		for (size_t steps = 0; x; steps++) {
			if (x > a->nnodes || steps > a->nnodes) {
				bad++; /* a wild index, or a cycle */
				break;
			}
			size_t i = x - 1;
			const struct hnode *nd = hnode_at(a, i);
			uint64_t key = hkey(a->seed, i);
			bad += seen[i]++ != 0;
			bad += nd->key != key || hbucket(key, a->nb) != b;
			for (size_t l = 1; l < a->size / 64; l++)
				bad += *(const uint64_t *)((const char *)nd + l * 64) != (key ^ l);
			x = nd->next;
		}
	}
	for (size_t i = 0; i < a->nnodes; i++)
		bad += seen[i] == 0;
	free(seen);
	return bad;
}

static void hash_run(struct wl *w, struct wl_out *o, bool one_bin)
{
	struct hash_arg a = { .seed = w->seed };
	a.nnodes = w->quick ? 2048 : 16384;
	/* Nodes sized so that the pool is the footprint. */
	a.size = (w->bytes / a.nnodes) & ~(size_t)63;
	a.size = a.size < 64 ? 64 : a.size;
	a.nb = one_bin ? 1 : a.nnodes / 4;
	a.buckets = wl_arena(w, o, a.nb * 8);
	a.pool = wl_arena(w, o, a.nnodes * a.size);
	if (!a.buckets || !a.pool)
		return;

	/* CPU-only: the same inserts by one thread, into a private copy. */
	struct hash_arg r = a;
	r.buckets = calloc(a.nb, 8);
	r.pool = calloc(a.nnodes, a.size);
	if (!r.buckets || !r.pool) {
		wl_fail(o, "alloc", -12);
		goto out;
	}
	uint64_t t0 = wl_now_ns();
	for (size_t i = 0; i < a.nnodes; i++)
		hash_insert_cpu(&r, i);
	o->cpu_ns = wl_now_ns() - t0;
	o->bad += hash_verify(&r);

	pthread_t th[CPU_THREADS];
	struct hash_cpu hc[CPU_THREADS];
	unsigned started = 0;
	wl_phase_begin(w);
	for (unsigned t = 0; t < CPU_THREADS; t++) {
		hc[t] = (struct hash_cpu){ &a, t };
		if (pthread_create(&th[t], NULL, hash_thread, &hc[t]) == 0)
			started++;
	}
	atomic_store(&a.go, true);
	wl_launch(w, o, k_hash, a.nnodes - a.nnodes / 2, &a);
	for (unsigned t = 0; t < started; t++)
		pthread_join(th[t], NULL);
	wl_phase_end(w, o);
	if (started < CPU_THREADS)
		wl_fail(o, "pthread_create", -11);
	o->bad += hash_verify(&a);
	snprintf(o->note, sizeof(o->note), "%zu nodes of %zu B, %llu bucket%s", a.nnodes, a.size,
		 (unsigned long long)a.nb, a.nb == 1 ? "" : "s");
out:
	free(r.buckets);
	free(r.pool);
}

void wl_hash(struct wl *w, struct wl_out *o)
{
	hash_run(w, o, false);
}

void wl_hash1(struct wl *w, struct wl_out *o)
{
	hash_run(w, o, true);
}
