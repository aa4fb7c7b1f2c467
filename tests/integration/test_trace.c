/* SPDX-License-Identifier: MIT */
/*
 * Traces (issue 17): a context records its events into a file
 * (uhmm_ctx_opts.trace_path, UHMM_TRACE); uhmm-trace converts it,
 * uhmm-replay runs its fault sequence against policies and Belady's
 * optimum; the example policies (examples/policies: .so files) are loaded by
 * uhmm-replay.  docs/TRACING.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#include "testlib.h"
#include "trace_read.h"

#define MiB (1ul << 20)
#define BLK (2ul << 20)

static char *tmpname(const char *what)
{
	static char buf[4][256];
	static int k;
	char *p = buf[k++ % 4];
	snprintf(p, 256, "/tmp/uhmm-test-trace-%d-%s", (int)getpid(), what);
	return p;
}

static struct tfile load(const char *path)
{
	struct tfile t;
	char err[512];
	if (tfile_load(path, &t, err, sizeof(err)))
		fail_msg("%s", err);
	assert_false(t.truncated);
	assert_int_equal(t.hdr.closed, 1);
	assert_int_equal(t.hdr.lost, 0);
	assert_int_equal(t.hdr.nrec, t.n);
	return t;
}

/* Run a command, return its standard output (malloc'd) and exit status. */
static char *run(const char *cmd, int *status)
{
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t cap = 1 << 16, n = 0;
	char *out = malloc(cap);
	assert_non_null(out);
	size_t got;
	while ((got = fread(out + n, 1, cap - n - 1, f)) > 0) {
		n += got;
		if (n + 1 == cap) {
			cap *= 2;
			out = realloc(out, cap);
			assert_non_null(out);
		}
	}
	out[n] = 0;
	*status = pclose(f);
	return out;
}

/* uhmm-replay --json's field @field of policy @pol. */
static uint64_t replay_field(const char *json, const char *pol, const char *field)
{
	char key[128];
	snprintf(key, sizeof(key), "\"policy\": \"%s\"", pol);
	const char *p = strstr(json, key);
	if (!p)
		fail_msg("no policy %s in:\n%s", pol, json);
	const char *e = strchr(p, '}');
	snprintf(key, sizeof(key), "\"%s\": ", field);
	const char *q = strstr(p, key);
	if (!q || q > e)
		fail_msg("no field %s of %s in:\n%s", field, pol, json);
	return strtoull(q + strlen(key), NULL, 10);
}

static char *replay(const char *args, const char *file)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "%s --json %s %s", UHMM_REPLAY_TOOL, args, file);
	int st;
	char *out = run(cmd, &st);
	if (st != 0)
		fail_msg("%s: status %d\n%s", cmd, st, out);
	return out;
}

/* ---- a known workload, recorded ---- */

/* Work item i adds 1 to every 64th word of page i. */
struct inc {
	uint32_t *v;
	size_t per;
};
static void k_inc(uhmm_simdev_item *wi, uint64_t item, void *arg)
{
	struct inc *k = arg;
	for (size_t i = item * k->per; i < (item + 1) * k->per; i += 64)
		uhmm_simdev_st32(wi, &k->v[i], uhmm_simdev_ld32(wi, &k->v[i]) + 1);
}

struct counts {
	uint64_t kind[UHMM_TR_NKINDS];
	uint64_t to_dev_pages, home_pages, to_dev_recs, evict_bytes, inval_norelease;
	uint64_t cpu_dev_faults, dev_fault_recs;
};

static struct counts count(const struct tfile *t)
{
	struct counts c;
	memset(&c, 0, sizeof(c));
	for (size_t i = 0; i < t->n; i++) {
		const struct uhmm_trace_rec *r = &t->v[i].r;
		assert_true(r->kind > 0 && r->kind < UHMM_TR_NKINDS);
		c.kind[r->kind]++;
		if (r->kind == UHMM_TR_MIGRATE && r->b) {
			c.to_dev_pages += r->len / 4096;
			c.to_dev_recs++;
		} else if (r->kind == UHMM_TR_MIGRATE) {
			c.home_pages += r->len / 4096;
		} else if (r->kind == UHMM_TR_EVICT) {
			c.evict_bytes += r->len;
		} else if (r->kind == UHMM_TR_INVAL && r->a != UHMM_INV_RELEASE) {
			c.inval_norelease++;
		} else if (r->kind == UHMM_TR_CPU_FAULT && r->c == UHMM_TR_CF_DEVICE) {
			c.cpu_dev_faults++;
		}
	}
	return c;
}

