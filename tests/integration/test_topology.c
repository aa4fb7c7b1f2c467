/* SPDX-License-Identifier: MIT */
/*
 * The topology query (issue 19, uhmm/topology.h): the devices of a
 * context, their memory, their link to the CPU and the link between every
 * pair, from each backend's description (simdev: its link preset).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uhmm/device.h>
#include <uhmm/simdev.h>
#include <uhmm/topology.h>
#include <uhmm/uhmm.h>

#include "testlib.h"

#define MiB (1ul << 20)

static uhmm_device *simdev(uhmm_ctx *ctx, const char *link, uint32_t coherent,
			   uint64_t bytes)
{
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = bytes;
	o.link = link;
	o.coherent = coherent;
	uhmm_device *d;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &d));
	return d;
}

/* Three simdevs (pcie4, nvlink coherent, nvlink): each one's memory and
 * host link, and the pair matrix (nvlink peers at NVLink figures, a pcie4
 * end at its own, the slower), symmetric, with peer access. */
static void topology_of_three_simdevs(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *d0 = simdev(ctx, "pcie4", 0, 8 * MiB);
	/* Coherent memory needs UFFDIO_MOVE (without: private). */
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 4 * MiB;
	o.link = "nvlink";
	o.coherent = 1;
	uhmm_device *d1;
	int err = uhmm_simdev_create(ctx, &o, &d1);
	uint32_t coh = err == 0;
	if (err == -EOPNOTSUPP)
		d1 = simdev(ctx, "nvlink", 0, 4 * MiB);
	else
		ASSERT_OK(err);
	uhmm_device *d2 = simdev(ctx, "nvlink", 0, 2 * MiB);

	/* Something in use on d0. */
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 2 * MiB, (void **)&p));
	uhmm_test_fill(p, 2 * MiB, 7);
	ASSERT_OK(uhmm_migrate(ctx, p, 2 * MiB, d0, 0));

	struct uhmm_topo_dev devs[4];
	struct uhmm_topo_link m[4 * 4];
	memset(m, 0xa5, sizeof(m));
	assert_int_equal(uhmm_topology(ctx, devs, 4, m), 3);

	uhmm_device *want[3] = { d0, d1, d2 };
	uint64_t bytes[3] = { 8 * MiB, 4 * MiB, 2 * MiB };
	for (int i = 0; i < 3; i++) {
		assert_ptr_equal(devs[i].dev, want[i]);
		assert_int_equal(devs[i].id, uhmm_device_id(want[i]));
		assert_string_equal(devs[i].name, uhmm_device_name(want[i]));
		assert_int_equal(devs[i].described, 1);
		assert_int_equal(devs[i].mem_bytes, bytes[i]);
		assert_int_equal(devs[i].numa_node, -1);
	}
	assert_int_equal(devs[0].mem_kind, UHMM_MEM_PRIVATE);
	assert_int_equal(devs[1].mem_kind, coh ? UHMM_MEM_COHERENT : UHMM_MEM_PRIVATE);
	assert_int_equal(devs[2].mem_kind, UHMM_MEM_PRIVATE);
	assert_int_equal(devs[0].bytes_in_use, 2 * MiB);
	assert_int_equal(devs[2].bytes_in_use, 0);

	/* Host links: the presets' figures. */
	assert_int_equal(devs[0].host.kind, UHMM_LINK_PCIE);
	assert_string_equal(devs[0].host.name, "pcie4");
	assert_true(devs[0].host.bandwidth_gbps == 25.0);
	assert_int_equal(devs[0].host.latency_ns, 1500);
	assert_int_equal(devs[1].host.kind, UHMM_LINK_PCIE);
	assert_string_equal(devs[1].host.name, "pcie5");
	assert_true(devs[1].host.bandwidth_gbps == 50.0);
	assert_int_equal(devs[1].host.latency_ns, 1200);

	/* The diagonal, the symmetry, peer access everywhere (simdevs). */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(m[i * 4 + i].link.kind, UHMM_LINK_SELF);
		for (int j = 0; j < 3; j++) {
			if (i == j)
				continue;
			assert_memory_equal(&m[i * 4 + j], &m[j * 4 + i], sizeof(m[0]));
			assert_int_equal(m[i * 4 + j].flags, UHMM_TOPO_PEER_ACCESS);
		}
	}
	/* nvlink <-> nvlink: NVLink at the peer figures. */
	const struct uhmm_link_desc *l = &m[1 * 4 + 2].link;
	assert_int_equal(l->kind, UHMM_LINK_NVLINK);
	assert_string_equal(l->name, "nvlink");
	assert_true(l->bandwidth_gbps == 360.0);
	assert_int_equal(l->latency_ns, 1000);
	/* pcie4 <-> nvlink: the slower end, PCIe P2P. */
	l = &m[0 * 4 + 1].link;
	assert_int_equal(l->kind, UHMM_LINK_PCIE);
	assert_string_equal(l->name, "pcie4");
	assert_true(l->bandwidth_gbps == 25.0);
	assert_int_equal(l->latency_ns, 2500);
	/* Nothing written beyond the 3 x 3 corner of the 4 x 4 matrix. */
	unsigned char pat[sizeof(m[0])];
	memset(pat, 0xa5, sizeof(pat));
	for (int i = 0; i < 4; i++) {
		assert_memory_equal(&m[i * 4 + 3], pat, sizeof(pat));
		assert_memory_equal(&m[3 * 4 + i], pat, sizeof(pat));
	}
	assert_int_equal(uhmm_test_check(p, 2 * MiB, 7), (size_t)-1);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* Counting, a short array, a detached device left out, bad arguments. */
