/* SPDX-License-Identifier: MIT */
/*
 * log.h - the decision log (UHMM_LOG): which mode a context chose and why,
 * what the kernel offers, fallbacks, policy loads and ejections.  Off
 * unless the environment asks:
 *
 *   UHMM_LOG=LEVEL[:PATH]    LEVEL error, warn, info or debug (or 0-3);
 *                            PATH a file to append to (default stderr)
 *
 * One line a message: "uhmm[PID] LEVEL: text".  Formatted on the stack and
 * written with one write(2): no malloc, callable from any thread and under
 * any of uhmm's locks (not from a signal handler: vsnprintf is not
 * async-signal-safe).
 */
#ifndef UHMM_CORE_LOG_H
#define UHMM_CORE_LOG_H

enum uhmm_log_level { UHMM_LOG_ERROR, UHMM_LOG_WARN, UHMM_LOG_INFO, UHMM_LOG_DEBUG };

/* Whether messages of @level are written (the environment is read once). */
int uhmm__log_on(enum uhmm_log_level level);
void uhmm__log(enum uhmm_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define UHMM_LOG(level, ...)                         \
	do {                                         \
		if (uhmm__log_on(level))              \
			uhmm__log(level, __VA_ARGS__); \
	} while (0)

#endif
