/* SPDX-License-Identifier: MIT */
/*
 * Scenario "policy": what the policy layer's decisions are worth
 * (include/uhmm/policy.h, docs/ARCHITECTURE.md "Policy").  Each figure is a
 * ratio of two runs in the same process, minutes apart at most.
 *
 *   thrash    CPU and device take turns writing the same 512 pages (a
 *             2 MiB block: one kernel launch, then a CPU pass, ROUNDS
 *             times).  Thrashing
 *             control on (the default) / off (UHMM_THRASH=0): time.
 *             policy_thrash_on_vs_off_ratio (target <= 0.2).
 *   prefetch  A STREAM triad (a = b + s * c, floats) over device memory's
 *             size, each work item a 64 KiB chunk, with the built-in
 *             prefetcher (whole span) / without (UHMM_PREFETCH_THRESHOLD
 *             100: the faulting pages alone): device faults, and time.
 *             policy_prefetch_faults_ratio (target <= 0.1).
 *   evict     A trace of the streaming and of the random kernels of the
 *             oversubscription scenario at 1.5x and 2x device memory is
 *             recorded and replayed (uhmm-replay) with the built-in policy
 *             and with Belady's optimum: bytes moved, built-in / optimum.
 *             policy_evict_vs_opt_ratio = the worst of the four (target
 *             <= 1.5); the example policies' figures are reported too
 *             when their .so files are found.
 *   plugin    The CPU fault benchmark (a fault a page, fault_around 1)
 *             with a plug-in whose every callback delegates / with the
 *             built-in policy: median of paired rounds.
 *             policy_plugin_overhead_ratio (target <= 1.05).
 *
 *   readmostly  A table (16 MiB) read by the device (a kernel reading a
 *             word of every page) and by the CPU (every page) in turn,
 *             ROUNDS times, on a simdev with the "pcie4" link preset: with
 *             UHMM_ADVISE_READ_MOSTLY (the device reads its duplicate, the
 *             CPU its copy: nothing moves after the first round) / without
 *             advice (the table migrates both ways every round): time.
 *             policy_readmostly_ratio (target <= 0.2).
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uhmm/policy.h>

/* ---- contexts ----------------------------------------------------------- */

/* A context created with @env set to @val for its creation (the policy
 * reads its options then). */
static int ctx_with(struct bench_sc *sc, const char *env, const char *val, uint32_t fa,
		    uint64_t dev_bytes, uhmm_ctx **ctx, uhmm_device **dev)
{
	if (env)
		setenv(env, val, 1);
	int e = make_ctx_ra(sc, 0, fa, 0, dev_bytes, ctx, dev);
	if (env)
		unsetenv(env);
	return e;
}

/* ---- thrash ------------------------------------------------------------- */

#define PP 512u /* ping-pong pages */

struct wr {
	uint64_t *buf;
};

static void k_bump(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct wr *w = arg;
	uint64_t *p = &w->buf[idx * (PAGE / 8)];
	uhmm_simdev_st64(wi, p, uhmm_simdev_ld64(wi, p) + 1);
}

static int ping_pong(struct bench_sc *sc, const char *thrash, int rounds, uint64_t *ns,
		     uint64_t *migrations)
{
	uhmm_ctx *ctx;
	uhmm_device *dev;
	BCHECK(sc, ctx_with(sc, "UHMM_THRASH", thrash, 64, 64u << 20, &ctx, &dev));
	uint64_t *p;
	int e = uhmm_alloc(ctx, PP * PAGE, (void **)&p);
	if (e < 0) {
		uhmm_ctx_destroy(ctx);
		return bench_fail(sc, "uhmm_alloc", e);
	}
	uint64_t t0 = now_ns();
	for (int r = 0; r < rounds && !e; r++) {
		struct wr w = { p };
		e = uhmm_simdev_launch(dev, k_bump, PP, &w);
		for (size_t i = 0; i < PP; i++)
			p[i * (PAGE / 8)] += 1;
	}
	*ns = now_ns() - t0;
	for (size_t i = 0; i < PP && !e; i++)
		if (p[i * (PAGE / 8)] != 2 * (uint64_t)rounds)
			e = -EIO;
	struct uhmm_simdev_stats ss;
	uhmm_simdev_stats(dev, &ss);
	*migrations = ss.migrations;
	uhmm_ctx_destroy(ctx);
	return e < 0 ? bench_fail(sc, e == -EIO ? "ping-pong data" : "launch", e) : 0;
}

