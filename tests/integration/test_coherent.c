/* SPDX-License-Identifier: MIT */
/*
 * Coherent device memory (issue 19): a device whose memory the CPU can
 * address.  Pages migrated there are mapped in place at their address: the
 * CPU reads and writes them without a fault and without migrating them
 * back; they count in the device's memory, are evicted under pressure,
 * move system -> coherent -> other coherent -> system with the caller
 * choosing; range fault, exclusive access and fork treat them as the
 * kernel treats MEMORY_DEVICE_COHERENT pages.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uhmm/device.h>
#include <uhmm/mirror.h>
#include <uhmm/simdev.h>
#include <uhmm/topology.h>
#include <uhmm/uhmm.h>

#include "core/internal.h"
#include "testlib.h"

#define MiB (1ul << 20)
#define PG 4096ul

static uhmm_device *coherent_dev(uhmm_ctx *ctx, uint64_t bytes)
{
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = bytes;
	o.coherent = 1;
	uhmm_device *d;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &d));
	return d;
}

/* Pages of [p, p + len) in place in @dev's coherent memory. */
static size_t coherent_on(uhmm_ctx *ctx, const void *p, size_t len, uhmm_device *dev)
{
	size_t n = 0;
	for (size_t off = 0; off < len; off += PG) {
		struct uhmm_page_info info;
		ASSERT_OK(uhmm_page_query(ctx, (const char *)p + off, &info));
		n += info.where == UHMM_WHERE_COHERENT && info.device == dev;
	}
	return n;
}

/* Pages of [p, p + len) present in the CPU page table. */
static size_t present(const void *p, size_t len)
{
	unsigned char v[512];
	size_t n = 0;
	for (size_t off = 0; off < len; off += sizeof(v) * PG) {
		size_t l = len - off < sizeof(v) * PG ? len - off : sizeof(v) * PG;
		assert_int_equal(mincore((char *)p + off, l, v), 0);
		for (size_t i = 0; i < l / PG; i++)
			n += v[i] & 1;
	}
	return n;
}

static struct uhmm_stats stats(uhmm_ctx *ctx)
{
	struct uhmm_stats s;
	ASSERT_OK(uhmm_stats_get(ctx, &s));
	return s;
}

/* The CPU reads and writes coherent pages where they are: no fault, no
 * migration back, the pages stay the device's. */
