/* SPDX-License-Identifier: MIT */
/*
 * Reproducer (found by uhmm-torture, seed 1): the fault-service thread
 * spins forever when UFFDIO_ZEROPAGE / UFFDIO_COPY return EAGAIN.
 *
 * The kernel returns EAGAIN from those ioctls while a non-cooperative event
 * (REMOVE from madvise(DONTNEED), REMAP from mremap, UNMAP from munmap) is
 * pending: ctx->mmap_changing stays raised until the event is *read*.  The
 * only reader of events is the service thread itself, which is busy
 * retrying the ioctl in uhmm__uffd_zeropage()/uhmm__uffd_copy()
 * (src/core/uffd.c: "if (err == EAGAIN) continue;").  The madvising thread
 * sleeps in userfaultfd_event_wait_completion (state D) and every CPU fault
 * of the process hangs.
 *
 * Thread A: discard range A, read every page (zero-fill faults).
 * Thread B: madvise(MADV_DONTNEED) range B over and over (REMOVE events).
 * Exits 0 if both make progress for 10 s, 1 (and prints) when they stop.
 *
 *   cc -O2 -pthread -I include tests/torture/repro/repro_eagain_livelock.c \
 *      build/libuhmm.a -o /tmp/repro && /tmp/repro
 */
#define _GNU_SOURCE
#include <uhmm/uhmm.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define LEN (8u << 20)
static char *a, *b;
static atomic_ulong na, nb;
static atomic_bool stop;

static void *faulter(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		madvise(a, LEN, MADV_DONTNEED);
		unsigned long sum = 0;
		for (size_t off = 0; off < LEN; off += 4096)
			sum += ((volatile char *)a)[off];
		if (sum)
			abort();
		atomic_fetch_add(&na, 1);
	}
	return NULL;
}

static void *discarder(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		b[0] = 1;
		madvise(b, 4096, MADV_DONTNEED);
		atomic_fetch_add(&nb, 1);
	}
	return NULL;
}

int main(void)
{
	uhmm_ctx *ctx;
	if (uhmm_ctx_create(NULL, &ctx) || uhmm_alloc(ctx, LEN, (void **)&a) ||
	    uhmm_alloc(ctx, 4096, (void **)&b))
		return 2;
	pthread_t ta, tb;
	pthread_create(&ta, NULL, faulter, NULL);
	pthread_create(&tb, NULL, discarder, NULL);
	unsigned long la = 0, lb = 0;
	for (int s = 0; s < 10; s++) {
		sleep(1);
		unsigned long xa = atomic_load(&na), xb = atomic_load(&nb);
		if (xa == la && xb == lb) {
			printf("LIVELOCK after %d s: faulter %lu rounds, discarder %lu "
			       "(service thread spinning on EAGAIN)\n", s + 1, xa, xb);
			fflush(stdout);
			_exit(1);
		}
		la = xa, lb = xb;
	}
	atomic_store(&stop, true);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	printf("no livelock in 10 s (faulter %lu rounds, discarder %lu)\n", la, lb);
	uhmm_ctx_destroy(ctx);
	return 0;
}
