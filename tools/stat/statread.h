/* SPDX-License-Identifier: MIT */
/*
 * statread.h - reading the live-view segments contexts publish (the format
 * is src/core/statfmt.h, docs/STAT.md): finding them, mapping one, taking
 * a consistent snapshot of it under its seqlock, and telling a segment of
 * a live process from one a dead process left behind.  Header-only: used
 * by uhmm-stat and by the tests.
 */
#ifndef UHMM_TOOLS_STATREAD_H
#define UHMM_TOOLS_STATREAD_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/statfmt.h"

/* How many times a snapshot is tried (100 us apart) before a segment
 * whose writer never lets go of it is called busy: about 0.2 s. */
#define STATREAD_TRIES 2000

struct statseg {
	char path[8192];
	void *map;          /* the file, read-only */
	size_t size;
	void *snap;         /* the last snapshot (size bytes) */
	const struct uhmm_stat_hdr *h; /* = snap */
};

/* The directory of the segments of user @uid's processes. */
static inline void statread_dir(char *buf, size_t n, unsigned uid)
{
	const char *d = getenv("UHMM_STAT_DIR");
	if (d && *d)
		snprintf(buf, n, "%s", d);
	else
		snprintf(buf, n, "/dev/shm/uhmm-%u", uid);
}

/* The start time of process @pid (/proc/PID/stat field 22), 0 if gone. */
static inline unsigned long long statread_starttime(long pid)
{
	char path[64], line[1024];
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, line, sizeof(line) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	line[n] = 0;
	char *p = strrchr(line, ')');
	for (int f = 3; p && f <= 22; f++) {
		p = strchr(p + 1, ' ');
		if (p && f == 22)
			return strtoull(p + 1, NULL, 10);
	}
	return 0;
}

/* Is the process that wrote a segment alive: pid running, and the same
 * process (its start time), not another that got its pid since? */
static inline bool statread_alive(long pid, unsigned long long starttime)
{
	if (pid <= 0 || (kill((pid_t)pid, 0) && errno == ESRCH))
		return false;
	unsigned long long t = statread_starttime(pid);
	return t && (!starttime || t == starttime);
}

/*
 * Does process @pid still map the segment file @path?  1 yes, 0 no (it
 * exec'd, or unmapped it), -1 cannot tell (its maps unreadable).  For a
 * segment whose publications stopped while its process lives on.
 */
static inline int statread_mapped(long pid, const char *path)
{
	char maps[64], line[4096 + 256], real[4096];
	if (!realpath(path, real))
		return -1;
	snprintf(maps, sizeof(maps), "/proc/%ld/maps", pid);
	FILE *f = fopen(maps, "r");
	if (!f)
		return -1;
	int found = 0;
	size_t rl = strlen(real);
	while (!found && fgets(line, sizeof(line), f)) {
		char *p = strchr(line, '/');
		found = p && !strncmp(p, real, rl) && (p[rl] == '\n' || p[rl] == 0);
	}
	fclose(f);
	return found;
}

static inline void statread_close(struct statseg *s)
{
	if (s->map)
		munmap(s->map, s->size);
	free(s->snap);
	memset(s, 0, sizeof(*s));
}

/* Check a snapshot's layout against its size: 0, or -EPROTO. */
static inline int statread_check(const void *snap, size_t size)
{
	const struct uhmm_stat_hdr *h = snap;
	if (size < sizeof(*h) || memcmp(h->magic, UHMM_STAT_MAGIC, 8) ||
	    h->version != UHMM_STAT_VERSION || h->hdr_size < sizeof(*h) || h->seg_size > size)
		return -EPROTO;
	uint64_t end_stats = (uint64_t)h->stats_off + (uint64_t)h->nstats * 8;
	uint64_t end_names = (uint64_t)h->names_off + h->names_len;
	uint64_t end_devs = (uint64_t)h->devs_off + (uint64_t)h->max_devs * h->dev_size;
	uint64_t end_ranges = (uint64_t)h->ranges_off + (uint64_t)h->max_ranges * h->range_size;
	if (end_stats > size || end_names > size || end_devs > size || end_ranges > size ||
	    (uint64_t)h->rest_off + h->range_size > size ||
	    h->dev_size < sizeof(struct uhmm_stat_dev) ||
	    h->range_size < sizeof(struct uhmm_stat_range) || h->ndevs > h->max_devs ||
	    h->nranges > h->max_ranges || (h->names_len && ((const char *)snap)[end_names - 1]))
		return -EPROTO;
	return 0;
}