static int do_thrash(struct bench_sc *sc)
{
	int rounds = cfg.quick ? 30 : 200;
	uint64_t t_on, t_off, m_on, m_off;
	int e;
	if ((e = ping_pong(sc, "1", rounds, &t_on, &m_on)) < 0 ||
	    (e = ping_pong(sc, "0", rounds, &t_off, &m_off)) < 0)
		return e;
	bench_base(sc, "pingpong_off_ms", (double)t_off / 1e6, "ms",
		   "ping-pong, thrashing control off");
	bench_fig(sc, "pingpong_on_ms", (double)t_on / 1e6, "ms",
		  "ping-pong, thrashing control on");
	bench_ratio(sc, "policy_thrash_on_vs_off", (double)t_on / (double)t_off,
		    "ping-pong time, thrashing control on / off");
	bench_goal(sc, '<', 0.2);
	bench_note(sc, "ping-pong: %d rounds over %u pages; migrations %llu (on) / %llu (off)",
		   rounds, PP, (unsigned long long)m_on, (unsigned long long)m_off);
	return 0;
}

/* ---- prefetch ----------------------------------------------------------- */

struct triad {
	float *a, *b, *c;
	float s;
	uint64_t per; /* floats per work item */
};

static void k_triad(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct triad *t = arg;
	for (uint64_t i = idx * t->per; i < (idx + 1) * t->per; i++) {
		uint32_t xb = uhmm_simdev_ld32(wi, &t->b[i]), xc = uhmm_simdev_ld32(wi, &t->c[i]);
		float b, c, a;
		memcpy(&b, &xb, 4);
		memcpy(&c, &xc, 4);
		a = b + t->s * c;
		uint32_t xa;
		memcpy(&xa, &a, 4);
		uhmm_simdev_st32(wi, &t->a[i], xa);
	}
}

static int triad(struct bench_sc *sc, const char *threshold, uint64_t dev_bytes, uint64_t *ns,
		 uint64_t *faults)
{
	uhmm_ctx *ctx;
	uhmm_device *dev;
	BCHECK(sc, ctx_with(sc, "UHMM_PREFETCH_THRESHOLD", threshold, 64, dev_bytes, &ctx, &dev));
	size_t each = dev_bytes / 4; /* three arrays: 3/4 of the device */
	size_t n = each / sizeof(float);
	float *a, *b, *c;
	int e;
	if ((e = uhmm_alloc(ctx, each, (void **)&a)) < 0 ||
	    (e = uhmm_alloc(ctx, each, (void **)&b)) < 0 ||
	    (e = uhmm_alloc(ctx, each, (void **)&c)) < 0) {
		uhmm_ctx_destroy(ctx);
		return bench_fail(sc, "uhmm_alloc", e);
	}
	for (size_t i = 0; i < n; i++) {
		b[i] = (float)(i % 1000);
		c[i] = 2.0f;
	}
	struct triad t = { a, b, c, 3.0f, 16384 };
	uint64_t t0 = now_ns();
	e = uhmm_simdev_launch(dev, k_triad, n / t.per, &t);
	*ns = now_ns() - t0;
	struct uhmm_simdev_stats ss;
	uhmm_simdev_stats(dev, &ss);
	*faults = ss.faults;
	for (size_t i = 0; i < n && !e; i += 4099)
		if (a[i] != (float)(i % 1000) + 6.0f)
			e = -EIO;
	uhmm_ctx_destroy(ctx);
	return e < 0 ? bench_fail(sc, e == -EIO ? "triad data" : "launch", e) : 0;
}