static void cpu_reads_and_writes_in_place(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *dev = coherent_dev(ctx, 8 * MiB);
	size_t len = 1 * MiB, np = len / PG;
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 7);
	ASSERT_OK(uhmm_migrate(ctx, p, len, dev, 0));
	assert_int_equal(coherent_on(ctx, p, len, dev), np);
	assert_int_equal(present(p, len), np); /* mapped in place */
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(dev, &ds));
	assert_int_equal(ds.coherent, 1);
	assert_int_equal(ds.coherent_pages, np);
	assert_int_equal(ds.bytes_in_use, len);

	struct uhmm_stats s0 = stats(ctx);
	assert_int_equal(uhmm_test_check(p, len, 7), (size_t)-1);
	uhmm_test_fill(p, len, 8); /* writes, in place */
	assert_int_equal(uhmm_test_check(p, len, 8), (size_t)-1);
	struct uhmm_stats s1 = stats(ctx);
	assert_int_equal(s1.cpu_faults, s0.cpu_faults);
	assert_int_equal(s1.migrated_to_system_pages, s0.migrated_to_system_pages);
	assert_int_equal(coherent_on(ctx, p, len, dev), np);

	/* Home, with what the CPU wrote there. */
	ASSERT_OK(uhmm_migrate(ctx, p, len, NULL, 0));
	assert_int_equal(coherent_on(ctx, p, len, dev), 0);
	ASSERT_OK(uhmm_device_stats(dev, &ds));
	assert_int_equal(ds.coherent_pages, 0);
	assert_int_equal(ds.bytes_in_use, 0);
	assert_int_equal(uhmm_test_check(p, len, 8), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* system -> coherent A -> coherent B -> private C -> coherent A -> system,
 * with writes at each stop; never-touched pages stay zeros. */
static void system_coherent_coherent_private_system(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *a = coherent_dev(ctx, 8 * MiB), *b = coherent_dev(ctx, 8 * MiB), *c;
	ASSERT_OK(uhmm_simdev_create(ctx, NULL, &c));
	size_t len = 3 * MiB, np = len / PG;
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	uhmm_test_fill(p, MiB, 1);
	uhmm_test_fill(p + MiB, MiB, 101); /* the last MiB never touched */

	ASSERT_OK(uhmm_migrate(ctx, p, len, a, 0));
	assert_int_equal(coherent_on(ctx, p, len, a), np);
	assert_int_equal(uhmm_test_check(p, MiB, 1), (size_t)-1);
	assert_int_equal(uhmm_test_check(p + MiB, MiB, 101), (size_t)-1);
	uhmm_test_fill(p, 1 * MiB, 2);

	ASSERT_OK(uhmm_migrate(ctx, p, len, b, 0));
	assert_int_equal(coherent_on(ctx, p, len, b), np);
	assert_int_equal(coherent_on(ctx, p, len, a), 0);
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(a, &ds));
	assert_int_equal(ds.bytes_in_use, 0);
	assert_int_equal(ds.coherent_pages, 0);
	ASSERT_OK(uhmm_device_stats(b, &ds));
	assert_int_equal(ds.coherent_pages, np);
	assert_int_equal(uhmm_test_check(p, 1 * MiB, 2), (size_t)-1);
	assert_int_equal(uhmm_test_check(p + MiB, MiB, 101), (size_t)-1);
	uhmm_test_fill(p + 1 * MiB, 1 * MiB, 3);

	ASSERT_OK(uhmm_migrate(ctx, p, len, c, 0));
	assert_int_equal(uhmm_test_pages_on(ctx, p, len, c), np);
	assert_int_equal(present(p, len), 0); /* private: out of the page table */
	ASSERT_OK(uhmm_device_stats(b, &ds));
	assert_int_equal(ds.bytes_in_use, 0);

	ASSERT_OK(uhmm_migrate(ctx, p, len, a, 0));
	assert_int_equal(coherent_on(ctx, p, len, a), np);
	assert_int_equal(uhmm_test_check(p, 1 * MiB, 2), (size_t)-1);
	assert_int_equal(uhmm_test_check(p + MiB, 1 * MiB, 3), (size_t)-1);
	for (size_t i = 2 * MiB; i < len; i += 512)
		assert_int_equal(p[i], 0);

	struct uhmm_stats s0 = stats(ctx);
	ASSERT_OK(uhmm_migrate(ctx, p, len, NULL, 0));
	struct uhmm_stats s1 = stats(ctx);
	assert_int_equal(s1.migrated_to_system_pages - s0.migrated_to_system_pages, np);
	assert_int_equal(uhmm_test_check(p, 1 * MiB, 2), (size_t)-1);
	assert_int_equal(uhmm_test_check(p + MiB, 1 * MiB, 3), (size_t)-1);
	for (size_t i = 2 * MiB; i < len; i += 512)
		assert_int_equal(p[i], 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* A full coherent device evicts its least recently used pages home. */
static void eviction_under_pressure(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *dev = coherent_dev(ctx, 4 * MiB);
	size_t len = 3 * MiB;
	char *x, *y;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&x));
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&y));
	uhmm_test_fill(x, MiB, 10);
	uhmm_test_fill(x + MiB, 2 * MiB, 11);
	uhmm_test_fill(y, len, 12);
	ASSERT_OK(uhmm_migrate(ctx, x, len, dev, 0));
	uhmm_test_fill(x, MiB, 13); /* in place, before it is evicted */
	ASSERT_OK(uhmm_migrate(ctx, y, len, dev, 0));
	assert_int_equal(coherent_on(ctx, y, len, dev), len / PG);
	assert_true(coherent_on(ctx, x, len, dev) <= MiB / PG);
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(dev, &ds));
	assert_true(ds.evicted_pages >= 2 * MiB / PG);
	assert_true(ds.bytes_in_use <= 4 * MiB);
	assert_int_equal(ds.coherent_pages * PG, ds.bytes_in_use);
	assert_int_equal(uhmm_test_check(x, MiB, 13), (size_t)-1);
	assert_int_equal(uhmm_test_check(x + MiB, 2 * MiB, 11), (size_t)-1);
	assert_int_equal(uhmm_test_check(y, len, 12), (size_t)-1);
	/* An explicit eviction request too. */
	assert_true(uhmm_device_evict(dev, len) > 0);
	assert_int_equal(uhmm_test_check(y, len, 12), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static void add_kernel(uhmm_simdev_item *wi, uint64_t idx, void *arg)
{
	uint32_t *w = arg;
	uint32_t v = uhmm_simdev_ld32(wi, &w[idx * 2]);
	uhmm_simdev_st32(wi, &w[idx * 2], v + 1);
	(void)uhmm_simdev_atomic_add32(wi, &w[idx * 2 + 1], 5);
}

/* The device maps its coherent pages by address, at local cost (no remote
 * mapping), atomics in place (no exclusive grab); the pages stay. */
static void device_accesses_in_place(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *dev = coherent_dev(ctx, 8 * MiB);
	size_t len = 256 * 1024, nw = len / 8;
	uint32_t *w;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&w));
	for (size_t i = 0; i < nw * 2; i++)
		w[i] = (uint32_t)i;
	ASSERT_OK(uhmm_migrate(ctx, w, len, dev, 0));
	ASSERT_OK(uhmm_simdev_launch(dev, add_kernel, nw, w));
	struct uhmm_simdev_stats ss;
	ASSERT_OK(uhmm_simdev_stats(dev, &ss));
	assert_int_equal(ss.remote_maps, 0);
	assert_int_equal(ss.exclusive_pages, 0);
	assert_int_equal(coherent_on(ctx, w, len, dev), len / PG);
	for (size_t i = 0; i < nw; i++) {
		assert_int_equal(w[2 * i], 2 * i + 1);
		assert_int_equal(w[2 * i + 1], 2 * i + 1 + 5);
	}
	/* The range fault: a system page (VALID at its address) that is in
	 * our coherent memory; another device sees it remote coherent. */
	uint64_t e[4];
	struct uhmm_range_req req = { .start = (uintptr_t)w, .end = (uintptr_t)w + 4 * PG,
				      .flags = UHMM_RF_FAULT_READ, .device = dev, .entries = e };
	ASSERT_OK(uhmm_range_fault(ctx, &req));
	for (int i = 0; i < 4; i++) {
		assert_true(e[i] & UHMM_RE_VALID);
		assert_true(e[i] & UHMM_RE_COHERENT);
		assert_false(e[i] & UHMM_RE_DEVICE);
	}
	uhmm_device *other;
	ASSERT_OK(uhmm_simdev_create(ctx, NULL, &other));
	req.device = other;
	ASSERT_OK(uhmm_range_fault(ctx, &req));
	for (int i = 0; i < 4; i++) {
		assert_true(e[i] & UHMM_RE_VALID);
		assert_true(e[i] & UHMM_RE_COHERENT_REMOTE);
		assert_false(e[i] & UHMM_RE_REMOTE);
	}
	assert_int_equal(coherent_on(ctx, w, len, dev), len / PG); /* no migration */
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* make_exclusive works on coherent pages; a CPU touch takes them back. */
static void exclusive_on_coherent(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *dev = coherent_dev(ctx, 8 * MiB);
	size_t len = 16 * PG;
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 21);
	ASSERT_OK(uhmm_migrate(ctx, p, len, dev, 0));
	void *pages[16];
	ASSERT_OK(uhmm_make_exclusive(dev, p, 16, pages));
	for (int i = 0; i < 16; i++)
		assert_non_null(pages[i]);
	ASSERT_OK(uhmm_check_exclusive(dev, p, 16));
	assert_int_equal(present(p, len), 0); /* CPU access faults */
	/* The device works on it where uhmm says. */
	((volatile char *)pages[3])[0] ^= 0x5a;
	char c = ((volatile char *)p)[3 * PG]; /* revokes */
	struct uhmm_page_info info;
	ASSERT_OK(uhmm_page_query(ctx, p + 3 * PG, &info));
	assert_int_equal(info.where, UHMM_WHERE_CPU);
	ASSERT_OK(uhmm_page_query(ctx, p + 4 * PG, &info));
	assert_int_equal(info.where, UHMM_WHERE_EXCLUSIVE);
	char ref[16 * PG];
	uhmm_test_fill(ref, sizeof(ref), 21);
	assert_int_equal((unsigned char)c, (unsigned char)(ref[3 * PG] ^ 0x5a));
	ref[3 * PG] ^= 0x5a;
	assert_memory_equal(p, ref, len);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* fork copies coherent pages as anonymous memory (copy-on-write): the
 * parent's stay in place; each side sees its own writes only; a migration
 * of the parent's pages while the child shares them works. */
