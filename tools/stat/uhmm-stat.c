/* SPDX-License-Identifier: MIT */
/*
 * uhmm-stat - watch a running uhmm program from outside: its contexts'
 * devices and memory, faults, migrations, evictions and invalidations per
 * second, and where each managed range's bytes live.  It reads the
 * segments the contexts publish (docs/STAT.md) and never stops the
 * program.
 *
 *   uhmm-stat                      the processes publishing, one line each
 *   uhmm-stat PID                  a top-like view, refreshed each second
 *   uhmm-stat PID --once [--json]  one sample (JSON for scripts)
 *   uhmm-stat PID --png FILE --seconds N
 *                                  residency and rates over N seconds,
 *                                  drawn by gnuplot
 *
 * Exit status: 0; 1 an error (bad usage, gnuplot failed); 2 no such
 * process (or it exited while watched); 3 the process publishes no uhmm
 * context (it does not use uhmm, or runs with UHMM_STAT=0).
 * docs/man/uhmm-stat.1.scd is its manual page.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "statread.h"

#define EXIT_GONE 2
#define EXIT_NOT_UHMM 3
#define MAX_SEGS 64
#define BAR 40

static const char *argv0 = "uhmm-stat";
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	while (nanosleep(&ts, &ts) && errno == EINTR && !interrupted)
		;
}

static void comm_of(long pid, char *buf, size_t n)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
	FILE *f = fopen(path, "r");
	buf[0] = 0;
	if (f) {
		if (fgets(buf, (int)n, f))
			buf[strcspn(buf, "\n")] = 0;
		fclose(f);
	}
	if (!buf[0])
		snprintf(buf, n, "?");
}

static bool process_exists(long pid)
{
	return pid > 0 && !(kill((pid_t)pid, 0) && errno == ESRCH);
}

/* The uid whose directory holds @pid's segments (its owner's), or ours. */
static unsigned uid_of(long pid)
{
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "/proc/%ld", pid);
	if (pid > 0 && !stat(path, &st))
		return (unsigned)st.st_uid;
	return (unsigned)geteuid();
}

struct seglist {
	struct statseg s[MAX_SEGS];
	size_t n;
};

static void seglist_free(struct seglist *l)
{
	for (size_t i = 0; i < l->n; i++)
		statread_close(&l->s[i]);
	l->n = 0;
}

static int seg_cmp(const void *a, const void *b)
{
	const struct statseg *x = a, *y = b;
	if (x->h->pid != y->h->pid)
		return x->h->pid < y->h->pid ? -1 : 1;
	return x->h->ctx_id < y->h->ctx_id ? -1 : x->h->ctx_id > y->h->ctx_id;
}

/*
 * Snapshots of the segments of @pid (every process if pid <= 0), sorted.
 * Segments left by dead processes are removed (where we may) and skipped;
 * so are ones that vanish or cannot be read consistently meanwhile.
 */
static int scan_errno; /* why the last scan found no directory (0: it did) */

static void scan(long pid, struct seglist *l)
{
	char dir[4096];
	statread_dir(dir, sizeof(dir), uid_of(pid));
	l->n = 0;
	DIR *d = opendir(dir);
	scan_errno = d ? 0 : errno;
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) && l->n < MAX_SEGS) {
		long p;
		unsigned long n;
		if (!statread_name_parse(e->d_name, &p, &n) || (pid > 0 && p != pid))
			continue;
		char path[8192];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		struct statseg *s = &l->s[l->n];
		if (statread_open(s, path))
			continue;
		/* Its process (by the name's pid) gone, or another since (the
		 * start time): left by a process that was killed. */
		bool ok = statread_snapshot(s) == 0 && s->h->pid == p;
		if (!statread_alive(p, ok ? s->h->starttime : 0)) {
			unlink(path);
			statread_close(s);
			continue;
		}
		if (!ok) { /* unreadable, or not what its name says */
			statread_close(s);
			continue;
		}
		/* Not rewritten for a while: is it still its process's (an
		 * exec replaces the image, and no destructor removes it)? */
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
		uint64_t late = 1000000000ull + 2000000ull * s->h->interval_ms;
		if (now > s->h->update_ns + late && statread_mapped(p, path) == 0) {
			unlink(path);
			statread_close(s);
			continue;
		}
		l->n++;
	}
	closedir(d);
	qsort(l->s, l->n, sizeof(l->s[0]), seg_cmp);
}

