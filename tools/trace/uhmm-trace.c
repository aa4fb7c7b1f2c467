/* SPDX-License-Identifier: MIT */
/*
 * uhmm-trace - read a trace a context recorded (UHMM_TRACE=path,
 * uhmm_ctx_opts.trace_path) and print it:
 *
 *   uhmm-trace csv FILE       one line a record, in time order
 *   uhmm-trace chrome FILE    Chrome trace-event JSON (ui.perfetto.dev,
 *                             chrome://tracing): CPU faults as slices of
 *                             their service time on the faulting thread's
 *                             track, device faults as instants and
 *                             migrations as slices on each device's tracks
 *   uhmm-trace summary FILE   counts per kind and device, bytes moved by
 *                             direction and cause, fault latency percentiles
 *
 * docs/TRACING.md.  Exit status 0, 1 on a bad file, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <inttypes.h>

#include "trace_read.h"

static const char *inval_reason(unsigned r)
{
	/* enum uhmm_inv_reason (uhmm/mirror.h) */
	static const char *n[] = { "?", "unmap", "zap", "remap", "migrate",
				   "exclusive", "protection", "release", "revoke" };
	return r < sizeof(n) / sizeof(n[0]) ? n[r] : "other";
}

static void csv(const struct tfile *t)
{
	printf("time_ns,tid,kind,addr,bytes,dev,from,to,access,cause,dur_ns,detail\n");
	for (size_t i = 0; i < t->n; i++) {
		const struct uhmm_trace_rec *r = &t->v[i].r;
		printf("%" PRIu64 ",%u,%s,0x%" PRIx64 ",", r->time, t->v[i].tid,
		       tr_kind_name(r->kind), r->addr);
		switch (r->kind) {
		case UHMM_TR_CPU_FAULT:
			printf("4096,%u,,,%s,,%u,%s faulting_tid=%" PRIu64 "\n", r->b,
			       r->a ? "write" : "read", r->dur,
			       r->c == UHMM_TR_CF_ZERO     ? "zero"
			       : r->c == UHMM_TR_CF_REVOKE ? "revoke"
							   : "device",
			       r->len);
			break;
		case UHMM_TR_DEV_FAULT:
			printf("4096,%u,,,%s,,,%s\n", r->b, tr_access_name(r->a),
			       r->c ? "batch_start" : "");
			break;
		case UHMM_TR_MIGRATE:
			printf("%" PRIu64 ",,%u,%u,,%s,%u,span=%u\n", r->len, r->a, r->b,
			       tr_cause_name(r->c), r->dur, r->span);
			break;
		case UHMM_TR_EVICT:
			printf("%" PRIu64 ",%u,,,,,,\n", r->len, r->b);
			break;
		case UHMM_TR_INVAL:
			printf("%" PRIu64 ",,,,,,,%s\n", r->len, inval_reason(r->a));
			break;
		default:
			printf("%" PRIu64 ",%u,,,,,,a=%u c=%u\n", r->len, r->b, r->a, r->c);
			break;
		}
	}
}