static void topology_counts_and_errors(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	assert_int_equal(uhmm_topology(ctx, NULL, 0, NULL), 0);
	uhmm_device *d0 = simdev(ctx, NULL, 0, 2 * MiB);
	uhmm_device *d1 = simdev(ctx, NULL, 0, 2 * MiB);
	uhmm_device *d2 = simdev(ctx, "pcie3", 0, 2 * MiB);
	assert_int_equal(uhmm_topology(ctx, NULL, 0, NULL), 3);

	/* Room for one: the first is filled, the count is all of them. */
	struct uhmm_topo_dev devs[3];
	struct uhmm_topo_link m[9];
	assert_int_equal(uhmm_topology(ctx, devs, 1, m), 3);
	assert_ptr_equal(devs[0].dev, d0);
	assert_int_equal(m[0].link.kind, UHMM_LINK_SELF);

	ASSERT_OK(uhmm_device_detach(d1));
	assert_int_equal(uhmm_topology(ctx, devs, 3, m), 2);
	assert_ptr_equal(devs[0].dev, d0);
	assert_ptr_equal(devs[1].dev, d2);
	/* d0 has no link model (or the environment's), d2 pcie3: the pair is
	 * d2's end when d0's is unlimited. */
	if (devs[0].host.kind == UHMM_LINK_MEMCPY) {
		assert_true(devs[0].host.bandwidth_gbps == 0);
		assert_int_equal(m[0 * 3 + 1].link.kind, UHMM_LINK_PCIE);
		assert_true(m[0 * 3 + 1].link.bandwidth_gbps == 12.0);
		assert_int_equal(m[0 * 3 + 1].link.latency_ns, 3000);
	}

	assert_int_equal(uhmm_topology(ctx, NULL, 2, NULL), -EINVAL);
	assert_int_equal(uhmm_topology(ctx, devs, (size_t)1 << 33, NULL), -EINVAL);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
	assert_int_equal(uhmm_topology(ctx, devs, 3, m), -EBADF);
	assert_int_equal(uhmm_topology(NULL, NULL, 0, NULL), -EBADF);
}

/* A backend without ops->describe, and one that describes another peer
 * domain: known only by what uhmm knows; no peer access with simdevs, the
 * pair goes through system memory. */