static void fork_on_coherent(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *dev = coherent_dev(ctx, 8 * MiB);
	size_t len = 64 * PG;
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	uhmm_test_fill(p, len / 2, 30);
	uhmm_test_fill(p + len / 2, len / 2, 31);
	ASSERT_OK(uhmm_migrate(ctx, p, len, dev, 0));
	int go[2], back[2];
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(back), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* (The other ends closed: a parent that fails ends us.) */
		close(go[1]);
		close(back[0]);
		char b = 0;
		int bad = uhmm_test_check(p, len / 2, 30) != (size_t)-1;
		uhmm_test_fill(p, len / 2, 32); /* the child's own */
		if (write(back[1], &b, 1) != 1 || read(go[0], &b, 1) != 1)
			_exit(3);
		/* The parent wrote and migrated meanwhile. */
		bad |= uhmm_test_check(p, len / 2, 32) != (size_t)-1;
		bad |= uhmm_test_check(p + len / 2, len / 2, 31) != (size_t)-1 ? 2 : 0;
		_exit(bad);
	}
	close(go[0]);
	close(back[1]);
	char b;
	assert_int_equal(read(back[0], &b, 1), 1);
	/* Still in place in the parent (fork did not bring them home). */
	assert_int_equal(coherent_on(ctx, p, len, dev), len / PG);
	assert_int_equal(uhmm_test_check(p, len / 2, 30), (size_t)-1);
	assert_int_equal(uhmm_test_check(p + len / 2, len / 2, 31), (size_t)-1);
	/* Shared copy-on-write with the child: moved home all the same. */
	ASSERT_OK(uhmm_migrate(ctx, p, len, NULL, 0));
	assert_int_equal(uhmm_test_check(p, len / 2, 30), (size_t)-1);
	assert_int_equal(uhmm_test_check(p + len / 2, len / 2, 31), (size_t)-1);
	uhmm_test_fill(p, len, 33);
	ASSERT_OK(uhmm_migrate(ctx, p, len, dev, 0));
	assert_int_equal(write(go[1], &b, 1), 1);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(uhmm_test_check(p, len, 33), (size_t)-1);
	close(go[1]);
	close(back[0]);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* A discard of a coherent page: zeros, its frame back to the device. */
