/* SPDX-License-Identifier: MIT */
/*
 * mru.c - an example eviction policy (uhmm/policy.h): most recently used
 * first.  For cyclic scans over more than device memory: under LRU every
 * block of such a scan is evicted just before the scan comes back to it (a
 * fault on every block, every pass); evicting the block just used keeps
 * the rest resident for the next pass, so only part of each pass faults.
 * Bad for anything with locality in time (a block used now is likely used
 * again soon: MRU throws exactly that one out).
 *
 * Build: cc -shared -fPIC -I include -o mru.so examples/policies/mru.c
 * Use:   uhmm-replay --policy ./mru.so trace.bin
 * Stateless: safe from any number of threads.
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include <uhmm/policy.h>

/* (qsort_r: the candidates are the comparison's context, no shared state.) */
static int cmp(const void *x, const void *y, void *arg)
{
	const struct uhmm_pol_block *cand = arg;
	const struct uhmm_pol_block *a = &cand[*(const uint32_t *)x];
	const struct uhmm_pol_block *b = &cand[*(const uint32_t *)y];
	if (a->last_use != b->last_use)
		return a->last_use > b->last_use ? -1 : 1;
	return a->addr < b->addr ? -1 : a->addr > b->addr;
}

static int mru_evict_order(void *st, uhmm_loc dev, uint64_t need_bytes,
			   const struct uhmm_pol_block *c, size_t n, uint32_t *order)
{
	(void)st;
	(void)dev;
	(void)need_bytes;
	for (size_t i = 0; i < n; i++)
		order[i] = (uint32_t)i;
	if (n > 1)
		qsort_r(order, n, sizeof(*order), cmp, (void *)c);
	return 0;
}

__attribute__((visibility("default"))) const struct uhmm_policy_ops uhmm_policy = {
	.version = UHMM_POLICY_VERSION,
	.size = sizeof(struct uhmm_policy_ops),
	.name = "mru.so",
	.evict_order = mru_evict_order,
};
