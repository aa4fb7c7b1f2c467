/* SPDX-License-Identifier: MIT */
/*
 * Streaming and regular-reuse workloads: STREAM triad, SAXPY, 2D Jacobi,
 * tiled matrix multiply.  Inputs are generated from the seed in managed
 * memory (system memory when the device phase starts); kernels reach them
 * through the simdev accessors only.
 */
#define _GNU_SOURCE
#include "wl.h"

#include <stdlib.h>

/* Elements per work item of the streaming kernels: small, so that the
 * lanes' fronts stay close together (a few 2 MiB blocks per array). */
#define STREAM_ITEM 64u

/* ---- STREAM triad: a[i] = b[i] + s * c[i] (double) ---------------------- */

struct triad_arg {
	double *a;
	const double *b, *c;
	double s;
	size_t n;
};

static void k_triad(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct triad_arg *t = arg;
	size_t i0 = idx * STREAM_ITEM, i1 = i0 + STREAM_ITEM < t->n ? i0 + STREAM_ITEM : t->n;
	for (size_t i = i0; i < i1; i++)
		wl_std(wi, &t->a[i], wl_ldd(wi, &t->b[i]) + t->s * wl_ldd(wi, &t->c[i]));
}

void wl_triad(struct wl *w, struct wl_out *o)
{
	size_t n = w->bytes / (3 * sizeof(double));
	struct triad_arg t = { .s = 3.0, .n = n };
	t.a = wl_arena(w, o, n * sizeof(double));
	double *b = wl_arena(w, o, n * sizeof(double));
	double *c = wl_arena(w, o, n * sizeof(double));
	double *ref = malloc(n * sizeof(double));
	if (!t.a || !b || !c || !ref) {
		wl_fail(o, "alloc", -12);
		free(ref);
		return;
	}
	t.b = b, t.c = c;
	for (size_t i = 0; i < n; i++) {
		b[i] = wl_randf(w->seed, 1, i);
		c[i] = wl_randf(w->seed, 2, i);
	}
	uint64_t t0 = wl_now_ns();
	for (size_t i = 0; i < n; i++)
		ref[i] = b[i] + t.s * c[i];
	o->cpu_ns = wl_now_ns() - t0;

	wl_phase_begin(w);
	wl_launch(w, o, k_triad, (n + STREAM_ITEM - 1) / STREAM_ITEM, &t);
	wl_phase_end(w, o);
	for (size_t i = 0; i < n; i++)
		o->bad += !wl_close(t.a[i], ref[i], 1e-15);
	free(ref);
}

/* ---- SAXPY: y[i] = a * x[i] + y[i] (float) ------------------------------ */

struct saxpy_arg {
	const float *x;
	float *y;
	float a;
	size_t n;
};

static void k_saxpy(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct saxpy_arg *s = arg;
	size_t i0 = idx * STREAM_ITEM, i1 = i0 + STREAM_ITEM < s->n ? i0 + STREAM_ITEM : s->n;
	for (size_t i = i0; i < i1; i++)
		wl_stf(wi, &s->y[i], s->a * wl_ldf(wi, &s->x[i]) + wl_ldf(wi, &s->y[i]));
}

void wl_saxpy(struct wl *w, struct wl_out *o)
{
	size_t n = w->bytes / (2 * sizeof(float));
	struct saxpy_arg s = { .a = 2.5f, .n = n };
	float *x = wl_arena(w, o, n * sizeof(float));
	s.y = wl_arena(w, o, n * sizeof(float));
	float *ref = malloc(n * sizeof(float));
	if (!x || !s.y || !ref) {
		wl_fail(o, "alloc", -12);
		free(ref);
		return;
	}
	s.x = x;
	for (size_t i = 0; i < n; i++) {
		x[i] = wl_randf(w->seed, 3, i);
		s.y[i] = wl_randf(w->seed, 4, i);
	}
	uint64_t t0 = wl_now_ns();
	for (size_t i = 0; i < n; i++)
		ref[i] = s.a * x[i] + s.y[i];
	o->cpu_ns = wl_now_ns() - t0;

	wl_phase_begin(w);
	wl_launch(w, o, k_saxpy, (n + STREAM_ITEM - 1) / STREAM_ITEM, &s);
	wl_phase_end(w, o);
	for (size_t i = 0; i < n; i++)
		o->bad += !wl_close(s.y[i], ref[i], 1e-6);
	free(ref);
}

/* ---- 2D Jacobi: 5-point average, boundary fixed ------------------------ */

struct jacobi_arg {
	const float *src;
	float *dst;
	size_t n;        /* n x n grid */
	size_t segs;     /* row segments of STREAM_ITEM per row */
};

static inline float jacobi_at(const float *g, size_t n, size_t i, size_t j)
{
	return 0.25f * (g[(i - 1) * n + j] + g[(i + 1) * n + j] + g[i * n + j - 1] +
			g[i * n + j + 1]);
}

static void k_jacobi(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct jacobi_arg *a = arg;
	size_t n = a->n, i = idx / a->segs;
	size_t j0 = (idx % a->segs) * STREAM_ITEM;
	size_t j1 = j0 + STREAM_ITEM < n ? j0 + STREAM_ITEM : n;
	const float *g = a->src;
	for (size_t j = j0; j < j1; j++) {
		float v;
		if (i == 0 || j == 0 || i == n - 1 || j == n - 1)
			v = wl_ldf(wi, &g[i * n + j]);
		else
			v = 0.25f * (wl_ldf(wi, &g[(i - 1) * n + j]) + wl_ldf(wi, &g[(i + 1) * n + j]) +
				     wl_ldf(wi, &g[i * n + j - 1]) + wl_ldf(wi, &g[i * n + j + 1]));
		wl_stf(wi, &a->dst[i * n + j], v);
	}
}