/*
 * A discard of a page in place meets a migration before the kernel's zap:
 * the REMOVE is read (the page, unheld, published home) and only then does
 * the kernel zap the address.  In between, the page is still present, with
 * the data the application discarded; a migration that took it then moved
 * the stale page out and brought the discarded data back (uhmm-torture
 * --coherent, about one run in 20; a loop of prefetches beside writes and
 * discards, 1 in 100 rounds).  As for a system page, the published page
 * says DISCARD until the zap: a migration takes it as a hole.  The window
 * is made here by calling the REMOVE's handler directly.
 */
static void discard_of_a_page_in_place_is_not_carried_off_before_the_zap(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *dev = coherent_dev(ctx, 8 * MiB);
	struct uhmm_simdev_opts po;
	uhmm_simdev_opts_init(&po);
	po.mem_bytes = 8 * MiB;
	uhmm_device *priv;
	ASSERT_OK(uhmm_simdev_create(ctx, &po, &priv));
	size_t len = 4 * PG;
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	memset(p, 0x5c, len);
	ASSERT_OK(uhmm_migrate(ctx, p, len, dev, 0));
	assert_int_equal(coherent_on(ctx, p, len, dev), 4);
	/* The REMOVE of a discard of page 1, read; the zap not yet come. */
	struct uhmm_range *r = uhmm__range_get(ctx, (uintptr_t)p + PG);
	assert_non_null(r);
	uhmm__page_zap(ctx, range_page(r, ((uintptr_t)p + PG - r->start) >> 12));
	uhmm__range_put(r);
	/* A migration now, then home: page 1 is a hole, the others kept. */
	ASSERT_OK(uhmm_migrate(ctx, p, len, priv, 0));
	ASSERT_OK(uhmm_migrate(ctx, p, len, NULL, 0));
	/* (The kernel's zap, coming now, finds nothing at the address.) */
	for (size_t i = 0; i < len; i++)
		assert_int_equal((unsigned char)p[i], i / PG == 1 ? 0 : 0x5c);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static void discard_frees_the_frame(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *dev = coherent_dev(ctx, 8 * MiB);
	size_t len = 8 * PG;
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 41);
	ASSERT_OK(uhmm_migrate(ctx, p, len, dev, 0));
	assert_int_equal(madvise(p + 2 * PG, 2 * PG, MADV_DONTNEED), 0);
	ASSERT_OK(uhmm_sync(ctx));
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(dev, &ds));
	assert_int_equal(ds.coherent_pages, 6);
	assert_int_equal(ds.bytes_in_use, 6 * PG);
	for (size_t i = 2 * PG; i < 4 * PG; i++)
		assert_int_equal(p[i], 0);
	char ref[8 * PG];
	uhmm_test_fill(ref, sizeof(ref), 41);
	assert_memory_equal(p, ref, 2 * PG);
	assert_memory_equal(p + 4 * PG, ref + 4 * PG, 4 * PG);
	ASSERT_OK(uhmm_free(ctx, p));
	ASSERT_OK(uhmm_sync(ctx));
	ASSERT_OK(uhmm_device_stats(dev, &ds));
	assert_int_equal(ds.coherent_pages, 0);
	assert_int_equal(ds.bytes_in_use, 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* simdev's memory on a NUMA node the user names. */
static void simdev_on_numa_node(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 4 * MiB;
	o.coherent = 1;
	o.numa_node = 1023; /* no machine here has it */
	uhmm_device *d;
	assert_int_equal(uhmm_simdev_create(ctx, &o, &d), -EINVAL);
	o.numa_node = -2;
	assert_int_equal(uhmm_simdev_create(ctx, &o, &d), -EINVAL);
	struct stat st;
	if (stat("/sys/devices/system/node/node1", &st) != 0) {
		ASSERT_OK(uhmm_ctx_destroy(ctx));
		TEST_SKIP("this machine has one NUMA node (no node1): binding to "
			  "another node cannot be tried");
	}
	o.numa_node = 1;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &d));
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 2 * MiB, (void **)&p));
	uhmm_test_fill(p, 2 * MiB, 51);
	ASSERT_OK(uhmm_migrate(ctx, p, 2 * MiB, d, 0));
	assert_int_equal(uhmm_test_check(p, 2 * MiB, 51), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* ---- a DAX device in system-ram mode (uhmm_simdev_opts.dax) ----------- */

/* A fake sysfs tree (UHMM_SYSFS_ROOT) in a temporary directory. */
static char sysfs_root[64];

static void sysfs_path(char *buf, size_t len, const char *rel)
{
	int n = snprintf(buf, len, "%s/%s", sysfs_root, rel);
	assert_true(n > 0 && (size_t)n < len);
}

static void sysfs_mkdirs(const char *rel)
{
	char path[256], *c;
	sysfs_path(path, sizeof(path), rel);
	for (c = path + strlen(sysfs_root) + 1;; c++) {
		if (*c == '/' || !*c) {
			char was = *c;
			*c = '\0';
			if (mkdir(path, 0755) != 0)
				assert_int_equal(errno, EEXIST);
			*c = was;
			if (!was)
				break;
		}
	}
}

/* bus/dax/devices/@name, its driver link to @driver (NULL: none) and its
 * target_node @node (NULL: none). */
static void fake_dax(const char *name, const char *driver, const char *node)
{
	char rel[128], path[256];
	snprintf(rel, sizeof(rel), "bus/dax/devices/%s", name);
	sysfs_mkdirs(rel);
	if (driver) {
		char target[128];
		snprintf(rel, sizeof(rel), "bus/dax/drivers/%s", driver);
		sysfs_mkdirs(rel);
		snprintf(target, sizeof(target), "../../../../bus/dax/drivers/%s", driver);
		snprintf(rel, sizeof(rel), "bus/dax/devices/%s/driver", name);
		sysfs_path(path, sizeof(path), rel);
		assert_int_equal(symlink(target, path), 0);
	}
	if (node) {
		snprintf(rel, sizeof(rel), "bus/dax/devices/%s/target_node", name);
		sysfs_path(path, sizeof(path), rel);
		FILE *f = fopen(path, "w");
		assert_non_null(f);
		fprintf(f, "%s\n", node);
		assert_int_equal(fclose(f), 0);
	}
}

static void sysfs_setup(void)
{
	snprintf(sysfs_root, sizeof(sysfs_root), "/tmp/uhmm-sysfs-XXXXXX");
	assert_non_null(mkdtemp(sysfs_root));
	assert_int_equal(setenv("UHMM_SYSFS_ROOT", sysfs_root, 1), 0);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return type == FTW_DP ? rmdir(path) : unlink(path);
}

static void sysfs_teardown(void)
{
	assert_int_equal(unsetenv("UHMM_SYSFS_ROOT"), 0);
	assert_int_equal(nftw(sysfs_root, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* A kmem (system-ram) DAX device on node 0: the simdev's memory is bound
 * to its node, coherent pages move there and back with their data, and
 * the topology reports the node. */
static void simdev_on_dax_system_ram(void **state)
{
	(void)state;
	sysfs_setup();
	fake_dax("dax0.0", "kmem", "0");
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 4 * MiB;
	o.coherent = 1;
	o.dax = "dax0.0";
	uhmm_device *d, *d2;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &d));
	/* The /dev/ name, and numa_node naming the same node, are fine. */
	o.dax = "/dev/dax0.0";
	o.numa_node = 0;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &d2));
	size_t len = 2 * MiB;
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 71);
	ASSERT_OK(uhmm_migrate(ctx, p, len, d, 0));
	assert_int_equal(coherent_on(ctx, p, len, d), len / PG);
	assert_int_equal(uhmm_test_check(p, len, 71), (size_t)-1);
	if (!uhmm_test_no_move()) {
		/* The device's frames are in place: on the device's node. */
		void *pages[64];
		int st[64];
		for (size_t i = 0; i < 64; i++) {
			pages[i] = p + i * (len / 64);
			st[i] = -1;
		}
		long r = syscall(SYS_move_pages, 0, 64ul, pages, NULL, st, 0);
		if (r == 0)
			for (size_t i = 0; i < 64; i++)
				assert_int_equal(st[i], 0);
		else
			fprintf(stderr, "move_pages: %s (node not checked)\n", strerror(errno));
	}
	ASSERT_OK(uhmm_migrate(ctx, p, len, d2, 0));
	assert_int_equal(coherent_on(ctx, p, len, d2), len / PG);
	ASSERT_OK(uhmm_migrate(ctx, p, len, NULL, 0));
	assert_int_equal(uhmm_test_pages_on(ctx, p, len, NULL), len / PG);
	assert_int_equal(uhmm_test_check(p, len, 71), (size_t)-1);
	struct uhmm_topo_dev devs[2];
	assert_int_equal(uhmm_topology(ctx, devs, 2, NULL), 2);
	assert_int_equal(devs[0].numa_node, 0);
	assert_int_equal(devs[1].numa_node, 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	sysfs_teardown();
}

