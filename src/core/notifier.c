/* SPDX-License-Identifier: MIT */
/*
 * notifier.c - interval notifiers: who is told, before a change of the CPU
 * page table becomes visible, that a range is about to change.
 *
 * Locks: ctx->notifier_lock (rwlock): read while invalidating (callbacks run
 * under it), write to insert or remove a notifier.  n->inv_lock (mutex)
 * serialises the callbacks of one notifier.  Rank: below the page locks
 * (invalidations run with the pages of the change locked), above the leaf
 * locks.  Under them the callbacks may sleep until their device has fenced;
 * they must not call into uhmm (mirror.h).
 *
 * The sequence number, per notifier:
 *
 *   filler (device fault path)          invalidation (uhmm)
 *   --------------------------          -------------------
 *   seq = read_begin(n)  (even)
 *   range_fault: read page states
 *                                       n->seq++          (odd)
 *                                       callback: lock(pt_lock)
 *   lock(pt_lock)  ...waits...            remove entries, fence
 *                                       unlock(pt_lock)
 *                                       n->seq++          (even)
 *   read_retry(n, seq): true -> redo    ...the change happens
 *
 * If the filler takes pt_lock first, it installs its entries and the
 * callback then removes them; if the callback runs first, the filler sees
 * a different seq and retries.  read_begin never returns an odd value: it
 * sleeps on the word until the running invalidation ends.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "core/internal.h"
#include "util/futex.h"

struct uhmm_notifier {
	struct uhmm_ctx *ctx;
	uintptr_t start, end;
	uhmm_invalidate_fn fn;
	void *priv;
	_Atomic uint32_t seq; /* odd while an invalidation is in progress */
	/* Threads asleep (or about to sleep) on seq: an invalidation's end
	 * makes the futex call only when there are any.  A migration ends
	 * one invalidation per batch, and a wake-up nobody waits for was a
	 * system call per notifier and per batch (0.3 us each here). */
	_Atomic uint32_t waiters;
	unsigned active;      /* invalidations in progress (under inv_lock) */
	pthread_mutex_t inv_lock;
	struct uhmm_notifier *next;
};

UHMM_API int uhmm_notifier_insert(uhmm_ctx *ctx, uintptr_t start, size_t len,
				  uhmm_invalidate_fn fn, void *priv,
				  struct uhmm_notifier **out)
{
	if (!fn || !out || !len || ((start | len) & (PAGE_SIZE - 1)) ||
	    start + len < start)
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	struct uhmm_notifier *n = uhmm__umem_calloc(1, sizeof(*n));
	if (!n) {
		err = -ENOMEM;
		goto out;
	}
	n->ctx = ctx;
	n->start = start;
	n->end = start + len;
	n->fn = fn;
	n->priv = priv;
	pthread_mutex_init(&n->inv_lock, NULL);
	err = uhmm__handle_add(n, UHMM__H_NOTIFIER);
	if (err) {
		pthread_mutex_destroy(&n->inv_lock);
		uhmm__umem_free(n);
		goto out;
	}
	pthread_rwlock_wrlock(&ctx->notifier_lock);
	n->next = ctx->notifiers;
	ctx->notifiers = n;
	atomic_fetch_add(&ctx->nnotifiers, 1);
	pthread_rwlock_unlock(&ctx->notifier_lock);
	*out = n;
out:
	uhmm__ctx_exit(ctx);
	return err;
}

static void notifier_free(struct uhmm_notifier *n)
{
	uhmm__handle_del(n);
	pthread_mutex_destroy(&n->inv_lock);
	uhmm__umem_free(n);
}

UHMM_API int uhmm_notifier_remove(struct uhmm_notifier *n)
{
	if (!uhmm__handle_is(n, UHMM__H_NOTIFIER))
		return -EBADF;
	struct uhmm_ctx *ctx = n->ctx;
	/* Taking the lock for writing waits for running callbacks. */
	pthread_rwlock_wrlock(&ctx->notifier_lock);
	struct uhmm_notifier **pp = &ctx->notifiers;
	while (*pp && *pp != n)
		pp = &(*pp)->next;
	if (*pp) {
		*pp = n->next;
		atomic_fetch_sub(&ctx->nnotifiers, 1);
	}
	pthread_rwlock_unlock(&ctx->notifier_lock);
	notifier_free(n);
	return 0;
}

bool uhmm__notifier_of(struct uhmm_notifier *n, struct uhmm_ctx *ctx)
{
	return uhmm__handle_is(n, UHMM__H_NOTIFIER) && n->ctx == ctx;
}

/*
 * Sleep on n->seq while it is s.  Against invalidate_end (Dekker): the
 * waiter counts itself, then looks at seq again (the futex call compares
 * it too); the ender bumps seq, then looks at the count (both seq_cst).
 * One of the two sees the other's store, so no wake-up is lost.
 */
static void seq_wait(struct uhmm_notifier *n, uint32_t s, uint64_t rel_ns)
{
	atomic_fetch_add_explicit(&n->waiters, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&n->seq, memory_order_seq_cst) == s) {
		if (rel_ns)
			uhmm_futex_wait_ns(&n->seq, s, rel_ns);
		else
			uhmm_futex_wait(&n->seq, s);
	}
	atomic_fetch_sub_explicit(&n->waiters, 1, memory_order_relaxed);
}

UHMM_API uint32_t uhmm_notifier_read_begin(struct uhmm_notifier *n)
{
	for (;;) {
		uint32_t s = atomic_load_explicit(&n->seq, memory_order_acquire);
		if (!(s & 1))
			return s;
		seq_wait(n, s, 0);
	}
}

