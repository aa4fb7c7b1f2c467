/* SPDX-License-Identifier: MIT */
/*
 * simdev.c - the software device: options, creation and attachment, the
 * backend's ops table, memory info and fault injection.
 *
 * Locks: none of its own.  The ops forward to devmem.c and copy.c, which
 * take theirs; fault injection and statistics are lock-free atomics.
 *
 * Life of an attached simdev (uhmm_simdev_create): new (pool, copy
 * engine) -> attach -> compute start (page table, lanes, fault-service
 * thread, the notifier over the whole address space).  ops->destroy, called
 * by uhmm at detach or context destroy after every device page is freed,
 * runs it backwards: notifier, fault thread, lanes, copy engine, pool.
 */
#define _GNU_SOURCE
#include "simdev/simdev_internal.h"
#include "core/trace.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Numbers the default names simdev0, simdev1, ... across the process. */
static _Atomic unsigned simdev_seq;

/* ---- link presets (simdev.h, "Transfer model and link presets") --------- */

static const struct uhmm_simdev_link presets[] = {
	{ "pcie3", "PCIe 3.0 x16 (15.75 GB/s raw, ~12 GB/s achievable per direction)",
	  12.0, 2000, 2, 12.0, 3000 },
	{ "pcie4", "PCIe 4.0 x16 (31.5 GB/s raw, ~25 GB/s achievable per direction)",
	  25.0, 1500, 2, 25.0, 2500 },
	{ "pcie5", "PCIe 5.0 x16 (63 GB/s raw, ~50 GB/s achievable per direction)",
	  50.0, 1200, 2, 50.0, 2000 },
	{ "nvlink", "host over PCIe 5.0 x16, peers over NVLink 4 (450 GB/s raw per direction)",
	  50.0, 1200, 4, 360.0, 1000 },
	{ "c2c", "cache-coherent chip-to-chip link, NVLink-C2C class (450 GB/s raw per direction)",
	  360.0, 800, 4, 360.0, 1000 },
	{ "off", "no transfer model (memcpy speed)", 0, 0, 1, 0, 0 },
};
#define NPRESETS (sizeof(presets) / sizeof(presets[0]))

const struct uhmm_simdev_link *uhmm__link_preset(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < NPRESETS; i++)
		if (!strcmp(name, presets[i].name))
			return &presets[i];
	return NULL;
}

int uhmm_simdev_link_preset(const char *name, struct uhmm_simdev_link *out)
{
	const struct uhmm_simdev_link *p = uhmm__link_preset(name);

	if (!p || !out)
		return -EINVAL;
	*out = *p;
	return 0;
}

const char *uhmm_simdev_link_name(unsigned i)
{
	return i < NPRESETS ? presets[i].name : NULL;
}

/* True if @o sets no transfer model of its own (UHMM_SIMDEV_LINK applies). */
static bool opts_no_model(const struct uhmm_simdev_opts *o)
{
	return o->bandwidth_gbps == 0 && o->latency_ns == 0 &&
	       o->peer_bandwidth_gbps == 0 && o->peer_latency_ns == 0;
}

void uhmm_simdev_opts_init(struct uhmm_simdev_opts *opts)
{
	if (!opts)
		return;
	*opts = (struct uhmm_simdev_opts){
		.size = sizeof(*opts),
		.copy_threads = 1,
		.mem_bytes = 1ull << 30,
		.bandwidth_gbps = 0,
		.latency_ns = 0,
		.name = NULL,
		.compute_units = 2,
		.lanes_per_cu = 8,
		.fault_batch = 256,
		.tlb_entries = 64,
		.coherent = 0,
		.numa_node = -1,
		.link = NULL,
		.peer_bandwidth_gbps = 0,
		.peer_latency_ns = 0,
		.counters = 1,
		.counter_threshold = 256,
		.counter_region = 64 << 10,
		.dax = NULL,
	};
}

static int opts_check(const struct uhmm_simdev_opts *o)
{
	if (o->size < sizeof(*o))
		return -EINVAL;
	if (o->mem_bytes == 0 || o->mem_bytes % UHMM_HUGE_SIZE != 0)
		return -EINVAL;
	if (o->copy_threads == 0 || o->copy_threads > SIMDEV_MAX_THREADS)
		return -EINVAL;
	if (isnan(o->bandwidth_gbps) || o->bandwidth_gbps < 0)
		return -EINVAL;
	if (isnan(o->peer_bandwidth_gbps) || o->peer_bandwidth_gbps < 0)
		return -EINVAL;
	if (o->link && !uhmm__link_preset(o->link))
		return -EINVAL;
	if (o->compute_units < 1 || o->compute_units > 16)
		return -EINVAL;
	if (o->lanes_per_cu < 1 || o->lanes_per_cu > 64)
		return -EINVAL;
	if (o->fault_batch < 1 || o->fault_batch > 4096)
		return -EINVAL;
	if (o->tlb_entries < 1 || o->tlb_entries > 4096 ||
	    (o->tlb_entries & (o->tlb_entries - 1)))
		return -EINVAL;
	if (o->coherent > 1 || o->numa_node < -1 || o->numa_node >= SD_MAX_NODES)
		return -EINVAL;
	if (o->counters > 1 || o->counter_threshold < 1 || o->counter_threshold > SD_CTR_MAX ||
	    o->counter_region < UHMM_PAGE_SIZE || o->counter_region > UHMM_HUGE_SIZE ||
	    (o->counter_region & (o->counter_region - 1)))
		return -EINVAL;
	return 0;
}

