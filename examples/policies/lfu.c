/* SPDX-License-Identifier: MIT */
/*
 * lfu.c - an example eviction policy (uhmm/policy.h): least frequently
 * used first.  A block's use count (migrations to and device faults on it
 * since it came to the device) says how hot it is; the coldest goes first,
 * the least recently used of equally cold ones first.  Good where a few
 * hot blocks are revisited between long runs of blocks used once (a table
 * looked up while a stream goes by): LRU lets the stream push the hot
 * blocks out, LFU keeps them.  Bad where the hot set moves: old counts keep
 * blocks that are no longer used (no ageing here).
 *
 * Build: cc -shared -fPIC -I include -o lfu.so examples/policies/lfu.c
 * Use:   uhmm-replay --policy ./lfu.so trace.bin
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
	if (a->uses != b->uses)
		return a->uses < b->uses ? -1 : 1;
	if (a->last_use != b->last_use)
		return a->last_use < b->last_use ? -1 : 1;
	return a->addr < b->addr ? -1 : a->addr > b->addr;
}

static int lfu_evict_order(void *st, uhmm_loc dev, uint64_t need_bytes,
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
	.name = "lfu.so",
	.evict_order = lfu_evict_order,
};
