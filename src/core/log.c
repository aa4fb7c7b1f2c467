/* SPDX-License-Identifier: MIT */
/*
 * log.c - the decision log (log.h).  The environment is read at the first
 * question; the file, if any, is opened then and kept (O_APPEND, so that
 * processes and threads sharing it interleave whole lines).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int level = -1; /* nothing */
static int fd = 2;

static const char *const names[] = { "error", "warn", "info", "debug" };

static void init(void)
{
	const char *e = getenv("UHMM_LOG");
	if (!e || !*e)
		return;
	char lv[16];
	size_t n = strcspn(e, ":");
	if (n >= sizeof(lv))
		n = sizeof(lv) - 1;
	memcpy(lv, e, n);
	lv[n] = 0;
	int l = -1;
	for (int i = 0; i < 4; i++)
		if (!strcmp(lv, names[i]) || (lv[0] == '0' + i && !lv[1]))
			l = i;
	if (l < 0) {
		static const char m[] = "uhmm: UHMM_LOG: unknown level (error, warn, info, debug, "
					"or 0-3, then :PATH): no log\n";
		(void)!write(2, m, sizeof(m) - 1);
		return;
	}
	if (e[n] == ':' && e[n + 1]) {
		int f = open(e + n + 1, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (f < 0) {
			char m[256];
			int k = snprintf(m, sizeof(m), "uhmm: UHMM_LOG: cannot open %s (%s): log on stderr\n",
					 e + n + 1, strerror(errno));
			(void)!write(2, m, k > 0 && (size_t)k < sizeof(m) ? (size_t)k : strlen(m));
		} else {
			fd = f;
		}
	}
	level = l;
}

int uhmm__log_on(enum uhmm_log_level l)
{
	pthread_once(&once, init);
	return (int)l <= level;
}

void uhmm__log(enum uhmm_log_level l, const char *fmt, ...)
{
	if (!uhmm__log_on(l))
		return;
	char buf[512];
	int k = snprintf(buf, sizeof(buf), "uhmm[%d] %s: ", (int)getpid(), names[l]);
	if (k < 0 || (size_t)k >= sizeof(buf))
		return;
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(buf + k, sizeof(buf) - (size_t)k - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	size_t len = (size_t)k + ((size_t)m < sizeof(buf) - (size_t)k - 1 ? (size_t)m
									 : sizeof(buf) - (size_t)k - 2);
	buf[len++] = '\n';
	(void)!write(fd, buf, len);
}