static int do_prefetch(struct bench_sc *sc)
{
	uint64_t dev = cfg.quick ? 16u << 20 : 64u << 20;
	uint64_t t_on, t_off, f_on, f_off;
	int e;
	if ((e = triad(sc, "0", dev, &t_on, &f_on)) < 0 ||
	    (e = triad(sc, "100", dev, &t_off, &f_off)) < 0)
		return e;
	bench_base(sc, "triad_noprefetch_faults", (double)f_off, "",
		   "triad, device faults without the prefetcher");
	bench_fig(sc, "triad_prefetch_faults", (double)f_on, "",
		  "triad, device faults with the prefetcher");
	bench_ratio(sc, "policy_prefetch_faults", (double)f_on / (double)(f_off ? f_off : 1),
		    "triad device faults, prefetcher on / off");
	bench_goal(sc, '<', 0.1);
	bench_ratio(sc, "policy_prefetch_time", (double)t_on / (double)t_off,
		    "triad time, prefetcher on / off (must be < 1)");
	bench_goal(sc, '<', 1.0);
	bench_note(sc, "triad over %llu MiB of arrays (3/4 of the device): %.1f ms with, %.1f ms "
		   "without the prefetcher", (unsigned long long)(dev * 3 / 4 >> 20),
		   (double)t_on / 1e6, (double)t_off / 1e6);
	return 0;
}

/* ---- evict -------------------------------------------------------------- */

struct touch {
	uint64_t *buf;
	uint64_t pages, per, stride;
};

/* Streaming: item i reads and bumps one word of each of its pages. */
static void k_stream(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct touch *t = arg;
	for (uint64_t k = 0; k < t->per; k++) {
		uint64_t pg = idx * t->per + k;
		uint64_t *w = &t->buf[pg * (PAGE / 8)];
		uhmm_simdev_st64(wi, w, uhmm_simdev_ld64(wi, w) + 1);
	}
}

/* Random: item i bumps pages picked by a multiplicative hash. */
static void k_random(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct touch *t = arg;
	for (uint64_t k = 0; k < t->per; k++) {
		uint64_t pg = ((idx * t->per + k) * 0x9e3779b97f4a7c15ull >> 20) % t->pages;
		uint64_t *w = &t->buf[pg * (PAGE / 8)];
		uhmm_simdev_st64(wi, w, uhmm_simdev_ld64(wi, w) + 1);
	}
}

static int record(struct bench_sc *sc, const char *path, uint64_t dev_bytes, double f,
		  bool random)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.trace_path = path;
	uhmm_ctx *ctx;
	BCHECK(sc, uhmm_ctx_create(&o, &ctx));
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = dev_bytes;
	uhmm_device *dev;
	int e = uhmm_simdev_create(ctx, &so, &dev);
	uint64_t bytes = (uint64_t)((double)dev_bytes * f);
	uint64_t *p = NULL;
	if (!e)
		e = uhmm_alloc(ctx, bytes, (void **)&p);
	if (!e) {
		memset(p, 0, bytes);
		struct touch t = { p, bytes / PAGE, 16, 0 };
		uint64_t items = random ? t.pages / 16 / 8 : t.pages / 16;
		e = uhmm_simdev_launch(dev, random ? k_random : k_stream, items, &t);
	}
	uhmm_ctx_destroy(ctx);
	return e < 0 ? bench_fail(sc, "record a kernel", e) : 0;
}

/* uhmm-replay next to this program. */
static int replay_path(char *out, size_t n)
{
	char self[PATH_MAX];
	ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (k <= 0)
		return -ENOENT;
	self[k] = 0;
	snprintf(out, n, "%s/uhmm-replay", dirname(self));
	return access(out, X_OK) ? -ENOENT : 0;
}

/* bytes_moved of @pol in uhmm-replay's JSON. */
static double replay_bytes(const char *json, const char *pol)
{
	char key[96];
	snprintf(key, sizeof(key), "\"policy\": \"%s\"", pol);
	const char *p = strstr(json, key);
	if (!p || !(p = strstr(p, "\"bytes_moved\": ")))
		return -1;
	return strtod(p + strlen("\"bytes_moved\": "), NULL);
}

