/* SPDX-License-Identifier: MIT */
/*
 * mmu.c - simdev's device MMU: the device page table (the mirror of the
 * CPU's), one TLB per compute unit, and the invalidate callback that keeps
 * both in step with the CPU (shootdown + fence).
 *
 * Locks, in rank order:
 *   1 sd_cu.lock          a unit's TLB, and the fills and flushes of its
 *                         lanes' TLBs.  A lane holds it from translation to
 *                         the end of an out-of-line access through a DEV or
 *                         EXCL entry
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
#include <linux/membarrier.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

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

/*
 * 2 MiB entries.  A node of level PT_HUGE_LEVEL (its slots span 2 MiB)
 * holds in a slot either a leaf or, tagged, a huge PTE: the PTE itself
 * (PTE_R, bit 0, is set in every PTE; node pointers are aligned), a DEV
 * entry of the block's first frame with PTE_HUGE.  A lookup gives the
 * page's own frame (first + index).  A partial change (a 4 KiB entry set
 * in the block, a clear of part of it) splits the entry into a leaf of
 * 512 entries first, and the TLBs' 2 MiB entry of the block is flushed
 * with the range (uhmm__tlb_shootdown flushes what overlaps).
 */
#define PT_HUGE_LEVEL (PT_LEVELS - 2)
#define HUGE_PAGES (1u << PT_BITS)

static bool pt_is_huge(const struct pt_node *ch)
{
	return (uintptr_t)ch & PTE_R;
}

static uint64_t pt_huge_pte(const struct pt_node *ch)
{
	return (uint64_t)(uintptr_t)ch;
}

/* The 4 KiB PTE of page @i of a 2 MiB entry @hpte. */
static uint64_t huge_page_pte(uint64_t hpte, unsigned i)
{
	return hpte + ((uint64_t)i << PTE_DPFN_SHIFT);
}

/* Replaces the 2 MiB entry in @slot (of a level PT_HUGE_LEVEL node) by a
 * leaf of its 512 pages (4 KiB entries).  -ENOMEM: nothing changed. */
static int pt_split_locked(struct sd_compute *c, struct pt_node **slot)
{
	uint64_t hpte = pt_huge_pte(*slot) & ~PTE_HUGE;
	struct pt_node *leaf = uhmm__umem_calloc(1, sizeof(*leaf));
	if (!leaf)
		return -ENOMEM;
	for (unsigned i = 0; i < HUGE_PAGES; i++)
		leaf->pte[i] = huge_page_pte(hpte, i);
	leaf->used = HUGE_PAGES;
	*slot = leaf;
	c->pt_huge--;
	atomic_fetch_add_explicit(&c->st.pt_huge_splits, 1, memory_order_relaxed);
	return 0;
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
		if (l == PT_HUGE_LEVEL && pt_is_huge(n))
			return huge_page_pte(pt_huge_pte(n), slot_of(va, PT_LEVELS - 1));
	}
	return n->pte[slot_of(va, PT_LEVELS - 1)];
}