static const char *human(double b, char *buf, size_t n)
{
	const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int i = 0;
	while (b >= 1024 && i < 4) {
		b /= 1024;
		i++;
	}
	snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
	return buf;
}

/* A device's character in the bars: its id in base 36 (1-9, a-z, A-...). */
static char dev_char(uint32_t id)
{
	static const char c[] = "0123456789abcdefghijklmnopqrstuvwxyz";
	return id < 36 ? c[id] : '*';
}

/* The bar of where a range's bytes live. */
static void range_bar(const struct uhmm_stat_hdr *h, const struct uhmm_stat_range *r, char *bar)
{
	struct { uint64_t v; char c; } part[UHMM_STAT_MAX_DEVS + 5];
	size_t np = 0;
	part[np++] = (typeof(part[0])){ r->cpu_bytes, '-' };
	for (uint32_t i = 0; i < h->ndevs; i++)
		part[np++] = (typeof(part[0])){ r->dev_bytes[i], dev_char(statread_dev(h, i)->id) };
	part[np++] = (typeof(part[0])){ r->other_dev_bytes, '+' };
	part[np++] = (typeof(part[0])){ r->coherent_bytes, '~' };
	part[np++] = (typeof(part[0])){ r->excl_bytes, 'x' };
	part[np++] = (typeof(part[0])){ r->poisoned_bytes, '!' };
	uint64_t total = 0, cum = 0;
	for (size_t i = 0; i < np; i++)
		total += part[i].v;
	int at = 0;
	for (size_t i = 0; i < np; i++) {
		cum += part[i].v;
		int to = total ? (int)((cum * BAR + total / 2) / total) : 0;
		/* A part that has bytes shows at least once. */
		if (part[i].v && to == at && at < BAR)
			to = at + 1;
		while (at < to && at < BAR)
			bar[at++] = part[i].c;
	}
	while (at < BAR)
		bar[at++] = ' ';
	bar[BAR] = 0;
}

/* ------------------------------------------------------------ rates */

struct rates {
	bool have;
	double faults, faults_dev, to_dev, to_sys, to_dev_b, to_sys_b, evicted, inval;
};

static struct rates rates_of(const struct uhmm_stat_hdr *now, const struct uhmm_stat_hdr *then)
{
	struct rates r = { 0 };
	if (!then || now->update_ns <= then->update_ns)
		return r;
	double dt = (double)(now->update_ns - then->update_ns) * 1e-9;
#define D(name) ((double)(statread_stat(now, name) - statread_stat(then, name)) / dt)
	r.have = true;
	r.faults = D("cpu_faults");
	r.faults_dev = D("cpu_faults_device");
	r.to_dev = D("migrated_to_device_pages");
	r.to_sys = D("migrated_to_system_pages");
	r.to_dev_b = D("migrated_to_device_bytes");
	r.to_sys_b = D("migrated_to_system_bytes");
	r.evicted = D("evicted_pages");
	r.inval = D("invalidations");
#undef D
	return r;
}

/* ------------------------------------------------------------- text */