/*
 * A simdev of 8 MiB; a migrate-on-touch kernel over 32 MiB (each block
 * faults, migrates, and evicts an older one), then the CPU reads it all
 * back (faults on device-resident pages), then an explicit migration home
 * of what is left.  Stats @s are taken then, before destroy, which has
 * nothing left to move.  Returns the live simdev stats in @sd.
 */
static void record_workload(const char *path, size_t bytes, struct uhmm_stats *s,
			    struct uhmm_simdev_stats *sd)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.trace_path = path;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 8 * MiB;
	uhmm_device *dev;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, &dev));
	uint32_t *v;
	ASSERT_OK(uhmm_alloc(ctx, bytes, (void **)&v));
	size_t n = bytes / 4;
	for (size_t i = 0; i < n; i++)
		v[i] = (uint32_t)i;
	struct inc k = { .v = v, .per = 1024 };
	ASSERT_OK(uhmm_simdev_launch(dev, k_inc, n / k.per, &k));
	for (size_t i = 0; i < n; i++)
		if (v[i] != (uint32_t)i + (i % 64 == 0))
			fail_msg("v[%zu] = %u", i, v[i]);
	ASSERT_OK(uhmm_migrate(ctx, v, bytes, NULL, 0));
	ASSERT_OK(uhmm_stats_get(ctx, s));
	ASSERT_OK(uhmm_simdev_stats(dev, sd));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	munmap(v, bytes);
}

/* Every record kind the workload produces counts what uhmm_stats counts. */
static void trace_counts_match_stats(void **state)
{
	(void)state;
	char *path = tmpname("counts");
	struct uhmm_stats s;
	struct uhmm_simdev_stats sd;
	record_workload(path, 32 * MiB, &s, &sd);
	struct tfile t = load(path);
	struct counts c = count(&t);
	assert_int_equal(t.hdr.page_size, 4096);
	assert_int_equal(t.hdr.dev[0].id, 1);
	assert_int_equal(t.hdr.dev[0].mem_bytes, 8 * MiB);
	assert_true(s.evicted_pages > 0 && s.cpu_faults_device > 0);
	assert_int_equal(c.kind[UHMM_TR_CPU_FAULT], s.cpu_faults);
	assert_int_equal(c.cpu_dev_faults, s.cpu_faults_device);
	assert_int_equal(c.to_dev_pages, s.migrated_to_device_pages);
	assert_int_equal(c.home_pages, s.migrated_to_system_pages);
	assert_int_equal(c.kind[UHMM_TR_EVICT], s.evicted_blocks);
	assert_int_equal(c.evict_bytes, s.evicted_bytes);
	assert_int_equal(c.inval_norelease, s.invalidations);
	/* The device's faults that reached a batch and were not found
	 * resolved: the faults the service pass acted on. */
	assert_int_equal(c.kind[UHMM_TR_DEV_FAULT], sd.faults - sd.fault_duplicates);
	tfile_free(&t);
	unlink(path);
}

/*
 * The round trip: record, convert (CSV: a line a record; Chrome JSON: an
 * event a record), replay with the default policy.
 *
 * What must match, and why: the replay starts from the same empty device
 * of the recorded size and applies uhmm's own rules (a device fault
 * migrates its 2 MiB block; a full device evicts the block whose pages
 * last moved there earliest, never the request's; CPU faults bring home
 * the fault-around block) to the same sequence, so
 *   - its device faults (recorded faults on pages not on the device at
 *     the start of their batch) are the recorded device faults: live, a
 *     device faults only on pages it has no translation for, which after
 *     a migrate-on-touch pass are exactly the pages not on it;
 *   - its migrations to the device are the recorded ones (one per block
 *     faulted on, plus none by call here);
 *   - its evictions are the recorded evictions (a block each).
 * The kernel's lanes walk the pages in order, so the live order is the
 * trace's.  Bytes home differ in granularity only (a whole evicted block,
 * live and replayed; CPU faults by fault-around blocks, both).
 */