int uhmm__pt_set_huge_locked(struct sd_compute *c, uintptr_t va, uint64_t pte)
{
	struct pt_node *n = c->pt_root;

	if (va < SD_VA_START || va + UHMM_HUGE_SIZE > SD_VA_END ||
	    (va & (UHMM_HUGE_SIZE - 1)) || !(pte & PTE_R) || !(pte & PTE_DEV) ||
	    !(pte & PTE_HUGE) || ((pte >> PTE_DPFN_SHIFT) % HUGE_PAGES))
		return -EINVAL;
	if (SD_FI(c->sd, UHMM_SIMDEV_FAIL_PT))
		return -ENOMEM;
	for (unsigned l = 0; l < PT_HUGE_LEVEL; l++) {
		struct pt_node **slot = &n->child[slot_of(va, l)];
		if (!*slot) {
			*slot = uhmm__umem_calloc(1, sizeof(**slot));
			if (!*slot)
				return -ENOMEM;
			n->used++;
		}
		n = *slot;
	}
	struct pt_node **slot = &n->child[slot_of(va, PT_HUGE_LEVEL)];
	if (!*slot)
		n->used++;
	else if (pt_is_huge(*slot))
		c->pt_huge--;
	else
		/* The block's 4 KiB entries: the same frames (a page keeps
		 * its frame while it stays on the device; a change of frame
		 * comes with an invalidation, which removed the entry), so
		 * what TLBs cache of them stays true. */
		uhmm__umem_free(*slot);
	*slot = (struct pt_node *)(uintptr_t)pte;
	c->pt_huge++;
	atomic_fetch_add_explicit(&c->st.pt_huge_maps, 1, memory_order_relaxed);
	return 0;
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
		} else if (l == PT_HUGE_LEVEL && pt_is_huge(*slot)) {
			/* One page of a 2 MiB entry changes: 512 entries. */
			int err = pt_split_locked(c, slot);
			if (err)
				return err;
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
static uint64_t pt_clear(struct sd_compute *c, struct pt_node *n, unsigned level,
			 uintptr_t base, uintptr_t start, uintptr_t end, bool keep_dev)
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
		if (pt_is_huge(ch)) {
			/* A 2 MiB entry (DEV: kept by our own migrations). */
			if (keep_dev)
				continue;
			if ((start > lo || end < lo + span) &&
			    pt_split_locked(c, &n->child[i]) == 0) {
				/* Part of it: the rest stays mapped. */
				ch = n->child[i];
			} else {
				/* All of it, or no memory to split: the
				 * whole block goes (it refaults), and the
				 * shootdown covers the block (TLBs may hold
				 * 4 KiB entries of it from before). */
				if (start > lo || end < lo + span)
					c->pt_widen = true;
				n->child[i] = NULL;
				n->used--;
				c->pt_huge--;
				removed += HUGE_PAGES;
				continue;
			}
		}
		removed += pt_clear(c, ch, level + 1, lo, start, end, keep_dev);
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
			if (n->child[i] && !pt_is_huge(n->child[i]))
				pt_free(n->child[i], level + 1);
	uhmm__umem_free(n);
}

/* ---- TLBs --------------------------------------------------------------- */

/*
 * Two levels, as a GPU has an L1 TLB per SM and a shared L2:
 *   lane TLB  per lane (struct uhmm__sd_lane, the head of the work item):
 *             DEV and EXCL translations only, read with no lock by the
 *             inline path of the accessors (simdev.h); filled by the lane
 *             itself and flushed by shootdowns, both under the unit lock.
 *   unit TLB  per compute unit, every kind of entry, under the unit lock:
 *             the out-of-line path's cache in front of the page table.
 * Both are 4-way set-associative with hashed sets (sd_tlb_set).
 * TLB subset invariant, extended: a valid lane entry was filled, under the
 * unit lock, from a unit-TLB or page-table entry valid at that time; a
 * shootdown clears the lane entries of its range under the same lock.
 */

/*
 * 2 MiB entries live in the same sets as 4 KiB ones, under a key of their
 * own (SD_HKEY: the block number with bit 62 set, never a page number of a
 * 47-bit address), hashed like a page number; the inline path of simdev.h
 * computes the same set.  A lookup tries the page's entry, then its
 * block's.
 */
static struct sd_tlb_entry *unit_set(struct sd_cu *cu, uint64_t vpn)
{
	return &cu->tlb[sd_tlb_set(vpn, cu->set_mask) * SD_TLB_WAYS];
}

static uint64_t tlb_lookup_locked(struct sd_cu *cu, uint64_t vpn)
{
	struct sd_tlb_entry *e = unit_set(cu, vpn);
	for (unsigned w = 0; w < cu->ways; w++)
		if (e[w].vpn1 == vpn + 1)
			return e[w].pte;
	uint64_t hk = SD_HKEY(vpn);
	e = unit_set(cu, hk);
	for (unsigned w = 0; w < cu->ways; w++)
		if (e[w].vpn1 == hk + 1)
			return huge_page_pte(e[w].pte, (unsigned)(vpn % HUGE_PAGES));
	return 0;
}

static void tlb_fill_locked(struct sd_cu *cu, uint64_t vpn, uint64_t pte)
{
	if (pte & PTE_HUGE) {
		/* One entry for the block: its first page's PTE. */
		pte -= (vpn % HUGE_PAGES) << PTE_DPFN_SHIFT;
		vpn = SD_HKEY(vpn);
	}
	struct sd_tlb_entry *e = unit_set(cu, vpn);
	unsigned w, empty = SD_TLB_WAYS;

	for (w = 0; w < cu->ways; w++) {
		if (e[w].vpn1 == vpn + 1)
			break;
		if (!e[w].vpn1 && empty == SD_TLB_WAYS)
			empty = w;
	}
	if (w == cu->ways)
		w = empty < SD_TLB_WAYS ? empty : cu->victim++ % cu->ways;
	e[w].vpn1 = vpn + 1;
	e[w].pte = pte;
}

