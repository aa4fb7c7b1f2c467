/* SPDX-License-Identifier: MIT */
/*
 * Issue 20, errors and diagnostics: uhmm_strerror speaks uhmm's words for
 * every code uhmm returns, and the decision log (UHMM_LOG) says which mode a
 * context chose and why, at the level asked for, where asked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uhmm/uhmm.h>

#include "testlib.h"

/* Every code a call of uhmm's returns (grep -E "\-E[A-Z]+" src). */
static const int codes[] = { EINVAL, ENOMEM, EFAULT, EBADF, EBUSY, EOPNOTSUPP, EAGAIN, EIO,
			     EPERM, ECHILD, EHWPOISON, ENOENT, EEXIST, ESTALE, ENODEV,
			     ECANCELED, ETIMEDOUT, ENOSYS, ENOSPC, EMFILE, EACCES, ENOTTY,
			     ENFILE, EADDRINUSE, ESHUTDOWN, EISDIR };

static void strerror_covers_every_code(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *t = uhmm_strerror(-codes[i]);
		assert_non_null(t);
		/* uhmm's own words, not libc's fallback. */
		if (!strcmp(t, strerror(codes[i])))
			fail_msg("uhmm_strerror(-%d) is libc's \"%s\"", codes[i], t);
		assert_string_equal(t, uhmm_strerror(codes[i])); /* positive: the same */
	}
	assert_non_null(uhmm_strerror(-12345));
	assert_non_null(uhmm_strerror(-2147483647 - 1));
	assert_string_equal(uhmm_strerror(0), "success");
}

/* In a child: set UHMM_LOG=@env, create and destroy a context; returns
 * what the log file got (static buffer). */
static const char *log_of(const char *env, const char *path)
{
	static char buf[8192];
	unlink(path);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		setenv("UHMM_LOG", env, 1);
		uhmm_ctx *ctx;
		if (uhmm_ctx_create(NULL, &ctx))
			_exit(2);
		_exit(uhmm_ctx_destroy(ctx) ? 3 : 0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	buf[0] = 0;
	int fd = open(path, O_RDONLY);
	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		buf[n > 0 ? n : 0] = 0;
		close(fd);
		return buf;
	}
	return NULL;
}

static void log_says_the_mode_and_why(void **state)
{
	(void)state;
	char path[64];
	snprintf(path, sizeof(path), "/tmp/uhmm-log-%d", (int)getpid());
	char env[96];
	snprintf(env, sizeof(env), "info:%s", path);
	const char *l = log_of(env, path);
	assert_non_null(l);
	/* One line per message, each "uhmm[PID] LEVEL: ..." */
	assert_non_null(strstr(l, "] info: context "));
	assert_non_null(strstr(l, " mode; pages "));
	assert_non_null(strstr(l, "userfaultfd features"));
	/* A level below: nothing of info's. */
	snprintf(env, sizeof(env), "error:%s", path);
	l = log_of(env, path);
	assert_true(!l || !strstr(l, "info:"));
	/* Numbers are levels too. */
	snprintf(env, sizeof(env), "2:%s", path);
	l = log_of(env, path);
	assert_true(l && strstr(l, "info: context "));
	/* An unknown level: no log at all (a warning on stderr). */
	snprintf(env, sizeof(env), "loud:%s", path);
	assert_null(log_of(env, path));
	unlink(path);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(strerror_covers_every_code),
	cmocka_unit_test(log_says_the_mode_and_why),
};

UHMM_TEST_MAIN(tests)