static void print_ctx(FILE *f, const struct uhmm_stat_hdr *h, const struct rates *r)
{
	char a[32], b[32], c[32];
	double now = 0;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
	fprintf(f, "context %" PRIu64 "  published %.1f s ago (every %u ms, in %.0f us)%s%s%s\n",
		h->ctx_id, (now - (double)h->update_ns) * 1e-9, h->interval_ms,
		(double)h->publish_ns * 1e-3,
		h->flags & UHMM_STAT_F_SIGBUS ? "  sigbus" : "",
		h->flags & UHMM_STAT_F_USER_MODE_ONLY ? "  user-mode-only" : "",
		h->flags & UHMM_STAT_F_NO_MOVE ? "  no-move" : "");
	fprintf(f, "  %-3s %-20s %12s %12s %12s %10s\n", "id", "device", "in use", "memory",
		"coherent", "evicted");
	for (uint32_t i = 0; i < h->ndevs; i++) {
		const struct uhmm_stat_dev *d = statread_dev(h, i);
		fprintf(f, "  %-3c %-20.20s %12s %12s %12s %10" PRIu64 "\n", dev_char(d->id), d->name,
			human((double)d->bytes_in_use, a, sizeof(a)),
			d->mem_bytes ? human((double)d->mem_bytes, b, sizeof(b)) : "?",
			d->flags & UHMM_STAT_DEV_COHERENT ? human((double)d->coherent_bytes, c, sizeof(c))
							  : "-",
			d->evicted_pages);
	}
	if (h->ndevs_total > h->ndevs)
		fprintf(f, "  (%" PRIu64 " more devices: '+' in the bars)\n",
			h->ndevs_total - h->ndevs);
	if (!h->ndevs_total)
		fprintf(f, "  (no device attached)\n");
	if (r && r->have)
		fprintf(f, "  per second: faults %.0f (%.0f from devices)  to devices %.0f pages (%s/s)  "
			   "home %.0f pages (%s/s)  evicted %.0f  invalidations %.0f\n",
			r->faults, r->faults_dev, r->to_dev, human(r->to_dev_b, a, sizeof(a)), r->to_sys,
			human(r->to_sys_b, b, sizeof(b)), r->evicted, r->inval);
	else
		fprintf(f, "  per second: (after the next sample)\n");
	fprintf(f, "  totals: faults %" PRIu64 "  to devices %" PRIu64 " pages  home %" PRIu64
		   " pages  evicted %" PRIu64 "  invalidations %" PRIu64 "  managed %s\n",
		statread_stat(h, "cpu_faults"), statread_stat(h, "migrated_to_device_pages"),
		statread_stat(h, "migrated_to_system_pages"), statread_stat(h, "evicted_pages"),
		statread_stat(h, "invalidations"),
		human((double)statread_stat(h, "managed_pages") * 4096, a, sizeof(a)));
	fprintf(f, "  ranges (%" PRIu64 "), shares of their bytes: - system  1-9a-z a device  ~ coherent  x exclusive  "
		   "! lost\n", h->nranges_total);
	char bar[BAR + 1];
	for (uint32_t i = 0; i < h->nranges; i++) {
		const struct uhmm_stat_range *rg = statread_range(h, i);
		range_bar(h, rg, bar);
		fprintf(f, "  %#14" PRIx64 " %10s [%s]\n", rg->start,
			human((double)rg->bytes, a, sizeof(a)), bar);
	}
	if (h->nranges_total > h->nranges) {
		const struct uhmm_stat_range *rg = statread_rest(h);
		range_bar(h, rg, bar);
		fprintf(f, "  %" PRIu64 " more ranges %4s %10s [%s]\n",
			h->nranges_total - h->nranges, "", human((double)rg->bytes, a, sizeof(a)), bar);
	}
}

/* ------------------------------------------------------------- JSON */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void json_range(FILE *f, const struct uhmm_stat_hdr *h, const struct uhmm_stat_range *r)
{
	fprintf(f, "{\"start\": \"%#" PRIx64 "\", \"bytes\": %" PRIu64 ", \"cpu_bytes\": %" PRIu64
		   ", \"dup_bytes\": %" PRIu64 ", \"coherent_bytes\": %" PRIu64
		   ", \"excl_bytes\": %" PRIu64 ", \"poisoned_bytes\": %" PRIu64
		   ", \"other_dev_bytes\": %" PRIu64 ", \"devices\": {",
		r->start, r->bytes, r->cpu_bytes, r->dup_bytes, r->coherent_bytes, r->excl_bytes,
		r->poisoned_bytes, r->other_dev_bytes);
	for (uint32_t i = 0; i < h->ndevs; i++)
		fprintf(f, "%s\"%u\": %" PRIu64, i ? ", " : "", statread_dev(h, i)->id, r->dev_bytes[i]);
	fprintf(f, "}}");
}