static int do_evict(struct bench_sc *sc)
{
	char tool[PATH_MAX];
	if (replay_path(tool, sizeof(tool))) {
		bench_note(sc, "evict: uhmm-replay not found next to uhmm-bench: not measured");
		return 0;
	}
	/* The example policies, if built (policies/NAME.so beside it). */
	char pols[PATH_MAX * 2] = "";
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", tool);
	char *d = dirname(dir);
	static const char *ex[] = { "lfu", "mru", "stride" };
	for (size_t i = 0; i < 3; i++) {
		char so[PATH_MAX];
		snprintf(so, sizeof(so), "%s/policies/%s.so", d, ex[i]);
		if (!access(so, R_OK)) {
			size_t l = strlen(pols);
			snprintf(pols + l, sizeof(pols) - l, " --policy %s", so);
		}
	}
	uint64_t dev = cfg.quick ? 16u << 20 : 64u << 20;
	static const struct {
		double f;
		bool random;
		const char *key;
	} runs[] = { { 1.5, false, "stream_1p5x" }, { 2, false, "stream_2x" },
		     { 1.5, true, "random_1p5x" }, { 2, true, "random_2x" } };
	double worst = 0;
	for (size_t k = 0; k < sizeof(runs) / sizeof(runs[0]); k++) {
		char path[64];
		snprintf(path, sizeof(path), "/tmp/uhmm-bench-policy-%d", (int)getpid());
		int e = record(sc, path, dev, runs[k].f, runs[k].random);
		if (e < 0)
			return e;
		char cmd[PATH_MAX * 4];
		snprintf(cmd, sizeof(cmd), "%s --json --policy lru --policy belady%s %s", tool,
			 pols, path);
		FILE *f = popen(cmd, "r");
		char *json = calloc(1, 1 << 16);
		size_t got = f && json ? fread(json, 1, (1 << 16) - 1, f) : 0;
		int st = f ? pclose(f) : -1;
		unlink(path);
		double lru = got ? replay_bytes(json, "lru") : -1;
		double opt = got ? replay_bytes(json, "belady") : -1;
		if (st != 0 || lru < 0 || opt <= 0) {
			free(json);
			return bench_fail(sc, "uhmm-replay", -EIO);
		}
		char key[96], what[160];
		double r = lru / opt;
		snprintf(key, sizeof(key), "evict_%s_vs_opt", runs[k].key);
		snprintf(what, sizeof(what), "%s: bytes moved, built-in / Belady", runs[k].key);
		bench_ratio(sc, key, r, what);
		if (r > worst)
			worst = r;
		for (size_t i = 0; i < 3; i++) {
			char name[32];
			snprintf(name, sizeof(name), "%s", ex[i]);
			double b = replay_bytes(json, name);
			if (b < 0) {
				snprintf(name, sizeof(name), "%s.so", ex[i]);
				b = replay_bytes(json, name);
			}
			if (b >= 0) {
				snprintf(key, sizeof(key), "evict_%s_%s_vs_opt", runs[k].key, ex[i]);
				snprintf(what, sizeof(what), "%s: bytes moved, %s / Belady",
					 runs[k].key, ex[i]);
				bench_ratio(sc, key, b / opt, what);
			}
		}
		free(json);
	}
	bench_ratio(sc, "policy_evict_vs_opt", worst,
		    "bytes moved by the built-in policy / Belady, worst of stream and random at "
		    "1.5x and 2x");
	bench_goal(sc, '<', 1.5);
	return 0;
}

/* ---- plugin ------------------------------------------------------------- */

static int d_cpu(void *st, const struct uhmm_pol_cpu_fault *f, struct uhmm_pol_cpu_act *a)
{
	(void)st;
	(void)f;
	(void)a;
	return 0;
}

static int d_dev(void *st, uhmm_loc dev, const struct uhmm_pol_dev_fault *f, size_t n,
		 struct uhmm_pol_dev_act *a)
{
	(void)st;
	(void)dev;
	(void)f;
	(void)n;
	(void)a;
	return 0;
}

static int d_evict(void *st, uhmm_loc dev, uint64_t need, const struct uhmm_pol_block *c,
		   size_t n, uint32_t *order)
{
	(void)st;
	(void)dev;
	(void)need;
	(void)c;
	(void)n;
	(void)order;
	return 0;
}

static void d_moved(void *st, uint64_t a, uint64_t l, uhmm_loc f, uhmm_loc t, uint64_t ns)
{
	(void)st;
	(void)a;
	(void)l;
	(void)f;
	(void)t;
	(void)ns;
}

