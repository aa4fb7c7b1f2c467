/* SPDX-License-Identifier: MIT */
/* Shared helpers of uhmm's cmocka tests. */
#ifndef UHMM_TESTLIB_H
#define UHMM_TESTLIB_H

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

/*
 * main() of a test program: with an argument, run only the test of that
 * name (ctest runs every test in its own process this way); without, run
 * them all.
 */
int uhmm_test_main(int argc, char **argv, const char *group,
		   const struct CMUnitTest *tests, size_t n);
#define UHMM_TEST_MAIN(tests)                                                 \
	int main(int argc, char **argv)                                       \
	{                                                                     \
		return uhmm_test_main(argc, argv, __FILE__, tests,            \
				      sizeof(tests) / sizeof(tests[0]));      \
	}

/* Skip the current test, saying why (cmocka's skip() gives no reason). */
#define TEST_SKIP(...)                                                        \
	do {                                                                  \
		fprintf(stderr, "[  SKIP    ] %s: ", __func__);               \
		fprintf(stderr, __VA_ARGS__);                                 \
		fputc('\n', stderr);                                          \
		skip();                                                       \
	} while (0)

/* Is the no-move path forced for this run (UHMM_NO_MOVE=1: ctest's
 * "nomove" pass)?  Tests of the move path's own mechanics (pages leaving
 * the CPU page table before the copy, warm slots lingering) skip then. */
bool uhmm_test_no_move(void);
#define SKIP_IF_NO_MOVE()                                                     \
	do {                                                                  \
		if (uhmm_test_no_move())                                      \
			TEST_SKIP("the move path's own mechanics (UHMM_NO_MOVE=1)"); \
	} while (0)

/* Fail with both values printed when a negative-errno call fails. */
#define ASSERT_OK(expr)                                                       \
	do {                                                                  \
		long r_ = (long)(expr);                                       \
		if (r_ < 0)                                                   \
			fail_msg("%s = %ld (%s)", #expr, r_,                  \
				 uhmm_test_strerror((int)r_));                \
	} while (0)

const char *uhmm_test_strerror(int err);

/* Fill/check a buffer with a pattern derived from (seed, offset). */
void uhmm_test_fill(void *p, size_t len, uint64_t seed);
/* Returns the offset of the first mismatch, or (size_t)-1. */
size_t uhmm_test_check(const void *p, size_t len, uint64_t seed);

/* Pages of [p, p + len) that uhmm reports on @dev (NULL: in system
 * memory).  Fails the test if a page is not managed. */
struct uhmm_ctx;
struct uhmm_device;
size_t uhmm_test_pages_on(struct uhmm_ctx *ctx, const void *p, size_t len,
			  struct uhmm_device *dev);

/* Monotonic time in ns. */
uint64_t uhmm_test_now_ns(void);

/* Sleeps 1 ms (polling loops). */
void uhmm_test_nap(void);

/* Free 4 KiB pages of a simdev (uhmm_simdev_meminfo; asserts it works). */
uint64_t uhmm_test_dev_free(struct uhmm_device *dev);

/* Polls (up to 2 s) until the simdev has @want free pages (a device page is
 * freed by an event the service thread handles after the call that caused
 * it returned); returns the last value seen. */
uint64_t uhmm_test_wait_dev_free(struct uhmm_device *dev, uint64_t want);

/*
 * Hard point 1's herd: threads that, each round, wait at @start, read the
 * first word of each of @npages pages at @p (round r, page i holds
 * r * npages + i), count wrong values in @bad, and wait at @done; for
 * @rounds rounds.  The test writes the words and migrates between rounds.
 */
struct uhmm_test_herd {
	char *p;
	size_t npages;
	int rounds;
	pthread_barrier_t start, done;
	atomic_size_t bad;
};
void *uhmm_test_herd_thread(void *herd);

/* Fails the test unless [base + off, base + off + len) holds what
 * uhmm_test_fill(base, ., seed) wrote there (@off a multiple of 8). */
void uhmm_test_assert_data(const char *base, size_t off, size_t len, uint64_t seed);

/* Fails the test unless every byte of [p, p + len) reads 0 (each read is
 * made: it may fault the page in). */
void uhmm_test_assert_zero(const volatile char *p, size_t len);

/* Is the mapping at @p registered with a userfaultfd for missing pages
 * (the "um" flag of /proc/self/smaps)?  1 yes, 0 no, -1 no such mapping. */
int uhmm_test_uffd_registered(const void *p);

#endif