static long stub_alloc(void *priv, unsigned order, size_t n, uint64_t *dpfn)
{
	(void)priv, (void)order, (void)n, (void)dpfn;
	return 0;
}
static void stub_free(void *priv, unsigned order, size_t n, const uint64_t *dpfn)
{
	(void)priv, (void)order, (void)n, (void)dpfn;
}
static int stub_submit(void *priv, struct uhmm_copy *c, size_t n, uhmm_fence_t *f)
{
	(void)priv, (void)c, (void)n, (void)f;
	return -EIO;
}
static int stub_wait(void *priv, uhmm_fence_t f)
{
	(void)priv, (void)f;
	return -EIO;
}
static int stub_domain;
static int stub_describe(void *priv, struct uhmm_device_desc *out)
{
	(void)priv;
	assert_true(out->size >= sizeof(*out));
	out->mem_bytes = 16 * MiB;
	out->numa_node = 3;
	out->host = (struct uhmm_link_desc){ .kind = UHMM_LINK_C2C, .name = "cxl",
					     .bandwidth_gbps = 64, .latency_ns = 300 };
	out->peer = out->host;
	out->peer_domain = &stub_domain;
	return 0;
}
static int stub_describe_fails(void *priv, struct uhmm_device_desc *out)
{
	(void)priv;
	out->mem_bytes = 1; /* forgotten: the call failed */
	return -EIO;
}