/* Chrome trace-event format: ts and dur in microseconds (fractions kept). */
static void chrome(const struct tfile *t)
{
	printf("{\"displayTimeUnit\":\"ns\",\"otherData\":{\"pid\":%u,\"page_size\":%u},"
	       "\"traceEvents\":[\n",
	       t->hdr.pid, t->hdr.page_size);
	/* Process 1: the CPU side (a track a thread); process 100 + d:
	 * device d (tracks: faults, migrations in, migrations out). */
	printf("{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":1,\"args\":{\"name\":\"CPU\"}}");
	for (unsigned d = 1; d <= t->hdr.ndev && d <= UHMM_TRACE_MAX_DEVS; d++) {
		if (!t->hdr.dev[d - 1].id)
			continue;
		printf(",\n{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%u,"
		       "\"args\":{\"name\":\"device %u %s\"}}",
		       100 + d, d, t->hdr.dev[d - 1].name);
		static const char *tn[] = { "", "faults", "to device", "to system", "evictions" };
		for (unsigned k = 1; k <= 4; k++)
			printf(",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%u,\"tid\":%u,"
			       "\"args\":{\"name\":\"%s\"}}",
			       100 + d, k, tn[k]);
	}
	for (size_t i = 0; i < t->n; i++) {
		const struct uhmm_trace_rec *r = &t->v[i].r;
		double ts = (double)r->time / 1000.0;
		switch (r->kind) {
		case UHMM_TR_CPU_FAULT: {
			/* Recorded at its end: the slice starts dur earlier. */
			unsigned tid = r->len ? (unsigned)r->len : t->v[i].tid;
			double dur = (double)r->dur / 1000.0;
			printf(",\n{\"ph\":\"X\",\"name\":\"cpu fault %s\",\"cat\":\"cpu_fault\","
			       "\"pid\":1,\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f,"
			       "\"args\":{\"addr\":\"0x%" PRIx64 "\",\"write\":%u,\"where\":%u}}",
			       r->c == UHMM_TR_CF_ZERO     ? "zero"
			       : r->c == UHMM_TR_CF_REVOKE ? "revoke"
							   : "device",
			       tid, ts - dur > 0 ? ts - dur : 0, dur, r->addr, r->a, r->b);
			break;
		}
		case UHMM_TR_DEV_FAULT:
			printf(",\n{\"ph\":\"i\",\"s\":\"t\",\"name\":\"fault %s\",\"cat\":\"dev_fault\","
			       "\"pid\":%u,\"tid\":1,\"ts\":%.3f,\"args\":{\"addr\":\"0x%" PRIx64 "\"}}",
			       tr_access_name(r->a), 100 + r->b, ts, r->addr);
			break;
		case UHMM_TR_MIGRATE: {
			unsigned dev = r->b ? r->b : r->a;
			unsigned track = r->b ? 2 : 3;
			printf(",\n{\"ph\":\"X\",\"name\":\"%s\",\"cat\":\"migrate\",\"pid\":%u,"
			       "\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"addr\":\"0x%" PRIx64
			       "\",\"bytes\":%" PRIu64 ",\"from\":%u,\"to\":%u}}",
			       tr_cause_name(r->c), dev ? 100 + dev : 1, dev ? track : 0, ts,
			       (double)r->dur / 1000.0, r->addr, r->len, r->a, r->b);
			break;
		}
		case UHMM_TR_EVICT:
			printf(",\n{\"ph\":\"i\",\"s\":\"t\",\"name\":\"evict\",\"cat\":\"evict\","
			       "\"pid\":%u,\"tid\":4,\"ts\":%.3f,\"args\":{\"addr\":\"0x%" PRIx64
			       "\",\"bytes\":%" PRIu64 "}}",
			       100 + r->b, ts, r->addr, r->len);
			break;
		case UHMM_TR_INVAL:
			printf(",\n{\"ph\":\"i\",\"s\":\"p\",\"name\":\"invalidate %s\",\"cat\":\"inval\","
			       "\"pid\":1,\"tid\":%u,\"ts\":%.3f,\"args\":{\"addr\":\"0x%" PRIx64
			       "\",\"bytes\":%" PRIu64 "}}",
			       inval_reason(r->a), t->v[i].tid, ts, r->addr, r->len);
			break;
		default:
			printf(",\n{\"ph\":\"i\",\"s\":\"p\",\"name\":\"%s\",\"pid\":1,\"tid\":%u,"
			       "\"ts\":%.3f,\"args\":{\"addr\":\"0x%" PRIx64 "\",\"bytes\":%" PRIu64 "}}",
			       tr_kind_name(r->kind), t->v[i].tid, ts, r->addr, r->len);
			break;
		}
	}
	printf("\n]}\n");
}

static int u32cmp(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
	return a < b ? -1 : a > b;
}

static void percentiles(const char *what, uint32_t *v, size_t n)
{
	if (!n) {
		printf("  %-22s none\n", what);
		return;
	}
	qsort(v, n, sizeof(*v), u32cmp);
	printf("  %-22s n=%zu p50=%.1fus p90=%.1fus p99=%.1fus max=%.1fus\n", what, n,
	       v[n / 2] / 1000.0, v[n * 9 / 10] / 1000.0, v[n * 99 / 100] / 1000.0,
	       v[n - 1] / 1000.0);
}