/* mbind(MPOL_BIND) [base, base + len) to node (no libnuma: the syscall).
 * -EINVAL for a node the machine does not have. */
static int bind_node(void *base, size_t len, int node)
{
	unsigned long mask[SD_MAX_NODES / (8 * sizeof(unsigned long))] = { 0 };
	mask[(unsigned)node / (8 * sizeof(unsigned long))] |=
		1ul << ((unsigned)node % (8 * sizeof(unsigned long)));
	if (syscall(SYS_mbind, base, len, 2 /* MPOL_BIND */, mask,
		    (unsigned long)SD_MAX_NODES + 1, 0ul) < 0)
		return errno == EINVAL || errno == ENODEV ? -EINVAL : -errno;
	return 0;
}

/* ---- a DAX device in system-ram mode (simdev.h, uhmm_simdev_opts.dax) --- */

/* The device's name in @name without "/dev/": "dax" digits "." digits
 * (1..9 each, so no path component and no overflow), else NULL. */
static const char *dax_name(const char *name)
{
	if (!strncmp(name, "/dev/", 5))
		name += 5;
	if (strncmp(name, "dax", 3))
		return NULL;
	const char *c = name + 3;
	for (unsigned part = 0; part < 2; part++) {
		size_t n = 0;
		while (c[n] >= '0' && c[n] <= '9')
			n++;
		if (n < 1 || n > 9)
			return NULL;
		c += n;
		if (part == 0 && *c++ != '.')
			return NULL;
	}
	return *c ? NULL : name;
}

/* Reads the short file @path (a sysfs attribute) into @buf, NUL-ended
 * without its trailing newline; -errno on failure. */
static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n;
	do
		n = read(fd, buf, len - 1);
	while (n < 0 && errno == EINTR);
	int err = n < 0 ? (errno ? -errno : -EIO) : 0;
	close(fd);
	if (err)
		return err;
	size_t k = (size_t)n < len ? (size_t)n : len - 1;
	buf[k] = '\0';
	while (k > 0 && (buf[k - 1] == '\n' || buf[k - 1] == ' '))
		buf[--k] = '\0';
	return 0;
}

/*
 * The NUMA node of the DAX device @dax in system-ram mode, from sysfs
 * ($UHMM_SYSFS_ROOT, default /sys): -EINVAL a bad name or a node out of
 * range; -ENODEV no such device; -EOPNOTSUPP not in system-ram mode (the
 * kmem driver).  Whether the machine has the node, mbind tells (bind_node).
 */
static int dax_node(const char *dax, int *node)
{
	const char *name = dax_name(dax);
	if (!name)
		return -EINVAL;
	const char *root = getenv("UHMM_SYSFS_ROOT");
	if (!root || !*root)
		root = "/sys";
	char dir[4096], path[4096 + 16], buf[4096];
	int n = snprintf(dir, sizeof(dir), "%s/bus/dax/devices/%s", root, name);
	if (n < 0 || (size_t)n >= sizeof(dir))
		return -EINVAL; /* (a root too long to be a path) */
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return -ENODEV;
	/* The driver: its link's last component.  No link: no driver bound. */
	snprintf(path, sizeof(path), "%s/driver", dir);
	ssize_t l = readlink(path, buf, sizeof(buf) - 1);
	if (l < 0)
		return -EOPNOTSUPP;
	buf[l] = '\0';
	const char *drv = strrchr(buf, '/');
	drv = drv ? drv + 1 : buf;
	if (strcmp(drv, "kmem"))
		return -EOPNOTSUPP; /* device_dax: a MAP_SHARED mapping only */
	snprintf(path, sizeof(path), "%s/target_node", dir);
	if (read_small(path, buf, 32) != 0)
		return -ENODEV;
	char *end;
	errno = 0;
	long v = strtol(buf, &end, 10);
	if (end == buf || *end || errno || v < 0 || v >= SD_MAX_NODES)
		return -EINVAL;
	*node = (int)v;
	return 0;
}