/* Does the entry of key @k (a page number, or SD_HKEY of a block) cover
 * part of pages [first, last]? */
static bool key_overlaps(uint64_t k, uint64_t first, uint64_t last)
{
	if (!(k & SD_HKEY_BIT))
		return k >= first && k <= last;
	uint64_t lo = (k & ~SD_HKEY_BIT) * HUGE_PAGES;
	return lo <= last && lo + HUGE_PAGES - 1 >= first;
}

/* Drops the entries of pages [first, last] from @cu's TLB, and the 2 MiB
 * entries of the blocks they are in. */
static void tlb_flush_locked(struct sd_cu *cu, uint64_t first, uint64_t last)
{
	uint64_t n = (cu->set_mask + 1) * SD_TLB_WAYS;

	if (last - first < n) {
		for (uint64_t vpn = first; vpn <= last; vpn++) {
			struct sd_tlb_entry *e = unit_set(cu, vpn);
			for (unsigned w = 0; w < cu->ways; w++)
				if (e[w].vpn1 == vpn + 1)
					e[w].vpn1 = 0;
		}
		for (uint64_t hk = SD_HKEY(first); hk <= SD_HKEY(last); hk++) {
			struct sd_tlb_entry *e = unit_set(cu, hk);
			for (unsigned w = 0; w < cu->ways; w++)
				if (e[w].vpn1 == hk + 1)
					e[w].vpn1 = 0;
		}
		return;
	}
	for (uint64_t i = 0; i < n; i++) {
		struct sd_tlb_entry *e = &cu->tlb[i];
		if (e->vpn1 && key_overlaps(e->vpn1 - 1, first, last))
			e->vpn1 = 0;
	}
}

static struct uhmm__sd_tlbe *lane_set(struct uhmm_simdev_item *wi, uint64_t vpn)
{
	return &wi->fast.tlb[sd_tlb_set(vpn, wi->fast.set_mask) * SD_TLB_WAYS];
}

static uint64_t lane_tag_of(uint64_t vpn, uint64_t pte)
{
	uint64_t t = (vpn << PAGE_SHIFT) | UHMM__SD_TV;
	if (pte & PTE_HUGE) /* the block's address: one entry for 2 MiB */
		t = ((vpn & ~(uint64_t)(HUGE_PAGES - 1)) << PAGE_SHIFT) | UHMM__SD_TV |
		    UHMM__SD_TH;
	if (pte & PTE_W)
		t |= UHMM__SD_TW;
	if (pte & PTE_A)
		t |= UHMM__SD_TA;
	return t;
}

void uhmm__lane_tlb_fill_locked(struct uhmm_simdev_item *wi, uint64_t vpn,
				uint64_t pte, void *host)
{
	bool huge = pte & PTE_HUGE;
	/* A 2 MiB entry: the block's frames are contiguous, so are their
	 * addresses in the pool: one delta for the block. */
	struct uhmm__sd_tlbe *e = lane_set(wi, huge ? SD_HKEY(vpn) : vpn);
	uint64_t pg = vpn << PAGE_SHIFT;
	uint64_t tag = lane_tag_of(vpn, pte);
	uint64_t key = tag & (UHMM__SD_PGMASK | UHMM__SD_TH);
	unsigned w, empty = SD_TLB_WAYS;

	if (wi->c->lane_fence)
		return; /* no membarrier: no inline path (uhmm__tlb_shootdown) */
	if (huge)
		atomic_fetch_add_explicit(&wi->c->st.tlb_huge_fills, 1, memory_order_relaxed);
	for (w = 0; w < wi->tlb_ways; w++) {
		uint64_t t = atomic_load_explicit((_Atomic uint64_t *)&e[w].tag,
						  memory_order_relaxed);
		if ((t & (UHMM__SD_PGMASK | UHMM__SD_TH)) == key && t)
			break;
		if (!t && empty == SD_TLB_WAYS)
			empty = w;
	}
	if (w == wi->tlb_ways)
		w = empty < SD_TLB_WAYS ? empty : wi->tlb_victim++ % wi->tlb_ways;
	/* Only this lane reads its entries, and not now (it is here): the
	 * order of the two stores does not matter to it; a shootdown only
	 * ever clears tags, under the lock we hold. */
	e[w].delta = (intptr_t)((uintptr_t)host - (uintptr_t)pg);
	atomic_store_explicit((_Atomic uint64_t *)&e[w].tag, tag, memory_order_relaxed);
}