static void trace_round_trip(void **state)
{
	(void)state;
	char *path = tmpname("rt");
	struct uhmm_stats s;
	struct uhmm_simdev_stats sd;
	record_workload(path, 24 * MiB, &s, &sd);
	struct tfile t = load(path);
	struct counts c = count(&t);

	char cmd[1024];
	int st;
	snprintf(cmd, sizeof(cmd), "%s csv %s", UHMM_TRACE_TOOL, path);
	char *csv = run(cmd, &st);
	assert_int_equal(st, 0);
	size_t lines = 0;
	for (char *p = csv; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, t.n + 1); /* and the column names */
	assert_non_null(strstr(csv, "time_ns,tid,kind,addr,bytes,dev,from,to,access,cause,dur_ns"));
	free(csv);

	snprintf(cmd, sizeof(cmd), "%s chrome %s", UHMM_TRACE_TOOL, path);
	char *js = run(cmd, &st);
	assert_int_equal(st, 0);
	size_t events = 0, opens = 0, closes = 0;
	for (char *p = js; (p = strstr(p, "\"cat\":")); p++)
		events++;
	for (char *p = js; *p; p++) {
		opens += *p == '{';
		closes += *p == '}';
	}
	assert_int_equal(events, t.n);
	assert_int_equal(opens, closes);
	assert_true(js[0] == '{' && strstr(js, "\"traceEvents\":[") && strstr(js, "\n]}\n"));
	free(js);

	snprintf(cmd, sizeof(cmd), "%s summary %s", UHMM_TRACE_TOOL, path);
	char *sum = run(cmd, &st);
	assert_int_equal(st, 0);
	assert_non_null(strstr(sum, "device-resident"));
	free(sum);

	char *out = replay("--policy lru --policy belady", path);
	assert_int_equal(replay_field(out, "lru", "dev_faults"), c.kind[UHMM_TR_DEV_FAULT]);
	assert_int_equal(replay_field(out, "lru", "migrations_to_device"), c.to_dev_recs);
	assert_int_equal(replay_field(out, "lru", "bytes_to_device"), c.to_dev_pages * 4096);
	assert_int_equal(replay_field(out, "lru", "evictions"), c.kind[UHMM_TR_EVICT]);
	assert_int_equal(replay_field(out, "lru", "cpu_faults"), c.cpu_dev_faults);
	/* The optimum does no worse. */
	assert_true(replay_field(out, "belady", "bytes_moved") <=
		    replay_field(out, "lru", "bytes_moved"));
	free(out);
	tfile_free(&t);
	unlink(path);
}

/* ---- crafted traces ---- */

/* A tiny trace writer: a header with one device of @dev_bytes, then one
 * chunk of the records. */
struct writer {
	struct uhmm_trace_rec rec[256];
	size_t n;
	uint64_t time;
};

static void w_dev_fault(struct writer *w, uint64_t addr, unsigned access)
{
	w->rec[w->n++] = (struct uhmm_trace_rec){ .time = ++w->time, .kind = UHMM_TR_DEV_FAULT,
						  .addr = addr, .a = (uint8_t)access,
						  .b = 1, .c = 1 };
}

static void w_migrate(struct writer *w, uint64_t addr, uint64_t len, unsigned to)
{
	w->rec[w->n++] = (struct uhmm_trace_rec){ .time = ++w->time, .kind = UHMM_TR_MIGRATE,
						  .addr = addr, .len = len, .span = (uint32_t)len,
						  .a = (uint8_t)(to ? 0 : 1), .b = (uint8_t)to,
						  .c = UHMM_TR_CAUSE_CALL };
}