int uhmm__simdev_new(const struct uhmm_simdev_opts *opts, struct simdev **out)
{
	struct uhmm_simdev_opts defaults;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!opts) {
		uhmm_simdev_opts_init(&defaults);
		opts = &defaults;
	}
	int err = opts_check(opts);
	if (err)
		return err;
	/* The node the memory is bound to: numa_node's, or the DAX device's
	 * (which numa_node, if given too, must name). */
	int node = opts->numa_node;
	if (opts->dax) {
		int dnode;
		err = dax_node(opts->dax, &dnode);
		if (err)
			return err;
		if (node >= 0 && node != dnode)
			return -EINVAL;
		node = dnode;
	}

	/* The link: a preset's figures, or the fields as given. */
	const struct uhmm_simdev_link *lk = uhmm__link_preset(opts->link);
	struct uhmm_simdev_link custom = {
		.name = opts_no_model(opts) ? "off" : "custom",
		.what = opts_no_model(opts) ? "no transfer model (memcpy speed)"
					    : "figures given in the options",
		.bandwidth_gbps = opts->bandwidth_gbps,
		.latency_ns = opts->latency_ns,
		.copy_engines = opts->copy_threads,
		.peer_bandwidth_gbps = opts->peer_bandwidth_gbps,
		.peer_latency_ns = opts->peer_latency_ns,
	};
	if (!lk)
		lk = &custom;

	struct simdev *sd = uhmm__umem_calloc(1, sizeof(*sd));
	if (!sd)
		return -ENOMEM;
	sd->bandwidth_gbps = lk->bandwidth_gbps;
	sd->latency_ns = lk->latency_ns;
	sd->peer_bandwidth_gbps = lk->peer_bandwidth_gbps;
	sd->peer_latency_ns = lk->peer_latency_ns;
	sd->link_name = lk->name; /* static strings either way */
	sd->link_what = lk->what;
	for (unsigned i = 0; i < 3; i++)
		atomic_init(&sd->link_free[i], 0);
	atomic_init(&sd->peer_copies, 0);
	atomic_init(&sd->peer_bytes, 0);
	atomic_init(&sd->link_model_ns, 0);
	atomic_init(&sd->peer_model_ns, 0);
	sd->compute_units = opts->compute_units;
	sd->lanes_per_cu = opts->lanes_per_cu;
	sd->fault_batch = opts->fault_batch;
	sd->tlb_entries = opts->tlb_entries;
	sd->counters = opts->counters;
	sd->counter_threshold = opts->counter_threshold;
	sd->counter_shift = (unsigned)__builtin_ctzll(opts->counter_region);
	for (unsigned i = 0; i <= SD_FI_MAX; i++) {
		atomic_init(&sd->fi[i].ok, 0);
		atomic_init(&sd->fi[i].fail, 0);
#ifdef UHMM_FAULT_INJECT
		atomic_init(&sd->fi[i].rate, 0);
		atomic_init(&sd->fi[i].draws, 0);
		atomic_init(&sd->fi[i].seed, 0);
#endif
		atomic_init(&sd->fi[i].injected, 0);
	}
	atomic_init(&sd->copies, 0);
	atomic_init(&sd->bytes_copied, 0);

	sd->coherent = opts->coherent;
	sd->numa_node = node;
	atomic_init(&sd->peer_access, false);
	err = uhmm__devmem_init(&sd->mem, opts->mem_bytes);
	if (err)
		goto fail_free;
	if (node >= 0) {
		/* Before anything touches it: pages are placed at first touch. */
		err = bind_node(sd->mem.base, sd->mem.bytes, node);
		if (err) {
			uhmm__devmem_fini(&sd->mem);
			goto fail_free;
		}
	}
	err = uhmm__copy_start(sd, lk->copy_engines);
	if (err)
		goto fail_mem;
	*out = sd;
	return 0;

fail_mem:
	uhmm__devmem_fini(&sd->mem);
fail_free:
	uhmm__umem_free(sd);
	return err;
}

/* ---- fault injection ---------------------------------------------------- */

#ifdef UHMM_FAULT_INJECT
/* splitmix64's output function: a bijection that mixes well. */
static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
#endif

bool uhmm__simdev_should_fail(struct simdev_fault *fp)
{
	/* Disarmed (the usual case): two relaxed loads. */
	uint64_t ok = atomic_load_explicit(&fp->ok, memory_order_relaxed);
	while (ok > 0)
		if (atomic_compare_exchange_weak_explicit(&fp->ok, &ok, ok - 1,
							  memory_order_relaxed,
							  memory_order_relaxed))
			return false;
	uint64_t fail = atomic_load_explicit(&fp->fail, memory_order_relaxed);
	if (!fail)
		return false;
#ifdef UHMM_FAULT_INJECT
	uint64_t rate = atomic_load_explicit(&fp->rate, memory_order_relaxed);
	if (rate) {
		/* The n-th draw is a pure function of (seed, n). */
		uint64_t n = atomic_fetch_add_explicit(&fp->draws, 1,
						       memory_order_relaxed);
		uint64_t seed = atomic_load_explicit(&fp->seed, memory_order_relaxed);
		if (mix64(seed + (n + 1) * 0x9e3779b97f4a7c15ull) >= rate)
			return false;
	}
#endif
	while (fail > 0)
		if (atomic_compare_exchange_weak_explicit(&fp->fail, &fail, fail - 1,
							  memory_order_relaxed,
							  memory_order_relaxed)) {
			atomic_fetch_add_explicit(&fp->injected, 1,
						  memory_order_relaxed);
			return true;
		}
	return false;
}

bool uhmm__simdev_due(struct simdev_fault *fp)
{
	uint64_t ok = atomic_load_explicit(&fp->ok, memory_order_relaxed);
	while (ok > 0)
		if (atomic_compare_exchange_weak_explicit(&fp->ok, &ok, ok - 1,
							  memory_order_relaxed,
							  memory_order_relaxed))
			return false;
#ifdef UHMM_FAULT_INJECT
	if (atomic_load_explicit(&fp->rate, memory_order_relaxed))
		return false; /* rate mode: the draws are the counted calls' */
#endif
	return atomic_load_explicit(&fp->fail, memory_order_relaxed) != 0;
}