/* read_begin that gives up at deadline (monotonic ns): false then. */
bool uhmm__notifier_read_begin_until(struct uhmm_notifier *n, uint64_t deadline,
				     uint32_t *seq)
{
	for (;;) {
		uint32_t s = atomic_load_explicit(&n->seq, memory_order_acquire);
		if (!(s & 1)) {
			*seq = s;
			return true;
		}
		uint64_t now = uhmm__now_ns();
		if (now >= deadline)
			return false;
		seq_wait(n, s, deadline - now);
	}
}

UHMM_API bool uhmm_notifier_read_retry(struct uhmm_notifier *n, uint32_t seq)
{
	return atomic_load_explicit(&n->seq, memory_order_acquire) != seq;
}

/*
 * Start an invalidation: every overlapping notifier's sequence goes odd
 * (if it was not already: invalidations may overlap) and its callback runs.
 * The sequence stays odd until uhmm__invalidate_end(): read_begin waits and
 * read_retry says "stale" for the whole change, not just for the callback.
 * (The kernel's invalidate_range_start/end.)  A range fault that ran after
 * the callback but before the change was published would otherwise read a
 * state that no later invalidation corrects.
 */
bool uhmm__invalidate_start(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
			    enum uhmm_inv_reason reason, struct uhmm_device *dev,
			    uintptr_t new_start)
{
	if (!atomic_load_explicit(&ctx->nnotifiers, memory_order_acquire))
		return false; /* nobody listens: nothing to end either */
	STAT_INC(ctx, invalidations);
	uhmm__trace_inval(ctx, start, end, reason);
	pthread_rwlock_rdlock(&ctx->notifier_lock);
	for (struct uhmm_notifier *n = ctx->notifiers; n; n = n->next) {
		if (n->end <= start || n->start >= end)
			continue;
		uintptr_t s = start > n->start ? start : n->start;
		struct uhmm_inv_event ev = {
			.start = s,
			.end = end < n->end ? end : n->end,
			.reason = reason,
			.device = dev,
			.new_start = new_start + (s - start),
		};
		pthread_mutex_lock(&n->inv_lock);
		/* Odd before the callback: a filler that has not yet checked
		 * read_retry under its lock will see the change. */
		if (n->active++ == 0)
			atomic_fetch_add_explicit(&n->seq, 1, memory_order_seq_cst);
		n->fn(n, &ev, n->priv);
		pthread_mutex_unlock(&n->inv_lock);
	}
	/* The read side stays held until the end: a notifier cannot be
	 * removed while its sequence is odd. */
	return true;
}

void uhmm__invalidate_end(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
			  bool started)
{
	if (!started)
		return;
	for (struct uhmm_notifier *n = ctx->notifiers; n; n = n->next) {
		if (n->end <= start || n->start >= end)
			continue;
		pthread_mutex_lock(&n->inv_lock);
		bool last = --n->active == 0;
		if (last)
			atomic_fetch_add_explicit(&n->seq, 1, memory_order_seq_cst);
		pthread_mutex_unlock(&n->inv_lock);
		if (last && atomic_load_explicit(&n->waiters, memory_order_seq_cst))
			uhmm_futex_wake_all(&n->seq);
	}
	pthread_rwlock_unlock(&ctx->notifier_lock);
}

void uhmm__invalidate(struct uhmm_ctx *ctx, uintptr_t start, uintptr_t end,
		      enum uhmm_inv_reason reason, struct uhmm_device *dev,
		      uintptr_t new_start)
{
	bool started = uhmm__invalidate_start(ctx, start, end, reason, dev, new_start);
	uhmm__invalidate_end(ctx, start, end, started);
}

void uhmm__notifiers_free_all(struct uhmm_ctx *ctx)
{
	pthread_rwlock_wrlock(&ctx->notifier_lock);
	struct uhmm_notifier *n = ctx->notifiers;
	ctx->notifiers = NULL;
	atomic_store(&ctx->nnotifiers, 0);
	pthread_rwlock_unlock(&ctx->notifier_lock);
	while (n) {
		struct uhmm_notifier *next = n->next;
		notifier_free(n);
		n = next;
	}
}

/*
 * A change of the CPU mapping that the caller makes itself (the dmirror
 * preload's munmap, mremap, mmap(MAP_FIXED), madvise): the notifiers over
 * [start, start + len) are told before it, and their sequence stays odd
 * until it is over, as for uhmm_mprotect().  For memory uhmm manages it
 * hears of the change a second time through the userfaultfd's event; that
 * second invalidation only costs a fault round.
 */
UHMM_API int uhmm_change_mapping(uhmm_ctx *ctx, uintptr_t start, size_t len,
				 enum uhmm_inv_reason reason, uintptr_t new_start,
				 uhmm_change_fn fn, void *arg)
{
	if (!fn || !len || ((start | len) & (PAGE_SIZE - 1)) || start + len < start ||
	    (new_start & (PAGE_SIZE - 1)))
		return -EINVAL;
	if (reason != UHMM_INV_UNMAP && reason != UHMM_INV_ZAP && reason != UHMM_INV_REMAP &&
	    reason != UHMM_INV_PROTECTION)
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	bool inv = uhmm__invalidate_start(ctx, start, start + len, reason, NULL,
					  reason == UHMM_INV_REMAP ? new_start : 0);
	int r = fn(arg);
	uhmm__invalidate_end(ctx, start, start + len, inv);
	uhmm__ctx_exit(ctx);
	return r;
}