static void json_ctx(FILE *f, const struct uhmm_stat_hdr *h, const struct rates *r)
{
	fprintf(f, "{\"ctx_id\": %" PRIu64 ", \"format_version\": %u, \"generation\": %" PRIu64
		   ", \"interval_ms\": %u, \"publish_ns\": %" PRIu64 ", \"flags\": [",
		h->ctx_id, h->version, h->generation, h->interval_ms, h->publish_ns);
	const char *fl[] = { "sigbus", "user_mode_only", "no_move", "ranges_cut", "devices_cut",
			     "closed" };
	bool first = true;
	for (int i = 0; i < 6; i++)
		if (h->flags & (1u << i)) {
			fprintf(f, "%s\"%s\"", first ? "" : ", ", fl[i]);
			first = false;
		}
	fprintf(f, "], \"counters\": {");
	for (uint32_t i = 0; i < h->nstats; i++) {
		fprintf(f, "%s", i ? ", " : "");
		json_str(f, statread_name(h, i));
		fprintf(f, ": %" PRIu64, statread_stats(h)[i]);
	}
	fprintf(f, "}, \"rates\": ");
	if (r && r->have)
		fprintf(f, "{\"cpu_faults\": %.1f, \"cpu_faults_device\": %.1f, "
			   "\"migrated_to_device_pages\": %.1f, \"migrated_to_system_pages\": %.1f, "
			   "\"migrated_to_device_bytes\": %.1f, \"migrated_to_system_bytes\": %.1f, "
			   "\"evicted_pages\": %.1f, \"invalidations\": %.1f}",
			r->faults, r->faults_dev, r->to_dev, r->to_sys, r->to_dev_b, r->to_sys_b,
			r->evicted, r->inval);
	else
		fprintf(f, "null");
	fprintf(f, ", \"devices\": [");
	for (uint32_t i = 0; i < h->ndevs; i++) {
		const struct uhmm_stat_dev *d = statread_dev(h, i);
		fprintf(f, "%s{\"id\": %u, \"name\": ", i ? ", " : "", d->id);
		char name[sizeof(d->name) + 1];
		memcpy(name, d->name, sizeof(d->name));
		name[sizeof(d->name)] = 0;
		json_str(f, name);
		fprintf(f, ", \"mem_bytes\": %" PRIu64 ", \"bytes_in_use\": %" PRIu64
			   ", \"coherent\": %s, \"coherent_bytes\": %" PRIu64
			   ", \"evicted_pages\": %" PRIu64 "}",
			d->mem_bytes, d->bytes_in_use,
			d->flags & UHMM_STAT_DEV_COHERENT ? "true" : "false", d->coherent_bytes,
			d->evicted_pages);
	}
	fprintf(f, "], \"devices_total\": %" PRIu64 ", \"ranges\": [", h->ndevs_total);
	for (uint32_t i = 0; i < h->nranges; i++) {
		fprintf(f, "%s", i ? "," : "");
		json_range(f, h, statread_range(h, i));
	}
	fprintf(f, "], \"ranges_total\": %" PRIu64 ", \"ranges_rest\": ", h->nranges_total);
	if (h->nranges_total > h->nranges)
		json_range(f, h, statread_rest(h));
	else
		fprintf(f, "null");
	fprintf(f, "}");
}

