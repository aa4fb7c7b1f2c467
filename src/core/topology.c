/* SPDX-License-Identifier: MIT */
/*
 * topology.c - the topology query (uhmm/topology.h).
 *
 * Each device is held (uhmm__dev_hold: a detach waits) while its backend
 * describes it (ops->describe); the pair links are derived from the two
 * ends' descriptions: a direct path when both name the same peer domain
 * (the slower of the two peer links), the way through system memory
 * otherwise.
 *
 * Locks: none of its own; ctx->lru_lock is not needed (bytes_in_use is a
 * counter).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include <uhmm/topology.h>

#include "core/internal.h"

UHMM_API const char *uhmm_link_kind_name(uint32_t kind)
{
	switch (kind) {
	case UHMM_LINK_PCIE:
		return "PCIe";
	case UHMM_LINK_NVLINK:
		return "NVLink";
	case UHMM_LINK_C2C:
		return "C2C";
	case UHMM_LINK_MEMCPY:
		return "memcpy";
	case UHMM_LINK_OTHER:
		return "other";
	case UHMM_LINK_SYSTEM:
		return "SYS";
	case UHMM_LINK_SELF:
		return "X";
	default:
		return "?";
	}
}

/* Bandwidths with 0 meaning unlimited: the lower one. */
static double bw_min(double a, double b)
{
	if (a == 0)
		return b;
	if (b == 0)
		return a;
	return a < b ? a : b;
}

/* The slower end of two peer links: the lower bandwidth (its name and
 * kind), the higher latency. */
static struct uhmm_link_desc slower(const struct uhmm_link_desc *a,
				    const struct uhmm_link_desc *b)
{
	double bw = bw_min(a->bandwidth_gbps, b->bandwidth_gbps);
	/* (ties by name: the matrix is symmetric) */
	bool pick_a = a->bandwidth_gbps == b->bandwidth_gbps
			      ? strncmp(a->name, b->name, sizeof(a->name)) <= 0
			      : bw == a->bandwidth_gbps;
	struct uhmm_link_desc l = pick_a ? *a : *b;
	l.bandwidth_gbps = bw;
	l.latency_ns = a->latency_ns > b->latency_ns ? a->latency_ns : b->latency_ns;
	return l;
}

/* The pair link between two described (or not) devices; i != j. */
static struct uhmm_topo_link pair_link(const struct uhmm_topo_dev *a,
				       const struct uhmm_device_desc *da,
				       const struct uhmm_topo_dev *b,
				       const struct uhmm_device_desc *db)
{
	struct uhmm_topo_link t;
	memset(&t, 0, sizeof(t));
	if (a->described && b->described && da->peer_domain &&
	    da->peer_domain == db->peer_domain) {
		t.link = slower(&da->peer, &db->peer);
		t.flags = UHMM_TOPO_PEER_ACCESS;
		return t;
	}
	t.link.kind = UHMM_LINK_SYSTEM;
	strcpy(t.link.name, "sys");
	t.link.bandwidth_gbps = bw_min(a->host.bandwidth_gbps, b->host.bandwidth_gbps);
	t.link.latency_ns = a->host.latency_ns + b->host.latency_ns;
	return t;
}

/* Describe one held device into *t and *desc. */
static void describe_one(struct uhmm_device *d, struct uhmm_topo_dev *t,
			 struct uhmm_device_desc *desc)
{
	memset(t, 0, sizeof(*t));
	memset(desc, 0, sizeof(*desc));
	t->id = d->id;
	t->dev = d;
	t->mem_kind = d->coh_base ? UHMM_MEM_COHERENT : UHMM_MEM_PRIVATE;
	snprintf(t->name, sizeof(t->name), "%s", d->name);
	t->bytes_in_use = atomic_load_explicit(&d->frames_used, memory_order_relaxed)
			  << PAGE_SHIFT;
	t->numa_node = -1;
	desc->size = sizeof(*desc);
	desc->numa_node = -1;
	if (!d->ops->describe || d->ops->describe(d->priv, desc) != 0) {
		memset(desc, 0, sizeof(*desc));
		return;
	}
	desc->host.name[sizeof(desc->host.name) - 1] = 0;
	desc->peer.name[sizeof(desc->peer.name) - 1] = 0;
	if (!(desc->host.bandwidth_gbps >= 0)) /* NaN or negative: unknown */
		desc->host.bandwidth_gbps = 0;
	if (!(desc->peer.bandwidth_gbps >= 0))
		desc->peer.bandwidth_gbps = 0;
	t->described = 1;
	t->mem_bytes = desc->mem_bytes;
	t->numa_node = desc->numa_node;
	t->host = desc->host;
}