/* The key of a lane tag (a page number, or SD_HKEY of a block). */
static uint64_t lane_key(uint64_t tag)
{
	return (tag & UHMM__SD_TH) ? SD_HKEY(tag >> PAGE_SHIFT) : tag >> PAGE_SHIFT;
}

/* Drops the entry of @key (a page number, or SD_HKEY of a block) from
 * its set of lane @wi's TLB; true if it held one. */
static bool lane_drop_key(struct uhmm_simdev_item *wi, uint64_t key)
{
	struct uhmm__sd_tlbe *e = lane_set(wi, key);
	bool any = false;
	for (unsigned w = 0; w < wi->tlb_ways; w++) {
		_Atomic uint64_t *t = (_Atomic uint64_t *)&e[w].tag;
		uint64_t v = atomic_load_explicit(t, memory_order_relaxed);
		if (v && lane_key(v) == key) {
			atomic_store_explicit(t, 0, memory_order_relaxed);
			any = true;
		}
	}
	return any;
}

/* Drops pages [first, last] (and the 2 MiB entries of their blocks) from
 * lane @wi's TLB; true if it held any. */
static bool lane_flush_locked(struct uhmm_simdev_item *wi, uint64_t first,
			      uint64_t last)
{
	uint64_t n = (wi->fast.set_mask + 1) * SD_TLB_WAYS;
	bool any = false;

	if (last - first < n) {
		for (uint64_t vpn = first; vpn <= last; vpn++)
			any |= lane_drop_key(wi, vpn);
		for (uint64_t hk = SD_HKEY(first); hk <= SD_HKEY(last); hk++)
			any |= lane_drop_key(wi, hk);
		return any;
	}
	for (uint64_t i = 0; i < n; i++) {
		_Atomic uint64_t *t = (_Atomic uint64_t *)&wi->fast.tlb[i].tag;
		uint64_t v = atomic_load_explicit(t, memory_order_relaxed);
		if (v && key_overlaps(lane_key(v), first, last)) {
			atomic_store_explicit(t, 0, memory_order_relaxed);
			any = true;
		}
	}
	return any;
}

uint64_t uhmm__translate_locked(struct sd_compute *c, struct sd_cu *cu,
				uint64_t vpn, unsigned acc)
{
	uint64_t pte = tlb_lookup_locked(cu, vpn);

	if (pte_allows(pte, acc)) {
		cu->hits++;
		cu->huge_hits += (pte & PTE_HUGE) != 0;
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
	if (pte & PTE_HUGE)
		atomic_fetch_add_explicit(&c->st.tlb_huge_fills, 1, memory_order_relaxed);
	tlb_fill_locked(cu, vpn, pte);
	return pte_allows(pte, acc) ? pte : 0;
}

/* ---- invalidation: shootdown and fence ---------------------------------- */

/*
 * The membarrier(2) the shootdown issues after clearing lane entries:
 * registered once per process at the first compute start.  Where it is
 * refused (old kernel, seccomp), lanes fence themselves instead.
 */
static pthread_once_t mb_once = PTHREAD_ONCE_INIT;
static bool mb_ok;

static void mb_register(void)
{
	mb_ok = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
			0, 0) == 0;
}

/*
 * Waits until lane @wi is not inside the inline access it was in when the
 * caller cleared its entries: its sequence number is odd only across a
 * lookup and one access to memory that never faults, so this is short and
 * the lane makes progress (yield: it may be preempted on our core).
 */
static void lane_quiesce(struct uhmm_simdev_item *wi)
{
	_Atomic uint64_t *seq = (_Atomic uint64_t *)&wi->fast.seq;
	uint64_t s = atomic_load_explicit(seq, memory_order_acquire);

	if (!(s & 1))
		return;
	if (wi == uhmm__sd_cur) {
		/* This lane is inside an inline access and got here: its
		 * vector helper's buffer was managed memory whose fault is
		 * served on this thread (SIGBUS mode), against simdev.h's
		 * rule.  Waiting for ourselves would hang for ever. */
		fprintf(stderr, "uhmm simdev: a vector accessor's buffer is managed "
			"memory (simdev.h: it must be the kernel's own)\n");
		abort();
	}
	for (unsigned spin = 0; atomic_load_explicit(seq, memory_order_acquire) == s;
	     spin++) {
		if (spin >= 64)
			sched_yield();
#if defined(__x86_64__) || defined(__i386__)
		else
			__builtin_ia32_pause();
#endif
	}
}