static void w_write(struct writer *w, const char *path, uint64_t dev_bytes)
{
	static struct uhmm_trace_hdr h;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, UHMM_TRACE_MAGIC, 8);
	h.version = UHMM_TRACE_VERSION;
	h.hdr_bytes = UHMM_TRACE_HDR_BYTES;
	h.page_size = 4096;
	h.rec_bytes = sizeof(struct uhmm_trace_rec);
	h.ndev = 1;
	h.nrec = w->n;
	h.closed = 1;
	h.fault_around = 64;
	h.dev[0] = (struct uhmm_trace_dev){ .id = 1, .mem_bytes = dev_bytes, .name = "crafted" };
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	char pad[UHMM_TRACE_HDR_BYTES];
	memset(pad, 0, sizeof(pad));
	memcpy(pad, &h, sizeof(h));
	assert_int_equal(fwrite(pad, sizeof(pad), 1, f), 1);
	struct uhmm_trace_chunk c = { .magic = UHMM_TRACE_CHUNK_MAGIC, .tid = 1,
				      .nrec = (uint32_t)w->n };
	assert_int_equal(fwrite(&c, sizeof(c), 1, f), 1);
	assert_int_equal(fwrite(w->rec, sizeof(w->rec[0]), w->n, f), w->n);
	assert_int_equal(fclose(f), 0);
}

#define BASE 0x7f0000000000ull
#define B(k) (BASE + (uint64_t)(k) * BLK)

/*
 * Belady's example string 1 2 3 4 1 2 5 1 2 3 4 5 over blocks, a device of
 * 3 blocks, one device fault a reference (each its own batch); a fault
 * migrates its 2 MiB block.
 *
 * Belady (evict the block used again furthest ahead; never used again
 * counts as furthest, ties by lowest address):
 *   1 2 3 miss (3)                                   {1 2 3}
 *   4 miss: next uses 1@5 2@6 3@10 -> evict 3 (4)    {1 2 4}
 *   1 hit, 2 hit
 *   5 miss: 1@8 2@9 4@11 -> evict 4 (5)              {1 2 5}
 *   1 hit, 2 hit
 *   3 miss: 1 never 2 never 5@12 -> evict 1 (6)      {2 5 3}
 *   4 miss: 2 never 3 never 5@12 -> evict 2 (7)      {5 3 4}
 *   5 hit
 * => 7 faults, 7 migrations of 2 MiB, 4 evictions.
 * The default (least recently *migrated* first: device faults on resident
 * pages do not renew a block, as uhmm's LRU is touched by migrations):
 *   1 2 3 miss; 4 evicts 1; 1 evicts 2; 2 evicts 3; 5 evicts 4;
 *   1 hit; 2 hit; 3 evicts 1; 4 evicts 2; 5 hit
 * => 9 faults, 6 evictions.
 */
static void belady_on_a_hand_checked_trace(void **state)
{
	(void)state;
	static const int ref[] = { 1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5 };
	struct writer w = { 0 };
	for (size_t i = 0; i < sizeof(ref) / sizeof(ref[0]); i++)
		w_dev_fault(&w, B(ref[i]) + 4096 * (uint64_t)i, 1);
	char *path = tmpname("belady");
	w_write(&w, path, 3 * BLK);
	char *out = replay("--policy belady --policy lru", path);
	assert_int_equal(replay_field(out, "belady", "dev_faults"), 7);
	assert_int_equal(replay_field(out, "belady", "migrations_to_device"), 7);
	assert_int_equal(replay_field(out, "belady", "bytes_to_device"), 7 * BLK);
	assert_int_equal(replay_field(out, "belady", "evictions"), 4);
	assert_int_equal(replay_field(out, "belady", "bytes_to_system"), 4 * BLK);
	assert_int_equal(replay_field(out, "lru", "dev_faults"), 9);
	assert_int_equal(replay_field(out, "lru", "evictions"), 6);
	free(out);
	/* --dev-mib overrides the recorded size: 5 blocks hold them all. */
	out = replay("--dev-mib 10 --policy belady --policy lru", path);
	assert_int_equal(replay_field(out, "belady", "dev_faults"), 5);
	assert_int_equal(replay_field(out, "lru", "dev_faults"), 5);
	assert_int_equal(replay_field(out, "lru", "evictions"), 0);
	free(out);
	unlink(path);
}