static void topology_other_backends(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	static const struct uhmm_device_ops plain = {
		.alloc = stub_alloc, .free = stub_free,
		.copy_submit = stub_submit, .copy_wait = stub_wait,
	};
	static const struct uhmm_device_ops described = {
		.alloc = stub_alloc, .free = stub_free,
		.copy_submit = stub_submit, .copy_wait = stub_wait,
		.describe = stub_describe,
	};
	static const struct uhmm_device_ops failing = {
		.alloc = stub_alloc, .free = stub_free,
		.copy_submit = stub_submit, .copy_wait = stub_wait,
		.describe = stub_describe_fails,
	};
	uhmm_device *a, *b, *c, *e;
	ASSERT_OK(uhmm_device_attach(ctx, &plain, NULL, "plain", &a));
	ASSERT_OK(uhmm_device_attach(ctx, &described, NULL, "cxl0", &b));
	ASSERT_OK(uhmm_device_attach(ctx, &described, NULL, "cxl1", &c));
	ASSERT_OK(uhmm_device_attach(ctx, &failing, NULL, "failing", &e));
	uhmm_device *s = simdev(ctx, "pcie5", 0, 2 * MiB);

	struct uhmm_topo_dev devs[8];
	struct uhmm_topo_link m[8 * 8];
	assert_int_equal(uhmm_topology(ctx, devs, 8, m), 5);
	assert_ptr_equal(devs[0].dev, a);
	assert_int_equal(devs[0].described, 0);
	assert_string_equal(devs[0].name, "plain");
	assert_int_equal(devs[0].mem_bytes, 0);
	assert_int_equal(devs[0].numa_node, -1);
	assert_int_equal(devs[0].host.kind, UHMM_LINK_UNKNOWN);
	assert_int_equal(devs[3].described, 0);
	assert_int_equal(devs[3].mem_bytes, 0);
	assert_ptr_equal(devs[4].dev, s);

	assert_int_equal(devs[1].described, 1);
	assert_int_equal(devs[1].mem_bytes, 16 * MiB);
	assert_int_equal(devs[1].numa_node, 3);
	assert_string_equal(devs[1].host.name, "cxl");

	/* cxl0 <-> cxl1: their own domain, peer access at their figures. */
	assert_int_equal(m[1 * 8 + 2].flags, UHMM_TOPO_PEER_ACCESS);
	assert_int_equal(m[1 * 8 + 2].link.kind, UHMM_LINK_C2C);
	assert_true(m[1 * 8 + 2].link.bandwidth_gbps == 64);
	/* Undescribed, or another domain: through system memory. */
	for (int i = 0; i < 5; i++) {
		for (int j = 0; j < 5; j++) {
			if (i == j || (i == 1 && j == 2) || (i == 2 && j == 1))
				continue;
			assert_int_equal(m[i * 8 + j].flags, 0);
			assert_int_equal(m[i * 8 + j].link.kind, UHMM_LINK_SYSTEM);
		}
	}
	/* cxl0 <-> simdev (pcie5): the lower host bandwidth, the latencies
	 * added. */
	assert_true(m[1 * 8 + 4].link.bandwidth_gbps == 50.0);
	assert_int_equal(m[1 * 8 + 4].link.latency_ns, 300 + 1200);
	assert_string_equal(uhmm_link_kind_name(UHMM_LINK_SYSTEM), "SYS");
	assert_string_equal(uhmm_link_kind_name(12345), "?");
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* ---- peer access (UHMM_RF_PEER, uhmm_simdev_peer_access) ---- */

#define PEER_WORDS (512 * 64) /* 64 pages of uint64_t */

struct peer_k {
	uint64_t *buf;
	uint64_t add;  /* write: buf[i] += add; read: check buf[i] == want(i) */
	uint64_t seed;
	_Atomic uint64_t bad;
	int write;
};

static uint64_t want_word(uint64_t seed, uint64_t i)
{
	return (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
}

static void k_peer(uhmm_simdev_item *wi, uint64_t i, void *arg)
{
	struct peer_k *k = arg;
	if (k->write) {
		uint64_t v = uhmm_simdev_ld64(wi, &k->buf[i]);
		uhmm_simdev_st64(wi, &k->buf[i], v + k->add);
	} else if (uhmm_simdev_ld64(wi, &k->buf[i]) != want_word(k->seed, i)) {
		atomic_fetch_add(&k->bad, 1);
	}
}

static struct uhmm_simdev_stats sdstats(uhmm_device *d)
{
	struct uhmm_simdev_stats s;
	ASSERT_OK(uhmm_simdev_stats(d, &s));
	return s;
}

/* Device 1 reads and writes device 0's pages where they are, over the peer
 * link: right data, nothing migrates; then the pages move (home, and the
 * CPU changes them) and device 1 reads the new data: its peer entries went
 * with the move. */
static void peer_access_in_place(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *d0 = simdev(ctx, "nvlink", 0, 4 * MiB);
	uhmm_device *d1 = simdev(ctx, "nvlink", 0, 4 * MiB);
	size_t len = PEER_WORDS * sizeof(uint64_t);
	uint64_t *buf;
	ASSERT_OK(uhmm_alloc(ctx, 2 * MiB, (void **)&buf));
	for (uint64_t i = 0; i < PEER_WORDS; i++)
		buf[i] = want_word(1, i);
	ASSERT_OK(uhmm_migrate(ctx, buf, len, d0, 0));
	assert_int_equal(uhmm_test_pages_on(ctx, buf, len, d0), len / 4096);

	ASSERT_OK(uhmm_simdev_peer_access(d1, 1));
	ASSERT_OK(uhmm_simdev_advise(d1, buf, 2 * MiB, UHMM_SIMDEV_MAP_REMOTE));
	struct uhmm_stats s0;
	ASSERT_OK(uhmm_stats_get(ctx, &s0));

	struct peer_k k = { .buf = buf, .seed = 1 };
	ASSERT_OK(uhmm_simdev_launch(d1, k_peer, PEER_WORDS, &k));
	assert_int_equal(atomic_load(&k.bad), 0);
	k.write = 1;
	k.add = 5;
	ASSERT_OK(uhmm_simdev_launch(d1, k_peer, PEER_WORDS, &k));

	/* Nothing moved: the pages are device 0's, no migration counted,
	 * device 1 mapped them in the peer's memory, none remotely. */
	assert_int_equal(uhmm_test_pages_on(ctx, buf, len, d0), len / 4096);
	struct uhmm_stats s1;
	ASSERT_OK(uhmm_stats_get(ctx, &s1));
	assert_int_equal(s1.migrated_to_device_pages, s0.migrated_to_device_pages);
	assert_int_equal(s1.migrated_to_system_pages, s0.migrated_to_system_pages);
	struct uhmm_simdev_stats st = sdstats(d1);
	assert_int_equal(st.peer_maps, len / 4096);
	assert_int_equal(st.migrations, 0);
	assert_int_equal(st.remote_maps, 0);
	assert_true(st.peer_access_ns > 0); /* the nvlink peer model charged */
	struct uhmm_device_stats ds;
	ASSERT_OK(uhmm_device_stats(d1, &ds));
	assert_int_equal(ds.bytes_in_use, 0);

	/* The page moves: home by CPU reads (device 1's writes are there),
	 * then the CPU changes it; device 1 reads what the CPU wrote. */
	for (uint64_t i = 0; i < PEER_WORDS; i++)
		assert_int_equal(buf[i], want_word(1, i) + 5);
	assert_int_equal(uhmm_test_pages_on(ctx, buf, len, NULL), len / 4096);
	for (uint64_t i = 0; i < PEER_WORDS; i++)
		buf[i] = want_word(2, i);
	k = (struct peer_k){ .buf = buf, .seed = 2 };
	ASSERT_OK(uhmm_simdev_launch(d1, k_peer, PEER_WORDS, &k));
	assert_int_equal(atomic_load(&k.bad), 0);

	/* And again on device 0, moved there by a migration: device 1 maps
	 * it there anew. */
	ASSERT_OK(uhmm_migrate(ctx, buf, len, d0, 0));
	uint64_t maps = sdstats(d1).peer_maps;
	ASSERT_OK(uhmm_simdev_launch(d1, k_peer, PEER_WORDS, &k));
	assert_int_equal(atomic_load(&k.bad), 0);
	assert_int_equal(sdstats(d1).peer_maps, maps + len / 4096);
	assert_int_equal(uhmm_test_pages_on(ctx, buf, len, d0), len / 4096);

	/* The owner detached: its pages come home first (device 1's peer
	 * entries with them); device 1 reads them there. */
	ASSERT_OK(uhmm_device_detach(d0));
	assert_int_equal(uhmm_test_pages_on(ctx, buf, len, NULL), len / 4096);
	ASSERT_OK(uhmm_simdev_launch(d1, k_peer, PEER_WORDS, &k));
	assert_int_equal(atomic_load(&k.bad), 0);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* Without peer access (the default), the same kernel brings the pages
 * home and maps them remotely, as before. */
static void peer_access_off_maps_remotely(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *d0 = simdev(ctx, NULL, 0, 4 * MiB);
	uhmm_device *d1 = simdev(ctx, NULL, 0, 4 * MiB);
	size_t len = PEER_WORDS * sizeof(uint64_t);
	uint64_t *buf;
	ASSERT_OK(uhmm_alloc(ctx, 2 * MiB, (void **)&buf));
	for (uint64_t i = 0; i < PEER_WORDS; i++)
		buf[i] = want_word(3, i);
	ASSERT_OK(uhmm_migrate(ctx, buf, len, d0, 0));
	ASSERT_OK(uhmm_simdev_advise(d1, buf, 2 * MiB, UHMM_SIMDEV_MAP_REMOTE));
	struct peer_k k = { .buf = buf, .seed = 3 };
	ASSERT_OK(uhmm_simdev_launch(d1, k_peer, PEER_WORDS, &k));
	assert_int_equal(atomic_load(&k.bad), 0);
	assert_int_equal(sdstats(d1).peer_maps, 0);
	assert_int_equal(uhmm_test_pages_on(ctx, buf, len, d0), 0);
	assert_int_equal(uhmm_simdev_peer_access(d1, 2), -EINVAL);
	assert_int_equal(uhmm_simdev_peer_access(NULL, 1), -EINVAL);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* uhmm_range_fault with UHMM_RF_PEER: a peer's page comes back VALID |
 * PEER with its owner and frame, a fault request leaves it there; without
 * the flag, REMOTE (snapshot) or brought home (fault).  A backend of
 * another domain is no peer. */
static void range_fault_peer_entries(void **state)
{
	(void)state;
	uhmm_ctx *ctx;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	uhmm_device *d0 = simdev(ctx, NULL, 0, 2 * MiB);
	uhmm_device *d1 = simdev(ctx, NULL, 0, 2 * MiB);
	static const struct uhmm_device_ops other = {
		.alloc = stub_alloc, .free = stub_free,
		.copy_submit = stub_submit, .copy_wait = stub_wait,
		.describe = stub_describe,
	};
	uhmm_device *x;
	ASSERT_OK(uhmm_device_attach(ctx, &other, NULL, "other", &x));
	char *p;
	ASSERT_OK(uhmm_alloc(ctx, 2 * MiB, (void **)&p));
	uhmm_test_fill(p, 8 * 4096, 9);
	ASSERT_OK(uhmm_migrate(ctx, p, 8 * 4096, d0, 0));
	uint64_t e[8];
	struct uhmm_range_req req = { .start = (uintptr_t)p, .end = (uintptr_t)p + 8 * 4096,
				      .flags = UHMM_RF_FAULT_WRITE | UHMM_RF_PEER,
				      .device = d1, .entries = e };
	ASSERT_OK(uhmm_range_fault(ctx, &req));
	for (int i = 0; i < 8; i++) {
		assert_true(e[i] & UHMM_RE_VALID);
		assert_true(e[i] & UHMM_RE_WRITE);
		assert_true(e[i] & UHMM_RE_PEER);
		assert_false(e[i] & (UHMM_RE_REMOTE | UHMM_RE_DEVICE));
		assert_int_equal(UHMM_RE_PEER_DEV(e[i]), uhmm_device_id(d0));
		assert_ptr_equal(uhmm_device_from_id(ctx, UHMM_RE_PEER_DEV(e[i])), d0);
		struct uhmm_page_info pi;
		ASSERT_OK(uhmm_page_query(ctx, p + i * 4096, &pi));
		assert_ptr_equal(pi.device, d0);
		assert_int_equal(UHMM_RE_PEER_DPFN(e[i]), pi.dpfn);
	}
	assert_int_equal(uhmm_test_pages_on(ctx, p, 8 * 4096, d0), 8);
	/* Without the flag: a snapshot says REMOTE. */
	req.flags = UHMM_RF_SNAPSHOT;
	ASSERT_OK(uhmm_range_fault(ctx, &req));
	for (int i = 0; i < 8; i++)
		assert_int_equal(e[i], UHMM_RE_REMOTE);
	/* Another domain: no peer; a fault request brings the pages home. */
	req.flags = UHMM_RF_FAULT_READ | UHMM_RF_PEER;
	req.device = x;
	ASSERT_OK(uhmm_range_fault(ctx, &req));
	for (int i = 0; i < 8; i++)
		assert_false(e[i] & UHMM_RE_PEER);
	assert_int_equal(uhmm_test_pages_on(ctx, p, 8 * 4096, NULL), 8);
	assert_int_equal(uhmm_test_check(p, 8 * 4096, 9), (size_t)-1);
	/* The flag needs a requester. */
	req.device = NULL;
	assert_int_equal(uhmm_range_fault(ctx, &req), -EINVAL);
	assert_null(uhmm_device_from_id(ctx, 0));
	assert_null(uhmm_device_from_id(ctx, 255));
	assert_null(uhmm_device_from_id(NULL, 1));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(topology_of_three_simdevs),
	cmocka_unit_test(topology_counts_and_errors),
	cmocka_unit_test(topology_other_backends),
	cmocka_unit_test(peer_access_in_place),
	cmocka_unit_test(peer_access_off_maps_remotely),
	cmocka_unit_test(range_fault_peer_entries),
};

UHMM_TEST_MAIN(tests)