static const struct uhmm_policy_ops delegate = {
	.version = UHMM_POLICY_VERSION, .size = sizeof(struct uhmm_policy_ops),
	.name = "delegate", .cpu_fault = d_cpu, .dev_faults = d_dev,
	.evict_order = d_evict, .migrated = d_moved,
};

struct side {
	uhmm_ctx *ctx;
	uhmm_device *dev;
	char *buf;
};

static int side_round(struct side *s, size_t pages, double *ns)
{
	int e = uhmm_migrate(s->ctx, s->buf, pages * PAGE, s->dev, 0);
	if (e)
		return e;
	uint64_t t = now_ns();
	for (size_t i = 0; i < pages; i++)
		(void)*(const volatile char *)(s->buf + i * PAGE);
	*ns = (double)(now_ns() - t) / (double)pages;
	return 0;
}

static int do_plugin(struct bench_sc *sc)
{
	size_t pages = cfg.quick ? 256 : 1024;
	int rounds = cfg.quick ? 6 : 4 * (cfg.reps < 3 ? 3 : cfg.reps);
	struct side s[2] = { { 0 }, { 0 } };
	double *pr = calloc((size_t)rounds, sizeof(double));
	int e = pr ? 0 : -ENOMEM;
	/* Both contexts' threads on the faulting thread's CPU (bench.h). */
	bench_pin_begin();
	for (int k = 0; k < 2 && !e; k++) {
		e = make_ctx_ra(sc, 0, 1, 0, 64u << 20, &s[k].ctx, &s[k].dev);
		if (!e)
			e = uhmm_alloc(s[k].ctx, pages * PAGE, (void **)&s[k].buf);
		if (!e)
			memset(s[k].buf, 0x5a, pages * PAGE);
	}
	if (!e)
		e = uhmm_policy_set(s[1].ctx, &delegate, NULL);
	double w, a, b;
	if (!e)
		e = side_round(&s[0], pages, &w);
	if (!e)
		e = side_round(&s[1], pages, &w);
	for (int r = 0; r < rounds && !e; r++) {
		/* Which goes first alternates. */
		if (r & 1) {
			e = side_round(&s[1], pages, &b);
			if (!e)
				e = side_round(&s[0], pages, &a);
		} else {
			e = side_round(&s[0], pages, &a);
			if (!e)
				e = side_round(&s[1], pages, &b);
		}
		pr[r] = b / a;
	}
	struct uhmm_policy_info pi;
	if (!e && !uhmm_policy_get(s[1].ctx, &pi) && pi.ejections)
		bench_note(sc, "plugin: the delegating policy was ejected (%s)", pi.ejected);
	for (int k = 0; k < 2; k++)
		if (s[k].ctx)
			uhmm_ctx_destroy(s[k].ctx);
	bench_pin_end();
	if (e) {
		free(pr);
		return bench_fail(sc, "plugin rounds", e);
	}
	struct dist d = dist_of(pr, (size_t)rounds);
	free(pr);
	bench_ratio(sc, "policy_plugin_overhead", d.median,
		    "CPU fault benchmark, delegating plug-in / built-in (median of round pairs)");
	bench_goal(sc, '<', 1.05);
	return 0;
}

/* ---- readmostly --------------------------------------------------------- */

#define RM_PAGES 4096u /* 16 MiB */
#define RM_ITEMS 512u  /* work items: each reads a word of RM_PAGES / RM_ITEMS pages */

struct rdsum {
	const uint64_t *buf;
	_Atomic uint64_t sum;
};

static void k_rdsum(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	struct rdsum *r = arg;
	uint64_t s = 0;
	for (uint64_t i = idx * (RM_PAGES / RM_ITEMS); i < (idx + 1) * (RM_PAGES / RM_ITEMS); i++)
		s += uhmm_simdev_ld64(wi, &r->buf[i * (PAGE / 8)]);
	atomic_fetch_add_explicit(&r->sum, s, memory_order_relaxed);
}