/* The points that exist in this build. */
static bool point_ok(enum uhmm_simdev_fault what)
{
	if (what == UHMM_SIMDEV_FAIL_ALLOC || what == UHMM_SIMDEV_FAIL_COPY)
		return true;
#ifdef UHMM_FAULT_INJECT
	return what >= UHMM_SIMDEV_FAIL_PT && what <= SD_FI_MAX;
#else
	return false;
#endif
}

static bool point_known(enum uhmm_simdev_fault what)
{
	return what >= UHMM_SIMDEV_FAIL_ALLOC && what <= SD_FI_MAX;
}

/*
 * Arms @fp.  Each operation consumes one unit of `ok`, else (in rate mode,
 * when its draw says so) one of `fail`, so exactly @after operations pass
 * before the failures start, even under concurrency.  An operation racing
 * with the arming itself may count against either the old or the new
 * setting.  @rate: 0, or the threshold a draw must stay below.
 */
static void arm(struct simdev_fault *fp, uint64_t after, uint64_t fail,
		uint64_t rate, uint64_t seed)
{
	/* Disarm first so no operation sees the new `ok` with the old `fail`
	 * (or the new seed with the old rate). */
	atomic_store(&fp->fail, 0);
#ifdef UHMM_FAULT_INJECT
	atomic_store(&fp->rate, 0);
	atomic_store(&fp->seed, seed);
	atomic_store(&fp->draws, 0);
#else
	(void)seed;
	(void)rate;
#endif
	atomic_store(&fp->ok, fail ? after : 0);
#ifdef UHMM_FAULT_INJECT
	atomic_store(&fp->rate, rate);
#endif
	atomic_store(&fp->fail, fail);
}

int uhmm__simdev_inject(struct simdev *sd, enum uhmm_simdev_fault what,
			uint64_t after, uint64_t count)
{
	if (!point_known(what))
		return -EINVAL;
	if (!point_ok(what))
		return -EOPNOTSUPP;
	arm(&sd->fi[what], after, count, 0, 0);
	return 0;
}

int uhmm__simdev_inject_set(struct simdev *sd, enum uhmm_simdev_fault what,
			    const struct uhmm_simdev_fault_spec *spec)
{
	if (!point_known(what) || !spec || isnan(spec->rate) || spec->rate < 0 ||
	    spec->rate > 1)
		return -EINVAL;
#ifdef UHMM_FAULT_INJECT
	if (spec->rate == 0) {
		arm(&sd->fi[what], spec->after, spec->count, 0, 0);
		return 0;
	}
	uint64_t fail = spec->count ? spec->count : UINT64_MAX;
	/* rate * 2^64, kept below 2^64; 1.0 fails every draw (count mode). */
	uint64_t thr = spec->rate >= 1.0 ? 0 : (uint64_t)ldexp(spec->rate, 64);
	if (spec->rate < 1.0 && thr == 0)
		thr = 1;
	/* Each point its own stream, even with one seed for all. */
	uint64_t seed = mix64(spec->seed ^ ((uint64_t)what << 56));
	arm(&sd->fi[what], spec->after, fail, thr, seed);
	return 0;
#else
	return -EOPNOTSUPP;
#endif
}

#ifdef UHMM_FAULT_INJECT
static const struct {
	const char *name;
	enum uhmm_simdev_fault what;
} fi_names[] = {
	{ "alloc", UHMM_SIMDEV_FAIL_ALLOC },
	{ "copy", UHMM_SIMDEV_FAIL_COPY },
	{ "pt", UHMM_SIMDEV_FAIL_PT },
	{ "submit", UHMM_SIMDEV_FAIL_SUBMIT },
	{ "alloc4k", UHMM_SIMDEV_FAIL_ALLOC_4K },
	{ "alloc2m", UHMM_SIMDEV_FAIL_ALLOC_2M },
};

static bool parse_u64(const char *v, uint64_t *out)
{
	char *end;
	if (!*v || *v == '-')
		return false;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 0);
	if (errno || *end)
		return false;
	*out = x;
	return true;
}

static bool parse_rate(const char *v, double *out)
{
	char *end;
	if (!*v)
		return false;
	errno = 0;
	double x = strtod(v, &end);
	if (errno || *end || isnan(x) || x < 0 || x > 1)
		return false;
	*out = x;
	return true;
}

/* One point item "name[:key=value]*", @item NUL-terminated and writable. */
static int parse_point(char *item, enum uhmm_simdev_fault *what,
		       struct uhmm_simdev_fault_spec *spec, bool *has_seed)
{
	char *save = NULL;
	char *name = strtok_r(item, ":", &save);
	size_t i;

