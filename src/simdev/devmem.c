/* SPDX-License-Identifier: MIT */
/*
 * devmem.c - simdev's device memory: a pool of 2 MiB chunks and an
 * allocator of 4 KiB (order 0) and 2 MiB (order 9) device pages.
 *
 * Locks: struct devmem.lock guards the chunk states, the free stack, the
 * partial list and free_pages.  Nothing blocks or allocates under it; the
 * longest step is a 512-bit bitmap scan of one chunk.  Functions named
 * *_locked expect the caller to hold it.
 *
 * Chunk states:
 *   FREE   on the free stack; used == 0, bitmap clear
 *   HUGE   one 2 MiB page
 *   SPLIT  512 4 KiB pages; bit i set = frame i of the chunk allocated;
 *          1 <= used <= 512, and on the partial list iff used < 512
 * 4 KiB pages come from partial chunks first, so the pool fragments as
 * little as it can; a free chunk is split only when no partial one is left,
 * and a split chunk whose last page is freed becomes FREE again.
 */
#define _GNU_SOURCE
#include "simdev/simdev_internal.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>

#define DEVMEM_NIL UINT32_MAX
#define MAP_WORDS (SIMDEV_CHUNK_PAGES / 64)

enum chunk_state { CHUNK_FREE, CHUNK_HUGE, CHUNK_SPLIT };

struct devmem_chunk {
	uint64_t map[MAP_WORDS];   /* SPLIT: allocated frames */
	uint16_t used;             /* SPLIT: popcount of map */
	uint8_t state;             /* enum chunk_state */
	bool on_partial;
	uint32_t prev, next;       /* partial list links */
};

int uhmm__devmem_init(struct devmem *dm, uint64_t bytes)
{
	memset(dm, 0, sizeof(*dm));
	if (bytes == 0 || bytes % UHMM_HUGE_SIZE != 0)
		return -EINVAL;
	if (bytes / UHMM_HUGE_SIZE >= DEVMEM_NIL || bytes > SIZE_MAX - UHMM_HUGE_SIZE)
		return -ENOMEM;

	uint32_t nchunks = (uint32_t)(bytes / UHMM_HUGE_SIZE);
	dm->chunks = uhmm__umem_calloc(nchunks, sizeof(*dm->chunks));
	dm->free_stack = uhmm__umem_calloc(nchunks, sizeof(*dm->free_stack));
	dm->tenant = uhmm__umem_calloc(nchunks, sizeof(*dm->tenant));
	if (!dm->chunks || !dm->free_stack || !dm->tenant)
		goto nomem;

	/* 2 MiB aligned, in uhmm's own address space (util/umem.h). */
	void *p = uhmm__umem_map((size_t)bytes, UHMM_HUGE_SIZE, UMEM_NORESERVE);
	if (!p)
		goto nomem;
	uintptr_t aligned = (uintptr_t)p;
	/*
	 * Small pages keep the footprint proportional to what is touched: a
	 * split chunk with one 4 KiB page in use should not cost 2 MiB.
	 * Advisory only.
	 */
	(void)madvise((void *)aligned, bytes, MADV_NOHUGEPAGE);

	dm->base = (unsigned char *)aligned;
	dm->bytes = bytes;
	dm->nchunks = nchunks;
	dm->partial = DEVMEM_NIL;
	/* Pushed in reverse so that the first allocations get low frames. */
	for (uint32_t i = 0; i < nchunks; i++) {
		dm->chunks[i].prev = dm->chunks[i].next = DEVMEM_NIL;
		dm->free_stack[i] = nchunks - 1 - i;
	}
	dm->nfree = nchunks;
	dm->free_pages = bytes / UHMM_PAGE_SIZE;
	pthread_mutex_init(&dm->lock, NULL);
	return 0;

nomem:
	uhmm__umem_free(dm->chunks);
	uhmm__umem_free(dm->free_stack);
	uhmm__umem_free(dm->tenant);
	dm->chunks = NULL;
	dm->free_stack = NULL;
	dm->tenant = NULL;
	return -ENOMEM;
}

void uhmm__devmem_fini(struct devmem *dm)
{
	if (!dm->base)
		return;
	uhmm__umem_unmap(dm->base, dm->bytes);
	pthread_mutex_destroy(&dm->lock);
	uhmm__umem_free(dm->chunks);
	uhmm__umem_free(dm->free_stack);
	uhmm__umem_free(dm->tenant);
	memset(dm, 0, sizeof(*dm));
}

/* ---- partial list ------------------------------------------------------- */

static void partial_add_locked(struct devmem *dm, uint32_t ci)
{
	struct devmem_chunk *c = &dm->chunks[ci];
	c->prev = DEVMEM_NIL;
	c->next = dm->partial;
	if (dm->partial != DEVMEM_NIL)
		dm->chunks[dm->partial].prev = ci;
	dm->partial = ci;
	c->on_partial = true;
}

