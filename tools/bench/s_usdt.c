/* SPDX-License-Identifier: MIT */
/*
 * Scenario "usdt": what uhmm's USDT probes (docs/TRACING.md, "Probes") cost
 * while nobody is attached, against a build of the library without them.
 *
 * The build makes a second libuhmm without probes (build/nousdt, CMake
 * target uhmm_nousdt).  The benchmark runs in child processes of this
 * program (uhmm-bench --usdt-child), one with the library it was linked
 * with, the other with LD_LIBRARY_PATH naming the build without probes,
 * taking turns (which goes first alternates), so the machine's load weighs
 * on both alike.  A child's work is the fault and migration benchmark: a
 * buffer migrated to a simdev, then read page by page by the CPU (one fault
 * bringing one page home each: fault_around 1, no read-ahead), several
 * rounds, the best round's time printed.  usdt_overhead_ratio = the median
 * over pairs of (time with probes / without) (target <= 1.01).  Where the
 * build without probes is missing (an installed uhmm-bench, a build without
 * sys/sdt.h), the scenario says so and reports no ratio.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* The child: PAGES ROUNDS; prints the best round's ns a page. */
int usdt_child(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	size_t pages = strtoul(argv[2], NULL, 0);
	int rounds = atoi(argv[3]);
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.fault_around = 1;
	o.readahead_pages = 0;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *buf;
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 64u << 20;
	if (uhmm_ctx_create(&o, &ctx) || uhmm_simdev_create(ctx, &so, &dev) ||
	    uhmm_alloc(ctx, pages * PAGE, (void **)&buf))
		return 1;
	memset(buf, 0x5a, pages * PAGE);
	double best = 0;
	for (int r = 0; r < rounds + 1; r++) {
		uint64_t t = now_ns();
		if (uhmm_migrate(ctx, buf, pages * PAGE, dev, 0))
			return 1;
		for (size_t i = 0; i < pages; i++)
			(void)*(const volatile char *)(buf + i * PAGE);
		double ns = (double)(now_ns() - t) / (double)pages;
		if (r > 0 && (best == 0 || ns < best)) /* round 0 warms up */
			best = ns;
	}
	printf("%.3f\n", best);
	uhmm_ctx_destroy(ctx);
	return 0;
}

#ifdef UHMM_BENCH_NOUSDT_DIR
/* Run a child; *ns its figure.  @libdir: LD_LIBRARY_PATH, or NULL. */
static int run_child(const char *libdir, size_t pages, int rounds, double *ns)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return -errno;
	self[n] = 0;
	char a2[32], a3[32];
	snprintf(a2, sizeof(a2), "%zu", pages);
	snprintf(a3, sizeof(a3), "%d", rounds);
	char *argv[] = { self, "--usdt-child", a2, a3, NULL };
	/* The environment, with LD_LIBRARY_PATH set or removed. */
	size_t ne = 0;
	while (environ[ne])
		ne++;
	char **env = calloc(ne + 2, sizeof(char *));
	char ld[4200];
	if (!env)
		return -ENOMEM;
	size_t k = 0;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "LD_LIBRARY_PATH=", 16))
			env[k++] = environ[i];
	if (libdir) {
		snprintf(ld, sizeof(ld), "LD_LIBRARY_PATH=%s", libdir);
		env[k++] = ld;
	}
	env[k] = NULL;
	int fd[2];
	if (pipe(fd)) {
		free(env);
		return -errno;
	}
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
	posix_spawn_file_actions_addclose(&fa, fd[0]);
	pid_t pid;
	int e = posix_spawn(&pid, self, &fa, NULL, argv, env);
	posix_spawn_file_actions_destroy(&fa);
	free(env);
	close(fd[1]);
	if (e) {
		close(fd[0]);
		return -e;
	}
	char out[64] = { 0 };
	ssize_t got = read(fd[0], out, sizeof(out) - 1);
	close(fd[0]);
	int st;
	waitpid(pid, &st, 0);
	if (got <= 0 || !WIFEXITED(st) || WEXITSTATUS(st))
		return -EIO;
	*ns = atof(out);
	return *ns > 0 ? 0 : -EIO;
}
#endif

int sc_usdt(struct bench_sc *sc)
{
#ifndef UHMM_BENCH_NOUSDT_DIR
	bench_note(sc, "no build of the library without probes (UHMM_USDT off or no "
		   "sys/sdt.h): nothing to compare");
	return 0;
#else
	const char *dir = UHMM_BENCH_NOUSDT_DIR;
	char probe_lib[4200];
	snprintf(probe_lib, sizeof(probe_lib), "%s/libuhmm.so.0", dir);
	if (access(probe_lib, R_OK)) {
		bench_note(sc, "no library without probes at %s: nothing to compare", dir);
		return 0;
	}
	size_t pages = cfg.quick ? 256 : 1024;
	int rounds = cfg.quick ? 3 : 5, pairs = cfg.quick ? 4 : 4 * (cfg.reps < 3 ? 3 : cfg.reps);
	double *with = calloc((size_t)pairs, sizeof(double));
	double *without = calloc((size_t)pairs, sizeof(double));
	double *pr = calloc((size_t)pairs, sizeof(double));
	int e = -ENOMEM;
	if (!with || !without || !pr)
		goto out;
	for (int p = 0; p < pairs; p++) {
		bool first = p & 1;
		if ((e = run_child(first ? dir : NULL, pages, rounds, first ? &without[p] : &with[p])) ||
		    (e = run_child(first ? NULL : dir, pages, rounds, first ? &with[p] : &without[p])))
			goto out;
		pr[p] = with[p] / without[p];
	}
	struct dist d_pr = dist_of(pr, (size_t)pairs);
	struct dist d_with = dist_of(with, (size_t)pairs), d_without = dist_of(without, (size_t)pairs);
	bench_base(sc, "fault_migrate_no_probes_ns", d_without.median, "ns",
		   "a page migrated to the device and faulted back, library built without probes");
	bench_fig(sc, "fault_migrate_probes_ns", d_with.median, "ns",
		  "the same with probes present, nobody attached");
	bench_ratio(sc, "usdt_overhead", d_pr.median,
		    "fault and migration time, probes present unattached / a build without them "
		    "(median of pairs)");
	bench_goal(sc, '<', 1.01);
	bench_note(sc, "%zu pages, best of %d rounds per child, %d pairs of children taking turns; "
		   "ratio of the medians %.3f", pages, rounds, pairs, d_with.median / d_without.median);
	e = 0;
out:
	free(with);
	free(without);
	free(pr);
	return e;
#endif
}
