/* SPDX-License-Identifier: MIT */
/* Thin futex wrappers (private futexes: the words never leave the process). */
#ifndef UHMM_FUTEX_H
#define UHMM_FUTEX_H

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Sleep while *word == val.  Spurious wake-ups happen: callers loop. */
static inline void uhmm_futex_wait(void *word, uint32_t val)
{
	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

/* As above, for at most rel_ns nanoseconds. */
static inline void uhmm_futex_wait_ns(void *word, uint32_t val, uint64_t rel_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(rel_ns / 1000000000ull),
			       .tv_nsec = (long)(rel_ns % 1000000000ull) };
	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
}

static inline void uhmm_futex_wake_all(void *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

#endif