static void json_sample(FILE *f, long pid, struct seglist *l, struct seglist *prev)
{
	char comm[64];
	comm_of(pid, comm, sizeof(comm));
	fprintf(f, "{\"pid\": %ld, \"command\": ", pid);
	json_str(f, comm);
	fprintf(f, ", \"contexts\": [");
	for (size_t i = 0; i < l->n; i++) {
		const struct uhmm_stat_hdr *then = NULL;
		for (size_t k = 0; prev && k < prev->n; k++)
			if (prev->s[k].h->ctx_id == l->s[i].h->ctx_id)
				then = prev->s[k].h;
		struct rates r = rates_of(l->s[i].h, then);
		json_ctx(f, l->s[i].h, &r);
		fprintf(f, "%s", i + 1 < l->n ? ", " : "");
	}
	fprintf(f, "]}\n");
	fflush(f);
}

/* ------------------------------------------------------------- list */

static int list_all(bool json)
{
	struct seglist l;
	scan(0, &l);
	char a[32];
	if (json)
		printf("[");
	else if (!l.n)
		printf("no process publishes a uhmm context (user %u)\n", (unsigned)geteuid());
	else
		printf("%8s %-16s %4s %7s %7s %12s %12s\n", "PID", "COMMAND", "CTX", "DEVICES", "RANGES",
		       "ON DEVICES", "CPU FAULTS");
	for (size_t i = 0; i < l.n; i++) {
		const struct uhmm_stat_hdr *h = l.s[i].h;
		char comm[64];
		comm_of((long)h->pid, comm, sizeof(comm));
		uint64_t on = 0;
		for (uint32_t k = 0; k < h->ndevs; k++)
			on += statread_dev(h, k)->bytes_in_use;
		if (json) {
			printf("%s{\"pid\": %" PRId64 ", \"command\": ", i ? ", " : "", h->pid);
			json_str(stdout, comm);
			printf(", \"ctx_id\": %" PRIu64 ", \"devices\": %" PRIu64 ", \"ranges\": %" PRIu64
			       ", \"device_bytes\": %" PRIu64 ", \"cpu_faults\": %" PRIu64 "}",
			       h->ctx_id, h->ndevs_total, h->nranges_total, on,
			       statread_stat(h, "cpu_faults"));
		} else {
			printf("%8" PRId64 " %-16.16s %4" PRIu64 " %7" PRIu64 " %7" PRIu64 " %12s %12" PRIu64
			       "\n", h->pid, comm, h->ctx_id, h->ndevs_total, h->nranges_total,
			       human((double)on, a, sizeof(a)), statread_stat(h, "cpu_faults"));
		}
	}
	if (json)
		printf("]\n");
	seglist_free(&l);
	return 0;
}

/* ------------------------------------------------------------- PNG */

#define PNG_DEVS 8

struct sample {
	double t;
	double cpu, dev[PNG_DEVS], coh, other;
	struct rates r;
};

struct devcol {
	uint64_t ctx;
	uint32_t id;
	char name[48];
};

static int devcol_of(struct devcol *cols, int *ncols, uint64_t ctx, const struct uhmm_stat_dev *d)
{
	for (int i = 0; i < *ncols; i++)
		if (cols[i].ctx == ctx && cols[i].id == d->id)
			return i;
	if (*ncols >= PNG_DEVS)
		return -1;
	cols[*ncols].ctx = ctx;
	cols[*ncols].id = d->id;
	snprintf(cols[*ncols].name, sizeof(cols[0].name), "ctx %" PRIu64 " %.32s", ctx, d->name);
	return (*ncols)++;
}

