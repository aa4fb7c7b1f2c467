/* SPDX-License-Identifier: MIT */
/*
 * mmu.c - simdev's device MMU: the device page table (the mirror of the
 * CPU's), one TLB per compute unit, and the invalidate callback that keeps
 * both in step with the CPU (shootdown + fence).
 *
 * Locks, in rank order:
 *   1 sd_cu.lock          a unit's TLB.  A lane holds it from translation to
 *                         the end of an access through a DEV or EXCL entry
 *                         (device memory, or a page held exclusively: memory
 *                         that never faults), never through a SYS entry (see
 *                         compute.c).  Under it a lane may take pt_lock;
 *                         nothing blocks under it otherwise.
 *   2 sd_compute.pt_lock  the radix tree.  Under it: walks, calloc and free
 *                         of nodes.  Never held while taking a unit lock.
 *
 * The page table is a radix tree of 4 levels of 9 bits over bits 12..47 of
 * the address (a node is 512 slots, 4 KiB; a leaf holds PTEs).  Each node
 * counts its non-empty slots; a node that empties is freed, so the table's
 * size follows what is mapped.  The root is never freed.
 *
 * Invariant (TLB subset): when no invalidation is running, every valid TLB
 * entry was filled from the page table and that page-table entry has not
 * been removed since.  Fills happen under the unit lock from a read of the
 * table made under that same hold; an invalidation removes entries first
 * and then flushes every unit under its lock.  Hence an invalidation that
 * removes nothing has nothing to flush and nothing to fence.
 */
#define _GNU_SOURCE
#include "simdev/simdev_internal.h"

#include <errno.h>
#include <string.h>

#define PT_BITS 9u
#define PT_FANOUT (1u << PT_BITS)
#define PT_LEVELS 4u
#define PAGE_SHIFT 12u

struct pt_node {
	unsigned used;  /* non-empty slots */
	union {
		struct pt_node *child[PT_FANOUT]; /* levels 0..2 */
		uint64_t pte[PT_FANOUT];          /* level 3 (leaf) */
	};
};

/* Bit position of the index at @level (0 = root). */
static unsigned level_shift(unsigned level)
{
	return PAGE_SHIFT + PT_BITS * (PT_LEVELS - 1 - level);
}

static unsigned slot_of(uintptr_t va, unsigned level)
{
	return (unsigned)(va >> level_shift(level)) & (PT_FANOUT - 1);
}

/* ---- page table --------------------------------------------------------- */

uint64_t uhmm__pt_lookup_locked(struct sd_compute *c, uintptr_t va)
{
	struct pt_node *n = c->pt_root;

	if (va < SD_VA_START || va >= SD_VA_END)
		return 0;
	for (unsigned l = 0; l < PT_LEVELS - 1; l++) {
		n = n->child[slot_of(va, l)];
		if (!n)
			return 0;
	}
	return n->pte[slot_of(va, PT_LEVELS - 1)];
}

int uhmm__pt_set_locked(struct sd_compute *c, uintptr_t va, uint64_t pte)
{
	struct pt_node *n = c->pt_root;

	if (va < SD_VA_START || va >= SD_VA_END || !pte)
		return -EINVAL;
	/* Injected (UHMM_SIMDEV_FAIL_PT): as if a node could not be
	 * allocated, before anything changed. */
	if (SD_FI(c->sd, UHMM_SIMDEV_FAIL_PT))
		return -ENOMEM;
	for (unsigned l = 0; l < PT_LEVELS - 1; l++) {
		struct pt_node **slot = &n->child[slot_of(va, l)];
		if (!*slot) {
			/* A new node is linked only once it is complete; a
			 * node left empty by a later failure is harmless (it
			 * is freed by the next removal over it). */
			*slot = uhmm__umem_calloc(1, sizeof(**slot));
			if (!*slot)
				return -ENOMEM;
			n->used++;
		}
		n = *slot;
	}
	uint64_t *e = &n->pte[slot_of(va, PT_LEVELS - 1)];
	if (!*e)
		n->used++;
	*e = pte;
	return 0;
}

/*
 * Clears the PTEs of [start, end) below @n (a node at @level whose first
 * slot maps @base) and frees the nodes that empty.  Returns the number of
 * PTEs removed.  Empty subtrees are skipped, so clearing the whole address
 * space costs what is mapped, not what is covered.
 */