	if (!name)
		return -EINVAL;
	for (i = 0; i < sizeof(fi_names) / sizeof(fi_names[0]); i++)
		if (!strcmp(name, fi_names[i].name))
			break;
	if (i == sizeof(fi_names) / sizeof(fi_names[0]))
		return -EINVAL;
	*what = fi_names[i].what;
	*spec = (struct uhmm_simdev_fault_spec){ 0 };
	*has_seed = false;
	bool any = false;
	for (char *kv; (kv = strtok_r(NULL, ":", &save));) {
		char *eq = strchr(kv, '=');
		if (!eq)
			return -EINVAL;
		*eq = '\0';
		const char *v = eq + 1;
		bool ok;
		if (!strcmp(kv, "after")) {
			ok = parse_u64(v, &spec->after);
		} else if (!strcmp(kv, "count")) {
			ok = parse_u64(v, &spec->count);
			any = true;
		} else if (!strcmp(kv, "rate")) {
			ok = parse_rate(v, &spec->rate);
			any = true;
		} else if (!strcmp(kv, "seed")) {
			ok = parse_u64(v, &spec->seed);
			*has_seed = true;
		} else {
			ok = false;
		}
		if (!ok)
			return -EINVAL;
	}
	/* A bare name (or only after=) fails the next operation forever
	 * after: say what is meant instead. */
	return any ? 0 : -EINVAL;
}

int uhmm__simdev_inject_parse(struct simdev *sd, const char *env)
{
	enum { MAXITEMS = 32 };
	struct {
		enum uhmm_simdev_fault what;
		struct uhmm_simdev_fault_spec spec;
		bool has_seed;
	} items[MAXITEMS];
	size_t n = 0;
	uint64_t seed = 0;
	char *copy = uhmm__umem_strdup(env);
	char *save = NULL;
	int err = 0;

	if (!copy)
		return -ENOMEM;
	for (char *it = strtok_r(copy, ",", &save); it; it = strtok_r(NULL, ",", &save)) {
		char orig[128];
		snprintf(orig, sizeof(orig), "%s", it);
		if (!strncmp(it, "seed=", 5)) {
			if (!parse_u64(it + 5, &seed))
				err = -EINVAL;
		} else if (n == MAXITEMS) {
			err = -EINVAL;
		} else {
			err = parse_point(it, &items[n].what, &items[n].spec,
					  &items[n].has_seed);
			n += !err;
		}
		if (err) {
			fprintf(stderr, "uhmm simdev: UHMM_FAULT_INJECT: bad item '%s'\n",
				orig);
			break;
		}
	}
	uhmm__umem_free(copy);
	if (err)
		return err;
	for (size_t i = 0; i < n; i++) {
		if (!items[i].has_seed)
			items[i].spec.seed = seed;
		err = uhmm__simdev_inject_set(sd, items[i].what, &items[i].spec);
		if (err)
			return err;
	}
	return 0;
}
#else
int uhmm__simdev_inject_parse(struct simdev *sd, const char *env)
{
	(void)sd;
	(void)env;
	return -EOPNOTSUPP;
}
#endif

void uhmm__simdev_meminfo(struct simdev *sd, struct uhmm_simdev_meminfo *out)
{
	memset(out, 0, sizeof(*out));
	uhmm__devmem_info(&sd->mem, &out->total_pages, &out->free_pages,
			  &out->huge_free);
	out->copies = atomic_load_explicit(&sd->copies, memory_order_relaxed);
	out->bytes_copied = atomic_load_explicit(&sd->bytes_copied,
						 memory_order_relaxed);
	out->peer_copies = atomic_load_explicit(&sd->peer_copies, memory_order_relaxed);
	out->peer_bytes = atomic_load_explicit(&sd->peer_bytes, memory_order_relaxed);
	out->link_model_ns = atomic_load_explicit(&sd->link_model_ns, memory_order_relaxed);
	out->peer_model_ns = atomic_load_explicit(&sd->peer_model_ns, memory_order_relaxed);
	uhmm__devmem_huge_info(&sd->mem, &out->huge_pages, &out->huge_allocs,
			       &out->huge_splits);
}

/* ---- ops table ---------------------------------------------------------- */

static long simdev_alloc(void *priv, unsigned order, size_t n, uint64_t *dpfn)
{
	struct simdev *sd = priv;

	if ((order == 0 || order == UHMM_HUGE_ORDER) && n > 0 && dpfn) {
		/* Each armed point counts the call (no short-circuit).  The
		 * plain point fails a 2 MiB call without counting it (a
		 * batch of uhmm that gets none falls back to 4 KiB pages,
		 * whose call is counted): one count per batch either way. */
		struct simdev_fault *fa = &sd->fi[UHMM_SIMDEV_FAIL_ALLOC];
		bool fail = order == 0 ? uhmm__simdev_should_fail(fa)
				       : uhmm__simdev_due(fa);
		if (order == 0)
			fail |= SD_FI(sd, UHMM_SIMDEV_FAIL_ALLOC_4K);
		else
			fail |= SD_FI(sd, UHMM_SIMDEV_FAIL_ALLOC_2M);
		if (fail)
			return 0;
	}
	return uhmm__devmem_alloc(&sd->mem, order, n, dpfn);
}

static void simdev_free(void *priv, unsigned order, size_t n, const uint64_t *dpfn)
{
	struct simdev *sd = priv;
	uhmm__devmem_free(&sd->mem, order, n, dpfn);
}