/* What is not a DAX device in system-ram mode is refused, each with its
 * error. */
static void simdev_dax_refusals(void **state)
{
	(void)state;
	sysfs_setup();
	fake_dax("dax0.0", "kmem", "0");
	fake_dax("dax1.0", "device_dax", "0");   /* devdax mode */
	fake_dax("dax2.0", NULL, "0");           /* no driver bound */
	fake_dax("dax3.0", "kmem", "1023");      /* a node nobody has */
	fake_dax("dax4.0", "kmem", "1");         /* another node than 0 */
	fake_dax("dax5.0", "kmem", "4096");      /* not below 1024 */
	fake_dax("dax6.0", "kmem", "x");         /* not a number */
	fake_dax("dax7.0", "kmem", NULL);        /* no target_node */
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 4 * MiB;
	o.coherent = 1;
	uhmm_device *d = NULL;
	static const struct {
		const char *dax;
		int32_t numa_node;
		int err;
	} cases[] = {
		{ "dax1.0", -1, -EOPNOTSUPP },
		{ "/dev/dax1.0", -1, -EOPNOTSUPP },
		{ "dax2.0", -1, -EOPNOTSUPP },
		{ "dax9.0", -1, -ENODEV },
		{ "/dev/dax0.1", -1, -ENODEV },
		{ "dax7.0", -1, -ENODEV },
		{ "dax3.0", -1, -EINVAL },
		{ "dax5.0", -1, -EINVAL },
		{ "dax6.0", -1, -EINVAL },
		/* numa_node names another node than the device's */
		{ "dax4.0", 0, -EINVAL },
		{ "dax0.0", 1, -EINVAL },
		{ "", -1, -EINVAL },
		{ "dax0", -1, -EINVAL },
		{ "dax0.", -1, -EINVAL },
		{ "dax.0", -1, -EINVAL },
		{ "dax0.0x", -1, -EINVAL },
		{ "dax0.0/", -1, -EINVAL },
		{ "../dax0.0", -1, -EINVAL },
		{ "/dev/../dax0.0", -1, -EINVAL },
		{ "dev/dax0.0", -1, -EINVAL },
		{ "mem0.0", -1, -EINVAL },
		{ "dax0.1234567890", -1, -EINVAL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		o.dax = cases[i].dax;
		o.numa_node = cases[i].numa_node;
		int err = uhmm_simdev_create(ctx, &o, &d);
		if (err != cases[i].err)
			fail_msg("dax \"%s\" numa_node %d: %d, not %d", cases[i].dax,
				 cases[i].numa_node, err, cases[i].err);
	}
	/* Nothing was attached by the refusals. */
	assert_int_equal(uhmm_topology(ctx, NULL, 0, NULL), 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	sysfs_teardown();
}

/* A caller built against the header before `dax` passes the smaller
 * struct: it still creates a simdev, and what lies past it is not read. */
static void simdev_opts_v1_size(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 4 * MiB;
	o.coherent = 1;
	o.dax = "not read"; /* would be -EINVAL if it were */
	o.size = UHMM_SIMDEV_OPTS_SIZE_V1;
	uhmm_device *d;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &d));
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 2 * MiB, (void **)&p));
	uhmm_test_fill(p, 2 * MiB, 81);
	ASSERT_OK(uhmm_migrate(ctx, p, 2 * MiB, d, 0));
	assert_int_equal(coherent_on(ctx, p, 2 * MiB, d), 2 * MiB / PG);
	assert_int_equal(uhmm_test_check(p, 2 * MiB, 81), (size_t)-1);
	/* Other sizes: refused. */
	o.size = UHMM_SIMDEV_OPTS_SIZE_V1 - 8;
	assert_int_equal(uhmm_simdev_create(ctx, &o, &d), -EINVAL);
	o.size = UHMM_SIMDEV_OPTS_SIZE_V1 + 4;
	assert_int_equal(uhmm_simdev_create(ctx, &o, &d), -EINVAL);
	o.size = sizeof(o) + 8;
	assert_int_equal(uhmm_simdev_create(ctx, &o, &d), -EINVAL);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* Coherent pages in place in a mapping made read-only: they move away
 * (home, to a private device) with their data, although UFFDIO_MOVE
 * refuses read-only mappings (they are taken out by copy then); made
 * writable again and discarded, they read zeros. */