static void partial_del_locked(struct devmem *dm, uint32_t ci)
{
	struct devmem_chunk *c = &dm->chunks[ci];
	if (c->prev != DEVMEM_NIL)
		dm->chunks[c->prev].next = c->next;
	else
		dm->partial = c->next;
	if (c->next != DEVMEM_NIL)
		dm->chunks[c->next].prev = c->prev;
	c->prev = c->next = DEVMEM_NIL;
	c->on_partial = false;
}

/* ---- order 0 ------------------------------------------------------------ */

/*
 * Takes up to @want free frames from split chunk @ci (on the partial list)
 * into @out; drops the chunk from the partial list when it fills up.
 */
static size_t chunk_take_locked(struct devmem *dm, uint32_t ci, size_t want,
				uint64_t *out)
{
	struct devmem_chunk *c = &dm->chunks[ci];
	size_t got = 0;

	for (unsigned w = 0; w < MAP_WORDS && got < want; w++) {
		uint64_t freebits = ~c->map[w];
		while (freebits && got < want) {
			unsigned b = (unsigned)__builtin_ctzll(freebits);
			freebits &= freebits - 1;
			c->map[w] |= 1ull << b;
			out[got++] = (uint64_t)ci * SIMDEV_CHUNK_PAGES + w * 64 + b;
		}
	}
	c->used = (uint16_t)(c->used + got);
	if (c->used == SIMDEV_CHUNK_PAGES)
		partial_del_locked(dm, ci);
	return got;
}

static size_t alloc_small_locked(struct devmem *dm, size_t n, uint64_t *dpfn)
{
	size_t got = 0;

	while (got < n) {
		if (dm->partial == DEVMEM_NIL) {
			if (dm->nfree == 0)
				break;
			uint32_t ci = dm->free_stack[--dm->nfree];
			struct devmem_chunk *c = &dm->chunks[ci];
			c->state = CHUNK_SPLIT;
			c->used = 0;
			memset(c->map, 0, sizeof(c->map));
			partial_add_locked(dm, ci);
		}
		got += chunk_take_locked(dm, dm->partial, n - got, dpfn + got);
	}
	dm->free_pages -= got;
	return got;
}

static void free_small_locked(struct devmem *dm, uint64_t dpfn)
{
	if (dpfn >= dm->bytes / UHMM_PAGE_SIZE) {
		simdev_bug("free of 4 KiB frame %llu outside the pool",
			   (unsigned long long)dpfn);
		return;
	}
	uint32_t ci = (uint32_t)(dpfn / SIMDEV_CHUNK_PAGES);
	unsigned idx = (unsigned)(dpfn % SIMDEV_CHUNK_PAGES);
	struct devmem_chunk *c = &dm->chunks[ci];
	uint64_t bit = 1ull << (idx % 64);

	if (c->state != CHUNK_SPLIT || !(c->map[idx / 64] & bit)) {
		simdev_bug("double free of 4 KiB frame %llu",
			   (unsigned long long)dpfn);
		return;
	}
	c->map[idx / 64] &= ~bit;
	if (c->used == SIMDEV_CHUNK_PAGES)
		partial_add_locked(dm, ci);
	c->used--;
	dm->free_pages++;
	if (c->used == 0) {
		/* The whole chunk is free again: usable for a 2 MiB page. */
		partial_del_locked(dm, ci);
		c->state = CHUNK_FREE;
		dm->free_stack[dm->nfree++] = ci;
	}
}

/* ---- order 9 ------------------------------------------------------------ */

static size_t alloc_huge_locked(struct devmem *dm, size_t n, uint64_t *dpfn)
{
	size_t got = 0;

	while (got < n && dm->nfree > 0) {
		uint32_t ci = dm->free_stack[--dm->nfree];
		dm->chunks[ci].state = CHUNK_HUGE;
		dpfn[got++] = (uint64_t)ci * SIMDEV_CHUNK_PAGES;
	}
	dm->free_pages -= got * SIMDEV_CHUNK_PAGES;
	return got;
}

static void free_huge_locked(struct devmem *dm, uint64_t dpfn)
{
	uint32_t ci = (uint32_t)(dpfn / SIMDEV_CHUNK_PAGES);

	if (dpfn % SIMDEV_CHUNK_PAGES != 0 || dpfn >= dm->bytes / UHMM_PAGE_SIZE ||
	    dm->chunks[ci].state != CHUNK_HUGE) {
		simdev_bug("free of 2 MiB page at frame %llu that is not allocated",
			   (unsigned long long)dpfn);
		return;
	}
	dm->chunks[ci].state = CHUNK_FREE;
	dm->free_stack[dm->nfree++] = ci;
	dm->free_pages += SIMDEV_CHUNK_PAGES;
}

/*
 * A 2 MiB page becomes 512 allocated 4 KiB pages in place (the core's
 * split of a device huge page: no data moves).  The chunk is full, so it
 * joins the partial list at its first free (free_small_locked), and
 * becomes FREE again at its last.
 */