static void simdev_split(void *priv, unsigned order, uint64_t dpfn)
{
	struct simdev *sd = priv;
	if (order != UHMM_HUGE_ORDER) {
		simdev_bug("split of order %u", order);
		return;
	}
	uhmm__devmem_split(&sd->mem, dpfn);
}

static int simdev_copy_submit(void *priv, struct uhmm_copy *copies, size_t n,
			      uhmm_fence_t *fence)
{
	struct simdev *sd = priv;

	if (n > 0 && copies && fence && SD_FI(sd, UHMM_SIMDEV_FAIL_SUBMIT))
		return -EIO; /* nothing queued */
	return uhmm__copy_submit(sd, copies, n, fence);
}

static int simdev_copy_wait(void *priv, uhmm_fence_t fence)
{
	return uhmm__copy_wait(priv, fence);
}

static int simdev_fence(void *priv)
{
	return uhmm__copy_fence(priv);
}

/* Called once, after every page is freed and every fence waited for. */
static void simdev_destroy(void *priv)
{
	struct simdev *sd = priv;

	if (!sd)
		return;
	if (sd->hop_notifier)
		(void)uhmm_notifier_remove(sd->hop_notifier);
	sd->hop_notifier = NULL;
	uhmm__compute_stop(sd);
	uhmm__copy_stop(sd);
	uhmm__devmem_fini(&sd->mem);
	uhmm__umem_free(sd);
}

/* Coherent mode: the pool is the coherent memory (device.h). */
static int simdev_coherent_mem(void *priv, void **base, size_t *len)
{
	struct simdev *sd = priv;

	if (!sd->coherent)
		return -EOPNOTSUPP;
	*base = sd->mem.base;
	*len = sd->mem.bytes;
	return 0;
}

/* The kinds of a link's two ends by its name (the presets'; "custom":
 * other; "off": no link, memcpy). */
static void link_kinds(const char *name, uint32_t *host, uint32_t *peer)
{
	if (!strncmp(name, "pcie", 4)) {
		*host = *peer = UHMM_LINK_PCIE;
	} else if (!strcmp(name, "nvlink")) {
		*host = UHMM_LINK_PCIE;
		*peer = UHMM_LINK_NVLINK;
	} else if (!strcmp(name, "c2c")) {
		*host = UHMM_LINK_C2C;
		*peer = UHMM_LINK_NVLINK;
	} else if (!strcmp(name, "off")) {
		*host = *peer = UHMM_LINK_MEMCPY;
	} else {
		*host = *peer = UHMM_LINK_OTHER;
	}
}

/* The topology query's description (device.h): the link preset's figures;
 * every simdev of the process can reach every other's memory (peer
 * access), so they share one peer domain. */
static int simdev_describe(void *priv, struct uhmm_device_desc *out)
{
	struct simdev *sd = priv;

	if (out->size < sizeof(*out))
		return -EINVAL; /* (uhmm's own header: never) */
	out->numa_node = sd->numa_node;
	out->mem_bytes = sd->mem.bytes;
	link_kinds(sd->link_name, &out->host.kind, &out->peer.kind);
	/* (the nvlink preset's host link is PCIe 5.0) */
	snprintf(out->host.name, sizeof(out->host.name), "%s",
		 !strcmp(sd->link_name, "nvlink") ? "pcie5" : sd->link_name);
	snprintf(out->peer.name, sizeof(out->peer.name), "%s",
		 out->peer.kind == UHMM_LINK_NVLINK ? "nvlink" : sd->link_name);
	out->host.bandwidth_gbps = sd->bandwidth_gbps;
	out->host.latency_ns = sd->latency_ns;
	out->peer.bandwidth_gbps = sd->peer_bandwidth_gbps;
	out->peer.latency_ns = sd->peer_latency_ns;
	out->peer_domain = &uhmm__simdev_ops;
	return 0;
}

/* Accessed-by advice (device.h): queued for the fault-service thread. */
static void simdev_map_range(void *priv, uint64_t start, uint64_t end)
{
	struct simdev *sd = priv;

	if (sd && sd->comp)
		uhmm__fault_map_request(sd->comp, (uintptr_t)start, (uintptr_t)end);
}

const struct uhmm_device_ops uhmm__simdev_ops = {
	.alloc = simdev_alloc,
	.free = simdev_free,
	.copy_submit = simdev_copy_submit,
	.copy_wait = simdev_copy_wait,
	.fence = simdev_fence,
	.destroy = simdev_destroy,
	.coherent_mem = simdev_coherent_mem,
	.describe = simdev_describe,
	.split = simdev_split,
	.map_range = simdev_map_range,
};