static void read_only_coherent_pages_move(void **state)
{
	(void)state;
	SKIP_IF_NO_MOVE();
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *a = coherent_dev(ctx, 4 * MiB), *c;
	ASSERT_OK(uhmm_simdev_create(ctx, NULL, &c));
	size_t len = 64 * PG;
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 61);
	ASSERT_OK(uhmm_migrate(ctx, p, len, a, 0));
	assert_int_equal(coherent_on(ctx, p, len, a), len / PG);
	assert_int_equal(mprotect(p, len, PROT_READ), 0);
	ASSERT_OK(uhmm_migrate(ctx, p, len, NULL, 0));
	assert_int_equal(uhmm_test_pages_on(ctx, p, len, NULL), len / PG);
	assert_int_equal(uhmm_test_check(p, len, 61), (size_t)-1);
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(a, &ds));
	assert_int_equal(ds.bytes_in_use, 0);
	assert_int_equal(ds.coherent_pages, 0);
	/* Writable, to the device, read-only, to a private device. */
	assert_int_equal(mprotect(p, len, PROT_READ | PROT_WRITE), 0);
	ASSERT_OK(uhmm_migrate(ctx, p, len, a, 0));
	assert_int_equal(coherent_on(ctx, p, len, a), len / PG);
	ASSERT_OK(uhmm_mprotect(ctx, p, len, PROT_READ));
	ASSERT_OK(uhmm_migrate(ctx, p, len, c, 0));
	assert_int_equal(uhmm_test_pages_on(ctx, p, len, c), len / PG);
	assert_int_equal(uhmm_test_check(p, len, 61), (size_t)-1);
	/* In place again, read-only, then discarded: zeros. */
	ASSERT_OK(uhmm_mprotect(ctx, p, len, PROT_READ | PROT_WRITE));
	ASSERT_OK(uhmm_migrate(ctx, p, len, a, 0));
	assert_int_equal(mprotect(p, len, PROT_READ), 0);
	ASSERT_OK(uhmm_migrate(ctx, p, 8 * PG, NULL, 0));
	assert_int_equal(mprotect(p, len, PROT_READ | PROT_WRITE), 0);
	assert_int_equal(madvise(p, len, MADV_DONTNEED), 0);
	ASSERT_OK(uhmm_sync(ctx));
	for (size_t i = 0; i < len; i++)
		if (p[i])
			fail_msg("byte %zu is %d after a discard", i, p[i]);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* ---- a discard while the sharing with a fork child is broken ---- */

