/* SPDX-License-Identifier: MIT */
/*
 * Irregular workloads: BFS over an R-MAT graph in CSR, SpMV, GUPS random
 * updates with atomics, k-means with fixed-point atomic sums.
 */
#define _GNU_SOURCE
#include "wl.h"

#include <stdlib.h>

#define INF32 0xffffffffu

/* ---- R-MAT graph in CSR (bfs, spmv) ------------------------------------- */

struct csr {
	uint32_t nv;
	uint64_t ne;
	uint32_t *row;  /* nv + 1 */
	uint32_t *col;  /* ne */
};

/* R-MAT (a, b, c, d) = (0.57, 0.19, 0.19, 0.05) edges over 2^scale
 * vertices, built as CSR in @g (row and col already allocated). */
static int rmat_build(uint64_t seed, unsigned scale, struct csr *g)
{
	uint32_t *src = malloc(g->ne * sizeof(uint32_t));
	uint32_t *dst = malloc(g->ne * sizeof(uint32_t));
	if (!src || !dst) {
		free(src);
		free(dst);
		return -12;
	}
	uint64_t s = wl_mix(seed ^ 0x5eed);
	/* Thresholds on 16 random bits: a, a + b, a + b + c. */
	const uint32_t ta = 37356, tb = 37356 + 12452, tc = 37356 + 2 * 12452;
	for (uint64_t e = 0; e < g->ne; e++) {
		uint32_t u = 0, v = 0;
		uint64_t r = 0;
		for (unsigned l = 0; l < scale; l++) {
			if (l % 4 == 0)
				r = wl_next(&s);
			uint32_t x = (uint32_t)(r & 0xffff);
			r >>= 16;
			u <<= 1, v <<= 1;
			if (x >= ta && x < tb)
				v |= 1;
			else if (x >= tb && x < tc)
				u |= 1;
			else if (x >= tc)
				u |= 1, v |= 1;
		}
		src[e] = u, dst[e] = v;
	}
	memset(g->row, 0, ((size_t)g->nv + 1) * sizeof(uint32_t));
	for (uint64_t e = 0; e < g->ne; e++)
		g->row[src[e] + 1]++;
	for (uint32_t v = 0; v < g->nv; v++)
		g->row[v + 1] += g->row[v];
	uint32_t *fill = malloc((size_t)g->nv * sizeof(uint32_t));
	if (!fill) {
		free(src);
		free(dst);
		return -12;
	}
	memcpy(fill, g->row, (size_t)g->nv * sizeof(uint32_t));
	for (uint64_t e = 0; e < g->ne; e++)
		g->col[fill[src[e]]++] = dst[e];
	free(fill);
	free(src);
	free(dst);
	return 0;
}

/* ---- BFS ----------------------------------------------------------------- */

struct bfs_arg {
	const uint32_t *row, *col, *cur;
	uint32_t *dist, *next, *next_n;
	uint32_t level;
};

static void k_bfs(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct bfs_arg *a = arg;
	uint32_t u = uhmm_simdev_ld32(wi, &a->cur[idx]);
	uint32_t e0 = uhmm_simdev_ld32(wi, &a->row[u]), e1 = uhmm_simdev_ld32(wi, &a->row[u + 1]);
	for (uint32_t e = e0; e < e1; e++) {
		uint32_t v = uhmm_simdev_ld32(wi, &a->col[e]);
		if (uhmm_simdev_ld32(wi, &a->dist[v]) != INF32)
			continue;
		if (uhmm_simdev_atomic_cas32(wi, &a->dist[v], INF32, a->level + 1) != INF32)
			continue;
		uint32_t pos = uhmm_simdev_atomic_add32(wi, a->next_n, 1);
		uhmm_simdev_st32(wi, &a->next[pos], v);
	}
}

static int cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
	return (a > b) - (a < b);
}