UHMM_API long uhmm_topology(uhmm_ctx *ctx, struct uhmm_topo_dev *devs, size_t max,
			    struct uhmm_topo_link *links)
{
	if ((max && !devs) || max > (1ull << 32))
		return -EINVAL;
	int err = uhmm__ctx_enter(ctx);
	if (err)
		return err;
	/* The descriptions of the devices filled, for the pair links (at
	 * most MAX_DEVICES of them: uhmm's memory, not the stack). */
	size_t cap = max < MAX_DEVICES ? max : MAX_DEVICES;
	struct uhmm_device_desc *desc = NULL;
	if (cap) {
		desc = uhmm__umem_calloc(cap, sizeof(*desc));
		if (!desc) {
			uhmm__ctx_exit(ctx);
			return -ENOMEM;
		}
	}
	long n = 0;
	for (unsigned id = 1; id < MAX_DEVICES; id++) {
		struct uhmm_device *d = uhmm__dev_get(ctx, id);
		if (!d || uhmm__dev_hold(ctx, d) != 0)
			continue;
		if ((size_t)n < cap)
			describe_one(d, &devs[n], &desc[n]);
		uhmm__dev_release(d);
		n++;
	}
	size_t filled = (size_t)n < cap ? (size_t)n : cap;
	if (links) {
		for (size_t i = 0; i < filled; i++) {
			for (size_t j = 0; j < filled; j++) {
				struct uhmm_topo_link *l = &links[i * max + j];
				if (i == j) {
					memset(l, 0, sizeof(*l));
					l->link.kind = UHMM_LINK_SELF;
					strcpy(l->link.name, "self");
				} else {
					*l = pair_link(&devs[i], &desc[i], &devs[j], &desc[j]);
				}
			}
		}
	}
	uhmm__umem_free(desc);
	uhmm__ctx_exit(ctx);
	return n;
}

UHMM_API uhmm_device *uhmm_device_from_id(uhmm_ctx *ctx, uint32_t id)
{
	if (!id || id >= MAX_DEVICES || uhmm__ctx_enter(ctx) != 0)
		return NULL;
	struct uhmm_device *d = uhmm__dev_get(ctx, id);
	if (d && uhmm__dev_hold(ctx, d) == 0)
		uhmm__dev_release(d);
	else
		d = NULL;
	uhmm__ctx_exit(ctx);
	return d;
}

/* ---- peer access (rangefault.c) ---- */

/* The peer domain of a held device: its backend's, or NULL. */
static const void *peer_domain(struct uhmm_device *d)
{
	if (!d->ops->describe)
		return NULL;
	struct uhmm_device_desc desc;
	memset(&desc, 0, sizeof(desc));
	desc.size = sizeof(desc);
	desc.numa_node = -1;
	if (d->ops->describe(d->priv, &desc) != 0)
		return NULL;
	return desc.peer_domain;
}

void uhmm__peer_init(struct uhmm_peer_cache *pc, struct uhmm_device *self)
{
	memset(pc->known, 0, sizeof(pc->known));
	pc->self_dom = self ? peer_domain(self) : NULL;
}

bool uhmm__peer_ok(struct uhmm_ctx *ctx, struct uhmm_peer_cache *pc, unsigned id)
{
	if (!pc->self_dom || !id || id >= MAX_DEVICES)
		return false;
	unsigned byte = id / 8, bit = 1u << (id % 8);
	if (!(pc->known[0][byte] & bit)) {
		bool ok = false;
		struct uhmm_device *d = uhmm__dev_get(ctx, id);
		if (d && uhmm__dev_hold(ctx, d) == 0) {
			ok = peer_domain(d) == pc->self_dom;
			uhmm__dev_release(d);
		}
		pc->known[0][byte] |= bit;
		if (ok)
			pc->known[1][byte] |= bit;
		else
			pc->known[1][byte] &= (uint8_t)~bit;
	}
	return pc->known[1][byte] & bit;
}
