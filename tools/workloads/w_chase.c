/* SPDX-License-Identifier: MIT */
/*
 * Pointer chasing over structures of malloc'd nodes: linked lists and a
 * search tree.  The nodes come from the application's own heap (malloc);
 * the page-aligned span of the heap containing them is handed to uhmm with
 * uhmm_register, so the device follows the same pointers the CPU does.
 * main.c unregisters the span after the run (the pages come home), then
 * wl_chase_cleanup() frees the nodes.
 */
#define _GNU_SOURCE
#include "wl.h"

#include <stdlib.h>

/* Nodes of the last run, freed by wl_chase_cleanup(). */
static void **nodes;
static size_t nnodes;

void wl_chase_cleanup(void)
{
	for (size_t i = 0; i < nnodes; i++)
		free(nodes[i]);
	free(nodes);
	nodes = NULL;
	nnodes = 0;
}

/* Keeps @n nodes of @size from malloc in nodes[]; registers their span. */
static int alloc_nodes(struct wl *w, struct wl_out *o, size_t n, size_t size)
{
	nodes = malloc(n * sizeof(*nodes));
	if (!nodes) {
		wl_fail(o, "malloc", -12);
		return -12;
	}
	for (nnodes = 0; nnodes < n; nnodes++) {
		nodes[nnodes] = malloc(size);
		if (!nodes[nnodes]) {
			wl_fail(o, "malloc", -12);
			return -12;
		}
		memset(nodes[nnodes], 0, size);
	}
	return 0;
}

static int register_nodes(struct wl *w, struct wl_out *o, size_t size)
{
	uintptr_t lo = UINTPTR_MAX, hi = 0;
	for (size_t i = 0; i < nnodes; i++) {
		uintptr_t a = (uintptr_t)nodes[i];
		lo = a < lo ? a : lo;
		hi = a + size > hi ? a + size : hi;
	}
	return wl_register_span(w, o, lo, hi);
}

/* ---- linked lists --------------------------------------------------------- */

#define LIST_LISTS 256u

struct lnode {
	struct lnode *next;
	uint64_t val;
	uint64_t pad[4]; /* 48 bytes: a 64-byte malloc chunk */
};

struct list_arg {
	struct lnode **heads;
	uint64_t *res; /* sum, count per list */
};

static void k_list(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct list_arg *a = arg;
	struct lnode *p = wl_ldp(wi, (void *const *)&a->heads[idx]);
	uint64_t sum = 0, cnt = 0;
	while (p) {
		sum += uhmm_simdev_ld64(wi, &p->val);
		cnt++;
		p = wl_ldp(wi, (void *const *)&p->next);
	}
	uhmm_simdev_st64(wi, &a->res[2 * idx], sum);
	uhmm_simdev_st64(wi, &a->res[2 * idx + 1], cnt);
}

void wl_list(struct wl *w, struct wl_out *o)
{
	size_t n = w->bytes / 64;
	n = n < LIST_LISTS ? LIST_LISTS : n;
	struct list_arg a;
	a.heads = wl_arena(w, o, LIST_LISTS * sizeof(*a.heads));
	a.res = wl_arena(w, o, 2 * LIST_LISTS * 8);
	uint32_t *perm = malloc(n * sizeof(*perm));
	uint64_t *ref = calloc(2 * LIST_LISTS, 8);
	if (!a.heads || !a.res || !perm || !ref || alloc_nodes(w, o, n, sizeof(struct lnode)))
		goto out;
	/* A permutation shuffled within windows of 1024 nodes; list j takes
	 * every LIST_LISTS-th node of it, so the lists advance through the
	 * heap together, in an order the prefetcher cannot guess. */
	for (size_t i = 0; i < n; i++)
		perm[i] = (uint32_t)i;
	for (size_t b = 0; b < n; b += 1024) {
		size_t e = b + 1024 < n ? b + 1024 : n;
		for (size_t i = e - 1; i > b; i--) {
			size_t j = b + wl_rand(w->seed, 20, i) % (i - b + 1);
			uint32_t t = perm[i];
			perm[i] = perm[j], perm[j] = t;
		}
	}
	struct lnode *tail[LIST_LISTS] = { NULL };
	for (size_t i = 0; i < n; i++) {
		struct lnode *p = nodes[perm[i]];
		p->val = wl_rand(w->seed, 21, i);
		size_t l = i % LIST_LISTS;
		if (tail[l])
			tail[l]->next = p;
		else
			a.heads[l] = p;
		tail[l] = p;
	}
	uint64_t t0 = wl_now_ns();
	for (size_t l = 0; l < LIST_LISTS; l++)
		for (struct lnode *p = a.heads[l]; p; p = p->next)
			ref[2 * l] += p->val, ref[2 * l + 1]++;
	o->cpu_ns = wl_now_ns() - t0;
	if (register_nodes(w, o, sizeof(struct lnode)))
		goto out;

	wl_phase_begin(w);
	wl_launch(w, o, k_list, LIST_LISTS, &a);
	wl_phase_end(w, o);
	for (size_t i = 0; i < 2 * LIST_LISTS; i++)
		o->bad += a.res[i] != ref[i];
	snprintf(o->note, sizeof(o->note), "%zu nodes in %u lists, span %zu KiB", n, LIST_LISTS,
		 w->reg_len >> 10);
out:
	free(perm);
	free(ref);
}