void wl_bfs(struct wl *w, struct wl_out *o)
{
	/* 4 (V + 1) + 4 E + 12 V (dist, two frontiers); edge factor >= 8. */
	unsigned scale = 4;
	while ((uint64_t)48 << (scale + 1) <= w->bytes)
		scale++;
	struct csr g = { .nv = 1u << scale };
	g.ne = (w->bytes - 16ull * g.nv - 64) / 4;
	g.row = wl_arena(w, o, ((size_t)g.nv + 1) * 4);
	g.col = wl_arena(w, o, g.ne * 4);
	uint32_t *dist = wl_arena(w, o, (size_t)g.nv * 4);
	uint32_t *fr[2] = { wl_arena(w, o, (size_t)g.nv * 4), wl_arena(w, o, (size_t)g.nv * 4) };
	uint32_t *next_n = wl_arena(w, o, 64);
	uint32_t *ref = malloc((size_t)g.nv * 4), *q = malloc((size_t)g.nv * 4);
	if (!g.row || !g.col || !dist || !fr[0] || !fr[1] || !next_n || !ref || !q ||
	    rmat_build(w->seed, scale, &g) < 0) {
		wl_fail(o, "alloc", -12);
		goto out;
	}
	const uint32_t root = 0;
	uint64_t t0 = wl_now_ns();
	for (uint32_t v = 0; v < g.nv; v++)
		ref[v] = INF32;
	size_t qh = 0, qt = 0;
	ref[root] = 0;
	q[qt++] = root;
	while (qh < qt) {
		uint32_t u = q[qh++];
		for (uint32_t e = g.row[u]; e < g.row[u + 1]; e++)
			if (ref[g.col[e]] == INF32) {
				ref[g.col[e]] = ref[u] + 1;
				q[qt++] = g.col[e];
			}
	}
	o->cpu_ns = wl_now_ns() - t0;

	for (uint32_t v = 0; v < g.nv; v++)
		dist[v] = INF32;
	dist[root] = 0;
	fr[0][0] = root;
	uint32_t n = 1, levels = 0;
	wl_phase_begin(w);
	for (uint32_t lvl = 0; n && !o->err; lvl++) {
		struct bfs_arg a = { g.row, g.col, fr[lvl & 1], dist, fr[(lvl + 1) & 1], next_n, lvl };
		*next_n = 0;
		wl_launch(w, o, k_bfs, n, &a);
		n = *next_n;
		levels++;
		/* The next frontier in vertex order (as a bitmap frontier
		 * would be): its rows are then read in address order. */
		qsort(fr[(lvl + 1) & 1], n, 4, cmp_u32);
	}
	wl_phase_end(w, o);
	for (uint32_t v = 0; v < g.nv; v++)
		o->bad += dist[v] != ref[v];
	snprintf(o->note, sizeof(o->note), "V=2^%u E=%llu, %u levels, %zu reached", scale,
		 (unsigned long long)g.ne, levels, qt);
out:
	free(ref);
	free(q);
}

/* ---- SpMV: y = A x, CSR, float ------------------------------------------ */

#define SPMV_NNZ 16u
#define SPMV_ROWS 16u /* rows per work item */

struct spmv_arg {
	const uint32_t *row, *col;
	const float *val, *x;
	float *y;
	uint32_t nr;
};

static void k_spmv(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct spmv_arg *a = arg;
	uint32_t r0 = (uint32_t)idx * SPMV_ROWS;
	uint32_t r1 = r0 + SPMV_ROWS < a->nr ? r0 + SPMV_ROWS : a->nr;
	for (uint32_t r = r0; r < r1; r++) {
		float acc = 0;
		uint32_t e0 = uhmm_simdev_ld32(wi, &a->row[r]), e1 = uhmm_simdev_ld32(wi, &a->row[r + 1]);
		for (uint32_t e = e0; e < e1; e++)
			acc += wl_ldf(wi, &a->val[e]) * wl_ldf(wi, &a->x[uhmm_simdev_ld32(wi, &a->col[e])]);
		wl_stf(wi, &a->y[r], acc);
	}
}

void wl_spmv(struct wl *w, struct wl_out *o)
{
	/* 4 (R + 1) + 8 nnz + 8 R with nnz = 16 R: about 140 R bytes. */
	uint32_t nr = (uint32_t)(w->bytes / (12 + 8 * SPMV_NNZ) );
	if (nr < 16)
		nr = 16;
	uint64_t nnz = (uint64_t)nr * SPMV_NNZ;
	struct spmv_arg a = { .nr = nr };
	uint32_t *row = wl_arena(w, o, ((size_t)nr + 1) * 4);
	uint32_t *col = wl_arena(w, o, nnz * 4);
	float *val = wl_arena(w, o, nnz * 4), *x = wl_arena(w, o, (size_t)nr * 4);
	a.y = wl_arena(w, o, (size_t)nr * 4);
	float *ref = malloc((size_t)nr * 4);
	if (!row || !col || !val || !x || !a.y || !ref) {
		wl_fail(o, "alloc", -12);
		free(ref);
		return;
	}
	/* Rows of 8..24 entries; half the columns near the diagonal, half
	 * anywhere (a banded part and a scattered one). */
	uint64_t e = 0;
	for (uint32_t r = 0; r < nr; r++) {
		row[r] = (uint32_t)e;
		uint32_t k = 8 + (uint32_t)(wl_rand(w->seed, 9, r) % 17);
		for (uint32_t j = 0; j < k && e < nnz; j++, e++) {
			uint64_t z = wl_rand(w->seed, 10, e);
			col[e] = j & 1 ? (uint32_t)(z % nr)
				       : (uint32_t)((r + (z % 64) + nr - 32) % nr);
			val[e] = wl_randf(w->seed, 11, e) - 0.5f;
		}
	}
	row[nr] = (uint32_t)e;
	for (uint32_t i = 0; i < nr; i++)
		x[i] = wl_randf(w->seed, 12, i);
	a.row = row, a.col = col, a.val = val, a.x = x;
	uint64_t t0 = wl_now_ns();
	for (uint32_t r = 0; r < nr; r++) {
		float acc = 0;
		for (uint32_t j = row[r]; j < row[r + 1]; j++)
			acc += val[j] * x[col[j]];
		ref[r] = acc;
	}
	o->cpu_ns = wl_now_ns() - t0;

	wl_phase_begin(w);
	wl_launch(w, o, k_spmv, (nr + SPMV_ROWS - 1) / SPMV_ROWS, &a);
	wl_phase_end(w, o);
	for (uint32_t r = 0; r < nr; r++)
		o->bad += !wl_close(a.y[r], ref[r], 1e-5);
	snprintf(o->note, sizeof(o->note), "%u rows, %llu nonzeros", nr, (unsigned long long)e);
	free(ref);
}

