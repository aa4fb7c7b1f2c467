/* SPDX-License-Identifier: MIT */
/*
 * fork.c - fork() while pages live on devices.
 *
 * A fork child must see the parent's data, device-resident pages included,
 * and the two must not see each other's later writes.  The child gets no
 * fault service (the userfaultfd registration is not inherited without
 * UFFD_FEATURE_EVENT_FORK, and the service thread does not exist in the
 * child), so the data must be in its page tables when fork copies them:
 * the prepare handler brings every device-private page of every live
 * context home (coherent pages are in the page table already: fork copies
 * them as any anonymous page)
 * and holds each context's fork_lock for writing until fork returns, so no
 * migration toward a device can slip in between.  Copy-on-write then keeps
 * the two processes apart as for any anonymous memory.
 *
 * The price is the copy back of everything on devices at each fork();
 * posix_spawn() and vfork() do not run these handlers and cost nothing.
 *
 * Which contexts: every live context of this process, however many,
 * linked through ctx->fork_next by uhmm__live_contexts_hold (ctx.c) under
 * the registry's lock: no table to overflow, no allocation to fail (a
 * prepare handler cannot make fork() fail, so anything it could not hold
 * would be a context whose device pages the child silently reads as
 * zeros).  Each held context is entered, as a call is: a concurrent
 * uhmm_ctx_destroy waits until fork has returned instead of freeing it
 * under the handler.
 *
 * Locks: fork_mutex (outermost of all, held from prepare to parent/child),
 * then each context's fork_lock for writing.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "core/internal.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t fork_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct uhmm_ctx *held; /* through ctx->fork_next, under fork_mutex */

static void prepare(void)
{
	pthread_mutex_lock(&fork_mutex);
	held = uhmm__live_contexts_hold();
	for (struct uhmm_ctx *c = held; c; c = c->fork_next) {
		pthread_rwlock_wrlock(&c->fork_lock);
		uhmm__events_wait(c);
		/* Coherent pages stay in place: fork copies them as
		 * ordinary anonymous memory (copy-on-write), as the kernel
		 * does MEMORY_DEVICE_COHERENT pages. */
		(void)uhmm__evacuate(c, DEV_PRIVATE_ONLY);
	}
}

static void release(void)
{
	struct uhmm_ctx *c = held;
	held = NULL;
	while (c) {
		struct uhmm_ctx *next = c->fork_next;
		pthread_rwlock_unlock(&c->fork_lock);
		uhmm__ctx_exit(c); /* (in the child: its copy of the count) */
		c = next;
	}
	pthread_mutex_unlock(&fork_mutex);
}

static void child(void)
{
	release();
	uhmm__sigbus_atfork_child();
}

static void install(void)
{
	pthread_atfork(prepare, release, child);
}

void uhmm__fork_init(void)
{
	pthread_once(&once, install);
}