static int table_turns(struct bench_sc *sc, bool advised, int rounds, uint64_t *ns,
		       uint64_t *migrations)
{
	struct uhmm_ctx_opts o;
	uhmm_ctx_opts_init(&o);
	o.spin_us = cfg.spin_us;
	uhmm_ctx *ctx;
	uhmm_device *dev;
	int e = uhmm_ctx_create(&o, &ctx);
	if (e < 0)
		return bench_fail(sc, "uhmm_ctx_create", e);
	struct uhmm_simdev_opts so;
	uhmm_simdev_opts_init(&so);
	so.mem_bytes = 64u << 20;
	so.link = "pcie4";
	if ((e = uhmm_simdev_create(ctx, &so, &dev)) < 0) {
		uhmm_ctx_destroy(ctx);
		return bench_fail(sc, "uhmm_simdev_create", e);
	}
	uint64_t *p;
	if ((e = uhmm_alloc(ctx, RM_PAGES * PAGE, (void **)&p)) < 0) {
		uhmm_ctx_destroy(ctx);
		return bench_fail(sc, "uhmm_alloc", e);
	}
	uint64_t want = 0;
	for (size_t i = 0; i < RM_PAGES * (PAGE / 8); i++)
		p[i] = i;
	for (size_t i = 0; i < RM_PAGES; i++)
		want += i * (PAGE / 8);
	if (advised && (e = uhmm_advise(ctx, p, RM_PAGES * PAGE, UHMM_ADVISE_READ_MOSTLY, NULL)) < 0) {
		uhmm_ctx_destroy(ctx);
		return bench_fail(sc, "uhmm_advise", e);
	}
	uint64_t t0 = now_ns();
	for (int r = 0; r < rounds && !e; r++) {
		struct rdsum k = { .buf = p };
		e = uhmm_simdev_launch(dev, k_rdsum, RM_ITEMS, &k);
		if (!e && atomic_load(&k.sum) != want)
			e = -EIO;
		uint64_t cs = 0;
		for (size_t i = 0; i < RM_PAGES * (PAGE / 8); i += 8)
			cs += ((const volatile uint64_t *)p)[i];
		if (!e && cs == 0)
			e = -EIO;
	}
	*ns = now_ns() - t0;
	struct uhmm_stats st;
	uhmm_stats_get(ctx, &st);
	*migrations = st.migrated_to_device_pages + st.migrated_to_system_pages;
	struct uhmm_simdev_stats ss;
	uhmm_simdev_stats(dev, &ss);
	bench_progress("  readmostly %d: %llu device faults, %llu cpu faults, %llu ms\n", advised,
		       (unsigned long long)ss.faults, (unsigned long long)st.cpu_faults,
		       (unsigned long long)(*ns / 1000000));
	uhmm_ctx_destroy(ctx);
	return e < 0 ? bench_fail(sc, e == -EIO ? "read-mostly table data" : "launch", e) : 0;
}

static int do_readmostly(struct bench_sc *sc)
{
	int rounds = cfg.quick ? 20 : 100;
	uint64_t t_rm, t_no, m_rm, m_no;
	int e;
	if ((e = table_turns(sc, true, rounds, &t_rm, &m_rm)) < 0 ||
	    (e = table_turns(sc, false, rounds, &t_no, &m_no)) < 0)
		return e;
	bench_base(sc, "readmostly_none_ms", (double)t_no / 1e6, "ms",
		   "table read by device and CPU in turn, no advice");
	bench_fig(sc, "readmostly_advised_ms", (double)t_rm / 1e6, "ms",
		  "table read by device and CPU in turn, read-mostly");
	bench_ratio(sc, "policy_readmostly", (double)t_rm / (double)t_no,
		    "device/CPU table reads, read-mostly / no advice: time");
	bench_goal(sc, '<', 0.2);
	bench_note(sc, "readmostly: %d rounds over %u pages, link pcie4; pages moved %llu "
		   "(read-mostly) / %llu (none)", rounds, RM_PAGES, (unsigned long long)m_rm,
		   (unsigned long long)m_no);
	return 0;
}

int sc_policy(struct bench_sc *sc)
{
	int e;
	if ((e = do_thrash(sc)) < 0 || (e = do_prefetch(sc)) < 0 || (e = do_evict(sc)) < 0 ||
	    (e = do_plugin(sc)) < 0 || (e = do_readmostly(sc)) < 0)
		return e;
	return 0;
}