/* ---- GUPS: T[r % n] += r, atomically ------------------------------------ */

#define GUPS_PER_ITEM 256u

struct gups_arg {
	uint64_t *t;
	uint64_t mask, seed;
};

static void k_gups(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct gups_arg *a = arg;
	uint64_t s = wl_rand(a->seed, 13, idx) | 1;
	for (unsigned j = 0; j < GUPS_PER_ITEM; j++) {
		uint64_t r = wl_next(&s);
		uhmm_simdev_atomic_add64(wi, &a->t[r & a->mask], r);
	}
}

void wl_gups(struct wl *w, struct wl_out *o)
{
	uint64_t n = 512;
	while (n * 2 * 8 <= w->bytes)
		n *= 2;
	/* Updates: 4 per entry in HPCC; capped so that a run lasts seconds. */
	uint64_t nu = 4 * n, cap = w->quick ? 16384 : 1u << 20;
	nu = nu < cap ? nu : cap;
	uint64_t items = (nu + GUPS_PER_ITEM - 1) / GUPS_PER_ITEM;
	struct gups_arg a = { .mask = n - 1, .seed = w->seed };
	a.t = wl_arena(w, o, n * 8);
	uint64_t *ref = malloc(n * 8);
	if (!a.t || !ref) {
		wl_fail(o, "alloc", -12);
		free(ref);
		return;
	}
	for (uint64_t i = 0; i < n; i++)
		a.t[i] = ref[i] = i;
	uint64_t t0 = wl_now_ns();
	for (uint64_t it = 0; it < items; it++) {
		uint64_t s = wl_rand(w->seed, 13, it) | 1;
		for (unsigned j = 0; j < GUPS_PER_ITEM; j++) {
			uint64_t r = wl_next(&s);
			ref[r & a.mask] += r;
		}
	}
	o->cpu_ns = wl_now_ns() - t0;

	wl_phase_begin(w);
	wl_launch(w, o, k_gups, items, &a);
	wl_phase_end(w, o);
	for (uint64_t i = 0; i < n; i++)
		o->bad += a.t[i] != ref[i];
	snprintf(o->note, sizeof(o->note), "table 2^%d, %llu updates", __builtin_ctzll(n),
		 (unsigned long long)(items * GUPS_PER_ITEM));
	free(ref);
}

/* ---- k-means: integer points, fixed-point sums by atomics --------------- */

#define KM_D 4u
#define KM_K 8u
#define KM_ITEM 1024u /* points per work item */

struct km_arg {
	const uint32_t *pts;  /* n x KM_D */
	uint32_t *label;
	uint64_t *sums;       /* KM_K x KM_D */
	uint64_t *counts;     /* KM_K */
	uint32_t cent[KM_K][KM_D]; /* the kernel's argument, read directly */
	size_t n;
};

static uint32_t km_nearest(const uint32_t cent[KM_K][KM_D], const uint32_t *p)
{
	uint64_t best = UINT64_MAX;
	uint32_t bi = 0;
	for (uint32_t k = 0; k < KM_K; k++) {
		uint64_t d = 0;
		for (unsigned j = 0; j < KM_D; j++) {
			int64_t x = (int64_t)p[j] - (int64_t)cent[k][j];
			d += (uint64_t)(x * x);
		}
		if (d < best)
			best = d, bi = k;
	}
	return bi;
}

