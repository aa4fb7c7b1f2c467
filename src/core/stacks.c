/* SPDX-License-Identifier: MIT */
/*
 * stacks.c - which mappings hold a thread stack, for uhmm_register's rule
 * in SIGBUS mode (uhmm.h, UHMM_CTX_SIGBUS).
 *
 * In SIGBUS mode a page of managed memory that is not present raises
 * SIGBUS in the thread that touches it, and the kernel delivers that
 * signal on the thread's stack.  If the stack itself is on a device (it
 * was registered and migrated), the kernel cannot push the signal frame:
 * the thread is killed (with the process) when it next touches its stack.
 * So a SIGBUS-mode context refuses to register memory that holds a thread
 * stack, where uhmm can tell:
 *   - the mapping the calling thread's stack pointer is in;
 *   - the main thread's stack ("[stack]" in /proc/self/maps; refused in
 *     every mode by uhmm__check_anon_private, as it is not anonymous
 *     memory for the kernel's purposes: it grows);
 *   - the mappings the stack pointers of the process's other threads are
 *     in, for the threads blocked in a system call or a fault (their
 *     /proc/self/task/TID/syscall line ends with "sp pc"; a thread that is
 *     running says "running", and its stack cannot be told).
 * No malloc (uhmm never calls it): raw getdents64 and util/umem.h's line
 * reader.
 *
 * Locks: none.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/internal.h"

#define MAX_SPS 256 /* threads beyond this are not looked at */

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/* The stack pointer of thread @tid if it is blocked (0 if running or
 * unknown). */
static uintptr_t thread_sp(const char *tid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/task/%s/syscall", tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, line, sizeof(line) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	line[n] = '\0';
	/* "nr a1 .. a6 sp pc" or "-1 sp pc" (blocked), "running". */
	char *tok[9];
	int k = 0;
	for (char *save = NULL, *t = strtok_r(line, " \n", &save); t && k < 9;
	     t = strtok_r(NULL, " \n", &save))
		tok[k++] = t;
	if (k < 3)
		return 0;
	return (uintptr_t)strtoull(tok[k - 2], NULL, 16);
}

/* Stack pointers of the other threads of the process that are blocked. */
static int other_sps(uintptr_t *sps, int max)
{
	int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[4096];
	int n = 0;
	pid_t self = (pid_t)syscall(SYS_gettid);
	for (;;) {
		long got = syscall(SYS_getdents64, fd, buf, sizeof(buf));
		if (got <= 0)
			break;
		for (long off = 0; off < got && n < max;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
			off += d->d_reclen;
			if (d->d_name[0] < '0' || d->d_name[0] > '9' || atoi(d->d_name) == self)
				continue;
			uintptr_t sp = thread_sp(d->d_name);
			if (sp)
				sps[n++] = sp;
		}
	}
	close(fd);
	return n;
}

/* 0, or -EOPNOTSUPP if [start, end) meets a mapping that holds a thread
 * stack (see the top of the file); -errno if /proc cannot be read. */
int uhmm__check_no_stack(uintptr_t start, uintptr_t end)
{
	uintptr_t sps[MAX_SPS];
	volatile char here = 0;
	sps[0] = (uintptr_t)&here;
	int nsp = 1 + other_sps(sps + 1, MAX_SPS - 1);
	struct uhmm_lines f;
	int err = uhmm__lines_open(&f, "/proc/self/maps");
	if (err)
		return err;
	char line[512];
	while (!err && uhmm__lines_next(&f, line, sizeof(line))) {
		unsigned long lo, hi;
		int pos = 0;
		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &pos) < 2)
			continue;
		if (lo >= end)
			break; /* sorted */
		if (hi <= start)
			continue;
		bool stack = pos && !strncmp(line + pos, "[stack]", 7);
		for (int i = 0; !stack && i < nsp; i++)
			stack = sps[i] >= lo && sps[i] < hi;
		if (stack)
			err = -EOPNOTSUPP;
	}
	uhmm__lines_close(&f);
	return err;
}
