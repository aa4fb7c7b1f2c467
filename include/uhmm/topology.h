/* SPDX-License-Identifier: MIT */
/*
 * uhmm/topology.h - which device is near which.
 *
 * uhmm_topology() describes the devices attached to a context: their
 * memory (private or coherent, size, what uhmm uses of it), their link to
 * the CPU, and the link between every pair of them, with whether one can
 * access the other's memory directly (peer access).  The figures come from
 * each backend's description (ops->describe, uhmm/device.h); simdev gives
 * its link preset's (uhmm/simdev.h, "Transfer model and link presets").
 * The program uhmm-topo prints them as a matrix, in the manner of
 * `nvidia-smi topo -m`.
 */
#ifndef UHMM_TOPOLOGY_H
#define UHMM_TOPOLOGY_H

#include <uhmm/device.h>
#include <uhmm/uhmm.h>

#ifdef __cplusplus
extern "C" {
#endif

/** One device of the topology (uhmm_topology()). */
struct uhmm_topo_dev {
	uint32_t id;           /**< uhmm_device_id() */
	uint32_t mem_kind;     /**< enum uhmm_mem_kind */
	char name[32];         /**< uhmm_device_name() */
	uint64_t mem_bytes;    /**< the device's memory; 0 unknown */
	uint64_t bytes_in_use; /**< frames uhmm holds (uhmm_device_stats) */
	int32_t numa_node;     /**< node of its memory; -1 none / unknown */
	/** 1: the backend described the device (ops->describe); 0: only
	 * what uhmm knows (id, name, kind, bytes_in_use) is filled */
	uint32_t described;
	struct uhmm_link_desc host; /**< the link to the CPU */
	const uhmm_device *dev;     /**< the handle (may be detached after the call) */
};

/** Flags of a pair link (uhmm_topo_link.flags). */
enum {
	/** Either device can access the other's memory directly (peer
	 * access: uhmm_range_fault with UHMM_RF_PEER, mirror.h). */
	UHMM_TOPO_PEER_ACCESS = 1u << 0,
};

/** The link between two devices (uhmm_topology()). */
struct uhmm_topo_link {
	/** The kind, name and figures of the path: for a direct path, the
	 * slower of the two ends' peer links (the lower bandwidth, the
	 * higher latency, the name and kind of the end with the lower
	 * bandwidth); UHMM_LINK_SYSTEM when there is none (traffic goes
	 * through system memory: the lower of the two host bandwidths, the
	 * sum of their latencies); UHMM_LINK_SELF on the diagonal. */
	struct uhmm_link_desc link;
	uint32_t flags;        /**< UHMM_TOPO_* */
	uint32_t reserved;
};

/**
 * uhmm_topology - describe the devices of @ctx and the links between them.
 * @devs:  out, up to @max devices, in increasing id order (may be NULL
 *         when @max is 0: then the call only counts).
 * @max:   the capacity of @devs.
 * @links: out (may be NULL), a @max x @max matrix: links[i * @max + j]
 *         is the link from devs[i] to devs[j] for i, j below the number of
 *         devices filled; the diagonal is UHMM_LINK_SELF; the matrix is
 *         symmetric.  Entries beyond are left untouched.
 * Two devices have UHMM_TOPO_PEER_ACCESS when both backends describe the
 * same peer domain (struct uhmm_device_desc.peer_domain).
 * Returns the number of devices attached (devices being detached are
 * left out), which may exceed @max (then the first @max are filled: call
 * again with more room); a snapshot: devices attached or detached
 * meanwhile may change it.
 * Errors: -EINVAL @devs NULL with @max > 0, or @max above 2^32; -EBADF
 * @ctx is not a live context; -ECHILD (called in a fork child).  Thread-safe; does not sleep beyond the backends'
 * describe ops.
 */
UHMM_API long uhmm_topology(uhmm_ctx *ctx, struct uhmm_topo_dev *devs, size_t max,
			    struct uhmm_topo_link *links);

/**
 * uhmm_device_from_id - the device of @ctx whose id (uhmm_device_id()) is
 * @id, or NULL (none, or being detached).  For a mirror that meets a
 * device id in a range fault entry (UHMM_RE_PEER_DEV, mirror.h): the
 * handle stays valid while that entry does (under the mirror's lock, after
 * uhmm_notifier_read_retry() said it is current: the owner's detach moves
 * the page, which invalidates the entry first).  Never sleeps.
 */
UHMM_API uhmm_device *uhmm_device_from_id(uhmm_ctx *ctx, uint32_t id);

/** A short printable name of a link kind ("PCIe", "NVLink", "C2C",
 * "memcpy", "other", "SYS", "X", "?"): static, never NULL. */
UHMM_API const char *uhmm_link_kind_name(uint32_t kind);

#ifdef __cplusplus
}
#endif
#endif /* UHMM_TOPOLOGY_H */
