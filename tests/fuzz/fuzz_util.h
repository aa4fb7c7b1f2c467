/* SPDX-License-Identifier: MIT */
/*
 * fuzz_util.h - what both fuzz targets print when they trace a run or find
 * a bug.  Include once, after defining FUZZ_NAME (the program's name).
 */
#ifndef UHMM_FUZZ_UTIL_H
#define UHMM_FUZZ_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef FUZZ_NAME
#error "define FUZZ_NAME before including fuzz_util.h"
#endif

static bool g_trace;    /* print each op (reproducing a crash) */
static unsigned g_opno; /* the op being run */

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *fmt, ...)
{
	if (!g_trace)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "  [%u] ", g_opno);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* A finding: say which op and why, and abort (libFuzzer keeps the input). */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, FUZZ_NAME ": op %u: ", g_opno);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

#endif