int uhmm_simdev_poison(uhmm_device *dev, const void *addr)
{
	struct simdev *sd = uhmm__simdev_of(dev);

	if (!sd || !sd->comp)
		return -EINVAL;
	uintptr_t va = (uintptr_t)addr & ~(uintptr_t)(UHMM_PAGE_SIZE - 1);
	uint64_t e = 0;
	struct uhmm_range_req req = { .start = va, .end = va + UHMM_PAGE_SIZE,
				      .flags = UHMM_RF_SNAPSHOT, .device = dev,
				      .entries = &e };
	uhmm_ctx *ctx = sd->comp->ctx;
	if (!addr)
		return -EINVAL;
	struct uhmm_page_info info;
	int err = uhmm_page_query(ctx, addr, &info); /* -EFAULT: not managed */
	if (err)
		return err;
	err = uhmm_range_fault(ctx, &req);
	if (err)
		return err;
	/* Where the page is in our memory: its frame. */
	if (!(e & (UHMM_RE_DEVICE | UHMM_RE_COHERENT)) || (e & UHMM_RE_EXCLUSIVE))
		return -EINVAL;
	/* (That page only: it may move off the frame from here on, and the
	 * frame go to another page.) */
	return uhmm_device_page_lost_at(dev, e & UHMM_RE_DPFN_MASK, addr);
}

/* ---- public API --------------------------------------------------------- */

/* The hop notifier's callback: an invalidation in this thread ends its run
 * of FROM_DEVICE spans (copy.c, peer hops). */
static void hops_invalidate(struct uhmm_notifier *n, const struct uhmm_inv_event *ev,
			    void *priv)
{
	(void)n;
	(void)ev;
	(void)priv;
	uhmm__copy_hops_forget();
}

int uhmm_simdev_create(uhmm_ctx *ctx, const struct uhmm_simdev_opts *opts,
		       uhmm_device **out)
{
	struct simdev *sd;
	char namebuf[32];
	struct uhmm_simdev_opts o;

	if (!out)
		return -EINVAL;
	if (!ctx)
		return -EBADF;
	/* A program built against an older header passes the smaller struct
	 * it knows (checked before reading past it): the fields it does not
	 * have keep their defaults.  One built against a newer header is
	 * refused. */
	if (opts && opts->size != UHMM_SIMDEV_OPTS_SIZE_V1 && opts->size != sizeof(o))
		return -EINVAL;
	uhmm_simdev_opts_init(&o);
	if (opts) {
		memcpy(&o, opts, opts->size);
		o.size = sizeof(o);
	}
	/* UHMM_SIMDEV_LINK names the preset of simdevs whose options choose
	 * no link of their own. */
	const char *link_env = getenv("UHMM_SIMDEV_LINK");
	if (link_env && *link_env && !o.link && opts_no_model(&o)) {
		if (!uhmm__link_preset(link_env)) {
			fprintf(stderr, "uhmm simdev: UHMM_SIMDEV_LINK: no preset '%s'\n", link_env);
			return -EINVAL;
		}
		o.link = link_env;
	}
	/* The access counters' variables win over the options. */
	static const struct {
		const char *env;
		int which;
	} cenv[] = { { "UHMM_SIMDEV_COUNTERS", 0 },
		     { "UHMM_SIMDEV_COUNTER_THRESHOLD", 1 },
		     { "UHMM_SIMDEV_COUNTER_REGION", 2 } };
	for (unsigned i = 0; i < 3; i++) {
		const char *v = getenv(cenv[i].env);
		if (!v || !*v)
			continue;
		char *end;
		errno = 0;
		unsigned long long x = strtoull(v, &end, 0);
		if (*end || errno || x > UINT32_MAX) {
			fprintf(stderr, "uhmm simdev: %s: bad value '%s'\n", cenv[i].env, v);
			return -EINVAL;
		}
		if (cenv[i].which == 0)
			o.counters = (uint32_t)x;
		else if (cenv[i].which == 1)
			o.counter_threshold = (uint32_t)x;
		else
			o.counter_region = x;
	}
	int err = uhmm__simdev_new(&o, &sd);
	if (err)
		return err;

	const char *name = o.name;
	if (!name) {
		snprintf(namebuf, sizeof(namebuf), "simdev%u",
			 atomic_fetch_add(&simdev_seq, 1));
		name = namebuf;
	}
	err = uhmm_device_attach(ctx, &uhmm__simdev_ops, sd, name, out);
	if (err) {
		simdev_destroy(sd);
		return err;
	}
	uhmm__trace_device_mem(*out, sd->mem.bytes);
	err = uhmm__compute_start(sd, ctx, *out);
	if (!err)
		err = uhmm_notifier_insert(ctx, SD_VA_START, SD_VA_END - SD_VA_START,
					   hops_invalidate, sd, &sd->hop_notifier);
	if (err)
		sd->hop_notifier = NULL;
#ifdef UHMM_FAULT_INJECT
	/* Armed last: creation itself never meets an injected failure. */
	const char *env = getenv("UHMM_FAULT_INJECT");
	if (!err && env && *env)
		err = uhmm__simdev_inject_parse(sd, env);
#endif
	if (err) {
		/* Nothing is on the device yet: detach only destroys it. */
		(void)uhmm_device_detach(*out);
		*out = NULL;
		return err;
	}
	return 0;
}

struct simdev *uhmm__simdev_of(uhmm_device *dev)
{
	if (!dev || uhmm_device_ops_of(dev) != &uhmm__simdev_ops)
		return NULL;
	return uhmm_device_priv(dev);
}