/*
 * A cyclic scan of 3 blocks, 3 passes, on a device of 2.
 * LRU: every reference misses (each block is evicted just before the scan
 * comes back to it): 9 faults, 7 evictions.
 * MRU: pass 1: 0 1 miss, 2 evicts 1 {0 2}; pass 2: 0 hit, 1 evicts 2
 * {0 1}, 2 evicts 1 {0 2}; pass 3: 0 hit, 1 evicts 2, 2 evicts 1:
 * 7 faults, 5 evictions.
 */
static void mru_policy_beats_lru_on_a_cyclic_scan(void **state)
{
	(void)state;
	struct writer w = { 0 };
	for (int pass = 0; pass < 3; pass++)
		for (int b = 0; b < 3; b++)
			w_dev_fault(&w, B(b), 1);
	char *path = tmpname("mru");
	w_write(&w, path, 2 * BLK);
	char *out = replay("--policy lru --policy " UHMM_POLICY_DIR "/mru.so --policy mru", path);
	assert_int_equal(replay_field(out, "lru", "dev_faults"), 9);
	assert_int_equal(replay_field(out, "lru", "evictions"), 7);
	assert_int_equal(replay_field(out, "mru.so", "dev_faults"), 7);
	assert_int_equal(replay_field(out, "mru.so", "evictions"), 5);
	/* The built-in mru agrees with the example. */
	assert_int_equal(replay_field(out, "mru", "dev_faults"), 7);
	assert_non_null(strstr(out, "\"ejected\": \"\""));
	free(out);
	unlink(path);
}

/*
 * A hot block H, made resident by 4 migrations of 64 KiB (4 uses), then a
 * stream A B C D of blocks used once, with a device fault on H's first page
 * after B, C and D.  Device: 2 blocks.
 * LRU (by last migration): B evicts H; H misses and evicts A; C evicts B;
 * D evicts H; H misses, evicts C: 6 device faults, 5 evictions.
 * LFU: B evicts A (1 use against H's 4), C evicts B, D evicts C; H stays
 * and each of its faults is a hit: 4 device faults, 3 evictions.
 */
static void lfu_policy_keeps_a_hot_block(void **state)
{
	(void)state;
	struct writer w = { 0 };
	for (int i = 0; i < 4; i++)
		w_migrate(&w, B(0) + (uint64_t)i * 65536, 65536, 1);
	w_dev_fault(&w, B(1), 1);
	w_dev_fault(&w, B(2), 1);
	w_dev_fault(&w, B(0), 1);
	w_dev_fault(&w, B(3), 1);
	w_dev_fault(&w, B(0), 1);
	w_dev_fault(&w, B(4), 1);
	w_dev_fault(&w, B(0), 1);
	char *path = tmpname("lfu");
	w_write(&w, path, 2 * BLK);
	char *out = replay("--policy lru --policy " UHMM_POLICY_DIR "/lfu.so", path);
	assert_int_equal(replay_field(out, "lru", "dev_faults"), 6);
	assert_int_equal(replay_field(out, "lru", "evictions"), 5);
	assert_int_equal(replay_field(out, "lfu.so", "dev_faults"), 4);
	assert_int_equal(replay_field(out, "lfu.so", "evictions"), 3);
	free(out);
	unlink(path);
}

/*
 * The stride prefetcher.  Streaming: faults every 64 KiB through one block
 * (each its own batch).  The default migrates the whole block on the first
 * fault: 1 fault.  stride.so migrates 64 KiB on the first two, then sees
 * the stride and takes the rest of the block: 3 faults, the same 2 MiB.
 * Sparse: one fault in each of 3 blocks, no stride: the default moves
 * 3 blocks, stride.so 3 x 64 KiB.
 */