void uhmm__tlb_shootdown(struct sd_compute *c, uint64_t first, uint64_t last)
{
	/* Lanes whose entries we cleared, by id (at most 16 x 64 lanes). */
	uint64_t hit[SD_MAX_LANES / 64] = { 0 };
	bool lanes_hit = false;

	for (unsigned i = 0; i < c->ncu; i++) {
		struct sd_cu *cu = &c->cus[i];
		pthread_mutex_lock(&cu->lock);
		tlb_flush_locked(cu, first, last);
		for (unsigned l = 0; l < cu->nlanes; l++) {
			struct uhmm_simdev_item *wi = &cu->lanes[l];
			if (lane_flush_locked(wi, first, last)) {
				hit[wi->id / 64] |= 1ull << (wi->id % 64);
				lanes_hit = true;
			}
		}
		pthread_mutex_unlock(&cu->lock);
	}
	if (!lanes_hit)
		return; /* no inline path can hold a translation of the range */
	/* The lanes' store of an odd seq against our clearing of their tags
	 * (the Dekker pattern, simdev.h): after this, a lane either misses
	 * or shows us it is inside.  The lanes' side has only a compiler
	 * barrier; membarrier() supplies the CPU's, on every thread of the
	 * process that is running (one that is not passed a full barrier
	 * when it was switched out).  Without membarrier (lane_fence) lanes
	 * fill nothing, so we never get here. */
	atomic_thread_fence(memory_order_seq_cst);
	(void)syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
	for (unsigned id = 0; id < c->nlanes; id++)
		if (hit[id / 64] & (1ull << (id % 64)))
			lane_quiesce(&c->lanes[id]);
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
	c->pt_widen = false;
	uint64_t removed = pt_clear(c, c->pt_root, 0, 0, start, end, own);
	if (c->pt_widen) {
		start &= ~(uintptr_t)(UHMM_HUGE_SIZE - 1);
		end = (end + UHMM_HUGE_SIZE - 1) & ~(uintptr_t)(UHMM_HUGE_SIZE - 1);
	}
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
	unsigned sets = tlb_entries < SD_TLB_WAYS ? 1 : tlb_entries / SD_TLB_WAYS;
	for (unsigned i = 0; i < c->ncu; i++) {
		c->cus[i].tlb = uhmm__umem_calloc((size_t)sets * SD_TLB_WAYS,
						  sizeof(*c->cus[i].tlb));
		if (!c->cus[i].tlb)
			goto nomem;
		c->cus[i].set_mask = sets - 1;
		c->cus[i].ways = tlb_entries < SD_TLB_WAYS ? tlb_entries : SD_TLB_WAYS;
	}
	pthread_once(&mb_once, mb_register);
	c->lane_fence = !mb_ok;
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

int uhmm__mmu_lanes_init(struct sd_compute *c, unsigned tlb_entries,
			 unsigned lanes_per_cu)
{
	unsigned sets = tlb_entries < SD_TLB_WAYS ? 1 : tlb_entries / SD_TLB_WAYS;

	for (unsigned i = 0; i < c->ncu; i++) {
		c->cus[i].lanes = &c->lanes[i * lanes_per_cu];
		c->cus[i].nlanes = lanes_per_cu;
	}
	for (unsigned i = 0; i < c->nlanes; i++) {
		struct uhmm_simdev_item *wi = &c->lanes[i];
		wi->fast.tlb = uhmm__umem_calloc((size_t)sets * SD_TLB_WAYS,
						 sizeof(*wi->fast.tlb));
		if (!wi->fast.tlb)
			return -ENOMEM;
		wi->fast.set_mask = sets - 1;
		wi->tlb_ways = tlb_entries < SD_TLB_WAYS ? tlb_entries : SD_TLB_WAYS;
	}
	return 0;
}

void uhmm__mmu_lanes_fini(struct sd_compute *c)
{
	if (!c->lanes)
		return;
	for (unsigned i = 0; i < c->nlanes; i++) {
		uhmm__umem_free(c->lanes[i].fast.tlb);
		c->lanes[i].fast.tlb = NULL;
	}
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
