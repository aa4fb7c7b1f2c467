/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "testlib.h"

#include <string.h>
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