static void sample_of(struct sample *s, struct seglist *l, struct seglist *prev,
		      struct devcol *cols, int *ncols)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct uhmm_stat_hdr *h = l->s[i].h, *then = NULL;
		for (size_t k = 0; k < prev->n; k++)
			if (prev->s[k].h->ctx_id == h->ctx_id)
				then = prev->s[k].h;
		struct rates r = rates_of(h, then);
		if (r.have) {
			s->r.have = true;
			s->r.faults += r.faults;
			s->r.to_dev += r.to_dev;
			s->r.to_sys += r.to_sys;
			s->r.evicted += r.evicted;
			s->r.inval += r.inval;
		}
		for (uint32_t k = 0; k <= h->nranges; k++) {
			if (k == h->nranges && h->nranges_total <= h->nranges)
				break;
			const struct uhmm_stat_range *rg = k < h->nranges ? statread_range(h, k)
									  : statread_rest(h);
			s->cpu += (double)rg->cpu_bytes;
			s->coh += (double)rg->coherent_bytes;
			s->other += (double)(rg->other_dev_bytes + rg->excl_bytes + rg->poisoned_bytes);
			for (uint32_t d = 0; d < h->ndevs; d++) {
				int c = devcol_of(cols, ncols, h->ctx_id, statread_dev(h, d));
				if (c >= 0)
					s->dev[c] += (double)rg->dev_bytes[d];
				else
					s->other += (double)rg->dev_bytes[d];
			}
		}
	}
}