static void stride_policy_widens_on_a_stream(void **state)
{
	(void)state;
	struct writer w = { 0 };
	for (int i = 0; i < 32; i++)
		w_dev_fault(&w, B(0) + (uint64_t)i * 65536, 1);
	char *path = tmpname("stride");
	w_write(&w, path, 8 * BLK);
	char *out = replay("--policy lru --policy " UHMM_POLICY_DIR "/stride.so", path);
	assert_int_equal(replay_field(out, "lru", "dev_faults"), 1);
	assert_int_equal(replay_field(out, "lru", "bytes_to_device"), BLK);
	assert_int_equal(replay_field(out, "stride.so", "dev_faults"), 3);
	assert_int_equal(replay_field(out, "stride.so", "migrations_to_device"), 3);
	assert_int_equal(replay_field(out, "stride.so", "bytes_to_device"), BLK);
	free(out);

	w.n = 0;
	w_dev_fault(&w, B(0) + 7 * 4096, 1);
	w_dev_fault(&w, B(3) + 301 * 4096, 2);
	w_dev_fault(&w, B(1) + 77 * 4096, 1);
	w_write(&w, path, 8 * BLK);
	out = replay("--policy lru --policy " UHMM_POLICY_DIR "/stride.so", path);
	assert_int_equal(replay_field(out, "lru", "bytes_to_device"), 3 * BLK);
	assert_int_equal(replay_field(out, "stride.so", "dev_faults"), 3);
	assert_int_equal(replay_field(out, "stride.so", "bytes_to_device"), 3 * 65536);
	free(out);
	unlink(path);
}

/* ---- many threads ---- */

struct mt {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *p;
	int rounds;
};

static void *mt_main(void *arg)
{
	struct mt *m = arg;
	for (int i = 0; i < m->rounds; i++) {
		m->p[(size_t)(i % 16) * 4096] = (char)i;
		ASSERT_OK(uhmm_migrate(m->ctx, m->p, 64 * 1024, m->dev, 0));
		ASSERT_OK(uhmm_migrate(m->ctx, m->p, 64 * 1024, NULL, 0));
	}
	return NULL;
}

/*
 * Four threads migrate their own 64 KiB to the device and back, 400 times
 * each: 3200 migration records from five threads (the home half is
 * installed and recorded by the service thread), more than a thread's
 * buffer holds, so buffers are written out while the others record.  None
 * is lost: each thread's count is there, and the totals match the stats.
 */