static uint64_t pt_clear(struct pt_node *n, unsigned level, uintptr_t base,
			 uintptr_t start, uintptr_t end, bool keep_dev)
{
	unsigned shift = level_shift(level);
	uintptr_t span = (uintptr_t)1 << shift;
	uintptr_t first = start > base ? start : base;
	unsigned i = (unsigned)((first - base) >> shift);
	uint64_t removed = 0;

	for (; i < PT_FANOUT && n->used; i++) {
		uintptr_t lo = base + (uintptr_t)i * span;
		if (lo >= end)
			break;
		if (level == PT_LEVELS - 1) {
			if (n->pte[i] && !(keep_dev && (n->pte[i] & PTE_DEV))) {
				n->pte[i] = 0;
				n->used--;
				removed++;
			}
			continue;
		}
		struct pt_node *ch = n->child[i];
		if (!ch)
			continue;
		removed += pt_clear(ch, level + 1, lo, start, end, keep_dev);
		if (ch->used == 0) {
			uhmm__umem_free(ch);
			n->child[i] = NULL;
			n->used--;
		}
	}
	return removed;
}

static void pt_free(struct pt_node *n, unsigned level)
{
	if (level < PT_LEVELS - 1)
		for (unsigned i = 0; i < PT_FANOUT; i++)
			if (n->child[i])
				pt_free(n->child[i], level + 1);
	uhmm__umem_free(n);
}

/* ---- TLBs --------------------------------------------------------------- */

static uint64_t tlb_lookup_locked(struct sd_cu *cu, uint64_t vpn)
{
	struct sd_tlb_entry *e = &cu->tlb[vpn & cu->tlb_mask];
	return e->vpn1 == vpn + 1 ? e->pte : 0;
}

static void tlb_fill_locked(struct sd_cu *cu, uint64_t vpn, uint64_t pte)
{
	struct sd_tlb_entry *e = &cu->tlb[vpn & cu->tlb_mask];
	e->vpn1 = vpn + 1;
	e->pte = pte;
}

/* Drops the entries of pages [first, last] from @cu's TLB. */
static void tlb_flush_locked(struct sd_cu *cu, uint64_t first, uint64_t last)
{
	uint64_t n = cu->tlb_mask + 1;

	if (last - first < n) {
		for (uint64_t vpn = first; vpn <= last; vpn++) {
			struct sd_tlb_entry *e = &cu->tlb[vpn & cu->tlb_mask];
			if (e->vpn1 == vpn + 1)
				e->vpn1 = 0;
		}
		return;
	}
	for (uint64_t i = 0; i < n; i++) {
		struct sd_tlb_entry *e = &cu->tlb[i];
		if (e->vpn1 && e->vpn1 - 1 >= first && e->vpn1 - 1 <= last)
			e->vpn1 = 0;
	}
}

uint64_t uhmm__translate_locked(struct sd_compute *c, struct sd_cu *cu,
				uint64_t vpn, unsigned acc)
{
	uint64_t pte = tlb_lookup_locked(cu, vpn);

	if (pte_allows(pte, acc)) {
		cu->hits++;
		return pte;
	}
	/* A miss, or a hit without the rights (the table may have been
	 * upgraded since the fill): ask the table. */
	cu->misses++;
	pthread_mutex_lock(&c->pt_lock);
	pte = uhmm__pt_lookup_locked(c, (uintptr_t)vpn << PAGE_SHIFT);
	pthread_mutex_unlock(&c->pt_lock);
	if (!pte)
		return 0;
	tlb_fill_locked(cu, vpn, pte);
	return pte_allows(pte, acc) ? pte : 0;
}

/* ---- invalidation: shootdown and fence ---------------------------------- */

void uhmm__tlb_shootdown(struct sd_compute *c, uint64_t first, uint64_t last)
{
	for (unsigned i = 0; i < c->ncu; i++) {
		struct sd_cu *cu = &c->cus[i];
		pthread_mutex_lock(&cu->lock);
		tlb_flush_locked(cu, first, last);
		pthread_mutex_unlock(&cu->lock);
	}
}

