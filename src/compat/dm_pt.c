/* SPDX-License-Identifier: MIT */
/*
 * dm_pt.c - the device page table of one dmirror handle (the kernel
 * driver's xarray "pt"): virtual page number -> range-fault entry.
 *
 * Three levels of 4096 slots over a 36-bit page number (48-bit addresses).
 * A leaf covers 16 MiB of address space and costs 32 KiB; the upper levels
 * are allocated as they are needed.  Clearing a range walks only the
 * populated nodes, so clearing the whole address space (a RELEASE event)
 * costs what is mapped, not what could be.
 *
 * Locks: none; every caller holds the handle's pt_lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compat/dmirror_internal.h"

#define LVL_BITS 12
#define LVL_SIZE ((size_t)1 << LVL_BITS)
#define LVL_MASK (LVL_SIZE - 1)

static inline size_t ix(uintptr_t vpn, int level)
{
	return (vpn >> (LVL_BITS * (2 - level))) & LVL_MASK;
}

int dm_pt_init(struct dm_pt *pt)
{
	pt->top = uhmm__umem_calloc(LVL_SIZE, sizeof(*pt->top));
	return pt->top ? 0 : -ENOMEM;
}

void dm_pt_destroy(struct dm_pt *pt)
{
	if (!pt->top)
		return;
	for (size_t i = 0; i < LVL_SIZE; i++) {
		if (!pt->top[i])
			continue;
		for (size_t j = 0; j < LVL_SIZE; j++)
			uhmm__umem_free(pt->top[i][j]);
		uhmm__umem_free(pt->top[i]);
	}
	uhmm__umem_free(pt->top);
	pt->top = NULL;
}

uint64_t dm_pt_get(const struct dm_pt *pt, uintptr_t va)
{
	uintptr_t vpn = va >> DM_PAGE_SHIFT;
	if (vpn >> (3 * LVL_BITS))
		return 0;
	uint64_t **mid = pt->top[ix(vpn, 0)];
	if (!mid)
		return 0;
	uint64_t *leaf = mid[ix(vpn, 1)];
	return leaf ? leaf[ix(vpn, 2)] : 0;
}

int dm_pt_set(struct dm_pt *pt, uintptr_t va, uint64_t e)
{
	uintptr_t vpn = va >> DM_PAGE_SHIFT;
	if (vpn >> (3 * LVL_BITS))
		return -EINVAL;
	uint64_t ***mid = &pt->top[ix(vpn, 0)];
	if (!*mid) {
		if (!e)
			return 0;
		*mid = uhmm__umem_calloc(LVL_SIZE, sizeof(**mid));
		if (!*mid)
			return -ENOMEM;
	}
	uint64_t **leaf = &(*mid)[ix(vpn, 1)];
	if (!*leaf) {
		if (!e)
			return 0;
		*leaf = uhmm__umem_calloc(LVL_SIZE, sizeof(**leaf));
		if (!*leaf)
			return -ENOMEM;
	}
	(*leaf)[ix(vpn, 2)] = e;
	return 0;
}

void dm_pt_clear(struct dm_pt *pt, uintptr_t start, uintptr_t end)
{
	uintptr_t v = start >> DM_PAGE_SHIFT, ve = end >> DM_PAGE_SHIFT;
	const uintptr_t limit = (uintptr_t)1 << (3 * LVL_BITS);
	if (ve > limit)
		ve = limit;
	while (v < ve) {
		uint64_t **mid = pt->top[ix(v, 0)];
		uintptr_t next_top = (v | ((uintptr_t)LVL_SIZE * LVL_SIZE - 1)) + 1;
		if (!mid) {
			v = next_top;
			continue;
		}
		uint64_t *leaf = mid[ix(v, 1)];
		uintptr_t next_leaf = (v | (LVL_SIZE - 1)) + 1;
		uintptr_t stop = next_leaf < ve ? next_leaf : ve;
		if (leaf)
			memset(&leaf[ix(v, 2)], 0, (stop - v) * sizeof(*leaf));
		v = stop;
	}
}
