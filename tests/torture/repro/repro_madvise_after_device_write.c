/* SPDX-License-Identifier: MIT */
/*
 * Open finding (docs/RELIABILITY.md, "Open"): a device kernel writes a byte
 * into 4 pages, the same thread discards them with madvise(MADV_DONTNEED)
 * and reads them: the read must give 0.  Two other threads migrate random
 * parts of the buffer between two simdevs and home, and take parts
 * exclusively.  About one round in 1 000 to 10 000 read the device's byte
 * back (with only the exclusive grabs running, too).
 *
 *   cc -O1 -Iinclude repro_madvise_after_device_write.c build/libuhmm.a -lpthread
 *   ./a.out [SECONDS [MASK]]     MASK bits: 1 to simdev0, 2 to simdev1,
 *                                4 home, 8 exclusive grabs (default 15)
 * Exit status 1 when a round read stale data.
 */
#define _GNU_SOURCE
#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PG 4096ul
#define NP 64

static uhmm_ctx *ctx;
static uhmm_device *d0, *d1;
static char *buf;
static atomic_int stop;
static int mask = 15;

static void store(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	uhmm_simdev_st8(wi, (char *)arg + idx * PG + 0x44, 0x9e);
}

static void *churn(void *a)
{
	unsigned s = (unsigned)(uintptr_t)a;
	while (!atomic_load(&stop)) {
		size_t o = (size_t)rand_r(&s) % NP, n = 1 + (size_t)rand_r(&s) % (NP - o);
		int k = rand_r(&s) % 4;
		if (!(mask >> k & 1))
			continue;
		if (k == 0)
			uhmm_migrate(ctx, buf + o * PG, n * PG, d0, 0);
		else if (k == 1)
			uhmm_migrate(ctx, buf + o * PG, n * PG, d1, 0);
		else if (k == 2)
			uhmm_migrate(ctx, buf + o * PG, n * PG, NULL, 0);
		else
			uhmm_make_exclusive(rand_r(&s) & 1 ? d0 : d1, buf + o * PG, n, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int secs = argc > 1 ? atoi(argv[1]) : 20;
	if (argc > 2)
		mask = atoi(argv[2]);
	struct uhmm_simdev_opts o;
	if (uhmm_ctx_create(NULL, &ctx))
		return 2;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 8 << 20;
	if (uhmm_simdev_create(ctx, &o, &d0) || uhmm_simdev_create(ctx, &o, &d1) ||
	    uhmm_alloc(ctx, NP * PG, (void **)&buf))
		return 2;
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1));
	unsigned s = 7;
	long rounds = 0, bad = 0;
	time_t end = time(NULL) + secs;
	while (time(NULL) < end) {
		size_t p0 = (size_t)rand_r(&s) % (NP - 4);
		uhmm_simdev_launch(rand_r(&s) & 1 ? d0 : d1, store, 4, buf + p0 * PG);
		if (madvise(buf + p0 * PG, 4 * PG, MADV_DONTNEED)) {
			perror("madvise");
			return 2;
		}
		for (size_t i = 0; i < 4; i++) {
			unsigned char v = (unsigned char)buf[(p0 + i) * PG + 0x44];
			if (v && ++bad < 5) {
				struct uhmm_page_info pi;
				int q = uhmm_page_query(ctx, buf + (p0 + i) * PG, &pi);
				printf("round %ld page %zu: %#x after madvise (query %d where %u seq %u)\n",
				       rounds, p0 + i, v, q, pi.where, pi.seq);
			}
		}
		rounds++;
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	printf("rounds %ld, stale reads %ld\n", rounds, bad);
	return bad != 0;
}