static atomic_int populate_hooked;

/* Runs on the reclaiming thread, right before its populate: the
 * application discards the page there (the window of the hang). */
static void discard_before_populate(struct uhmm_ctx *ctx, uintptr_t va)
{
	(void)ctx;
	if (atomic_exchange(&populate_hooked, 1))
		return; /* the first page only */
	assert_int_equal(madvise((void *)va, PG, MADV_DONTNEED), 0);
}

/*
 * A coherent page in place that a fork child shares cannot be moved out
 * (UFFDIO_MOVE: -EBUSY): the reclaim writes it first (MADV_POPULATE_WRITE)
 * to break the sharing, holding the page.  A discard right before (or
 * during) that write turned it into a userfault on the held page, which
 * the service thread parked until the holder unlocked: for ever
 * (torture.coherent.short hung, about one run in five).  Now the service
 * thread serves such a fault with zeros.  The hook discards the first
 * page exactly there; the migration must end, that page read zeros, the
 * other keep its data, and the child its own view of both.
 */
static void discard_during_a_shared_page_reclaim_reads_zeros(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *dev = coherent_dev(ctx, 8 * MiB);
	size_t len = 2 * PG;
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&p));
	uhmm_test_fill(p, len, 51);
	ASSERT_OK(uhmm_migrate(ctx, p, len, dev, 0));
	assert_int_equal(coherent_on(ctx, p, len, dev), 2);
	int go[2], back[2];
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(back), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(go[1]);
		close(back[0]);
		char b = 0;
		if (write(back[1], &b, 1) != 1 || read(go[0], &b, 1) != 1)
			_exit(3);
		_exit(uhmm_test_check(p, len, 51) != (size_t)-1);
	}
	close(go[0]);
	close(back[1]);
	char b;
	assert_int_equal(read(back[0], &b, 1), 1); /* the child shares both */
	atomic_store(&populate_hooked, 0);
	atomic_store(&uhmm__coh_populate_hook, discard_before_populate);
	int err = uhmm_migrate(ctx, p, len, NULL, 0);
	atomic_store(&uhmm__coh_populate_hook, NULL);
	ASSERT_OK(err);
	assert_int_equal(atomic_load(&populate_hooked), 1); /* it struck */
	ASSERT_OK(uhmm_sync(ctx));
	for (size_t i = 0; i < PG; i++)
		if (p[i])
			fail_msg("byte %zu: %#x after the discard", i, (unsigned char)p[i]);
	char ref[2 * PG];
	uhmm_test_fill(ref, sizeof(ref), 51);
	assert_memory_equal(p + PG, ref + PG, PG);
	assert_int_equal(coherent_on(ctx, p, len, dev), 0);
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(dev, &ds));
	assert_int_equal(ds.bytes_in_use, 0);
	assert_int_equal(write(go[1], &b, 1), 1);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	close(go[1]);
	close(back[0]);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(cpu_reads_and_writes_in_place),
	cmocka_unit_test(system_coherent_coherent_private_system),
	cmocka_unit_test(eviction_under_pressure),
	cmocka_unit_test(device_accesses_in_place),
	cmocka_unit_test(exclusive_on_coherent),
	cmocka_unit_test(fork_on_coherent),
	cmocka_unit_test(discard_frees_the_frame),
	cmocka_unit_test(discard_of_a_page_in_place_is_not_carried_off_before_the_zap),
	cmocka_unit_test(simdev_on_numa_node),
	cmocka_unit_test(simdev_on_dax_system_ram),
	cmocka_unit_test(simdev_dax_refusals),
	cmocka_unit_test(simdev_opts_v1_size),
	cmocka_unit_test(read_only_coherent_pages_move),
	cmocka_unit_test(discard_during_a_shared_page_reclaim_reads_zeros),
};

UHMM_TEST_MAIN(tests)