/* ---- search tree ---------------------------------------------------------- */

#define TREE_ITEM 16u /* queries per work item */

struct tnode {
	struct tnode *l, *r;
	uint64_t key, val;
	uint64_t pad[2];
};

struct tree_arg {
	struct tnode *root;
	const uint64_t *q;
	uint64_t *res;
	size_t nq;
};

/* Balanced tree over keys 2i + 1, i in [lo, hi), nodes in preorder. */
static struct tnode *tree_build(size_t lo, size_t hi, size_t *next, uint64_t seed)
{
	if (lo >= hi)
		return NULL;
	size_t mid = lo + (hi - lo) / 2;
	struct tnode *t = nodes[(*next)++];
	t->key = 2 * mid + 1;
	t->val = wl_rand(seed, 22, mid) | 1;
	t->l = tree_build(lo, mid, next, seed);
	t->r = tree_build(mid + 1, hi, next, seed);
	return t;
}

static void k_tree(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	const struct tree_arg *a = arg;
	for (size_t i = idx * TREE_ITEM; i < (idx + 1) * TREE_ITEM && i < a->nq; i++) {
		uint64_t k = uhmm_simdev_ld64(wi, &a->q[i]), v = 0;
		struct tnode *t = a->root;
		while (t) {
			uint64_t tk = uhmm_simdev_ld64(wi, &t->key);
			if (tk == k) {
				v = uhmm_simdev_ld64(wi, &t->val);
				break;
			}
			t = wl_ldp(wi, (void *const *)(k < tk ? &t->l : &t->r));
		}
		uhmm_simdev_st64(wi, &a->res[i], v);
	}
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return (a > b) - (a < b);
}

void wl_tree(struct wl *w, struct wl_out *o)
{
	size_t n = w->bytes / 64;
	n = n < 64 ? 64 : n;
	size_t nq = w->quick ? 8192 : 65536;
	struct tree_arg a = { .nq = nq };
	uint64_t *q = wl_arena(w, o, nq * 8);
	a.res = wl_arena(w, o, nq * 8);
	uint64_t *ref = malloc(nq * 8);
	if (!q || !a.res || !ref || alloc_nodes(w, o, n, sizeof(struct tnode)))
		goto out;
	size_t next = 0;
	a.root = tree_build(0, n, &next, w->seed);
	/* Sorted queries, half of them hits: neighbouring work items walk
	 * neighbouring paths. */
	for (size_t i = 0; i < nq; i++)
		q[i] = wl_rand(w->seed, 23, i) % (2 * n + 1);
	qsort(q, nq, 8, cmp_u64);
	a.q = q;
	uint64_t t0 = wl_now_ns();
	size_t hits = 0;
	for (size_t i = 0; i < nq; i++) {
		struct tnode *t = a.root;
		ref[i] = 0;
		while (t && t->key != q[i])
			t = q[i] < t->key ? t->l : t->r;
		if (t)
			ref[i] = t->val, hits++;
	}
	o->cpu_ns = wl_now_ns() - t0;
	if (register_nodes(w, o, sizeof(struct tnode)))
		goto out;

	wl_phase_begin(w);
	wl_launch(w, o, k_tree, (nq + TREE_ITEM - 1) / TREE_ITEM, &a);
	wl_phase_end(w, o);
	for (size_t i = 0; i < nq; i++)
		o->bad += a.res[i] != ref[i];
	snprintf(o->note, sizeof(o->note), "%zu nodes, %zu lookups (%zu hits), span %zu KiB", n,
		 nq, hits, w->reg_len >> 10);
out:
	free(ref);
}
