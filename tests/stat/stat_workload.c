/* SPDX-License-Identifier: MIT */
/*
 * stat_workload - a uhmm program for tests/stat/stat-test.py to watch with
 * uhmm-stat: one context, one simdev, a managed range of which part is
 * migrated to the device.  Once its context has published the state after
 * the migration (two publications later: read back from its own segment)
 * it prints
 *
 *   ready PID DEV_ID RANGE_START RANGE_BYTES DEVICE_BYTES
 *
 * ("ready PID nostat" when nothing is published) and waits for a line on
 * stdin; then it destroys the context, prints "destroyed", waits for a
 * second line (or EOF) and exits.  Every wait is bounded (30 s).  With
 * --exec, the first line makes it exec sleep(1) instead (the context's
 * segment is left behind by a process that lives on).
 *
 *   stat_workload [--mib N] [--dev-mib N] [--no-stat] [--exec]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "statread.h"

#define MIB (1ul << 20)

static void die(const char *what, int e)
{
	fprintf(stderr, "stat_workload: %s: %s\n", what, uhmm_strerror(e));
	exit(1);
}

/* Our segment, if there is one. */
static bool own_segment(struct statseg *s)
{
	char dir[4096];
	statread_dir(dir, sizeof(dir), (unsigned)geteuid());
	DIR *d = opendir(dir);
	if (!d)
		return false;
	struct dirent *e;
	bool found = false;
	while (!found && (e = readdir(d))) {
		long pid;
		unsigned long n;
		if (!statread_name_parse(e->d_name, &pid, &n) || pid != getpid())
			continue;
		char path[8192];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		found = statread_open(s, path) == 0;
	}
	closedir(d);
	return found;
}

int main(int argc, char **argv)
{
	size_t mib = 8, dev_mib = 32;
	bool nostat = false, exec = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			mib = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--dev-mib") && i + 1 < argc)
			dev_mib = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--no-stat"))
			nostat = true;
		else if (!strcmp(argv[i], "--exec"))
			exec = true;
		else
			return 2;
	}
	alarm(30); /* the test never leaves us waiting longer */
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	if (nostat)
		o.flags |= UHMM_CTX_NO_STAT;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	int e = uhmm_ctx_create(&o, &ctx);
	if (e)
		die("uhmm_ctx_create", e);
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = dev_mib * MIB;
	if ((e = uhmm_simdev_create(ctx, &so, &dev)))
		die("uhmm_simdev_create", e);
	char *buf;
	if ((e = uhmm_alloc(ctx, mib * MIB, (void **)&buf)))
		die("uhmm_alloc", e);
	memset(buf, 0x5a, mib * MIB);
	size_t moved = mib * MIB / 2;
	if ((e = uhmm_migrate(ctx, buf, moved, dev, 0)))
		die("uhmm_migrate", e);
	struct statseg s;
	if (own_segment(&s)) {
		/* Two publications after the one current now: one begun
		 * after the migration returned. */
		uint64_t g0 = 0;
		for (int i = 0; i < 30000; i++) {
			if (statread_snapshot(&s) == 0) {
				if (!g0)
					g0 = s.h->generation;
				else if (s.h->generation >= g0 + 2)
					break;
			}
			usleep(1000);
		}
		statread_close(&s);
		printf("ready %d %u %#lx %zu %zu\n", (int)getpid(), uhmm_device_id(dev),
		       (unsigned long)buf, mib * MIB, moved);
	} else {
		printf("ready %d nostat\n", (int)getpid());
	}
	fflush(stdout);
	char line[64];
	if (!fgets(line, sizeof(line), stdin))
		line[0] = 0;
	if (exec) {
		alarm(0);
		execlp("sleep", "sleep", "20", (char *)NULL);
		return 1;
	}
	if ((e = uhmm_ctx_destroy(ctx)))
		die("uhmm_ctx_destroy", e);
	printf("destroyed\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		line[0] = 0;
	return 0;
}
