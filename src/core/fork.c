/* SPDX-License-Identifier: MIT */
/*
 * fork.c - fork() while pages live on devices.
 *
 * A fork child must see the parent's data, device-resident pages included,
 * and the two must not see each other's later writes.  The child gets no
 * fault service (the userfaultfd registration is not inherited without
 * UFFD_FEATURE_EVENT_FORK, and the service thread does not exist in the
 * child), so the data must be in its page tables when fork copies them:
 * the prepare handler brings every device page of every live context home
 * and holds each context's fork_lock for writing until fork returns, so no
 * migration toward a device can slip in between.  Copy-on-write then keeps
 * the two processes apart as for any anonymous memory.
 *
 * The price is the copy back of everything on devices at each fork();
 * posix_spawn() and vfork() do not run these handlers and cost nothing.
 *
 * Locks: fork_mutex (outermost of all, held from prepare to parent/child),
 * then each context's fork_lock for writing.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "core/internal.h"

#define MAX_FORK_CTX 64

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t fork_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct uhmm_ctx *held[MAX_FORK_CTX];
static size_t nheld;

static void prepare(void)
{
	pthread_mutex_lock(&fork_mutex);
	nheld = uhmm__live_contexts(held, MAX_FORK_CTX);
	for (size_t i = 0; i < nheld; i++) {
		pthread_rwlock_wrlock(&held[i]->fork_lock);
		uhmm__events_wait(held[i]);
		(void)uhmm__evacuate(held[i], 0);
	}
}

static void release(void)
{
	for (size_t i = 0; i < nheld; i++)
		pthread_rwlock_unlock(&held[i]->fork_lock);
	nheld = 0;
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