static void records_of_many_threads_are_all_there(void **state)
{
	(void)state;
	enum { THREADS = 4, ROUNDS = 400 };
	char *path = tmpname("mt");
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.trace_path = path;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 8 * MiB;
	uhmm_device *dev;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, &dev));
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, THREADS * BLK, (void **)&p));
	pthread_t th[THREADS];
	struct mt m[THREADS];
	for (int i = 0; i < THREADS; i++) {
		m[i] = (struct mt){ .ctx = ctx, .dev = dev, .p = p + (size_t)i * BLK,
				    .rounds = ROUNDS };
		assert_int_equal(pthread_create(&th[i], NULL, mt_main, &m[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(ctx, &s));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	munmap(p, THREADS * BLK);

	struct tfile t = load(path);
	struct counts c = count(&t);
	assert_int_equal(c.to_dev_recs, THREADS * ROUNDS);
	assert_int_equal(c.kind[UHMM_TR_MIGRATE], 2 * THREADS * ROUNDS);
	assert_int_equal(c.to_dev_pages, s.migrated_to_device_pages);
	assert_int_equal(c.home_pages, s.migrated_to_system_pages);
	/* Per recording thread: each migrating thread's ROUNDS. */
	uint32_t tids[THREADS + 1] = { 0 };
	uint64_t per[THREADS + 1] = { 0 };
	for (size_t i = 0; i < t.n; i++) {
		if (t.v[i].r.kind != UHMM_TR_MIGRATE || !t.v[i].r.b)
			continue;
		int k;
		for (k = 0; k <= THREADS && tids[k] && tids[k] != t.v[i].tid; k++)
			;
		assert_true(k < THREADS);
		tids[k] = t.v[i].tid;
		per[k]++;
	}
	for (int k = 0; k < THREADS; k++)
		assert_int_equal(per[k], ROUNDS);
	tfile_free(&t);
	unlink(path);
}

/* SIGBUS mode: the faulting thread serves and records its own faults
 * (its first record allocates its buffer inside the handler). */
static void sigbus_mode_records_faults_on_the_faulting_thread(void **state)
{
	(void)state;
	char *path = tmpname("sigbus");
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.flags = UHMM_CTX_SIGBUS;
	o.fault_around = 1;
	o.trace_path = path;
	uhmm_ctx *ctx;
	int err = uhmm_ctx_create(&o, &ctx);
	if (err == -EOPNOTSUPP)
		TEST_SKIP("no UFFD_FEATURE_SIGBUS");
	ASSERT_OK(err);
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 8 * MiB;
	uhmm_device *dev;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, &dev));
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 64 * 4096, (void **)&p));
	uhmm_test_fill(p, 64 * 4096, 7);
	ASSERT_OK(uhmm_migrate(ctx, p, 64 * 4096, dev, 0));
	struct uhmm_stats s0, s1;
	ASSERT_OK(uhmm_stats_get(ctx, &s0));
	assert_int_equal(uhmm_test_check(p, 64 * 4096, 7), (size_t)-1);
	ASSERT_OK(uhmm_stats_get(ctx, &s1));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	munmap(p, 64 * 4096);

	struct tfile t = load(path);
	uint64_t mine = 0, dev_faults = 0;
	for (size_t i = 0; i < t.n; i++) {
		const struct trec *x = &t.v[i];
		if (x->r.kind != UHMM_TR_CPU_FAULT || x->r.c != UHMM_TR_CF_DEVICE)
			continue;
		dev_faults++;
		/* Recorded by the faulting thread, which it names. */
		mine += x->tid == (uint32_t)gettid() && x->r.len == (uint64_t)gettid();
	}
	assert_int_equal(dev_faults, s1.cpu_faults_device - s0.cpu_faults_device);
	assert_true(dev_faults >= 1);
	/* (One may have been handed to the service thread: no warm page.) */
	assert_true(mine >= dev_faults - 1);
	tfile_free(&t);
	unlink(path);
}

/* ---- the option ---- */

static void trace_option_and_environment(void **state)
{
	(void)state;
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	uhmm_ctx *ctx;
	/* A file that cannot be created: open(2)'s error. */
	o.trace_path = "/nonexistent-dir/trace";
	assert_int_equal(uhmm_ctx_create(&o, &ctx), -ENOENT);
	/* The size before trace_path is accepted (no trace). */
	o.size = UHMM_CTX_OPTS_SIZE_V4;
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	/* UHMM_TRACE wins over the struct. */
	char *path = tmpname("env");
	unlink(path);
	setenv("UHMM_TRACE", path, 1);
	uhmm_ctx_opts_init(&o);
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	unsetenv("UHMM_TRACE");
	struct tfile t = load(path);
	assert_int_equal(t.hdr.version, UHMM_TRACE_VERSION);
	tfile_free(&t);
	unlink(path);
}

/* Advice and prefetches are recorded, each with its range and location. */
static void advice_and_prefetch_are_recorded(void **state)
{
	(void)state;
	char *path = tmpname("adv");
	unlink(path);
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.trace_path = path;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 8ul << 20;
	uhmm_device *dev;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, &dev));
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 2ul << 20, (void **)&p));
	ASSERT_OK(uhmm_advise(ctx, p, 1ul << 20, UHMM_ADVISE_PREFERRED_LOCATION, dev));
	uhmm_prefetch_req *pf;
	ASSERT_OK(uhmm_prefetch(ctx, p, 2ul << 20, dev, 0, &pf));
	ASSERT_OK(uhmm_prefetch_wait(pf, -1));
	ASSERT_OK(uhmm_prefetch_release(pf));
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	struct tfile t = load(path);
	struct counts c = count(&t);
	assert_int_equal(c.kind[UHMM_TR_ADVICE], 1);
	assert_int_equal(c.kind[UHMM_TR_PREFETCH], 1);
	tfile_free(&t);
	unlink(path);
}