/*
 * The notifier's callback (see mirror.h for the protocol).  Runs in the
 * thread making the change: an application thread, uhmm's fault-service
 * thread, or simdev's own fault-service thread (its uhmm_migrate() calls).
 *
 * 1. Under pt_lock, remove the entries of [start, end).  From here a lane
 *    that misses in its TLB finds nothing and raises a device fault, and a
 *    range fault that started before the change fails its read_retry check.
 * 2. Shootdown and fence: take each unit's lock in turn and flush the range
 *    from its TLB.  A lane holds its unit's lock from translation to the end
 *    of an access through a DEV or EXCL entry, so once we hold the lock no
 *    access through an old translation is in flight on that unit, and none
 *    can start.  pt_lock is released first (rank: unit lock before pt_lock).
 *
 * EXCL entries need exactly this: on REVOKE (the CPU touched the page), on
 * EXCLUSIVE (another device takes it), on MIGRATE of the page, uhmm reuses
 * or copies the memory behind the entry once we return, so every device
 * atomic on it must be over by then - and it is, since such accesses hold
 * the unit lock.  Every reason removes every entry of the range: nothing
 * here depends on the reason, so no reason can leave an EXCL entry behind.
 *
 * Why it cannot deadlock: a unit lock is held only for a translation and a
 * device-memory access (pool memory never faults), never across an access
 * to system memory, which may fault into uhmm's fault-service thread - the
 * thread that may be running this callback.  (An EXCL entry's memory is
 * uhmm's own, outside every managed range: it never faults.)  Accesses to
 * system pages through SYS entries need
 * no fence: they go through the CPU's MMU, so a late one sees the CPU's
 * current page table.
 *
 * Own migrations (MIGRATE with ev->device == this device) remove every entry
 * except DEV ones: the pages that move in had SYS or EXCL entries (which
 * go; the next device fault installs the new location from
 * uhmm_range_fault()), while a DEV entry names a page that is already in
 * this device's memory and stays in the same frame (a page leaves this
 * device only through an invalidation that is not ours).  Removing those
 * too would make every device fault on a block that is only partly mapped
 * (its migration moves nothing) wipe the block's mapping, and faults under
 * page-table pressure would never finish mapping it.
 */
void uhmm__mmu_invalidate(struct uhmm_notifier *n, const struct uhmm_inv_event *ev,
			  void *priv)
{
	struct sd_compute *c = priv;
	uintptr_t start = ev->start, end = ev->end;

	(void)n;
	atomic_fetch_add_explicit(&c->st.invalidations, 1, memory_order_relaxed);
	if (ev->reason == UHMM_INV_RELEASE) {
		start = SD_VA_START;
		end = SD_VA_END;
	}
	if (start < SD_VA_START)
		start = SD_VA_START;
	if (end > SD_VA_END)
		end = SD_VA_END;
	if (start >= end)
		return;

	bool own = ev->reason == UHMM_INV_MIGRATE && ev->device == c->dev;
	pthread_mutex_lock(&c->pt_lock);
	uint64_t removed = pt_clear(c->pt_root, 0, 0, start, end, own);
	pthread_mutex_unlock(&c->pt_lock);
	if (!removed)
		return; /* TLB subset invariant: no TLB holds the range */
	atomic_fetch_add_explicit(&c->st.shootdown_pages, removed,
				  memory_order_relaxed);

	uhmm__tlb_shootdown(c, start >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT);
}

/* ---- setup -------------------------------------------------------------- */

int uhmm__mmu_init(struct sd_compute *c, unsigned tlb_entries)
{
	c->pt_root = uhmm__umem_calloc(1, sizeof(*c->pt_root));
	c->cus = uhmm__umem_calloc(c->ncu, sizeof(*c->cus));
	if (!c->pt_root || !c->cus)
		goto nomem;
	for (unsigned i = 0; i < c->ncu; i++) {
		c->cus[i].tlb = uhmm__umem_calloc(tlb_entries, sizeof(*c->cus[i].tlb));
		if (!c->cus[i].tlb)
			goto nomem;
		c->cus[i].tlb_mask = tlb_entries - 1;
	}
	pthread_mutex_init(&c->pt_lock, NULL);
	for (unsigned i = 0; i < c->ncu; i++)
		pthread_mutex_init(&c->cus[i].lock, NULL);
	return 0;

nomem:
	if (c->cus)
		for (unsigned i = 0; i < c->ncu; i++)
			uhmm__umem_free(c->cus[i].tlb);
	uhmm__umem_free(c->cus);
	uhmm__umem_free(c->pt_root);
	c->cus = NULL;
	c->pt_root = NULL;
	return -ENOMEM;
}

void uhmm__mmu_fini(struct sd_compute *c)
{
	if (!c->pt_root)
		return;
	pt_free(c->pt_root, 0);
	c->pt_root = NULL;
	for (unsigned i = 0; i < c->ncu; i++) {
		pthread_mutex_destroy(&c->cus[i].lock);
		uhmm__umem_free(c->cus[i].tlb);
	}
	uhmm__umem_free(c->cus);
	c->cus = NULL;
	pthread_mutex_destroy(&c->pt_lock);
}