static void jacobi_cpu(const float *g, float *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++)
			d[i * n + j] = (i == 0 || j == 0 || i == n - 1 || j == n - 1)
					       ? g[i * n + j]
					       : jacobi_at(g, n, i, j);
}

void wl_jacobi(struct wl *w, struct wl_out *o)
{
	size_t n = 8;
	while ((n + 8) * (n + 8) * 2 * sizeof(float) <= w->bytes)
		n += 8;
	unsigned sweeps = w->quick ? 2 : 4;
	float *g[2] = { wl_arena(w, o, n * n * sizeof(float)),
			wl_arena(w, o, n * n * sizeof(float)) };
	float *r[2] = { malloc(n * n * sizeof(float)), malloc(n * n * sizeof(float)) };
	if (!g[0] || !g[1] || !r[0] || !r[1]) {
		wl_fail(o, "alloc", -12);
		goto out;
	}
	for (size_t i = 0; i < n * n; i++)
		g[0][i] = r[0][i] = wl_randf(w->seed, 5, i);
	uint64_t t0 = wl_now_ns();
	for (unsigned s = 0; s < sweeps; s++)
		jacobi_cpu(r[s & 1], r[(s + 1) & 1], n);
	o->cpu_ns = wl_now_ns() - t0;

	size_t segs = (n + STREAM_ITEM - 1) / STREAM_ITEM;
	wl_phase_begin(w);
	for (unsigned s = 0; s < sweeps && !o->err; s++) {
		struct jacobi_arg a = { g[s & 1], g[(s + 1) & 1], n, segs };
		wl_launch(w, o, k_jacobi, n * segs, &a);
	}
	wl_phase_end(w, o);
	const float *res = g[sweeps & 1], *ref = r[sweeps & 1];
	for (size_t i = 0; i < n * n; i++)
		o->bad += !wl_close(res[i], ref[i], 1e-6);
	snprintf(o->note, sizeof(o->note), "%zux%zu, %u sweeps", n, n, sweeps);
out:
	free(r[0]);
	free(r[1]);
}

/* ---- tiled matrix multiply: C (MxN) = A (MxK) * B (KxN) ---------------- */

#define MM_TILE 8u
#define MM_KMAX 64u

struct mm_arg {
	const float *a, *b;
	float *c;
	size_t m, n, k, tiles_n;
};

static void k_matmul(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct mm_arg *p = arg;
	size_t ti = idx / p->tiles_n, tj = idx % p->tiles_n;
	size_t i0 = ti * MM_TILE, j0 = tj * MM_TILE;
	float at[MM_TILE][MM_KMAX], bt[MM_KMAX][MM_TILE];
	size_t mi = p->m - i0 < MM_TILE ? p->m - i0 : MM_TILE;
	size_t nj = p->n - j0 < MM_TILE ? p->n - j0 : MM_TILE;
	/* The tile's rows of A and columns of B, loaded once. */
	for (size_t i = 0; i < mi; i++)
		for (size_t k = 0; k < p->k; k++)
			at[i][k] = wl_ldf(wi, &p->a[(i0 + i) * p->k + k]);
	for (size_t k = 0; k < p->k; k++)
		for (size_t j = 0; j < nj; j++)
			bt[k][j] = wl_ldf(wi, &p->b[k * p->n + j0 + j]);
	for (size_t i = 0; i < mi; i++)
		for (size_t j = 0; j < nj; j++) {
			float acc = 0;
			for (size_t k = 0; k < p->k; k++)
				acc += at[i][k] * bt[k][j];
			wl_stf(wi, &p->c[(i0 + i) * p->n + j0 + j], acc);
		}
}

void wl_matmul(struct wl *w, struct wl_out *o)
{
	size_t k = w->quick ? 16 : 32;
	/* M = N; the footprint is 4 (2MK + M^2). */
	size_t m = 8;
	while (((m + 8) * (m + 8) + 2 * (m + 8) * k) * sizeof(float) <= w->bytes)
		m += 8;
	struct mm_arg p = { .m = m, .n = m, .k = k, .tiles_n = (m + MM_TILE - 1) / MM_TILE };
	float *a = wl_arena(w, o, m * k * sizeof(float));
	float *b = wl_arena(w, o, k * m * sizeof(float));
	p.c = wl_arena(w, o, m * m * sizeof(float));
	float *ref = malloc(m * m * sizeof(float));
	if (!a || !b || !p.c || !ref) {
		wl_fail(o, "alloc", -12);
		free(ref);
		return;
	}
	p.a = a, p.b = b;
	for (size_t i = 0; i < m * k; i++) {
		a[i] = wl_randf(w->seed, 6, i) - 0.5f;
		b[i] = wl_randf(w->seed, 7, i) - 0.5f;
	}
	uint64_t t0 = wl_now_ns();
	for (size_t i = 0; i < m; i++)
		for (size_t j = 0; j < m; j++) {
			float acc = 0;
			for (size_t x = 0; x < k; x++)
				acc += a[i * k + x] * b[x * m + j];
			ref[i * m + j] = acc;
		}
	o->cpu_ns = wl_now_ns() - t0;

	wl_phase_begin(w);
	wl_launch(w, o, k_matmul, p.tiles_n * p.tiles_n, &p);
	wl_phase_end(w, o);
	for (size_t i = 0; i < m * m; i++)
		o->bad += !wl_close(p.c[i], ref[i], 1e-5);
	snprintf(o->note, sizeof(o->note), "M=N=%zu K=%zu", m, k);
	free(ref);
}