static void summary(const struct tfile *t)
{
	uint64_t kinds[UHMM_TR_NKINDS] = { 0 };
	uint64_t bytes_to[UHMM_TR_NCAUSES] = { 0 }, bytes_home[UHMM_TR_NCAUSES] = { 0 };
	uint64_t n_to[UHMM_TR_NCAUSES] = { 0 }, n_home[UHMM_TR_NCAUSES] = { 0 };
	struct {
		uint64_t faults, mig_in, mig_out, bytes_in, bytes_out, evicts, evict_bytes;
	} dev[UHMM_TRACE_MAX_DEVS + 1];
	memset(dev, 0, sizeof(dev));
	uint32_t *lat_all = malloc((t->n + 1) * sizeof(uint32_t));
	uint32_t *lat_dev = malloc((t->n + 1) * sizeof(uint32_t));
	size_t nall = 0, ndev = 0;
	if (!lat_all || !lat_dev) {
		fprintf(stderr, "uhmm-trace: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < t->n; i++) {
		const struct uhmm_trace_rec *r = &t->v[i].r;
		if (r->kind < UHMM_TR_NKINDS)
			kinds[r->kind]++;
		unsigned c = r->c < UHMM_TR_NCAUSES ? r->c : 0;
		switch (r->kind) {
		case UHMM_TR_CPU_FAULT:
			lat_all[nall++] = r->dur;
			if (r->c == UHMM_TR_CF_DEVICE)
				lat_dev[ndev++] = r->dur;
			break;
		case UHMM_TR_DEV_FAULT:
			dev[r->b].faults++;
			break;
		case UHMM_TR_MIGRATE:
			if (r->b) {
				n_to[c]++;
				bytes_to[c] += r->len;
				dev[r->b].mig_in++;
				dev[r->b].bytes_in += r->len;
			} else {
				n_home[c]++;
				bytes_home[c] += r->len;
			}
			if (r->a) {
				dev[r->a].mig_out++;
				dev[r->a].bytes_out += r->len;
			}
			break;
		case UHMM_TR_EVICT:
			dev[r->b].evicts++;
			dev[r->b].evict_bytes += r->len;
			break;
		}
	}
	uint64_t span = t->n ? t->v[t->n - 1].r.time - t->v[0].r.time : 0;
	printf("trace: %zu records over %.3f ms, pid %u%s%s\n", t->n, span / 1e6, t->hdr.pid,
	       t->hdr.closed ? "" : " (not closed: the context was not destroyed)",
	       t->truncated ? " (truncated)" : "");
	if (t->hdr.lost)
		printf("lost: %" PRIu64 " records\n", (uint64_t)t->hdr.lost);
	printf("records by kind:\n");
	for (unsigned k = 1; k < UHMM_TR_NKINDS; k++)
		printf("  %-10s %" PRIu64 "\n", tr_kind_name(k), kinds[k]);
	printf("migrations by cause (count, bytes):\n");
	for (unsigned c = 0; c < UHMM_TR_NCAUSES; c++)
		if (n_to[c] || n_home[c])
			printf("  %-10s to device %" PRIu64 " (%" PRIu64 " B), to system %" PRIu64
			       " (%" PRIu64 " B)\n",
			       tr_cause_name(c), n_to[c], bytes_to[c], n_home[c], bytes_home[c]);
	printf("devices:\n");
	for (unsigned d = 1; d <= UHMM_TRACE_MAX_DEVS; d++) {
		if (!t->hdr.dev[d - 1].id && !dev[d].faults && !dev[d].mig_in)
			continue;
		printf("  %u %-12s mem %" PRIu64 " MiB: faults %" PRIu64 ", migrations in %" PRIu64
		       " (%" PRIu64 " B), out %" PRIu64 " (%" PRIu64 " B), evictions %" PRIu64
		       " (%" PRIu64 " B)\n",
		       d, tfile_dev_name(t, d), (uint64_t)t->hdr.dev[d - 1].mem_bytes >> 20,
		       dev[d].faults, dev[d].mig_in, dev[d].bytes_in, dev[d].mig_out,
		       dev[d].bytes_out, dev[d].evicts, dev[d].evict_bytes);
	}
	printf("CPU fault service time:\n");
	percentiles("all", lat_all, nall);
	percentiles("device-resident", lat_dev, ndev);
	free(lat_all);
	free(lat_dev);
}

static int usage(void)
{
	fprintf(stderr, "usage: uhmm-trace csv|chrome|summary FILE\n");
	return 2;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return usage();
	void (*fn)(const struct tfile *);
	if (!strcmp(argv[1], "csv"))
		fn = csv;
	else if (!strcmp(argv[1], "chrome"))
		fn = chrome;
	else if (!strcmp(argv[1], "summary"))
		fn = summary;
	else
		return usage();
	struct tfile t;
	char err[512];
	if (tfile_load(argv[2], &t, err, sizeof(err))) {
		fprintf(stderr, "uhmm-trace: %s\n", err);
		return 1;
	}
	if (t.truncated)
		fprintf(stderr, "uhmm-trace: %s: truncated after %zu records\n", argv[2], t.n);
	fn(&t);
	tfile_free(&t);
	return 0;
}
