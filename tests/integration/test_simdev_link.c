/* SPDX-License-Identifier: MIT */
/*
 * simdev's link presets and peer link (include/uhmm/simdev.h, "Transfer
 * model and link presets"): every preset name is accepted and gives its
 * figures, bad names are -EINVAL, UHMM_SIMDEV_LINK applies when the options
 * choose no link, and a device-to-device move is recognised as a peer hop
 * and charged at the peer model.  Charges are read from the counters the
 * model computes (meminfo.link_model_ns, peer_model_ns), never from clocks.
 */
#define _GNU_SOURCE
#include "testlib.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uhmm/simdev.h>
#include <uhmm/uhmm.h>

#define MiB (1ull << 20)
#define PG 4096u

static uhmm_ctx *new_ctx(void)
{
	uhmm_ctx *ctx = NULL;
	ASSERT_OK(uhmm_ctx_create(NULL, &ctx));
	return ctx;
}

static struct uhmm_simdev_meminfo mi(uhmm_device *dev)
{
	struct uhmm_simdev_meminfo m;
	ASSERT_OK(uhmm_simdev_meminfo(dev, &m));
	return m;
}

/* Every preset is accepted by name, the device reports its figures, and
 * data moves both ways under it. */
static void link_every_preset_accepted(void **state)
{
	(void)state;
	uhmm_ctx *ctx = new_ctx();
	char *buf;
	ASSERT_OK(uhmm_alloc(ctx, 16 * PG, (void **)&buf));
	unsigned n = 0;
	for (const char *name; (name = uhmm_simdev_link_name(n)); n++) {
		struct uhmm_simdev_link want, got;
		ASSERT_OK(uhmm_simdev_link_preset(name, &want));
		assert_string_equal(want.name, name);
		assert_non_null(want.what);
		assert_true(want.copy_engines >= 1 && want.copy_engines <= 8);

		struct uhmm_simdev_opts o;
		uhmm_simdev_opts_init(&o);
		o.mem_bytes = 2 * MiB;
		o.link = name;
		uhmm_device *dev;
		ASSERT_OK(uhmm_simdev_create(ctx, &o, &dev));
		ASSERT_OK(uhmm_simdev_link_info(dev, &got));
		assert_string_equal(got.name, name);
		assert_true(got.bandwidth_gbps == want.bandwidth_gbps);
		assert_true(got.latency_ns == want.latency_ns);
		assert_int_equal(got.copy_engines, want.copy_engines);
		assert_true(got.peer_bandwidth_gbps == want.peer_bandwidth_gbps);
		assert_true(got.peer_latency_ns == want.peer_latency_ns);

		uhmm_test_fill(buf, 16 * PG, n + 1);
		ASSERT_OK(uhmm_migrate(ctx, buf, 16 * PG, dev, 0));
		ASSERT_OK(uhmm_migrate(ctx, buf, 16 * PG, NULL, 0));
		assert_true(uhmm_test_check(buf, 16 * PG, n + 1) == (size_t)-1);
		/* Both directions charged: at least one latency and 16 pages
		 * at the bandwidth each way. */
		uint64_t floor = 0;
		if (want.bandwidth_gbps > 0)
			floor = 2 * (uint64_t)(16.0 * PG / want.bandwidth_gbps);
		floor += 2 * want.latency_ns;
		struct uhmm_simdev_meminfo m = mi(dev);
		if (strcmp(name, "off"))
			assert_true(m.link_model_ns >= floor - 2);
		else
			assert_true(m.link_model_ns == 0);
		assert_true(m.peer_copies == 0);
		ASSERT_OK(uhmm_device_detach(dev));
	}
	assert_true(n >= 6); /* pcie3/4/5, nvlink, c2c, off */
	ASSERT_OK(uhmm_simdev_link_preset("pcie4", &(struct uhmm_simdev_link){ 0 }));
	ASSERT_OK(uhmm_free(ctx, buf));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static void link_bad_names_einval(void **state)
{
	(void)state;
	struct uhmm_simdev_link l;
	assert_int_equal(uhmm_simdev_link_preset(NULL, &l), -EINVAL);
	assert_int_equal(uhmm_simdev_link_preset("pcie4", NULL), -EINVAL);
	assert_int_equal(uhmm_simdev_link_preset("PCIE4", &l), -EINVAL);
	assert_int_equal(uhmm_simdev_link_preset("pcie", &l), -EINVAL);
	assert_int_equal(uhmm_simdev_link_preset("", &l), -EINVAL);
	assert_null(uhmm_simdev_link_name(1000));
	assert_int_equal(uhmm_simdev_link_info(NULL, &l), -EINVAL);

	uhmm_ctx *ctx = new_ctx();
	uhmm_device *dev = (uhmm_device *)&l;
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 2 * MiB;
	o.link = "pcie9";
	assert_int_equal(uhmm_simdev_create(ctx, &o, &dev), -EINVAL);
	o.link = "pcie4 ";
	assert_int_equal(uhmm_simdev_create(ctx, &o, &dev), -EINVAL);
	o.link = NULL;
	o.peer_bandwidth_gbps = -1;
	assert_int_equal(uhmm_simdev_create(ctx, &o, &dev), -EINVAL);
	o.peer_bandwidth_gbps = NAN;
	assert_int_equal(uhmm_simdev_create(ctx, &o, &dev), -EINVAL);
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* UHMM_SIMDEV_LINK applies to simdevs whose options choose no link, and a
 * bad name in it fails their creation. */
static void link_env_applied(void **state)
{
	(void)state;
	uhmm_ctx *ctx = new_ctx();
	uhmm_device *dev;
	struct uhmm_simdev_link l;
	struct uhmm_simdev_opts o;

	assert_int_equal(setenv("UHMM_SIMDEV_LINK", "pcie4", 1), 0);
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 2 * MiB;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &dev));
	ASSERT_OK(uhmm_simdev_link_info(dev, &l));
	assert_string_equal(l.name, "pcie4");
	assert_true(l.bandwidth_gbps == 25.0);
	assert_int_equal(l.copy_engines, 2);
	ASSERT_OK(uhmm_device_detach(dev));

	/* NULL options too. */
	ASSERT_OK(uhmm_simdev_create(ctx, NULL, &dev));
	ASSERT_OK(uhmm_simdev_link_info(dev, &l));
	assert_string_equal(l.name, "pcie4");
	ASSERT_OK(uhmm_device_detach(dev));

	/* Options that choose a model, or a preset, win. */
	o.latency_ns = 100;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &dev));
	ASSERT_OK(uhmm_simdev_link_info(dev, &l));
	assert_string_equal(l.name, "custom");
	assert_true(l.latency_ns == 100 && l.bandwidth_gbps == 0);
	ASSERT_OK(uhmm_device_detach(dev));
	o.latency_ns = 0;
	o.link = "off";
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &dev));
	ASSERT_OK(uhmm_simdev_link_info(dev, &l));
	assert_string_equal(l.name, "off");
	ASSERT_OK(uhmm_device_detach(dev));
	o.link = NULL;

	assert_int_equal(setenv("UHMM_SIMDEV_LINK", "pcie7", 1), 0);
	assert_int_equal(uhmm_simdev_create(ctx, &o, &dev), -EINVAL);
	assert_int_equal(setenv("UHMM_SIMDEV_LINK", "", 1), 0);
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &dev));
	ASSERT_OK(uhmm_simdev_link_info(dev, &l));
	assert_string_equal(l.name, "off");
	ASSERT_OK(uhmm_device_detach(dev));
	unsetenv("UHMM_SIMDEV_LINK");
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/* A custom model charges latency + bytes / bandwidth per copy, computed. */
static void link_model_charges_bytes_and_latency(void **state)
{
	(void)state;
	uhmm_ctx *ctx = new_ctx();
	uhmm_device *dev;
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 2 * MiB;
	o.bandwidth_gbps = 4.0;
	o.latency_ns = 1000;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &dev));
	char *buf;
	ASSERT_OK(uhmm_alloc(ctx, 64 * PG, (void **)&buf));
	uhmm_test_fill(buf, 64 * PG, 3);
	ASSERT_OK(uhmm_migrate(ctx, buf, 64 * PG, dev, 0));
	struct uhmm_simdev_meminfo m = mi(dev);
	/* 256 KiB at 4 B/ns is 65536 ns, plus a latency per copy. */
	uint64_t copies = m.copies;
	assert_true(copies >= 1);
	assert_true(m.link_model_ns >= 65536 - 64 + copies * 1000);
	assert_true(m.link_model_ns <= 65536 + copies * 1000);
	ASSERT_OK(uhmm_free(ctx, buf));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