/* Map the segment at @path: 0, -errno of open/mmap, -EPROTO (not a
 * segment of a version this reader knows). */
static inline int statread_open(struct statseg *s, const char *path)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->path, sizeof(s->path), "%s", path);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(struct uhmm_stat_hdr) ||
	    st.st_size > (64 << 20) || st.st_size % 8) {
		close(fd);
		return -EPROTO;
	}
	s->size = (size_t)st.st_size;
	s->map = mmap(NULL, s->size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (s->map == MAP_FAILED) {
		s->map = NULL;
		return -errno;
	}
	s->snap = malloc(s->size);
	if (!s->snap) {
		statread_close(s);
		return -ENOMEM;
	}
	const struct uhmm_stat_hdr *h = s->map;
	if (memcmp(h->magic, UHMM_STAT_MAGIC, 8) || h->version != UHMM_STAT_VERSION ||
	    h->seg_size > s->size) {
		statread_close(s);
		return -EPROTO;
	}
	return 0;
}

/* A consistent snapshot into s->snap: 0, -EAGAIN (the writer held it
 * through every try: it died while writing, or is stopped there), or
 * -EPROTO (inconsistent layout). */
static inline int statread_snapshot(struct statseg *s)
{
	for (int i = 0; i < STATREAD_TRIES; i++) {
		if (uhmm_stat_seq_read(s->map, s->snap, s->size / 8, NULL, NULL)) {
			int e = statread_check(s->snap, s->size);
			if (!e)
				s->h = s->snap;
			return e;
		}
		struct timespec ts = { 0, 100000 };
		nanosleep(&ts, NULL);
	}
	return -EAGAIN;
}

/* Accessors of a snapshot. */
static inline const uint64_t *statread_stats(const struct uhmm_stat_hdr *h)
{
	return (const uint64_t *)((const char *)h + h->stats_off);
}
/* The i-th counter's name. */
static inline const char *statread_name(const struct uhmm_stat_hdr *h, uint32_t i)
{
	const char *p = (const char *)h + h->names_off, *end = p + h->names_len;
	for (uint32_t k = 0; k < i && p < end; k++)
		p += strlen(p) + 1;
	return p < end ? p : "?";
}
/* The counter of that name (0 if the segment has none). */
static inline uint64_t statread_stat(const struct uhmm_stat_hdr *h, const char *name)
{
	const char *p = (const char *)h + h->names_off, *end = p + h->names_len;
	for (uint32_t k = 0; k < h->nstats && p < end; k++, p += strlen(p) + 1)
		if (!strcmp(p, name))
			return statread_stats(h)[k];
	return 0;
}
static inline const struct uhmm_stat_dev *statread_dev(const struct uhmm_stat_hdr *h, uint32_t i)
{
	return (const void *)((const char *)h + h->devs_off + (size_t)i * h->dev_size);
}
static inline const struct uhmm_stat_range *statread_range(const struct uhmm_stat_hdr *h,
							   uint32_t i)
{
	return (const void *)((const char *)h + h->ranges_off + (size_t)i * h->range_size);
}
static inline const struct uhmm_stat_range *statread_rest(const struct uhmm_stat_hdr *h)
{
	return (const void *)((const char *)h + h->rest_off);
}

/* Parse a segment's file name "PID.N": true and *pid, *n. */
static inline bool statread_name_parse(const char *name, long *pid, unsigned long *n)
{
	char *end;
	if (name[0] < '1' || name[0] > '9')
		return false;
	*pid = strtol(name, &end, 10);
	if (*end != '.' || end[1] < '0' || end[1] > '9')
		return false;
	*n = strtoul(end + 1, &end, 10);
	return *end == 0;
}

#endif /* UHMM_TOOLS_STATREAD_H */