static void k_page_words(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	(void)uhmm_simdev_ld64(wi, (uint64_t *)arg + idx * (4096 / 8));
}

static void k_first_word(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	(void)idx;
	(void)uhmm_simdev_ld64(wi, (uint64_t *)arg);
}

/* Read-mostly duplicates (made, collapsed) and access-counter
 * notifications have records of their own. */
static void duplicates_and_counters_are_recorded(void **state)
{
	(void)state;
	char *path = tmpname("dupctr");
	unlink(path);
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.trace_path = path;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(&o, &ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 8ul << 20;
	so.counters = 1;
	so.counter_threshold = 8;
	uhmm_device *dev;
	ASSERT_OK(uhmm_simdev_create(ctx, &so, &dev));
	char *p, *q;
	ASSERT_OK(uhmm_alloc(ctx, 64 * 4096, (void **)&p));
	memset(p, 5, 64 * 4096);
	int e = uhmm_advise(ctx, p, 64 * 4096, UHMM_ADVISE_READ_MOSTLY, NULL);
	if (e == -EOPNOTSUPP)
		TEST_SKIP("no userfaultfd write-protection: no read-mostly duplicates");
	ASSERT_OK(e);
	ASSERT_OK(uhmm_simdev_launch(dev, k_page_words, 64, p));
	p[3 * 4096] = 1; /* collapses page 3 */
	ASSERT_OK(uhmm_alloc(ctx, 16 * 4096, (void **)&q));
	memset(q, 7, 16 * 4096);
	ASSERT_OK(uhmm_advise(ctx, q, 16 * 4096, UHMM_ADVISE_ACCESSED_BY, dev));
	ASSERT_OK(uhmm_simdev_launch(dev, k_first_word, 8, q));
	unsigned id = uhmm_device_id(dev);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_free(ctx, q));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	struct tfile t = load(path);
	uint64_t made = 0, collapsed = 0, ctr = 0;
	for (size_t i = 0; i < t.n; i++) {
		const struct uhmm_trace_rec *r = &t.v[i].r;
		if (r->kind == UHMM_TR_DUP && r->a == 1) {
			assert_int_equal(r->b, id);
			assert_true(r->addr >= (uintptr_t)p && r->addr < (uintptr_t)p + 64 * 4096);
			made += r->len;
		} else if (r->kind == UHMM_TR_DUP) {
			assert_int_equal(r->b, 0);
			collapsed += r->len;
		} else if (r->kind == UHMM_TR_COUNTER) {
			assert_int_equal(r->b, id);
			assert_int_equal(r->a, 1); /* the built-in migrates */
			assert_int_equal(r->span, 8);
			assert_true(r->addr >= (uintptr_t)q && r->addr < (uintptr_t)q + 16 * 4096);
			ctr++;
		}
	}
	assert_int_equal(made, 64 * 4096);
	assert_true(collapsed >= 4096);
	assert_int_equal(ctr, 1);
	tfile_free(&t);
	unlink(path);
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(trace_counts_match_stats),
	cmocka_unit_test(trace_round_trip),
	cmocka_unit_test(belady_on_a_hand_checked_trace),
	cmocka_unit_test(mru_policy_beats_lru_on_a_cyclic_scan),
	cmocka_unit_test(lfu_policy_keeps_a_hot_block),
	cmocka_unit_test(stride_policy_widens_on_a_stream),
	cmocka_unit_test(records_of_many_threads_are_all_there),
	cmocka_unit_test(sigbus_mode_records_faults_on_the_faulting_thread),
	cmocka_unit_test(trace_option_and_environment),
	cmocka_unit_test(advice_and_prefetch_are_recorded),
	cmocka_unit_test(duplicates_and_counters_are_recorded),
};

UHMM_TEST_MAIN(tests)