static void k_kmeans(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct km_arg *a = arg;
	uint64_t sums[KM_K][KM_D] = { { 0 } }, counts[KM_K] = { 0 };
	size_t i0 = idx * KM_ITEM, i1 = i0 + KM_ITEM < a->n ? i0 + KM_ITEM : a->n;
	for (size_t i = i0; i < i1; i++) {
		uint32_t p[KM_D];
		for (unsigned j = 0; j < KM_D; j++)
			p[j] = uhmm_simdev_ld32(wi, &a->pts[i * KM_D + j]);
		uint32_t k = km_nearest(a->cent, p);
		uhmm_simdev_st32(wi, &a->label[i], k);
		counts[k]++;
		for (unsigned j = 0; j < KM_D; j++)
			sums[k][j] += p[j];
	}
	for (uint32_t k = 0; k < KM_K; k++) {
		if (!counts[k])
			continue;
		uhmm_simdev_atomic_add64(wi, &a->counts[k], counts[k]);
		for (unsigned j = 0; j < KM_D; j++)
			uhmm_simdev_atomic_add64(wi, &a->sums[k * KM_D + j], sums[k][j]);
	}
}

static void km_update(uint32_t cent[KM_K][KM_D], const uint64_t *sums, const uint64_t *counts)
{
	for (uint32_t k = 0; k < KM_K; k++)
		if (counts[k])
			for (unsigned j = 0; j < KM_D; j++)
				cent[k][j] = (uint32_t)(sums[k * KM_D + j] / counts[k]);
}

void wl_kmeans(struct wl *w, struct wl_out *o)
{
	size_t n = w->bytes / (KM_D * 4 + 4);
	unsigned iters = w->quick ? 2 : 4;
	struct km_arg a = { .n = n };
	uint32_t *pts = wl_arena(w, o, n * KM_D * 4);
	a.label = wl_arena(w, o, n * 4);
	a.sums = wl_arena(w, o, KM_K * KM_D * 8);
	a.counts = wl_arena(w, o, KM_K * 8);
	uint32_t *rlabel = malloc(n * 4);
	if (!pts || !a.label || !a.sums || !a.counts || !rlabel) {
		wl_fail(o, "alloc", -12);
		free(rlabel);
		return;
	}
	a.pts = pts;
	/* Points around KM_K random centres. */
	uint32_t centre[KM_K][KM_D];
	for (uint32_t k = 0; k < KM_K; k++)
		for (unsigned j = 0; j < KM_D; j++)
			centre[k][j] = 8192 + (uint32_t)(wl_rand(w->seed, 14, k * KM_D + j) % 49152);
	for (size_t i = 0; i < n; i++) {
		uint32_t k = (uint32_t)(wl_rand(w->seed, 15, i) % KM_K);
		for (unsigned j = 0; j < KM_D; j++)
			pts[i * KM_D + j] = centre[k][j] - 8192 +
					    (uint32_t)(wl_rand(w->seed, 16, i * KM_D + j) % 16384);
	}
	uint32_t c0[KM_K][KM_D], rc[KM_K][KM_D];
	for (uint32_t k = 0; k < KM_K; k++)
		memcpy(c0[k], &pts[(n / KM_K) * k * KM_D], sizeof(c0[k]));
	memcpy(rc, c0, sizeof(rc));

	uint64_t t0 = wl_now_ns();
	for (unsigned it = 0; it < iters; it++) {
		uint64_t sums[KM_K * KM_D] = { 0 }, counts[KM_K] = { 0 };
		for (size_t i = 0; i < n; i++) {
			uint32_t k = km_nearest(rc, &pts[i * KM_D]);
			rlabel[i] = k;
			counts[k]++;
			for (unsigned j = 0; j < KM_D; j++)
				sums[k * KM_D + j] += pts[i * KM_D + j];
		}
		km_update(rc, sums, counts);
	}
	o->cpu_ns = wl_now_ns() - t0;

	memcpy(a.cent, c0, sizeof(c0));
	wl_phase_begin(w);
	for (unsigned it = 0; it < iters && !o->err; it++) {
		memset(a.sums, 0, KM_K * KM_D * 8);
		memset(a.counts, 0, KM_K * 8);
		wl_launch(w, o, k_kmeans, (n + KM_ITEM - 1) / KM_ITEM, &a);
		km_update(a.cent, a.sums, a.counts);
	}
	wl_phase_end(w, o);
	for (size_t i = 0; i < n; i++)
		o->bad += a.label[i] != rlabel[i];
	o->bad += memcmp(a.cent, rc, sizeof(rc)) != 0;
	snprintf(o->note, sizeof(o->note), "%zu points, k=%u, %u iterations", n, KM_K, iters);
	free(rlabel);
}