static void split_huge_locked(struct devmem *dm, uint64_t dpfn)
{
	uint32_t ci = (uint32_t)(dpfn / SIMDEV_CHUNK_PAGES);

	if (dpfn % SIMDEV_CHUNK_PAGES != 0 || dpfn >= dm->bytes / UHMM_PAGE_SIZE ||
	    dm->chunks[ci].state != CHUNK_HUGE) {
		simdev_bug("split of 2 MiB page at frame %llu that is not allocated",
			   (unsigned long long)dpfn);
		return;
	}
	struct devmem_chunk *c = &dm->chunks[ci];
	c->state = CHUNK_SPLIT;
	memset(c->map, 0xff, sizeof(c->map));
	c->used = SIMDEV_CHUNK_PAGES;
	dm->splits++;
}

/* ---- entry points ------------------------------------------------------- */

void uhmm__devmem_split(struct devmem *dm, uint64_t dpfn)
{
	pthread_mutex_lock(&dm->lock);
	split_huge_locked(dm, dpfn);
	pthread_mutex_unlock(&dm->lock);
}

bool uhmm__devmem_is_huge(struct devmem *dm, uint64_t dpfn)
{
	bool huge = false;
	pthread_mutex_lock(&dm->lock);
	if (dpfn < dm->bytes / UHMM_PAGE_SIZE)
		huge = dm->chunks[dpfn / SIMDEV_CHUNK_PAGES].state == CHUNK_HUGE;
	pthread_mutex_unlock(&dm->lock);
	return huge;
}

long uhmm__devmem_alloc(struct devmem *dm, unsigned order, size_t n, uint64_t *dpfn)
{
	if (order != 0 && order != UHMM_HUGE_ORDER)
		return -EINVAL;
	if (n == 0)
		return 0;
	if (!dpfn)
		return -EINVAL;
	if (n > LONG_MAX)
		n = LONG_MAX;

	pthread_mutex_lock(&dm->lock);
	size_t got = order == 0 ? alloc_small_locked(dm, n, dpfn)
				: alloc_huge_locked(dm, n, dpfn);
	if (order)
		dm->huge_allocs += got;
	pthread_mutex_unlock(&dm->lock);
	return (long)got;
}

void uhmm__devmem_free(struct devmem *dm, unsigned order, size_t n,
		       const uint64_t *dpfn)
{
	if (n == 0)
		return;
	if ((order != 0 && order != UHMM_HUGE_ORDER) || !dpfn) {
		simdev_bug("free with order %u, dpfn %p", order, (const void *)dpfn);
		return;
	}

	pthread_mutex_lock(&dm->lock);
	for (size_t i = 0; i < n; i++) {
		if (order == 0)
			free_small_locked(dm, dpfn[i]);
		else
			free_huge_locked(dm, dpfn[i]);
	}
	pthread_mutex_unlock(&dm->lock);
}

void uhmm__devmem_info(struct devmem *dm, uint64_t *total, uint64_t *free_pages,
		       uint64_t *huge_free)
{
	pthread_mutex_lock(&dm->lock);
	*total = dm->bytes / UHMM_PAGE_SIZE;
	*free_pages = dm->free_pages;
	*huge_free = dm->nfree;
	pthread_mutex_unlock(&dm->lock);
}

void uhmm__devmem_huge_info(struct devmem *dm, uint64_t *in_use, uint64_t *allocs,
			    uint64_t *splits)
{
	uint64_t n = 0;
	pthread_mutex_lock(&dm->lock);
	for (uint32_t i = 0; i < dm->nchunks; i++)
		n += dm->chunks[i].state == CHUNK_HUGE;
	*in_use = n - dm->ntenant;
	*allocs = dm->huge_allocs;
	*splits = dm->splits;
	pthread_mutex_unlock(&dm->lock);
}

/* ---- another tenant ----------------------------------------------------- */

bool uhmm__devmem_tenant_take(struct devmem *dm, uint32_t ci)
{
	bool took = false;
	pthread_mutex_lock(&dm->lock);
	if (ci < dm->nchunks && dm->chunks[ci].state == CHUNK_FREE) {
		for (uint32_t k = 0; k < dm->nfree; k++) {
			if (dm->free_stack[k] != ci)
				continue;
			dm->free_stack[k] = dm->free_stack[--dm->nfree];
			dm->chunks[ci].state = CHUNK_HUGE;
			dm->free_pages -= SIMDEV_CHUNK_PAGES;
			dm->tenant[dm->ntenant++] = ci;
			took = true;
			break;
		}
	}
	pthread_mutex_unlock(&dm->lock);
	return took;
}

bool uhmm__devmem_tenant_give(struct devmem *dm)
{
	pthread_mutex_lock(&dm->lock);
	bool gave = dm->ntenant > 0;
	if (gave)
		free_huge_locked(dm, (uint64_t)dm->tenant[--dm->ntenant] * SIMDEV_CHUNK_PAGES);
	pthread_mutex_unlock(&dm->lock);
	return gave;
}

bool uhmm__devmem_tenant_has(struct devmem *dm, uint32_t ci)
{
	bool has = false;
	pthread_mutex_lock(&dm->lock);
	for (uint32_t k = 0; k < dm->ntenant && !has; k++)
		has = dm->tenant[k] == ci;
	pthread_mutex_unlock(&dm->lock);
	return has;
}
