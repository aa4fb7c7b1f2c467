/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>
#include <time.h>

int uhmm_test_main(int argc, char **argv, const char *group,
		   const struct CMUnitTest *tests, size_t n)
{
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return _cmocka_run_group_tests(group, tests, n, NULL, NULL);
}

const char *uhmm_test_strerror(int err)
{
	return strerror(err < 0 ? -err : err);
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

void uhmm_test_fill(void *p, size_t len, uint64_t seed)
{
	uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		w[i] = mix(seed + i);
}

size_t uhmm_test_check(const void *p, size_t len, uint64_t seed)
{
	const uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != mix(seed + i))
			return i * 8;
	return (size_t)-1;
}

uint64_t uhmm_test_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

size_t uhmm_test_pages_on(uhmm_ctx *ctx, const void *p, size_t len, uhmm_device *dev)
{
	size_t n = 0;
	for (size_t off = 0; off < len; off += 4096) {
		struct uhmm_page_info pi;
		int err = uhmm_page_query(ctx, (const char *)p + off, &pi);
		if (err)
			fail_msg("uhmm_page_query(%p) = %d", (const void *)((const char *)p + off), err);
		if (dev ? (pi.where == UHMM_WHERE_DEVICE && pi.device == dev)
			: pi.where == UHMM_WHERE_CPU)
			n++;
	}
	return n;
}

void uhmm_test_nap(void)
{
	struct timespec ts = { 0, 1000000 };
	nanosleep(&ts, NULL);
}

uint64_t uhmm_test_dev_free(uhmm_device *dev)
{
	struct uhmm_simdev_meminfo mi;
	int err = uhmm_simdev_meminfo(dev, &mi);
	if (err)
		fail_msg("uhmm_simdev_meminfo = %d (%s)", err, uhmm_test_strerror(err));
	return mi.free_pages;
}

uint64_t uhmm_test_wait_dev_free(uhmm_device *dev, uint64_t want)
{
	uint64_t t0 = uhmm_test_now_ns(), f;
	while ((f = uhmm_test_dev_free(dev)) != want &&
	       uhmm_test_now_ns() - t0 < 2000000000ull)
		uhmm_test_nap();
	return f;
}

int uhmm_test_uffd_registered(const void *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0, res = -1;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		} else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			res = strstr(line, " um") != NULL;
			break;
		}
	}
	if (f)
		fclose(f);
	return res;
}

void uhmm_test_assert_data(const char *base, size_t off, size_t len, uint64_t seed)
{
	size_t bad = uhmm_test_check(base + off, len, seed + off / 8);
	if (bad != (size_t)-1)
		fail_msg("data wrong at offset %#zx", off + bad);
}

void uhmm_test_assert_zero(const volatile char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			fail_msg("byte %#zx is %#x, expected 0", i, (unsigned char)p[i]);
}

void *uhmm_test_herd_thread(void *arg)
{
	struct uhmm_test_herd *h = arg;
	for (int r = 0; r < h->rounds; r++) {
		pthread_barrier_wait(&h->start);
		for (size_t i = 0; i < h->npages; i++) {
			uint64_t v = *(volatile uint64_t *)(h->p + i * 4096);
			if (v != (uint64_t)r * h->npages + i)
				atomic_fetch_add(&h->bad, 1);
		}
		pthread_barrier_wait(&h->done);
	}
	return NULL;
}

bool uhmm_test_no_move(void)
{
	const char *e = getenv("UHMM_NO_MOVE");
	return e && *e == '1';
}