int uhmm_simdev_peer_access(uhmm_device *dev, int on)
{
	struct simdev *sd = uhmm__simdev_of(dev);

	if (!sd || (on != 0 && on != 1))
		return -EINVAL;
	atomic_store_explicit(&sd->peer_access, on == 1, memory_order_relaxed);
	return 0;
}

int uhmm_simdev_link_info(uhmm_device *dev, struct uhmm_simdev_link *out)
{
	struct simdev *sd = uhmm__simdev_of(dev);

	if (!sd || !out)
		return -EINVAL;
	*out = (struct uhmm_simdev_link){
		.name = sd->link_name,
		.what = sd->link_what,
		.bandwidth_gbps = sd->bandwidth_gbps,
		.latency_ns = sd->latency_ns,
		.copy_engines = sd->eng.nthreads,
		.peer_bandwidth_gbps = sd->peer_bandwidth_gbps,
		.peer_latency_ns = sd->peer_latency_ns,
	};
	return 0;
}

int uhmm_simdev_meminfo(uhmm_device *dev, struct uhmm_simdev_meminfo *out)
{
	struct simdev *sd = uhmm__simdev_of(dev);

	if (!sd || !out)
		return -EINVAL;
	uhmm__simdev_meminfo(sd, out);
	return 0;
}

int uhmm_simdev_inject(uhmm_device *dev, enum uhmm_simdev_fault what,
		       uint64_t after, uint64_t count)
{
	struct simdev *sd = uhmm__simdev_of(dev);

	if (!sd)
		return -EINVAL;
	return uhmm__simdev_inject(sd, what, after, count);
}

int uhmm_simdev_inject_set(uhmm_device *dev, enum uhmm_simdev_fault what,
			   const struct uhmm_simdev_fault_spec *spec)
{
	struct simdev *sd = uhmm__simdev_of(dev);

	if (!sd)
		return -EINVAL;
	return uhmm__simdev_inject_set(sd, what, spec);
}

int uhmm_simdev_stats(uhmm_device *dev, struct uhmm_simdev_stats *out)
{
	struct simdev *sd = uhmm__simdev_of(dev);

	if (!sd || !sd->comp || !out)
		return -EINVAL;
	uhmm__compute_stats(sd->comp, out);
	out->injected_alloc = atomic_load(&sd->fi[UHMM_SIMDEV_FAIL_ALLOC].injected) +
			      atomic_load(&sd->fi[UHMM_SIMDEV_FAIL_ALLOC_4K].injected) +
			      atomic_load(&sd->fi[UHMM_SIMDEV_FAIL_ALLOC_2M].injected);
	out->injected_copy = atomic_load(&sd->fi[UHMM_SIMDEV_FAIL_COPY].injected);
	out->injected_submit = atomic_load(&sd->fi[UHMM_SIMDEV_FAIL_SUBMIT].injected);
	out->injected_pt = atomic_load(&sd->fi[UHMM_SIMDEV_FAIL_PT].injected);
	return 0;
}

/* ---- another tenant (uhmm_simdev_set_tenant) ----------------------------- */

/* Tenant calls one at a time (rare, and they may sleep for seconds). */
static pthread_mutex_t tenant_lock = PTHREAD_MUTEX_INITIALIZER;

int uhmm_simdev_set_tenant(uhmm_device *dev, uint64_t bytes)
{
	struct simdev *sd = uhmm__simdev_of(dev);
	if (!sd || bytes % UHMM_HUGE_SIZE || bytes > sd->mem.bytes)
		return -EINVAL;
	uint32_t want = (uint32_t)(bytes / UHMM_HUGE_SIZE);
	pthread_mutex_lock(&tenant_lock);
	uint32_t have = sd->mem.ntenant, start = have;
	while (have > want && uhmm__devmem_tenant_give(&sd->mem))
		have--;
	/* Free chunks first, from the top; then the top chunks the tenant
	 * does not hold are emptied by uhmm (their pages evicted to system
	 * memory) and taken.  A chunk a migration in flight allocates from
	 * is taken on a later turn.  Up to 2 s, then everything this call
	 * took goes back. */
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int err = 0;
	while (have < want) {
		for (uint32_t ci = sd->mem.nchunks; ci-- > 0 && have < want;)
			have += uhmm__devmem_tenant_take(&sd->mem, ci);
		for (uint32_t ci = sd->mem.nchunks; ci-- > 0 && have < want;) {
			if (uhmm__devmem_tenant_has(&sd->mem, ci))
				continue;
			int e = uhmm_device_evict_frames(dev, (uint64_t)ci * SIMDEV_CHUNK_PAGES,
							 SIMDEV_CHUNK_PAGES);
			if (e && e != -EBUSY) {
				err = e;
				break;
			}
			have += uhmm__devmem_tenant_take(&sd->mem, ci);
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (err || (now.tv_sec - t0.tv_sec) * 1000000000l + (now.tv_nsec - t0.tv_nsec) >
				   2000000000l) {
			if (!err)
				err = -EBUSY;
			while (have > start && uhmm__devmem_tenant_give(&sd->mem))
				have--;
			break;
		}
		if (have < want) {
			struct timespec nap = { .tv_nsec = 1000000 };
			nanosleep(&nap, NULL);
		}
	}
	pthread_mutex_unlock(&tenant_lock);
	return err;
}