static bool have_program(const char *name)
{
	const char *path = getenv("PATH");
	if (!path)
		return false;
	char *dup = strdup(path), *save = NULL;
	bool found = false;
	for (char *d = strtok_r(dup, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", *d ? d : ".", name);
		found = access(p, X_OK) == 0;
	}
	free(dup);
	return found;
}

static int draw_png(const char *out, long pid, const struct sample *sm, size_t n,
		    const struct devcol *cols, int ncols)
{
	char dir[] = "/tmp/uhmm-stat-XXXXXX", path[4200], abs_out[4096];
	if (out[0] == '/')
		snprintf(abs_out, sizeof(abs_out), "%s", out);
	else if (!getcwd(path, sizeof(path)) ||
		 snprintf(abs_out, sizeof(abs_out), "%s/%s", path, out) >= (int)sizeof(abs_out))
		return -1;
	if (!mkdtemp(dir)) {
		fprintf(stderr, "%s: mkdtemp: %s\n", argv0, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/stat.dat", dir);
	FILE *d = fopen(path, "w");
	if (!d)
		return -1;
	/* Stacked residency: cumulative MiB (system, each device, coherent,
	 * the rest), then the rates. */
	fprintf(d, "# t cum_cpu cum_dev1..%d cum_coh cum_other faults to_dev to_sys evicted inval\n",
		PNG_DEVS);
	for (size_t i = 0; i < n; i++) {
		double cum = sm[i].cpu / 1048576.0;
		fprintf(d, "%.3f %.3f", sm[i].t, cum);
		for (int c = 0; c < PNG_DEVS; c++) {
			cum += sm[i].dev[c] / 1048576.0;
			fprintf(d, " %.3f", cum);
		}
		cum += sm[i].coh / 1048576.0;
		fprintf(d, " %.3f", cum);
		cum += sm[i].other / 1048576.0;
		fprintf(d, " %.3f", cum);
		if (sm[i].r.have)
			fprintf(d, " %.1f %.1f %.1f %.1f %.1f\n", sm[i].r.faults, sm[i].r.to_dev,
				sm[i].r.to_sys, sm[i].r.evicted, sm[i].r.inval);
		else
			fprintf(d, " NaN NaN NaN NaN NaN\n");
	}
	fclose(d);
	snprintf(path, sizeof(path), "%s/stat.gp", dir);
	FILE *g = fopen(path, "w");
	if (!g)
		return -1;
	char comm[64];
	comm_of(pid, comm, sizeof(comm));
	for (char *p = comm; *p; p++)
		if (*p == '\'')
			*p = ' ';
	fprintf(g, "set terminal pngcairo size 900,700 noenhanced\nset output '%s'\n"
		   "set multiplot layout 2,1 title 'uhmm-stat: pid %ld (%s)'\nset grid\n"
		   "set key outside right\nset xlabel 'seconds'\n",
		abs_out, pid, comm);
	/* Column of each layer's cumulative value: 2 system, 3.. devices,
	 * then coherent, then the rest; drawn from the top layer down. */
	int c_coh = 3 + PNG_DEVS, c_other = c_coh + 1;
	fprintf(g, "set title 'where the managed bytes live'\nset ylabel 'MiB'\n"
		   "set style fill solid 0.6 noborder\nplot 'stat.dat' using 1:%d with filledcurves x1 "
		   "title 'other (exclusive, lost, more devices)'", c_other);
	fprintf(g, ", '' using 1:%d with filledcurves x1 title 'coherent'", c_coh);
	for (int c = ncols - 1; c >= 0; c--)
		fprintf(g, ", '' using 1:%d with filledcurves x1 title '%s'", 3 + c, cols[c].name);
	fprintf(g, ", '' using 1:2 with filledcurves x1 title 'system memory'\n");
	int r0 = c_other + 1;
	fprintf(g, "set title 'rates'\nset ylabel 'per second'\nset style fill empty\n"
		   "plot 'stat.dat' using 1:%d with lines lw 2 title 'CPU faults', "
		   "'' using 1:%d with lines lw 2 title 'pages to devices', "
		   "'' using 1:%d with lines lw 2 title 'pages home', "
		   "'' using 1:%d with lines lw 2 title 'pages evicted', "
		   "'' using 1:%d with lines lw 2 title 'invalidations'\nunset multiplot\n",
		r0, r0 + 1, r0 + 2, r0 + 3, r0 + 4);
	fclose(g);
	if (!have_program("gnuplot")) {
		fprintf(stderr, "%s: --png: gnuplot not found: data and script left in %s "
				"(run 'cd %s && gnuplot stat.gp' where gnuplot exists)\n", argv0, dir, dir);
		return -1;
	}
	char cmd[8400];
	snprintf(cmd, sizeof(cmd), "cd '%s' && gnuplot stat.gp", dir);
	int rc = system(cmd);
	if (rc != 0) {
		fprintf(stderr, "%s: --png: gnuplot failed (status %d); data and script in %s\n",
			argv0, rc, dir);
		return -1;
	}
	unlink(path);
	snprintf(path, sizeof(path), "%s/stat.dat", dir);
	unlink(path);
	rmdir(dir);
	return 0;
}

/* ------------------------------------------------------------- main */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s [--json]                      list the processes publishing\n"
		"       %s PID [--interval S]            a live view, refreshed every S seconds (1)\n"
		"       %s PID --once [--json]           one sample\n"
		"       %s PID --png FILE --seconds N [--interval S]\n"
		"                                        residency and rates over N seconds (gnuplot)\n",
		argv0, argv0, argv0, argv0);
}

int main(int argc, char **argv)
{
	long pid = 0;
	bool once = false, json = false;
	const char *png = NULL;
	double seconds = 0, interval = 1.0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--once")) {
			once = true;
		} else if (!strcmp(a, "--json")) {
			json = true;
		} else if (!strcmp(a, "--png") && i + 1 < argc) {
			png = argv[++i];
		} else if (!strcmp(a, "--seconds") && i + 1 < argc) {
			seconds = atof(argv[++i]);
		} else if (!strcmp(a, "--interval") && i + 1 < argc) {
			interval = atof(argv[++i]);
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (a[0] >= '0' && a[0] <= '9' && !pid) {
			char *end;
			pid = strtol(a, &end, 10);
			if (*end || pid <= 0) {
				fprintf(stderr, "%s: not a process id: %s\n", argv0, a);
				return 1;
			}
		} else {
			usage(stderr);
			return 1;
		}
	}
	if (!(interval >= 0.05 && interval <= 3600) || (png && !(seconds > 0 && seconds <= 86400)) ||
	    (png && (once || !pid)) || (!png && seconds > 0)) {
		usage(stderr);
		return 1;
	}
	if (!pid)
		return list_all(json);

	char comm[64];
	if (!process_exists(pid)) {
		fprintf(stderr, "%s: no process %ld (it exited, or never was)\n", argv0, pid);
		return EXIT_GONE;
	}
	comm_of(pid, comm, sizeof(comm));
	struct seglist *cur = calloc(1, sizeof(*cur)), *prev = calloc(1, sizeof(*prev));
	struct sample *sm = NULL;
	int rc = 0;
	if (!cur || !prev) {
		rc = 1;
		goto out;
	}
	scan(pid, cur);
	if (!cur->n) {
		if (!process_exists(pid)) {
			fprintf(stderr, "%s: process %ld exited\n", argv0, pid);
			rc = EXIT_GONE;
			goto out;
		}
		fprintf(stderr, "%s: process %ld (%s) publishes no uhmm context: it does not use uhmm, "
				"has no context now, or runs with UHMM_STAT=0 (or UHMM_CTX_NO_STAT)\n",
			argv0, pid, comm);
		if (scan_errno && scan_errno != ENOENT) {
			char dir[4096];
			statread_dir(dir, sizeof(dir), uid_of(pid));
			fprintf(stderr, "%s: (or its segments cannot be read: %s: %s)\n", argv0, dir,
				strerror(scan_errno));
		}
		rc = EXIT_NOT_UHMM;
		goto out;
	}
	if (once) {
		if (json)
			json_sample(stdout, pid, cur, NULL);
		else
			for (size_t i = 0; i < cur->n; i++)
				print_ctx(stdout, cur->s[i].h, NULL);
		goto out;
	}

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	size_t nsm = 0, cap = 0;
	struct devcol cols[PNG_DEVS];
	int ncols = 0;
	double t0 = mono_s(), next = t0;
	bool tty = isatty(1) && !json;
	for (;;) {
		if (png) {
			if (nsm == cap) {
				cap = cap ? cap * 2 : 64;
				struct sample *ns = realloc(sm, cap * sizeof(*sm));
				if (!ns) {
					rc = 1;
					goto out;
				}
				sm = ns;
			}
			memset(&sm[nsm], 0, sizeof(sm[0]));
			sm[nsm].t = mono_s() - t0;
			sample_of(&sm[nsm], cur, prev, cols, &ncols);
			nsm++;
		} else if (json) {
			json_sample(stdout, pid, cur, prev);
		} else {
			if (tty)
				printf("\033[H\033[2J");
			printf("uhmm-stat: pid %ld (%s), %zu context%s, every %.1f s (Ctrl-C quits)\n", pid,
			       comm, cur->n, cur->n == 1 ? "" : "s", interval);
			for (size_t i = 0; i < cur->n; i++) {
				const struct uhmm_stat_hdr *then = NULL;
				for (size_t k = 0; k < prev->n; k++)
					if (prev->s[k].h->ctx_id == cur->s[i].h->ctx_id)
						then = prev->s[k].h;
				struct rates r = rates_of(cur->s[i].h, then);
				print_ctx(stdout, cur->s[i].h, &r);
			}
			if (!tty)
				printf("\n");
			fflush(stdout);
		}
		if (png && mono_s() - t0 >= seconds)
			break;
		next += interval;
		double left = next - mono_s();
		if (left > 0)
			sleep_s(left);
		if (interrupted)
			break;
		/* The new sample: the old one becomes prev. */
		struct seglist *t = prev;
		seglist_free(t);
		prev = cur;
		cur = t;
		scan(pid, cur);
		if (!cur->n) {
			if (!process_exists(pid)) {
				fprintf(stderr, "%s: process %ld exited\n", argv0, pid);
				rc = EXIT_GONE;
			} else {
				fprintf(stderr, "%s: process %ld publishes no uhmm context any more\n",
					argv0, pid);
				rc = EXIT_NOT_UHMM;
			}
			break;
		}
	}
	if (png && nsm) {
		if (draw_png(png, pid, sm, nsm, cols, ncols))
			rc = 1;
		else if (!rc)
			fprintf(stderr, "%s: %s: %zu samples over %.1f s\n", argv0, png, nsm,
				sm[nsm - 1].t);
	}
out:
	free(sm);
	if (cur)
		seglist_free(cur);
	if (prev)
		seglist_free(prev);
	free(cur);
	free(prev);
	return rc;
}