/*
 * A device-to-device move (through uhmm's bounce buffer) is recognised by
 * the destination as peer hops, counted and charged at its peer model; a
 * move from system memory is not, nor one back from the device itself.
 */
static void peer_hop_counted_and_charged(void **state)
{
	(void)state;
	uhmm_ctx *ctx = new_ctx();
	uhmm_device *a, *b;
	struct uhmm_simdev_opts o;
	uhmm_simdev_opts_init(&o);
	o.mem_bytes = 2 * MiB;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &a));
	o.peer_bandwidth_gbps = 2.0;
	o.peer_latency_ns = 5000;
	ASSERT_OK(uhmm_simdev_create(ctx, &o, &b));

	size_t len = 32 * PG;
	char *buf;
	ASSERT_OK(uhmm_alloc(ctx, len, (void **)&buf));
	uhmm_test_fill(buf, len, 11);

	/* System -> b: no peer hop. */
	ASSERT_OK(uhmm_migrate(ctx, buf, len, b, 0));
	assert_true(mi(b).peer_copies == 0);
	/* b -> a: a has no peer model but counts what it recognises. */
	ASSERT_OK(uhmm_migrate(ctx, buf, len, a, 0));
	assert_true(mi(a).peer_bytes == len);
	assert_true(mi(a).peer_model_ns == 0);
	/* a -> b: peer hops, charged at b's peer model. */
	ASSERT_OK(uhmm_migrate(ctx, buf, len, b, 0));
	struct uhmm_simdev_meminfo m = mi(b);
	assert_true(m.peer_copies >= 1);
	assert_true(m.peer_bytes == len);
	/* 128 KiB at 2 B/ns is 65536 ns, plus 5 us per hop copy. */
	assert_true(m.peer_model_ns >= 65536 - 32 + m.peer_copies * 5000);
	assert_true(m.peer_model_ns <= 65536 + m.peer_copies * 5000);
	assert_true(uhmm_test_pages_on(ctx, buf, len, b) == len / PG);

	/* b -> system -> a: two moves through system memory, no peer hop. */
	uint64_t before = mi(a).peer_copies;
	ASSERT_OK(uhmm_migrate(ctx, buf, len, NULL, 0));
	ASSERT_OK(uhmm_migrate(ctx, buf, len, a, 0));
	assert_true(mi(a).peer_copies == before);

	ASSERT_OK(uhmm_migrate(ctx, buf, len, NULL, 0));
	assert_true(uhmm_test_check(buf, len, 11) == (size_t)-1);
	ASSERT_OK(uhmm_free(ctx, buf));
	ASSERT_OK(uhmm_ctx_destroy(ctx));
}

static const struct CMUnitTest tests[] = {
	cmocka_unit_test(link_every_preset_accepted),
	cmocka_unit_test(link_bad_names_einval),
	cmocka_unit_test(link_env_applied),
	cmocka_unit_test(link_model_charges_bytes_and_latency),
	cmocka_unit_test(peer_hop_counted_and_charged),
};

UHMM_TEST_MAIN(tests)
